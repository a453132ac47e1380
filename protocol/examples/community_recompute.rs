//! How long one community's state takes to compute (PROTOCOL.md 9.3) from
//! 100,000 governance payloads: the owner's grants and a chain of moderator
//! grants, invites and joins, in shuffled order. CPU time on one core:
//!
//!     cargo run --release -p meshrelay-protocol --example community_recompute

use std::time::Instant;

use meshrelay_protocol::community::{code_hash, Evaluation};
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};

const N: usize = 100_000;

fn gov(key: &NodeKey, root: &str, at: u64, kind: &str, tags: Vec<Vec<String>>) -> Payload {
    Payload::sign(
        key,
        Draft {
            seq: 1,
            prev: None,
            created_at: at,
            kind: kind.into(),
            channel: root.into(),
            tags,
            content: String::new(),
        },
    )
}

fn main() {
    let owner = NodeKey::generate();
    let root = format!("g/{}/big", owner.public_hex());
    let moderator = NodeKey::generate();
    let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let mut payloads = vec![gov(
        &owner,
        &root,
        1,
        "role",
        vec![t(&["p", &moderator.public_hex(), "moderator"])],
    )];
    let joiners: Vec<NodeKey> = (0..64).map(|_| NodeKey::generate()).collect();
    let hash = code_hash("door");
    let started = Instant::now();
    while payloads.len() < N {
        let i = payloads.len() as u64;
        let p = match i % 4 {
            0 => gov(
                &moderator,
                &root,
                10 + i,
                "invite",
                vec![
                    t(&["code", &hash]),
                    t(&["uses", "10"]),
                    t(&["expires", "4102444800"]),
                ],
            ),
            1 => {
                let invite = payloads[payloads.len() - 1].id.clone();
                gov(
                    &joiners[(i as usize) % 64],
                    &root,
                    10 + i,
                    "join",
                    vec![t(&["invite", &invite]), t(&["code", "door"])],
                )
            }
            2 => gov(
                &moderator,
                &root,
                10 + i,
                "role",
                vec![t(&["p", &NodeKey::generate().public_hex(), "member"])],
            ),
            _ => gov(
                &moderator,
                &root,
                10 + i,
                "moderate",
                vec![t(&["e", &"ab".repeat(32)])],
            ),
        };
        payloads.push(p);
    }
    println!(
        "signed {N} governance payloads in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    payloads.reverse();
    for _ in 0..3 {
        let started = Instant::now();
        let ev = Evaluation::new(&root, &payloads);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "evaluated {N} governance payloads in {:.0} ms ({:.2} µs each); {} keys with a role, {} invites",
            secs * 1e3,
            secs * 1e6 / N as f64,
            ev.roles().len(),
            ev.invites().len()
        );
    }
}
