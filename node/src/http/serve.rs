//! The public listener's accept loop (PROTOCOL.md 10): at most
//! `max_connections` open client connections, `max_connections_per_ip` from
//! one address, and `request_timeout_secs` to send a request's head. A
//! connection past a cap is closed at once, never queued. HTTP/1.1 (with
//! WebSocket upgrades) and HTTP/2 through hyper-util, as axum::serve does;
//! with a TLS acceptor (`tls_cert_file`), HTTPS and WSS only, the TLS
//! handshake bounded by `request_timeout_secs` too and HTTP/2 or HTTP/1.1
//! chosen by ALPN. The admin listener is served by the same loop.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::Metrics;
use crate::settings::Connections;

/// Open connections, in all and per address.
#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection's place under the caps, shared by its requests;
/// a WebSocket upgraded from it keeps it until the WebSocket closes (hyper
/// is done with an upgraded connection long before).
#[derive(Clone)]
pub struct ConnSlot(#[allow(dead_code)] Arc<Slot>);

/// One admitted connection; its slot is given back when it is dropped.
struct Slot {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Slot {
    /// A slot for a connection from `ip`, or None past a cap.
    fn take(open: &Arc<Mutex<Open>>, ip: IpAddr, caps: &Connections) -> Option<Slot> {
        let mut o = open.lock().expect("lock");
        let from_ip = o.by_ip.get(&ip).copied().unwrap_or(0);
        if o.total >= caps.max_connections || from_ip >= caps.max_connections_per_ip {
            return None;
        }
        o.total += 1;
        *o.by_ip.entry(ip).or_insert(0) += 1;
        Some(Slot {
            open: open.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock().expect("lock");
        o.total -= 1;
        if let Some(n) = o.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                o.by_ip.remove(&self.ip);
            }
        }
    }
}

/// Serve `router` on `listener` until `shutdown`, then let open requests
/// finish (at most `drain`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    caps: Connections,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    drain: Duration,
    tls: Option<meshrelay_tls::TlsAcceptor>,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let handshake_timeout = Duration::from_secs(caps.request_timeout_secs);
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(caps.request_timeout_secs));
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment, keep serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = Slot::take(&open, addr.ip(), &caps) else {
            metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        let slot = ConnSlot(Arc::new(slot));
        let routed = with_client(router.clone(), addr, slot.clone());
        let service = hyper_util::service::TowerToHyperService::new(routed);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                }
                Some(acceptor) => {
                    // A client that speaks plain HTTP, or none at all, fails
                    // the handshake and is closed.
                    let stream = match tokio::time::timeout(
                        handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(client = %addr, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "open HTTP requests did not finish within {} s",
            drain.as_secs()
        );
    }
}

/// The router, each request carrying its client's address (`ConnectInfo`)
/// and its connection's slot.
fn with_client(
    router: Router,
    addr: SocketAddr,
    slot: ConnSlot,
) -> impl tower::Service<
    axum::http::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    router.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(addr));
        req.extensions_mut().insert(slot.clone());
        req.map(axum::body::Body::new)
    })
}
