//! Federation endpoints (PROTOCOL.md 5.2, 5.4): announce, inbox, peers. Every
//! POST is verified as an HTTP message signature against this node's own
//! `public_url`, so signatures survive a TLS-terminating proxy.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::future::join_all;
use meshrelay_federation::httpsig::Message;
use meshrelay_federation::router::wants;
use meshrelay_federation::service::MAX_ITEMS;
use meshrelay_federation::sync::{
    FetchRequest, SyncError, SyncRequest, SyncResponse, MAX_FETCH_ANSWER_BYTES, MAX_FETCH_IDS,
};
use meshrelay_protocol::hexfmt::is_hex32;
use meshrelay_protocol::{ErrorCode, ProtocolError, PublicKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::schema::ErrorBody;
use crate::error::{body_or_413, ApiError, ApiResult};
use crate::ingest::{check, count, store_checked, Source};
use crate::state::{unix_now, AppState};

/// Verify the request's signature; returns the signer.
fn verify(
    state: &AppState,
    uri: &OriginalUri,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<PublicKey> {
    let path = uri.0.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let target = format!("{}{path}", state.settings.public_url);
    let msg = Message {
        method: "POST",
        target_uri: &target,
        headers,
    };
    state
        .federation
        .verifier
        .verify(&msg, Some(body), unix_now() as i64)
        .map_err(|e| ApiError::new(ErrorCode::AuthFailed, e.0))
}

#[derive(Deserialize, ToSchema)]
pub struct AnnounceRequest {
    /// The announcing node's URL; its node document must name the signing key.
    pub url: String,
}

#[derive(Serialize, ToSchema)]
pub struct AnnounceResponse {
    /// `active`, or `pending` when this node requires approval.
    pub status: String,
}

/// A node announces itself (signed by its node key).
#[utoipa::path(
    post,
    path = "/v1/federation/announce",
    request_body = AnnounceRequest,
    responses(
        (status = 202, body = AnnounceResponse),
        (status = 401, description = "auth_failed", body = ErrorBody),
        (status = 403, description = "blocked", body = ErrorBody),
        (status = 409, description = "key_changed: the URL is known under another key", body = ErrorBody),
        (status = 422, description = "the node document could not be fetched or does not match", body = ErrorBody),
    )
)]
pub async fn announce(
    State(state): State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<AnnounceResponse>)> {
    let body = body_or_413(body)?;
    let signer = verify(&state, &uri, &headers, &body)?;
    let req: AnnounceRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("announce body: {e}")))?;
    match state
        .federation
        .accept_announce(&signer.to_hex(), &req.url)
        .await
    {
        Ok(peer) => Ok((
            StatusCode::ACCEPTED,
            Json(AnnounceResponse {
                status: peer.status,
            }),
        )),
        Err(e) => Err(match e.answer() {
            Some((code, status)) => ApiError::new(code, e.to_string()).with_status(status),
            None => ApiError::internal(&e),
        }),
    }
}

#[derive(Deserialize)]
struct InboxBody<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawItem<'a> {
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    hops: Option<Value>,
    #[serde(default)]
    sync: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Rejected {
    pub id: Option<String>,
    pub code: String,
}

#[derive(Serialize, ToSchema)]
pub struct InboxResponse {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: Vec<Rejected>,
}

fn id_of(raw: Option<&RawValue>) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    raw.and_then(|r| serde_json::from_str::<IdOnly>(r.get()).ok())
        .map(|x| x.id)
}

/// An inbox request, for the OpenAPI document.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct InboxRequestDoc {
    /// At most 100 items and 1 MiB.
    pub items: Vec<InboxItemDoc>,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct InboxItemDoc {
    pub payload: super::schema::PayloadDoc,
    /// 1 for a payload its origin's local client published; +1 per relay.
    pub hops: u32,
    /// Moved by anti-entropy sync: stored and delivered locally, not forwarded.
    pub sync: Option<bool>,
}

/// A peer forwards payloads (signed by its node key).
#[utoipa::path(
    post,
    path = "/v1/federation/inbox",
    request_body = InboxRequestDoc,
    responses(
        (status = 202, body = InboxResponse),
        (status = 401, description = "auth_failed or unknown_peer", body = ErrorBody),
        (status = 403, description = "blocked or peer_pending", body = ErrorBody),
        (status = 413, description = "more than 100 items or 1 MiB", body = ErrorBody),
    )
)]
pub async fn inbox(
    State(state): State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<InboxResponse>)> {
    let body = body_or_413(body)?;
    let signer = verify(&state, &uri, &headers, &body)?.to_hex();
    require_peer(&state, &signer).await?;
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
    let parsed: InboxBody = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("inbox body: {e}")))?;
    if parsed.items.len() > MAX_ITEMS {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("at most {MAX_ITEMS} items per request"),
        ));
    }
    let started = Instant::now();
    let mut rejected = Vec::new();
    let mut checked = Vec::new();
    for raw in parsed.items {
        let item: Result<RawItem, _> = serde_json::from_str(raw.get());
        let reject = |id: Option<String>, err: ProtocolError| Rejected {
            id,
            code: err.code.as_str().to_string(),
        };
        let Ok(item) = item else {
            rejected.push(reject(
                None,
                ProtocolError::bad_request("item is not an object"),
            ));
            continue;
        };
        let hops = item
            .hops
            .as_ref()
            .and_then(Value::as_u64)
            .filter(|h| *h >= 1);
        let (Some(payload), Some(hops)) = (item.payload, hops) else {
            rejected.push(reject(
                id_of(item.payload),
                ProtocolError::bad_request("an item needs a payload and integer hops >= 1"),
            ));
            continue;
        };
        match check(&state, payload.get()) {
            Ok(p) if !wants(&state.settings.subscribe, &p) => rejected.push(Rejected {
                id: Some(p.id),
                code: ErrorCode::NotSubscribed.as_str().into(),
            }),
            Ok(p) => checked.push((p, hops.min(u64::from(u32::MAX)) as u32, item.sync)),
            Err(e) => {
                count(&state, "peer", &Err(e.clone()), started);
                rejected.push(reject(id_of(Some(payload)), e));
            }
        }
    }
    // All items together, so they share the writer's batches. In a task of its
    // own: if the sender hangs up mid-request, what gets committed is still
    // counted and delivered to local subscribers.
    let task = tokio::spawn(async move {
        let results = join_all(checked.into_iter().map(|(p, hops, sync)| {
            let state = &state;
            let node = signer.as_str();
            async move {
                let id = p.id.clone();
                let source = Source::Peer { node, hops, sync };
                (id, store_checked(state, p, source).await)
            }
        }))
        .await;
        let (mut accepted, mut duplicates) = (0, 0);
        for (id, result) in results {
            count(&state, "peer", &result, started);
            match result {
                Ok(a) if a.duplicate => duplicates += 1,
                Ok(_) => accepted += 1,
                Err(e) => rejected.push(Rejected {
                    id: Some(id),
                    code: e.code.as_str().into(),
                }),
            }
        }
        InboxResponse {
            accepted,
            duplicates,
            rejected,
        }
    });
    let answer = task.await.map_err(|e| ApiError::internal(&e))?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// The signer must be a known peer that is active (or merely unreachable).
async fn require_peer(state: &AppState, signer: &str) -> ApiResult<meshrelay_store::Peer> {
    let peer =
        state.store.peer(signer).await?.ok_or_else(|| {
            ApiError::new(ErrorCode::UnknownPeer, "the signer is not a known peer")
        })?;
    match peer.status.as_str() {
        "active" | "unreachable" => Ok(peer),
        "pending" => Err(ApiError::new(
            ErrorCode::PeerPending,
            "this peer awaits approval",
        )),
        "key_changed" => Err(ApiError::new(
            ErrorCode::KeyChanged,
            "this peer's key changed; an operator must decide",
        )),
        _ => Err(ApiError::new(ErrorCode::Blocked, "this peer is blocked")),
    }
}

#[derive(Deserialize, Serialize, ToSchema)]
pub struct SyncRequestDoc {
    /// One filter of the initiator's preference (`{}` for scope `all`), without `limit`.
    #[schema(value_type = Object)]
    pub filter: Value,
    /// Inclusive bounds on `created_at`, fixed for the whole session.
    pub since: u64,
    pub until: u64,
    /// Hex negentropy (version 1) message, at most 60,000 bytes.
    pub msg: String,
}

#[derive(Serialize, ToSchema)]
pub struct SyncResponseDoc {
    /// Hex negentropy answer.
    pub msg: String,
}

/// One round of anti-entropy sync (PROTOCOL.md 5.5), signed by a peer.
#[utoipa::path(
    post,
    path = "/v1/federation/sync",
    request_body = SyncRequestDoc,
    responses(
        (status = 200, body = SyncResponseDoc),
        (status = 400, description = "bad_request: malformed filter, window or message", body = ErrorBody),
        (status = 401, description = "auth_failed or unknown_peer", body = ErrorBody),
        (status = 403, description = "blocked or peer_pending", body = ErrorBody),
        (status = 413, description = "too_large: the window holds more payloads than this node reconciles in one session; split it", body = ErrorBody),
    )
)]
pub async fn sync(
    State(state): State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<SyncResponse>> {
    let body = body_or_413(body)?;
    let signer = verify(&state, &uri, &headers, &body)?.to_hex();
    require_peer(&state, &signer).await?;
    let req: SyncRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("sync body: {e}")))?;
    match state
        .federation
        .sync
        .answer(&state.store, &signer, &req)
        .await
    {
        Ok(msg) => {
            state
                .metrics
                .sync_served(&signer, body.len(), msg.len() * 2 + 10);
            Ok(Json(SyncResponse {
                msg: hex::encode(msg),
            }))
        }
        Err(SyncError::TooManyItems(cap)) => Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("more than {cap} payloads in this window; split it"),
        )),
        Err(SyncError::BadRequest(why)) => Err(ApiError::bad_request(why)),
        Err(SyncError::Store(e)) => Err(ApiError::internal(&e)),
    }
}

#[derive(Deserialize, ToSchema)]
pub struct FetchRequestDoc {
    /// At most 500 payload ids.
    pub ids: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FetchResponseDoc {
    /// The visible payloads among those asked for, up to 3 MiB of them; ask again for the rest.
    pub payloads: Vec<super::schema::PayloadDoc>,
}

/// Fetch payloads by id (PROTOCOL.md 5.5), signed by a peer.
#[utoipa::path(
    post,
    path = "/v1/federation/fetch",
    request_body = FetchRequestDoc,
    responses(
        (status = 200, body = FetchResponseDoc),
        (status = 400, description = "bad_request", body = ErrorBody),
        (status = 401, description = "auth_failed or unknown_peer", body = ErrorBody),
        (status = 403, description = "blocked or peer_pending", body = ErrorBody),
        (status = 413, description = "too_large: more than 500 ids", body = ErrorBody),
    )
)]
pub async fn fetch(
    State(state): State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body_or_413(body)?;
    let signer = verify(&state, &uri, &headers, &body)?.to_hex();
    require_peer(&state, &signer).await?;
    let req: FetchRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("fetch body: {e}")))?;
    if req.ids.len() > MAX_FETCH_IDS {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("at most {MAX_FETCH_IDS} ids per request"),
        ));
    }
    if let Some(bad) = req.ids.iter().find(|id| !is_hex32(id)) {
        return Err(ApiError::bad_request(format!(
            "{bad:?} is not a payload id (64 lowercase hex digits)"
        )));
    }
    let found = state.store.payloads_by_ids(&req.ids).await?;
    // Stored JSON goes out as it is, not re-encoded.
    let mut out = String::from(r#"{"payloads":["#);
    let mut first = true;
    for (_, json) in found {
        if out.len() + json.len() > MAX_FETCH_ANSWER_BYTES && !first {
            break;
        }
        if !first {
            out.push(',');
        }
        out.push_str(&json);
        first = false;
    }
    out.push_str("]}");
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

/// The peers this node shares: `{"peers": [{"node", "url"}]}` of active peers.
#[utoipa::path(get, path = "/v1/federation/peers", responses((status = 200, description = "Active peers", body = Object)))]
pub async fn peers(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let peers: Vec<Value> = state
        .store
        .peers()
        .await?
        .into_iter()
        .filter(|p| p.status == "active")
        .map(|p| json!({"node": p.node, "url": p.url}))
        .collect();
    Ok(Json(json!({ "peers": peers })))
}
