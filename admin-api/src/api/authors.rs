//! `/admin/v1/authors`: the blocked authors, and blocking or unblocking one.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{api_actor, ErrorBody};
use crate::actions;
use crate::{AdminContext, AdminResult};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlockedAuthor {
    pub author: String,
    /// Unix seconds.
    pub blocked_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlockedAuthors {
    pub authors: Vec<BlockedAuthor>,
}

/// Authors whose payloads are refused and hidden.
#[utoipa::path(get, path = "/admin/v1/authors/blocked", responses((status = 200, body = BlockedAuthors), (status = 401, body = ErrorBody)))]
pub(super) async fn blocked_authors(
    State(ctx): State<AdminContext>,
) -> AdminResult<Json<BlockedAuthors>> {
    Ok(Json(BlockedAuthors {
        authors: ctx
            .store
            .blocked_authors()
            .await?
            .into_iter()
            .map(|(author, blocked_at)| BlockedAuthor { author, blocked_at })
            .collect(),
    }))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuthorBlock {
    pub author: String,
    pub blocked: bool,
    /// False when nothing changed (it was already blocked).
    pub changed: bool,
}

/// Block an author: its new payloads are refused `blocked`, its stored ones hidden.
#[utoipa::path(
    post,
    path = "/admin/v1/authors/{key}/block",
    params(("key" = String, Path)),
    responses((status = 200, body = AuthorBlock), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
pub(super) async fn block_author(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(key): Path<String>,
) -> AdminResult<Json<AuthorBlock>> {
    let changed = actions::block_author(&ctx, &api_actor(addr), &key, true).await?;
    Ok(Json(AuthorBlock {
        author: key,
        blocked: true,
        changed,
    }))
}

/// Unblock an author: its stored payloads show again.
#[utoipa::path(
    delete,
    path = "/admin/v1/authors/{key}/block",
    params(("key" = String, Path)),
    responses((status = 200, body = AuthorBlock), (status = 400, description = "not an author key", body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, description = "not blocked", body = ErrorBody))
)]
pub(super) async fn unblock_author(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(key): Path<String>,
) -> AdminResult<Json<AuthorBlock>> {
    actions::block_author(&ctx, &api_actor(addr), &key, false).await?;
    Ok(Json(AuthorBlock {
        author: key,
        blocked: false,
        changed: true,
    }))
}
