//! `/admin/v1/audit`: who changed what, when and from where, newest first.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{list_limit, query, ErrorBody};
use crate::{AdminContext, AdminResult};

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
    /// Only entries older than this entry id (to page back).
    pub before: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// The verb: add, approve, block, unblock, poll, remove, hide, retry, run,
    /// login, login_failed, logout.
    pub action: String,
    /// `peer:<node>`, `author:<key>`, `payload:<id>`, `deliveries:...`,
    /// `job:<name>` or `dashboard`.
    pub target: String,
    /// The client address the change came from.
    pub from: String,
    /// `api` or `dashboard`.
    pub via: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditLog {
    pub entries: Vec<AuditView>,
}

pub async fn audit_views(
    ctx: &AdminContext,
    before: Option<i64>,
    limit: i64,
) -> AdminResult<Vec<AuditView>> {
    Ok(ctx
        .store
        .audit(before, limit)
        .await?
        .into_iter()
        .map(|e| AuditView {
            id: e.entry_id,
            at: e.at,
            action: e.action,
            target: e.target,
            from: e.from_addr,
            via: e.via,
            detail: e.detail,
        })
        .collect())
}

/// Who changed what, when and from where; newest first.
#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    params(AuditQuery),
    responses((status = 200, body = AuditLog), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
pub(super) async fn audit_log(
    State(ctx): State<AdminContext>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> AdminResult<Json<AuditLog>> {
    let q = query(q)?;
    let limit = list_limit(q.limit)?;
    Ok(Json(AuditLog {
        entries: audit_views(&ctx, q.before, limit).await?,
    }))
}
