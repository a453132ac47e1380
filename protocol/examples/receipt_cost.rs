//! What a receipt adds to each accepted publish (PROTOCOL.md 4.4): one
//! Ed25519 signature by the node key, beside the payload check the node
//! already does. CPU time per operation, on one core:
//!
//!     cargo run --release -p meshrelay-protocol --example receipt_cost

use std::time::Instant;

use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::receipt::Receipt;
use meshrelay_protocol::{Limits, NodeKey, Payload};

const N: u32 = 20_000;

fn per_op(label: &str, mut f: impl FnMut(u32)) {
    for i in 0..N / 10 {
        f(i); // warm up
    }
    let start = Instant::now();
    for i in 0..N {
        f(i);
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(N);
    println!("{label:<40} {us:>7.1} µs");
}

fn main() {
    let node = NodeKey::generate();
    let author = NodeKey::generate();
    let payload = Payload::sign(
        &author,
        Draft {
            seq: 1,
            prev: None,
            created_at: 1_763_800_000,
            kind: "post".into(),
            channel: "general".into(),
            tags: vec![vec!["t".into(), "rust".into()]],
            content: "x".repeat(200),
        },
    );
    let json = payload.to_json();
    per_op("check a payload (fields, id, signature)", |_| {
        std::hint::black_box(Payload::from_json(&json, &Limits::default(), 1_763_800_000).unwrap());
    });
    per_op("sign a receipt", |i| {
        std::hint::black_box(Receipt::sign(&node, &payload.id, u64::from(i)).unwrap());
    });
    let receipt = Receipt::sign(&node, &payload.id, 1).unwrap();
    per_op("verify a receipt (the client's side)", |_| {
        receipt.verify().unwrap();
    });
}
