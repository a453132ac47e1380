//! Response shapes, as types so the OpenAPI document and the handlers share them.

use meshrelay_protocol::receipt::Receipt;
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
    /// The node's signed promise that it stored the payload (PROTOCOL.md 4.4).
    /// Absent only for a duplicate of a payload purged before the node kept
    /// its first storage time.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ReceiptDoc>)]
    pub receipt: Option<Receipt>,
}

/// A receipt (PROTOCOL.md 4.4): `sig` is Ed25519 by `node` over
/// `"meshrelay-receipt-v1:"`, the 32 bytes of `id`, and `received_at` as 8
/// bytes big-endian.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct ReceiptDoc {
    /// The node key, lowercase hex.
    pub node: String,
    pub id: String,
    /// When this node first stored the payload, from a client or a peer.
    pub received_at: u64,
    pub sig: String,
}

#[derive(Serialize, ToSchema)]
pub struct QueryResponse {
    #[schema(value_type = Vec<PayloadDoc>)]
    pub payloads: Vec<Box<RawValue>>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The author's head, signed (PROTOCOL.md 4.4): `sig` is Ed25519 by `node`
/// over `"meshrelay-head-v1:"`, the 32 bytes of `author`, `seq` as 8 bytes
/// big-endian, the 32 bytes of `id`, and `at` as 8 bytes big-endian.
/// Documentation only: the handler answers `protocol::receipt::SignedHead`.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct HeadResponse {
    pub author: String,
    pub seq: u64,
    pub id: String,
    /// The time of this answer.
    pub at: u64,
    pub node: String,
    pub sig: String,
}

/// A community (PROTOCOL.md 9.4). Documentation only: the handler answers
/// the protocol crate's evaluation.
#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct CommunityDoc {
    /// `g/<owner>/<name>`.
    pub community: String,
    pub owner: String,
    pub policy: PolicyDoc,
    /// The owner first, then every key with a role other than `none`,
    /// highest rank first, then by key.
    pub members: Vec<MemberDoc>,
    /// Registered invites with uses left, not expired, in `(created_at, id)` order.
    pub invites: Vec<InviteDoc>,
}

#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct PolicyDoc {
    /// `public`, `members` or `moderators`.
    pub write: String,
    /// Level per channel path below the root.
    pub channels: std::collections::BTreeMap<String, String>,
}

#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct MemberDoc {
    pub key: String,
    /// `owner`, `admin`, `moderator`, `member` or `banned`.
    pub role: String,
}

#[allow(dead_code)]
#[derive(Serialize, ToSchema)]
pub struct InviteDoc {
    pub id: String,
    pub uses_left: u32,
    pub expires: u64,
    /// `member` or `moderator`.
    pub role: String,
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
