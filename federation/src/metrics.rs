//! Federation's Prometheus series; the node registers them beside its own
//! (`SyncMetrics::register`), so `/metrics` shows one registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// The peer's node key.
    pub peer: String,
    /// `initiated` (this node started the session) or `served`.
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncItemLabels {
    pub peer: String,
    /// `fetched` (from the peer) or `pushed` (to it).
    pub direction: &'static str,
}

#[derive(Default)]
pub struct SyncMetrics {
    /// Negentropy round trips per peer.
    pub sync_rounds: Family<SyncLabels, Counter>,
    /// Request and answer bytes of sync rounds per peer.
    pub sync_bytes: Family<SyncLabels, Counter>,
    /// Payloads moved by sync per peer.
    pub sync_items: Family<SyncItemLabels, Counter>,
}

impl SyncMetrics {
    /// Count one sync round answered for `peer`.
    pub fn served(&self, peer: &str, request_bytes: usize, answer_bytes: usize) {
        let labels = SyncLabels {
            peer: peer.to_string(),
            role: "served",
        };
        self.sync_rounds.get_or_create(&labels).inc();
        self.sync_bytes
            .get_or_create(&labels)
            .inc_by((request_bytes + answer_bytes) as u64);
    }

    /// Add these series to the node's registry (prefixed `meshrelay_`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sync_rounds",
            "Negentropy round trips of anti-entropy sync, per peer and role",
            self.sync_rounds.clone(),
        );
        registry.register(
            "sync_bytes",
            "Bytes of sync requests and answers (fetch and push excluded), per peer and role",
            self.sync_bytes.clone(),
        );
        registry.register(
            "sync_items",
            "Payloads moved by sync, per peer and direction",
            self.sync_items.clone(),
        );
    }
}
