//! What the mesh scenario measures: the nodes' metrics and CPU (`Sample`),
//! each payload's arrival at each node (`watch`, `coverage`), and the
//! publisher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use meshrelay_protocol::NodeKey;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::MeshNode;
use crate::node::cpu_secs;
use crate::stats::quantile;

/// What the node's metrics and /proc say at one moment.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Sample {
    /// Forwarded inbox items received (new and duplicate; sync excluded).
    received: f64,
    offers_sent: f64,
    wants_received: f64,
    /// HTTP bytes of inbox and ihave requests sent, with their answers.
    forwarding_bytes: f64,
    /// Bytes of sync rounds this node initiated.
    sync_bytes: f64,
    /// Payloads moved by sync (fetched and pushed, as this node counts them).
    sync_items: f64,
    lazy_links: f64,
    cpu: f64,
}

impl std::ops::Sub for Sample {
    type Output = Sample;
    fn sub(self, o: Sample) -> Sample {
        Sample {
            received: self.received - o.received,
            offers_sent: self.offers_sent - o.offers_sent,
            wants_received: self.wants_received - o.wants_received,
            forwarding_bytes: self.forwarding_bytes - o.forwarding_bytes,
            sync_bytes: self.sync_bytes - o.sync_bytes,
            sync_items: self.sync_items - o.sync_items,
            lazy_links: self.lazy_links,
            cpu: self.cpu - o.cpu,
        }
    }
}

impl std::ops::Add for Sample {
    type Output = Sample;
    fn add(self, o: Sample) -> Sample {
        Sample {
            received: self.received + o.received,
            offers_sent: self.offers_sent + o.offers_sent,
            wants_received: self.wants_received + o.wants_received,
            forwarding_bytes: self.forwarding_bytes + o.forwarding_bytes,
            sync_bytes: self.sync_bytes + o.sync_bytes,
            sync_items: self.sync_items + o.sync_items,
            lazy_links: self.lazy_links + o.lazy_links,
            cpu: self.cpu + o.cpu,
        }
    }
}

/// The sum of the values of the series whose line starts with `prefix` and
/// holds `also`.
pub(super) fn series_sum(text: &str, prefix: &str, also: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(also))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(super) async fn sample(http: &reqwest::Client, node: &MeshNode) -> anyhow::Result<Sample> {
    let text = http
        .get(format!("{}/metrics", node.base()))
        .send()
        .await?
        .text()
        .await?;
    Ok(Sample {
        received: series_sum(
            &text,
            "meshrelay_forwarded_items_total{direction=\"received\"",
            "",
        ),
        offers_sent: series_sum(&text, "meshrelay_offered_ids_total{direction=\"sent\"", ""),
        wants_received: series_sum(
            &text,
            "meshrelay_wanted_ids_total{direction=\"received\"",
            "",
        ),
        forwarding_bytes: series_sum(&text, "meshrelay_forwarding_bytes_total{", ""),
        sync_bytes: series_sum(&text, "meshrelay_sync_bytes_total{", "role=\"initiated\""),
        sync_items: series_sum(&text, "meshrelay_sync_items_total{", ""),
        lazy_links: series_sum(&text, "meshrelay_peer_lazy{", ""),
        cpu: node.pid().and_then(cpu_secs).unwrap_or(0.0),
    })
}

/// When each payload id arrived at each node (by index), first time only.
pub(super) type Arrivals = Arc<Mutex<Vec<HashMap<String, Instant>>>>;

/// Subscribe to `mesh` at one node, reconnecting while it is down, and note
/// each payload's first arrival (a backfill after a restart counts as
/// arriving then).
pub(super) async fn watch(url: String, index: usize, arrivals: Arrivals) {
    loop {
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await {
            // A backfill of all a run publishes (warm-up, measured, outage):
            // what reached a restarted node before its subscriber came back
            // must be in it, not cut off by the default limit of 100.
            let sub = json!({"op": "subscribe", "sub": "m", "filters": [{"channels": ["mesh"], "limit": 500}]});
            if ws.send(Message::text(sub.to_string())).await.is_ok() {
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if v["op"] == "payload" {
                        if let Some(id) = v["payload"]["id"].as_str() {
                            arrivals.lock().expect("lock")[index]
                                .entry(id.to_string())
                                .or_insert_with(Instant::now);
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes signed posts in channel `mesh` at random nodes.
pub(super) struct Publisher {
    pub(super) http: reqwest::Client,
    pub(super) keys: Vec<NodeKey>,
    pub(super) seq: u64,
    pub(super) content: String,
}

impl Publisher {
    /// Publish `n` payloads at `rate` per second, each at a random node among
    /// `at`; returns (id, publish time) of each.
    pub(super) async fn publish(
        &mut self,
        nodes: &[MeshNode],
        at: &[usize],
        n: usize,
        rate: f64,
        rng: &mut StdRng,
    ) -> anyhow::Result<Vec<(String, Instant)>> {
        let mut out = Vec::with_capacity(n);
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.01)));
        for _ in 0..n {
            tick.tick().await;
            let i = *at.choose(rng).expect("a live node");
            self.seq += 1;
            let key = &self.keys[i];
            let p = crate::payloads::post(
                key,
                self.seq,
                "mesh".into(),
                Vec::new(),
                self.content.clone(),
            );
            let started = Instant::now();
            let resp = self
                .http
                .post(format!("{}/v1/payloads", nodes[i].base()))
                .header("content-type", "application/json")
                .body(p.to_json())
                .send()
                .await?;
            if !resp.status().is_success() {
                bail!("publishing at node {i}: HTTP {}", resp.status());
            }
            out.push((p.id.clone(), started));
        }
        Ok(out)
    }
}

/// Wait until every node in `at` holds every payload in `ids`, or `limit`.
pub(super) async fn wait_covered(
    arrivals: &Arrivals,
    at: &[usize],
    ids: &[(String, Instant)],
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let done = {
            let a = arrivals.lock().expect("lock");
            ids.iter()
                .all(|(id, _)| at.iter().all(|&n| a[n].contains_key(id)))
        };
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per payload: ms from publish (or from `from`, when later) until the last
/// node in `at` had it; None for a payload some node never got.
pub(super) fn coverage(
    arrivals: &Arrivals,
    at: &[usize],
    ids: &[(String, Instant)],
    from: Option<Instant>,
) -> Vec<Option<f64>> {
    let a = arrivals.lock().expect("lock");
    ids.iter()
        .map(|(id, published)| {
            let start = from.map_or(*published, |f| f.max(*published));
            let last = at
                .iter()
                .map(|&n| a[n].get(id).copied())
                .collect::<Option<Vec<Instant>>>()?
                .into_iter()
                .max()?;
            Some(last.saturating_duration_since(start).as_secs_f64() * 1000.0)
        })
        .collect()
}

/// The share of (payload, node in `at`) pairs held.
pub(super) fn held_share(arrivals: &Arrivals, at: &[usize], ids: &[(String, Instant)]) -> f64 {
    let a = arrivals.lock().expect("lock");
    let held = ids
        .iter()
        .map(|(id, _)| at.iter().filter(|&&n| a[n].contains_key(id)).count())
        .sum::<usize>();
    held as f64 / (ids.len() * at.len()).max(1) as f64
}

pub(super) fn coverage_json(times: &[Option<f64>]) -> Value {
    let mut got: Vec<f64> = times.iter().flatten().copied().collect();
    got.sort_by(f64::total_cmp);
    json!({
        "payloads": times.len(),
        "fully_covered": got.len(),
        "p50_ms": quantile(&got, 0.5),
        "p99_ms": quantile(&got, 0.99),
        "max_ms": got.last().copied().unwrap_or(f64::NAN),
    })
}

/// The figures of one phase from the nodes' summed sample deltas.
pub(super) fn phase_json(d: Sample, payloads: usize, nodes: usize, links: usize) -> Value {
    let per = |x: f64, by: f64| if by > 0.0 { x / by } else { f64::NAN };
    let p = payloads as f64;
    json!({
        "amplification": per(d.received, p * (nodes as f64 - 1.0)),
        "offers_per_payload_per_node": per(d.offers_sent, p * nodes as f64),
        "wants_per_payload_per_node": per(d.wants_received, p * nodes as f64),
        "forwarding_bytes_per_payload_per_node": per(d.forwarding_bytes, p * nodes as f64),
        "sync_bytes_per_node": per(d.sync_bytes, nodes as f64),
        "sync_items": d.sync_items,
        "cpu_ms_per_payload_per_node": per(d.cpu * 1000.0, p * nodes as f64),
        "lazy_links": d.lazy_links,
        "lazy_link_share": per(d.lazy_links, links as f64),
    })
}

pub(super) async fn sample_all(
    http: &reqwest::Client,
    nodes: &[MeshNode],
    at: &[usize],
) -> anyhow::Result<Vec<Sample>> {
    let mut out = vec![Sample::default(); nodes.len()];
    for &i in at {
        out[i] = sample(http, &nodes[i]).await?;
    }
    Ok(out)
}

pub(super) fn total(after: &[Sample], before: &[Sample], at: &[usize]) -> Sample {
    at.iter()
        .map(|&i| after[i] - before[i])
        .fold(Sample::default(), |a, b| a + b)
}
