//! Where a payload goes next: preferences, hops and max_hops, never back.

use std::sync::Arc;

use meshrelay_federation::{Config, Federation};
use meshrelay_protocol::node_doc::Subscribe;
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};
use meshrelay_store::PeerStatus;
use meshrelay_store::Store;
use tokio_util::sync::CancellationToken;

fn post(channel: &str) -> Payload {
    Payload::sign(
        &NodeKey::generate(),
        Draft {
            seq: 1,
            prev: None,
            created_at: 1,
            kind: "post".into(),
            channel: channel.into(),
            tags: vec![],
            content: String::new(),
        },
    )
}

#[tokio::test]
async fn hops_grow_by_one_stop_at_max_hops_and_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("f.db").display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (x, y, z, w) = (
        "11".repeat(32),
        "22".repeat(32),
        "33".repeat(32),
        "44".repeat(32),
    );
    store
        .insert_peer(
            &x,
            "http://x",
            PeerStatus::Active,
            r#"{"scope":"all"}"#,
            "",
            1,
        )
        .await
        .unwrap();
    store
        .insert_peer(
            &y,
            "http://y",
            PeerStatus::Active,
            r#"{"scope":"filtered","filters":[{"channels":["plural/*"]}]}"#,
            "",
            1,
        )
        .await
        .unwrap();
    store
        .insert_peer(
            &z,
            "http://z",
            PeerStatus::Blocked,
            r#"{"scope":"all"}"#,
            "",
            1,
        )
        .await
        .unwrap();
    store
        .insert_peer(
            &w,
            "http://w",
            PeerStatus::Active,
            r#"{"scope":"none"}"#,
            "",
            1,
        )
        .await
        .unwrap();
    let fed = Federation::new(
        Config {
            public_url: "http://me".into(),
            own_subscribe: Subscribe::All,
            seed_peers: vec![],
            require_peer_approval: false,
            max_hops: 3,
            forward_lazily: true,
            offer_delay_ms: 1000,
            retry_min_secs: 1,
            retry_max_secs: 2,
            max_delivery_age_secs: 60,
            allow_private_peers: true,
            max_peers: 1000,
            announce_rate: 10,
            inbox_rate: 50,
            max_filter_values: 256,
            max_payload_bytes: 262_144,
            max_response_bytes: 4_194_304,
            sync: meshrelay_federation::SyncConfig {
                window_days: 7,
                max_items: 1_000_000,
                max_rounds: 64,
                max_secs: 120,
            },
            peer_roots: Default::default(),
            cluster: None,
        },
        store,
        Arc::new(NodeKey::generate()),
        CancellationToken::new(),
    );
    fed.rebuild_router().await.unwrap();
    let plural = post("plural/a");
    let mut local = fed.forward_targets(&plural, None);
    local.sort();
    assert_eq!(
        local,
        vec![(x.clone(), 1), (y.clone(), 1)],
        "blocked and scope none get nothing"
    );
    assert_eq!(
        fed.forward_targets(&post("general"), None),
        vec![(x.clone(), 1)]
    );
    assert_eq!(
        fed.forward_targets(&plural, Some((&x, 2))),
        vec![(y.clone(), 3)],
        "not back to x, hops + 1"
    );
    assert!(
        fed.forward_targets(&plural, Some((&x, 3))).is_empty(),
        "nothing goes on at max_hops"
    );
}
