//! Federation's Prometheus series; the node registers them beside its own
//! (`SyncMetrics::register`), so `/metrics` shows one registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// Forwarded items (PROTOCOL.md 5.4), sync pushes excluded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    /// `sent` (as the peer's answers counted them) or `received`.
    pub direction: &'static str,
    /// `new` (stored) or `duplicate` (already held).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `inbox` or `ihave`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Default)]
pub struct SyncMetrics {
    /// Inbox items forwarded, by direction and what they were to the receiver.
    pub forwarded: Family<ForwardLabels, Counter>,
    /// Ids offered with `ihave` (5.6): `sent` by this node, `received` from peers.
    pub offered: Family<DirectionLabels, Counter>,
    /// Offered ids wanted: `received` (peers wanted this node's offers) or
    /// `sent` (this node wanted a peer's).
    pub wanted: Family<DirectionLabels, Counter>,
    /// HTTP bytes (request and answer, headers included) of the inbox and
    /// ihave requests this process sent.
    pub forwarding_bytes: Family<KindLabels, Counter>,
    /// 1 while this node forwards to the peer lazily (offers), else 0.
    pub peer_lazy: Family<PeerLabels, Gauge>,
    /// Inbox deliveries a peer answered 429 alone: deferred by its
    /// `Retry-After`, not counted as failures.
    pub throttled: Counter,
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

    /// Count forwarded items over one link.
    pub fn forwarded(&self, direction: &'static str, new: u64, duplicate: u64) {
        for (outcome, n) in [("new", new), ("duplicate", duplicate)] {
            if n > 0 {
                self.forwarded
                    .get_or_create(&ForwardLabels { direction, outcome })
                    .inc_by(n);
            }
        }
    }

    /// Count ids offered and wanted in one `ihave` exchange.
    pub fn offer(&self, direction: &'static str, offered: usize, wanted: usize) {
        self.offered
            .get_or_create(&DirectionLabels { direction })
            .inc_by(offered as u64);
        // The wants go the other way.
        let back = if direction == "sent" {
            "received"
        } else {
            "sent"
        };
        self.wanted
            .get_or_create(&DirectionLabels { direction: back })
            .inc_by(wanted as u64);
    }

    pub fn bytes(&self, kind: &'static str, n: usize) {
        self.forwarding_bytes
            .get_or_create(&KindLabels { kind })
            .inc_by(n as u64);
    }

    pub fn set_lazy(&self, peer: &str, lazy: bool) {
        self.peer_lazy
            .get_or_create(&PeerLabels {
                peer: peer.to_string(),
            })
            .set(i64::from(lazy));
    }

    /// A forgotten peer's series goes with it.
    pub fn forget_peer(&self, peer: &str) {
        self.peer_lazy.remove(&PeerLabels {
            peer: peer.to_string(),
        });
    }

    /// Add these series to the node's registry (prefixed `meshrelay_`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "forwarding_throttled",
            "Inbox deliveries that peers answered only with 429: deferred by their Retry-After, not counted as failures",
            self.throttled.clone(),
        );
        registry.register(
            "forwarded_items",
            "Inbox items forwarded (sync pushes excluded), by direction and whether the receiver already held them",
            self.forwarded.clone(),
        );
        registry.register(
            "offered_ids",
            "Payload ids offered with ihave (lazy forwarding), sent by this node or received from peers",
            self.offered.clone(),
        );
        registry.register(
            "wanted_ids",
            "Offered ids wanted: received (peers took up this node's offers) or sent (this node took up a peer's)",
            self.wanted.clone(),
        );
        registry.register(
            "forwarding_bytes",
            "HTTP bytes, headers included, of the inbox and ihave requests this process sent and their answers",
            self.forwarding_bytes.clone(),
        );
        registry.register(
            "peer_lazy",
            "1 while this node forwards to the peer by offers (lazy), 0 while it pushes whole payloads (eager)",
            self.peer_lazy.clone(),
        );
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
