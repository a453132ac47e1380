//! The WebSocket protocol of PROTOCOL.md 4.2.

use std::time::Duration;

use futures_util::StreamExt;
use meshrelay_protocol::keys::auth_message;
use meshrelay_protocol::NodeKey;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

async fn auth(ws: &mut WsClient, key: &NodeKey) {
    let node = ws.hello["node"].as_str().unwrap().to_string();
    let challenge = ws.hello["challenge"].as_str().unwrap().to_string();
    let sig = hex::encode(key.sign(auth_message(&node, &challenge).as_bytes()));
    ws.send_json(json!({"op": "auth", "pubkey": key.public_hex(), "sig": sig}))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"op": "auth_ok", "pubkey": key.public_hex()})
    );
}

#[tokio::test]
async fn hello_carries_a_fresh_challenge_that_auth_must_sign() {
    let app = spawn_app().await;
    let (_, info) = app.get_json("/v1/info").await;
    let mut a = app.ws().await;
    let b = app.ws().await;
    assert_eq!(a.hello["node"], info["node"]);
    let challenge = a.hello["challenge"].as_str().unwrap();
    assert_eq!(challenge.len(), 64);
    assert_ne!(a.hello["challenge"], b.hello["challenge"]);
    assert_eq!(a.hello["limits"]["max_limit"], 500);

    // A signature over another connection's challenge is refused.
    let key = NodeKey::generate();
    let wrong = auth_message(
        a.hello["node"].as_str().unwrap(),
        b.hello["challenge"].as_str().unwrap(),
    );
    let sig = hex::encode(key.sign(wrong.as_bytes()));
    a.send_json(json!({"op": "auth", "pubkey": key.public_hex(), "sig": sig}))
        .await;
    let err = a.next_json().await;
    assert_eq!(
        (
            err["op"].as_str(),
            err["code"].as_str(),
            err["ref"].as_str()
        ),
        (Some("error"), Some("auth_failed"), Some("auth"))
    );
    auth(&mut a, &key).await;
}

#[tokio::test]
async fn publish_acknowledges_after_storing_and_refuses_with_a_code() {
    let app = spawn_app().await;
    let mut ws = app.ws().await;
    let p = signed(&NodeKey::generate(), 1, None, "general", "ws");
    ws.send_json(json!({"op": "publish", "payload": p})).await;
    assert_eq!(
        without_receipt(ws.next_json().await),
        json!({"op": "ok", "id": p.id, "accepted": true, "duplicate": false})
    );
    assert_eq!(app.get_json(&format!("/v1/payloads/{}", p.id)).await.0, 200);
    ws.send_json(json!({"op": "publish", "payload": p})).await;
    assert_eq!(ws.next_json().await["duplicate"], true);

    let bad = &vectors("payloads.json")["invalid"][0];
    ws.send_json(json!({"op": "publish", "payload": bad["payload"]}))
        .await;
    let answer = ws.next_json().await;
    assert_eq!(answer["op"], "ok");
    assert_eq!(answer["accepted"], false);
    assert_eq!(answer["code"], bad["code"]);
    assert_eq!(answer["id"], bad["payload"]["id"]);
    // Strictness applies inside frames too: a float in the payload is invalid.
    let text = format!(
        r#"{{"op":"publish","payload":{}}}"#,
        p.to_json().replacen("\"seq\":1", "\"seq\":1.0", 1)
    );
    ws.send_text(&text).await;
    assert_eq!(ws.next_json().await["code"], "invalid_payload");
}

#[tokio::test]
async fn subscribe_sends_stored_matches_then_eose_then_each_live_match_once() {
    let app = spawn_app().await;
    let key = NodeKey::generate();
    let old: Vec<_> = (1..=3u64)
        .map(|i| {
            signed_at(
                &key,
                i,
                None,
                "plural/a",
                &format!("old {i}"),
                now() - 100 + i,
            )
        })
        .collect();
    for p in &old {
        app.publish(p).await;
    }
    app.publish(&signed(&key, 9, None, "elsewhere", "not wanted"))
        .await;
    let mut ws = app.ws().await;
    ws.send_json(json!({"op": "subscribe", "sub": "s1", "filters": [{"channels": ["plural/*"]}]}))
        .await;
    for want in old.iter().rev() {
        let f = ws.next_json().await;
        assert_eq!(
            (f["op"].as_str(), f["sub"].as_str()),
            (Some("payload"), Some("s1"))
        );
        assert_eq!(f["payload"]["id"], want.id.as_str(), "newest first");
    }
    assert_eq!(ws.next_json().await, json!({"op": "eose", "sub": "s1"}));

    let live = signed(&key, 4, None, "plural/b", "live");
    app.publish(&signed(&key, 5, None, "pluralx", "not wanted"))
        .await;
    app.publish(&live).await;
    app.publish(&live).await; // a duplicate is not delivered again
    let f = ws.next_json().await;
    assert_eq!(f["payload"]["id"], live.id.as_str());
    assert_eq!(f["payload"]["content"], "live");
    assert_eq!(ws.maybe_json(300).await, None, "each match arrives once");
}

#[tokio::test]
async fn a_filter_limit_bounds_the_backfill_and_zero_means_live_only() {
    let app = spawn_app().await;
    let key = NodeKey::generate();
    for i in 1..=5u64 {
        app.publish(&signed_at(&key, i, None, "c", "x", now() - 50 + i))
            .await;
    }
    let mut ws = app.ws().await;
    ws.send_json(json!({"op": "subscribe", "sub": "two", "filters": [{"limit": 2}]}))
        .await;
    assert_eq!(ws.next_json().await["op"], "payload");
    assert_eq!(ws.next_json().await["op"], "payload");
    assert_eq!(ws.next_json().await["op"], "eose");
    ws.send_json(json!({"op": "subscribe", "sub": "none", "filters": [{"limit": 0}]}))
        .await;
    assert_eq!(ws.next_json().await, json!({"op": "eose", "sub": "none"}));
}

#[tokio::test]
async fn resubscribing_replaces_and_unsubscribe_says_why_it_closed() {
    let app = spawn_app().await;
    let key = NodeKey::generate();
    let mut ws = app.ws().await;
    ws.send_json(json!({"op": "subscribe", "sub": "s", "filters": [{"channels": ["a"]}]}))
        .await;
    assert_eq!(ws.next_json().await["op"], "eose");
    ws.send_json(json!({"op": "subscribe", "sub": "s", "filters": [{"channels": ["b"]}]}))
        .await;
    assert_eq!(ws.next_json().await["op"], "eose");
    app.publish(&signed(&key, 1, None, "a", "old filter")).await;
    let pb = signed(&key, 2, None, "b", "new filter");
    app.publish(&pb).await;
    assert_eq!(ws.next_json().await["payload"]["id"], pb.id.as_str());
    ws.send_json(json!({"op": "unsubscribe", "sub": "s"})).await;
    assert_eq!(
        ws.next_json().await,
        json!({"op": "closed", "sub": "s", "reason": "unsubscribed"})
    );
    ws.send_json(json!({"op": "unsubscribe", "sub": "s"})).await;
    assert_eq!(
        ws.next_json().await,
        json!({"op": "closed", "sub": "s", "reason": "unknown"})
    );
    app.publish(&signed(&key, 3, None, "b", "after")).await;
    assert_eq!(ws.maybe_json(300).await, None);
}

#[tokio::test]
async fn signals_reach_other_connections_subscribed_to_the_channel_only() {
    let app = spawn_app().await;
    let alice = NodeKey::generate();
    let mut a = app.ws().await;
    let mut b = app.ws().await; // channel pattern: gets it
    let mut c = app.ws().await; // filter without channels: does not
    b.send_json(json!({"op": "subscribe", "sub": "x", "filters": [{"channels": ["room/*"]}]}))
        .await;
    assert_eq!(b.next_json().await["op"], "eose");
    c.send_json(json!({"op": "subscribe", "sub": "x", "filters": [{}]}))
        .await;
    assert_eq!(c.next_json().await["op"], "eose");
    a.send_json(json!({"op": "subscribe", "sub": "me", "filters": [{"channels": ["room/1"]}]}))
        .await;
    assert_eq!(a.next_json().await["op"], "eose");

    let signal =
        json!({"op": "signal", "channel": "room/1", "type": "typing", "data": {"on": true}});
    a.send_json(signal.clone()).await;
    let err = a.next_json().await;
    assert_eq!(
        (err["code"].as_str(), err["ref"].as_str()),
        (Some("auth_required"), Some("signal"))
    );
    auth(&mut a, &alice).await;
    a.send_json(signal).await;
    assert_eq!(
        b.next_json().await,
        json!({"op": "signal", "from": alice.public_hex(), "channel": "room/1", "type": "typing", "data": {"on": true}})
    );
    assert_eq!(c.maybe_json(300).await, None);
    assert_eq!(a.maybe_json(100).await, None, "not echoed to the sender");
    let big = json!({"op": "signal", "channel": "room/1", "type": "typing", "data": {"x": "y".repeat(5000)}});
    a.send_json(big).await;
    assert_eq!(a.next_json().await["code"], "too_large");
}

#[tokio::test]
async fn subscription_and_filter_limits_answer_with_their_codes() {
    let app = spawn_app_with(&[
        ("MESHRELAY_MAX_SUBSCRIPTIONS", "2"),
        ("MESHRELAY_MAX_FILTERS", "2"),
    ])
    .await;
    let mut ws = app.ws().await;
    for sub in ["a", "b"] {
        ws.send_json(json!({"op": "subscribe", "sub": sub, "filters": [{}]}))
            .await;
        assert_eq!(ws.next_json().await["op"], "eose");
    }
    ws.send_json(json!({"op": "subscribe", "sub": "c", "filters": [{}]}))
        .await;
    let err = ws.next_json().await;
    assert_eq!(
        (err["code"].as_str(), err["ref"].as_str()),
        (Some("too_many_subscriptions"), Some("c"))
    );
    // Replacing a live subscription is not a new one.
    ws.send_json(json!({"op": "subscribe", "sub": "a", "filters": [{}]}))
        .await;
    assert_eq!(ws.next_json().await["op"], "eose");
    ws.send_json(json!({"op": "subscribe", "sub": "a", "filters": [{}, {}, {}]}))
        .await;
    assert_eq!(ws.next_json().await["code"], "bad_request");
}

#[tokio::test]
async fn malformed_frames_get_an_error_and_the_connection_lives_on() {
    let app = spawn_app().await;
    let mut ws = app.ws().await;
    for bad in [
        "not json",
        r#"{"op":"nope"}"#,
        r#"{"no":"op"}"#,
        r#"{"op":"subscribe","sub":"s","filters":[{"authors":["XYZ"]}]}"#,
        r#"{"op":"subscribe","sub":"s","filters":[{"bogus":1}]}"#,
        r#"{"op":"publish"}"#,
    ] {
        ws.send_text(bad).await;
        let err = ws.next_json().await;
        assert_eq!(
            (err["op"].as_str(), err["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{bad}"
        );
    }
    futures_util::SinkExt::send(&mut ws.stream, Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(ws.next_json().await["code"], "bad_request");
    ws.send_json(json!({"op": "ping"})).await;
    assert_eq!(ws.next_json().await, json!({"op": "pong"}));
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_closed_with_1008_and_others_carry_on() {
    // A tiny queue bound (1 filter x 5 results + 256) and big payloads fill it fast.
    let app = spawn_app_with(&[("MESHRELAY_MAX_LIMIT", "5"), ("MESHRELAY_MAX_FILTERS", "1")]).await;
    let mut slow = app.ws().await;
    slow.send_json(json!({"op": "subscribe", "sub": "all", "filters": [{}]}))
        .await;
    assert_eq!(slow.next_json().await["op"], "eose");
    let mut healthy = app.ws().await;

    let key = NodeKey::generate();
    let content = "z".repeat(60_000);
    let mut closed = false;
    for i in 1..=2000u64 {
        let p = signed(&key, i, None, "flood", &content);
        assert_eq!(app.publish(&p).await.0, 201);
        if i % 100 == 0 && app.state.metrics.ws_slow_consumers.get() > 0 {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow reader was never cut off");
    // Drain what was queued: the stream ends with a 1008 close.
    assert_eq!(
        slow.close_frame(15).await,
        Some((CloseCode::Policy, "slow consumer".to_string()))
    );
    healthy.send_json(json!({"op": "ping"})).await;
    assert_eq!(healthy.next_json().await, json!({"op": "pong"}));
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001() {
    let app = spawn_app().await;
    let mut ws = app.ws().await;
    app.shutdown.cancel();
    let msg = tokio::time::timeout(Duration::from_secs(10), ws.stream.next())
        .await
        .unwrap();
    match msg {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    app.handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn signals_spend_the_connection_budget_and_a_blocked_key_is_not_relayed() {
    let app = spawn_app_with(&[
        ("MESHRELAY_PUBLISH_RATE", "1"),
        ("MESHRELAY_PUBLISH_BURST", "3"),
    ])
    .await;
    let alice = NodeKey::generate();
    let mut a = app.ws().await;
    let mut b = app.ws().await;
    b.send_json(json!({"op": "subscribe", "sub": "x", "filters": [{"channels": ["room/*"]}]}))
        .await;
    assert_eq!(b.next_json().await["op"], "eose");
    auth(&mut a, &alice).await;
    let signal = json!({"op": "signal", "channel": "room/1", "type": "typing", "data": {}});
    for _ in 0..5 {
        a.send_json(signal.clone()).await;
    }
    let mut relayed = 0;
    while let Some(v) = b.maybe_json(300).await {
        assert_eq!(v["op"], "signal");
        relayed += 1;
    }
    assert_eq!(relayed, 3, "a burst of 3, then the budget is spent");
    for _ in 0..2 {
        let err = a.next_json().await;
        assert_eq!(
            (err["code"].as_str(), err["ref"].as_str()),
            (Some("rate_limited"), Some("signal"))
        );
    }
    app.state
        .store
        .block_author(&alice.public_hex(), 1)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // one more in the budget
    a.send_json(signal).await;
    assert_eq!(a.next_json().await["code"], "blocked");
    assert_eq!(
        b.maybe_json(300).await,
        None,
        "a blocked key's signal is not relayed"
    );
}

#[tokio::test]
async fn more_connections_from_one_address_buy_no_more_publishes() {
    let app = spawn_app_with(&[
        ("MESHRELAY_PUBLISH_RATE", "1"),
        ("MESHRELAY_PUBLISH_BURST", "3"),
    ])
    .await;
    let key = NodeKey::generate();
    let mut first = app.ws().await;
    for seq in 1..=3 {
        let p = signed(&key, seq, None, "budget", &format!("{seq}"));
        first
            .send_json(json!({"op": "publish", "payload": p}))
            .await;
        assert_eq!(first.next_json().await["accepted"], true);
    }
    // A second connection from the same address shares the spent budget.
    let mut second = app.ws().await;
    let p = signed(&key, 4, None, "budget", "4");
    second
        .send_json(json!({"op": "publish", "payload": p}))
        .await;
    let ok = second.next_json().await;
    assert_eq!(
        (ok["accepted"].as_bool(), ok["code"].as_str()),
        (Some(false), Some("rate_limited"))
    );
    // So does HTTP from it.
    let p = signed(&key, 5, None, "budget", "5");
    assert_eq!(app.publish(&p).await.0, 429);
}
