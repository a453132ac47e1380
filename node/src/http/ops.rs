//! Node description and operations endpoints: `/v1/info`, health, metrics and the
//! signed node document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meshrelay_protocol::node_doc::{NodeDoc, SignedNodeDoc, Software};
use meshrelay_protocol::{SOFTWARE_NAME, SOFTWARE_VERSION};
use serde_json::{json, Value};

use super::schema::{ErrorBody, StatusResponse};
use crate::error::ApiError;
use crate::state::AppState;

/// The limits a client needs to know, as sent in `/v1/info` and the WebSocket hello.
pub fn limits_json(state: &AppState) -> Value {
    let s = &state.settings;
    json!({
        "max_content_bytes": s.limits.payload.max_content_bytes,
        "max_future_skew": s.limits.payload.max_future_skew,
        "max_limit": s.limits.max_limit,
        "max_subscriptions": s.limits.max_subscriptions,
        "max_filters": s.limits.max_filters,
        "max_message_bytes": crate::http::max_frame_bytes(&s.limits),
        "max_payload_bytes": s.limits.max_payload_bytes,
        "max_filter_values": s.limits.max_filter_values,
        "max_response_bytes": s.limits.max_response_bytes,
        "ws_queue_bytes": s.limits.ws_queue_bytes,
        "ws_idle_secs": s.limits.ws_idle_secs,
        "max_connections_per_ip": s.connections.max_connections_per_ip,
        "publish_rate": s.limits.publish_rate,
        "publish_burst": s.limits.publish_burst,
        "max_blob_bytes": s.blobs.max_blob_bytes,
        "blob_quota_bytes": s.blobs.quota_bytes,
    })
}

/// Node key, software, limits and federation preferences.
#[utoipa::path(get, path = "/v1/info", responses((status = 200, description = "Node description", body = Object)))]
pub async fn info(State(state): State<AppState>) -> Json<Value> {
    let s = &state.settings;
    Json(json!({
        "node": state.node_hex(),
        "url": s.public_url(),
        "software": {"name": SOFTWARE_NAME, "version": SOFTWARE_VERSION},
        "protocol": 1,
        // PROTOCOL.md 5.6: this node answers `POST /v1/federation/ihave`.
        "lazy_forwarding": true,
        "limits": limits_json(&state),
        "federation": {
            "subscribe": s.federation.own_subscribe,
            "max_hops": s.federation.max_hops,
            "require_peer_approval": s.federation.require_peer_approval,
        },
    }))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = StatusResponse)))]
pub async fn healthz() -> Json<StatusResponse> {
    Json(StatusResponse {
        status: "ok".into(),
    })
}

/// Readiness: storage answers.
#[utoipa::path(
    get,
    path = "/readyz",
    responses((status = 200, body = StatusResponse), (status = 503, description = "Storage unreachable", body = ErrorBody))
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(StatusResponse {
            status: "ready".into(),
        })
        .into_response(),
        Err(e) => {
            let mut resp = ApiError::internal(&e).into_response();
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            resp
        }
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    for (listener, not_after) in state.tls.expiries() {
        state
            .metrics
            .tls_cert_expiry
            .get_or_create(&crate::metrics::ListenerLabels { listener })
            .set(not_after);
    }
    match state.store.blob_totals().await {
        Ok(t) => {
            state.metrics.blobs_stored.set(t.count);
            state.metrics.blob_bytes.set(t.bytes);
            state.metrics.blob_fetches_pending.set(t.fetches_pending);
        }
        Err(e) => {
            tracing::warn!(error = %meshrelay_protocol::error::cause_chain(&e), "reading blob totals for /metrics failed")
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Build and sign this node's document (PROTOCOL.md 5.1) as of now.
pub fn signed_node_document(state: &AppState) -> SignedNodeDoc {
    let url = state.settings.public_url().to_string();
    NodeDoc {
        node: state.node_hex(),
        inbox: format!("{url}/v1/federation/inbox"),
        url,
        software: Software {
            name: SOFTWARE_NAME.into(),
            version: SOFTWARE_VERSION.into(),
        },
        subscribe: state.settings.federation.own_subscribe.clone(),
        issued_at: meshrelay_protocol::clock::now_wire_secs(),
    }
    .sign(&state.node_key)
}

/// The node's signed self-description.
#[utoipa::path(get, path = "/.well-known/meshrelay", responses((status = 200, description = "Signed node document", body = Object)))]
pub async fn node_document(State(state): State<AppState>) -> Json<SignedNodeDoc> {
    Json(signed_node_document(&state))
}
