//! Several `meshrelay serve` processes on one PostgreSQL schema behind a
//! round-robin balancer are one node (PROTOCOL.md 8.1): to subscribers, to
//! signed requests, to an outside peer, across `kill -9`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use meshrelay_federation::httpsig;
use meshrelay_protocol::keys::auth_message;
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const TOKEN: &str = "cluster-test-admin-token";

/// A TCP balancer on loopback: each new connection goes to the next backend.
async fn balancer(backends: Vec<SocketAddr>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut next = 0usize;
        while let Ok((mut inbound, _)) = listener.accept().await {
            let backend = backends[next % backends.len()];
            next += 1;
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Two processes of one node on a fresh schema, behind a balancer.
struct Cluster {
    a: Node,
    b: Node,
    url: String,
    /// Process A's admin API.
    admin_a: String,
    store: meshrelay_store::Store,
    admin: meshrelay_store::Store,
    schema: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Cluster {
    async fn start(extra: &[(&str, &str)]) -> Cluster {
        let (admin, db, schema) = pg_schema("meshrelay_clustered").await;
        let store = meshrelay_store::Store::connect(&db).await.unwrap();
        store.migrate().await.unwrap();
        let (da, dbb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let key_file = da.path().join("shared-node.key");
        std::fs::write(&key_file, hex::encode(rand::random::<[u8; 32]>())).unwrap();
        let (pa, pb) = (free_port(), free_port());
        let url = balancer(vec![
            format!("127.0.0.1:{pa}").parse().unwrap(),
            format!("127.0.0.1:{pb}").parse().unwrap(),
        ])
        .await;
        let key_file = key_file.to_str().unwrap().to_string();
        let mut vars: Vec<(&str, &str)> = vec![
            ("MESHRELAY_DATABASE_URL", db.as_str()),
            ("MESHRELAY_NODE_KEY_FILE", key_file.as_str()),
            ("MESHRELAY_PUBLIC_URL", url.as_str()),
            ("MESHRELAY_ADMIN_TOKEN", TOKEN),
            ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true"),
            ("MESHRELAY_RETRY_MIN_SECS", "1"),
            ("MESHRELAY_RETRY_MAX_SECS", "2"),
        ];
        vars.extend_from_slice(extra);
        let admin_listen = format!("127.0.0.1:{}", free_port());
        let mut vars_a = vars.clone();
        vars_a.push(("MESHRELAY_ADMIN_LISTEN", admin_listen.as_str()));
        let a = Node::start_on(da.path(), pa, &vars_a).await;
        // The second process finds the first one's heartbeat: it needs the
        // shared public_url and admin_token, which it has.
        wait_for_instances(&store, 1).await;
        let b = Node::start_on(dbb.path(), pb, &vars).await;
        wait_for_instances(&store, 2).await;
        Cluster {
            a,
            b,
            url,
            admin_a: format!("http://{admin_listen}"),
            store,
            admin,
            schema,
            _dirs: (da, dbb),
        }
    }

    async fn stop(self) {
        for n in [self.a, self.b] {
            if n.child.id().is_some() {
                n.signal("-TERM");
                let _ = n.wait().await;
            }
        }
        self.store.close().await;
        self.admin
            .execute_raw(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await
            .unwrap();
        self.admin.close().await;
    }
}

async fn wait_for_instances(store: &meshrelay_store::Store, n: usize) {
    eventually("the processes' heartbeats", 20, async || {
        store.instances(0).await.unwrap().len() >= n
    })
    .await;
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn post(key: &NodeKey, seq: u64, channel: &str) -> Payload {
    Payload::sign(
        key,
        Draft {
            seq,
            prev: (seq > 1).then(|| "ab".repeat(32)),
            created_at: now(),
            kind: "post".into(),
            channel: channel.into(),
            tags: vec![],
            content: format!("entry {seq}"),
        },
    )
}

fn delete_of(key: &NodeKey, target: &Payload) -> Payload {
    Payload::sign(
        key,
        Draft {
            seq: target.seq + 1_000_000,
            prev: Some("ab".repeat(32)),
            created_at: now(),
            kind: "delete".into(),
            channel: target.channel.clone(),
            tags: vec![vec!["e".into(), target.id.clone()]],
            content: String::new(),
        },
    )
}

async fn publish(client: &reqwest::Client, base: &str, p: &Payload) {
    let r = client
        .post(format!("{base}/v1/payloads"))
        .body(p.to_json())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

async fn ws_open(base: &str) -> (Ws, Value) {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}/v1/ws", base.replace("http", "ws")))
            .await
            .unwrap();
    let hello = next_json(&mut ws).await;
    (ws, hello)
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no frame: {other:?}"),
        }
    }
}

async fn subscribe(ws: &mut Ws, filter: Value) {
    ws.send(Message::text(
        json!({"op": "subscribe", "sub": "s", "filters": [filter]}).to_string(),
    ))
    .await
    .unwrap();
    loop {
        if next_json(ws).await["op"] == "eose" {
            return;
        }
    }
}

/// Every payload id and signal a connection is sent until `quiet_ms` pass
/// without a frame.
async fn drain(ws: &mut Ws, quiet_ms: u64) -> (Vec<String>, Vec<Value>) {
    let (mut ids, mut signals) = (Vec::new(), Vec::new());
    while let Ok(Some(Ok(Message::Text(t)))) =
        tokio::time::timeout(Duration::from_millis(quiet_ms), ws.next()).await
    {
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["op"].as_str() {
            Some("payload") => ids.push(v["payload"]["id"].as_str().unwrap().to_string()),
            Some("signal") => signals.push(v),
            _ => {}
        }
    }
    (ids, signals)
}

/// A client that opens a new connection per request, so the balancer
/// spreads requests over both processes.
fn spreading_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn status_of(base: &str, id: &str) -> u16 {
    reqwest::get(format!("{base}/v1/payloads/{id}"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn two_processes_behind_a_balancer_are_one_node_to_clients() {
    let c = Cluster::start(&[]).await;
    let key = NodeKey::generate();

    // Subscribers on each process; publishes spread by the balancer.
    let (mut on_a, _) = ws_open(&c.a.base).await;
    let (mut on_b, _) = ws_open(&c.b.base).await;
    subscribe(&mut on_a, json!({"channels": ["live"], "limit": 0})).await;
    subscribe(&mut on_b, json!({"channels": ["live"], "limit": 0})).await;
    let client = spreading_client();
    let mut sent = HashSet::new();
    for seq in 1..=200 {
        let p = post(&key, seq, "live");
        publish(&client, &c.url, &p).await;
        sent.insert(p.id);
    }
    for (name, ws) in [("a", &mut on_a), ("b", &mut on_b)] {
        let (ids, _) = drain(ws, 1500).await;
        let unique: HashSet<String> = ids.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "subscriber on {name} got duplicates"
        );
        assert_eq!(unique, sent, "subscriber on {name} missed payloads");
    }

    // The listener of A loses its connection (terminated by the server):
    // what B stores meanwhile reaches A's subscriber once the listener is
    // back, once each, and nothing delivered before comes again.
    let node_hex = c.a.json("/v1/info").await.1["node"]
        .as_str()
        .unwrap()
        .to_string();
    let listener = format!("meshrelay-listener-{}", &node_hex[..16]);
    let killed = c.admin.terminate_backends(&listener).await.unwrap();
    assert!(!killed.is_empty(), "no listener named {listener}");
    // Every reconnect is cut again while the payloads are published, so
    // only the catch-up can bring them.
    let stop = tokio_util::sync::CancellationToken::new();
    let cutter = {
        let (admin, listener, stop) = (c.admin.clone(), listener.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let _ = admin.terminate_backends(&listener).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut during = HashSet::new();
    for seq in 201..=220 {
        let p = post(&key, seq, "live");
        publish(&reqwest::Client::new(), &c.b.base, &p).await;
        during.insert(p.id);
    }
    stop.cancel();
    cutter.await.unwrap();
    let (ids, _) = drain(&mut on_a, 3000).await;
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "repeats after the reconnect");
    assert_eq!(unique, during, "what was stored during the outage");
    let (ids, _) = drain(&mut on_b, 500).await;
    assert_eq!(ids.len(), 20);

    // Signals cross: sent on A, received by a subscriber on B (and not
    // echoed to the sender).
    let (mut sender, hello) = ws_open(&c.a.base).await;
    let challenge = hello["challenge"].as_str().unwrap();
    let node = hello["node"].as_str().unwrap();
    let sig = hex::encode(key.sign(auth_message(node, challenge).as_bytes()));
    sender
        .send(Message::text(
            json!({"op": "auth", "pubkey": key.public_hex(), "sig": sig}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut sender).await["op"], "auth_ok");
    sender
        .send(Message::text(
            json!({"op": "signal", "channel": "live", "type": "typing", "data": {"n": 1}})
                .to_string(),
        ))
        .await
        .unwrap();
    let (_, signals) = drain(&mut on_b, 1500).await;
    assert_eq!(signals.len(), 1, "{signals:?}");
    assert_eq!(signals[0]["from"], key.public_hex());
    assert_eq!(signals[0]["data"], json!({"n": 1}));

    // A delete on one process hides its target published on the other at
    // the same moment, in every pair.
    let direct = reqwest::Client::new();
    let mut pairs = Vec::new();
    for seq in 0..40 {
        let target = post(&key, 1000 + seq, "raced");
        let delete = delete_of(&key, &target);
        pairs.push((target, delete));
    }
    let races = pairs.iter().map(|(target, delete)| {
        let (direct, a, b) = (&direct, &c.a.base, &c.b.base);
        async move {
            tokio::join!(publish(direct, a, target), publish(direct, b, delete));
        }
    });
    futures_util::future::join_all(races).await;
    for (target, _) in &pairs {
        assert_eq!(status_of(&c.a.base, &target.id).await, 404, "visible on a");
        assert_eq!(status_of(&c.b.base, &target.id).await, 404, "visible on b");
    }

    // A signed request accepted by one process is a replay at the other.
    let bytes = b"one blob, uploaded once".to_vec();
    let name = meshrelay_client::blob_name(&bytes);
    let target = format!("{}/v1/blobs/{name}", c.url);
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/octet-stream".parse().unwrap());
    httpsig::sign(
        &key,
        "PUT",
        &target,
        &mut headers,
        Some(&bytes),
        now() as i64,
    )
    .unwrap();
    let put = |base: &str| {
        direct
            .put(format!("{base}/v1/blobs/{name}"))
            .headers(headers.clone())
            .body(bytes.clone())
            .send()
    };
    assert_eq!(put(&c.a.base).await.unwrap().status(), 201);
    let replay = put(&c.b.base).await.unwrap();
    assert_eq!(replay.status(), 401);
    let body: Value = replay.json().await.unwrap();
    assert_eq!(body["error"]["code"], "auth_failed", "{body}");

    // The admin API on either process lists both processes.
    let stats: Value = reqwest::Client::new()
        .get(format!("{}/admin/v1/stats", c.admin_a))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["processes"].as_array().unwrap().len(), 2, "{stats}");
    c.stop().await;
}

/// The instance (`host:pid`) holding the lease on delivering to `peer`.
async fn lease_holder(store: &meshrelay_store::Store, peer: &str) -> Option<String> {
    store.lease_holder(peer).await.unwrap()
}

/// The pid in an instance id (`host:pid:random`).
fn pid_of(instance: &str) -> u32 {
    instance.rsplit(':').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_outside_peer_gets_each_payload_once_from_either_process_and_survives_kill_9() {
    // Forwarding alone: the hourly sync (at :00 by the wall clock) would
    // otherwise move payloads whenever a run straddles the hour, and the
    // peer could hold everything after the kill before the lease moved.
    let no_sync = ("MESHRELAY_SYNC_SCHEDULE", "0 0 0 1 1 * 2099");
    let c = Cluster::start(&[no_sync]).await;
    // The outside peer: a node of its own (SQLite), joining through the balancer.
    let dp = tempfile::tempdir().unwrap();
    let peer_admin = format!("127.0.0.1:{}", free_port());
    let peer = Node::start(
        dp.path(),
        &[
            ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true"),
            ("MESHRELAY_SEED_PEERS", c.url.as_str()),
            ("MESHRELAY_ADMIN_LISTEN", peer_admin.as_str()),
            ("MESHRELAY_RETRY_MIN_SECS", "1"),
            ("MESHRELAY_RETRY_MAX_SECS", "2"),
            no_sync,
        ],
    )
    .await;
    let (_, info) = peer.json("/v1/info").await;
    let peer_key = info["node"].as_str().unwrap().to_string();
    // The announce reached one process; the other learnt of it too.
    eventually("both processes to know the peer", 20, async || {
        let mut known = 0;
        for n in [&c.a, &c.b] {
            let (_, peers) = n.json("/v1/federation/peers").await;
            if peers["peers"]
                .as_array()
                .is_some_and(|l| l.iter().any(|p| p["node"] == peer_key.as_str()))
            {
                known += 1;
            }
        }
        known == 2
    })
    .await;

    // 1,000 payloads published across both processes.
    let key = NodeKey::generate();
    let direct = reqwest::Client::new();
    for seq in 1..=1000u64 {
        let base = if seq % 2 == 0 { &c.a.base } else { &c.b.base };
        publish(&direct, base, &post(&key, seq, "fwd")).await;
    }
    eventually("the peer to hold all 1,000", 60, async || {
        metric(&peer, FROM_PEER_STORED).await >= 1000
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dups = metric(&peer, FROM_PEER_DUP).await;
    assert!(dups <= 10, "{dups} duplicates of 1,000 (over 1 %)");
    assert_eq!(metric(&peer, FROM_PEER_STORED).await, 1000);

    // One process delivers to the peer; blocking the peer on the other one
    // stops delivery from both.
    let holder = lease_holder(&c.store, &peer_key)
        .await
        .expect("a lease holder");
    let (leader, other) = if c.a.child.id() == Some(pid_of(&holder)) {
        (&c.a, &c.b)
    } else {
        (&c.b, &c.a)
    };
    let r = reqwest::Client::new()
        .post(format!("{}/admin/v1/peers/{peer_key}/block", c.admin_a))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for seq in 1001..=1020u64 {
        let base = if seq % 2 == 0 { &c.a.base } else { &c.b.base };
        publish(&direct, base, &post(&key, seq, "fwd")).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        metric(&peer, FROM_PEER_STORED).await,
        1000,
        "a blocked peer got payloads"
    );
    let r = reqwest::Client::new()
        .post(format!("{}/admin/v1/peers/{peer_key}/unblock", c.admin_a))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // kill -9 of the delivering process: the other takes its lease over
    // and delivers what is published on it from now on.
    leader.signal("-KILL");
    for seq in 1021..=1120u64 {
        publish(&direct, &other.base, &post(&key, seq, "fwd")).await;
    }
    eventually("the survivor to deliver after the kill", 60, async || {
        metric(&peer, FROM_PEER_STORED).await >= 1100
    })
    .await;
    let holder_after = lease_holder(&c.store, &peer_key)
        .await
        .expect("a lease holder");
    assert_ne!(holder_after, holder, "the lease moved to the survivor");
    let counts: HashMap<&str, u64> = HashMap::from([
        ("stored", metric(&peer, FROM_PEER_STORED).await),
        ("duplicate", metric(&peer, FROM_PEER_DUP).await),
    ]);
    eprintln!("outside peer: {counts:?}");
    peer.signal("-TERM");
    let _ = peer.wait().await;
    c.stop().await;
}
