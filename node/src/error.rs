//! The HTTP layer's one error type: PROTOCOL.md's status and JSON body for
//! expected errors, an opaque 500 for the rest with the cause chain in the log.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meshrelay_protocol::{ErrorCode, ProtocolError};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
    /// A status other than the code's own, where PROTOCOL.md names one.
    pub status: Option<u16>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            status: None,
        }
    }
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// An unexpected failure: log the whole chain, tell the client nothing inside.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        let chain = meshrelay_protocol::error::cause_chain(err);
        tracing::error!(error = %chain, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<meshrelay_store::Error> for ApiError {
    fn from(e: meshrelay_store::Error) -> Self {
        Self::internal(&e)
    }
}

/// The JSON error body of PROTOCOL.md 4.
pub fn error_body(code: ErrorCode, message: &str) -> serde_json::Value {
    json!({"error": {"code": code.as_str(), "message": message}})
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status.unwrap_or(self.code.http_status()))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Json(error_body(self.code, &self.message))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                secs.to_string().parse().expect("digits"),
            );
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A request body, or the error its rejection deserves: `too_large` (413) past
/// the route's body limit, `bad_request` otherwise.
pub fn body_or_413(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<axum::body::Bytes> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::TooLarge,
                "request body is larger than this route takes",
            )
        } else {
            ApiError::bad_request(e.body_text())
        }
    })
}
