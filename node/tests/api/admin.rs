//! The admin API (PROTOCOL.md 7) on the node's second listener: the token
//! check on every route, each change and its audit entry, and the dashboard in
//! a real browser.

use std::time::Duration;

use meshrelay_protocol::{NodeKey, Payload};
use serde_json::{json, Value};

use crate::federation::{item, signed_post, INBOX};
use crate::helpers::*;

/// Every route of PROTOCOL.md 7 under `/admin/v1`: method, a concrete path
/// with a harmless target, and the path as the OpenAPI document names it.
fn routes() -> Vec<(&'static str, String, &'static str)> {
    let key = "ab".repeat(32);
    vec![
        ("GET", "/admin/v1/stats".into(), "/admin/v1/stats"),
        // Not in PROTOCOL.md 7: the communities view of issue 18.
        (
            "GET",
            "/admin/v1/communities".into(),
            "/admin/v1/communities",
        ),
        ("POST", "/admin/v1/sync".into(), "/admin/v1/sync"),
        ("GET", "/admin/v1/peers".into(), "/admin/v1/peers"),
        ("POST", "/admin/v1/peers".into(), "/admin/v1/peers"),
        (
            "POST",
            format!("/admin/v1/peers/{key}/approve"),
            "/admin/v1/peers/{node}/{action}",
        ),
        (
            "POST",
            format!("/admin/v1/peers/{key}/block"),
            "/admin/v1/peers/{node}/{action}",
        ),
        (
            "POST",
            format!("/admin/v1/peers/{key}/unblock"),
            "/admin/v1/peers/{node}/{action}",
        ),
        (
            "POST",
            format!("/admin/v1/peers/{key}/poll"),
            "/admin/v1/peers/{node}/{action}",
        ),
        (
            "DELETE",
            format!("/admin/v1/peers/{key}"),
            "/admin/v1/peers/{node}",
        ),
        (
            "GET",
            "/admin/v1/authors/blocked".into(),
            "/admin/v1/authors/blocked",
        ),
        (
            "POST",
            format!("/admin/v1/authors/{key}/block"),
            "/admin/v1/authors/{key}/block",
        ),
        (
            "DELETE",
            format!("/admin/v1/authors/{key}/block"),
            "/admin/v1/authors/{key}/block",
        ),
        (
            "DELETE",
            format!("/admin/v1/payloads/{key}"),
            "/admin/v1/payloads/{id}",
        ),
        ("GET", "/admin/v1/blobs".into(), "/admin/v1/blobs"),
        (
            "DELETE",
            format!("/admin/v1/blobs/{key}"),
            "/admin/v1/blobs/{sha256}",
        ),
        (
            "GET",
            "/admin/v1/deliveries?state=dead".into(),
            "/admin/v1/deliveries",
        ),
        (
            "POST",
            "/admin/v1/deliveries/retry".into(),
            "/admin/v1/deliveries/retry",
        ),
        ("GET", "/admin/v1/jobs".into(), "/admin/v1/jobs"),
        (
            "POST",
            "/admin/v1/jobs/prune/run".into(),
            "/admin/v1/jobs/{name}/run",
        ),
        ("GET", "/admin/v1/audit".into(), "/admin/v1/audit"),
        (
            "GET",
            "/admin/v1/openapi.json".into(),
            "/admin/v1/openapi.json",
        ),
    ]
}

pub(crate) async fn admin_call(
    app: &TestApp,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = app
        .client
        .request(method.parse().unwrap(), format!("{}{path}", app.admin));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

/// An admin call with the right token.
pub(crate) async fn admin(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = format!("Bearer {}", app.admin_token);
    let (s, v, _) = admin_call(app, method, path, Some(&auth), body).await;
    (s, v)
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn every_admin_route_refuses_a_missing_or_wrong_token() {
    let app = spawn_app().await;
    assert_eq!(app.admin_token.len(), 64, "a token was generated");
    let wrong = format!("Bearer {}", "0".repeat(64));
    let basic = format!("Basic {}", app.admin_token);
    let prefix = format!("Bearer {}", &app.admin_token[..63]);
    let mut all = routes();
    all.push(("GET", "/admin/v1/no-such-route".into(), ""));
    for (method, path, _) in &all {
        for auth in [
            None,
            Some(wrong.as_str()),
            Some(basic.as_str()),
            Some(prefix.as_str()),
        ] {
            let (status, v, headers) = admin_call(&app, method, path, auth, Some(json!({}))).await;
            assert_eq!(
                (status, code(&v)),
                (401, "auth_failed"),
                "{method} {path} with {auth:?}"
            );
            assert!(headers.contains_key("www-authenticate"), "{method} {path}");
        }
    }
    // Nothing was changed by any of those requests.
    assert_eq!(
        admin(&app, "GET", "/admin/v1/audit", None).await.1,
        json!({"entries": []})
    );
    assert_eq!(
        admin(&app, "GET", "/admin/v1/authors/blocked", None)
            .await
            .1,
        json!({"authors": []})
    );
    // The list above is the whole API: the OpenAPI document names exactly these paths.
    let (status, doc) = admin(&app, "GET", "/admin/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    let mut documented: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    documented.push("/admin/v1/openapi.json".into());
    documented.sort();
    let mut tested: Vec<String> = routes().iter().map(|r| r.2.to_string()).collect();
    tested.sort();
    tested.dedup();
    assert_eq!(tested, documented);
}

#[tokio::test]
async fn a_configured_token_replaces_the_generated_one() {
    let app = spawn_app_with(&[("MESHRELAY_ADMIN_TOKEN", "correct horse battery staple")]).await;
    assert_eq!(app.admin_token, "", "no token file is written");
    let (status, _, _) = admin_call(
        &app,
        "GET",
        "/admin/v1/stats",
        Some("Bearer correct horse battery staple"),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

/// Wait until `check` holds, for at most 10 s.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_change_lands_in_the_audit_log() {
    let a = spawn_app_with(&[
        ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true"),
        ("MESHRELAY_REQUIRE_PEER_APPROVAL", "true"),
    ])
    .await;
    let b = spawn_app_with(&[("MESHRELAY_ALLOW_PRIVATE_PEERS", "true")]).await;
    let b_key = b.state.node_hex();
    let a_key = a.state.node_hex();

    // B adds A; A records B as pending through B's announce.
    let (status, v) = admin(&b, "POST", "/admin/v1/peers", Some(json!({"url": a.base}))).await;
    assert_eq!(
        (status, v["node"].as_str(), v["status"].as_str()),
        (201, Some(a_key.as_str()), Some("active"))
    );
    let (_, v) = admin(&a, "GET", "/admin/v1/peers", None).await;
    assert_eq!(v["peers"][0]["node"], b_key.as_str());
    assert_eq!(v["peers"][0]["status"], "pending");
    assert_eq!(v["peers"][0]["health"]["state"], "ok");

    let peer = |action: &str| format!("/admin/v1/peers/{b_key}/{action}");
    let mut expected: Vec<(&str, String)> = Vec::new();
    for (action, status) in [
        ("approve", "active"),
        ("block", "blocked"),
        ("unblock", "active"),
        ("poll", "active"),
    ] {
        let (s, v) = admin(&a, "POST", &peer(action), None).await;
        assert_eq!(
            (s, v["status"].as_str()),
            (200, Some(status)),
            "{action}: {v}"
        );
        expected.push((action, format!("peer:{b_key}")));
    }
    // A blocked peer's inbox was refused meanwhile; now it is active again.
    assert_eq!(
        a.state.store.peer(&b_key).await.unwrap().unwrap().status,
        meshrelay_store::PeerStatus::Active
    );

    // Authors and payloads.
    let author = NodeKey::generate();
    let p = signed(&author, 1, None, "general", "to be hidden");
    assert_eq!(a.publish(&p).await.0, 201);
    let (s, v) = admin(&a, "DELETE", &format!("/admin/v1/payloads/{}", p.id), None).await;
    assert_eq!(
        (s, &v),
        (200, &json!({"id": p.id, "hidden": true, "changed": true}))
    );
    expected.push(("hide", format!("payload:{}", p.id)));
    assert_eq!(a.get_json(&format!("/v1/payloads/{}", p.id)).await.0, 404);
    let (s, v) = admin(
        &a,
        "DELETE",
        &format!("/admin/v1/payloads/{}", "cd".repeat(32)),
        None,
    )
    .await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    let (s, v) = admin(&a, "DELETE", "/admin/v1/payloads/xyz", None).await;
    assert_eq!((s, code(&v)), (422, "invalid_id"));

    let k = author.public_hex();
    let (s, v) = admin(&a, "POST", &format!("/admin/v1/authors/{k}/block"), None).await;
    assert_eq!((s, v["changed"].as_bool()), (200, Some(true)));
    expected.push(("block", format!("author:{k}")));
    let (s, v) = admin(&a, "DELETE", &format!("/admin/v1/authors/{k}/block"), None).await;
    assert_eq!((s, v["blocked"].as_bool()), (200, Some(false)));
    expected.push(("unblock", format!("author:{k}")));
    let (s, v) = admin(&a, "DELETE", &format!("/admin/v1/authors/{k}/block"), None).await;
    assert_eq!((s, code(&v)), (404, "not_found"), "not blocked any more");
    let (s, v) = admin(&a, "POST", "/admin/v1/authors/NOTAKEY/block", None).await;
    assert_eq!((s, code(&v)), (400, "bad_request"));

    // Deliveries and jobs.
    let (s, v) = admin(&a, "POST", "/admin/v1/deliveries/retry", None).await;
    assert_eq!((s, &v), (200, &json!({"retried": 0})));
    expected.push(("retry", "deliveries:dead".into()));
    let (s, v) = admin(
        &a,
        "POST",
        "/admin/v1/deliveries/retry",
        Some(json!({"ids": "x"})),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "bad_request"));
    let (s, v) = admin(&a, "GET", "/admin/v1/deliveries?state=lost", None).await;
    assert_eq!((s, code(&v)), (400, "bad_request"));
    let (s, v) = admin(&a, "POST", "/admin/v1/jobs/prune/run", None).await;
    assert_eq!(
        (s, &v),
        (202, &json!({"job": "prune", "status": "started"}))
    );
    expected.push(("run", "job:prune".into()));
    let (s, v) = admin(&a, "POST", "/admin/v1/jobs/nonesuch/run", None).await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    eventually("prune's run is recorded", || async {
        let (_, v) = admin(&a, "GET", "/admin/v1/jobs", None).await;
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == "prune" && j["last_outcome"] == "ok")
    })
    .await;

    // Forgetting the peer ends its queue too.
    let (s, _) = admin(&a, "DELETE", &format!("/admin/v1/peers/{b_key}"), None).await;
    assert_eq!(s, 204);
    expected.push(("remove", format!("peer:{b_key}")));
    let (s, v) = admin(&a, "DELETE", &format!("/admin/v1/peers/{b_key}"), None).await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    assert!(a.state.store.peer(&b_key).await.unwrap().is_none());

    // Every change, newest first, from this test's address through the API;
    // refused requests left nothing.
    let (_, v) = admin(&a, "GET", "/admin/v1/audit", None).await;
    let entries = v["entries"].as_array().unwrap();
    let got: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    let want: Vec<(&str, &str)> = expected
        .iter()
        .rev()
        .map(|(a, t)| (*a, t.as_str()))
        .collect();
    assert_eq!(got, want);
    let now = now() as i64;
    for e in entries {
        assert_eq!(
            (e["from"].as_str(), e["via"].as_str()),
            (Some("127.0.0.1"), Some("api"))
        );
        assert!((now - e["at"].as_i64().unwrap()).abs() < 60, "{e}");
    }
    // Paging back.
    let first = entries[0]["id"].as_i64().unwrap();
    let (_, older) = admin(
        &a,
        "GET",
        &format!("/admin/v1/audit?limit=2&before={first}"),
        None,
    )
    .await;
    assert_eq!(older["entries"].as_array().unwrap().len(), 2);
    assert_eq!(older["entries"][0]["id"], entries[1]["id"]);
    // B's audit holds its one change.
    let (_, v) = admin(&b, "GET", "/admin/v1/audit", None).await;
    assert_eq!(v["entries"][0]["action"], "add");
    assert_eq!(v["entries"][0]["target"], format!("peer:{a_key}"));
}

#[tokio::test]
async fn a_blocked_author_is_refused_locally_and_from_peers_and_hidden_until_unblocked() {
    let a = spawn_app_with(&[("MESHRELAY_ALLOW_PRIVATE_PEERS", "true")]).await;
    let c = spawn_app().await;
    let c_key = (*c.state.node_key).clone();
    let announce = json!({"url": c.base}).to_string();
    let (s, _) = signed_post(
        &a,
        &c_key,
        "/v1/federation/announce",
        &announce,
        now() as i64,
    )
    .await;
    assert_eq!(s, 202);

    let author = NodeKey::generate();
    let first = signed(&author, 1, None, "general", "before the block");
    assert_eq!(a.publish(&first).await.0, 201);
    let k = author.public_hex();
    assert_eq!(
        admin(&a, "POST", &format!("/admin/v1/authors/{k}/block"), None)
            .await
            .0,
        200
    );

    // Stored payloads are hidden from reads.
    assert_eq!(
        a.get_json(&format!("/v1/payloads/{}", first.id)).await.0,
        404
    );
    let (_, q) = a.get_json(&format!("/v1/payloads?authors={k}")).await;
    assert_eq!(q["payloads"], json!([]), "{q}");
    // New ones are refused, from a client and from a peer.
    let second = signed(
        &author,
        2,
        Some(first.id.as_str()),
        "general",
        "after the block",
    );
    let (s, v) = a.publish(&second).await;
    assert_eq!((s, code(&v)), (403, "blocked"));
    let body = json!({"items": [item(&second)]}).to_string();
    let (s, v) = signed_post(&a, &c_key, INBOX, &body, now() as i64).await;
    assert_eq!(s, 202);
    assert_eq!(v["accepted"], 0);
    assert_eq!(v["rejected"][0]["code"], "blocked", "{v}");
    let (_, v) = admin(&a, "GET", "/admin/v1/authors/blocked", None).await;
    assert_eq!(v["authors"][0]["author"], k.as_str());

    // Unblocked: the stored payload shows again, and new ones are taken.
    assert_eq!(
        admin(&a, "DELETE", &format!("/admin/v1/authors/{k}/block"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        a.get_json(&format!("/v1/payloads/{}", first.id)).await.0,
        200
    );
    assert_eq!(a.publish(&second).await.0, 201);
}

#[tokio::test]
async fn dead_letters_are_listed_and_put_back_in_the_queue() {
    let a = spawn_app_with(&[
        ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true"),
        // A failed delivery is given up on at once.
        ("MESHRELAY_MAX_DELIVERY_AGE_SECS", "0"),
    ])
    .await;
    let b = spawn_app_with(&[("MESHRELAY_ALLOW_PRIVATE_PEERS", "true")]).await;
    let (s, _) = admin(&a, "POST", "/admin/v1/peers", Some(json!({"url": b.base}))).await;
    assert_eq!(s, 201);
    let b_key = b.state.node_hex();
    // B goes away; what A forwards to it now fails and dies.
    let TestApp {
        state,
        shutdown,
        handle,
        ..
    } = b;
    drop(state); // the node drains only once every handle on it is gone
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    let p = signed(&NodeKey::generate(), 1, None, "general", "undeliverable");
    assert_eq!(a.publish(&p).await.0, 201);
    eventually("the delivery is given up on", || async {
        let v = admin(&a, "GET", "/admin/v1/deliveries?state=dead", None)
            .await
            .1;
        !v["deliveries"].as_array().unwrap().is_empty()
    })
    .await;
    let dead = admin(&a, "GET", "/admin/v1/deliveries?state=dead", None)
        .await
        .1;
    let d = &dead["deliveries"][0];
    assert_eq!(
        (d["peer"].as_str(), d["payload"].as_str()),
        (Some(b_key.as_str()), Some(p.id.as_str()))
    );
    assert!(d["last_error"].as_str().is_some(), "{d}");
    let (_, stats) = admin(&a, "GET", "/admin/v1/stats", None).await;
    assert_eq!(stats["dead_letters"], 1, "{stats}");
    assert_eq!(stats["outbox"]["peers"][0]["node"], b_key.as_str());
    let (_, peers) = admin(&a, "GET", "/admin/v1/peers", None).await;
    assert_eq!(peers["peers"][0]["health"]["dead"], 1);
    assert_eq!(peers["peers"][0]["health"]["state"], "failing");

    let id = d["id"].as_i64().unwrap();
    let (s, v) = admin(
        &a,
        "POST",
        "/admin/v1/deliveries/retry",
        Some(json!({"ids": [id + 1000]})),
    )
    .await;
    assert_eq!(
        (s, &v),
        (200, &json!({"retried": 0})),
        "an id that is not dead"
    );
    let (s, v) = admin(
        &a,
        "POST",
        "/admin/v1/deliveries/retry",
        Some(json!({"ids": [id]})),
    )
    .await;
    assert_eq!((s, &v), (200, &json!({"retried": 1})));
    // Tried again at once (and given up on again: B is still gone).
    eventually("the retried delivery is attempted", || async {
        let (_, v) = admin(&a, "GET", "/admin/v1/deliveries?state=dead", None).await;
        v["deliveries"][0]["attempts"].as_i64() == Some(1)
            && v["deliveries"][0]["enqueued_at"].as_i64() > d["enqueued_at"].as_i64()
    })
    .await;
    let (_, v) = admin(&a, "GET", "/admin/v1/audit", None).await;
    assert_eq!(v["entries"][0]["target"], format!("deliveries:{id}"));
}

#[tokio::test]
async fn stats_count_what_was_received() {
    let a = spawn_app().await;
    for i in 0..3 {
        let p = signed(&NodeKey::generate(), 1, None, "general", &format!("n{i}"));
        assert_eq!(a.publish(&p).await.0, 201);
    }
    let _ws = a.ws().await;
    let (s, v) = admin(&a, "GET", "/admin/v1/stats", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["payloads"]["stored"], 3);
    assert_eq!(v["payloads"]["received_last_hour"], 3);
    assert_eq!(v["payloads"]["received_last_day"], 3);
    assert_eq!(v["connections"], 1);
    assert_eq!(v["database"]["backend"], "sqlite");
    assert!(v["database"]["size_bytes"].as_i64().unwrap() > 0);
    assert_eq!(v["node"], a.state.node_hex().as_str());
}

/// The dashboard in headless Chromium (Debian's `chromium`, driven by
/// playwright-core from `node/tests/browser`; `.ci/run` installs both).
#[tokio::test]
async fn the_dashboard_signs_in_and_approves_a_pending_peer_in_a_real_browser() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in {} (and install Debian's chromium) first",
        dir.display()
    );
    let a = spawn_app_with(&[
        ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true"),
        ("MESHRELAY_REQUIRE_PEER_APPROVAL", "true"),
    ])
    .await;
    let b = spawn_app_with(&[("MESHRELAY_ALLOW_PRIVATE_PEERS", "true")]).await;
    let (s, _) = admin(&b, "POST", "/admin/v1/peers", Some(json!({"url": a.base}))).await;
    assert_eq!(s, 201);
    let b_key = b.state.node_hex();
    for i in 0..5 {
        let p = signed(
            &NodeKey::generate(),
            1,
            None,
            "general",
            &format!("hello {i}"),
        );
        assert_eq!(a.publish(&p).await.0, 201);
    }
    // A community, for the dashboard's Communities table.
    let owner = NodeKey::generate();
    let root = format!("g/{}/club", owner.public_hex());
    let policy = Payload::sign(
        &owner,
        meshrelay_protocol::payload::Draft {
            seq: 1,
            prev: None,
            created_at: now(),
            kind: "policy".into(),
            channel: root.clone(),
            tags: vec![vec!["write".into(), "members".into()]],
            content: String::new(),
        },
    );
    assert_eq!(a.publish(&policy).await.0, 201);
    let out = tempfile::tempdir().unwrap();
    let screenshot = std::env::var("MESHRELAY_SCREENSHOT")
        .unwrap_or_else(|_| out.path().join("dashboard.png").display().to_string());
    let run = tokio::process::Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(&dir)
        .env("ADMIN_URL", &a.admin)
        .env("ADMIN_TOKEN", &a.admin_token)
        .env("PENDING_NODE", &b_key)
        .env("COMMUNITY", &root)
        .env("SCREENSHOT", &screenshot)
        .output()
        .await
        .expect("running node (Node.js)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the browser script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("ok - the peer shows as active"), "{stdout}");
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
    // What the browser did is what the node now holds.
    assert_eq!(
        a.state.store.peer(&b_key).await.unwrap().unwrap().status,
        meshrelay_store::PeerStatus::Active
    );
    let (_, v) = admin(&a, "GET", "/admin/v1/audit", None).await;
    let got: Vec<(&str, &str)> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["via"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("logout", "dashboard"),
            ("approve", "dashboard"),
            ("login", "dashboard"),
            ("login_failed", "dashboard"),
        ]
    );
}
