//! `GET /v1/communities/{owner}/{name}` (PROTOCOL.md 9.4): a community's
//! state as this node computes it from the governance payloads it holds.

use axum::extract::{Path, State};
use meshrelay_protocol::community::place_of;

use super::schema::{CommunityDoc, ErrorBody};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A community's owner, policy, members and open invites.
#[utoipa::path(
    get,
    path = "/v1/communities/{owner}/{name}",
    params(
        ("owner" = String, Path, description = "The owner's public key, lowercase hex"),
        ("name" = String, Path, description = "1-32 characters of [a-z0-9._-]"),
    ),
    responses(
        (status = 200, body = CommunityDoc),
        (status = 400, description = "Not a community name", body = ErrorBody),
        (status = 404, description = "No payload of this community is held", body = ErrorBody),
    )
)]
pub async fn community(
    State(state): State<AppState>,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<axum::response::Response> {
    let root = format!("g/{owner}/{name}");
    match place_of(&root) {
        Ok(Some(p)) if p.sub.is_empty() => {}
        Ok(_) => return Err(ApiError::bad_request("a community is g/<owner>/<name>")),
        Err(why) => return Err(ApiError::bad_request(why)),
    }
    // Reading and evaluating a large community's governance is a heavy read
    // like a query page: it takes one of the same permits.
    state
        .build_page(async {
            let evaluation = state.store.community(&root).await?.ok_or_else(|| {
                ApiError::not_found("this node holds no payload of this community")
            })?;
            let answer = evaluation.answer(meshrelay_protocol::clock::now_wire_secs());
            serde_json::to_vec(&answer).map_err(|e| ApiError::internal(&e))
        })
        .await
}
