//! The federation service: the peer registry and routing table, joining and
//! announcing, scheduled polling of preferences, and one delivery loop per
//! peer draining the durable outbox with backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use meshrelay_protocol::node_doc::{SignedNodeDoc, Subscribe};
use meshrelay_protocol::{NodeKey, Payload};
use meshrelay_store::{Peer, Store};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::{FetchError, Outbound};
use crate::httpsig::Verifier;
use crate::router::Router;

/// Most items in one inbox request (PROTOCOL.md 5.4).
pub const MAX_ITEMS: usize = 100;
/// Most bytes in one inbox request.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Consecutive failed deliveries after which a peer counts as unreachable.
const UNREACHABLE_AFTER: u32 = 5;
/// Inbox requests in flight to one peer at a time.
const PIPELINE: usize = 4;
/// Deliveries in flight over all peers.
const MAX_CONCURRENT_DELIVERIES: usize = 16;

/// The federation settings of PROTOCOL.md 8.
#[derive(Debug, Clone)]
pub struct Config {
    pub public_url: String,
    pub own_subscribe: Subscribe,
    pub seed_peers: Vec<String>,
    pub require_peer_approval: bool,
    pub max_hops: u32,
    pub retry_min_secs: u64,
    pub retry_max_secs: u64,
    pub max_delivery_age_secs: u64,
    /// Most payloads one sync session may cover (PROTOCOL.md 5.5).
    pub sync_max_items: usize,
}

pub struct Federation {
    pub config: Config,
    pub store: Store,
    pub outbound: Outbound,
    pub verifier: Verifier,
    /// Answers peers' sync rounds.
    pub sync: crate::sync::Responder,
    pub key: Arc<NodeKey>,
    /// Routing table of the active peers' preferences, rebuilt when they change.
    router: RwLock<Arc<Router>>,
    /// Wakes a peer's delivery loop when something was queued for it.
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    deliveries: Arc<Semaphore>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Items delivered since start (the admin API's forward rate).
    delivered: std::sync::atomic::AtomicU64,
    /// Ends every backoff at once (`wake_all`).
    kick: Notify,
}

/// `{"items":[{"payload":...,"hops":h},...]}` from stored JSON, without re-encoding it.
fn inbox_body(items: &[meshrelay_store::OutboxItem]) -> String {
    let mut body = String::from(r#"{"items":["#);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r#"{"payload":"#);
        body.push_str(item.json.as_deref().unwrap_or("null"));
        body.push_str(&format!(r#","hops":{}}}"#, item.hops));
    }
    body.push_str("]}");
    body
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a delivery loop does after one attempt.
enum Next {
    /// A batch went out; more may be due at once.
    More,
    /// Nothing due: wait for new items or the next due time.
    Idle,
    /// The peer failed: wait this long whatever gets queued meanwhile.
    Backoff(Duration),
    /// The peer was forgotten: the loop ends.
    Gone,
}

/// Why a join or an announce was refused; maps to PROTOCOL.md 5.2's answers.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the node document could not be fetched or checked: {0}")]
    Fetch(#[from] FetchError),
    #[error("the document's node {doc} is not the signer {signer}")]
    KeyMismatch { doc: String, signer: String },
    #[error("{url} is known under another key")]
    KeyChanged { url: String },
    #[error("this peer is blocked")]
    Blocked,
    #[error("storage failed")]
    Store(#[from] meshrelay_store::Error),
}

impl JoinError {
    /// The refusal as PROTOCOL.md 5.2 answers it: its code and HTTP status
    /// (the message is the error's text). None for a storage failure, which
    /// is this node's own fault and answered as `internal`.
    pub fn answer(&self) -> Option<(meshrelay_protocol::ErrorCode, u16)> {
        use meshrelay_protocol::ErrorCode;
        let code = match self {
            Self::Store(_) => return None,
            Self::Blocked => ErrorCode::Blocked,
            Self::KeyChanged { .. } => ErrorCode::KeyChanged,
            // A document that cannot be fetched or does not match its signer.
            Self::Fetch(_) | Self::KeyMismatch { .. } => return Some((ErrorCode::BadRequest, 422)),
        };
        Some((code, code.http_status()))
    }
}

impl Federation {
    pub fn new(
        config: Config,
        store: Store,
        key: Arc<NodeKey>,
        allow_private: bool,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let sync_max_items = config.sync_max_items;
        Arc::new(Self {
            outbound: Outbound::new(key.clone(), allow_private),
            config,
            store,
            verifier: Verifier::default(),
            sync: crate::sync::Responder::new(sync_max_items),
            key,
            router: RwLock::new(Arc::new(Router::default())),
            wakers: Mutex::new(HashMap::new()),
            deliveries: Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES)),
            tasks: TaskTracker::new(),
            shutdown,
            delivered: std::sync::atomic::AtomicU64::new(0),
            kick: Notify::new(),
        })
    }

    /// Items delivered to peers since this process started.
    pub fn delivered_total(&self) -> u64 {
        self.delivered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// An operator's decision on a peer (`active` to approve or unblock,
    /// `blocked`): None when the peer is unknown. An approved or unblocked
    /// peer's queue is delivered at once; a blocked one gets nothing more.
    pub async fn set_peer_status(
        self: &Arc<Self>,
        node: &str,
        status: &str,
    ) -> Result<Option<Peer>, meshrelay_store::Error> {
        if !self.store.set_peer_status(node, status).await? {
            return Ok(None);
        }
        tracing::info!(peer = %node, %status, "peer status set by an operator");
        self.rebuild_router().await?;
        self.ensure_delivery_loop(node);
        self.wake(&[(node.to_string(), 0)]);
        self.store.peer(node).await
    }

    /// Forget a peer and its queue; its delivery loop ends. False when unknown.
    pub async fn forget_peer(&self, node: &str) -> Result<bool, meshrelay_store::Error> {
        let known = self.store.delete_peer(node).await?;
        self.rebuild_router().await?;
        let waker = self.wakers.lock().expect("lock").get(node).cloned();
        if let Some(n) = waker {
            n.notify_one();
        }
        if known {
            tracing::info!(peer = %node, "peer forgotten");
        }
        Ok(known)
    }

    /// Poll one peer now and rebuild the routes; None when the peer is unknown.
    pub async fn poll_now(
        &self,
        node: &str,
    ) -> Result<Option<(Peer, Result<bool, FetchError>)>, meshrelay_store::Error> {
        let Some(peer) = self.store.peer(node).await? else {
            return Ok(None);
        };
        let outcome = self.poll_peer(&peer).await;
        if outcome.is_err() {
            self.store.record_poll_failure(node, unix_now()).await?;
        }
        self.rebuild_router().await?;
        let peer = self.store.peer(node).await?.unwrap_or(peer);
        Ok(Some((peer, outcome)))
    }

    /// Wake every delivery loop, those backing off from a failing peer too
    /// (an operator put dead letters back in the queue).
    pub fn wake_all(&self) {
        self.kick.notify_waiters();
        for n in self.wakers.lock().expect("lock").values() {
            n.notify_one();
        }
    }

    /// Load peers, start their delivery loops, and join the seed peers.
    pub async fn start(self: &Arc<Self>) -> Result<(), meshrelay_store::Error> {
        self.rebuild_router().await?;
        for peer in self.store.peers().await? {
            self.ensure_delivery_loop(&peer.node);
        }
        let this = self.clone();
        self.tasks.spawn(async move { this.join_seeds().await });
        Ok(())
    }

    /// Stop the delivery loops (each finishes its request in flight).
    pub async fn stop(&self) {
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.tasks.wait()).await;
    }

    /// Rebuild the routing table from the peers that are active.
    pub async fn rebuild_router(&self) -> Result<(), meshrelay_store::Error> {
        let prefs = self
            .store
            .peers()
            .await?
            .into_iter()
            .filter(|p| p.status == "active" || p.status == "unreachable")
            .filter_map(|p| {
                let pref = serde_json::from_str::<Subscribe>(p.subscribe.as_deref()?).ok()?;
                Some((p.node, pref))
            });
        *self.router.write().expect("lock") = Arc::new(Router::new(prefs));
        Ok(())
    }

    /// Where to forward a payload: (peer, hops) for each peer that wants it.
    /// `from` is the peer it came from and `hops` the hops it arrived with
    /// (None for a local client). Nothing goes on at `max_hops`.
    pub fn forward_targets(&self, p: &Payload, from: Option<(&str, u32)>) -> Vec<(String, i64)> {
        let hops = match from {
            None => 1,
            Some((_, h)) if h >= self.config.max_hops => return Vec::new(),
            Some((_, h)) => h + 1,
        };
        let router = self.router.read().expect("lock").clone();
        router
            .targets(p, from.map(|(peer, _)| peer))
            .into_iter()
            .map(|peer| (peer, i64::from(hops)))
            .collect()
    }

    /// Tell the delivery loops of these peers that items were queued.
    pub fn wake(&self, peers: &[(String, i64)]) {
        let wakers = self.wakers.lock().expect("lock");
        for (peer, _) in peers {
            if let Some(n) = wakers.get(peer) {
                n.notify_one();
            }
        }
    }

    /// Join a peer by URL: fetch and check its document, pin its key, announce
    /// ourselves to it. The operator chose it, so it is active at once.
    pub async fn join(self: &Arc<Self>, url: &str) -> Result<Peer, JoinError> {
        let url = url.trim_end_matches('/');
        let doc = self.outbound.fetch_node_doc(url, unix_now() as u64).await?;
        let peer = self.record_peer(url, &doc, "active").await?;
        self.announce_to(url).await;
        Ok(peer)
    }

    /// Handle `POST /v1/federation/announce` from `signer` (already verified).
    pub async fn accept_announce(
        self: &Arc<Self>,
        signer: &str,
        url: &str,
    ) -> Result<Peer, JoinError> {
        let url = url.trim_end_matches('/');
        if let Some(p) = self.store.peer(signer).await? {
            if p.status == "blocked" {
                return Err(JoinError::Blocked);
            }
        }
        let doc = self.outbound.fetch_node_doc(url, unix_now() as u64).await?;
        if doc.doc.node != signer {
            return Err(JoinError::KeyMismatch {
                doc: doc.doc.node,
                signer: signer.to_string(),
            });
        }
        let status = if self.config.require_peer_approval {
            "pending"
        } else {
            "active"
        };
        self.record_peer(url, &doc, status).await
    }

    /// Pin a peer on first contact; a URL known under another key is refused.
    async fn record_peer(
        self: &Arc<Self>,
        url: &str,
        doc: &SignedNodeDoc,
        status: &str,
    ) -> Result<Peer, JoinError> {
        if let Some(known) = self.store.peer_by_url(url).await? {
            if known.node != doc.doc.node {
                return Err(JoinError::KeyChanged {
                    url: url.to_string(),
                });
            }
            return Ok(known);
        }
        if let Some(known) = self.store.peer(&doc.doc.node).await? {
            return Ok(known);
        }
        let subscribe = serde_json::to_string(&doc.doc.subscribe).expect("serializes");
        self.store
            .insert_peer(
                &doc.doc.node,
                url,
                status,
                &subscribe,
                &doc.doc.inbox,
                unix_now(),
            )
            .await?;
        tracing::info!(peer = %doc.doc.node, %url, %status, "peer recorded");
        self.rebuild_router().await?;
        self.ensure_delivery_loop(&doc.doc.node);
        Ok(self
            .store
            .peer(&doc.doc.node)
            .await?
            .expect("just inserted"))
    }

    async fn announce_to(&self, url: &str) {
        let body = serde_json::json!({"url": self.config.public_url})
            .to_string()
            .into_bytes();
        match self
            .outbound
            .post_signed(&format!("{url}/v1/federation/announce"), body, unix_now())
            .await
        {
            Ok((202, _)) => tracing::info!(%url, "announced to peer"),
            Ok((status, answer)) => {
                tracing::warn!(%url, status, answer = %String::from_utf8_lossy(&answer), "announce refused")
            }
            Err(e) => tracing::warn!(%url, error = %e, "announce failed"),
        }
    }

    /// Join each seed not known yet; retried by every poll until it works.
    pub async fn join_seeds(self: &Arc<Self>) {
        for seed in &self.config.seed_peers {
            let url = seed.trim_end_matches('/');
            if matches!(self.store.peer_by_url(url).await, Ok(Some(_))) {
                continue;
            }
            if let Err(e) = self.join(url).await {
                tracing::warn!(%url, error = %e, "joining seed peer failed; retried at the next poll");
            }
        }
    }

    /// The `poll` job: refresh every non-blocked peer's preference.
    pub async fn poll_all(self: &Arc<Self>) -> anyhow::Result<String> {
        self.join_seeds().await;
        let peers = self.store.peers().await?;
        let (mut ok, mut failed, mut changed) = (0, 0, 0);
        for peer in peers.iter().filter(|p| p.status != "blocked") {
            match self.poll_peer(peer).await {
                Ok(true) => ok += 1,
                Ok(false) => changed += 1,
                Err(e) => {
                    failed += 1;
                    tracing::warn!(peer = %peer.node, url = %peer.url, error = %e, "poll failed");
                    self.store
                        .record_poll_failure(&peer.node, unix_now())
                        .await?;
                }
            }
        }
        self.rebuild_router().await?;
        Ok(format!(
            "polled {} peers: {ok} ok, {failed} failed, {changed} with a changed key",
            ok + failed + changed
        ))
    }

    /// Poll one peer. Ok(false) when its document names another key: the peer is
    /// flagged `key_changed` and gets nothing more until an operator decides.
    pub async fn poll_peer(&self, peer: &Peer) -> Result<bool, FetchError> {
        let doc = self
            .outbound
            .fetch_node_doc(&peer.url, unix_now() as u64)
            .await?;
        if doc.doc.node != peer.node {
            tracing::error!(peer = %peer.node, url = %peer.url, new_key = %doc.doc.node, "peer's key changed; refusing it");
            let _ = self.store.set_peer_status(&peer.node, "key_changed").await;
            return Ok(false);
        }
        let subscribe = serde_json::to_string(&doc.doc.subscribe).expect("serializes");
        let _ = self
            .store
            .record_poll_ok(&peer.node, &subscribe, &doc.doc.inbox, unix_now())
            .await;
        Ok(true)
    }

    fn ensure_delivery_loop(self: &Arc<Self>, peer: &str) {
        let notify = {
            let mut wakers = self.wakers.lock().expect("lock");
            if wakers.contains_key(peer) {
                return;
            }
            let n = Arc::new(Notify::new());
            wakers.insert(peer.to_string(), n.clone());
            n
        };
        let this = self.clone();
        let peer = peer.to_string();
        self.tasks
            .spawn(async move { this.delivery_loop(peer, notify).await });
    }

    /// Drain one peer's outbox: batches of at most 100 items and 1 MiB, retried
    /// with exponential backoff and jitter, given up after `max_delivery_age_secs`.
    async fn delivery_loop(self: Arc<Self>, peer: String, notify: Arc<Notify>) {
        let mut failures: u32 = 0;
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let wait = match self.deliver_once(&peer, &mut failures).await {
                Ok(Next::More) => continue,
                Ok(Next::Gone) => {
                    let mut wakers = self.wakers.lock().expect("lock");
                    if wakers.get(&peer).is_some_and(|n| Arc::ptr_eq(n, &notify)) {
                        wakers.remove(&peer);
                    }
                    return;
                }
                Ok(Next::Idle) => self.idle_wait(&peer).await,
                Ok(Next::Backoff(delay)) => {
                    // New items must not cut a backoff short: sleep it out,
                    // unless an operator retries dead letters.
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = self.kick.notified() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "delivery loop error");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// How long to sleep when nothing is due: until the next item falls due.
    async fn idle_wait(&self, peer: &str) -> Duration {
        match self.store.next_due(peer).await {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).clamp(10, 60_000) as u64),
            _ => Duration::from_secs(60),
        }
    }

    /// One delivery attempt.
    async fn deliver_once(
        &self,
        peer: &str,
        failures: &mut u32,
    ) -> Result<Next, meshrelay_store::Error> {
        let Some(info) = self.store.peer(peer).await? else {
            return Ok(Next::Gone);
        };
        if !matches!(info.status.as_str(), "active" | "unreachable") {
            return Ok(Next::Idle);
        }
        let Some(inbox) = info.inbox.clone().filter(|i| !i.is_empty()) else {
            return Ok(Next::Idle);
        };
        let now = now_ms();
        let due = self
            .store
            .due_items(peer, now, (MAX_ITEMS * PIPELINE) as i64)
            .await?;
        if due.is_empty() {
            return Ok(Next::Idle);
        }
        // Hidden since queued: never forwarded. Too big for any request: dead at once.
        // The rest goes out as up to PIPELINE requests of at most 100 items and 1 MiB.
        let (mut batches, mut drop_ids, mut too_big) = (vec![Vec::new()], Vec::new(), Vec::new());
        let mut size = 16;
        for item in due {
            match &item.json {
                None => drop_ids.push(item.item_id),
                Some(json) if json.len() + 32 > MAX_BODY_BYTES => too_big.push(item.item_id),
                Some(json) => {
                    let last = batches.last_mut().expect("never empty");
                    if last.len() == MAX_ITEMS || size + json.len() + 32 > MAX_BODY_BYTES {
                        if batches.len() == PIPELINE {
                            break;
                        }
                        batches.push(Vec::new());
                        size = 16;
                    }
                    size += json.len() + 32;
                    batches.last_mut().expect("never empty").push(item);
                }
            }
        }
        self.store.delete_items(&drop_ids).await?;
        self.store
            .defer_items(
                &too_big,
                now,
                "payload larger than an inbox request may be",
                true,
            )
            .await?;
        batches.retain(|b| !b.is_empty());
        if batches.is_empty() {
            return Ok(if drop_ids.is_empty() && too_big.is_empty() {
                Next::Idle
            } else {
                Next::More
            });
        }
        let results = futures_util::future::join_all(batches.iter().map(|batch| {
            let body = inbox_body(batch);
            let inbox = inbox.clone();
            async move {
                let _permit = self.deliveries.acquire().await;
                self.outbound
                    .post_signed(&inbox, body.into_bytes(), unix_now())
                    .await
            }
        }))
        .await;
        let mut delivered = Vec::new();
        let mut failed = Vec::new();
        let mut why = String::new();
        for (batch, result) in batches.iter().zip(results) {
            match result {
                Ok((202, _)) => delivered.extend(batch.iter().map(|i| i.item_id)),
                other => {
                    why = match other {
                        Ok((status, answer)) => {
                            format!("HTTP {status}: {}", String::from_utf8_lossy(&answer))
                        }
                        Err(e) => e.to_string(),
                    };
                    failed.extend(batch.iter());
                }
            }
        }
        self.store.delete_items(&delivered).await?;
        self.delivered
            .fetch_add(delivered.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if failed.is_empty() {
            // Health is written when it changes (or every 10 s), not per batch:
            // on SQLite each write waits for the payload writer's lock.
            if info.delivery_failures > 0 || info.last_delivery.is_none_or(|t| unix_now() - t >= 10)
            {
                self.store.record_delivery(peer, true, unix_now()).await?;
            }
            if info.status == "unreachable" {
                self.store.set_peer_status(peer, "active").await?;
                tracing::info!(%peer, "peer reachable again");
            }
            *failures = 0;
            return Ok(Next::More);
        }
        *failures += 1;
        let delay = self.backoff(*failures);
        let max_age_ms = self.config.max_delivery_age_secs as i64 * 1000;
        let (dead, retry): (Vec<&meshrelay_store::OutboxItem>, Vec<_>) = failed
            .iter()
            .copied()
            .partition(|i| now - i.enqueued_at >= max_age_ms);
        let dead: Vec<i64> = dead.iter().map(|i| i.item_id).collect();
        let retry: Vec<i64> = retry.iter().map(|i| i.item_id).collect();
        self.store.defer_items(&dead, now, &why, true).await?;
        self.store
            .defer_items(&retry, now + delay.as_millis() as i64, &why, false)
            .await?;
        self.store.record_delivery(peer, false, unix_now()).await?;
        if *failures >= UNREACHABLE_AFTER && info.status == "active" {
            self.store.set_peer_status(peer, "unreachable").await?;
            tracing::warn!(%peer, failures = *failures, "peer unreachable; still probing");
        }
        tracing::info!(%peer, error = %why, retry_in = ?delay, "delivery failed");
        Ok(Next::Backoff(delay))
    }

    /// `retry_min * 2^(failures-1)`, at most `retry_max`, with jitter in [50%, 100%].
    fn backoff(&self, failures: u32) -> Duration {
        let min = self.config.retry_min_secs.max(1) as f64;
        let max = self.config.retry_max_secs.max(1) as f64;
        let base = (min * 2f64.powi(failures.saturating_sub(1).min(30) as i32)).min(max);
        let jitter = 0.5 + rand::random::<f64>() * 0.5;
        Duration::from_secs_f64(base * jitter)
    }
}
