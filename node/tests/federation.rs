//! Federation between real `meshrelay` processes on loopback (PROTOCOL.md 5).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::*;

/// Settings every node of these tests shares: loopback peers allowed, fast retries.
const FED: [(&str, &str); 3] = [
    ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true"),
    ("MESHRELAY_RETRY_MIN_SECS", "1"),
    ("MESHRELAY_RETRY_MAX_SECS", "2"),
];

fn vars<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    FED.iter().copied().chain(extra.iter().copied()).collect()
}

fn post(key: &NodeKey, seq: u64, channel: &str, content: &str) -> Payload {
    Payload::sign(
        key,
        Draft {
            seq,
            prev: (seq > 1).then(|| "ab".repeat(32)),
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            kind: "post".into(),
            channel: channel.into(),
            tags: vec![],
            content: content.into(),
        },
    )
}

async fn publish(node: &Node, p: &Payload) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/payloads", node.base))
        .body(p.to_json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

async fn peer_count(node: &Node) -> usize {
    node.json("/v1/federation/peers").await.1["peers"]
        .as_array()
        .map_or(0, Vec::len)
}

async fn subscriber(
    node: &Node,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}/v1/ws", node.base.replace("http", "ws")))
            .await
            .unwrap();
    ws.send(Message::text(
        json!({"op": "subscribe", "sub": "all", "filters": [{"limit": 0}]}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("no eose")
        };
        if serde_json::from_str::<Value>(&t).unwrap()["op"] == "eose" {
            return ws;
        }
    }
}

/// Payload ids until `n` arrived, or until `quiet_ms` pass without a frame.
async fn received_at_least(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    n: usize,
    quiet_ms: u64,
) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < n {
        match tokio::time::timeout(Duration::from_millis(quiet_ms), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["op"] == "payload" {
                    ids.push(v["payload"]["id"].as_str().unwrap().to_string());
                }
            }
            _ => panic!("the subscriber saw only {} of {n}", ids.len()),
        }
    }
    ids
}

/// Payload ids delivered to a subscriber within `ms` of quiet.
async fn received(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    ms: u64,
) -> Vec<String> {
    let mut ids = Vec::new();
    while let Ok(Some(Ok(Message::Text(t)))) =
        tokio::time::timeout(Duration::from_millis(ms), ws.next()).await
    {
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["op"] == "payload" {
            ids.push(v["payload"]["id"].as_str().unwrap().to_string());
        }
    }
    ids
}

#[tokio::test]
async fn three_nodes_forward_what_each_peer_asked_for_once() {
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let b = Node::start(db.path(), &vars(&[])).await;
    let a = Node::start(da.path(), &vars(&[("MESHRELAY_SEED_PEERS", &b.base)])).await;
    let c = Node::start(
        dc.path(),
        &vars(&[
            ("MESHRELAY_SEED_PEERS", &b.base),
            ("MESHRELAY_SUBSCRIBE", r#"[{"channels":["plural/*"]}]"#),
        ]),
    )
    .await;
    eventually("A and C to join B", 20, async || {
        peer_count(&b).await == 2 && peer_count(&a).await == 1 && peer_count(&c).await == 1
    })
    .await;

    let mut on_b = subscriber(&b).await;
    let mut on_c = subscriber(&c).await;
    let key = NodeKey::generate();
    let wanted = post(&key, 1, "plural/updates", "for everyone");
    let unwanted = post(&key, 2, "general", "not for C");
    publish(&a, &wanted).await;
    publish(&a, &unwanted).await;

    let mut got_b = received(&mut on_b, 3000).await;
    got_b.sort();
    let mut want_b = vec![wanted.id.clone(), unwanted.id.clone()];
    want_b.sort();
    assert_eq!(got_b, want_b, "B gets both, once each");
    assert_eq!(
        received(&mut on_c, 1000).await,
        vec![wanted.id.clone()],
        "C gets only plural/*, once"
    );
    assert_eq!(
        c.json(&format!("/v1/payloads/{}", unwanted.id)).await.0,
        404
    );
    // C got it from B (hops 2) and had nobody else to send it to; nothing came back to A.
    assert_eq!(
        metric(&a, FROM_PEER_STORED).await + metric(&a, FROM_PEER_DUP).await,
        0,
        "a payload looped back to A"
    );
    assert_eq!(
        (
            metric(&b, FROM_PEER_STORED).await,
            metric(&b, FROM_PEER_DUP).await
        ),
        (2, 0)
    );
    assert_eq!(
        (
            metric(&c, FROM_PEER_STORED).await,
            metric(&c, FROM_PEER_DUP).await
        ),
        (1, 0)
    );
    for n in [a, b, c] {
        n.signal("-TERM");
        assert!(n.wait().await.success());
    }
}

/// Count of B's stored payloads in a channel, paging through the query API.
async fn stored_in(node: &Node, channel: &str) -> usize {
    stored_ids(node, channel).await.len()
}

/// The ids of the visible payloads `node` holds in `channel`, page by page.
async fn stored_ids(node: &Node, channel: &str) -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = node
            .json(&format!(
                "/v1/payloads?channels={channel}&limit=500{cursor}"
            ))
            .await;
        for p in page["payloads"].as_array().into_iter().flatten() {
            ids.insert(p["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn a_peer_outage_and_a_kill_9_of_the_sender_lose_nothing() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = Node::start(db.path(), &vars(&[])).await;
    let b_port = b.port;
    let a = Node::start(da.path(), &vars(&[("MESHRELAY_SEED_PEERS", &b.base)])).await;
    let a_port = a.port;
    let seeds = b.base.clone();
    eventually("A to join B", 20, async || peer_count(&b).await == 1).await;

    b.signal("-TERM");
    assert!(b.wait().await.success());
    let key = NodeKey::generate();
    let payloads: Vec<Payload> = (1..=1000)
        .map(|i| post(&key, i, "outage", &format!("n{i}")))
        .collect();
    let client = reqwest::Client::new();
    futures_util::stream::iter(payloads.iter())
        .for_each_concurrent(16, |p| {
            let client = client.clone();
            let base = a.base.clone();
            async move {
                let r = client
                    .post(format!("{base}/v1/payloads"))
                    .body(p.to_json())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
        .await;

    // B comes back on the same URL; A's backoff finds it. Kill A mid-delivery.
    let b = Node::start_on(db.path(), b_port, &vars(&[])).await;
    let mut on_b = subscriber(&b).await;
    // A's retries may reach B between its readiness and the subscription:
    // what B held once the subscription was live was never owed to it live.
    let held_at_subscribe = stored_ids(&b, "outage").await;
    eventually("deliveries to resume", 30, async || {
        metric(&b, FROM_PEER_STORED).await > 0
    })
    .await;
    a.signal("-KILL");
    a.wait().await;
    let before_restart = metric(&b, FROM_PEER_STORED).await;
    let a = Node::start_on(
        da.path(),
        a_port,
        &vars(&[("MESHRELAY_SEED_PEERS", &seeds)]),
    )
    .await;
    eventually("all 1000 payloads at B", 60, async || {
        stored_in(&b, "outage").await == 1000
    })
    .await;
    // Stored once each; a batch in flight at the kill may have been sent again, and was deduplicated.
    assert_eq!(stored_in(&b, "outage").await, 1000);
    // The counters move just after the commit; give them a moment, then make
    // sure none counts past 1000: every payload was stored once.
    // B's live subscriber saw every payload B did not hold when it
    // subscribed, and none twice.
    let owed = 1000 - held_at_subscribe.len();
    let mut live = received_at_least(&mut on_b, owed, 15_000).await;
    live.extend(received(&mut on_b, 500).await);
    let distinct: std::collections::HashSet<String> = live.iter().cloned().collect();
    assert_eq!(live.len(), distinct.len(), "a payload delivered live twice");
    let seen: std::collections::HashSet<String> =
        distinct.union(&held_at_subscribe).cloned().collect();
    assert_eq!(
        seen.len(),
        1000,
        "held at subscribe or delivered live: every payload"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&b, FROM_PEER_STORED).await < 1000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "B counted {} stored, {} duplicates",
        metric(&b, FROM_PEER_STORED).await,
        metric(&b, FROM_PEER_DUP).await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metric(&b, FROM_PEER_STORED).await,
        1000,
        "B stored each payload exactly once"
    );
    eprintln!("B held {before_restart} of 1000 when A was killed");
    for n in [a, b] {
        n.signal("-TERM");
        assert!(n.wait().await.success());
    }
}

/// A's database, opened beside the running node (SQLite allows readers).
async fn store_of(dir: &std::path::Path) -> meshrelay_store::Store {
    meshrelay_store::Store::connect(&format!(
        "sqlite://{}",
        dir.join("data/meshrelay.db").display()
    ))
    .await
    .unwrap()
}

#[tokio::test]
async fn a_peer_whose_key_changes_is_flagged_and_gets_nothing_more() {
    let (da, db, db2) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let b = Node::start(db.path(), &vars(&[])).await;
    let b_port = b.port;
    let a = Node::start(
        da.path(),
        &vars(&[
            ("MESHRELAY_SEED_PEERS", &b.base),
            ("MESHRELAY_POLL_SCHEDULE", "* * * * * *"),
        ]),
    )
    .await;
    eventually("A to join B", 20, async || peer_count(&a).await == 1).await;
    let a_store = store_of(da.path()).await;
    let b_key = a_store.peers().await.unwrap()[0].node.clone();
    b.signal("-TERM");
    assert!(b.wait().await.success());
    // Another node, with another key, now answers at B's URL.
    let impostor = Node::start_on(db2.path(), b_port, &vars(&[])).await;
    eventually("A's poll to flag the key change", 20, async || {
        a_store.peer(&b_key).await.unwrap().unwrap().status
            == meshrelay_store::PeerStatus::KeyChanged
    })
    .await;
    publish(
        &a,
        &post(&NodeKey::generate(), 1, "general", "not for the impostor"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        metric(&impostor, FROM_PEER_STORED).await + metric(&impostor, FROM_PEER_DUP).await,
        0
    );
    assert_eq!(peer_count(&a).await, 0, "a key_changed peer is not shared");
    for n in [a, impostor] {
        n.signal("-TERM");
        assert!(n.wait().await.success());
    }
}

#[tokio::test]
async fn undeliverable_items_become_dead_letters_after_the_delivery_age() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = Node::start(db.path(), &vars(&[])).await;
    let a = Node::start(
        da.path(),
        &vars(&[
            ("MESHRELAY_SEED_PEERS", &b.base),
            ("MESHRELAY_MAX_DELIVERY_AGE_SECS", "1"),
        ]),
    )
    .await;
    eventually("A to join B", 20, async || peer_count(&a).await == 1).await;
    b.signal("-TERM");
    assert!(b.wait().await.success());
    let key = NodeKey::generate();
    for i in 1..=5 {
        publish(&a, &post(&key, i, "general", "doomed")).await;
    }
    let a_store = store_of(da.path()).await;
    eventually("the items to die", 20, async || {
        a_store
            .outbox_items(meshrelay_store::OutboxState::Dead, 10)
            .await
            .unwrap()
            .len()
            == 5
    })
    .await;
    let dead = a_store
        .outbox_items(meshrelay_store::OutboxState::Dead, 10)
        .await
        .unwrap();
    assert!(
        dead.iter()
            .all(|i| i.attempts >= 1 && i.last_error.is_some()),
        "{dead:?}"
    );
    assert!(a_store
        .outbox_items(meshrelay_store::OutboxState::Pending, 10)
        .await
        .unwrap()
        .is_empty());
    a.signal("-TERM");
    assert!(a.wait().await.success());
}

#[tokio::test]
async fn a_peer_that_answers_429_is_sent_again_after_its_retry_after_not_a_backoff() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // B takes one inbox request a second from a peer; A's backoff after a
    // failure would be 60 s.
    let b = Node::start(db.path(), &vars(&[("MESHRELAY_INBOX_RATE", "1")])).await;
    let a = Node::start(
        da.path(),
        &[
            ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true"),
            ("MESHRELAY_RETRY_MIN_SECS", "60"),
            ("MESHRELAY_RETRY_MAX_SECS", "120"),
            ("MESHRELAY_PUBLISH_RATE", "0"),
            ("MESHRELAY_SEED_PEERS", &b.base),
        ],
    )
    .await;
    eventually("A to join B", 20, async || peer_count(&a).await == 1).await;
    // Four inbox requests' worth at once: A sends them together, B takes
    // one and answers the others 429 with Retry-After.
    let key = NodeKey::generate();
    let client = reqwest::Client::new();
    for seq in 1..=400 {
        publish_one(&client, &a, &post(&key, seq, "throttled", "x")).await;
    }
    eventually(
        "B to hold all 400 well within A's backoff",
        30,
        async || stored_in(&b, "throttled").await == 400,
    )
    .await;
    assert!(
        metric(&a, "meshrelay_forwarding_throttled_total").await >= 1,
        "B answered 429 at least once"
    );
    let a_store = store_of(da.path()).await;
    let peer = a_store.peers().await.unwrap().remove(0);
    assert_eq!(peer.delivery_failures, 0, "a 429 is no failure: {peer:?}");
    a_store.close().await;
    for n in [a, b] {
        n.signal("-TERM");
        assert!(n.wait().await.success());
    }
}

/// Pending outbox items of the node whose data directory is `dir`.
async fn pending_outbox(dir: &std::path::Path) -> i64 {
    let url = format!("sqlite://{}", dir.join("data/meshrelay.db").display());
    let store = meshrelay_store::Store::connect(&url).await.unwrap();
    let n = store
        .outbox_depths()
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    store.close().await;
    n
}

/// Publish one new payload at `node` over HTTP; it must be stored (201).
async fn publish_one(client: &reqwest::Client, node: &Node, p: &Payload) {
    let r = client
        .post(format!("{}/v1/payloads", node.base))
        .body(p.to_json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

async fn publish_many(node: &Node, n: u64, tag: &str) {
    let key = NodeKey::generate();
    let client = reqwest::Client::new();
    for seq in 1..=n {
        let p = post(&key, seq, "mesh/partition", &format!("{tag} {seq}"));
        publish_one(&client, node, &p).await;
    }
}

/// `meshrelay sync` run where the node in `dir` runs (its data_dir, so its
/// admin token), asking it through its admin listener; one JSON report per peer.
async fn sync_cli(dir: &std::path::Path, admin: &str, peer: &str) -> Value {
    let out = command(dir)
        .args(["sync", "--peer", peer, "--json"])
        .env("MESHRELAY_ADMIN_LISTEN", admin)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "meshrelay sync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn partitioned_processes_converge_with_one_meshrelay_sync() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Forwards that fail once are dead letters at once: the partition loses them.
    let lossy = vars(&[("MESHRELAY_MAX_DELIVERY_AGE_SECS", "0")]);
    let a = Node::start(da.path(), &lossy).await;
    let pa = a.port;
    let a_url = a.base.clone();
    let mut with_seed = lossy.clone();
    with_seed.push(("MESHRELAY_SEED_PEERS", &a_url));
    let b_admin = format!("127.0.0.1:{}", free_port());
    with_seed.push(("MESHRELAY_ADMIN_LISTEN", &b_admin));
    let b = Node::start(db.path(), &with_seed).await;
    let pb = b.port;
    eventually("B to join A", 20, async || {
        peer_count(&a).await == 1 && peer_count(&b).await == 1
    })
    .await;

    // B is down while A takes 1,000; A's forwards to B fail and are given up.
    b.signal("-TERM");
    assert!(b.wait().await.success());
    publish_many(&a, 1000, "on a").await;
    eventually("A to give up its forwards", 30, async || {
        pending_outbox(da.path()).await == 0
    })
    .await;
    a.signal("-TERM");
    assert!(a.wait().await.success());
    // Then A is down while B takes 1,000.
    let b = Node::start_on(db.path(), pb, &with_seed).await;
    publish_many(&b, 1000, "on b").await;
    eventually("B to give up its forwards", 30, async || {
        pending_outbox(db.path()).await == 0
    })
    .await;
    let a = Node::start_on(da.path(), pa, &lossy).await;

    // One sync run from B's side, asked of B while it serves: B's live
    // subscriber sees what B fetches.
    let mut live_on_b = subscriber(&b).await;
    let r = sync_cli(db.path(), &b_admin, &a.base).await;
    let live: std::collections::HashSet<String> = received_at_least(&mut live_on_b, 1000, 10_000)
        .await
        .into_iter()
        .collect();
    assert_eq!(
        live.len(),
        1000,
        "B's subscriber got each fetched payload once"
    );
    assert_eq!(
        (
            &r["have"],
            &r["need"],
            &r["fetched"],
            &r["pushed"],
            &r["rejected"]
        ),
        (
            &json!(1000),
            &json!(1000),
            &json!(1000),
            &json!(1000),
            &json!(0)
        ),
        "{r}"
    );
    assert_eq!(
        metric(&a, FROM_PEER_DUP).await,
        0,
        "A was offered a payload twice"
    );
    // Both hold the same 2,000: a second run finds no difference either way.
    let again = sync_cli(db.path(), &b_admin, &a.base).await;
    assert_eq!(
        (&again["have"], &again["need"]),
        (&json!(0), &json!(0)),
        "{again}"
    );
    for node in [&a, &b] {
        let (_, page) = node
            .json("/v1/payloads?channels=mesh/partition&limit=1")
            .await;
        assert_eq!(page["payloads"].as_array().map(Vec::len), Some(1));
    }
    let mut total = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/payloads?channels=mesh/partition&limit=500&cursor={c}"),
            None => "/v1/payloads?channels=mesh/partition&limit=500".to_string(),
        };
        let (_, page) = a.json(&path).await;
        total += page["payloads"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(total, 2000, "A serves both sides' payloads");
}

/// How the node in `dir` records its one peer (read from its database).
async fn peer_status(dir: &std::path::Path) -> Option<meshrelay_store::PeerStatus> {
    let url = format!("sqlite://{}", dir.join("data/meshrelay.db").display());
    let store = meshrelay_store::Store::connect(&url).await.unwrap();
    let status = store.peers().await.unwrap().first().map(|p| p.status);
    store.close().await;
    status
}

/// Publish in small rounds at `node` until it records its peer unreachable
/// (each round gives its delivery loop new items to fail on).
async fn publish_until_unreachable(node: &Node, dir: &std::path::Path, tag: &str) -> u64 {
    let key = NodeKey::generate();
    let client = reqwest::Client::new();
    let mut seq = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while peer_status(dir).await != Some(meshrelay_store::PeerStatus::Unreachable) {
        assert!(
            Instant::now() < deadline,
            "{tag}: the peer was never marked unreachable"
        );
        for _ in 0..20 {
            seq += 1;
            let p = post(&key, seq, "mesh/heal", &format!("{tag} {seq}"));
            publish_one(&client, node, &p).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    seq
}

async fn healed_count(node: &Node) -> usize {
    let (_, page) = node.json("/v1/payloads?channels=mesh/heal&limit=500").await;
    page["payloads"].as_array().map_or(0, Vec::len)
}

/// PROTOCOL.md 5.3, 5.5: a partition long enough for both sides to give up
/// their forwards and mark each other unreachable heals by the scheduled sync
/// alone (polling is left at its default of every 15 minutes).
#[tokio::test]
async fn a_partition_heals_by_scheduled_sync_after_both_sides_marked_the_other_unreachable() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lossy = vars(&[
        ("MESHRELAY_MAX_DELIVERY_AGE_SECS", "1"),
        ("MESHRELAY_SYNC_SCHEDULE", "*/2 * * * * *"),
    ]);
    let a = Node::start(da.path(), &lossy).await;
    let pa = a.port;
    let a_url = a.base.clone();
    let mut with_seed = lossy.clone();
    with_seed.push(("MESHRELAY_SEED_PEERS", &a_url));
    let b = Node::start(db.path(), &with_seed).await;
    let pb = b.port;
    eventually("B to join A", 20, async || {
        peer_count(&a).await == 1 && peer_count(&b).await == 1
    })
    .await;

    // B is down while A takes payloads until it gives B up as unreachable.
    b.signal("-TERM");
    assert!(b.wait().await.success());
    let on_a = publish_until_unreachable(&a, da.path(), "on a").await;
    eventually("A to give up its forwards", 30, async || {
        pending_outbox(da.path()).await == 0
    })
    .await;
    a.signal("-TERM");
    assert!(a.wait().await.success());
    // Then A is down while B does the same.
    let b = Node::start_on(db.path(), pb, &with_seed).await;
    let on_b = publish_until_unreachable(&b, db.path(), "on b").await;
    eventually("B to give up its forwards", 30, async || {
        pending_outbox(db.path()).await == 0
    })
    .await;

    // Both up again, each recording the other unreachable: sync heals it.
    let a = Node::start_on(da.path(), pa, &lossy).await;
    let total = (on_a + on_b) as usize;
    eventually("both to hold every payload", 60, async || {
        healed_count(&a).await == total && healed_count(&b).await == total
    })
    .await;
}

/// PROTOCOL.md 5.4: `max_hops` defaults to 16, so a line of six nodes (five
/// hops end to end) delivers both ways by forwarding alone, with the sync
/// job pushed a year away. With the old default of 4 the far end never got it.
#[tokio::test]
async fn a_line_of_six_nodes_delivers_end_to_end_by_forwarding_alone() {
    let dirs: Vec<_> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let no_sync = ("MESHRELAY_SYNC_SCHEDULE", "0 0 0 1 1 * 2099");
    let mut line: Vec<Node> = Vec::new();
    for dir in &dirs {
        let seed = line.last().map(|n| n.base.clone());
        let mut extra = vec![no_sync];
        if let Some(seed) = &seed {
            extra.push(("MESHRELAY_SEED_PEERS", seed));
        }
        line.push(Node::start(dir.path(), &vars(&extra)).await);
    }
    eventually("the line to form", 30, async || {
        for (i, n) in line.iter().enumerate() {
            let want = if i == 0 || i == line.len() - 1 { 1 } else { 2 };
            if peer_count(n).await != want {
                return false;
            }
        }
        true
    })
    .await;
    let key = NodeKey::generate();
    let there = post(&key, 1, "general", "from the first to the last");
    let back = post(&key, 2, "general", "and back");
    publish(&line[0], &there).await;
    publish(&line[5], &back).await;
    let path = |id: &str| format!("/v1/payloads/{id}");
    eventually("both payloads at both ends", 30, async || {
        line[5].json(&path(&there.id)).await.0 == 200
            && line[0].json(&path(&back.id)).await.0 == 200
    })
    .await;
    for n in &line {
        assert_eq!(n.json(&path(&there.id)).await.0, 200);
        assert_eq!(n.json(&path(&back.id)).await.0, 200);
    }
    for n in line {
        n.signal("-TERM");
        assert!(n.wait().await.success());
    }
}

fn governance(key: &NodeKey, root: &str, created_at: u64, kind: &str, tags: &[&[&str]]) -> Payload {
    Payload::sign(
        key,
        Draft {
            seq: 1,
            prev: None,
            created_at,
            kind: kind.into(),
            channel: root.into(),
            tags: tags
                .iter()
                .map(|t| t.iter().map(|s| s.to_string()).collect())
                .collect(),
            content: String::new(),
        },
    )
}

fn community_post(key: &NodeKey, root: &str, created_at: u64, content: &str) -> Payload {
    Payload::sign(
        key,
        Draft {
            seq: 1,
            prev: None,
            created_at,
            kind: "post".into(),
            channel: root.into(),
            tags: vec![],
            content: content.into(),
        },
    )
}

async fn post_status(node: &Node, p: &Payload) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/v1/payloads", node.base))
        .body(p.to_json())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// PROTOCOL.md 9 across a line of real nodes A–B–C: governance published on
/// A reaches C by forwarding and C computes A's state; a member's post that
/// reaches B before its grant is refused there, and after the next sync
/// (which brings the grant, and the post again) it is accepted; a ban on A
/// hides the banned author's posts on C.
#[tokio::test]
async fn communities_govern_the_same_way_along_a_line_of_three_nodes() {
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let no_sync = ("MESHRELAY_SYNC_SCHEDULE", "0 0 0 1 1 * 2099");
    let a_admin = format!("127.0.0.1:{}", free_port());
    let b_admin = format!("127.0.0.1:{}", free_port());
    let token = ("MESHRELAY_ADMIN_TOKEN", "line-of-three-token");
    let a = Node::start(
        da.path(),
        &vars(&[no_sync, token, ("MESHRELAY_ADMIN_LISTEN", &a_admin)]),
    )
    .await;
    let b = Node::start(
        db.path(),
        &vars(&[
            no_sync,
            ("MESHRELAY_SEED_PEERS", &a.base),
            ("MESHRELAY_ADMIN_LISTEN", &b_admin),
        ]),
    )
    .await;
    let c = Node::start(
        dc.path(),
        &vars(&[no_sync, ("MESHRELAY_SEED_PEERS", &b.base)]),
    )
    .await;
    eventually("the line to form", 20, async || {
        peer_count(&a).await == 1 && peer_count(&b).await == 2 && peer_count(&c).await == 1
    })
    .await;
    let (owner, member, late) = (
        NodeKey::generate(),
        NodeKey::generate(),
        NodeKey::generate(),
    );
    let root = format!("g/{}/line", owner.public_hex());
    let path = format!("/v1/communities/{}", root.strip_prefix("g/").unwrap());
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 100;
    let policy = governance(&owner, &root, t, "policy", &[&["write", "members"]]);
    let grant = governance(
        &owner,
        &root,
        t + 1,
        "role",
        &[&["p", &member.public_hex(), "member"]],
    );
    for p in [&policy, &grant] {
        assert_eq!(post_status(&a, p).await, 201);
    }
    let hello = community_post(&member, &root, t + 2, "hello from A");
    assert_eq!(post_status(&a, &hello).await, 201);
    eventually("the governance and the post to reach C", 20, async || {
        c.json(&format!("/v1/payloads/{}", hello.id)).await.0 == 200
    })
    .await;
    assert_eq!(
        c.json(&path).await,
        a.json(&path).await,
        "C computes A's state"
    );

    // A post by `late` reaches B before the grant that allows it exists there.
    let early = community_post(&late, &root, t + 20, "before my grant");
    assert_eq!(post_status(&b, &early).await, 403);
    // The grant and the post are stored on A while A forwards nothing to B
    // (B blocked there for a moment): only a sync can bring them to B.
    let b_key = b.json("/v1/info").await.1["node"]
        .as_str()
        .unwrap()
        .to_string();
    let admin = |action: &'static str| {
        let (url, key) = (format!("http://{a_admin}"), b_key.clone());
        async move {
            let r = reqwest::Client::new()
                .post(format!("{url}/admin/v1/peers/{key}/{action}"))
                .bearer_auth(token.1)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{action}");
        }
    };
    admin("block").await;
    let late_grant = governance(
        &owner,
        &root,
        t + 10,
        "role",
        &[&["p", &late.public_hex(), "member"]],
    );
    assert_eq!(post_status(&a, &late_grant).await, 201);
    assert_eq!(post_status(&a, &early).await, 201);
    admin("unblock").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        b.json(&format!("/v1/payloads/{}", late_grant.id)).await.0,
        404,
        "the grant was not forwarded to B"
    );
    // The next sync brings the grant and the post again, which B now
    // accepts (a second run when one transfer stored the post before its
    // grant).
    for _ in 0..2 {
        sync_cli(db.path(), &b_admin, &a.base).await;
        if b.json(&format!("/v1/payloads/{}", early.id)).await.0 == 200 {
            break;
        }
    }
    assert_eq!(
        b.json(&format!("/v1/payloads/{}", early.id)).await.0,
        200,
        "accepted after the sync that brought its authority"
    );
    assert_eq!(
        b.json(&format!("/v1/payloads/{}", late_grant.id)).await.0,
        200
    );

    // The owner bans the member on A: on C the member's post is hidden.
    let ban = governance(
        &owner,
        &root,
        t + 30,
        "role",
        &[&["p", &member.public_hex(), "banned"]],
    );
    assert_eq!(post_status(&a, &ban).await, 201);
    eventually("the ban to hide the post on C", 20, async || {
        c.json(&format!("/v1/payloads/{}", hello.id)).await.0 == 404
    })
    .await;
    assert_eq!(a.json(&format!("/v1/payloads/{}", hello.id)).await.0, 404);
    // B holds every governance payload (the late grant by sync); C lacks
    // only what sync moved to B, which sync does not forward.
    assert_eq!(b.json(&path).await, a.json(&path).await);
    assert_eq!(
        c.json(&format!("/v1/payloads/{}", late_grant.id)).await.0,
        404
    );
    for n in [a, b, c] {
        n.signal("-TERM");
        assert!(n.wait().await.success());
    }
}

/// How `node` forwards to the peer with key `peer`: "eager" or "lazy".
async fn forwarding(admin: &str, token: &str, peer: &str) -> String {
    let list: Value = reqwest::Client::new()
        .get(format!("http://{admin}/admin/v1/peers"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node"] == peer)
        .map(|p| p["forwarding"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// PROTOCOL.md 5.6 on a triangle A, B, C: everything published at A reaches
/// B and C from A first, so the link B–C carries only duplicates and both
/// ends make it lazy (offers instead of payloads). Then A stops forwarding to
/// C (blocked there): B's offers are all that reach C, C wants what they
/// offer, B pushes it and grafts C back to eager. Nothing is lost, and no
/// sync runs.
#[tokio::test]
async fn a_redundant_link_turns_lazy_and_its_offers_carry_what_the_eager_path_lost() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let admins: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let token = "lazy-triangle-token";
    let common = [
        ("MESHRELAY_SYNC_SCHEDULE", "0 0 0 1 1 * 2099"),
        ("MESHRELAY_OFFER_DELAY_MS", "300"),
        ("MESHRELAY_ADMIN_TOKEN", token),
    ];
    let start = async |i: usize, seeds: String| {
        let mut extra = common.to_vec();
        extra.push(("MESHRELAY_ADMIN_LISTEN", &admins[i]));
        if !seeds.is_empty() {
            extra.push(("MESHRELAY_SEED_PEERS", &seeds));
        }
        Node::start(dirs[i].path(), &vars(&extra)).await
    };
    let a = start(0, String::new()).await;
    let b = start(1, a.base.clone()).await;
    let c = start(2, format!("{},{}", a.base, b.base)).await;
    eventually("the triangle to form", 20, async || {
        peer_count(&a).await == 2 && peer_count(&b).await == 2 && peer_count(&c).await == 2
    })
    .await;
    let key_of = async |n: &Node| {
        n.json("/v1/info").await.1["node"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (b_key, c_key) = (key_of(&b).await, key_of(&c).await);
    let author = NodeKey::generate();
    let held =
        async |n: &Node, p: &Payload| n.json(&format!("/v1/payloads/{}", p.id)).await.0 == 200;

    // One at a time, so that each reaches B and C from A before B and C
    // forward it to each other.
    let mut published = Vec::new();
    for seq in 1..=60 {
        let p = post(&author, seq, "general", &format!("lazy {seq}"));
        publish(&a, &p).await;
        eventually("B and C to hold it", 10, async || {
            held(&b, &p).await && held(&c, &p).await
        })
        .await;
        published.push(p);
    }
    eventually("B to forward to C lazily", 20, async || {
        forwarding(&admins[1], token, &c_key).await == "lazy"
    })
    .await;
    eventually("C to forward to B lazily", 20, async || {
        forwarding(&admins[2], token, &b_key).await == "lazy"
    })
    .await;
    assert_eq!(forwarding(&admins[0], token, &b_key).await, "eager");
    assert_eq!(forwarding(&admins[0], token, &c_key).await, "eager");
    let received = |n: &str| {
        format!("meshrelay_forwarded_items_total{{direction=\"received\",outcome=\"{n}\"}}")
    };
    // Flooding would bring C each payload twice (from A, and from B).
    let at_c =
        series_sum(&c, &received("new")).await + series_sum(&c, &received("duplicate")).await;
    assert!(
        at_c < 2 * 60,
        "C received {at_c} forwarded items for 60 payloads"
    );
    assert!(series_sum(&b, "meshrelay_offered_ids_total{direction=\"sent\"}").await > 0);
    assert!(
        series_sum(&b, &format!("meshrelay_peer_lazy{{peer=\"{c_key}\"}}")).await == 1,
        "B's gauge says its link to C is lazy"
    );

    // A forwards nothing more to C: what C gets now comes by B's offers.
    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/v1/peers/{c_key}/block", admins[0]))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let wants_before = series_sum(&b, "meshrelay_wanted_ids_total{direction=\"received\"}").await;
    let later: Vec<Payload> = (61..=70)
        .map(|seq| post(&author, seq, "general", &format!("after the block {seq}")))
        .collect();
    for p in &later {
        publish(&a, p).await;
    }
    eventually("C to hold every later payload", 30, async || {
        for p in &later {
            if !held(&c, p).await {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        series_sum(&b, "meshrelay_wanted_ids_total{direction=\"received\"}").await > wants_before,
        "C took up B's offers"
    );
    assert_eq!(
        forwarding(&admins[1], token, &c_key).await,
        "eager",
        "a lazy peer that wants an offered id is grafted"
    );
    for p in published.iter().chain(&later) {
        assert!(held(&b, p).await && held(&c, p).await, "{} lost", p.id);
    }
    for n in [a, b, c] {
        n.signal("-TERM");
        assert!(n.wait().await.success());
    }
}
