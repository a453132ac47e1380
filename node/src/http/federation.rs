//! Federation endpoints (PROTOCOL.md 5.2, 5.4): announce, inbox, peers. Every
//! POST is verified as an HTTP message signature against this node's own
//! `public_url`, so signatures survive a TLS-terminating proxy.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, OriginalUri, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meshrelay_federation::inbound::{InboxResponse, Refused, SharedPeer};
use meshrelay_federation::sync::SyncResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::schema::ErrorBody;
use crate::error::{body_or_413, ApiError, ApiResult};
use crate::ingest::PeerIngest;
use crate::state::AppState;

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        let status = r.status;
        let mut e = ApiError::new(r.code, r.message).with_status(status);
        e.retry_after = r.retry_after;
        e
    }
}

fn path_of(uri: &OriginalUri) -> &str {
    uri.0.path_and_query().map(|p| p.as_str()).unwrap_or("/")
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
        (status = 403, description = "blocked: a blocked peer, or max_peers are known", body = ErrorBody),
        (status = 409, description = "key_changed: the URL is known under another key", body = ErrorBody),
        (status = 429, description = "rate_limited: over announce_rate for this address, with Retry-After", body = ErrorBody),
        (status = 422, description = "the node document could not be fetched or does not match", body = ErrorBody),
    )
)]
pub async fn announce(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<std::net::SocketAddr>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<AnnounceResponse>)> {
    let body = body_or_413(body)?;
    let fed = &state.federation;
    let status = fed
        .receive_announce(client.ip(), path_of(&uri), &headers, &body)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(AnnounceResponse {
            status: status.to_string(),
        }),
    ))
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
        (status = 429, description = "rate_limited: over this peer's inbox_rate (or a sync session's rounds), with Retry-After", body = ErrorBody),
        (status = 413, description = "more than 100 items or 1 MiB", body = ErrorBody),
        (status = 503, description = "internal: an item could not be stored here; send the batch again", body = ErrorBody),
    )
)]
pub async fn inbox(
    State(state): State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<InboxResponse>)> {
    let body = body_or_413(body)?;
    let fed = &state.federation;
    let peer = fed.authenticate(path_of(&uri), &headers, &body).await?;
    let ingest = Arc::new(PeerIngest(state.clone()));
    let answer = fed.receive_inbox(ingest, &peer, &body).await?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// An offer of ids, for the OpenAPI document.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct IhaveRequestDoc {
    /// At most 1,000 items.
    pub items: Vec<IhaveItemDoc>,
}

#[allow(dead_code)]
#[derive(ToSchema)]
pub struct IhaveItemDoc {
    /// A payload id: 64 lowercase hex digits.
    pub id: String,
    /// The hops the payload would be delivered with.
    pub hops: u32,
}

/// A peer offers payload ids (lazy forwarding, PROTOCOL.md 5.6; signed by
/// its node key): the answer lists the ones this node neither holds nor
/// keeps a tombstone of, which the peer then delivers through the inbox.
#[utoipa::path(
    post,
    path = "/v1/federation/ihave",
    request_body = IhaveRequestDoc,
    responses(
        (status = 200, body = meshrelay_federation::lazy::IhaveResponse),
        (status = 400, description = "bad_request: not an offer, or an item whose id is not a payload id", body = ErrorBody),
        (status = 401, description = "auth_failed or unknown_peer", body = ErrorBody),
        (status = 403, description = "blocked or peer_pending", body = ErrorBody),
        (status = 413, description = "more than 1,000 items or 1 MiB", body = ErrorBody),
        (status = 429, description = "rate_limited: over this peer's inbox_rate, with Retry-After", body = ErrorBody),
    )
)]
pub async fn ihave(
    State(state): State<AppState>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<meshrelay_federation::lazy::IhaveResponse>> {
    let body = body_or_413(body)?;
    let fed = &state.federation;
    let peer = fed.authenticate(path_of(&uri), &headers, &body).await?;
    Ok(Json(fed.answer_ihave(&peer, &body).await?))
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
        (status = 429, description = "rate_limited: over this peer's inbox_rate (or a sync session's rounds), with Retry-After", body = ErrorBody),
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
    let fed = &state.federation;
    let peer = fed.authenticate(path_of(&uri), &headers, &body).await?;
    Ok(Json(fed.answer_sync(&peer, &body).await?))
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
        (status = 429, description = "rate_limited: over this peer's inbox_rate (or a sync session's rounds), with Retry-After", body = ErrorBody),
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
    let fed = &state.federation;
    fed.authenticate(path_of(&uri), &headers, &body).await?;
    let answer = fed.answer_fetch(&body).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], answer).into_response())
}

/// The peers this node shares: `{"peers": [{"node", "url"}]}` of active peers.
#[utoipa::path(get, path = "/v1/federation/peers", responses((status = 200, description = "Active peers", body = SharedPeers)))]
pub async fn peers(State(state): State<AppState>) -> ApiResult<Json<SharedPeers>> {
    let peers = state.federation.shared_peers().await?;
    Ok(Json(SharedPeers { peers }))
}

/// `{"peers": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct SharedPeers {
    pub peers: Vec<SharedPeer>,
}
