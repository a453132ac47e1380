//! `PUT`, `GET` and `HEAD /v1/blobs/{sha256}` (PROTOCOL.md 4.3).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use meshrelay_blobs::kind;
use meshrelay_protocol::hexfmt::is_hex32;
use meshrelay_protocol::ErrorCode;
use meshrelay_store::{BlobInsert, BlobRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::IntakeError;
use crate::error::ApiError;
use crate::http::schema::ErrorBody;
use crate::state::AppState;

/// What an accepted upload answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlobInfo {
    pub sha256: String,
    pub size: u64,
    /// The type the blob is served with, detected from its bytes.
    #[serde(rename = "type")]
    pub content_type: String,
}

impl From<&BlobRecord> for BlobInfo {
    fn from(r: &BlobRecord) -> Self {
        Self {
            sha256: r.sha256.clone(),
            size: r.size.max(0) as u64,
            content_type: r.content_type.clone(),
        }
    }
}

/// Beyond `request_timeout_secs`, a blob's body may take one more second per
/// this many bytes (128 KiB/s, about a 1 Mbit/s uplink): 16 MiB in 158 s.
const SLOWEST_UPLOAD_BYTES_PER_SEC: u64 = 128 * 1024;

fn name_checked(name: &str) -> Result<(), ApiError> {
    if is_hex32(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "a blob's name is the SHA-256 of its bytes: 64 lowercase hex characters",
        ))
    }
}

fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("Content-Length is not a number")),
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        ErrorCode::TooLarge,
        format!("a blob is at most max_blob_bytes = {max} bytes"),
    )
}

/// Upload a blob, signed by any client key (PROTOCOL.md 6).
#[utoipa::path(
    put,
    path = "/v1/blobs/{sha256}",
    params(("sha256" = String, Path, description = "lowercase hex SHA-256 of the bytes")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The blob's bytes, signed (RFC 9421) with a Content-Digest"),
    responses(
        (status = 201, description = "Stored", body = BlobInfo),
        (status = 200, description = "Held already", body = BlobInfo),
        (status = 400, description = "bad_request: the name is not 64 lowercase hex", body = ErrorBody),
        (status = 401, description = "auth_failed: unsigned, badly signed, or a Content-Digest that does not match the body", body = ErrorBody),
        (status = 403, description = "blocked (uploader blocked or blob removed) or quota_exceeded", body = ErrorBody),
        (status = 413, description = "too_large: over max_blob_bytes", body = ErrorBody),
        (status = 422, description = "invalid_id: the bytes do not hash to the name", body = ErrorBody),
    )
)]
pub async fn put_blob(
    State(state): State<AppState>,
    Path(name): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // The order of PROTOCOL.md 4.3: name, size, signature, blocked, quota,
    // then after the body the digest and the hash.
    name_checked(&name)?;
    let max = state.blobs.settings.max_blob_bytes;
    let declared = declared_length(&headers)?;
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let path_and_query = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let (uploader, claimed) = state
        .federation
        .verify_client_streamed("PUT", path_and_query, &headers)
        .await
        .map_err(|r| ApiError::new(r.code, r.message))?;
    let uploader = uploader.to_hex();
    if state.store.is_author_blocked(&uploader).await? {
        return Err(ApiError::new(
            ErrorCode::Blocked,
            "this uploader is blocked",
        ));
    }
    let held = state.store.blob(&name).await?;
    if held.as_ref().is_some_and(|r| r.removed_at.is_some()) {
        return Err(ApiError::new(
            ErrorCode::Blocked,
            "the operator removed this blob",
        ));
    }
    let quota = state.blobs.settings.quota_bytes as i64;
    if let (None, Some(size)) = (&held, declared) {
        let used = state.store.blob_bytes_of(&uploader).await?;
        if used + size as i64 > quota {
            return Err(quota_exceeded(used, size, quota));
        }
    }
    let deadline = Duration::from_secs(
        state.settings.connections.request_timeout_secs
            + declared.unwrap_or(max) / SLOWEST_UPLOAD_BYTES_PER_SEC,
    );
    let chunks = body.into_data_stream();
    let body_read = async {
        if let Some(rec) = held {
            // Held already: the bytes are checked as for a new upload, and
            // nothing is written.
            let (digest, _) = hash_only(chunks, max).await?;
            check_digest(&name, &claimed, &digest)?;
            return Ok((StatusCode::OK, BlobInfo::from(&rec)));
        }
        let staged = state.blobs.take_in(chunks).await.map_err(intake_error)?;
        check_digest(&name, &claimed, &staged.digest)?;
        let (size, content_type) = (staged.size, staged.content_type);
        staged.publish().await.map_err(|e| ApiError::internal(&e))?;
        let now = meshrelay_protocol::clock::now_secs();
        let outcome = state
            .store
            .insert_blob(
                &name,
                size as i64,
                content_type,
                Some(&uploader),
                Some(quota),
                now,
            )
            .await?;
        let info = BlobInfo {
            sha256: name.clone(),
            size,
            content_type: content_type.to_string(),
        };
        match outcome {
            BlobInsert::Inserted => {
                state.metrics.blob_uploads.inc();
                tracing::info!(sha256 = %name, size, r#type = content_type, uploader = %uploader, "blob stored");
                Ok((StatusCode::CREATED, info))
            }
            BlobInsert::Held(rec) => Ok((StatusCode::OK, BlobInfo::from(&rec))),
            BlobInsert::Removed => {
                // Removed while this upload ran: its bytes go again.
                state
                    .blobs
                    .storage
                    .delete(&name)
                    .await
                    .map_err(|e| ApiError::internal(&e))?;
                Err(ApiError::new(
                    ErrorCode::Blocked,
                    "the operator removed this blob",
                ))
            }
            BlobInsert::OverQuota { used } => {
                state
                    .blobs
                    .storage
                    .delete(&name)
                    .await
                    .map_err(|e| ApiError::internal(&e))?;
                Err(quota_exceeded(used, size, quota))
            }
        }
    };
    let (status, info) = tokio::time::timeout(deadline, body_read)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "the blob's body did not arrive within {} s",
                    deadline.as_secs()
                ),
            )
            .with_status(408)
        })??;
    Ok((status, Json(info)).into_response())
}

fn quota_exceeded(used: i64, size: u64, quota: i64) -> ApiError {
    ApiError::new(
        ErrorCode::QuotaExceeded,
        format!("this uploader holds {used} bytes of blobs; {size} more would pass blob_quota_bytes = {quota}"),
    )
}

fn intake_error(e: IntakeError) -> ApiError {
    match e {
        IntakeError::TooLarge(max) => too_large(max),
        IntakeError::Body(why) => ApiError::bad_request(format!("reading the body failed: {why}")),
        IntakeError::Storage(e) => ApiError::internal(&e),
    }
}

/// The Content-Digest must match the bytes (401), and the bytes the name (422).
fn check_digest(name: &str, claimed: &[u8; 32], digest: &[u8; 32]) -> Result<(), ApiError> {
    if claimed != digest {
        return Err(ApiError::new(
            ErrorCode::AuthFailed,
            "Content-Digest does not match the body",
        ));
    }
    if hex::encode(digest) != name {
        return Err(ApiError::new(
            ErrorCode::InvalidId,
            "the bytes do not hash to the blob's name",
        ));
    }
    Ok(())
}

/// Hash a body without keeping it, refusing past `max` bytes.
async fn hash_only(
    mut chunks: axum::body::BodyDataStream,
    max: u64,
) -> Result<([u8; 32], u64), ApiError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the body failed: {e}")))?;
        size += chunk.len() as u64;
        if size > max {
            return Err(too_large(max));
        }
        hasher.update(&chunk);
    }
    Ok((hasher.finalize().into(), size))
}

/// A blob's bytes.
#[utoipa::path(
    get,
    path = "/v1/blobs/{sha256}",
    params(("sha256" = String, Path, description = "lowercase hex SHA-256 of the bytes")),
    responses(
        (status = 200, description = "The bytes, with the type detected from them", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The range asked for", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "If-None-Match named this blob's ETag"),
        (status = 400, description = "bad_request: the name is not 64 lowercase hex", body = ErrorBody),
        (status = 404, description = "not_found: not held", body = ErrorBody),
        (status = 416, description = "The range lies outside the blob", body = ErrorBody),
    )
)]
pub async fn get_blob(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(&state, &name, &method, &headers).await
}

/// A blob's headers, without its bytes.
#[utoipa::path(
    head,
    path = "/v1/blobs/{sha256}",
    params(("sha256" = String, Path, description = "lowercase hex SHA-256 of the bytes")),
    responses(
        (status = 200, description = "Held"),
        (status = 206, description = "The range asked for"),
        (status = 304, description = "If-None-Match named this blob's ETag"),
        (status = 400, description = "bad_request: the name is not 64 lowercase hex"),
        (status = 404, description = "not_found: not held"),
        (status = 416, description = "The range lies outside the blob"),
    )
)]
pub async fn head_blob(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(&state, &name, &Method::HEAD, &headers).await
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

async fn serve(
    state: &AppState,
    name: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    name_checked(name)?;
    let rec = match state.store.blob(name).await? {
        Some(rec) if rec.removed_at.is_none() => rec,
        _ => return Err(ApiError::not_found("this node holds no such blob")),
    };
    let size = rec.size.max(0) as u64;
    let etag = format!("\"{name}\"");
    let mut resp = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
        .header(header::ACCEPT_RANGES, "bytes");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| etag_matches(v, &etag))
    {
        return Ok(resp
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response"));
    }
    resp = resp.header(
        header::CONTENT_TYPE,
        kind::content_type_header(&rec.content_type),
    );
    if kind::is_attachment(&rec.content_type) {
        resp = resp.header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        );
    }
    // An If-Range naming another validator asks for the whole blob.
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if if_range_ok => match http_range_header::parse_range_header(r) {
            Ok(parsed) => match parsed.validate(size) {
                // Several ranges are answered with the whole blob (RFC 9110 14.2).
                Ok(ranges) if ranges.len() == 1 => Some(ranges[0].clone()),
                Ok(_) => None,
                Err(_) => {
                    let mut err = ApiError::new(
                        ErrorCode::BadRequest,
                        format!("the range lies outside the blob's {size} bytes"),
                    )
                    .with_status(416)
                    .into_response();
                    err.headers_mut().insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
                    );
                    return Ok(err);
                }
            },
            // A Range header that does not parse is ignored (RFC 9110 14.2).
            Err(_) => None,
        },
        _ => None,
    };
    let (status, span) = match &range {
        Some(r) => {
            resp = resp.header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", r.start(), r.end()),
            );
            (StatusCode::PARTIAL_CONTENT, *r.start()..*r.end() + 1)
        }
        None => (StatusCode::OK, 0..size),
    };
    resp = resp
        .status(status)
        .header(header::CONTENT_LENGTH, span.end - span.start);
    if method == Method::HEAD || span.is_empty() {
        return Ok(resp.body(Body::empty()).expect("valid response"));
    }
    let whole = range.is_none();
    let stream = state
        .blobs
        .storage
        .open_read(name, (!whole).then_some(span))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let Some(stream) = stream else {
        tracing::error!(sha256 = name, "a blob's record has no bytes in storage");
        return Err(ApiError::not_found("this node holds no such blob"));
    };
    state.metrics.blob_downloads.inc();
    Ok(resp
        .body(Body::from_stream(stream))
        .expect("valid response"))
}
