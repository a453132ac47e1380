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
pub struct ConnSlot(
    #[allow(dead_code)] Arc<Slot>,
    /// A forwarded client's place, for a WebSocket through a trusted proxy.
    #[allow(dead_code)]
    Option<Arc<Slot>>,
);

/// One admitted connection (or, behind a trusted proxy, one forwarded
/// client's WebSocket); its place is given back when it is dropped.
struct Slot {
    open: Arc<Mutex<Open>>,
    /// The address counted under `max_connections_per_ip`, if any.
    ip: Option<IpAddr>,
    /// Counted under `max_connections`.
    counts_total: bool,
}

impl Slot {
    /// A slot for a connection from `ip`, or None past a cap. A trusted
    /// proxy's connections carry many clients: only the total counts them.
    fn take(open: &Arc<Mutex<Open>>, ip: IpAddr, caps: &Connections) -> Option<Slot> {
        let per_ip = !is_trusted(&caps.trusted_proxies, ip);
        let mut o = open.lock().expect("lock");
        let from_ip = o.by_ip.get(&ip).copied().unwrap_or(0);
        if o.total >= caps.max_connections || (per_ip && from_ip >= caps.max_connections_per_ip) {
            return None;
        }
        o.total += 1;
        if per_ip {
            *o.by_ip.entry(ip).or_insert(0) += 1;
        }
        Some(Slot {
            open: open.clone(),
            ip: per_ip.then_some(ip),
            counts_total: true,
        })
    }

    /// A forwarded client's place under `max_connections_per_ip` (its
    /// proxy's connection already counts under the total), or None past it.
    fn take_forwarded(open: &Arc<Mutex<Open>>, ip: IpAddr, caps: &Connections) -> Option<Slot> {
        let mut o = open.lock().expect("lock");
        let from_ip = o.by_ip.entry(ip).or_insert(0);
        if *from_ip >= caps.max_connections_per_ip {
            return None;
        }
        *from_ip += 1;
        Some(Slot {
            open: open.clone(),
            ip: Some(ip),
            counts_total: false,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock().expect("lock");
        if self.counts_total {
            o.total -= 1;
        }
        if let Some(ip) = self.ip {
            if let Some(n) = o.by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    o.by_ip.remove(&ip);
                }
            }
        }
    }
}

fn is_trusted(proxies: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    proxies.iter().any(|net| net.contains(&ip))
}

/// The client behind trusted proxies: the right-most `X-Forwarded-For`
/// address that is not itself a trusted proxy (each proxy appends the
/// address it received from; what a client wrote itself is further left
/// and is never believed). An entry there that is no address (a client's
/// own junk, passed on) counts as the unspecified address, which all such
/// clients share under the caps. None when the header is absent.
pub fn forwarded_client(
    proxies: &[ipnet::IpNet],
    headers: &axum::http::HeaderMap,
) -> Option<IpAddr> {
    let junk = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    let mut items: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        match value.to_str() {
            Ok(text) => items.extend(text.split(',').map(str::trim)),
            Err(_) => items.push(""),
        }
    }
    let mut last = None;
    for item in items.into_iter().rev() {
        let Ok(ip) = item.parse::<IpAddr>() else {
            return Some(junk);
        };
        last = Some(ip);
        if !is_trusted(proxies, ip) {
            break;
        }
    }
    last
}

/// A WebSocket upgrade through a trusted proxy from a client already at
/// `max_connections_per_ip`: the upgrade is refused (429).
#[derive(Clone, Copy)]
pub struct OverClientCap;

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
        let slot = ConnSlot(Arc::new(slot), None);
        let forwarded =
            is_trusted(&caps.trusted_proxies, addr.ip()).then(|| (open.clone(), caps.clone()));
        let routed = with_client(router.clone(), addr, slot.clone(), forwarded);
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
/// and its connection's slot. From a trusted proxy (`forwarded`), the
/// client's address is the one `X-Forwarded-For` names, and a WebSocket
/// upgrade takes that client's place under `max_connections_per_ip`.
fn with_client(
    router: Router,
    addr: SocketAddr,
    slot: ConnSlot,
    forwarded: Option<(Arc<Mutex<Open>>, Connections)>,
) -> impl tower::Service<
    axum::http::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    router.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        let mut client = addr;
        let mut slot = slot.clone();
        if let Some((open, caps)) = &forwarded {
            if let Some(ip) = forwarded_client(&caps.trusted_proxies, req.headers()) {
                client = SocketAddr::new(ip, addr.port());
                let upgrade = req
                    .headers()
                    .get(axum::http::header::UPGRADE)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
                if upgrade {
                    match Slot::take_forwarded(open, ip, caps) {
                        Some(s) => slot.1 = Some(Arc::new(s)),
                        None => {
                            req.extensions_mut().insert(OverClientCap);
                        }
                    }
                }
            }
        }
        req.extensions_mut().insert(ConnectInfo(client));
        req.extensions_mut().insert(slot);
        req.map(axum::body::Body::new)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_right_most_address_no_trusted_proxy_wrote() {
        let proxies: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            forwarded_client(&proxies, &headers(&["192.0.2.1"])),
            ip("192.0.2.1")
        );
        // What the client wrote itself, further left, is not believed.
        assert_eq!(
            forwarded_client(&proxies, &headers(&["6.6.6.6, 192.0.2.1, 10.1.2.3"])),
            ip("192.0.2.1")
        );
        // Several header lines are one list, in order.
        assert_eq!(
            forwarded_client(&proxies, &headers(&["6.6.6.6", "192.0.2.1"])),
            ip("192.0.2.1")
        );
        // Only proxies: the left-most of them is the best there is.
        assert_eq!(
            forwarded_client(&proxies, &headers(&["10.0.0.1, 10.0.0.2"])),
            ip("10.0.0.1")
        );
        assert_eq!(forwarded_client(&proxies, &headers(&[])), None);
        // Junk where the client's address should be is the one shared
        // unspecified address, not a way around the caps.
        assert_eq!(
            forwarded_client(&proxies, &headers(&["6.6.6.6, not an address, 10.0.0.1"])),
            ip("0.0.0.0")
        );
    }

    #[test]
    fn an_ipv4_mapped_peer_matches_an_ipv4_block() {
        let proxies: Vec<ipnet::IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(is_trusted(&proxies, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_trusted(&proxies, "::1".parse().unwrap()));
    }
}
