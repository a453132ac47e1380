//! Ingest: P WebSocket publishers, each keeping W publishes in flight, send
//! pre-signed payloads; measured are accepted payloads per second and the
//! time from sending a publish to receiving its `ok` (which the node sends
//! only after the durable commit).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use meshrelay_protocol::NodeKey;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::node::Node;
use crate::stats::{quantile, spread};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent WebSocket publishers.
    #[arg(long, default_value_t = 32)]
    publishers: usize,
    /// Payloads per publisher in each measured run.
    #[arg(long, default_value_t = 2000)]
    per_publisher: usize,
    /// Publishes each publisher keeps in flight.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Content bytes per payload.
    #[arg(long, default_value_t = 200)]
    content_bytes: usize,
    /// `MESHRELAY_DATABASE_URL` for the node (default: SQLite in its data dir).
    #[arg(long)]
    database_url: Option<String>,
    /// Serve TLS (a self-signed certificate made for the run) and publish over WSS.
    #[arg(long)]
    tls: bool,
    /// Measure payloads the node already holds: each run's payloads are
    /// published once unmeasured, then again, measured (every answer a
    /// duplicate), as a mesh node receives copies from its other peers.
    #[arg(long)]
    duplicates: bool,
}

/// A self-signed certificate for 127.0.0.1 in `dir`, the node's variables
/// for it, and a WebSocket connector that trusts it.
pub(crate) fn self_signed(
    dir: &Path,
) -> anyhow::Result<(Vec<(&'static str, String)>, tokio_tungstenite::Connector)> {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    let (cert, key) = (dir.join("bench.crt"), dir.join("bench.key"));
    std::fs::write(&cert, made.cert.pem())?;
    std::fs::write(&key, made.signing_key.serialize_pem())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone())?;
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((
        vec![
            ("MESHRELAY_TLS_CERT_FILE", cert.display().to_string()),
            ("MESHRELAY_TLS_KEY_FILE", key.display().to_string()),
        ],
        tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(config)),
    ))
}

/// Pre-sign every publisher's frames so signing is not measured.
pub(crate) fn presign(
    publishers: usize,
    per: usize,
    content_bytes: usize,
    run: usize,
) -> Vec<Vec<(String, String)>> {
    let content = "x".repeat(content_bytes);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..publishers)
            .map(|i| {
                let content = &content;
                s.spawn(move || {
                    let key = NodeKey::generate();
                    (1..=per as u64)
                        .map(|seq| {
                            let p = crate::payloads::post(
                                &key,
                                seq,
                                format!("bench/{run}/{i}"),
                                vec![vec!["t".into(), "bench".into()]],
                                content.clone(),
                            );
                            let frame = json!({"op": "publish", "payload": p}).to_string();
                            (p.id, frame)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

struct RunResult {
    rate: f64,
    latencies_ms: Vec<f64>,
}

pub(crate) async fn publisher(
    url: String,
    frames: Vec<(String, String)>,
    window: usize,
    tls: Option<tokio_tungstenite::Connector>,
) -> anyhow::Result<Vec<f64>> {
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(&url, None, false, tls).await?;
    let (mut tx, mut rx) = ws.split();
    let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(frames.len());
    let mut latencies = Vec::with_capacity(frames.len());
    let mut next = 0;
    let total = frames.len();
    let mut frames = frames.into_iter();
    while latencies.len() < total {
        while next < total && next - latencies.len() < window {
            let (id, frame) = frames.next().expect("counted");
            sent_at.insert(id, Instant::now());
            tx.send(Message::text(frame)).await?;
            next += 1;
        }
        let msg = tokio::time::timeout(Duration::from_secs(60), rx.next())
            .await
            .context("no answer within 60 s")?
            .context("connection closed")??;
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t)?;
            if v["op"] != "ok" {
                continue;
            }
            if v["accepted"] != true {
                bail!("publish refused: {v}");
            }
            let id = v["id"].as_str().unwrap_or_default();
            if let Some(t0) = sent_at.remove(id) {
                latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let _ = tx.close().await;
    Ok(latencies)
}

async fn one_run(
    node: &Node,
    frames: Vec<Vec<(String, String)>>,
    window: usize,
    tls: &Option<tokio_tungstenite::Connector>,
) -> anyhow::Result<RunResult> {
    let total: usize = frames.iter().map(Vec::len).sum();
    let started = Instant::now();
    let tasks: Vec<_> = frames
        .into_iter()
        .map(|f| tokio::spawn(publisher(node.ws_url(), f, window, tls.clone())))
        .collect();
    let mut latencies_ms = Vec::with_capacity(total);
    for t in tasks {
        latencies_ms.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies_ms.sort_by(|a, b| a.total_cmp(b));
    Ok(RunResult {
        rate: total as f64 / secs,
        latencies_ms,
    })
}

pub async fn run(bin: &Path, runs: usize, args: Args) -> anyhow::Result<()> {
    let mut vars = Vec::new();
    if let Some(url) = &args.database_url {
        vars.push(("MESHRELAY_DATABASE_URL", url.clone()));
    }
    let certs = tempfile::tempdir()?;
    let mut tls = None;
    if args.tls {
        let (tls_vars, connector) = self_signed(certs.path())?;
        vars.extend(tls_vars);
        tls = Some(connector);
    }
    let node = Node::start(bin, &vars).await?;
    // Warm-up: connections, caches, the database's first pages.
    let warm = presign(
        args.publishers,
        (args.per_publisher / 10).max(10),
        args.content_bytes,
        0,
    );
    one_run(&node, warm, args.window, &tls).await?;

    let mut rates = Vec::new();
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut cpu_us = Vec::new();
    for run in 1..=runs.max(1) {
        let frames = presign(args.publishers, args.per_publisher, args.content_bytes, run);
        if args.duplicates {
            one_run(&node, frames.clone(), args.window, &tls).await?;
        }
        let cpu0 = node.cpu_secs().unwrap_or(0.0);
        let r = one_run(&node, frames, args.window, &tls).await?;
        let cpu = node.cpu_secs().unwrap_or(0.0) - cpu0;
        cpu_us.push(cpu * 1e6 / (args.publishers * args.per_publisher) as f64);
        eprintln!(
            "ingest run {run}: {:.0} payloads/s, p50 {:.1} ms, p99 {:.1} ms",
            r.rate,
            quantile(&r.latencies_ms, 0.5),
            quantile(&r.latencies_ms, 0.99)
        );
        rates.push(r.rate);
        p50.push(quantile(&r.latencies_ms, 0.5));
        p99.push(quantile(&r.latencies_ms, 0.99));
    }
    let rss = node.rss_kib();
    node.stop().await?;
    let rate = spread(&rates);
    let out = json!({
        "scenario": "ingest",
        "backend": if args.database_url.is_some() { "postgres" } else { "sqlite" },
        "publishers": args.publishers,
        "payloads_per_run": args.publishers * args.per_publisher,
        "window": args.window,
        "content_bytes": args.content_bytes,
        "runs": runs,
        "payloads_per_sec": rate,
        "p50_ms": spread(&p50),
        "p99_ms": spread(&p99),
        "transport": if args.tls { "wss" } else { "ws" },
        "duplicates": args.duplicates,
        "node_cpu_us_per_payload": spread(&cpu_us),
        "node_rss_kib_after": rss,
    });
    println!("{out}");
    eprintln!(
        "ingest: median {:.0} payloads/s (min {:.0}, max {:.0}) with {} publishers; p50 {:.1} ms, p99 {:.1} ms",
        rate.median, rate.min, rate.max, args.publishers, spread(&p50).median, spread(&p99).median
    );
    Ok(())
}
