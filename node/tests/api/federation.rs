//! The federation endpoints against requests a careless or hostile peer could send.

use meshrelay_federation::httpsig;
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};
use serde_json::{json, Value};

use crate::helpers::*;

fn now_secs() -> i64 {
    now() as i64
}

/// POST `body` to `path`, signed by `key` as of `at`.
pub(crate) async fn signed_post(
    app: &TestApp,
    key: &NodeKey,
    path: &str,
    body: &str,
    at: i64,
) -> (u16, Value) {
    let url = format!("{}{path}", app.base);
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    httpsig::sign(key, "POST", &url, &mut headers, Some(body.as_bytes()), at).unwrap();
    send(app, &url, headers, body.to_string()).await
}

async fn send(app: &TestApp, url: &str, headers: http::HeaderMap, body: String) -> (u16, Value) {
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

pub(crate) fn item(p: &Payload) -> Value {
    json!({"payload": p, "hops": 1})
}

fn post_in(channel: &str, content: &str) -> Payload {
    Payload::sign(
        &NodeKey::generate(),
        Draft {
            seq: 1,
            prev: None,
            created_at: now(),
            kind: "post".into(),
            channel: channel.into(),
            tags: vec![],
            content: content.into(),
        },
    )
}

pub(crate) const INBOX: &str = "/v1/federation/inbox";

#[tokio::test]
async fn bad_inbox_requests_are_refused_and_store_nothing() {
    let app = spawn_app_with(&[("MESHRELAY_SUBSCRIBE", r#"[{"channels":["plural/*"]}]"#)]).await;
    let peer = app.active_peer().await;
    let store = &app.state.store;
    let body = json!({"items": [item(&post_in("plural/a", "carried"))]}).to_string();

    // Unsigned.
    let (status, v) = send(
        &app,
        &format!("{}{INBOX}", app.base),
        http::HeaderMap::new(),
        body.clone(),
    )
    .await;
    assert_eq!((status, code(&v)), (401, "auth_failed"));
    // Signed over another body.
    let url = format!("{}{INBOX}", app.base);
    let mut h = http::HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    httpsig::sign(
        &peer,
        "POST",
        &url,
        &mut h,
        Some(b"{\"items\":[]}"),
        now_secs(),
    )
    .unwrap();
    let (status, v) = send(&app, &url, h, body.clone()).await;
    assert_eq!((status, code(&v)), (401, "auth_failed"));
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Content-Digest"));
    // Signed by one key, claiming another's keyid.
    let mut h = http::HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    httpsig::sign(
        &NodeKey::generate(),
        "POST",
        &url,
        &mut h,
        Some(body.as_bytes()),
        now_secs(),
    )
    .unwrap();
    let input = h["signature-input"].to_str().unwrap().to_string();
    let forged = regex_keyid(&input, &peer.public_hex());
    h.insert("signature-input", forged.parse().unwrap());
    let (status, v) = send(&app, &url, h, body.clone()).await;
    assert_eq!((status, code(&v)), (401, "auth_failed"));
    // Stale and from the future.
    for at in [now_secs() - 400, now_secs() + 120] {
        let (status, v) = signed_post(&app, &peer, INBOX, &body, at).await;
        assert_eq!((status, code(&v)), (401, "auth_failed"), "created {at}");
    }
    // Replayed: the very same request twice.
    let mut h = http::HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    let empty = json!({"items": []}).to_string();
    httpsig::sign(
        &peer,
        "POST",
        &url,
        &mut h,
        Some(empty.as_bytes()),
        now_secs(),
    )
    .unwrap();
    assert_eq!(send(&app, &url, h.clone(), empty.clone()).await.0, 202);
    let (status, v) = send(&app, &url, h, empty).await;
    assert_eq!((status, code(&v)), (401, "auth_failed"));
    assert!(v["error"]["message"].as_str().unwrap().contains("replay"));
    // Oversized: over 1 MiB, and over 100 items.
    let big =
        json!({"items": [{"payload": {"content": "x".repeat(1_100_000)}, "hops": 1}]}).to_string();
    let (status, v) = signed_post(&app, &peer, INBOX, &big, now_secs()).await;
    assert_eq!((status, code(&v)), (413, "too_large"));
    let many = json!({"items": vec![json!({"hops": 1}); 101]}).to_string();
    let (status, v) = signed_post(&app, &peer, INBOX, &many, now_secs()).await;
    assert_eq!((status, code(&v)), (413, "too_large"));
    // A valid signature by a key that is not a peer.
    let (status, v) = signed_post(&app, &NodeKey::generate(), INBOX, &body, now_secs()).await;
    assert_eq!((status, code(&v)), (401, "unknown_peer"));
    // Pending and blocked peers.
    store
        .set_peer_status(&peer.public_hex(), meshrelay_store::PeerStatus::Pending)
        .await
        .unwrap();
    let (status, v) = signed_post(&app, &peer, INBOX, &body, now_secs()).await;
    assert_eq!((status, code(&v)), (403, "peer_pending"));
    store
        .set_peer_status(&peer.public_hex(), meshrelay_store::PeerStatus::Blocked)
        .await
        .unwrap();
    let (status, v) = signed_post(&app, &peer, INBOX, &body, now_secs()).await;
    assert_eq!((status, code(&v)), (403, "blocked"));
    assert_eq!(
        store.count_payloads().await.unwrap(),
        0,
        "nothing a refused request carried is stored"
    );
}

/// Replace the keyid parameter's value in a Signature-Input.
fn regex_keyid(input: &str, keyid: &str) -> String {
    let start = input.find("keyid=\"").unwrap() + 7;
    let end = start + input[start..].find('"').unwrap();
    format!("{}{keyid}{}", &input[..start], &input[end..])
}

#[tokio::test]
async fn inbox_items_are_checked_one_by_one() {
    let app = spawn_app_with(&[("MESHRELAY_SUBSCRIBE", r#"[{"channels":["plural/*"]}]"#)]).await;
    let peer = app.active_peer().await;
    let good = post_in("plural/a", "wanted");
    let unwanted = post_in("general", "not wanted here");
    let mut tampered = post_in("plural/b", "original");
    tampered.content = "changed".into();
    let body = json!({"items": [
        item(&good),
        item(&unwanted),
        item(&tampered),
        {"payload": good, "hops": 0},
        {"hops": 1},
        "not an object",
    ]})
    .to_string();
    let (status, v) = signed_post(&app, &peer, INBOX, &body, now_secs()).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(1), Some(0))
    );
    let codes: Vec<(Value, &str)> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].clone(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (json!(unwanted.id), "not_subscribed"),
            (json!(tampered.id), "invalid_id"),
            (json!(good.id), "bad_request"),
            (Value::Null, "bad_request"),
            (Value::Null, "bad_request"),
        ]
    );
    assert_eq!(app.state.store.count_payloads().await.unwrap(), 1);
    // The same payload again is answered as a duplicate.
    let again = json!({"items": [item(&good)]}).to_string();
    let (_, v) = signed_post(&app, &peer, INBOX, &again, now_secs()).await;
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
}

#[tokio::test]
async fn announce_pins_a_nodes_key_and_refuses_mismatches() {
    let b = spawn_app_with(&[("MESHRELAY_ALLOW_PRIVATE_PEERS", "true")]).await;
    let c = spawn_app().await;
    let c_key = (*c.state.node_key).clone();
    let announce = json!({"url": c.base}).to_string();
    // Someone else claiming C's URL: C's document names another key.
    let (status, v) = signed_post(
        &b,
        &NodeKey::generate(),
        "/v1/federation/announce",
        &announce,
        now_secs(),
    )
    .await;
    assert_eq!(status, 422, "{v}");
    // C itself.
    let (status, v) =
        signed_post(&b, &c_key, "/v1/federation/announce", &announce, now_secs()).await;
    assert_eq!((status, v), (202, json!({"status": "active"})));
    let (_, peers) = b.get_json("/v1/federation/peers").await;
    assert_eq!(
        peers,
        json!({"peers": [{"node": c_key.public_hex(), "url": c.base}]})
    );
    // Garbage and unsigned announcements.
    let (status, v) = signed_post(&b, &c_key, "/v1/federation/announce", "{}", now_secs()).await;
    assert_eq!((status, code(&v)), (400, "bad_request"));
    let (status, v) = send(
        &b,
        &format!("{}/v1/federation/announce", b.base),
        http::HeaderMap::new(),
        announce,
    )
    .await;
    assert_eq!((status, code(&v)), (401, "auth_failed"));
}

#[tokio::test]
async fn a_node_refuses_to_fetch_private_addresses_unless_allowed() {
    let b = spawn_app().await; // allow_private_peers is off by default
    let c = spawn_app().await;
    let c_key = (*c.state.node_key).clone();
    let announce = json!({"url": c.base}).to_string();
    let (status, v) =
        signed_post(&b, &c_key, "/v1/federation/announce", &announce, now_secs()).await;
    assert_eq!(status, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{v}"
    );
    assert!(b.state.store.peers().await.unwrap().is_empty());
}

#[tokio::test]
async fn with_approval_required_a_newcomer_waits_as_pending() {
    let b = spawn_app_with(&[
        ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true"),
        ("MESHRELAY_REQUIRE_PEER_APPROVAL", "true"),
    ])
    .await;
    let c = spawn_app().await;
    let c_key = (*c.state.node_key).clone();
    let announce = json!({"url": c.base}).to_string();
    let (status, v) =
        signed_post(&b, &c_key, "/v1/federation/announce", &announce, now_secs()).await;
    assert_eq!((status, v), (202, json!({"status": "pending"})));
    let body = json!({"items": [item(&post_in("general", "too early"))]}).to_string();
    let (status, v) = signed_post(&b, &c_key, INBOX, &body, now_secs()).await;
    assert_eq!((status, code(&v)), (403, "peer_pending"));
    assert_eq!(
        b.get_json("/v1/federation/peers").await.1,
        json!({"peers": []})
    );
    assert_eq!(b.state.store.count_payloads().await.unwrap(), 0);
}

const IHAVE: &str = "/v1/federation/ihave";

/// PROTOCOL.md 5.6, the receiving side: an offer is answered with the ids
/// this node neither holds (shown or hidden) nor keeps a tombstone of, in
/// offer order, once each; only a known peer may offer, within the bounds.
#[tokio::test]
async fn an_offer_is_answered_with_the_ids_this_node_lacks() {
    let app = spawn_app().await;
    let (_, info) = app.get_json("/v1/info").await;
    assert_eq!(info["lazy_forwarding"], true, "{info}");
    let offer = |ids: &[&str]| {
        json!({"items": ids.iter().map(|id| json!({"id": id, "hops": 2})).collect::<Vec<_>>()})
            .to_string()
    };
    let stranger = NodeKey::generate();
    let (s, v) = signed_post(&app, &stranger, IHAVE, &offer(&[]), now_secs()).await;
    assert_eq!((s, code(&v)), (401, "unknown_peer"), "{v}");

    let peer = app.active_peer().await;
    let held = post_in("general", "held");
    assert_eq!(app.publish(&held).await.0, 201);
    let hidden = post_in("general", "removed by the operator");
    assert_eq!(app.publish(&hidden).await.0, 201);
    assert!(app.state.store.hide_payload(&hidden.id).await.unwrap());
    let (lacking, other) = ("ab".repeat(32), "cd".repeat(32));
    let body = offer(&[&lacking, &held.id, &hidden.id, &other, &lacking]);
    let (s, v) = signed_post(&app, &peer, IHAVE, &body, now_secs()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!({"want": [lacking, other]}));

    let many: Vec<String> = (0..1001).map(|i| format!("{i:064x}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (s, v) = signed_post(&app, &peer, IHAVE, &offer(&many), now_secs()).await;
    assert_eq!((s, code(&v)), (413, "too_large"), "{v}");
    for bad in [
        offer(&["XYZ"]),
        json!({"items": [{"id": lacking}]}).to_string(),
        "[]".to_string(),
    ] {
        let (s, v) = signed_post(&app, &peer, IHAVE, &bad, now_secs()).await;
        assert_eq!((s, code(&v)), (400, "bad_request"), "{bad} -> {v}");
    }
}
