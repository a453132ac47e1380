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
use meshrelay_protocol::NodeKey;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::process::Child;

use crate::node::{serve_command, wait_ready};

mod measure;
use measure::{
    coverage, coverage_json, held_share, phase_json, sample_all, total, wait_covered, watch,
    Arrivals, Publisher,
};

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

pub(super) struct MeshNode {
    pub(super) ip: Ipv4Addr,
    pub(super) port: u16,
    pub(super) admin_port: u16,
    pub(super) dir: tempfile::TempDir,
    pub(super) vars: Vec<(String, String)>,
    pub(super) child: Option<Child>,
}

impl MeshNode {
    pub(super) fn base(&self) -> String {
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

    pub(super) fn pid(&self) -> Option<u32> {
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
    use super::measure::series_sum;
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
