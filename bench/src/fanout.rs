//! Fanout: M idle WebSocket subscribers on one channel (connections spread over
//! several 127.0.0.x source addresses so ports do not run out), one publisher
//! at a fixed rate. Measured: publish-to-delivery latency over all deliveries,
//! and the node's RSS before and after connecting the subscribers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use meshrelay_protocol::NodeKey;
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

use crate::node::Node;
use crate::stats::quantile;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Idle subscribers.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Payloads per second from the publisher.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Source addresses 127.0.0.2, 127.0.0.3, ... the subscribers connect from.
    #[arg(long, default_value_t = 8)]
    sources: u8,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect_from(src: IpAddr, node: SocketAddr, url: &str) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src, 0))?;
    let stream = socket.connect(node).await?;
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    Ok(ws)
}

/// `runs` measured runs, each on a fresh node; the JSON line carries each run
/// and the median, min and max of its figures.
pub async fn run(bin: &Path, runs: usize, args: Args) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for run in 1..=runs.max(1) {
        let r = one_run(bin, &args).await?;
        eprintln!(
            "fanout run {run}: {} subscribers at {}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} of {} deliveries; {:.2} µs node CPU per delivery; {:.1} KiB RSS per idle connection",
            args.subscribers,
            args.rate,
            r["p50_ms"].as_f64().unwrap_or(f64::NAN),
            r["p99_ms"].as_f64().unwrap_or(f64::NAN),
            r["max_ms"].as_f64().unwrap_or(f64::NAN),
            r["deliveries"],
            r["expected_deliveries"],
            r["node_cpu_us_per_delivery"].as_f64().unwrap_or(f64::NAN),
            r["rss_kib_per_idle_connection"].as_f64().unwrap_or(f64::NAN),
        );
        results.push(r);
    }
    let figure = |k: &str| {
        crate::stats::spread(
            &results
                .iter()
                .map(|r| r[k].as_f64().unwrap_or(f64::NAN))
                .collect::<Vec<_>>(),
        )
    };
    let (p50, p99, max, per_conn, cpu) = (
        figure("p50_ms"),
        figure("p99_ms"),
        figure("max_ms"),
        figure("rss_kib_per_idle_connection"),
        figure("node_cpu_us_per_delivery"),
    );
    let out = json!({
        "scenario": "fanout",
        "subscribers": args.subscribers,
        "rate": args.rate,
        "seconds": args.seconds,
        "runs": results.len(),
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max,
        "rss_kib_per_idle_connection": per_conn,
        "node_cpu_us_per_delivery": cpu,
        "each_run": results,
    });
    println!("{out}");
    eprintln!(
        "fanout: {} subscribers at {}/s over {} runs: p99 median {:.1} ms (min {:.1}, max {:.1}); p50 median {:.1} ms; worst delivery {:.1} ms; {:.2} µs node CPU per delivery; {:.1} KiB RSS per idle connection (median)",
        args.subscribers,
        args.rate,
        results.len(),
        p99.median,
        p99.min,
        p99.max,
        p50.median,
        max.max,
        cpu.median,
        per_conn.median,
    );
    Ok(())
}

async fn one_run(bin: &Path, args: &Args) -> anyhow::Result<Value> {
    let node = Node::start(
        bin,
        &[
            // Idle connections are cheap only if their queues are: one backfill of 0.
            ("MESHRELAY_MAX_SUBSCRIPTIONS", "4".to_string()),
            // Room for every subscriber and the publisher.
            (
                "MESHRELAY_MAX_CONNECTIONS",
                (args.subscribers + 16).max(10_000).to_string(),
            ),
        ],
    )
    .await?;
    let addr: SocketAddr = node.base.trim_start_matches("http://").parse()?;
    let url = node.ws_url();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = node.rss_kib().unwrap_or(0);

    // Connect and subscribe everyone; each subscriber then only reads.
    let start = Arc::new(Instant::now());
    let mut readers = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let src = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            2 + (i % args.sources.max(1) as usize) as u8,
        ));
        let mut ws = connect_from(src, addr, &url)
            .await
            .with_context(|| format!("subscriber {i}"))?;
        ws.send(Message::text(
            json!({"op": "subscribe", "sub": "f", "filters": [{"channels": ["fanout"], "limit": 0}]}).to_string(),
        ))
        .await?;
        loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                anyhow::bail!("subscriber {i} closed before eose");
            };
            if serde_json::from_str::<Value>(&t)?["op"] == "eose" {
                break;
            }
        }
        let start = start.clone();
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            // Only what the measurement needs, borrowed from the frame: the
            // readers share the bench's CPU, and a full parse into `Value`
            // of every delivery made their own queueing part of the latency.
            #[derive(serde::Deserialize)]
            struct Frame<'a> {
                op: &'a str,
                #[serde(borrow)]
                payload: Option<Content<'a>>,
            }
            #[derive(serde::Deserialize)]
            struct Content<'a> {
                content: &'a str,
            }
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    let Ok(frame) = serde_json::from_str::<Frame>(&t) else {
                        continue;
                    };
                    let Some(p) = frame.payload.filter(|_| frame.op == "payload") else {
                        continue;
                    };
                    if p.content == "stop" {
                        break;
                    }
                    if let Ok(sent_us) = p.content.parse::<u64>() {
                        let now_us = start.elapsed().as_micros() as u64;
                        latencies.push(now_us.saturating_sub(sent_us) as f64 / 1000.0);
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = node.rss_kib().unwrap_or(0);

    // Publish at a fixed rate; each content is the send time in µs since start.
    let cpu0 = node.cpu_secs().unwrap_or(0.0);
    let key = NodeKey::generate();
    let (mut publisher, _) = tokio_tungstenite::connect_async(&url).await?;
    let total = args.rate as u64 * args.seconds;
    let mut tick =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1))));
    let sign = |seq: u64, content: String| {
        crate::payloads::post(&key, seq, "fanout".into(), vec![], content)
    };
    for seq in 1..=total {
        tick.tick().await;
        let sent_us = start.elapsed().as_micros() as u64;
        let p = sign(seq, sent_us.to_string());
        publisher
            .send(Message::text(
                json!({"op": "publish", "payload": p}).to_string(),
            ))
            .await?;
    }
    // Publishes on one connection are processed concurrently: wait for every
    // acknowledgement, or the stop marker could overtake the last payloads.
    let mut acked = 0;
    while acked < total {
        match tokio::time::timeout(Duration::from_secs(60), publisher.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if serde_json::from_str::<Value>(&t)?["op"] == "ok" {
                    acked += 1;
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => anyhow::bail!("the publisher's acknowledgements stopped at {acked} of {total}"),
        }
    }
    let stop = sign(total + 1, "stop".into());
    publisher
        .send(Message::text(
            json!({"op": "publish", "payload": stop}).to_string(),
        ))
        .await?;

    let mut all = Vec::new();
    let mut short = 0usize;
    for r in readers {
        match tokio::time::timeout(Duration::from_secs(60), r).await {
            Ok(Ok(l)) => {
                if (l.len() as u64) < total {
                    short += 1;
                }
                all.extend(l);
            }
            _ => short += 1,
        }
    }
    // Every delivery was read (or its reader gave up): the node's CPU for
    // this run's publishes, their receipts and their deliveries.
    let cpu = node.cpu_secs().unwrap_or(0.0) - cpu0;
    node.stop().await?;
    all.sort_by(|a, b| a.total_cmp(b));
    let per_conn = (rss_after.saturating_sub(rss_before)) as f64 / args.subscribers.max(1) as f64;
    Ok(json!({
        "deliveries": all.len(),
        "expected_deliveries": total as usize * args.subscribers,
        "subscribers_short": short,
        "p50_ms": quantile(&all, 0.5),
        "p99_ms": quantile(&all, 0.99),
        "max_ms": all.last().copied().unwrap_or(f64::NAN),
        "node_rss_kib_before": rss_before,
        "node_rss_kib_after_connect": rss_after,
        "rss_kib_per_idle_connection": per_conn,
        "node_cpu_secs": cpu,
        "node_cpu_us_per_delivery": cpu * 1e6 / all.len().max(1) as f64,
    }))
}
