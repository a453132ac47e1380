//! Federation between meshrelay nodes (PROTOCOL.md 5 and 6). The way out:
//! the routing index names the peers a payload is for (`router`), the node's
//! writer queues it for them, and one delivery loop per peer drains its outbox
//! (`delivery`). The way in: a peer's signed request is verified and its
//! signer admitted (`inbound`), its payloads stored through the node's
//! `Ingest`; sync repairs what forwarding missed (`sync`). Joining, announcing
//! and polling keep the peer list (`peers`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use meshrelay_protocol::node_doc::Subscribe;
use meshrelay_protocol::NodeKey;
use meshrelay_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod attempt;
pub mod client;
mod delivery;
/// RFC 9421 signatures (PROTOCOL.md 6), from their own crate, which clients share.
pub use meshrelay_httpsig as httpsig;
pub mod inbound;
pub mod ingest;
pub mod lazy;
pub mod limits;
pub mod metrics;
pub mod peer_client;
mod peers;
pub mod policy;
pub mod rate;
pub mod router;
pub mod sync;

pub use delivery::{plan_batches, BatchPlan};
pub use inbound::Refused;
pub use ingest::{Accepted, Checked, Ingest, Source};
pub use peers::JoinError;

use crate::client::Outbound;
use crate::httpsig::Verifier;
use crate::peer_client::PeerClient;
use crate::router::Router;

/// Most bytes of a peer's error text kept in the outbox or logged (PROTOCOL.md 10).
pub const MAX_ERROR_TEXT: usize = 1024;

/// The federation settings of PROTOCOL.md 8.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where peers reach this node, without a trailing `/`; signatures are
    /// checked against it.
    pub public_url: String,
    pub own_subscribe: Subscribe,
    pub seed_peers: Vec<String>,
    pub require_peer_approval: bool,
    /// Peers on loopback and private addresses may be reached (tests, LANs).
    pub allow_private_peers: bool,
    pub max_hops: u32,
    /// Offer ids instead of pushing payloads over links that bring mostly
    /// duplicates (PROTOCOL.md 5.6, `forward_lazily`); false floods.
    pub forward_lazily: bool,
    /// How old an item must be before it is offered to a lazy peer: the time
    /// an eager path has to bring the payload first, so that the offer is
    /// declined instead of taken up (Plumtree's lazy timer, here on the
    /// sender's side; `offer_delay_ms`).
    pub offer_delay_ms: i64,
    pub retry_min_secs: u64,
    pub retry_max_secs: u64,
    pub max_delivery_age_secs: u64,
    /// Known peers of all statuses; past it, announce answers 403 `blocked`.
    pub max_peers: usize,
    /// Announces per minute from one address (0: unlimited).
    pub announce_rate: u32,
    /// Inbox, sync and fetch requests per second from one peer (0: unlimited).
    pub inbox_rate: u32,
    /// Values over all lists of one filter, in peers' documents and sync requests too.
    pub max_filter_values: usize,
    /// One payload's JSON as received, in inbox items and fetch answers too.
    pub max_payload_bytes: usize,
    /// One fetch answer, at most (PROTOCOL.md 10).
    pub max_response_bytes: usize,
    pub sync: SyncConfig,
    /// CA certificates trusted for `https://` peers beside the built-in
    /// web roots (`peer_ca_file`).
    pub peer_roots: PeerRoots,
    /// Several processes on one PostgreSQL database (PROTOCOL.md 8.1): this
    /// process's instance id and the channel peer changes are told on.
    pub cluster: Option<ClusterConfig>,
}

/// A peer change note naming no one peer: every peer's record may have
/// changed (a poll of all of them).
pub const EVERY_PEER: &str = "*";

/// How this process shares federation with the node's other processes.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This process's instance id (`host:pid`).
    pub instance: String,
    /// NOTIFY channel of peer changes (`cluster::Channels::peers`).
    pub peers_channel: String,
}

/// Extra trust roots for peers.
#[derive(Clone, Default)]
pub struct PeerRoots(pub Vec<reqwest::Certificate>);

impl std::fmt::Debug for PeerRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} extra CA certificates", self.0.len())
    }
}

/// Anti-entropy sync's settings (PROTOCOL.md 5.5).
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// How far back the scheduled sync reconciles.
    pub window_days: u32,
    /// Most payloads one sync session may cover, on either side; a larger
    /// window is refused (413) or split.
    pub max_items: usize,
    /// Most rounds of one session, on either side.
    pub max_rounds: u32,
    /// Longest one session may run, on either side.
    pub max_secs: u64,
}

pub struct Federation {
    config: Config,
    store: Store,
    /// Typed requests to peers over the guarded, signed transport.
    client: PeerClient,
    /// Checks peers' request signatures and remembers their nonces.
    verifier: Verifier,
    /// Nonces of clients' signed requests (blob uploads), apart from peers':
    /// any key may sign those, so a flood of them must not evict a peer's
    /// nonce from the cache and make its request replayable.
    client_verifier: Verifier,
    /// Answers peers' sync rounds.
    sync: sync::Responder,
    metrics: metrics::SyncMetrics,
    /// What forwarding over each link brought: eager or lazy (5.6).
    policy: policy::Links,
    /// Routing table of the active peers' preferences, rebuilt when they change.
    router: RwLock<Arc<Router>>,
    /// Wakes a peer's delivery loop when something was queued for it.
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Several processes: the peers whose delivery lease this process holds.
    leading: Mutex<std::collections::HashSet<String>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Items delivered since start (the admin API's forward rate).
    delivered: std::sync::atomic::AtomicU64,
    /// Ends every backoff at once (`wake_all`).
    kick: Notify,
    /// Ends one peer's backoff (it announced itself again: it is back).
    kicks: Mutex<HashMap<String, Arc<Notify>>>,
    /// The unreachable-`public_url` warning was given.
    warned_unreachable: std::sync::atomic::AtomicBool,
    /// Announces per address (`announce_rate` a minute).
    announces: rate::KeyedRate<std::net::IpAddr>,
    /// Inbox, sync and fetch requests per peer (`inbox_rate` a second).
    inbox_rates: rate::KeyedRate<String>,
}

impl Federation {
    pub fn new(
        config: Config,
        store: Store,
        key: Arc<NodeKey>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let outbound = Outbound::with_roots(key, config.allow_private_peers, &config.peer_roots.0);
        let announces = rate::KeyedRate::per_minute(config.announce_rate);
        let inbox_rates = rate::KeyedRate::per_second(config.inbox_rate, config.inbox_rate);
        Arc::new(Self {
            client: PeerClient::new(outbound),
            sync: sync::Responder::new(
                config.sync.max_items,
                config.sync.max_rounds,
                config.sync.max_secs,
            ),
            config,
            store,
            verifier: Verifier::default(),
            client_verifier: Verifier::default(),
            metrics: metrics::SyncMetrics::default(),
            policy: policy::Links::default(),
            router: RwLock::new(Arc::new(Router::default())),
            wakers: Mutex::new(HashMap::new()),
            leading: Mutex::new(std::collections::HashSet::new()),
            tasks: TaskTracker::new(),
            shutdown,
            delivered: std::sync::atomic::AtomicU64::new(0),
            kick: Notify::new(),
            kicks: Mutex::new(HashMap::new()),
            warned_unreachable: std::sync::atomic::AtomicBool::new(false),
            announces,
            inbox_rates,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Requests to peers, for callers outside federation (the CLI's checks).
    pub fn client(&self) -> &PeerClient {
        &self.client
    }

    /// Federation's Prometheus series, for the node to register.
    pub fn metrics(&self) -> &metrics::SyncMetrics {
        &self.metrics
    }

    /// Items delivered to peers since this process started.
    pub fn delivered_total(&self) -> u64 {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A peer was added, changed or removed by another process of this node:
    /// rebuild the routes, and start (or end) its delivery loop here too.
    pub async fn peer_changed_elsewhere(
        self: &Arc<Self>,
        node: &str,
    ) -> Result<(), meshrelay_store::Error> {
        self.rebuild_router().await?;
        if node == EVERY_PEER {
            for peer in self.store.peers().await? {
                self.ensure_delivery_loop(&peer.node);
            }
            return Ok(());
        }
        if self.store.peer(node).await?.is_some() {
            self.ensure_delivery_loop(node);
        }
        self.wake(&[(node.to_string(), 0)]);
        self.kick_peer(node);
        Ok(())
    }

    /// Tell the node's other processes that `node`'s record changed.
    pub(crate) async fn tell_peer_changed(&self, node: &str) {
        let Some(c) = &self.config.cluster else {
            return;
        };
        let note = serde_json::to_string(&meshrelay_store::cluster::PeerNote {
            instance: c.instance.clone(),
            node: node.to_string(),
        })
        .expect("serializes");
        if let Err(e) = self.store.notify(&c.peers_channel, &note).await {
            tracing::warn!(error = ?e, peer = %node, "telling the other processes of a peer change failed");
        }
    }

    /// Load peers, start their delivery loops, and join the seed peers.
    pub async fn start(self: &Arc<Self>) -> Result<(), meshrelay_store::Error> {
        self.rebuild_router().await?;
        for peer in self.store.peers().await? {
            if !self.config.forward_lazily {
                // Flooding: a link made lazy by an earlier run shows eager again.
                self.store
                    .set_forwarding(&peer.node, meshrelay_store::Forwarding::Eager)
                    .await?;
            }
            self.ensure_delivery_loop(&peer.node);
        }
        // The peers known before this start hear that it is back.
        let known: Vec<String> = self
            .store
            .peers()
            .await?
            .into_iter()
            .filter(|p| p.status.receives_forwards())
            .map(|p| p.url)
            .collect();
        let this = self.clone();
        self.tasks.spawn(async move {
            this.join_seeds().await;
            this.announce_return(known).await;
        });
        Ok(())
    }

    /// Stop the delivery loops (each finishes its request in flight).
    pub async fn stop(&self) {
        self.tasks.close();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), self.tasks.wait()).await;
        // The delivery loops have stopped: another process may take their
        // peers over at once instead of waiting for the leases to expire.
        if let Some(c) = &self.config.cluster {
            if let Err(e) = self.store.release_leases_of(&c.instance).await {
                tracing::warn!(error = %e, "giving up the delivery leases failed");
            }
        }
    }
}
