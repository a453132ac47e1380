//! Memory a hostile client can make the node hold, measured as the real
//! process's RSS (from /proc) with a generous margin, never a timing.

use std::time::Duration;

use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};

mod common;
use common::*;

fn rss_kib(node: &Node) -> u64 {
    let pid = node.child.id().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A payload near max_payload_bytes: 60 KB of content and 25 tags of 7 KB.
fn heavy(key: &NodeKey, seq: u64) -> Payload {
    let value = "v".repeat(1000);
    let tags = (0..25)
        .map(|i| {
            let mut t = vec![format!("t{i}")];
            t.extend(std::iter::repeat_n(value.clone(), 7));
            t
        })
        .collect();
    let created_at = meshrelay_protocol::clock::now_wire_secs();
    Payload::sign(
        key,
        Draft {
            seq,
            prev: (seq > 1).then(|| "ab".repeat(32)),
            created_at,
            kind: "post".into(),
            channel: "heavy".into(),
            tags,
            content: "c".repeat(60_000),
        },
    )
}

/// 400 payloads of about 240 KB are 96 MB stored. Unbounded, each answer of
/// `limit=500` held all of them twice (rows and serialized answer): eight at
/// once were gigabytes. With max_response_bytes each holds about 4 MiB.
#[tokio::test]
async fn concurrent_large_queries_stay_within_their_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let key = NodeKey::generate();
    for seq in 1..=400 {
        let p = heavy(&key, seq);
        let r = client
            .post(format!("{}/v1/payloads", node.base))
            .body(p.to_json())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(&node);
    let url = format!("{}/v1/payloads?channels=heavy&limit=500", node.base);
    let mut peak = before;
    for _ in 0..3 {
        let queries = (0..8).map(|_| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let text = client.get(&url).send().await.unwrap().text().await.unwrap();
                assert!(
                    text.len() <= 4 * 1024 * 1024,
                    "an answer of {} bytes",
                    text.len()
                );
                text.len()
            }
        });
        let sampler = async {
            let mut high = 0;
            for _ in 0..20 {
                high = high.max(rss_kib(&node));
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            high
        };
        let (sizes, high) = tokio::join!(futures_util::future::join_all(queries), sampler);
        assert!(
            sizes.iter().all(|n| *n > 3_000_000),
            "pages are full: {sizes:?}"
        );
        peak = peak.max(high).max(rss_kib(&node));
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    // Eight answers of 4 MiB held twice are 64 MiB; allow three times that.
    assert!(
        grown_mib < 200,
        "RSS grew {grown_mib} MiB (from {} MiB)",
        before / 1024
    );
    // And the node still answers.
    assert_eq!(node.json("/healthz").await.0, 200);
    node.signal("-TERM");
    assert!(node.wait().await.success());
}
