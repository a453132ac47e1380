//! `/admin/v1/payloads`: hiding one payload for good.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{api_actor, ErrorBody};
use crate::actions;
use crate::{AdminContext, AdminResult};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HiddenPayload {
    pub id: String,
    pub hidden: bool,
    /// False when it was hidden already.
    pub changed: bool,
}

/// Hide one payload for good (it is purged after the grace period).
#[utoipa::path(
    delete,
    path = "/admin/v1/payloads/{id}",
    params(("id" = String, Path)),
    responses((status = 200, body = HiddenPayload), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, description = "invalid_id: not 64 lowercase hex", body = ErrorBody))
)]
pub(super) async fn hide_payload(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> AdminResult<Json<HiddenPayload>> {
    let changed = actions::hide_payload(&ctx, &api_actor(addr), &id).await?;
    Ok(Json(HiddenPayload {
        id,
        hidden: true,
        changed,
    }))
}
