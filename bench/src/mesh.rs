//! Mesh: N real node processes, node i on 127.0.0.(10 + i), in a random
//! connected topology of a chosen mean degree (each node seeded with its
//! neighbours started before it). Payloads are published at random nodes at
//! a fixed rate; a WebSocket subscriber on every node notes when each payload
//! arrives there. Reported per forwarding policy (`lazy`, `flood`), each on a
//! fresh mesh of the same topology: time until every node holds a payload,
//! amplification (forwarded inbox items received per payload per other
//! node, from the nodes' metrics; sync pushes excluded), HTTP bytes of
//! forwarding per node and payload, node CPU per payload per node; then the
//! same while a fifth of the nodes is killed (SIGKILL) for `outage_secs` and
//! after they return, until every node holds every payload again.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use meshrelay_protocol::NodeKey;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Message;

use crate::node::{cpu_secs, serve_command, wait_ready};
use crate::stats::quantile;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Node processes.
    #[arg(long, default_value_t = 25)]
    nodes: usize,
    /// Mean number of peers per node (the topology is connected whatever it is).
    #[arg(long, default_value_t = 4)]
    degree: usize,
    /// Payloads measured, after the warm-up ones.
    #[arg(long, default_value_t = 200)]
    payloads: usize,
    /// Payloads published first and not measured (the lazy policy judges
    /// each link over its first few dozen pushes, and settles on a sparse
    /// overlay in about 30 s at 5 payloads/s).
    #[arg(long, default_value_t = 150)]
    warmup: usize,
    /// Payloads per second, each at a random node (25 nodes on 2 cores
    /// flooding at 20/s saturate them).
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// `lazy`, `flood` or `both` (flood first, then lazy on a fresh mesh).
    #[arg(long, default_value = "both")]
    policy: String,
    /// Seconds a fifth of the nodes is down; 0 skips the outage.
    #[arg(long, default_value_t = 60)]
    outage_secs: u64,
    /// Payloads published (at the live nodes) while they are down.
    #[arg(long, default_value_t = 100)]
    outage_payloads: usize,
    /// The nodes' sync interval in seconds (a divisor of 60, or 60).
    #[arg(long, default_value_t = 60)]
    sync_secs: u64,
    /// Seed of the topology, the publishing nodes and the nodes killed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 200)]
    content_bytes: usize,
}

/// A random connected graph: a random tree (node j joins a random earlier
/// node), then random extra edges until the mean degree is reached.
pub fn topology(n: usize, degree: usize, rng: &mut StdRng) -> Vec<(usize, usize)> {
    let mut edges = std::collections::BTreeSet::new();
    for j in 1..n {
        edges.insert((rng.gen_range(0..j), j));
    }
    let want = (n * degree / 2).min(n * (n - 1) / 2);
    while edges.len() < want {
        let (a, b) = (rng.gen_range(0..n), rng.gen_range(0..n));
        if a != b {
            edges.insert((a.min(b), a.max(b)));
        }
    }
    edges.into_iter().collect()
}

struct MeshNode {
    ip: Ipv4Addr,
    port: u16,
    admin_port: u16,
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
    child: Option<Child>,
}

impl MeshNode {
    fn base(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    async fn start(&mut self, bin: &Path) -> anyhow::Result<()> {
        let listen = format!("{}:{}", self.ip, self.port);
        let admin = format!("{}:{}", self.ip, self.admin_port);
        let mut cmd = serve_command(bin, self.dir.path(), &listen, &admin);
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().context("starting a mesh node")?);
        wait_ready(&self.base()).await
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

/// Outbox items pending at these nodes (their admin API, with the token
/// each generated into its data directory).
async fn outbox_pending(
    http: &reqwest::Client,
    nodes: &[MeshNode],
    at: &[usize],
) -> anyhow::Result<i64> {
    let mut total = 0;
    for &i in at {
        let n = &nodes[i];
        let token = std::fs::read_to_string(n.dir.path().join("data/admin.token"))?;
        let stats: Value = http
            .get(format!("http://{}:{}/admin/v1/stats", n.ip, n.admin_port))
            .bearer_auth(token.trim())
            .send()
            .await?
            .json()
            .await?;
        total += stats["outbox"]["pending"].as_i64().unwrap_or(0);
    }
    Ok(total)
}

fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// What the node's metrics and /proc say at one moment.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
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
fn series_sum(text: &str, prefix: &str, also: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(also))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn sample(http: &reqwest::Client, node: &MeshNode) -> anyhow::Result<Sample> {
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
type Arrivals = Arc<Mutex<Vec<HashMap<String, Instant>>>>;

/// Subscribe to `mesh` at one node, reconnecting while it is down, and note
/// each payload's first arrival (a backfill after a restart counts as
/// arriving then).
async fn watch(url: String, index: usize, arrivals: Arrivals) {
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
struct Publisher {
    http: reqwest::Client,
    keys: Vec<NodeKey>,
    seq: u64,
    content: String,
}

impl Publisher {
    /// Publish `n` payloads at `rate` per second, each at a random node among
    /// `at`; returns (id, publish time) of each.
    async fn publish(
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
async fn wait_covered(
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
fn coverage(
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
fn held_share(arrivals: &Arrivals, at: &[usize], ids: &[(String, Instant)]) -> f64 {
    let a = arrivals.lock().expect("lock");
    let held = ids
        .iter()
        .map(|(id, _)| at.iter().filter(|&&n| a[n].contains_key(id)).count())
        .sum::<usize>();
    held as f64 / (ids.len() * at.len()).max(1) as f64
}

fn coverage_json(times: &[Option<f64>]) -> Value {
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
fn phase_json(d: Sample, payloads: usize, nodes: usize, links: usize) -> Value {
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

async fn sample_all(
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

fn total(after: &[Sample], before: &[Sample], at: &[usize]) -> Sample {
    at.iter()
        .map(|&i| after[i] - before[i])
        .fold(Sample::default(), |a, b| a + b)
}

async fn one_policy(bin: &Path, args: &Args, lazy: bool) -> anyhow::Result<Value> {
    let n = args.nodes;
    anyhow::ensure!((2..=240).contains(&n), "--nodes must be 2..=240");
    anyhow::ensure!(
        args.sync_secs > 0 && (args.sync_secs == 60 || 60 % args.sync_secs == 0),
        "--sync-secs must divide 60"
    );
    let mut rng = StdRng::seed_from_u64(args.seed);
    let edges = topology(n, args.degree, &mut rng);
    let schedule = if args.sync_secs == 60 {
        "0 * * * * *".to_string()
    } else {
        format!("*/{} * * * * *", args.sync_secs)
    };
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let ip = Ipv4Addr::new(127, 0, 0, 10 + i as u8);
        let (port, admin_port) = (free_port(ip)?, free_port(ip)?);
        let seeds: Vec<String> = edges
            .iter()
            .filter(|(_, b)| *b == i)
            .map(|(a, _)| nodes.get(*a).map(MeshNode::base).expect("earlier node"))
            .collect();
        let vars = vec![
            ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true".to_string()),
            ("MESHRELAY_PUBLIC_URL", format!("http://{ip}:{port}")),
            ("MESHRELAY_SEED_PEERS", seeds.join(",")),
            ("MESHRELAY_FORWARD_LAZILY", lazy.to_string()),
            ("MESHRELAY_SYNC_SCHEDULE", schedule.clone()),
            ("MESHRELAY_INBOX_RATE", "0".to_string()),
            // Every node's requests leave from 127.0.0.1, so per-address
            // limits would count the whole mesh as one stranger.
            ("MESHRELAY_ANNOUNCE_RATE", "0".to_string()),
        ];
        let mut node = MeshNode {
            ip,
            port,
            admin_port,
            dir: tempfile::tempdir()?,
            vars: vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            child: None,
        };
        node.start(bin).await?;
        nodes.push(node);
    }
    let http = reqwest::Client::new();
    // Every peering recorded on both sides.
    let mut degree = vec![0usize; n];
    for (a, b) in &edges {
        degree[*a] += 1;
        degree[*b] += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, node) in nodes.iter().enumerate() {
        loop {
            let peers: Value = http
                .get(format!("{}/v1/federation/peers", node.base()))
                .send()
                .await?
                .json()
                .await?;
            if peers["peers"].as_array().map_or(0, Vec::len) >= degree[i] {
                break;
            }
            if Instant::now() > deadline {
                bail!("node {i} has not recorded its {} peers", degree[i]);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let arrivals: Arrivals = Arc::new(Mutex::new(vec![HashMap::new(); n]));
    let watchers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let url = format!("ws://{}:{}/v1/ws", node.ip, node.port);
            tokio::spawn(watch(url, i, arrivals.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut publisher = Publisher {
        http: http.clone(),
        keys: (0..n).map(|_| NodeKey::generate()).collect(),
        seq: 0,
        content: "m".repeat(args.content_bytes),
    };
    let all: Vec<usize> = (0..n).collect();
    let links = edges.len() * 2;

    let warm = publisher
        .publish(&nodes, &all, args.warmup, args.rate, &mut rng)
        .await?;
    wait_covered(&arrivals, &all, &warm, Duration::from_secs(60)).await;
    let before = sample_all(&http, &nodes, &all).await?;
    let ids = publisher
        .publish(&nodes, &all, args.payloads, args.rate, &mut rng)
        .await?;
    wait_covered(&arrivals, &all, &ids, Duration::from_secs(120)).await;
    let after = sample_all(&http, &nodes, &all).await?;
    let mut steady = phase_json(total(&after, &before, &all), ids.len(), n, links);
    steady["outbox_pending_at_end"] = json!(outbox_pending(&http, &nodes, &all).await?);
    steady["coverage"] = coverage_json(&coverage(&arrivals, &all, &ids, None));

    let mut result = json!({
        "policy": if lazy { "lazy" } else { "flood" },
        "nodes": n,
        "edges": edges.len(),
        "mean_degree": links as f64 / n as f64,
        "steady": steady,
    });
    if args.outage_secs > 0 {
        let mut down = all.clone();
        down.shuffle(&mut rng);
        down.truncate((n / 5).max(1));
        down.sort_unstable();
        let up: Vec<usize> = all.iter().copied().filter(|i| !down.contains(i)).collect();
        let before = sample_all(&http, &nodes, &all).await?;
        for &i in &down {
            nodes[i].kill().await;
        }
        let outage_started = Instant::now();
        let rate = args.outage_payloads as f64 / (args.outage_secs as f64 * 0.9);
        let ids = publisher
            .publish(&nodes, &up, args.outage_payloads, rate, &mut rng)
            .await?;
        tokio::time::sleep(
            Duration::from_secs(args.outage_secs).saturating_sub(outage_started.elapsed()),
        )
        .await;
        let live_coverage = coverage(&arrivals, &up, &ids, None);
        let live_held = held_share(&arrivals, &up, &ids);
        let at_return = sample_all(&http, &nodes, &up).await?;
        let queued = outbox_pending(&http, &nodes, &up).await?;
        for &i in &down {
            nodes[i].start(bin).await?;
        }
        let returned = Instant::now();
        let restarted = sample_all(&http, &nodes, &down).await?;
        wait_covered(
            &arrivals,
            &all,
            &ids,
            Duration::from_secs(args.sync_secs * 3 + 30),
        )
        .await;
        let end = sample_all(&http, &nodes, &all).await?;
        // The killed nodes' counters started over with them.
        let d = total(&at_return, &before, &up)
            + total(&end, &at_return, &up)
            + total(&end, &restarted, &down);
        let mut outage = phase_json(d, ids.len(), n, links);
        outage["down"] = json!(down);
        outage["live_nodes_coverage"] = coverage_json(&live_coverage);
        // The killed nodes may have cut the live ones apart: how much of
        // what was published the live nodes held when the others returned.
        outage["live_nodes_held_share"] = json!(live_held);
        outage["after_return"] = coverage_json(&coverage(&arrivals, &all, &ids, Some(returned)));
        outage["sync_secs"] = json!(args.sync_secs);
        outage["outbox_pending_at_return"] = json!(queued);
        result["outage"] = outage;
    }
    for w in watchers {
        w.abort();
    }
    for node in &mut nodes {
        node.kill().await;
    }
    Ok(result)
}

pub async fn run(bin: &Path, args: Args) -> anyhow::Result<()> {
    let policies: &[bool] = match args.policy.as_str() {
        "lazy" => &[true],
        "flood" => &[false],
        "both" => &[false, true],
        other => bail!("--policy is lazy, flood or both, not {other:?}"),
    };
    let mut results = Vec::new();
    for &lazy in policies {
        let r = one_policy(bin, &args, lazy).await?;
        let s = &r["steady"];
        eprintln!(
            "mesh {} nodes, {} edges, {}: full coverage p50 {:.0} ms, p99 {:.0} ms ({} of {} payloads); amplification {:.2}; {:.0} forwarding bytes and {:.3} ms CPU per payload per node; {} of {} links lazy",
            r["nodes"], r["edges"], r["policy"].as_str().unwrap_or(""),
            s["coverage"]["p50_ms"].as_f64().unwrap_or(f64::NAN),
            s["coverage"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
            s["coverage"]["fully_covered"], s["coverage"]["payloads"],
            s["amplification"].as_f64().unwrap_or(f64::NAN),
            s["forwarding_bytes_per_payload_per_node"].as_f64().unwrap_or(f64::NAN),
            s["cpu_ms_per_payload_per_node"].as_f64().unwrap_or(f64::NAN),
            s["lazy_links"], r["edges"].as_u64().unwrap_or(0) * 2,
        );
        if let Some(o) = r.get("outage") {
            eprintln!(
                "  outage of {}: the live nodes held {:.1} % of what was published meanwhile; after return every node held all {} payloads in {:.1} s (p50 {:.1} s; {} of them fully covered); amplification {:.2}; sync moved {} payloads",
                o["down"], o["live_nodes_held_share"].as_f64().unwrap_or(f64::NAN) * 100.0,
                o["after_return"]["payloads"],
                o["after_return"]["max_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0,
                o["after_return"]["p50_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0,
                o["after_return"]["fully_covered"],
                o["amplification"].as_f64().unwrap_or(f64::NAN),
                o["sync_items"],
            );
        }
        results.push(r);
    }
    println!(
        "{}",
        json!({"scenario": "mesh", "degree": args.degree, "payloads": args.payloads, "warmup": args.warmup, "rate": args.rate, "seed": args.seed, "results": results})
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topology_is_connected_with_the_mean_degree_asked_for() {
        for (n, d) in [(25, 4), (10, 3), (50, 6), (3, 8)] {
            let edges = topology(n, d, &mut StdRng::seed_from_u64(7));
            assert_eq!(edges.len(), (n * d / 2).min(n * (n - 1) / 2));
            // Every node reaches node 0.
            let mut reached = vec![false; n];
            reached[0] = true;
            for _ in 0..n {
                for &(a, b) in &edges {
                    if reached[a] || reached[b] {
                        reached[a] = true;
                        reached[b] = true;
                    }
                }
            }
            assert!(reached.iter().all(|r| *r), "{n} nodes, degree {d}");
            assert!(edges.iter().all(|(a, b)| a < b));
        }
    }

    #[test]
    fn series_are_summed_by_prefix_and_label() {
        let text = "meshrelay_sync_bytes_total{peer=\"a\",role=\"initiated\"} 10\n\
                    meshrelay_sync_bytes_total{peer=\"b\",role=\"served\"} 7\n\
                    meshrelay_sync_bytes_total{peer=\"c\",role=\"initiated\"} 5\n";
        assert_eq!(
            series_sum(text, "meshrelay_sync_bytes_total{", "role=\"initiated\""),
            15.0
        );
        assert_eq!(series_sum(text, "meshrelay_sync_bytes_total{", ""), 22.0);
        assert_eq!(series_sum(text, "meshrelay_nothing", ""), 0.0);
    }
}
