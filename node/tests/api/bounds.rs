//! PROTOCOL.md 10 as a hostile client meets it: each bound refuses with its
//! documented code, and the node stays up and answers others meanwhile.

use std::time::Duration;

use futures_util::StreamExt;
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// A payload whose tags make it large while its content stays small: the
/// field rules allow 64 tags of 8 strings of 1 KiB.
fn tag_heavy(key: &NodeKey, tags: usize, content: usize) -> Payload {
    let value = "v".repeat(1000);
    let tags = (0..tags)
        .map(|i| {
            let mut t = vec![format!("t{i}")];
            t.extend(std::iter::repeat_n(value.clone(), 7));
            t
        })
        .collect();
    Payload::sign(
        key,
        Draft {
            seq: 1,
            prev: None,
            created_at: now(),
            kind: "post".into(),
            channel: "bounds".into(),
            tags,
            content: "c".repeat(content),
        },
    )
}

#[tokio::test]
async fn a_payload_over_max_payload_bytes_is_too_large_on_both_paths() {
    let app = spawn_app_with(&[("MESHRELAY_MAX_PAYLOAD_BYTES", "100000")]).await;
    let key = NodeKey::generate();
    let big = tag_heavy(&key, 20, 5); // about 140 KB, content of 5 bytes
    assert!(big.to_json().len() > 100_000);
    let (status, v) = app.publish(&big).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("too_large"))
    );

    let mut ws = app.ws().await;
    assert_eq!(ws.hello["limits"]["max_payload_bytes"], 100_000);
    // Under the frame limit, over the payload one.
    let big = tag_heavy(&NodeKey::generate(), 14, 1_700);
    assert!(big.to_json().len() > 100_000 && big.to_json().len() < 100_000 + 1024);
    ws.send_json(json!({"op": "publish", "payload": big})).await;
    let ok = ws.next_json().await;
    assert_eq!(
        (ok["accepted"].as_bool(), ok["code"].as_str()),
        (Some(false), Some("too_large"))
    );
    assert!(app.get_json(&format!("/v1/payloads/{}", big.id)).await.0 == 404);
    // Under the bound, the same shape is stored.
    let fits = tag_heavy(&NodeKey::generate(), 10, 5);
    assert_eq!(app.publish(&fits).await.0, 201);
}

#[tokio::test]
async fn a_filter_over_max_filter_values_is_refused_everywhere() {
    let app = spawn_app_with(&[("MESHRELAY_MAX_FILTER_VALUES", "8")]).await;
    let tags: Vec<String> = (0..9).map(|i| format!("v{i}")).collect();
    let (status, v) = app
        .get_json(&format!("/v1/payloads?tag_t={}", tags.join(",")))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    // Counted over all lists: 5 kinds and 4 tag values are 9.
    let (status, _) = app
        .get_json("/v1/payloads?kinds=a,b,c,d,e&tag_t=1,2,3,4")
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        app.get_json("/v1/payloads?kinds=a,b,c,d&tag_t=1,2,3,4")
            .await
            .0,
        200
    );

    let mut ws = app.ws().await;
    ws.send_json(json!({"op": "subscribe", "sub": "s", "filters": [{"tags": {"t": tags}}]}))
        .await;
    let err = ws.next_json().await;
    assert_eq!(
        (
            err["op"].as_str(),
            err["code"].as_str(),
            err["ref"].as_str()
        ),
        (Some("error"), Some("bad_request"), Some("s"))
    );
    // The refused subscription was never started: nothing live arrives for it.
    ws.send_json(json!({"op": "ping"})).await;
    assert_eq!(ws.next_json().await, json!({"op": "pong"}));
}

#[tokio::test]
async fn a_query_page_stops_at_max_response_bytes_and_gives_its_cursor() {
    let app = spawn_app_with(&[
        ("MESHRELAY_MAX_RESPONSE_BYTES", "200000"),
        ("MESHRELAY_MAX_PAYLOAD_BYTES", "100000"),
    ])
    .await;
    let key = NodeKey::generate();
    let content = "c".repeat(60_000);
    let mut prev: Option<String> = None;
    for seq in 1..=8 {
        let p = signed(&key, seq, prev.as_deref(), "big", &content);
        assert_eq!(app.publish(&p).await.0, 201);
        prev = Some(p.id.clone());
    }
    let mut seen = 0;
    let mut path = "/v1/payloads?channels=big&limit=500".to_string();
    loop {
        let resp = app.get(&path).await;
        let text = resp.text().await.unwrap();
        assert!(text.len() <= 200_000, "a page of {} bytes", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        seen += v["payloads"].as_array().unwrap().len();
        match v["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/payloads?channels=big&limit=500&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, 8, "paging by cursor reaches every payload");
    let log = app
        .get(&format!("/v1/authors/{}/log?limit=500", key.public_hex()))
        .await;
    assert!(log.text().await.unwrap().len() <= 200_000);
}

#[tokio::test]
async fn a_silent_websocket_is_closed_after_ws_idle_secs() {
    let app = spawn_app_with(&[("MESHRELAY_WS_IDLE_SECS", "1")]).await;
    let mut ws = app.ws().await;
    let mut alive = app.ws().await;
    let started = std::time::Instant::now();
    let mut code = None;
    while started.elapsed() < Duration::from_secs(10) {
        // One connection keeps talking; the other says nothing.
        alive.send_json(json!({"op": "ping"})).await;
        assert_eq!(alive.next_json().await, json!({"op": "pong"}));
        let next = tokio::time::timeout(Duration::from_millis(300), ws.stream.next()).await;
        if let Ok(Some(Ok(Message::Close(Some(frame))))) = next {
            code = Some((frame.code, frame.reason.to_string()));
            break;
        }
    }
    assert_eq!(code, Some((CloseCode::Away, "idle".to_string())));
    assert_eq!(
        alive.maybe_json(100).await,
        None,
        "the talking one stays open"
    );
    alive.send_json(json!({"op": "ping"})).await;
    assert_eq!(alive.next_json().await, json!({"op": "pong"}));
}

#[tokio::test]
async fn a_reader_that_stops_is_closed_once_its_queue_passes_ws_queue_bytes() {
    let app = spawn_app_with(&[("MESHRELAY_WS_QUEUE_BYTES", "1000000")]).await;
    let mut slow = app.ws().await;
    slow.send_json(json!({"op": "subscribe", "sub": "all", "filters": [{"limit": 0}]}))
        .await;
    assert_eq!(slow.next_json().await["op"], "eose");
    let key = NodeKey::generate();
    let content = "z".repeat(60_000);
    // Loopback socket buffers take a few MB before the queue fills at all;
    // the queue then passes 1 MB long before its frame count (16,000) would.
    let mut frames = 0;
    for i in 1..=1000u64 {
        let p = signed(&key, i, None, "flood", &content);
        assert_eq!(app.publish(&p).await.0, 201);
        frames = i;
        if app.state.metrics.ws_slow_consumers.get() >= 1 {
            break;
        }
    }
    assert!(
        app.state.metrics.ws_slow_consumers.get() >= 1,
        "never cut off"
    );
    assert!(
        frames < 600,
        "closed after {frames} frames: bytes, not frames, decided"
    );
    assert_eq!(
        slow.close_frame(15).await,
        Some((CloseCode::Policy, "slow consumer".to_string()))
    );
}

#[tokio::test]
async fn connections_past_max_connections_per_ip_are_closed_at_accept() {
    let app = spawn_app_with(&[("MESHRELAY_MAX_CONNECTIONS_PER_IP", "3")]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(app.ws().await);
    }
    let url = format!("{}/v1/ws", app.base.replacen("http://", "ws://", 1));
    assert!(
        tokio_tungstenite::connect_async(&url).await.is_err(),
        "a fourth connection from one address is refused"
    );
    assert!(app.state.metrics.connections_refused.get() >= 1);
    // A slot is given back when its connection closes.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "the freed slot was never given back");
}

#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off_at_request_timeout_secs() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(&[("MESHRELAY_REQUEST_TIMEOUT_SECS", "1")]).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed = false;
    for byte in head {
        if slow.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            // An answer (408) before the head was complete: also cut off.
            Ok(Ok(_)) => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(closed, "the slow head was served to the end");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // Others are served meanwhile.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// A WebSocket upgrade with `X-Forwarded-For`, sent from this machine.
async fn upgrade_as(base: &str, forwarded: &str) -> Result<(), u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/v1/ws", base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("x-forwarded-for", forwarded.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => {
            // Held open by leaking into a task that waits for the test's end.
            tokio::spawn(async move {
                let _ws = ws;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
            Ok(())
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_the_one_counted() {
    // Loopback is the proxy: its own connections are not capped per
    // address, the clients it forwards are.
    let app = spawn_app_with(&[
        ("MESHRELAY_MAX_CONNECTIONS_PER_IP", "2"),
        ("MESHRELAY_TRUSTED_PROXIES", "127.0.0.0/8"),
    ])
    .await;
    for _ in 0..2 {
        upgrade_as(&app.base, "203.0.113.7").await.unwrap();
    }
    assert_eq!(
        upgrade_as(&app.base, "203.0.113.7").await,
        Err(429),
        "a third WebSocket of one forwarded client"
    );
    // A client cannot pose as another by writing the header itself: the
    // right-most address that is not a trusted proxy counts.
    assert_eq!(
        upgrade_as(&app.base, "198.51.100.1, 203.0.113.7").await,
        Err(429)
    );
    for _ in 0..2 {
        upgrade_as(&app.base, "203.0.113.8, 127.0.0.1")
            .await
            .unwrap();
    }
    // Without a forwarded address the proxy's own connections are not capped.
    for _ in 0..3 {
        app.ws().await;
    }
}

#[tokio::test]
async fn an_untrusted_peer_s_forwarded_for_is_ignored() {
    let app = spawn_app_with(&[("MESHRELAY_MAX_CONNECTIONS_PER_IP", "2")]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(app.ws().await);
    }
    // Loopback is not trusted: the header changes nothing, the TCP address
    // is at its cap and the connection is closed at accept.
    let url = format!("{}/v1/ws", app.base.replacen("http://", "ws://", 1));
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}
