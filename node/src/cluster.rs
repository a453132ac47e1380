//! Several processes, one node (PROTOCOL.md 8.1), from this process's side:
//! what the others stored reaches this process's subscribers (and what this
//! one stored reaches theirs) through the writer's NOTIFY, signals cross on
//! a channel of their own, peer changes made elsewhere rebuild this
//! process's routing, and a heartbeat tells the admin API who is running.
//!
//! Exactly once: a payload is handed to the hub only if this process has not
//! delivered it in the last `DELIVERED_TTL` (local publishes are remembered
//! too), so a catch-up after a lost listener connection, which reads what
//! was stored meanwhile, never delivers anything twice.

use std::sync::Arc;
use std::time::Duration;

use meshrelay_protocol::clock::{now_ms, now_secs};
use meshrelay_protocol::Payload;
use meshrelay_store::cluster::{Channels, Event, Heard, Instance, PeerNote, Stored};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::hub::Fresh;
use crate::state::AppState;

/// How long a delivered id is remembered (and so how long an outage of the
/// listener's connection a catch-up covers without repeating anything).
const DELIVERED_TTL: Duration = Duration::from_secs(900);
/// Ids remembered at most (about 100 bytes each).
const DELIVERED_MAX: u64 = 200_000;
/// A catch-up reads what was stored this long before the listener was last
/// known alive: a payload's `received_at` is taken before its batch commits.
const CATCH_UP_MARGIN_MS: i64 = 60_000;
/// Most payloads one catch-up reads (those delivered already included), and
/// per page.
const CATCH_UP_MAX: i64 = 100_000;
const CATCH_UP_PAGE: i64 = 1_000;
/// A round trip on the listener's connection this often proves it alive,
/// answered within `PING_TIMEOUT` by the same server process.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Heartbeats (and the nonce purge) this often.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// An instance not seen for this long is not listed.
pub const INSTANCE_STALE_SECS: i64 = 60;

/// This process within its node.
pub struct Cluster {
    /// `host:pid:random`, as job runs and the admin API name it.
    pub instance: String,
    pub channels: Channels,
    pub started_at: i64,
    /// Whether other processes may share the database (PostgreSQL).
    pub shared: bool,
    delivered: moka::sync::Cache<[u8; 32], ()>,
}

/// A signal as it crosses to the other processes.
#[derive(Serialize, Deserialize)]
struct SignalNote {
    i: String,
    from: String,
    channel: String,
    #[serde(rename = "type")]
    kind: String,
    data: Map<String, Value>,
}

fn id_bytes(id: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(id, &mut out).ok()?;
    Some(out)
}

impl Cluster {
    pub fn new(node_hex: &str, shared: bool) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        Self {
            // The random part keeps two containers with one hostname and
            // one pid (namespaces) apart.
            instance: format!(
                "{host}:{}:{}",
                std::process::id(),
                hex::encode(rand::random::<[u8; 3]>())
            ),
            channels: Channels::for_node(node_hex),
            started_at: now_secs(),
            shared,
            delivered: moka::sync::Cache::builder()
                .max_capacity(DELIVERED_MAX)
                .time_to_live(DELIVERED_TTL)
                .build(),
        }
    }

    /// The listener connection's application name: `meshrelay-listener-`
    /// and the node's channel tag (operators find it in `pg_stat_activity`).
    pub fn listener_name(&self) -> String {
        let tag = self
            .channels
            .peers
            .trim_start_matches("meshrelay_")
            .trim_end_matches("_peers");
        format!("meshrelay-listener-{tag}")
    }

    /// Remember that this process delivered `id` live. True when it had not.
    pub fn first_delivery(&self, id: &str) -> bool {
        if !self.shared {
            return true;
        }
        let Some(key) = id_bytes(id) else {
            return true;
        };
        self.delivered.entry(key).or_insert(()).is_fresh()
    }

    /// Relay a signal to the other processes' connections.
    pub async fn signal(
        &self,
        state: &AppState,
        from: &str,
        channel: &str,
        kind: &str,
        data: &Map<String, Value>,
    ) {
        if !self.shared {
            return;
        }
        let note = SignalNote {
            i: self.instance.clone(),
            from: from.to_string(),
            channel: channel.to_string(),
            kind: kind.to_string(),
            data: data.clone(),
        };
        let text = serde_json::to_string(&note).expect("serializes");
        if text.len() > meshrelay_store::cluster::MAX_NOTIFY_BYTES {
            tracing::debug!(len = text.len(), "signal too large to cross processes");
            return;
        }
        if let Err(e) = state.store.notify(&self.channels.signals, &text).await {
            tracing::warn!(error = ?e, "relaying a signal to the other processes failed");
        }
    }
}

/// Deliver a stored, visible payload to this process's subscribers, once.
pub fn deliver(state: &AppState, fresh: &Arc<Fresh>) {
    if state.cluster.first_delivery(&fresh.payload.id) {
        state.hub.publish(fresh);
    }
}

/// Start the listener (PostgreSQL) and the heartbeat; both end at shutdown.
pub fn spawn(state: AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(heartbeat(state.clone()))];
    if state.cluster.shared {
        tasks.push(tokio::spawn(listen(state)));
    }
    tasks
}

async fn heartbeat(state: AppState) {
    let c = &state.cluster;
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let beat = Instance {
            instance: c.instance.clone(),
            started_at: c.started_at,
            last_seen: now_secs(),
            connections: state.metrics.ws_connections.get(),
            subscriptions: state.metrics.ws_subscriptions.get(),
        };
        if let Err(e) = state.store.heartbeat(&beat).await {
            tracing::warn!(error = ?e, "recording this process's heartbeat failed");
        }
        if let Err(e) = state.store.purge_instances(beat.last_seen - 86_400).await {
            tracing::warn!(error = ?e, "removing processes gone for a day failed");
        }
        if c.shared {
            if let Err(e) = state.store.purge_nonces(now_secs()).await {
                tracing::warn!(error = ?e, "purging old request nonces failed");
            }
        }
    }
    if let Err(e) = state.store.forget_instance(&c.instance).await {
        tracing::warn!(error = ?e, "removing this process from the instance list failed");
    }
}

async fn listen(state: AppState) {
    let ch = &state.cluster.channels;
    let names = [ch.payloads.as_str(), ch.signals.as_str(), ch.peers.as_str()];
    let application = state.cluster.listener_name();
    let Some(mut listener) = connect_listener(&state, &application, &names).await else {
        return;
    };
    let mut alive_at = now_ms();
    let mut backend = listener.backend_pid().await.ok();
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        let event = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = ping.tick() => {
                // The same server process as before, answering in time: the
                // connection was never replaced, nothing was missed.
                let pid = tokio::time::timeout(PING_TIMEOUT, listener.backend_pid()).await;
                match pid {
                    Ok(Ok(pid)) if backend == Some(pid) => {
                        alive_at = now_ms();
                        continue;
                    }
                    Ok(Ok(_)) => tracing::warn!("the listener's database connection was replaced"),
                    Ok(Err(e)) => tracing::warn!(error = ?e, "the listener's database connection failed"),
                    Err(_) => tracing::warn!("the listener's database connection does not answer"),
                }
                None
            }
            event = listener.recv() => Some(event),
        };
        match event {
            Some(Ok(Event::Heard(heard))) => {
                alive_at = now_ms();
                hear(&state, heard).await;
                continue;
            }
            Some(Ok(Event::Lost)) => {
                tracing::warn!("the listener's database connection was lost; reconnecting");
            }
            Some(Err(e)) => {
                tracing::warn!(error = ?e, "the listener's database connection failed; reconnecting");
            }
            None => {}
        }
        // A new connection listens again; then what was stored since shortly
        // before the listener was last known alive is read back
        // (`received_at` is in seconds).
        let since = (alive_at - CATCH_UP_MARGIN_MS).div_euclid(1000);
        drop(listener);
        listener = match connect_listener(&state, &application, &names).await {
            Some(l) => l,
            None => return,
        };
        backend = listener.backend_pid().await.ok();
        catch_up(&state, since).await;
        // Peer changes told meanwhile are lost too: rebuild from the database.
        if let Err(e) = state
            .federation
            .peer_changed_elsewhere(meshrelay_federation::EVERY_PEER)
            .await
        {
            tracing::warn!(error = ?e, "reloading peers after a reconnect failed");
        }
        alive_at = now_ms();
    }
}

/// A listener on the node's channels, retried every second until it
/// listens; None at shutdown (or on SQLite).
async fn connect_listener(
    state: &AppState,
    application: &str,
    names: &[&str],
) -> Option<meshrelay_store::cluster::Listener> {
    loop {
        match state.store.listen(application, names).await {
            Ok(listener) => return listener,
            Err(e) => {
                tracing::warn!(error = ?e, "listening for the other processes failed; retrying");
                tokio::select! {
                    _ = state.shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn hear(state: &AppState, heard: Heard) {
    let c = &state.cluster;
    if heard.channel == c.channels.payloads {
        let Ok(stored) = serde_json::from_str::<Stored>(&heard.payload) else {
            return;
        };
        if stored.instance == c.instance {
            return;
        }
        if stored.forwards {
            // The storing process queued forwards: the delivery loops this
            // process leads have work.
            state.federation.wake_idle();
        }
        match state.store.shown_by_rid(&stored.rids).await {
            Ok(rows) => hand_over(state, rows),
            Err(e) => tracing::warn!(error = ?e, "loading payloads another process stored failed"),
        }
    } else if heard.channel == c.channels.signals {
        let Ok(note) = serde_json::from_str::<SignalNote>(&heard.payload) else {
            return;
        };
        if note.i != c.instance {
            // Connection id 0 is nobody's: every matching connection gets it.
            state
                .hub
                .signal(0, &note.from, &note.channel, &note.kind, &note.data);
        }
    } else if heard.channel == c.channels.peers {
        let Ok(note) = serde_json::from_str::<PeerNote>(&heard.payload) else {
            return;
        };
        if note.instance != c.instance {
            if let Err(e) = state.federation.peer_changed_elsewhere(&note.node).await {
                tracing::warn!(error = ?e, peer = %note.node, "applying another process's peer change failed");
            }
        }
    }
}

/// Hand rows read back from the database to the hub, once each.
fn hand_over(state: &AppState, rows: Vec<(i64, String)>) {
    for (_, json) in rows {
        let Ok(payload) = serde_json::from_str::<Payload>(&json) else {
            continue;
        };
        let fresh = Arc::new(Fresh {
            payload,
            json: json.into(),
        });
        deliver(state, &fresh);
    }
}

/// Hand over what was stored since `since`, a page at a time, at most
/// `CATCH_UP_MAX` payloads.
async fn catch_up(state: &AppState, since: i64) {
    let (mut after, mut read) = (0i64, 0i64);
    while read < CATCH_UP_MAX {
        match state.store.shown_since(since, after, CATCH_UP_PAGE).await {
            Ok(rows) if rows.is_empty() => break,
            Ok(rows) => {
                read += rows.len() as i64;
                after = rows.last().map_or(after, |(rid, _)| *rid);
                hand_over(state, rows);
            }
            Err(e) => {
                tracing::warn!(error = ?e, "catching up after a reconnect failed");
                return;
            }
        }
    }
    tracing::info!(read, "caught up with what other processes stored meanwhile");
}
