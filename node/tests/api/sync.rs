//! Anti-entropy sync (PROTOCOL.md 5.5) between in-process nodes over real
//! sockets: partitions heal, lost forwards are repaired, new nodes backfill.

use std::collections::BTreeSet;
use std::sync::Arc;

use meshrelay::ingest::PeerIngest;
use meshrelay_federation::httpsig;
use meshrelay_federation::sync::Report;
use meshrelay_protocol::{NodeKey, Payload};
use serde_json::{json, Value};

use crate::helpers::*;

const PRIVATE: (&str, &str) = ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true");

/// Store payloads straight through the writer: nothing is forwarded, as if
/// every forward had been lost.
async fn store_quietly(app: &TestApp, payloads: &[Payload]) {
    for chunk in payloads.chunks(200) {
        let writes = chunk.iter().map(|p| {
            app.state.writer.write_and_forward(
                Arc::new(p.clone()),
                p.to_json().into(),
                None,
                now() as i64,
                Vec::new(),
            )
        });
        for outcome in futures_util::future::join_all(writes).await {
            outcome.unwrap();
        }
    }
}

/// `n` payloads by one author, created between `newest_age` and about a day more ago.
fn batch(n: u64, newest_age: u64, tag: &str) -> Vec<Payload> {
    let key = NodeKey::generate();
    (0..n)
        .map(|i| {
            let created = now() - newest_age - i * 80;
            signed_at(
                &key,
                i + 1,
                None,
                "mesh/sync",
                &format!("{tag} {i}"),
                created,
            )
        })
        .collect()
}

async fn ids(app: &TestApp) -> BTreeSet<String> {
    let items = app
        .state
        .store
        .sync_items(&Default::default(), 0, i64::MAX, 1_000_000)
        .await
        .unwrap()
        .unwrap();
    items.into_iter().map(|(_, id)| hex::encode(id)).collect()
}

/// `a` joins `b` (which records `a` through its announce).
async fn link(a: &TestApp, b: &TestApp) {
    a.state.federation.join(&b.base).await.unwrap();
    let a_key = a.state.node_hex();
    assert!(b.state.store.peer(&a_key).await.unwrap().is_some());
}

/// What the `sync` job runs: every sync target over the window.
async fn sync_all(app: &TestApp) -> String {
    let ingest = PeerIngest(app.state.clone());
    app.state.federation.sync_all(&ingest).await.unwrap()
}

async fn sync_with(app: &TestApp, peer: &TestApp) -> Report {
    let target = app
        .state
        .federation
        .sync_targets()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.url == peer.base)
        .expect("peer is an active target");
    let window = app.state.federation.default_sync_window();
    let ingest = PeerIngest(app.state.clone());
    app.state
        .federation
        .sync_peer(&ingest, &target, window, None)
        .await
        .unwrap()
}

#[tokio::test]
async fn partitioned_nodes_converge_in_one_run_without_moving_anything_twice() {
    let a = spawn_app_with(&[PRIVATE]).await;
    let b = spawn_app_with(&[PRIVATE]).await;
    let only_a = batch(1000, 60, "a");
    let only_b = batch(1000, 100, "b");
    store_quietly(&a, &only_a).await;
    store_quietly(&b, &only_b).await;
    link(&a, &b).await;

    let r = sync_with(&a, &b).await;
    assert_eq!((r.have, r.need), (1000, 1000), "{r:?}");
    assert_eq!((r.fetched, r.pushed, r.rejected), (1000, 1000, 0), "{r:?}");
    let (ia, ib) = (ids(&a).await, ids(&b).await);
    assert_eq!(ia.len(), 2000);
    assert_eq!(ia, ib);
    // Nothing was offered twice: no duplicates on either side.
    for app in [&a, &b] {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        assert!(
            !metrics.contains(r#"outcome="duplicate""#),
            "duplicates seen:\n{metrics}"
        );
    }
    // Rounds and bytes are counted per peer on both sides.
    let metrics = b.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("meshrelay_sync_rounds_total{"),
        "{metrics}"
    );
    let metrics = a.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"direction="fetched""#), "{metrics}");

    // Converged: a second run finds nothing to move.
    let again = sync_with(&a, &b).await;
    assert_eq!(
        (again.have, again.need, again.fetched, again.pushed),
        (0, 0, 0, 0),
        "{again:?}"
    );
    assert!(
        again.sync_bytes < 2_000,
        "a converged pair exchanged {} bytes",
        again.sync_bytes
    );
}

#[tokio::test]
async fn a_window_over_the_item_cap_is_split_by_the_initiator() {
    let a = spawn_app_with(&[PRIVATE]).await;
    // The responder reconciles at most 300 payloads per session.
    let b = spawn_app_with(&[PRIVATE, ("MESHRELAY_SYNC_MAX_ITEMS", "300")]).await;
    store_quietly(&a, &batch(400, 60, "a")).await;
    store_quietly(&b, &batch(500, 100, "b")).await;
    link(&a, &b).await;
    let r = sync_with(&a, &b).await;
    assert!(r.splits >= 2, "{r:?}");
    assert_eq!((r.fetched, r.pushed), (500, 400), "{r:?}");
    assert_eq!(ids(&a).await, ids(&b).await);
}

#[tokio::test]
async fn a_line_of_three_repairs_lost_forwards_through_the_middle() {
    let a = spawn_app_with(&[PRIVATE]).await;
    let b = spawn_app_with(&[PRIVATE]).await;
    let c = spawn_app_with(&[PRIVATE]).await;
    link(&a, &b).await;
    link(&c, &b).await;
    // Forwarding was lost everywhere: each node holds its own only.
    store_quietly(&a, &batch(150, 60, "a")).await;
    store_quietly(&b, &batch(50, 60, "b")).await;
    store_quietly(&c, &batch(100, 60, "c")).await;

    // The scheduled job, as each node runs it: B first, then the ends.
    let outcome = sync_all(&b).await;
    assert!(
        format!("{outcome:?}").contains("synced with 2 of 2 peers"),
        "{outcome:?}"
    );
    sync_all(&a).await;
    sync_all(&c).await;

    let (ia, ib, ic) = (ids(&a).await, ids(&b).await, ids(&c).await);
    assert_eq!(ib.len(), 300);
    assert_eq!(ia, ib);
    assert_eq!(ib, ic);
}

#[tokio::test]
async fn a_new_node_backfills_the_window_and_nothing_older() {
    let a = spawn_app_with(&[PRIVATE]).await;
    let recent = batch(200, 60, "recent");
    let old = batch(20, 9 * 86_400, "old");
    store_quietly(&a, &recent).await;
    store_quietly(&a, &old).await;

    let d = spawn_app_with(&[PRIVATE, ("MESHRELAY_SEED_PEERS", &a.base)]).await;
    // Joining the seed happens in the background at start: D pins A, then
    // announces itself; A answers D's sync only once it recorded D.
    let d_key = d.state.node_hex();
    for _ in 0..100 {
        if !d.state.federation.sync_targets().await.unwrap().is_empty()
            && a.state.store.peer(&d_key).await.unwrap().is_some()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let summary = sync_all(&d).await;
    assert!(summary.contains("fetched 200, pushed 0"), "{summary}");
    let want: BTreeSet<String> = recent.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids(&d).await, want);
    // The backfilled payloads are served to clients like any other.
    let (status, body) = d
        .get_json("/v1/payloads?channels=mesh/sync&limit=500")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["payloads"].as_array().map(Vec::len),
        Some(200),
        "{body}"
    );
}

async fn signed_post(app: &TestApp, key: &NodeKey, path: &str, body: &Value) -> (u16, Value) {
    let url = format!("{}{path}", app.base);
    let body = body.to_string();
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    httpsig::sign(
        key,
        "POST",
        &url,
        &mut headers,
        Some(body.as_bytes()),
        now() as i64,
    )
    .unwrap();
    let resp = app
        .client
        .post(url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn sync_and_fetch_refuse_strangers_and_bad_requests() {
    let app = spawn_app_with(&[("MESHRELAY_SYNC_MAX_ITEMS", "10")]).await;
    store_quietly(&app, &batch(11, 60, "x")).await;
    let stranger = NodeKey::generate();
    let first = {
        let set = meshrelay_federation::sync::load_items(
            &app.state.store,
            &Default::default(),
            0,
            u64::MAX,
            100,
        )
        .await
        .unwrap()
        .unwrap();
        let (_, msg) = meshrelay_federation::sync::Session::start(set).unwrap();
        hex::encode(msg)
    };
    let sync_body = json!({"filter": {}, "since": 0, "until": now(), "msg": first});
    let (s, v) = signed_post(&app, &stranger, "/v1/federation/sync", &sync_body).await;
    assert_eq!((s, code(&v)), (401, "unknown_peer"), "{v}");
    let (s, v) = signed_post(&app, &stranger, "/v1/federation/fetch", &json!({"ids": []})).await;
    assert_eq!((s, code(&v)), (401, "unknown_peer"), "{v}");
    // Unsigned.
    let resp = app
        .client
        .post(format!("{}/v1/federation/sync", app.base))
        .json(&sync_body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let peer = app.active_peer().await;
    // Eleven payloads over a cap of ten: too_large, and the initiator splits.
    let (s, v) = signed_post(&app, &peer, "/v1/federation/sync", &sync_body).await;
    assert_eq!((s, code(&v)), (413, "too_large"), "{v}");
    let narrow =
        json!({"filter": {}, "since": now() - 400, "until": now(), "msg": sync_body["msg"]});
    let (s, v) = signed_post(&app, &peer, "/v1/federation/sync", &narrow).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["msg"].as_str().unwrap().starts_with("61"), "{v}");
    for bad in [
        json!({"filter": {}, "since": 0, "until": 1, "msg": "zz"}),
        json!({"filter": {"limit": 5}, "since": 0, "until": 1, "msg": "61"}),
        json!({"filter": {}, "since": 9, "until": 1, "msg": "61"}),
        json!({"filter": {}, "since": 0, "until": 1, "msg": "61".repeat(30_001)}),
        json!({"filter": {"nope": 1}, "since": 0, "until": 1, "msg": "61"}),
    ] {
        let (s, v) = signed_post(&app, &peer, "/v1/federation/sync", &bad).await;
        assert_eq!((s, code(&v)), (400, "bad_request"), "{bad} -> {v}");
    }

    let ids: Vec<String> = (0..501).map(|i| format!("{i:064x}")).collect();
    let (s, v) = signed_post(&app, &peer, "/v1/federation/fetch", &json!({ "ids": ids })).await;
    assert_eq!((s, code(&v)), (413, "too_large"), "{v}");
    let (s, v) = signed_post(
        &app,
        &peer,
        "/v1/federation/fetch",
        &json!({"ids": ["XYZ"]}),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "bad_request"), "{v}");
    // Known ids come back as stored; unknown ones are left out.
    let stored: Vec<String> = crate::sync::ids(&app).await.into_iter().take(3).collect();
    let mut asked = stored.clone();
    asked.push("00".repeat(32));
    let (s, v) = signed_post(
        &app,
        &peer,
        "/v1/federation/fetch",
        &json!({ "ids": asked }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let got: BTreeSet<String> = v["payloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, stored.into_iter().collect());
}

#[tokio::test]
async fn an_unreachable_peer_that_answers_its_poll_is_active_again_and_synced() {
    use meshrelay_store::PeerStatus;
    let a = spawn_app_with(&[PRIVATE]).await;
    let b = spawn_app_with(&[PRIVATE]).await;
    link(&a, &b).await;
    let b_key = b.state.node_hex();
    a.state
        .store
        .set_peer_status(&b_key, PeerStatus::Unreachable)
        .await
        .unwrap();
    // Sync runs with it while it is unreachable: that is how a partition heals.
    let targets = a.state.federation.sync_targets().await.unwrap();
    assert!(targets.iter().any(|t| t.node == b_key), "{targets:?}");
    let (_, outcome) = a.state.federation.poll_now(&b_key).await.unwrap().unwrap();
    assert!(matches!(outcome, Ok(true)));
    let status = a.state.store.peer(&b_key).await.unwrap().unwrap().status;
    assert_eq!(status, PeerStatus::Active);
    // An operator's block is never undone by a poll.
    a.state
        .store
        .set_peer_status(&b_key, PeerStatus::Blocked)
        .await
        .unwrap();
    a.state.federation.poll_now(&b_key).await.unwrap();
    let status = a.state.store.peer(&b_key).await.unwrap().unwrap().status;
    assert_eq!(status, PeerStatus::Blocked);
}
