//! Response shapes, as types so the OpenAPI document and the handlers share them.

use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of PROTOCOL.md's error codes, e.g. `invalid_payload`.
    pub code: String,
    pub message: String,
}

/// A signed payload (PROTOCOL.md 2). Documentation only: handlers pass the
/// stored JSON through untouched.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct PayloadDoc {
    /// Lowercase hex SHA-256 of the canonical form.
    pub id: String,
    /// Lowercase hex Ed25519 public key.
    pub author: String,
    pub seq: u64,
    pub prev: Option<String>,
    pub created_at: u64,
    pub kind: String,
    pub channel: String,
    pub tags: Vec<Vec<String>>,
    pub content: String,
    pub sig: String,
}

#[derive(Serialize, ToSchema)]
pub struct PublishResponse {
    pub id: String,
    pub accepted: bool,
    pub duplicate: bool,
}

#[derive(Serialize, ToSchema)]
pub struct QueryResponse {
    #[schema(value_type = Vec<PayloadDoc>)]
    pub payloads: Vec<Box<RawValue>>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HeadResponse {
    pub author: String,
    pub seq: u64,
    pub id: String,
}

#[derive(Serialize, ToSchema)]
pub struct LogResponse {
    pub author: String,
    #[schema(value_type = Vec<PayloadDoc>)]
    pub payloads: Vec<Box<RawValue>>,
}

#[derive(Serialize, ToSchema)]
pub struct StatusResponse {
    pub status: String,
}
