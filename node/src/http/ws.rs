//! One WebSocket connection (PROTOCOL.md 4.2): a reader that handles ops and a
//! writer that drains one queue bounded in bytes (`ws_queue_bytes`). The queue
//! is the only buffer: a frame that would overflow it closes the connection
//! with 1008 `slow consumer`; a client silent for `ws_idle_secs` is closed 1001.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::response::Response;
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use meshrelay_protocol::hexfmt::decode_fixed;
use meshrelay_protocol::keys::auth_message;
use meshrelay_protocol::ws::{out, ClientFrame};
use meshrelay_protocol::{ErrorCode, Filter, ProtocolError, PublicKey};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::hub::{CloseReason, Conn};
use crate::ingest::{ingest, receipt};
use crate::state::AppState;

/// Publishes one connection may have in flight; more wait for a slot, which
/// back-pressures the client instead of buffering without bound.
const MAX_INFLIGHT_PUBLISHES: usize = 256;
/// How long a close frame may take to reach a client that is not reading.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Upgrade to the WebSocket protocol of PROTOCOL.md 4.2.
#[utoipa::path(
    get,
    path = "/v1/ws",
    responses(
        (status = 101, description = "Switching to the meshrelay WebSocket protocol"),
        (status = 400, description = "bad_request: not a WebSocket upgrade", body = super::schema::ErrorBody),
    )
)]
pub async fn upgrade(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(client): axum::extract::ConnectInfo<std::net::SocketAddr>,
    slot: Option<axum::Extension<super::serve::ConnSlot>>,
    over_cap: Option<axum::Extension<super::serve::OverClientCap>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if over_cap.is_some() {
        state.metrics.connections_refused.inc();
        return crate::error::ApiError::new(
            meshrelay_protocol::ErrorCode::RateLimited,
            "too many connections from this address (max_connections_per_ip)",
        )
        .into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        // The error body every other answer has, not axum's plain text.
        Err(e) => return crate::error::ApiError::bad_request(e.body_text()).into_response(),
    };
    let max = super::max_frame_bytes(&state.settings.limits);
    let tracker = state.ws_tasks.clone();
    // tungstenite allocates its whole read buffer per connection up front (128
    // KiB by default): most of an idle connection's memory. 4 KiB grows on
    // demand for large frames.
    ws.read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                connection(socket, state, client.ip()).await;
                // The connection's place under max_connections(_per_ip) is
                // given back now that the WebSocket closed.
                drop(slot);
            })
        })
}

async fn connection(socket: WebSocket, state: AppState, client: std::net::IpAddr) {
    let (sink, mut stream) = socket.split();
    let limits = &state.settings.limits;
    // Bytes bound the queue; the frame count only keeps tiny frames in check.
    let frames = (limits.ws_queue_bytes / crate::hub::frame_cost(0)).max(16);
    let (tx, rx) = mpsc::channel::<Message>(frames);
    let held = state.settings.ws_queue_bound();
    let conn = state.hub.register(tx, held, limits.ws_queue_bytes);
    let idle = Duration::from_secs(limits.ws_idle_secs);
    let challenge = hex::encode(rand::random::<[u8; 32]>());
    let hello = out::hello(
        &state.node_hex(),
        &challenge,
        &super::ops::limits_json(&state),
    );
    conn.offer(hello, &state.metrics);
    let writer = tokio::spawn(write_loop(sink, rx, conn.clone(), state.shutdown.clone()));

    let shutdown = state.shutdown.clone();
    let state_limits = state.limits.clone();
    let mut session = Session {
        state,
        conn: conn.clone(),
        challenge,
        pubkey: None,
        inflight: Arc::new(Semaphore::new(MAX_INFLIGHT_PUBLISHES)),
        limiter: state_limits.for_connection(),
        client,
    };
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        tokio::select! {
            msg = stream.next() => {
                deadline = tokio::time::Instant::now() + idle;
                match msg {
                Some(Ok(Message::Text(text))) => session.handle(text.as_str()).await,
                Some(Ok(Message::Binary(_))) => {
                    session.send_error(ProtocolError::bad_request("frames are JSON text, not binary"), None).await
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            }},
            _ = tokio::time::sleep_until(deadline) => {
                session.conn.close_idle(&session.state.metrics);
                break;
            }
            _ = conn.kill.cancelled() => break,
            _ = shutdown.cancelled() => break,
        }
    }
    session.state.hub.unregister(&conn);
    // Let publishes already accepted for storage finish before the queue closes.
    let _ = session
        .inflight
        .acquire_many(MAX_INFLIGHT_PUBLISHES as u32)
        .await;
    drop(session);
    conn.kill.cancel();
    let _ = writer.await;
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Message>,
    conn: Arc<Conn>,
    shutdown: CancellationToken,
) {
    let close = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    // Made once, not at every frame: each `cancelled()` registers with its
    // token's tree under a lock.
    let killed = conn.kill.cancelled();
    let stopping = shutdown.cancelled();
    tokio::pin!(killed, stopping);
    let mut burst = Vec::new();
    let ending = loop {
        // Biased, the queue first: a wake with frames queued polls neither
        // cancellation (each poll takes its token's lock). A closed
        // connection takes no more frames (`Conn::offer`), so its writer
        // stops once it waits, on the empty queue here or on a client that
        // does not read in the write below; a reading client first gets what
        // was queued, at most `ws_queue_bytes`.
        tokio::select! {
            biased;
            // Write what is queued already, then flush once: one syscall
            // for a burst of frames instead of one per frame.
            n = rx.recv_many(&mut burst, 64) => {
                if n == 0 {
                    break None;
                }
                let write = async {
                    for m in burst.drain(..) {
                        let len = match &m {
                            Message::Text(t) => crate::hub::frame_cost(t.len()),
                            _ => 0,
                        };
                        sink.feed(m).await?;
                        conn.written(len);
                    }
                    sink.flush().await
                };
                let written = tokio::select! {
                    biased;
                    r = write => r.is_ok(),
                    // Shutdown first: at shutdown the reader kills its
                    // connection too, and the client is owed its 1001.
                    _ = &mut stopping => break Some(close(1001, "server shutting down")),
                    _ = &mut killed => break None,
                };
                if !written {
                    return;
                }
                // A burst of many frames leaves no large buffer behind on a
                // connection that then idles; a small one is kept for reuse.
                if burst.capacity() > 8 {
                    burst = Vec::new();
                }
            }
            _ = &mut stopping => break Some(close(1001, "server shutting down")),
            _ = &mut killed => break None,
        }
    };
    let ending = ending.or_else(|| {
        conn.close_reason()
            .map(|reason| match reason {
                CloseReason::SlowConsumer => close(1008, "slow consumer"),
                CloseReason::Idle => close(1001, "idle"),
            })
            .or_else(|| {
                shutdown
                    .is_cancelled()
                    .then(|| close(1001, "server shutting down"))
            })
    });
    if let Some(frame) = ending {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(frame)).await;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
}

/// The reader's state for one connection.
struct Session {
    state: AppState,
    conn: Arc<Conn>,
    /// The random challenge of our hello, signed by a client to authenticate.
    challenge: String,
    /// The key the client proved, once it authenticated.
    pubkey: Option<String>,
    inflight: Arc<Semaphore>,
    /// This connection's publish budget (None: unlimited).
    limiter: Option<governor::DefaultDirectRateLimiter>,
    /// The client's address: its budget is shared by all its connections
    /// and its HTTP publishes, so more connections buy no more publishes.
    client: std::net::IpAddr,
}

impl Session {
    /// Queue a frame; past the byte bound the connection closes instead.
    async fn send(&self, text: String) {
        self.conn.offer(text, &self.state.metrics);
    }

    async fn send_error(&self, err: ProtocolError, reference: Option<&str>) {
        self.send(out::error(&err, reference)).await;
    }

    async fn handle(&mut self, text: &str) {
        let frame = match ClientFrame::parse(text) {
            Ok(f) => f,
            Err(e) => return self.send_error(e.error, e.reference.as_deref()).await,
        };
        match frame {
            ClientFrame::Ping => self.send(out::pong()).await,
            ClientFrame::Auth { pubkey, sig } => self.auth(pubkey, &sig).await,
            ClientFrame::Publish { payload } => self.publish(payload.get().to_owned()).await,
            ClientFrame::Subscribe { sub, filters } => self.subscribe(sub, filters).await,
            ClientFrame::Unsubscribe { sub } => {
                let reason = if self.state.hub.end_subscription(&self.conn, &sub) {
                    "unsubscribed"
                } else {
                    "unknown"
                };
                self.send(out::closed(&sub, reason)).await
            }
            ClientFrame::Signal {
                channel,
                kind,
                data,
            } => {
                if let Err(err) = self.may_signal().await {
                    return self.send_error(err, Some("signal")).await;
                }
                let from = self.pubkey.as_deref().expect("checked");
                self.state
                    .hub
                    .signal(self.conn.id, from, &channel, &kind, &data);
                // PROTOCOL.md 8.1: the node's other processes' connections too.
                self.state
                    .cluster
                    .signal(&self.state, from, &channel, &kind, &data)
                    .await
            }
        }
    }

    /// A signal needs auth, a key the operator did not block, and room in
    /// this connection's budget (the one publishes spend: a signal is relayed
    /// to every connection listening on its channel).
    async fn may_signal(&self) -> Result<(), ProtocolError> {
        let Some(from) = &self.pubkey else {
            return Err(ProtocolError::new(
                ErrorCode::AuthRequired,
                "signals need auth first",
            ));
        };
        if let Err(secs) = crate::limits::RateLimits::check_connection(&self.limiter) {
            return Err(ProtocolError::new(
                ErrorCode::RateLimited,
                format!("too many publishes and signals on this connection; retry in {secs} s"),
            ));
        }
        match self.state.store.is_author_blocked(from).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(ProtocolError::new(
                ErrorCode::Blocked,
                "this node does not relay signals from this key",
            )),
            Err(e) => {
                tracing::error!(error = ?e, "checking a signal's sender failed");
                Err(ProtocolError::new(
                    ErrorCode::Internal,
                    "the sender could not be checked",
                ))
            }
        }
    }

    async fn auth(&mut self, pubkey: String, sig: &str) {
        let node = self.state.node_hex();
        let message = auth_message(&node, &self.challenge);
        let verified = PublicKey::from_hex(&pubkey).and_then(|key| {
            let sig = decode_fixed::<64>(sig, "sig")?;
            if key.verify(message.as_bytes(), &sig) {
                Ok(())
            } else {
                Err("signature does not verify over this connection's challenge".into())
            }
        });
        match verified {
            Ok(()) => {
                self.send(out::auth_ok(&pubkey)).await;
                self.pubkey = Some(pubkey);
            }
            Err(why) => {
                self.send_error(ProtocolError::new(ErrorCode::AuthFailed, why), Some("auth"))
                    .await
            }
        }
    }

    /// Publishes run as their own tasks so one connection can keep many in
    /// flight (answers carry the id, so their order does not matter).
    async fn publish(&self, raw: String) {
        let budget = crate::limits::RateLimits::check_connection(&self.limiter)
            .and_then(|()| self.state.limits.check_http(self.client));
        if let Err(secs) = budget {
            #[derive(serde::Deserialize)]
            struct IdOnly {
                id: String,
            }
            let id = serde_json::from_str::<IdOnly>(&raw).ok().map(|x| x.id);
            let err = ProtocolError::new(
                ErrorCode::RateLimited,
                format!("too many publishes from this connection or address; retry in {secs} s"),
            );
            return self.send(out::ok_refused(id.as_deref(), &err)).await;
        }
        let Ok(permit) = self.inflight.clone().acquire_owned().await else {
            return;
        };
        let state = self.state.clone();
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let answer = match ingest(&state, &raw, "ws").await {
                Ok(a) => out::ok_accepted(&a.id, a.duplicate, receipt(&state, &a).as_ref()),
                Err(e) => {
                    #[derive(serde::Deserialize)]
                    struct IdOnly {
                        id: String,
                    }
                    let id = serde_json::from_str::<IdOnly>(&raw).ok().map(|x| x.id);
                    out::ok_refused(id.as_deref(), &e)
                }
            };
            conn.offer(answer, &state.metrics);
            drop(permit);
        });
    }

    async fn subscribe(&self, sub: String, filters: Vec<Filter>) {
        let settings = &self.state.settings;
        if !self.conn.has_subscription(&sub)
            && self.conn.subscription_count() >= settings.limits.max_subscriptions
        {
            let err = ProtocolError::new(
                ErrorCode::TooManySubscriptions,
                format!(
                    "at most {} subscriptions per connection",
                    settings.limits.max_subscriptions
                ),
            );
            return self.send_error(err, Some(&sub)).await;
        }
        if filters.len() > settings.limits.max_filters {
            let err = ProtocolError::bad_request(format!(
                "at most {} filters per subscription",
                settings.limits.max_filters
            ));
            return self.send_error(err, Some(&sub)).await;
        }
        if let Some(err) = filters
            .iter()
            .find_map(|f| f.check_values(settings.limits.max_filter_values).err())
        {
            return self.send_error(err, Some(&sub)).await;
        }
        let hub = &self.state.hub;
        hub.begin_subscription(&self.conn, &sub, filters.clone());
        let rows = match self.backfill(&filters).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = ?e, "subscription backfill failed");
                hub.end_subscription(&self.conn, &sub);
                let err =
                    ProtocolError::new(ErrorCode::Internal, "stored results could not be read");
                return self.send_error(err, Some(&sub)).await;
            }
        };
        let mut sent = HashSet::new();
        for row in rows {
            if sent.insert(row.id.clone()) {
                self.send(out::payload(&sub, &row.json)).await;
            }
        }
        self.send(out::eose(&sub)).await;
        hub.go_live(&self.conn, &sub, &sent);
    }

    /// Stored matches, newest first, each filter up to its own limit, and all
    /// together at most half of `ws_queue_bytes` of JSON (the newest that
    /// fit), so a whole backfill always fits in an empty queue.
    async fn backfill(
        &self,
        filters: &[Filter],
    ) -> meshrelay_store::Result<Vec<meshrelay_store::StoredRow>> {
        let limits = &self.state.settings.limits;
        let mut budget = limits.ws_queue_bytes / 2;
        let mut rows = Vec::new();
        for f in filters {
            let limit = f.limit.unwrap_or(100).min(u64::from(limits.max_limit)) as u32;
            if limit == 0 || budget == 0 {
                continue;
            }
            let page = self.state.store.query_page(f, None, limit, budget).await?;
            let used: usize = page.rows.iter().map(|r| r.json.len()).sum();
            budget = budget.saturating_sub(used);
            rows.extend(page.rows);
        }
        rows.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(rows)
    }
}
