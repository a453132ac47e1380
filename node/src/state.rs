//! Shared state: one struct of cheap handles that every handler and task receives.

use std::sync::Arc;

use meshrelay_protocol::NodeKey;
use meshrelay_store::{Store, Writer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::settings::Settings;

/// What the node remembers of a payload it stored (or found held) lately.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// When this node first stored it (PROTOCOL.md 4.4).
    pub received_at: Option<u64>,
    /// The signature verified for it: a copy carrying these same bytes is
    /// the same verified triple (author, id, signature) and needs no second
    /// check; any other signature gets the full one.
    pub sig: Option<[u8; 64]>,
}

impl Held {
    pub fn of(payload: &meshrelay_protocol::Payload, received_at: Option<u64>) -> Self {
        Self {
            received_at,
            sig: meshrelay_protocol::hexfmt::decode_fixed::<64>(&payload.sig, "sig").ok(),
        }
    }

    /// Whether `payload` carries the signature verified for this id.
    pub fn same_signature(&self, payload: &meshrelay_protocol::Payload) -> bool {
        self.sig.is_some_and(|held| {
            meshrelay_protocol::hexfmt::decode_fixed::<64>(&payload.sig, "sig")
                .is_ok_and(|sig| sig == held)
        })
    }
}

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    /// The only path by which payloads reach the database.
    pub writer: Writer,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Signs the node document; its public half identifies the node.
    pub node_key: Arc<NodeKey>,
    /// Ids stored lately, so repeats skip the writer, with when each was
    /// first stored (for a receipt) and the signature verified for it.
    pub seen: moka::sync::Cache<String, Held>,
    /// Author keys already decoded (a point decompression each), by hex.
    pub keys: moka::sync::Cache<String, meshrelay_protocol::PublicKey>,
    /// Cancelled on SIGTERM/SIGINT: WebSockets close with 1001, loops stop.
    pub shutdown: CancellationToken,
    /// WebSocket tasks, awaited on shutdown so none is cut off mid-write.
    pub ws_tasks: TaskTracker,
    /// Peers, routing, outbound delivery and inbound verification.
    pub federation: Arc<meshrelay_federation::Federation>,
    /// Publish budgets per connection and per client address.
    pub limits: Arc<crate::limits::RateLimits>,
    /// Query and log pages being built at once. Each holds up to
    /// `max_response_bytes` of rows and its encoding: the permits bound
    /// what concurrent large reads hold, whatever the connection count.
    pub page_builds: Arc<tokio::sync::Semaphore>,
    /// Blob storage, bounds and transfer permits (PROTOCOL.md 4.3).
    pub blobs: Arc<crate::blobs::BlobService>,
    /// The listeners' certificates, when they speak TLS.
    pub tls: crate::tls::Certificates,
    /// This process among the node's processes (PROTOCOL.md 8.1).
    pub cluster: Arc<crate::cluster::Cluster>,
}

/// Query and log pages built at once (`AppState::page_builds`).
pub const PAGE_BUILDS: usize = 2;

impl AppState {
    /// Run `build` (a page and its JSON bytes) under a page-build permit;
    /// the answer is the bytes as `application/json`.
    pub async fn build_page<F>(&self, build: F) -> crate::error::ApiResult<axum::response::Response>
    where
        F: std::future::Future<Output = crate::error::ApiResult<Vec<u8>>>,
    {
        use axum::response::IntoResponse;
        let _permit = self
            .page_builds
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let body = build.await?;
        Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response())
    }
}

impl AppState {
    pub fn node_hex(&self) -> String {
        self.node_key.public_hex()
    }
}
