//! Cluster: one node as 1, 2, ... `meshrelay serve` processes on one
//! PostgreSQL schema (PROTOCOL.md 8.1). Publishers and subscribers are spread
//! over the processes round robin, so most deliveries cross processes (the
//! writer's NOTIFY, each listener reading the rows back). Measured per
//! process count, in one sitting: accepted payloads/s and publish-to-ack
//! latency, the time until every subscriber held every payload, deliveries
//! missing or repeated, and the processes' CPU per payload and per delivery.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::ingest::{presign, publisher};
use crate::node::Node;
use crate::stats::{quantile, spread};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The PostgreSQL database; each run gets a fresh schema in it.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database_url: String,
    /// Process counts to compare, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    processes: Vec<usize>,
    /// Concurrent WebSocket publishers, spread over the processes.
    #[arg(long, default_value_t = 8)]
    publishers: usize,
    /// Payloads each publisher sends per run.
    #[arg(long, default_value_t = 1000)]
    per_publisher: usize,
    /// Publishes in flight per publisher.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Live subscribers to every payload, spread over the processes.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
}

pub async fn run(bin: &Path, runs: usize, args: Args) -> anyhow::Result<()> {
    let mut by_count = Vec::new();
    for &n in &args.processes {
        let mut results = Vec::new();
        for run in 1..=runs.max(1) {
            let r = one_run(bin, &args, n, run).await?;
            eprintln!(
                "cluster run {run}, {n} process(es): {:.0} payloads/s, ack p99 {:.1} ms; all {} subscribers complete after {:.2} s; {} missing, {} repeated; {:.0} µs CPU per payload, {:.2} µs per delivery",
                r["payloads_per_sec"].as_f64().unwrap_or(f64::NAN),
                r["ack_p99_ms"].as_f64().unwrap_or(f64::NAN),
                args.subscribers,
                r["full_delivery_secs"].as_f64().unwrap_or(f64::NAN),
                r["deliveries_missing"],
                r["deliveries_repeated"],
                r["cpu_us_per_payload"].as_f64().unwrap_or(f64::NAN),
                r["cpu_us_per_delivery"].as_f64().unwrap_or(f64::NAN),
            );
            results.push(r);
        }
        let figure = |k: &str| {
            spread(
                &results
                    .iter()
                    .map(|r| r[k].as_f64().unwrap_or(f64::NAN))
                    .collect::<Vec<_>>(),
            )
        };
        by_count.push(json!({
            "processes": n,
            "payloads_per_sec": figure("payloads_per_sec"),
            "ack_p99_ms": figure("ack_p99_ms"),
            "full_delivery_secs": figure("full_delivery_secs"),
            "cpu_us_per_payload": figure("cpu_us_per_payload"),
            "cpu_us_per_delivery": figure("cpu_us_per_delivery"),
            "each_run": results,
        }));
    }
    println!(
        "{}",
        json!({
            "scenario": "cluster",
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "publishers": args.publishers,
            "payloads_per_run": args.publishers * args.per_publisher,
            "subscribers": args.subscribers,
            "by_process_count": by_count,
        })
    );
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscriber(url: &str) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.send(Message::text(
        json!({"op": "subscribe", "sub": "c", "filters": [{"channels": ["bench/*"], "limit": 0}]})
            .to_string(),
    ))
    .await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if serde_json::from_str::<Value>(&t)?["op"] == "eose" {
                    return Ok(ws);
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => bail!("no eose"),
        }
    }
}

/// Read until `expected` distinct ids arrived or 60 s of quiet; returns
/// (distinct, repeated, when the last distinct one came).
async fn read_all(mut ws: Ws, expected: usize) -> (usize, usize, Instant) {
    let mut seen = HashSet::with_capacity(expected);
    let mut repeated = 0;
    let mut last = Instant::now();
    while seen.len() < expected {
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let Ok(v) = serde_json::from_str::<Value>(&t) else {
                    continue;
                };
                if v["op"] == "payload" {
                    let id = v["payload"]["id"].as_str().unwrap_or_default().to_string();
                    if seen.insert(id) {
                        last = Instant::now();
                    } else {
                        repeated += 1;
                    }
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    // Repeats after the last one would show up within a moment.
    while let Ok(Some(Ok(Message::Text(t)))) =
        tokio::time::timeout(Duration::from_millis(300), ws.next()).await
    {
        if serde_json::from_str::<Value>(&t).is_ok_and(|v| v["op"] == "payload") {
            repeated += 1;
        }
    }
    (seen.len(), repeated, last)
}

async fn one_run(bin: &Path, args: &Args, n: usize, run: usize) -> anyhow::Result<Value> {
    let schema = format!("meshrelay_bench_{}", hex_suffix());
    let admin = meshrelay_store::Store::connect(&args.database_url)
        .await
        .context("the cluster scenario needs PostgreSQL (--database-url)")?;
    admin
        .execute_raw(&format!("CREATE SCHEMA {schema}"))
        .await?;
    let sep = if args.database_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{}{sep}options=-c%20search_path%3D{schema}",
        args.database_url
    );
    let keys = tempfile::tempdir()?;
    let key_file = keys.path().join("node.key");
    std::fs::write(
        &key_file,
        meshrelay_protocol::NodeKey::generate().seed_hex(),
    )?;
    let vars = [
        ("MESHRELAY_DATABASE_URL", url.clone()),
        ("MESHRELAY_NODE_KEY_FILE", key_file.display().to_string()),
        ("MESHRELAY_PUBLIC_URL", "http://127.0.0.1:9".to_string()),
        ("MESHRELAY_ADMIN_TOKEN", "bench".to_string()),
        ("MESHRELAY_MAX_SUBSCRIPTIONS", "4".to_string()),
        // Every subscriber and publisher connects from 127.0.0.1.
        ("MESHRELAY_MAX_CONNECTIONS_PER_IP", "100000".to_string()),
    ];
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Node::start(bin, &vars).await?);
    }
    let result = measure(args, &nodes, run).await;
    for node in nodes {
        node.stop().await?;
    }
    admin
        .execute_raw(&format!("DROP SCHEMA {schema} CASCADE"))
        .await?;
    admin.close().await;
    result
}

async fn measure(args: &Args, nodes: &[Node], run: usize) -> anyhow::Result<Value> {
    let total = args.publishers * args.per_publisher;
    let mut readers = Vec::new();
    for i in 0..args.subscribers {
        let ws = subscriber(&nodes[i % nodes.len()].ws_url()).await?;
        readers.push(tokio::spawn(read_all(ws, total)));
    }
    let frames = presign(args.publishers, args.per_publisher, 64, run);
    let cpu = |nodes: &[Node]| nodes.iter().filter_map(Node::cpu_secs).sum::<f64>();
    let cpu0 = cpu(nodes);
    let started = Instant::now();
    let tasks: Vec<_> = frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let url = nodes[i % nodes.len()].ws_url();
            tokio::spawn(publisher(url, f, args.window, None))
        })
        .collect();
    let mut acks = Vec::with_capacity(total);
    for t in tasks {
        acks.extend(t.await??);
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    let (mut missing, mut repeated, mut last) = (0usize, 0usize, started);
    for r in readers {
        let (got, rep, at) = r.await?;
        missing += total - got;
        repeated += rep;
        last = last.max(at);
    }
    let cpu_secs = cpu(nodes) - cpu0;
    acks.sort_by(|a, b| a.total_cmp(b));
    let deliveries = total * args.subscribers;
    Ok(json!({
        "payloads_per_sec": total as f64 / ingest_secs,
        "ack_p50_ms": quantile(&acks, 0.5),
        "ack_p99_ms": quantile(&acks, 0.99),
        "full_delivery_secs": (last - started).as_secs_f64(),
        "deliveries_missing": missing,
        "deliveries_repeated": repeated,
        "cpu_secs": cpu_secs,
        "cpu_us_per_payload": cpu_secs * 1e6 / total as f64,
        "cpu_us_per_delivery": cpu_secs * 1e6 / deliveries.max(1) as f64,
    }))
}

fn hex_suffix() -> String {
    let bytes: [u8; 6] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
