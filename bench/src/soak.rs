//! Soak: a bounded run at a fixed publish rate (default about half the measured
//! ingest rate), sampling the node's RSS and the acknowledged and refused counts
//! every `--sample-secs`. Reports the RSS slope over the second half of the run:
//! memory that keeps growing under steady load shows up as a positive slope.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use meshrelay_protocol::NodeKey;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::node::Node;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Payloads per second over all publishers.
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    #[arg(long, default_value_t = 16)]
    publishers: u32,
    /// Length of the run.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    num / den
}

pub async fn run(bin: &Path, args: Args) -> anyhow::Result<()> {
    let node = Node::start(bin, &[]).await?;
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let per = f64::from(args.rate.max(1)) / f64::from(args.publishers.max(1));
    let mut tasks = Vec::new();
    for i in 0..args.publishers.max(1) {
        let (ws, _) = tokio_tungstenite::connect_async(node.ws_url()).await?;
        let (mut tx, mut rx) = ws.split();
        let (accepted, refused) = (accepted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(Message::Text(t))) = rx.next().await {
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                if v["op"] == "ok" {
                    if v["accepted"] == true {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
        tasks.push(tokio::spawn(async move {
            let key = NodeKey::generate();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                seq += 1;
                let p = crate::payloads::post(
                    &key,
                    seq,
                    format!("soak/{i}"),
                    vec![vec!["t".into(), "soak".into()]],
                    format!("soak {seq}"),
                );
                if tx
                    .send(Message::text(
                        json!({"op": "publish", "payload": p}).to_string(),
                    ))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = tx.close().await;
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(args.sample_secs.max(1)));
    while Instant::now() < deadline {
        tick.tick().await;
        let s = json!({
            "t": started.elapsed().as_secs(),
            "rss_kib": node.rss_kib(),
            "rss_anon_kib": node.rss_anon_kib(),
            "accepted": accepted.load(Ordering::Relaxed),
            "refused": refused.load(Ordering::Relaxed),
        });
        eprintln!("soak {s}");
        samples.push(s);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for t in tasks {
        t.abort();
    }
    node.stop().await?;
    let half: Vec<(f64, f64)> = samples
        .iter()
        .skip(samples.len() / 2)
        .filter_map(|s| Some((s["t"].as_f64()?, s["rss_kib"].as_f64()?)))
        .collect();
    let kib_per_min = slope(&half) * 60.0;
    let anon: Vec<(f64, f64)> = samples
        .iter()
        .skip(samples.len() / 2)
        .filter_map(|s| Some((s["t"].as_f64()?, s["rss_anon_kib"].as_f64()?)))
        .collect();
    let anon_kib_per_min = slope(&anon) * 60.0;
    let secs = started.elapsed().as_secs_f64();
    let acc = accepted.load(Ordering::Relaxed);
    println!(
        "{}",
        json!({
            "scenario": "soak",
            "target_rate": args.rate,
            "seconds": args.seconds,
            "accepted": acc,
            "accepted_per_sec": acc as f64 / secs,
            "refused": refused.load(Ordering::Relaxed),
            "rss_slope_kib_per_min_second_half": kib_per_min,
            "rss_anon_slope_kib_per_min_second_half": anon_kib_per_min,
            "samples": samples,
        })
    );
    eprintln!(
        "soak: {:.0} accepted/s of {} asked, {} refused; over the second half RSS {:+.1} KiB/min, of it anonymous {:+.1} KiB/min",
        acc as f64 / secs,
        args.rate,
        refused.load(Ordering::Relaxed),
        kib_per_min,
        anon_kib_per_min
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|x| (f64::from(x), 3.0 * f64::from(x) + 1.0))
            .collect();
        assert!((super::slope(&pts) - 3.0).abs() < 1e-9);
    }
}
