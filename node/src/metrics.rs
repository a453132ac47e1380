//! Prometheus metrics (`GET /metrics`): what an operator graphs and alerts on.

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// `ws`, `http` (local clients) or `peer`.
    pub via: &'static str,
    /// `stored`, `duplicate`, or the refusal's error code.
    pub outcome: &'static str,
}

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

pub struct Metrics {
    registry: Registry,
    pub payloads_ingested: Family<IngestLabels, Counter>,
    pub ws_connections: Gauge,
    pub ws_subscriptions: Gauge,
    pub ws_slow_consumers: Counter,
    pub live_deliveries: Counter,
    pub signals_relayed: Counter,
    /// Seconds from receiving a payload to its commit being acknowledged.
    pub ingest_seconds: Histogram,
    /// Negentropy round trips per peer.
    pub sync_rounds: Family<SyncLabels, Counter>,
    /// Request and answer bytes of sync rounds per peer.
    pub sync_bytes: Family<SyncLabels, Counter>,
    /// Payloads moved by sync per peer.
    pub sync_items: Family<SyncItemLabels, Counter>,
}

impl Metrics {
    /// Count one sync round answered for `peer`.
    pub fn sync_served(&self, peer: &str, request_bytes: usize, answer_bytes: usize) {
        let labels = SyncLabels {
            peer: peer.to_string(),
            role: "served",
        };
        self.sync_rounds.get_or_create(&labels).inc();
        self.sync_bytes
            .get_or_create(&labels)
            .inc_by((request_bytes + answer_bytes) as u64);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meshrelay");
        let m = Metrics {
            registry: Registry::default(),
            payloads_ingested: Family::default(),
            ws_connections: Gauge::default(),
            ws_subscriptions: Gauge::default(),
            ws_slow_consumers: Counter::default(),
            live_deliveries: Counter::default(),
            signals_relayed: Counter::default(),
            ingest_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            sync_rounds: Family::default(),
            sync_bytes: Family::default(),
            sync_items: Family::default(),
        };
        registry.register(
            "sync_rounds",
            "Negentropy round trips of anti-entropy sync, per peer and role",
            m.sync_rounds.clone(),
        );
        registry.register(
            "sync_bytes",
            "Bytes of sync requests and answers (fetch and push excluded), per peer and role",
            m.sync_bytes.clone(),
        );
        registry.register(
            "sync_items",
            "Payloads moved by sync, per peer and direction",
            m.sync_items.clone(),
        );
        registry.register(
            "payloads_ingested",
            "Payloads offered to this node, by path and outcome",
            m.payloads_ingested.clone(),
        );
        registry.register(
            "ws_connections",
            "Open WebSocket connections",
            m.ws_connections.clone(),
        );
        registry.register(
            "ws_subscriptions",
            "Live subscriptions over all connections",
            m.ws_subscriptions.clone(),
        );
        registry.register(
            "ws_slow_consumer_disconnects",
            "Connections closed because their send queue was full",
            m.ws_slow_consumers.clone(),
        );
        registry.register(
            "live_deliveries",
            "Payload frames queued to live subscribers",
            m.live_deliveries.clone(),
        );
        registry.register(
            "signals_relayed",
            "Signal frames queued to other connections",
            m.signals_relayed.clone(),
        );
        registry.register(
            "ingest_duration_seconds",
            "Time from receiving a payload to acknowledging it (check + durable commit)",
            m.ingest_seconds.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
