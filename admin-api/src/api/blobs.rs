//! `/admin/v1/blobs` (PROTOCOL.md 4.3, 7): the blobs held, with uploader,
//! size, type and references, and removing one for good.

use std::net::SocketAddr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::Json;
use meshrelay_protocol::hexfmt::is_hex32;
use meshrelay_protocol::ErrorCode;
use meshrelay_store::BlobRecord;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{api_actor, list_limit, query, ErrorBody};
use crate::actions;
use crate::{AdminContext, AdminError, AdminResult};

#[derive(Debug, Deserialize, IntoParams)]
pub struct BlobQuery {
    /// Only this uploader's blobs (a client key, hex).
    pub uploader: Option<String>,
    /// Blobs whose name sorts after this one (the previous page's `next`).
    pub after: Option<String>,
    /// At most this many, by name (default 100, at most 1000).
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlobView {
    pub sha256: String,
    pub size: i64,
    /// The type it is served with, detected from its bytes.
    #[serde(rename = "type")]
    pub content_type: String,
    /// The client key that uploaded it; null for a blob mirrored from a peer
    /// or removed before it was held.
    pub uploader: Option<String>,
    /// Unix seconds when this node first held it.
    pub created_at: i64,
    /// Visible payloads whose `["b", sha256]` tag names it.
    pub references: i64,
    /// Removed by an operator (its bytes are gone; re-uploads are refused).
    pub removed: bool,
}

impl From<BlobRecord> for BlobView {
    fn from(r: BlobRecord) -> Self {
        Self {
            sha256: r.sha256,
            size: r.size,
            content_type: r.content_type,
            uploader: r.uploader,
            created_at: r.created_at,
            references: r.references.unwrap_or(0),
            removed: r.removed_at.is_some(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlobList {
    pub blobs: Vec<BlobView>,
    /// The `after` of the next page; null on the last one.
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RemovedBlob {
    pub sha256: String,
    pub removed: bool,
    /// False when it was removed already.
    pub changed: bool,
    /// Bytes deleted from storage (0 when it was not held).
    pub freed_bytes: i64,
}

/// The blobs held and removed, by name.
#[utoipa::path(
    get,
    path = "/admin/v1/blobs",
    params(BlobQuery),
    responses((status = 200, body = BlobList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody))
)]
pub(super) async fn list_blobs(
    State(ctx): State<AdminContext>,
    q: Result<Query<BlobQuery>, QueryRejection>,
) -> AdminResult<Json<BlobList>> {
    let q = query(q)?;
    let limit = list_limit(q.limit)?;
    if let Some(up) = &q.uploader {
        if !is_hex32(up) {
            return Err(AdminError::bad_request(
                "uploader is a key: 64 lowercase hex characters",
            ));
        }
    }
    let limit = u32::try_from(limit).unwrap_or(1000);
    let rows = ctx
        .store
        .list_blobs(q.uploader.as_deref(), q.after.as_deref(), limit)
        .await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.sha256.clone()))
        .flatten();
    Ok(Json(BlobList {
        blobs: rows.into_iter().map(BlobView::from).collect(),
        next,
    }))
}

/// Remove a blob: its bytes are deleted and it is kept as a tombstone, so
/// re-uploads are refused `blocked` and it is never mirrored again.
#[utoipa::path(
    delete,
    path = "/admin/v1/blobs/{sha256}",
    params(("sha256" = String, Path)),
    responses((status = 200, body = RemovedBlob), (status = 401, body = ErrorBody), (status = 422, description = "invalid_id: not 64 lowercase hex", body = ErrorBody))
)]
pub(super) async fn remove_blob(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(sha256): Path<String>,
) -> AdminResult<Json<RemovedBlob>> {
    if !is_hex32(&sha256) {
        return Err(AdminError::new(
            ErrorCode::InvalidId,
            "a blob's name is 64 lowercase hex characters",
        ));
    }
    let (changed, freed_bytes) = actions::remove_blob(&ctx, &api_actor(addr), &sha256).await?;
    Ok(Json(RemovedBlob {
        sha256,
        removed: true,
        changed,
        freed_bytes,
    }))
}
