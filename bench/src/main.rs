//! `meshrelay-bench`: reproducible load scenarios against real `meshrelay`
//! processes with fresh data directories. Each scenario prints one JSON line
//! (machine-readable) and a human summary on standard error.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod blobs;
mod cluster;
mod fanout;
mod forward;
mod ingest;
mod mesh;
mod node;
mod payloads;
mod soak;
mod stats;
mod sync;

#[derive(Debug, Parser)]
#[command(name = "meshrelay-bench", about = "Load scenarios for meshrelay")]
struct Cli {
    /// The `meshrelay` binary to start (default: next to this one).
    #[arg(long, global = true)]
    node_bin: Option<PathBuf>,
    /// Measured runs; the result is their median, with min and max.
    #[arg(long, global = true, default_value_t = 3)]
    runs: usize,
    /// Pin every node process to these CPUs (`taskset -c` list, e.g. `0`);
    /// run the bench itself pinned apart (`taskset -c 1 meshrelay-bench ...`)
    /// so the load generator does not take the node's CPU.
    #[arg(long, global = true)]
    node_cpus: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Concurrent WebSocket publishers of pre-signed payloads: accepted/s and
    /// publish-to-ack latency.
    Ingest(ingest::Args),
    /// Two nodes, A seeded with B: payloads published at A, timed until B stored them.
    Forward(forward::Args),
    /// Idle subscribers on one channel, one publisher at a fixed rate: delivery
    /// latency and memory per idle connection, each run on a fresh node.
    Fanout(fanout::Args),
    /// A bounded run at a fixed rate, sampling RSS and errors. One run: its
    /// result is the trend over its samples, not a figure to take a median of.
    Soak(soak::Args),
    /// Two nodes holding the same large set but for some differences on each
    /// side: one `meshrelay sync` run; round trips, bytes, seconds.
    Sync(sync::Args),
    /// Upload and download of large blobs on the filesystem and on S3
    /// (`--s3s-fs`): MiB/s, node CPU per MiB, node RSS growth during an upload.
    Blobs(blobs::Args),
    /// One node as 1, 2, ... processes on one PostgreSQL schema: ingest and
    /// cross-process fan-out, with CPU per payload and per delivery.
    Cluster(cluster::Args),
    /// N nodes on 127.0.0.x in a random topology, payloads at random nodes:
    /// time to full coverage, amplification, bytes and CPU per payload, for
    /// lazy forwarding and for flooding; then a fifth of the nodes down for a
    /// while. One run per policy (`--runs` is ignored).
    Mesh(mesh::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let node_bin = match cli.node_bin {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("meshrelay"),
    };
    anyhow::ensure!(
        node_bin.exists(),
        "no meshrelay binary at {}; build it (cargo build --release -p meshrelay) or pass --node-bin",
        node_bin.display()
    );
    if let Some(cpus) = cli.node_cpus {
        node::pin_nodes_to(cpus);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.scenario {
            Scenario::Ingest(args) => ingest::run(&node_bin, cli.runs, args).await,
            Scenario::Forward(args) => forward::run(&node_bin, cli.runs, args).await,
            Scenario::Fanout(args) => fanout::run(&node_bin, cli.runs, args).await,
            Scenario::Soak(args) => soak::run(&node_bin, args).await,
            Scenario::Sync(args) => sync::run(&node_bin, cli.runs, args).await,
            Scenario::Blobs(args) => blobs::run(&node_bin, cli.runs, args).await,
            Scenario::Cluster(args) => cluster::run(&node_bin, cli.runs, args).await,
            Scenario::Mesh(args) => mesh::run(&node_bin, args).await,
        }
    })
}
