//! The admin API (PROTOCOL.md 7) and the operators' dashboard, served on the
//! node's second listener (`admin_listen`).
//!
//! Every route under `/admin/v1` wants `Authorization: Bearer <admin token>`;
//! the dashboard under `/admin/` logs in with the same token and keeps a
//! session cookie instead. Every change, from either, lands in the audit log.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use meshrelay_federation::Federation;
use meshrelay_protocol::ErrorCode;
use meshrelay_scheduler::Scheduler;
use meshrelay_store::Store;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

mod actions;
pub mod api;
mod dashboard;
pub mod layers;
pub mod stats;

use api::{ErrorBody, ErrorDetail};
pub use stats::Sampler;

/// What `/admin/v1` answers, as types: the handlers serialize them and clients
/// (`meshrelay admin`) deserialize the answers into them, so the two cannot
/// drift apart. Request bodies are here too, for clients to send.
pub mod types {
    pub use crate::api::{
        AddPeer, AuditLog, AuditView, AuthorBlock, BlobList, BlobView, BlockedAuthor,
        BlockedAuthors, Deliveries, Delivery, ErrorBody, ErrorDetail, Health, HiddenPayload,
        JobList, JobStarted, JobView, PeerList, PeerView, RemovedBlob, Retried, RetryRequest,
    };
    pub use crate::stats::{
        BlobStats, CertificateStats, DatabaseStats, OutboxStats, PayloadStats, PeerDepth, Rates,
        Stats,
    };
}

/// What the node knows only in memory and the admin API shows.
pub trait Live: Send + Sync {
    /// Open WebSocket connections of local clients.
    fn connections(&self) -> i64;
    /// Live subscriptions over those connections.
    fn subscriptions(&self) -> i64;
    /// The listeners' TLS certificates: `(listener, notAfter in Unix seconds)`.
    fn certificates(&self) -> Vec<(String, i64)> {
        Vec::new()
    }
}

/// Everything the admin routes need: cheap handles shared with the node.
#[derive(Clone)]
pub struct AdminContext {
    pub store: Store,
    pub federation: Arc<Federation>,
    pub scheduler: Arc<Scheduler>,
    pub live: Arc<dyn Live>,
    /// How the node stores what an operator's sync fetches.
    pub ingest: Arc<dyn meshrelay_federation::Ingest>,
    /// This node's key (hex) and public URL, for the dashboard's header.
    pub node: String,
    pub public_url: String,
    /// Unix seconds when the node started.
    pub started_at: i64,
    pub sampler: Arc<Sampler>,
    /// Where the node keeps blob bytes (removing a blob deletes them).
    pub blobs: meshrelay_blobs::BlobStorage,
    /// The admin listener speaks HTTPS: the dashboard's cookie is `Secure`.
    pub secure_cookie: bool,
    token_hash: [u8; 32],
    sessions: moka::sync::Cache<String, Arc<dashboard::Session>>,
    /// CSRF tokens of login forms not yet submitted.
    login_forms: moka::sync::Cache<String, ()>,
}

impl AdminContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        federation: Arc<Federation>,
        scheduler: Arc<Scheduler>,
        live: Arc<dyn Live>,
        ingest: Arc<dyn meshrelay_federation::Ingest>,
        node: String,
        public_url: String,
        token: &str,
        blobs: meshrelay_blobs::BlobStorage,
    ) -> Self {
        let sampler = Arc::new(Sampler::new(store.clone(), federation.clone()));
        Self {
            store,
            federation,
            scheduler,
            live,
            ingest,
            node,
            public_url,
            started_at: unix_now(),
            sampler,
            blobs,
            secure_cookie: false,
            token_hash: Sha256::digest(token.as_bytes()).into(),
            sessions: moka::sync::Cache::builder()
                .max_capacity(1000)
                .time_to_idle(Duration::from_secs(12 * 3600))
                .build(),
            login_forms: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
        }
    }

    /// Whether `candidate` is the admin token. Both sides are hashed first, so
    /// the comparison takes the same time whatever the candidate's length.
    pub fn token_matches(&self, candidate: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        h.ct_eq(&self.token_hash).into()
    }
}

/// The admin listener's whole router: `/admin/v1/...` and the dashboard.
pub fn router(ctx: AdminContext) -> axum::Router {
    layers::traced(
        api::router(ctx.clone()).merge(dashboard::router(ctx)),
        "admin",
    )
}

/// The admin token: the configured one, else the one in `path`, else a new
/// one written there (mode 0600). True in the second field when it was made now.
pub fn load_or_create_token(
    configured: Option<&str>,
    path: &Path,
) -> anyhow::Result<(String, bool)> {
    use anyhow::Context;
    if let Some(t) = configured.filter(|t| !t.is_empty()) {
        return Ok((t.to_string(), false));
    }
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok((s.trim().to_string(), false)),
        Ok(_) => anyhow::bail!("admin token file {} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading admin token {}", path.display())),
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating admin token {}", path.display()))?;
    std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    Ok((token, true))
}

/// An admin API error: PROTOCOL.md's `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct AdminError {
    pub code: ErrorCode,
    pub message: String,
    pub status: Option<u16>,
}

impl AdminError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: None,
        }
    }
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

impl From<meshrelay_store::Error> for AdminError {
    fn from(e: meshrelay_store::Error) -> Self {
        let chain = meshrelay_protocol::error::cause_chain(&e);
        tracing::error!(error = %chain, "admin API: storage failed");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status.unwrap_or(self.code.http_status()))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_string(),
                message: self.message,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if self.code == ErrorCode::AuthFailed {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"meshrelay admin\""),
            );
        }
        resp
    }
}

pub type AdminResult<T> = Result<T, AdminError>;

/// Who made a change: the client address and the interface it came through.
#[derive(Debug, Clone)]
pub struct Actor {
    pub from: String,
    /// `api` or `dashboard`.
    pub via: &'static str,
}

pub(crate) use meshrelay_protocol::clock::now_secs as unix_now;

/// A 64-character lowercase hex key or id, as PROTOCOL.md 1 writes them.
pub(crate) fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let (t1, made) = load_or_create_token(None, &path).unwrap();
        assert!(made && t1.len() == 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (t2, made) = load_or_create_token(None, &path).unwrap();
        assert_eq!((t2.as_str(), made), (t1.as_str(), false));
        let (t3, _) = load_or_create_token(Some("configured"), &path).unwrap();
        assert_eq!(t3, "configured");
        std::fs::write(&path, "\n").unwrap();
        assert!(load_or_create_token(None, &path).is_err());
    }
}
