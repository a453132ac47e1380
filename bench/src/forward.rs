//! Forward: two nodes, A seeded with B. Pre-signed payloads are published to A
//! over WebSocket; measured is how fast they arrive at B through A's outbox
//! (signed inbox batches of up to 100), from the first publish until B has
//! stored them all.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use crate::ingest::{presign, publisher};
use crate::node::Node;
use crate::stats::spread;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent WebSocket publishers at A.
    #[arg(long, default_value_t = 16)]
    publishers: usize,
    /// Payloads per publisher in each run.
    #[arg(long, default_value_t = 2000)]
    per_publisher: usize,
    #[arg(long, default_value_t = 64)]
    window: usize,
    #[arg(long, default_value_t = 200)]
    content_bytes: usize,
    /// B's `inbox_rate` (requests per second from one peer; 0: unlimited).
    /// At the default 50, 100 items a request cap A→B at 5,000 payloads/s.
    #[arg(long)]
    inbox_rate: Option<u32>,
}

/// B's count of payloads stored from peers.
async fn stored_from_peers(node: &Node) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{}/metrics", node.base))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"meshrelay_payloads_ingested_total{via="peer",outcome="stored"} "#)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0))
}

pub async fn run(bin: &Path, runs: usize, args: Args) -> anyhow::Result<()> {
    let private = ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true".to_string());
    let mut b_vars = vec![private.clone()];
    if let Some(rate) = args.inbox_rate {
        b_vars.push(("MESHRELAY_INBOX_RATE", rate.to_string()));
    }
    let b = Node::start(bin, &b_vars).await?;
    let a = Node::start(bin, &[private, ("MESHRELAY_SEED_PEERS", b.base.clone())]).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let peers: serde_json::Value = reqwest::get(format!("{}/v1/federation/peers", b.base))
            .await?
            .json()
            .await?;
        if peers["peers"].as_array().is_some_and(|p| !p.is_empty()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("A did not join B");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rates = Vec::new();
    let mut cpu_us = Vec::new();
    let mut expected = 0u64;
    for run in 0..=runs.max(1) {
        // Run 0 warms up.
        let per = if run == 0 {
            (args.per_publisher / 10).max(10)
        } else {
            args.per_publisher
        };
        let frames = presign(args.publishers, per, args.content_bytes, run);
        let n = (args.publishers * per) as u64;
        expected += n;
        let cpu = || a.cpu_secs().unwrap_or(0.0) + b.cpu_secs().unwrap_or(0.0);
        let cpu0 = cpu();
        let started = Instant::now();
        let tasks: Vec<_> = frames
            .into_iter()
            .map(|f| {
                tokio::spawn(publisher(
                    format!("{}/v1/ws", a.base.replacen("http", "ws", 1)),
                    f,
                    args.window,
                    None,
                ))
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        let published = started.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(300);
        while stored_from_peers(&b).await? < expected {
            if Instant::now() > deadline {
                bail!("B did not receive everything within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        let us = (cpu() - cpu0) * 1e6 / n as f64;
        if run > 0 {
            eprintln!(
                "forward run {run}: {n} payloads A→B in {secs:.2} s = {:.0}/s (publishing to A took {published:.2} s); {us:.0} µs CPU of A and B per payload",
                n as f64 / secs
            );
            rates.push(n as f64 / secs);
            cpu_us.push(us);
        }
    }
    a.stop().await?;
    b.stop().await?;
    let (rate, cpu_us) = (spread(&rates), spread(&cpu_us));
    println!(
        "{}",
        json!({
            "scenario": "forward",
            "publishers": args.publishers,
            "inbox_rate": args.inbox_rate,
            "payloads_per_run": args.publishers * args.per_publisher,
            "runs": runs,
            "payloads_per_sec": rate,
            "nodes_cpu_us_per_payload": cpu_us,
        })
    );
    eprintln!(
        "forward: median {:.0} payloads/s A→B (min {:.0}, max {:.0}), publish to A's store at B included; {:.0} µs CPU of A and B per payload (median)",
        rate.median, rate.min, rate.max, cpu_us.median
    );
    Ok(())
}
