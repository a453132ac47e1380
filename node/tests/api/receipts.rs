//! Receipts and signed heads (PROTOCOL.md 4.4) as a client sees them: every
//! accepting answer, over HTTP and WebSocket, carries a receipt signed by the
//! node key of `/v1/info`, with the time the payload was first stored; heads
//! are signed with the time of the answer.

use meshrelay_protocol::receipt::{Receipt, SignedHead};
use meshrelay_protocol::NodeKey;
use serde_json::{json, Value};

use crate::helpers::*;

async fn node_key(app: &TestApp) -> String {
    let (_, info) = app.get_json("/v1/info").await;
    info["node"].as_str().unwrap().to_string()
}

fn receipt_of(answer: &Value) -> Receipt {
    let r: Receipt = serde_json::from_value(answer["receipt"].clone())
        .unwrap_or_else(|e| panic!("no receipt in {answer}: {e}"));
    r.verify().unwrap();
    r
}

#[tokio::test]
async fn http_and_websocket_receipts_verify_and_keep_the_first_time() {
    let app = spawn_app().await;
    let node = node_key(&app).await;
    let key = NodeKey::generate();
    let p = signed(&key, 1, None, "general", "kept");
    let before = now();
    let (status, body) = app.publish(&p).await;
    assert_eq!(status, 201);
    let first = receipt_of(&body);
    assert_eq!(
        (first.node.as_str(), first.id.as_str()),
        (node.as_str(), p.id.as_str())
    );
    assert!(
        (before..=now()).contains(&first.received_at),
        "received_at {} is the time of storing",
        first.received_at
    );

    // Over WebSocket: a new payload's receipt, and a duplicate's naming the
    // time of its first storage over HTTP, a second or more later.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut ws = app.ws().await;
    let q = signed(&key, 2, Some(&p.id), "general", "also kept");
    for payload in [&q, &p] {
        ws.send_json(json!({"op": "publish", "payload": payload}))
            .await;
        let ok = ws.next_json().await;
        assert_eq!((&ok["op"], &ok["accepted"]), (&json!("ok"), &json!(true)));
        let r = receipt_of(&ok);
        assert_eq!(
            (r.node.as_str(), r.id.as_str()),
            (node.as_str(), payload.id.as_str())
        );
        if payload.id == p.id {
            assert_eq!(ok["duplicate"], true);
            assert_eq!(r, first, "the duplicate's receipt is the original one");
        } else {
            assert!(r.received_at > first.received_at);
        }
    }
}

#[tokio::test]
async fn a_hidden_payload_published_again_gets_its_original_receipt() {
    let app = spawn_app().await;
    let p = signed(&NodeKey::generate(), 1, None, "general", "to be removed");
    let (_, body) = app.publish(&p).await;
    let first = receipt_of(&body);
    app.state.store.hide_payload(&p.id).await.unwrap();
    // Not via the recent-ids cache: a restart-like path through the store.
    app.state.seen.invalidate_all();
    let (status, body) = app.publish(&p).await;
    assert_eq!((status, &body["duplicate"]), (200, &json!(true)));
    assert_eq!(receipt_of(&body), first);
    assert_eq!(app.get_json(&format!("/v1/payloads/{}", p.id)).await.0, 404);
}

#[tokio::test]
async fn the_head_is_signed_by_the_node_at_the_time_of_the_answer() {
    let app = spawn_app().await;
    let node = node_key(&app).await;
    let key = NodeKey::generate();
    let p1 = signed(&key, 1, None, "general", "one");
    let p2 = signed(&key, 2, Some(&p1.id), "general", "two");
    for p in [&p1, &p2] {
        assert_eq!(app.publish(p).await.0, 201);
    }
    let before = now();
    let (status, body) = app
        .get_json(&format!("/v1/authors/{}/head", key.public_hex()))
        .await;
    assert_eq!(status, 200);
    let head: SignedHead = serde_json::from_value(body.clone()).unwrap();
    head.verify().unwrap();
    assert_eq!(
        (head.node.as_str(), head.seq, head.id.as_str()),
        (node.as_str(), 2, p2.id.as_str())
    );
    assert!((before..=now()).contains(&head.at));
    // Altering what it says breaks the signature.
    let mut forged = head.clone();
    forged.seq = 1;
    forged.id = p1.id.clone();
    assert!(forged.verify().is_err());
}
