//! `GET /v1/authors/{key}/head` and `/log`: the author's hash-chained log, forks included.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use meshrelay_protocol::receipt::SignedHead;
use meshrelay_protocol::PublicKey;
use serde::Deserialize;
use utoipa::IntoParams;

use super::payloads::raw_payloads;
use super::schema::{ErrorBody, HeadResponse, LogResponse};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn check_key(key: &str) -> ApiResult<()> {
    PublicKey::from_hex(key)
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(format!("author key: {e}")))
}

/// The author's highest seq held (ties: the lowest id).
#[utoipa::path(
    get,
    path = "/v1/authors/{key}/head",
    params(("key" = String, Path, description = "Author public key, lowercase hex")),
    responses(
        (status = 200, body = HeadResponse),
        (status = 400, description = "Malformed key", body = ErrorBody),
        (status = 404, description = "Nothing held by this author", body = ErrorBody),
    )
)]
pub async fn head(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Json<SignedHead>> {
    check_key(&key)?;
    let row = state
        .store
        .head(&key)
        .await?
        .ok_or_else(|| ApiError::not_found("no payloads of this author are held"))?;
    let at = meshrelay_protocol::clock::now_wire_secs();
    let signed =
        SignedHead::sign(&state.node_key, &key, row.seq as u64, &row.id, at).map_err(|e| {
            tracing::error!(error = %e, "signing a head failed (a stored id is not 64 hex)");
            ApiError::new(meshrelay_protocol::ErrorCode::Internal, "internal error")
        })?;
    Ok(Json(signed))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// Only entries with a larger seq (default 0).
    after_seq: Option<u64>,
    /// About this many entries (default 100, at most max_limit); a page never ends inside a seq.
    limit: Option<u32>,
}

/// The author's payloads in seq order, forks as entries with the same seq.
#[utoipa::path(
    get,
    path = "/v1/authors/{key}/log",
    params(("key" = String, Path, description = "Author public key, lowercase hex"), LogParams),
    responses(
        (status = 200, body = LogResponse),
        (status = 400, description = "Malformed key or parameter", body = ErrorBody),
    )
)]
pub async fn log(
    State(state): State<AppState>,
    Path(key): Path<String>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> ApiResult<axum::response::Response> {
    check_key(&key)?;
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = params.after_seq.unwrap_or(0).min(i64::MAX as u64) as i64;
    let limit = params
        .limit
        .unwrap_or(100)
        .clamp(1, state.settings.limits.max_limit);
    let budget = state
        .settings
        .limits
        .max_response_bytes
        .saturating_sub(1024);
    state
        .build_page(async {
            let page = state.store.author_log(&key, after, limit, budget).await?;
            let answer = LogResponse {
                author: key.clone(),
                payloads: raw_payloads(page.rows.into_iter().map(|r| r.json))?,
            };
            serde_json::to_vec(&answer).map_err(|e| ApiError::internal(&e))
        })
        .await
}
