//! Tests of the real `meshrelay` binary as operators and clients run it:
//! zero-configuration start, SIGTERM draining, `kill -9` durability on both
//! backends, bad settings, and the CLI tour of the README.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::*;

#[tokio::test]
async fn a_node_starts_with_zero_configuration_and_keeps_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]).await;
    assert!(dir.path().join("data/meshrelay.db").exists());
    assert!(dir.path().join("data/node.key").exists());
    // Only the node's user may read what is in there (secrets and the database).
    use std::os::unix::fs::PermissionsExt;
    let mode = |name: &str| {
        let meta = std::fs::metadata(dir.path().join(name)).unwrap();
        meta.permissions().mode() & 0o777
    };
    assert_eq!(mode("data"), 0o700);
    for file in [
        "meshrelay.db",
        "meshrelay.db-wal",
        "meshrelay.db-shm",
        "node.key",
        "admin.token",
    ] {
        assert_eq!(mode(&format!("data/{file}")), 0o600, "{file}");
    }
    let (_, info) = node.json("/v1/info").await;
    node.signal("-TERM");
    assert!(node.wait().await.success());
    let again = Node::start(dir.path(), &[]).await;
    let (_, info2) = again.json("/v1/info").await;
    assert_eq!(
        info["node"], info2["node"],
        "the node key is generated once"
    );
    again.signal("-TERM");
    assert!(again.wait().await.success());
}

#[tokio::test]
async fn sigterm_closes_websockets_with_1001_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]).await;
    let url = format!("{}/v1/ws", node.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text(
        json!({"op": "subscribe", "sub": "s", "filters": [{}]}).to_string(),
    ))
    .await
    .unwrap();
    node.signal("-TERM");
    let mut code = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        if let Message::Close(frame) = msg {
            code = frame.map(|f| f.code);
            break;
        }
    }
    assert_eq!(code, Some(CloseCode::Away));
    assert!(node.wait().await.success());
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .arg("serve")
        .env("MESHRELAY_SUBSCRIBE", "everything")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("subscribe"), "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created for a bad configuration"
    );
}

/// Publish over several WebSockets until `kill -9`, then check every
/// acknowledged payload is held after a restart.
async fn acknowledged_payloads_survive_kill_9(vars: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), vars).await;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let url = format!("{}/v1/ws", node.base.replace("http://", "ws://"));
    let mut publishers = Vec::new();
    for _ in 0..6 {
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let acked = acked.clone();
        publishers.push(tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            let key = NodeKey::generate();
            let sender = tokio::spawn(async move {
                for seq in 1..=100_000u64 {
                    let p = Payload::sign(
                        &key,
                        Draft {
                            seq,
                            prev: (seq > 1).then(|| "ab".repeat(32)),
                            created_at: 1_763_800_000,
                            kind: "post".into(),
                            channel: "durable".into(),
                            tags: vec![],
                            content: format!("payload {seq}"),
                        },
                    );
                    let frame = json!({"op": "publish", "payload": p}).to_string();
                    if tx.send(Message::text(frame)).await.is_err() {
                        return;
                    }
                }
            });
            while let Some(Ok(Message::Text(t))) = rx.next().await {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["op"] == "ok" && v["accepted"] == true {
                    acked
                        .lock()
                        .unwrap()
                        .push(v["id"].as_str().unwrap().to_string());
                }
            }
            sender.abort();
        }));
    }
    // Kill while acknowledgements are streaming in.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 2000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.signal("-KILL");
    node.wait().await;
    for p in publishers {
        let _ = p.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "too few acknowledgements to mean anything: {}",
        acked.len()
    );

    let node = Node::start(dir.path(), vars).await;
    let client = reqwest::Client::new();
    let mut missing = Vec::new();
    for id in &acked {
        let r = client
            .get(format!("{}/v1/payloads/{id}", node.base))
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged payloads lost",
        missing.len(),
        acked.len()
    );
    node.signal("-TERM");
    assert!(node.wait().await.success());
}

#[tokio::test]
async fn acknowledged_payloads_survive_kill_9_on_sqlite() {
    acknowledged_payloads_survive_kill_9(&[]).await;
}

#[tokio::test]
async fn acknowledged_payloads_survive_kill_9_on_postgres() {
    let (admin, url, schema) = pg_schema("meshrelay_proc").await;
    acknowledged_payloads_survive_kill_9(&[("MESHRELAY_DATABASE_URL", &url)]).await;
    admin
        .execute_raw(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    admin.close().await;
}

async fn cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = command(dir).args(args).output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_tour_publishes_a_chain_and_watches_it_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]).await;
    let relay = node.base.as_str();
    let (ok, _, err) = cli(dir.path(), &["migrate"]).await;
    assert!(ok, "{err}");
    let (ok, public, _) = cli(dir.path(), &["keygen", "--out", "alice.key"]).await;
    assert!(ok);
    let author = public.trim().to_string();
    assert!(
        !cli(dir.path(), &["keygen", "--out", "alice.key"]).await.0,
        "keygen never overwrites a key"
    );

    let (ok, out, err) = cli(
        dir.path(),
        &[
            "publish",
            "--relay",
            relay,
            "--key",
            "alice.key",
            "--channel",
            "plural/updates",
            "--tag",
            "t=rust",
            "hello mesh",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("stored\tseq 1"), "{out}");

    // Watch with `subscribe`, then publish the second entry.
    let mut watcher = command(dir.path())
        .args([
            "subscribe",
            "--relay",
            relay,
            "--channel",
            "plural/*",
            "--count",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut watcher_err = BufReader::new(watcher.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), watcher_err.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(line.unwrap_or_default().contains("end of stored payloads"));

    let (ok, out, err) = cli(
        dir.path(),
        &[
            "publish",
            "--relay",
            relay,
            "--key",
            "alice.key",
            "--channel",
            "plural/updates",
            "second",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("stored\tseq 2"), "{out}");
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let live: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(live["content"], "second");
    assert_eq!(live["seq"], 2);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), watcher.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );

    let (_, log) = node.json(&format!("/v1/authors/{author}/log")).await;
    let log = log["payloads"].as_array().unwrap().clone();
    assert_eq!(log.len(), 2);
    assert_eq!(
        log[1]["prev"], log[0]["id"],
        "publish chains seq 2 to seq 1"
    );

    let (ok, out, _) = cli(dir.path(), &["query", "--relay", relay, "--tag", "t=rust"]).await;
    assert!(ok);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["content"], "hello mesh");
    node.signal("-TERM");
    assert!(node.wait().await.success());
}

#[tokio::test]
async fn two_nodes_on_one_postgres_database_run_each_tick_of_a_job_once() {
    let (admin, url, schema) = pg_schema("meshrelay_cluster").await;
    let store = meshrelay_store::Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // One node: both processes share its key (PROTOCOL.md 8.1).
    let key_file = dir_a.path().join("shared-node.key");
    let key_file = key_file.to_str().unwrap();
    let common = [
        ("MESHRELAY_DATABASE_URL", url.as_str()),
        ("MESHRELAY_PRUNE_SCHEDULE", "* * * * * *"),
        ("MESHRELAY_JOB_HISTORY", "1000"),
        ("MESHRELAY_NODE_KEY_FILE", key_file),
    ];
    let shared = [
        ("MESHRELAY_PUBLIC_URL", "http://127.0.0.1:9"),
        ("MESHRELAY_ADMIN_TOKEN", "one-token-for-the-node"),
    ];
    let vars: Vec<(&str, &str)> = common.iter().chain(shared.iter()).copied().collect();
    let a = Node::start(dir_a.path(), &vars).await;
    // The second process of the node must share public_url and admin_token:
    // without them it refuses to start, naming both.
    let lone = tempfile::tempdir().unwrap();
    let started = Instant::now();
    while store.instances(0).await.unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no heartbeat from A"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        command(lone.path())
            .arg("serve")
            .env("MESHRELAY_LISTEN", "127.0.0.1:0")
            .envs(common)
            .output(),
    )
    .await
    .expect("the lone process stops by itself")
    .unwrap();
    let refused = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(refused.contains("public_url and admin_token"), "{refused}");
    assert!(refused.contains("PROTOCOL.md 8.1"), "{refused}");
    let b = Node::start(dir_b.path(), &vars).await;
    // A process with a key of its own is another node: it refuses to start.
    let dir_c = tempfile::tempdir().unwrap();
    let out = command(dir_c.path())
        .arg("serve")
        .env("MESHRELAY_DATABASE_URL", &url)
        .env("MESHRELAY_LISTEN", "127.0.0.1:0")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let ours = std::fs::read_to_string(key_file).unwrap();
    let ours = meshrelay_protocol::NodeKey::from_seed_hex(ours.trim())
        .unwrap()
        .public_hex();
    assert!(!out.status.success());
    assert!(
        err.contains("node_key_file") && err.contains(&ours) && err.contains("belongs to node"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(5500)).await;
    a.signal("-TERM");
    b.signal("-TERM");
    assert!(a.wait().await.success());
    assert!(b.wait().await.success());

    let runs = store.recent_runs("prune", 1000).await.unwrap();
    let mut ticks: Vec<i64> = runs.iter().filter_map(|r| r.scheduled_for).collect();
    ticks.sort();
    let before = ticks.len();
    ticks.dedup();
    assert_eq!(before, ticks.len(), "a tick ran twice: {runs:?}");
    assert!(ticks.len() >= 4, "only {} ticks ran in 5.5 s", ticks.len());
    assert!(runs.iter().all(|r| r.outcome == "ok"), "{runs:?}");
    // Both processes took part: neither is a bystander that merely lost every race.
    let instances: std::collections::HashSet<&str> =
        runs.iter().map(|r| r.instance.as_str()).collect();
    eprintln!(
        "{} ticks run by {} instance(s)",
        ticks.len(),
        instances.len()
    );
    store.close().await;
    admin
        .execute_raw(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    admin.close().await;
}

/// `meshrelay admin` run where the node runs: it finds the admin address and
/// the generated token from the same settings, prints tables, or JSON.
#[tokio::test]
async fn meshrelay_admin_finds_the_node_from_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    let admin_listen = format!("127.0.0.1:{}", free_port());
    let vars = [("MESHRELAY_ADMIN_LISTEN", admin_listen.as_str())];
    let node = Node::start(dir.path(), &vars).await;
    let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
    let node_log = std::fs::read_to_string(dir.path().join("node.log")).unwrap();
    assert!(
        node_log.contains(token.trim()),
        "the generated token is printed at the first start"
    );
    let admin = |args: &[&str]| {
        let mut cmd = command(dir.path());
        cmd.arg("admin").args(args).envs(vars);
        cmd
    };
    let out = admin(&["jobs"]).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for job in ["optimize", "poll", "prune", "sync"] {
        assert!(text.contains(job), "{text}");
    }
    let out = admin(&["--json", "stats"]).output().await.unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["database"]["backend"], "sqlite");
    // A positional named like a global option (`--url`) keeps its own value.
    let out = admin(&["peers", "add", "http://127.0.0.1:9"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("422 bad_request"), "{err}");
    let out = admin(&["jobs", "run", "optimize"]).output().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "optimize: started"
    );
    let out = admin(&["--json", "audit"]).output().await.unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entries"][0]["target"], "job:optimize");
    // A wrong token: a clear error and a failing exit status.
    let out = admin(&["--token", "nope", "peers"]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401 auth_failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.signal("-TERM");
    assert!(node.wait().await.success());
}

#[tokio::test]
async fn meshrelay_blob_put_get_and_publish_attach_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]).await;
    let relay = node.base.as_str();
    assert!(cli(dir.path(), &["keygen", "--out", "bob.key"]).await.0);
    let picture: Vec<u8> = b"\x89PNG\r\n\x1a\n"
        .iter()
        .copied()
        .chain((0..2_000_000u32).map(|i| (i % 251) as u8))
        .collect();
    std::fs::write(dir.path().join("cat.png"), &picture).unwrap();

    let (ok, out, err) = cli(
        dir.path(),
        &[
            "blob", "put", "cat.png", "--key", "bob.key", "--relay", relay,
        ],
    )
    .await;
    assert!(ok, "{err}");
    let put: Value = serde_json::from_str(out.trim()).unwrap();
    let sha = meshrelay_client::blob_name(&picture);
    assert_eq!(put["sha256"], sha);
    assert_eq!(put["type"], "image/png");
    assert_eq!(put["created"], true);
    assert_eq!(put["tag"], json!(["b", sha]));

    let (ok, _, err) = cli(
        dir.path(),
        &["blob", "get", &sha, "-o", "copy.png", "--relay", relay],
    )
    .await;
    assert!(ok, "{err}");
    assert!(std::fs::read(dir.path().join("copy.png")).unwrap() == picture);
    let (ok, _, err) = cli(
        dir.path(),
        &["blob", "get", &"0".repeat(64), "--relay", relay],
    )
    .await;
    assert!(!ok && err.contains("holds no blob"), "{err}");

    // --attach uploads a new file and tags the payload with it in one step.
    std::fs::write(dir.path().join("note.txt"), "attached in one step\n").unwrap();
    let (ok, _, err) = cli(
        dir.path(),
        &[
            "publish",
            "--relay",
            relay,
            "--key",
            "bob.key",
            "--channel",
            "pics/cats",
            "--attach",
            "note.txt",
            "look",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let note = meshrelay_client::blob_name(b"attached in one step\n");
    let (_, page) = node.json("/v1/payloads?channels=pics/cats").await;
    assert_eq!(page["payloads"][0]["tags"], json!([["b", note]]), "{page}");
    let (status, _) = node.json(&format!("/v1/blobs/{note}")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sighup_swaps_the_certificate_under_an_open_websocket_and_a_bad_pair_is_kept_out() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key, first) = ca.leaf(dir.path(), "node");
    let node = Node::start(
        dir.path(),
        &[
            ("MESHRELAY_TLS_CERT_FILE", &cert),
            ("MESHRELAY_TLS_KEY_FILE", &key),
        ],
    )
    .await;
    let addr = format!("127.0.0.1:{}", node.port);
    assert_eq!(ca.handshake(&addr).await.0, first);
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        format!("wss://{addr}/v1/ws"),
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(
            ca.client_config_http1(),
        )),
    )
    .await
    .unwrap();

    // A new pair in the same files, then SIGHUP: new handshakes get it.
    let (_, _, second) = ca.leaf(dir.path(), "node");
    assert_ne!(first, second);
    node.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ca.handshake(&addr).await.0 != second {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The WebSocket opened before the reload is still served.
    ws.send(Message::text(
        json!({"op": "subscribe", "sub": "s", "filters": [{"channels": ["x/*"]}]}).to_string(),
    ))
    .await
    .unwrap();
    let eose = loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the open WebSocket answers")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        if v["op"] != "hello" {
            break v;
        }
    };
    assert_eq!(eose, json!({"op": "eose", "sub": "s"}));

    // A key that does not parse: the reload fails, the old pair stays, the log says why.
    std::fs::write(dir.path().join("node.key"), "not a key\n").unwrap();
    node.signal("-HUP");
    let log = dir.path().join("node.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("TLS reload failed")
    {
        assert!(
            Instant::now() < deadline,
            "the failed reload was not logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("tls_key_file"));
    assert_eq!(ca.handshake(&addr).await.0, second);
}

#[tokio::test]
async fn the_cli_reaches_an_https_relay_with_meshrelay_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key, _) = ca.leaf(dir.path(), "node");
    let node = Node::start(
        dir.path(),
        &[
            ("MESHRELAY_TLS_CERT_FILE", &cert),
            ("MESHRELAY_TLS_KEY_FILE", &key),
        ],
    )
    .await;
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    assert!(cli(dir.path(), &["keygen", "--out", "carol.key"]).await.0);
    let publish = [
        "publish",
        "--relay",
        &node.base,
        "--key",
        "carol.key",
        "--channel",
        "tls/cli",
        "hello",
    ];
    // Without the CA the relay's certificate is refused.
    let (ok, _, err) = cli(dir.path(), &publish).await;
    assert!(!ok, "{err}");
    let run = |args: &[&str]| {
        let mut cmd = command(dir.path());
        cmd.args(args)
            .env("MESHRELAY_CA_FILE", dir.path().join("ca.pem"));
        cmd
    };
    let out = run(&publish).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // wss: the stored payload arrives through `subscribe`.
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        run(&[
            "subscribe",
            "--relay",
            &node.base,
            "--channel",
            "tls/*",
            "--stored",
            "10",
            "--count",
            "1",
        ])
        .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello"));
}

#[tokio::test]
async fn a_second_process_on_one_sqlite_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let first = Node::start(dir.path(), &[]).await;
    let out = command(dir.path())
        .arg("serve")
        .env("MESHRELAY_LISTEN", "127.0.0.1:0")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("in use by another meshrelay process") && err.contains("meshrelay.db"),
        "{err}"
    );
    // Once the first has gone, even by kill -9, the database is free again.
    first.signal("-KILL");
    let _ = first.wait().await;
    let again = Node::start(dir.path(), &[]).await;
    again.signal("-TERM");
    assert!(again.wait().await.success());
}
