//! Peers that mean harm, as small test servers answering what a hostile peer
//! would (PROTOCOL.md 10): a sync responder that never ends, giant error
//! bodies, an inbox on someone else's origin, and strangers announcing in
//! bulk. Each costs only its own session, loop or budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Json;
use meshrelay::ingest::PeerIngest;
use meshrelay_federation::client::Outbound;
use meshrelay_protocol::node_doc::{NodeDoc, Software, Subscribe};
use meshrelay_protocol::NodeKey;
use meshrelay_store::{OutboxState, PeerStatus};
use serde_json::{json, Value};

use crate::helpers::*;

const PRIVATE: (&str, &str) = ("MESHRELAY_ALLOW_PRIVATE_PEERS", "true");

/// How a hostile peer answers.
#[derive(Clone, Copy)]
enum Mischief {
    /// Every sync round answered "the whole range differs": a session that
    /// never converges.
    EndlessSync,
    /// Every inbox request answered 500 with a 2 MiB body.
    GiantErrors,
    /// A document whose inbox is on another origin.
    ForeignInbox,
}

struct Hostile {
    base: String,
    key: Arc<NodeKey>,
    /// Requests it answered, by kind.
    sync_rounds: Arc<AtomicU64>,
}

async fn hostile(mischief: Mischief) -> Hostile {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let key = Arc::new(NodeKey::generate());
    let sync_rounds = Arc::new(AtomicU64::new(0));
    let doc = {
        let inbox = match mischief {
            Mischief::ForeignInbox => "http://127.0.0.2:9/v1/federation/inbox".to_string(),
            _ => format!("{base}/v1/federation/inbox"),
        };
        NodeDoc {
            node: key.public_hex(),
            url: base.clone(),
            software: Software {
                name: "hostile".into(),
                version: "0".into(),
            },
            inbox,
            subscribe: Subscribe::All,
            issued_at: now(),
        }
        .sign(&key)
    };
    let rounds = sync_rounds.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/meshrelay",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc) }
            }),
        )
        .route(
            "/v1/federation/announce",
            post(|| async {
                (
                    axum::http::StatusCode::ACCEPTED,
                    Json(json!({"status": "active"})),
                )
            }),
        )
        .route(
            "/v1/federation/sync",
            post(move || {
                let rounds = rounds.clone();
                async move {
                    rounds.fetch_add(1, Ordering::Relaxed);
                    // Version 0x61, one range to infinity, mode Fingerprint, a
                    // fingerprint that never matches.
                    let msg = format!("61000001{}", "ab".repeat(16));
                    Json(json!({ "msg": msg }))
                }
            }),
        )
        .route(
            "/v1/federation/inbox",
            post(move || async move {
                match mischief {
                    Mischief::GiantErrors => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "x".repeat(2 * 1024 * 1024),
                    ),
                    _ => (
                        axum::http::StatusCode::ACCEPTED,
                        r#"{"accepted":0,"duplicates":0,"rejected":[]}"#.to_string(),
                    ),
                }
            }),
        )
        .route(
            "/v1/federation/fetch",
            post(|| async { Json(json!({"payloads": []})) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Hostile {
        base,
        key,
        sync_rounds,
    }
}

#[tokio::test]
async fn an_endless_sync_responder_is_cut_off_and_the_honest_peer_still_syncs() {
    let a = spawn_app_with(&[PRIVATE, ("MESHRELAY_SYNC_MAX_ROUNDS", "64")]).await;
    let honest = spawn_app_with(&[PRIVATE]).await;
    let evil = hostile(Mischief::EndlessSync).await;
    a.state.federation.join(&honest.base).await.unwrap();
    a.state.federation.join(&evil.base).await.unwrap();
    // What the honest peer holds and A lacks (stored there without forwarding).
    let key = NodeKey::generate();
    let mut prev: Option<String> = None;
    for seq in 1..=30 {
        let p = signed(&key, seq, prev.as_deref(), "mesh/hostile", "x");
        prev = Some(p.id.clone());
        honest
            .state
            .writer
            .write(Arc::new(p.clone()), p.to_json().into(), None, 1)
            .await
            .unwrap();
    }
    // A payload A holds, so its item set is not empty.
    assert_eq!(
        a.publish(&signed(&NodeKey::generate(), 1, None, "mesh/a", "y"))
            .await
            .0,
        201
    );

    let ingest = PeerIngest(a.state.clone());
    let job = a.state.federation.sync_all(&ingest);
    let summary = tokio::time::timeout(Duration::from_secs(60), job)
        .await
        .expect("the sync job ended")
        .unwrap();
    assert!(summary.starts_with("synced with 1 of 2 peers"), "{summary}");
    let rounds = evil.sync_rounds.load(Ordering::Relaxed);
    // Exactly the bound: the session would have gone on (it did, 33,463
    // rounds, before sessions were bounded).
    assert_eq!(rounds, 64, "the hostile session ran {rounds} rounds");
    let (_, page) = a
        .get_json("/v1/payloads?channels=mesh/hostile&limit=100")
        .await;
    assert_eq!(page["payloads"].as_array().unwrap().len(), 30);
}

#[tokio::test]
async fn a_peers_giant_error_body_is_kept_and_logged_to_one_kib() {
    let a = spawn_app_with(&[PRIVATE]).await;
    let evil = hostile(Mischief::GiantErrors).await;
    a.state.federation.join(&evil.base).await.unwrap();
    assert_eq!(
        a.publish(&signed(&NodeKey::generate(), 1, None, "c", "x"))
            .await
            .0,
        201
    );
    let peer = evil.key.public_hex();
    let mut error = None;
    for _ in 0..100 {
        let items = a
            .state
            .store
            .outbox_items(OutboxState::Pending, 10)
            .await
            .unwrap();
        if let Some(e) = items
            .iter()
            .find(|i| i.peer == peer)
            .and_then(|i| i.last_error.clone())
        {
            error = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = error.expect("the failed delivery was recorded");
    assert!(error.starts_with("HTTP 500: xxx"), "{}", &error[..40]);
    assert!(
        error.len() <= 1024 + 64,
        "kept {} bytes of the peer's error",
        error.len()
    );
}

#[tokio::test]
async fn a_document_whose_inbox_is_on_another_origin_is_refused() {
    let a = spawn_app_with(&[PRIVATE]).await;
    let evil = hostile(Mischief::ForeignInbox).await;
    let err = a.state.federation.join(&evil.base).await.unwrap_err();
    assert!(
        err.to_string().contains("not on the document's origin"),
        "{err}"
    );
    assert!(a
        .state
        .store
        .peer(&evil.key.public_hex())
        .await
        .unwrap()
        .is_none());
}

/// An announce to `app` signed by `key`, saying `url`.
async fn announce(app: &TestApp, key: &Arc<NodeKey>, url: &str) -> (u16, Value) {
    let out = Outbound::new(key.clone(), true);
    let body = json!({ "url": url }).to_string().into_bytes();
    let target = format!("{}/v1/federation/announce", app.base);
    let answer = out
        .post_signed(&target, body, meshrelay_protocol::clock::now_secs())
        .await
        .unwrap();
    (
        answer.status,
        serde_json::from_slice(&answer.body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn past_max_peers_an_announce_is_refused_blocked() {
    let a = spawn_app_with(&[PRIVATE, ("MESHRELAY_MAX_PEERS", "2")]).await;
    let mut admitted = 0;
    for i in 0..4 {
        let stranger = hostile(Mischief::EndlessSync).await;
        let (status, v) = announce(&a, &stranger.key, &stranger.base).await;
        match i {
            0 | 1 => {
                assert_eq!(status, 202, "{v}");
                admitted += 1;
            }
            _ => assert_eq!(
                (status, v["error"]["code"].as_str()),
                (403, Some("blocked")),
                "{v}"
            ),
        }
    }
    assert_eq!(admitted, 2);
    assert_eq!(a.state.store.peers().await.unwrap().len(), 2);
}

#[tokio::test]
async fn announces_past_announce_rate_from_one_address_are_rate_limited() {
    let a = spawn_app_with(&[PRIVATE, ("MESHRELAY_ANNOUNCE_RATE", "3")]).await;
    let stranger = hostile(Mischief::EndlessSync).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(announce(&a, &stranger.key, &stranger.base).await.0);
    }
    assert_eq!(statuses, [202, 202, 202, 429, 429]);
}

#[tokio::test]
async fn an_announce_url_with_a_query_or_fragment_is_refused() {
    let a = spawn_app_with(&[PRIVATE]).await;
    let stranger = hostile(Mischief::EndlessSync).await;
    for url in [
        format!("{}/?", stranger.base),
        format!("{}/#x", stranger.base),
        format!("{}/?u=1", stranger.base),
    ] {
        let (status, v) = announce(&a, &stranger.key, &url).await;
        assert_eq!(status, 422, "{url}: {v}");
    }
    assert!(a.state.store.peers().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_peer_past_its_inbox_rate_is_rate_limited_and_others_are_not() {
    let a = spawn_app_with(&[PRIVATE, ("MESHRELAY_INBOX_RATE", "5")]).await;
    let b = spawn_app_with(&[PRIVATE]).await;
    let c = spawn_app_with(&[PRIVATE]).await;
    b.state.federation.join(&a.base).await.unwrap();
    c.state.federation.join(&a.base).await.unwrap();
    let inbox = format!("{}/v1/federation/inbox", a.base);
    let send = |app: &TestApp| {
        let client = app.state.federation.client().clone();
        let inbox = inbox.clone();
        async move {
            let body = meshrelay_federation::peer_client::InboxBody::default();
            client.inbox(&inbox, body).await.unwrap().status
        }
    };
    let mut from_b = Vec::new();
    for _ in 0..8 {
        from_b.push(send(&b).await);
    }
    assert_eq!(
        from_b.iter().filter(|s| **s == 202).count(),
        5,
        "{from_b:?}"
    );
    assert_eq!(
        from_b.iter().filter(|s| **s == 429).count(),
        3,
        "{from_b:?}"
    );
    assert_eq!(send(&c).await, 202, "another peer's budget is its own");
    let status = a
        .state
        .store
        .peer(&b.state.node_hex())
        .await
        .unwrap()
        .unwrap()
        .status;
    assert_eq!(status, PeerStatus::Active);
}
