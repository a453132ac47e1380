//! `sync`: two nodes hold the same `--items` payloads except `--diff` on each
//! side, either clustered in time (what an outage leaves) or scattered at
//! random over the sync window. One `meshrelay sync --peer` run from B to A is
//! timed, with its round trips and bytes.
//!
//! The common set is signed and written once, straight into a SQLite database
//! through the store's writer, then copied for each run: building a million
//! payloads through the API would take longer than everything measured here.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};
use meshrelay_store::{Store, Writer, WriterConfig};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::node::Node;
use crate::stats::spread;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Payloads both nodes hold.
    #[arg(long, default_value_t = 1_000_000)]
    items: u64,
    /// Payloads only one node holds, on each side.
    #[arg(long, default_value_t = 1_000)]
    diff: u64,
    /// `clustered`, `scattered`, or `both`.
    #[arg(long, default_value = "both")]
    shape: String,
    /// Keep the common set's database here and reuse it when it exists (it
    /// takes minutes to build a million payloads).
    #[arg(long)]
    base_db: Option<PathBuf>,
    /// `sync_max_items` of both nodes and the command (default: the node's).
    #[arg(long)]
    sync_max_items: Option<u64>,
}

const WINDOW: u64 = 6 * 86_400;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sign `n` small payloads by a few authors, `created_at` from `times`, on all cores.
fn sign_many(
    n: u64,
    seed: u64,
    time_of: impl Fn(u64, &mut rand::rngs::StdRng) -> u64 + Sync,
) -> Vec<Payload> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let per = n.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let time_of = &time_of;
                s.spawn(move || {
                    let key = NodeKey::generate();
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1000 + t);
                    let (lo, hi) = (t * per, ((t + 1) * per).min(n));
                    (lo..hi)
                        .map(|i| {
                            Payload::sign(
                                &key,
                                Draft {
                                    seq: i + 1,
                                    prev: (i > 0).then(|| "ab".repeat(32)),
                                    created_at: time_of(i, &mut rng),
                                    kind: "post".into(),
                                    channel: "bench/sync".into(),
                                    tags: vec![],
                                    content: format!("{seed}/{i}"),
                                },
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    })
}

async fn write_all(db: &Path, payloads: Vec<Payload>) -> anyhow::Result<()> {
    let store = Store::connect(&format!("sqlite://{}", db.display())).await?;
    store.migrate().await?;
    let (writer, task) = Writer::spawn(store.clone(), WriterConfig::default());
    let now = now() as i64;
    for chunk in payloads.chunks(5_000) {
        let writes = chunk.iter().map(|p| {
            writer.write_and_forward(
                Arc::new(p.clone()),
                p.to_json().into(),
                None,
                now,
                Vec::new(),
            )
        });
        for r in futures_util::future::join_all(writes).await {
            r?;
        }
    }
    task.close().await;
    drop(writer);
    store.optimize().await?;
    // Everything into the main file, so copying it copies the whole database.
    store.execute_raw("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    store.close().await;
    Ok(())
}

fn copy_db(from: &Path, to_dir: &Path) -> anyhow::Result<PathBuf> {
    let data = to_dir.join("data");
    std::fs::create_dir_all(&data)?;
    let to = data.join("meshrelay.db");
    std::fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
    Ok(to)
}

struct Measured {
    report: Value,
    wall: f64,
}

async fn one_run(
    bin: &Path,
    base_db: &Path,
    shape: &str,
    args: &Args,
    run: u64,
) -> anyhow::Result<Measured> {
    let diff = args.diff;
    let t0 = now();
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    for (dir, side) in [(&dir_a, 1u64), (&dir_b, 2u64)] {
        let db = copy_db(base_db, dir.path())?;
        // Clustered: all of a side's differences within ten minutes, two days
        // ago. Scattered: anywhere in the window.
        let extra = match shape {
            "clustered" => sign_many(diff, run * 10 + side, |_, rng| {
                t0 - 2 * 86_400 + rng.gen_range(0..600)
            }),
            _ => sign_many(diff, run * 10 + side, |_, rng| {
                t0 - rng.gen_range(60..WINDOW)
            }),
        };
        write_all(&db, extra).await?;
    }
    let mut vars = vec![("MESHRELAY_ALLOW_PRIVATE_PEERS", "true".to_string())];
    if let Some(n) = args.sync_max_items {
        vars.push(("MESHRELAY_SYNC_MAX_ITEMS", n.to_string()));
    }
    let a = Node::start_in(bin, dir_a, &vars).await?;
    let mut b_vars = vars.clone();
    b_vars.push(("MESHRELAY_SEED_PEERS", a.base.clone()));
    let b = Node::start_in(bin, dir_b, &b_vars).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let peers: Value = reqwest::get(format!("{}/v1/federation/peers", a.base))
            .await?
            .json()
            .await?;
        if peers["peers"].as_array().is_some_and(|p| !p.is_empty()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("B did not join A");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    // B reconciles, asked through its admin API (its token is in its data_dir).
    let out = tokio::process::Command::new(bin)
        .args(["sync", "--peer", &a.base, "--json"])
        .current_dir(b.dir())
        .env("MESHRELAY_DATA_DIR", b.dir().join("data"))
        .env("MESHRELAY_ADMIN_LISTEN", &b.admin)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .await?;
    let wall = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("meshrelay sync failed");
    }
    let report: Value = serde_json::from_slice(&out.stdout).context("sync report")?;
    a.stop().await?;
    b.stop().await?;
    Ok(Measured { report, wall })
}

pub async fn run(bin: &Path, runs: usize, args: Args) -> anyhow::Result<()> {
    let shapes: Vec<&str> = match args.shape.as_str() {
        "both" => vec!["clustered", "scattered"],
        "clustered" => vec!["clustered"],
        "scattered" => vec!["scattered"],
        other => bail!("--shape {other:?}: clustered, scattered or both"),
    };
    let base = tempfile::tempdir()?;
    let base_db = match &args.base_db {
        Some(p) => p.clone(),
        None => base.path().join("base.db"),
    };
    if base_db.exists() {
        let store = Store::connect(&format!("sqlite://{}", base_db.display())).await?;
        let n = store.count_payloads().await?;
        store.close().await;
        if n as u64 != args.items {
            bail!(
                "{} holds {n} payloads, not --items {}",
                base_db.display(),
                args.items
            );
        }
        eprintln!("sync: reusing the common set in {}", base_db.display());
    } else {
        let t = Instant::now();
        let t0 = now();
        let common = sign_many(args.items, 0, |_, rng| t0 - rng.gen_range(3_600..WINDOW));
        write_all(&base_db, common).await?;
        eprintln!(
            "sync: built the common set of {} payloads in {:.1} s ({} MB)",
            args.items,
            t.elapsed().as_secs_f64(),
            std::fs::metadata(&base_db)?.len() / 1_000_000
        );
    }
    for shape in shapes {
        let mut measured = Vec::new();
        // Run 0 warms the page cache and the binary.
        for run in 0..=runs.max(1) as u64 {
            let m = one_run(bin, &base_db, shape, &args, run).await?;
            let r = &m.report;
            if r["need"] != json!(args.diff) || r["have"] != json!(args.diff) {
                bail!("sync found the wrong differences: {r}");
            }
            if run > 0 {
                eprintln!(
                    "sync {shape} run {run}: {:.2} s in the sync ({:.2} s with the command's start), \
                     {} round trips in {} sessions, {:.1} KB reconciling on the wire \
                     ({:.1} KB of negentropy messages), {:.1} KB moving payloads; \
                     of the time: loading {:.2} s, fetching {:.2} s, pushing {:.2} s",
                    r["seconds"].as_f64().unwrap_or(f64::NAN),
                    m.wall,
                    r["rounds"],
                    r["sessions"],
                    r["sync_bytes"].as_f64().unwrap_or(0.0) / 1000.0,
                    r["msg_bytes"].as_f64().unwrap_or(0.0) / 1000.0,
                    r["transfer_bytes"].as_f64().unwrap_or(0.0) / 1000.0,
                    r["load_seconds"].as_f64().unwrap_or(f64::NAN),
                    r["fetch_seconds"].as_f64().unwrap_or(f64::NAN),
                    r["push_seconds"].as_f64().unwrap_or(f64::NAN),
                );
                measured.push(m);
            }
        }
        let pick =
            |f: &dyn Fn(&Measured) -> f64| spread(&measured.iter().map(f).collect::<Vec<_>>());
        let seconds = pick(&|m| m.report["seconds"].as_f64().unwrap_or(f64::NAN));
        let wall = pick(&|m| m.wall);
        let rounds = pick(&|m| m.report["rounds"].as_f64().unwrap_or(f64::NAN));
        let sync_bytes = pick(&|m| m.report["sync_bytes"].as_f64().unwrap_or(f64::NAN));
        let transfer = pick(&|m| m.report["transfer_bytes"].as_f64().unwrap_or(f64::NAN));
        let msg_bytes = pick(&|m| m.report["msg_bytes"].as_f64().unwrap_or(f64::NAN));
        let sessions = pick(&|m| m.report["sessions"].as_f64().unwrap_or(f64::NAN));
        println!(
            "{}",
            json!({
                "scenario": "sync",
                "shape": shape,
                "items": args.items,
                "diff_per_side": args.diff,
                "runs": runs,
                "seconds": seconds,
                "seconds_with_command_start": wall,
                "round_trips": rounds,
                "sessions": sessions,
                "sync_bytes": sync_bytes,
                "msg_bytes": msg_bytes,
                "transfer_bytes": transfer,
                "sync_max_items": args.sync_max_items,
            })
        );
        let limit = match shape {
            "clustered" => 100_000 + 64 * 2 * args.diff,
            _ => 2_000_000,
        };
        eprintln!(
            "sync {shape}: {} + {} differences over {} payloads: median {:.2} s, {} round trips, \
             {:.1} KB reconciling on the wire, {:.1} KB of negentropy messages (target {:.1} KB), \
             {:.1} KB moving payloads",
            args.diff,
            args.diff,
            args.items,
            seconds.median,
            rounds.median,
            sync_bytes.median / 1000.0,
            msg_bytes.median / 1000.0,
            limit as f64 / 1000.0,
            transfer.median / 1000.0,
        );
    }
    Ok(())
}
