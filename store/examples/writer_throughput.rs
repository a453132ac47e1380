//! Writer throughput without the network or signature checks: how many
//! payloads per second the batching writer commits on a backend.
//!
//! cargo run --release -p meshrelay-store --example writer_throughput -- [database_url] [count]

use std::sync::Arc;
use std::time::Instant;

use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};
use meshrelay_store::{Store, Writer, WriterConfig};

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("w.db").display()));
    let count: u64 = args.next().map(|c| c.parse().unwrap()).unwrap_or(100_000);
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let keys: Vec<NodeKey> = (0..32).map(|_| NodeKey::generate()).collect();
    let payloads: Vec<Payload> = (0..count)
        .map(|i| {
            Payload::sign(
                &keys[(i % 32) as usize],
                Draft {
                    seq: i / 32 + 1,
                    prev: (i >= 32).then(|| "ab".repeat(32)),
                    created_at: 1_763_800_000 + i / 1000,
                    kind: "post".into(),
                    channel: format!("bench/{}", i % 32),
                    tags: vec![vec!["t".into(), "bench".into()]],
                    content: "x".repeat(200),
                },
            )
        })
        .collect();
    let (writer, _task) = Writer::spawn(store.clone(), WriterConfig::default());
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(2048));
    let mut tasks = Vec::with_capacity(payloads.len());
    for p in payloads {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let w = writer.clone();
        tasks.push(tokio::spawn(async move {
            let json: Arc<str> = p.to_json().into();
            w.write(Arc::new(p), json, None, 0).await.unwrap();
            drop(permit);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"scenario\":\"writer\",\"backend\":\"{:?}\",\"payloads\":{count},\"seconds\":{secs:.3},\"payloads_per_sec\":{:.0}}}",
        store.backend(),
        count as f64 / secs
    );
}
