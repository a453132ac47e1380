//! Live fan-out: which connection holds which subscriptions, and delivery of each
//! newly stored payload (and each signal) to them through queues bounded in
//! bytes (`ws_queue_bytes`): every frame a connection is sent is counted until
//! its writer has written it, and one that would pass the bound closes the
//! connection as a slow consumer instead of being held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::ws::{Message, Utf8Bytes};
use meshrelay_protocol::filter::any_matches;
use meshrelay_protocol::ws::out;
use meshrelay_protocol::{Filter, Payload};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What a queued frame of `text_len` bytes costs in the queue: its text and
/// the frame around it.
pub fn frame_cost(text_len: usize) -> usize {
    text_len + 64
}

/// A stored payload with its JSON text, serialized once for every subscriber.
#[derive(Debug)]
pub struct Fresh {
    pub payload: Payload,
    pub json: Arc<str>,
}

/// Why a connection's writer stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    SlowConsumer,
    /// No frame from the client for `ws_idle_secs`.
    Idle,
}

enum SubState {
    /// Stored matches are being sent; live matches wait here until `eose`.
    Backfilling(Vec<Arc<Fresh>>),
    Live,
}

struct Subscription {
    filters: Vec<Filter>,
    state: SubState,
}

/// The part of a connection the hub touches.
pub struct Conn {
    pub id: u64,
    tx: mpsc::Sender<Message>,
    subs: Mutex<HashMap<String, Subscription>>,
    /// Cancelled when the connection must close; `close_reason` says why.
    pub kill: CancellationToken,
    close_reason: Mutex<Option<CloseReason>>,
    /// Most live payloads held per subscription while it backfills.
    pending_bound: usize,
    /// Bytes of frames queued and not yet written.
    queued: AtomicUsize,
    /// Set by `close`: no frame is queued after it.
    closed: AtomicBool,
    /// `ws_queue_bytes`.
    max_queued: usize,
}

impl Conn {
    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.close_reason.lock().expect("lock")
    }

    fn close(&self, reason: CloseReason, metrics: &Metrics) {
        self.closed.store(true, Ordering::Release);
        let mut r = self.close_reason.lock().expect("lock");
        if r.is_none() {
            *r = Some(reason);
            if reason == CloseReason::SlowConsumer {
                metrics.ws_slow_consumers.inc();
            }
        }
        self.kill.cancel();
    }

    /// Queue a text frame without waiting. One that would pass the byte
    /// bound (or a full queue) closes the connection as a slow consumer.
    /// A frame sent to many connections is one shared buffer: cloning
    /// `Utf8Bytes` copies no text.
    pub fn offer(&self, text: impl Into<Utf8Bytes>, metrics: &Metrics) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let text = text.into();
        let len = frame_cost(text.len());
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.max_queued {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.close(CloseReason::SlowConsumer, metrics);
            return false;
        }
        match self.tx.try_send(Message::Text(text)) {
            Ok(()) => true,
            Err(e) => {
                self.queued.fetch_sub(len, Ordering::AcqRel);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    self.close(CloseReason::SlowConsumer, metrics);
                }
                false
            }
        }
    }

    /// The writer wrote a frame of `len` bytes: it no longer counts.
    pub fn written(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::AcqRel);
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Close because the client sent nothing for too long.
    pub fn close_idle(&self, metrics: &Metrics) {
        self.close(CloseReason::Idle, metrics);
    }

    pub fn subscription_count(&self) -> usize {
        self.subs.lock().expect("lock").len()
    }

    pub fn has_subscription(&self, sub: &str) -> bool {
        self.subs.lock().expect("lock").contains_key(sub)
    }
}

/// One payload's `payload` frames, one per subscription id, each built once.
struct Frames<'a> {
    json: &'a str,
    built: Vec<(String, Utf8Bytes)>,
}

impl<'a> Frames<'a> {
    fn new(json: &'a str) -> Self {
        Self {
            json,
            built: Vec::new(),
        }
    }

    fn for_sub(&mut self, sub: &str) -> Utf8Bytes {
        if let Some((_, frame)) = self.built.iter().find(|(s, _)| s == sub) {
            return frame.clone();
        }
        // A few distinct ids are the common case; past that, build each
        // frame anew rather than search a long list for every delivery.
        let frame = Utf8Bytes::from(out::payload(sub, self.json));
        if self.built.len() < 16 {
            self.built.push((sub.to_string(), frame.clone()));
        }
        frame
    }
}

pub struct Hub {
    conns: RwLock<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            conns: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            metrics,
        }
    }

    pub fn register(
        &self,
        tx: mpsc::Sender<Message>,
        pending_bound: usize,
        max_queued: usize,
    ) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            tx,
            subs: Mutex::new(HashMap::new()),
            kill: CancellationToken::new(),
            close_reason: Mutex::new(None),
            pending_bound,
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            max_queued,
        });
        self.conns.write().expect("lock").insert(id, conn.clone());
        self.metrics.ws_connections.inc();
        conn
    }

    pub fn unregister(&self, conn: &Conn) {
        if self.conns.write().expect("lock").remove(&conn.id).is_some() {
            let n = conn.subs.lock().expect("lock").len();
            self.metrics.ws_subscriptions.dec_by(n as i64);
            self.metrics.ws_connections.dec();
        }
    }

    /// Start a subscription (replacing one with the same id) in the backfilling
    /// state: live matches from now on are held until `go_live`.
    pub fn begin_subscription(&self, conn: &Conn, sub: &str, filters: Vec<Filter>) {
        let mut subs = conn.subs.lock().expect("lock");
        let replaced = subs
            .insert(
                sub.to_string(),
                Subscription {
                    filters,
                    state: SubState::Backfilling(Vec::new()),
                },
            )
            .is_some();
        if !replaced {
            self.metrics.ws_subscriptions.inc();
        }
    }

    /// After `eose`: send what arrived during backfill (minus what the backfill
    /// already sent) and deliver live from now on.
    pub fn go_live(&self, conn: &Conn, sub: &str, sent: &std::collections::HashSet<String>) {
        let mut subs = conn.subs.lock().expect("lock");
        let Some(s) = subs.get_mut(sub) else { return };
        let SubState::Backfilling(held) = std::mem::replace(&mut s.state, SubState::Live) else {
            return;
        };
        for fresh in held {
            if !sent.contains(&fresh.payload.id) {
                self.metrics.live_deliveries.inc();
                if !conn.offer(out::payload(sub, &fresh.json), &self.metrics) {
                    return;
                }
            }
        }
    }

    pub fn end_subscription(&self, conn: &Conn, sub: &str) -> bool {
        let removed = conn.subs.lock().expect("lock").remove(sub).is_some();
        if removed {
            self.metrics.ws_subscriptions.dec();
        }
        removed
    }

    /// Deliver a newly stored, visible payload to every matching subscription, once each.
    ///
    /// The frame is built once per distinct subscription id (most clients
    /// name theirs alike) and shared by every connection it goes to. The
    /// connection table is copied (a pointer per connection) rather than
    /// walked under its lock: a connect or disconnect during a fan-out to
    /// thousands would wait for the whole walk, blocking its worker thread.
    pub fn publish(&self, fresh: &Arc<Fresh>) {
        let mut frames = Frames::new(&fresh.json);
        let conns: Vec<Arc<Conn>> = self.conns.read().expect("lock").values().cloned().collect();
        for conn in conns {
            let mut subs = conn.subs.lock().expect("lock");
            for (sub_id, sub) in subs.iter_mut() {
                if !any_matches(&sub.filters, &fresh.payload) {
                    continue;
                }
                match &mut sub.state {
                    SubState::Backfilling(held) => {
                        if held.len() >= conn.pending_bound {
                            conn.close(CloseReason::SlowConsumer, &self.metrics);
                            break;
                        }
                        held.push(fresh.clone());
                    }
                    SubState::Live => {
                        self.metrics.live_deliveries.inc();
                        if !conn.offer(frames.for_sub(sub_id), &self.metrics) {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Relay a signal to the other connections with a live subscription naming
    /// the channel in a `channels` list; one frame per connection.
    pub fn signal(
        &self,
        from_conn: u64,
        from: &str,
        channel: &str,
        kind: &str,
        data: &Map<String, Value>,
    ) {
        let frame = Utf8Bytes::from(out::signal(from, channel, kind, data));
        let conns: Vec<Arc<Conn>> = self.conns.read().expect("lock").values().cloned().collect();
        for conn in conns.iter().filter(|c| c.id != from_conn) {
            let wants = conn
                .subs
                .lock()
                .expect("lock")
                .values()
                .any(|s| s.filters.iter().any(|f| f.names_channel(channel)));
            if wants {
                self.metrics.signals_relayed.inc();
                conn.offer(frame.clone(), &self.metrics);
            }
        }
    }
}
