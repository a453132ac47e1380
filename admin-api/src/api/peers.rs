//! `/admin/v1/peers`: list peers with their delivery health, add one by URL,
//! approve, block, unblock or poll it, and forget it.

use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::Json;
use meshrelay_store::{Forwarding, Peer, PeerStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{api_actor, json_body, ErrorBody};
use crate::actions::{self, PeerAction};
use crate::{AdminContext, AdminError, AdminResult};

/// How a peer is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, `failing` (its last poll or delivery failed) or `blocked`.
    pub state: String,
    pub poll_failures: i64,
    pub delivery_failures: i64,
    /// Unix seconds of the last successful poll.
    pub last_poll_ok: Option<i64>,
    /// Unix seconds of the last recorded delivery attempt.
    pub last_delivery: Option<i64>,
    /// Outbox items waiting for it, and given up on.
    pub pending: i64,
    pub dead: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PeerView {
    pub node: String,
    pub url: String,
    /// `pending`, `active`, `blocked`, `unreachable` or `key_changed`.
    #[schema(value_type = String)]
    pub status: PeerStatus,
    /// Its last known subscription preference, null before the first poll.
    #[schema(value_type = Object)]
    pub subscribe: Value,
    pub inbox: Option<String>,
    /// Unix seconds.
    pub added_at: i64,
    /// Unix seconds of the last poll attempt.
    pub last_poll: Option<i64>,
    /// How payloads go to it (PROTOCOL.md 5.6): `eager` (whole, through its
    /// inbox) or `lazy` (offers of their ids, taken up by `ihave`).
    #[schema(value_type = String)]
    pub forwarding: Forwarding,
    /// Its `/v1/info` says it answers offers; without it, always eager.
    pub answers_offers: bool,
    pub health: Health,
}

impl PeerView {
    pub fn new(p: Peer, depth: Option<&meshrelay_store::OutboxDepth>) -> Self {
        let state = if p.status == PeerStatus::Blocked {
            "blocked"
        } else if p.poll_failures > 0 || p.delivery_failures > 0 {
            "failing"
        } else {
            "ok"
        };
        Self {
            subscribe: p
                .subscribe
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(Value::Null),
            health: Health {
                state: state.to_string(),
                poll_failures: p.poll_failures,
                delivery_failures: p.delivery_failures,
                last_poll_ok: p.last_poll_ok,
                last_delivery: p.last_delivery,
                pending: depth.map_or(0, |d| d.pending),
                dead: depth.map_or(0, |d| d.dead),
            },
            node: p.node,
            url: p.url,
            status: p.status,
            inbox: p.inbox,
            added_at: p.added_at,
            last_poll: p.last_poll,
            forwarding: p.forwarding,
            answers_offers: p.answers_offers,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PeerList {
    pub peers: Vec<PeerView>,
}

pub async fn peer_views(ctx: &AdminContext) -> AdminResult<Vec<PeerView>> {
    let depth = ctx.store.outbox_depth_by_peer().await?;
    Ok(ctx
        .store
        .peers()
        .await?
        .into_iter()
        .map(|p| {
            let d = depth.get(&p.node);
            PeerView::new(p, d)
        })
        .collect())
}

/// Every known peer with its status and delivery health.
#[utoipa::path(get, path = "/admin/v1/peers", responses((status = 200, body = PeerList), (status = 401, body = ErrorBody)))]
pub(super) async fn list_peers(State(ctx): State<AdminContext>) -> AdminResult<Json<PeerList>> {
    Ok(Json(PeerList {
        peers: peer_views(&ctx).await?,
    }))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AddPeer {
    pub url: String,
}

async fn one_peer(ctx: &AdminContext, peer: Peer) -> AdminResult<PeerView> {
    let depth = ctx.store.outbox_depth_by_peer().await?;
    let d = depth.get(&peer.node);
    Ok(PeerView::new(peer, d))
}

/// Add a peer by URL: fetch its node document, pin its key, announce this node.
#[utoipa::path(
    post,
    path = "/admin/v1/peers",
    request_body = AddPeer,
    responses(
        (status = 201, body = PeerView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "blocked", body = ErrorBody),
        (status = 409, description = "key_changed: the URL is known under another key", body = ErrorBody),
        (status = 422, description = "the node document could not be fetched or checked", body = ErrorBody)
    )
)]
pub(super) async fn add_peer(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Result<Json<AddPeer>, JsonRejection>,
) -> AdminResult<(StatusCode, Json<PeerView>)> {
    let req = json_body(body)?;
    let peer = actions::add_peer(&ctx, &api_actor(addr), &req.url).await?;
    Ok((StatusCode::CREATED, Json(one_peer(&ctx, peer).await?)))
}

/// Approve a pending peer (or re-pin one whose key changed), block, unblock,
/// or poll its node document now.
#[utoipa::path(
    post,
    path = "/admin/v1/peers/{node}/{action}",
    params(("node" = String, Path), ("action" = String, Path, description = "approve, block, unblock or poll")),
    responses((status = 200, body = PeerView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub(super) async fn change_peer(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path((node, action)): Path<(String, String)>,
) -> AdminResult<Json<PeerView>> {
    let action = PeerAction::parse(&action).ok_or_else(|| {
        AdminError::not_found("no such peer action: use approve, block, unblock or poll")
    })?;
    let peer = actions::peer_action(&ctx, &api_actor(addr), &node, action).await?;
    Ok(Json(one_peer(&ctx, peer).await?))
}

/// Forget a peer and its queue.
#[utoipa::path(
    delete,
    path = "/admin/v1/peers/{node}",
    params(("node" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub(super) async fn remove_peer(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(node): Path<String>,
) -> AdminResult<StatusCode> {
    actions::remove_peer(&ctx, &api_actor(addr), &node).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(status: PeerStatus, subscribe: Option<&str>, delivery_failures: i64) -> Peer {
        Peer {
            node: "ab".repeat(32),
            url: "https://b.example".into(),
            status,
            subscribe: subscribe.map(str::to_string),
            inbox: Some("https://b.example/v1/federation/inbox".into()),
            added_at: 1_700_000_000,
            last_poll: Some(1_700_000_100),
            last_poll_ok: None,
            poll_failures: 0,
            delivery_failures,
            last_delivery: Some(1_700_000_200),
            forwarding: Forwarding::Lazy,
            answers_offers: true,
        }
    }

    /// The exact bytes `GET /admin/v1/peers` answers with, and `meshrelay admin`
    /// reading them back into the same list: nulls and the embedded preference
    /// survive, and a field that serialized differently from how it reads
    /// (renamed, skipped when empty) would fail here.
    #[test]
    fn a_peer_list_answer_reads_back_as_it_was_written() {
        let depth = meshrelay_store::OutboxDepth {
            pending: 2,
            dead: 1,
        };
        let list = PeerList {
            peers: vec![
                PeerView::new(
                    peer(PeerStatus::Active, Some(r#"{"scope":"all"}"#), 3),
                    Some(&depth),
                ),
                PeerView::new(peer(PeerStatus::Pending, None, 0), None),
            ],
        };
        let node = "ab".repeat(32);
        let view = |status: &str, subscribe: &str, state: &str, failures: u8, queue: (u8, u8)| {
            format!(
                r#"{{"node":"{node}","url":"https://b.example","status":"{status}","subscribe":{subscribe},"inbox":"https://b.example/v1/federation/inbox","added_at":1700000000,"last_poll":1700000100,"forwarding":"lazy","answers_offers":true,"health":{{"state":"{state}","poll_failures":0,"delivery_failures":{failures},"last_poll_ok":null,"last_delivery":1700000200,"pending":{},"dead":{}}}}}"#,
                queue.0, queue.1
            )
        };
        let wire = format!(
            r#"{{"peers":[{},{}]}}"#,
            view("active", r#"{"scope":"all"}"#, "failing", 3, (2, 1)),
            view("pending", "null", "ok", 0, (0, 0)),
        );
        assert_eq!(serde_json::to_string(&list).unwrap(), wire);
        assert_eq!(serde_json::from_str::<PeerList>(&wire).unwrap(), list);
    }
}
