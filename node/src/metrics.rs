//! Prometheus metrics (`GET /metrics`): what an operator graphs and alerts on.

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `public` or `admin`.
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// `ws`, `http` (local clients) or `peer`.
    pub via: &'static str,
    /// `stored`, `duplicate`, or the refusal's error code.
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub payloads_ingested: Family<IngestLabels, Counter>,
    pub ws_connections: Gauge,
    pub ws_subscriptions: Gauge,
    pub ws_slow_consumers: Counter,
    pub live_deliveries: Counter,
    pub signals_relayed: Counter,
    /// Connections closed at accept: past max_connections or max_connections_per_ip.
    pub connections_refused: Counter,
    /// Seconds from receiving a payload to its commit being acknowledged.
    pub ingest_seconds: Histogram,
    /// Blobs uploaded (new ones) and served.
    pub blob_uploads: Counter,
    pub blob_downloads: Counter,
    /// Blobs fetched from peers, and failed fetch attempts.
    pub blob_mirrored: Counter,
    pub blob_mirror_failures: Counter,
    /// Blobs held, their bytes, and fetches queued; set from the database
    /// at each scrape.
    pub blobs_stored: Gauge,
    pub blob_bytes: Gauge,
    pub blob_fetches_pending: Gauge,
    /// Each TLS listener's certificate notAfter (Unix seconds), set at each scrape.
    pub tls_cert_expiry: Family<ListenerLabels, Gauge>,
}

impl Metrics {
    /// The node's series, and federation's registered beside them.
    pub fn new(sync: &meshrelay_federation::metrics::SyncMetrics) -> Self {
        let mut registry = Registry::with_prefix("meshrelay");
        let m = Metrics {
            registry: Registry::default(),
            payloads_ingested: Family::default(),
            ws_connections: Gauge::default(),
            ws_subscriptions: Gauge::default(),
            ws_slow_consumers: Counter::default(),
            live_deliveries: Counter::default(),
            signals_relayed: Counter::default(),
            connections_refused: Counter::default(),
            ingest_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            blob_uploads: Counter::default(),
            blob_downloads: Counter::default(),
            blob_mirrored: Counter::default(),
            blob_mirror_failures: Counter::default(),
            blobs_stored: Gauge::default(),
            blob_bytes: Gauge::default(),
            blob_fetches_pending: Gauge::default(),
            tls_cert_expiry: Family::default(),
        };
        sync.register(&mut registry);
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
            "connections_refused",
            "Client connections closed at accept, past max_connections or max_connections_per_ip",
            m.connections_refused.clone(),
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
        registry.register(
            "blob_uploads",
            "Blobs uploaded by clients (new ones)",
            m.blob_uploads.clone(),
        );
        registry.register(
            "blob_downloads",
            "Blob GETs answered with bytes",
            m.blob_downloads.clone(),
        );
        registry.register(
            "blobs_mirrored",
            "Blobs fetched from peers",
            m.blob_mirrored.clone(),
        );
        registry.register(
            "blob_mirror_failures",
            "Failed attempts to fetch a blob from a peer",
            m.blob_mirror_failures.clone(),
        );
        registry.register("blobs_stored", "Blobs held", m.blobs_stored.clone());
        registry.register(
            "blob_stored_bytes",
            "Bytes of the blobs held",
            m.blob_bytes.clone(),
        );
        registry.register(
            "blob_fetches_pending",
            "Blobs waiting to be fetched from peers",
            m.blob_fetches_pending.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When each TLS listener's certificate expires (notAfter, Unix seconds)",
            m.tls_cert_expiry.clone(),
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
