//! The error codes of PROTOCOL.md 4.2 and their HTTP statuses: the one place that maps them.

use std::fmt;

/// Every wire error code. The HTTP status lives here too, so WebSocket and HTTP
/// answers can never disagree on what a code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    InvalidPayload,
    InvalidId,
    InvalidSignature,
    TooLarge,
    RateLimited,
    Blocked,
    AuthRequired,
    AuthFailed,
    UnknownPeer,
    PeerPending,
    KeyChanged,
    NotSubscribed,
    NotFound,
    Conflict,
    TooManySubscriptions,
    /// A community's policy refuses this author (PROTOCOL.md 9.4).
    Forbidden,
    /// An uploader's blobs would pass `blob_quota_bytes` (PROTOCOL.md 4.3).
    QuotaExceeded,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidPayload,
        ErrorCode::InvalidId,
        ErrorCode::InvalidSignature,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Blocked,
        ErrorCode::AuthRequired,
        ErrorCode::AuthFailed,
        ErrorCode::UnknownPeer,
        ErrorCode::PeerPending,
        ErrorCode::KeyChanged,
        ErrorCode::NotSubscribed,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::TooManySubscriptions,
        ErrorCode::Forbidden,
        ErrorCode::QuotaExceeded,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidPayload => "invalid_payload",
            ErrorCode::InvalidId => "invalid_id",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Blocked => "blocked",
            ErrorCode::AuthRequired => "auth_required",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::PeerPending => "peer_pending",
            ErrorCode::KeyChanged => "key_changed",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status PROTOCOL.md 4 gives this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::TooManySubscriptions => 400,
            ErrorCode::AuthRequired | ErrorCode::AuthFailed | ErrorCode::UnknownPeer => 401,
            ErrorCode::Blocked
            | ErrorCode::PeerPending
            | ErrorCode::Forbidden
            | ErrorCode::QuotaExceeded => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::KeyChanged => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::InvalidPayload
            | ErrorCode::InvalidId
            | ErrorCode::InvalidSignature
            | ErrorCode::NotSubscribed => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal with its wire code and a human message saying what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_payload(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidPayload, message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;

/// An error and its causes on one line (`outer: inner: root`), for logs and
/// for answers that cannot carry the error itself.
pub fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
