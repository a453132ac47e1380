//! `/admin/v1/deliveries`: the outbox (items waiting for delivery, or given up
//! on), and putting dead letters back in the queue.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::Json;
use meshrelay_store::OutboxState;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{api_actor, list_limit, query, ErrorBody};
use crate::actions;
use crate::{AdminContext, AdminError, AdminResult};

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeliveryQuery {
    /// `pending` (default) or `dead`.
    pub state: Option<String>,
    /// At most this many, oldest first (default 100, at most 1000).
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub peer: String,
    pub payload: String,
    pub hops: i64,
    /// Unix milliseconds.
    pub enqueued_at: i64,
    pub attempts: i64,
    /// Unix milliseconds.
    pub next_attempt: i64,
    pub last_error: Option<String>,
    /// `pending` or `dead`.
    #[schema(value_type = String)]
    pub state: OutboxState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deliveries {
    pub deliveries: Vec<Delivery>,
}

/// The outbox: items waiting for delivery, or given up on.
#[utoipa::path(
    get,
    path = "/admin/v1/deliveries",
    params(DeliveryQuery),
    responses((status = 200, body = Deliveries), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
pub(super) async fn list_deliveries(
    State(ctx): State<AdminContext>,
    q: Result<Query<DeliveryQuery>, QueryRejection>,
) -> AdminResult<Json<Deliveries>> {
    let q = query(q)?;
    let state: OutboxState = q
        .state
        .as_deref()
        .unwrap_or("pending")
        .parse()
        .map_err(|_| AdminError::bad_request("state is pending or dead"))?;
    let limit = list_limit(q.limit)?;
    let items = ctx.store.outbox_items(state, limit).await?;
    Ok(Json(Deliveries {
        deliveries: items
            .into_iter()
            .map(|i| Delivery {
                id: i.item_id,
                peer: i.peer,
                payload: i.payload_id,
                hops: i.hops,
                enqueued_at: i.enqueued_at,
                attempts: i.attempts,
                next_attempt: i.next_attempt,
                last_error: i.last_error,
                state: i.state,
            })
            .collect(),
    }))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetryRequest {
    /// Dead letters to retry; all of them when absent.
    pub ids: Option<Vec<i64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Retried {
    pub retried: u64,
}

/// Put dead letters back in the queue: all of them, or `{"ids": [...]}`.
#[utoipa::path(
    post,
    path = "/admin/v1/deliveries/retry",
    request_body(content = Option<RetryRequest>, description = "optional"),
    responses((status = 200, body = Retried), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
pub(super) async fn retry_deliveries(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> AdminResult<Json<Retried>> {
    let req: RetryRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RetryRequest { ids: None }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| AdminError::bad_request(format!("retry body: {e}")))?
    };
    let retried = actions::retry_deliveries(&ctx, &api_actor(addr), req.ids.as_deref()).await?;
    Ok(Json(Retried { retried }))
}
