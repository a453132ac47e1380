//! `GET /admin/v1/stats`: the handler only; the figures and their types live in
//! `crate::stats`, beside the sampler that keeps them.

use axum::extract::State;
use axum::Json;

use super::ErrorBody;
use crate::stats::{self, Stats};
use crate::{AdminContext, AdminResult};

/// Counts, rates, connections, outbox depth per peer, dead letters, database size.
#[utoipa::path(get, path = "/admin/v1/stats", responses((status = 200, body = Stats), (status = 401, body = ErrorBody)))]
pub(super) async fn get_stats(State(ctx): State<AdminContext>) -> AdminResult<Json<Stats>> {
    Ok(Json(stats::gather(&ctx).await?))
}
