//! `meshrelay publish` and `meshrelay audit` (PROTOCOL.md 2.2, 4.4) as a user
//! runs them, against real nodes and a small hostile relay written here: one
//! finding of the right kind per fault, none for honest relays, the exit
//! codes, and `--repair` making two relays' logs equal.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use meshrelay_protocol::receipt::SignedHead;
use meshrelay_protocol::{NodeKey, Payload};
use serde_json::{json, Value};

use crate::helpers::*;

/// The `meshrelay` binary run in `dir` (its receipts store under it):
/// (exit code, stdout, stderr).
async fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = crate::common::command(dir)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Author {
    key: NodeKey,
    hex: String,
    dir: tempfile::TempDir,
}

impl Author {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::generate();
        std::fs::write(dir.path().join("alice.key"), key.seed_hex()).unwrap();
        Self {
            hex: key.public_hex(),
            key,
            dir,
        }
    }

    /// `meshrelay publish` to these relays; the seq it published.
    async fn publish(&self, relays: &[&str], content: &str) -> u64 {
        let mut args = vec!["publish", "--key", "alice.key", "--channel", "general"];
        for r in relays {
            args.extend(["--relay", r]);
        }
        args.push(content);
        let (code, out, err) = cli(self.dir.path(), &args).await;
        assert_eq!(code, 0, "publish: {out}{err}");
        let seq = out
            .split("seq ")
            .nth(1)
            .unwrap()
            .split('\t')
            .next()
            .unwrap();
        seq.parse().unwrap()
    }

    /// `meshrelay audit --json` of these relays: (exit code, report).
    async fn audit(&self, relays: &[&str], extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["audit", "--author", &self.hex, "--json"];
        for r in relays {
            args.extend(["--relay", r]);
        }
        args.extend(extra);
        let (code, out, err) = cli(self.dir.path(), &args).await;
        let report = serde_json::from_str(&out).unwrap_or_else(|_| json!({"stderr": err}));
        (code, report)
    }
}

/// (kind, relay, seq) of every finding.
fn findings(report: &Value) -> Vec<(String, String, Option<u64>)> {
    report["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings in {report}"))
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["relay"].as_str().unwrap().to_string(),
                f["seq"].as_u64(),
            )
        })
        .collect()
}

async fn log_seqs(app: &TestApp, author: &str) -> Vec<u64> {
    let (_, log) = app.get_json(&format!("/v1/authors/{author}/log")).await;
    log["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn publishing_to_b_after_a_chains_and_repair_makes_the_logs_equal() {
    let (a, b) = (spawn_app().await, spawn_app().await);
    let alice = Author::new();
    for i in 1..=3 {
        assert_eq!(alice.publish(&[&a.base], &format!("on A {i}")).await, i);
    }
    let (code, report) = alice.audit(&[&a.base], &[]).await;
    assert_eq!((code, findings(&report)), (0, vec![]), "{report}");
    assert_eq!(report["relays"][0]["head"]["seq"], 3);

    // B has heard nothing of A's entries: the receipts store still chains
    // seq 4 to seq 3, so the log does not fork.
    assert_eq!(alice.publish(&[&b.base], "on B").await, 4);
    let (_, on_b) = b.get_json(&format!("/v1/authors/{}/log", alice.hex)).await;
    let (_, on_a) = a.get_json(&format!("/v1/authors/{}/log", alice.hex)).await;
    assert_eq!(on_b["payloads"][0]["prev"], on_a["payloads"][2]["id"]);

    let (code, report) = alice.audit(&[&a.base, &b.base], &["--repair"]).await;
    assert_eq!(code, 1, "{report}");
    let mut expected: Vec<_> = [1, 2, 3]
        .map(|s| ("omission".to_string(), b.base.clone(), Some(s)))
        .into();
    expected.insert(0, ("omission".into(), a.base.clone(), Some(4)));
    assert_eq!(findings(&report), expected);
    assert_eq!(log_seqs(&a, &alice.hex).await, vec![1, 2, 3, 4]);
    assert_eq!(log_seqs(&b, &alice.hex).await, vec![1, 2, 3, 4]);
    let (code, report) = alice.audit(&[&a.base, &b.base], &[]).await;
    assert_eq!((code, findings(&report)), (0, vec![]), "{report}");
}

#[tokio::test]
async fn a_receipted_payload_the_operator_hides_is_reported_withheld() {
    let a = spawn_app().await;
    let alice = Author::new();
    alice.publish(&[&a.base], "one").await;
    alice.publish(&[&a.base], "two").await;
    let (_, log) = a.get_json(&format!("/v1/authors/{}/log", alice.hex)).await;
    let first = log["payloads"][0]["id"].as_str().unwrap().to_string();
    let resp = a
        .client
        .delete(format!("{}/admin/v1/payloads/{first}", a.admin))
        .bearer_auth(&a.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (code, report) = alice.audit(&[&a.base], &[]).await;
    assert_eq!(
        (code, findings(&report)),
        (1, vec![("withheld".into(), a.base.clone(), Some(1))]),
        "{report}"
    );
    let f = &report["findings"][0];
    assert_eq!(f["id"], first.as_str());
    assert_eq!(f["evidence"]["receipt"]["id"], first.as_str());
}

/// A relay that serves whatever log the test sets, and signs whatever head.
#[derive(Clone)]
struct Hostile {
    key: Arc<NodeKey>,
    log: Arc<Mutex<Vec<Value>>>,
    head: Arc<Mutex<Option<(u64, String)>>>,
}

impl Hostile {
    async fn spawn() -> (Hostile, String) {
        let h = Hostile {
            key: Arc::new(NodeKey::generate()),
            log: Arc::default(),
            head: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/info", get(info))
            .route("/v1/authors/{key}/log", get(log))
            .route("/v1/authors/{key}/head", get(head))
            .route("/v1/payloads", axum::routing::post(accept_without_receipt))
            .with_state(h.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (h, url)
    }

    /// Serve these entries, with the head at the highest seq among them.
    fn serve(&self, entries: &[Value]) {
        *self.log.lock().unwrap() = entries.to_vec();
        *self.head.lock().unwrap() = entries.iter().max_by_key(|e| e["seq"].as_u64()).map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["id"].as_str().unwrap().to_string(),
            )
        });
    }
}

async fn info(State(h): State<Hostile>) -> Json<Value> {
    Json(json!({"node": h.key.public_hex()}))
}

async fn log(
    State(h): State<Hostile>,
    UrlPath(author): UrlPath<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let after: u64 = q.get("after_seq").and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut page: Vec<Value> = h
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["seq"].as_u64().unwrap_or(0) > after)
        .cloned()
        .collect();
    page.sort_by_key(|e| e["seq"].as_u64());
    Json(json!({"author": author, "payloads": page}))
}

async fn head(
    State(h): State<Hostile>,
    UrlPath(author): UrlPath<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some((seq, id)) = h.head.lock().unwrap().clone() else {
        return (axum::http::StatusCode::NOT_FOUND, Json(json!({}))).into_response();
    };
    Json(SignedHead::sign(&h.key, &author, seq, &id, now()).unwrap()).into_response()
}

/// Says it stored whatever it is sent, and signs nothing for it.
async fn accept_without_receipt(body: String) -> (axum::http::StatusCode, Json<Value>) {
    let p: Value = serde_json::from_str(&body).unwrap();
    (
        axum::http::StatusCode::CREATED,
        Json(json!({"id": p["id"], "accepted": true, "duplicate": false})),
    )
}

#[tokio::test]
async fn an_acceptance_without_a_receipt_is_refused_by_the_client() {
    let (_, url) = Hostile::spawn().await;
    let key = NodeKey::generate();
    let p = Payload::sign(
        &key,
        meshrelay_protocol::payload::Draft {
            seq: 1,
            prev: None,
            created_at: now(),
            kind: "post".into(),
            channel: "general".into(),
            tags: vec![],
            content: "kept?".into(),
        },
    );
    let err = meshrelay_client::RelayClient::new(&url)
        .unwrap()
        .publish(&p)
        .await
        .expect_err("no receipt, no acceptance");
    assert!(err.to_string().contains("without the receipt"), "{err}");
}

fn values(entries: &[Payload]) -> Vec<Value> {
    entries
        .iter()
        .map(|p| serde_json::to_value(p).unwrap())
        .collect()
}

#[tokio::test]
async fn a_hostile_relay_is_caught_once_for_each_fault() {
    let a = spawn_app().await;
    let (hostile, h) = Hostile::spawn().await;
    let alice = Author::new();
    let mut log: Vec<Payload> = Vec::new();
    for i in 1..=4 {
        let p = signed(
            &alice.key,
            i,
            log.last().map(|p| p.id.as_str()),
            "general",
            &format!("{i}"),
        );
        assert_eq!(a.publish(&p).await.0, 201);
        log.push(p);
    }
    let honest = values(&log);
    let relays = [a.base.as_str(), h.as_str()];
    let only = |kind: &str, seq: u64| vec![(kind.to_string(), h.clone(), Some(seq))];

    hostile.serve(&honest);
    let (code, report) = alice.audit(&relays, &[]).await;
    assert_eq!(
        (code, findings(&report)),
        (0, vec![]),
        "an honest copy: {report}"
    );

    // Omits seq 3.
    let mut omitted = honest.clone();
    omitted.remove(2);
    hostile.serve(&omitted);
    let (code, report) = alice.audit(&relays, &[]).await;
    assert_eq!(
        (code, findings(&report)),
        (1, only("omission", 3)),
        "{report}"
    );

    // Serves a fork: a second validly signed seq 3.
    let fork = signed(&alice.key, 3, Some(&log[1].id), "general", "another 3");
    let mut forked = honest.clone();
    forked.push(serde_json::to_value(&fork).unwrap());
    hostile.serve(&forked);
    let (code, report) = alice.audit(&relays, &[]).await;
    assert_eq!((code, findings(&report)), (1, only("fork", 3)), "{report}");
    let mut ids = vec![log[2].id.clone(), fork.id.clone()];
    ids.sort();
    assert_eq!(report["findings"][0]["ids"], json!(ids));

    // Serves a forged entry: seq 2 with other content under the same id and sig.
    let mut forged = honest.clone();
    forged[1]["content"] = json!("what alice never said");
    hostile.serve(&forged);
    let (code, report) = alice.audit(&relays, &[]).await;
    assert_eq!(
        (code, findings(&report)),
        (1, only("invalid", 2)),
        "{report}"
    );

    // Rolls its signed head back: the honest copy was signed at seq 4 by the
    // runs above (kept in the receipts store); now it signs seq 2.
    hostile.serve(&honest[..2]);
    let (code, report) = alice.audit(&relays, &[]).await;
    assert_eq!(
        (code, findings(&report)),
        (1, only("rollback", 2)),
        "{report}"
    );

    // A relay that cannot be reached: the audit could not run.
    let (code, _) = alice.audit(&[&a.base, "http://127.0.0.1:9"], &[]).await;
    assert_eq!(code, 2);
}

/// A relay that holds a receipted community post back because a visible
/// moderation says so is honest: the audit finds nothing (PROTOCOL.md 4.4).
#[tokio::test]
async fn a_post_hidden_by_a_visible_moderation_is_not_withheld() {
    use meshrelay_protocol::payload::Draft;
    let a = spawn_app().await;
    let alice = Author::new();
    let owner = NodeKey::generate();
    let root = format!("g/{}/club", owner.public_hex());
    let gov = |at: u64, kind: &str, tags: Vec<Vec<String>>| {
        Payload::sign(
            &owner,
            Draft {
                seq: 1,
                prev: None,
                created_at: at,
                kind: kind.into(),
                channel: root.clone(),
                tags,
                content: String::new(),
            },
        )
    };
    let grant = gov(
        now() - 60,
        "role",
        vec![vec!["p".into(), alice.hex.clone(), "member".into()]],
    );
    assert_eq!(a.publish(&grant).await.0, 201);
    let args = [
        "publish",
        "--key",
        "alice.key",
        "--relay",
        &a.base,
        "--channel",
        &root,
        "in the club",
    ];
    let (code, out, err) = cli(alice.dir.path(), &args).await;
    assert_eq!(code, 0, "{out}{err}");
    let id = out.split('\t').nth(3).unwrap().trim().to_string();
    let moderate = gov(now() - 30, "moderate", vec![vec!["e".into(), id.clone()]]);
    // Dated before the post: it still moderates it (9.3 "also one that arrives later").
    assert_eq!(a.publish(&moderate).await.0, 201);
    assert_eq!(a.get_json(&format!("/v1/payloads/{id}")).await.0, 404);
    let (code, report) = alice.audit(&[&a.base], &[]).await;
    assert_eq!((code, findings(&report)), (0, vec![]), "{report}");
}
