//! Shared state: one struct of cheap handles that every handler and task receives.

use std::sync::Arc;

use meshrelay_protocol::NodeKey;
use meshrelay_store::{Store, Writer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::settings::Settings;

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
    /// Ids known to be stored, so repeats skip the writer (they are still verified first).
    /// Ids stored lately, with when they were first stored (for a receipt).
    pub seen: moka::sync::Cache<String, Option<u64>>,
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
}

impl AppState {
    pub fn node_hex(&self) -> String {
        self.node_key.public_hex()
    }
}
