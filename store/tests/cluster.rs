//! Two processes' stores on one PostgreSQL schema (PROTOCOL.md 8.1): their
//! writers never fail each other's callers, a delete racing its target is
//! never lost, and leases, nonces, job locks and notifications settle who
//! does what.

use std::sync::Arc;
use std::time::Duration;

use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{NodeKey, Payload};
use meshrelay_store::cluster::{Event, Stored};
use meshrelay_store::writer::Announce;
use meshrelay_store::{Store, WriteOutcome, Writer, WriterConfig};

mod common;
use common::TestDb;

fn post(key: &NodeKey, seq: u64, kind: &str, tags: Vec<Vec<String>>) -> Payload {
    Payload::sign(
        key,
        Draft {
            seq,
            prev: (seq > 1).then(|| "ab".repeat(32)),
            created_at: 1_700_000_000 + seq,
            kind: kind.into(),
            channel: "c".into(),
            tags,
            content: format!("entry {seq}"),
        },
    )
}

async fn write(w: &Writer, p: &Payload) -> meshrelay_store::Result<WriteOutcome> {
    w.write(Arc::new(p.clone()), p.to_json().into(), None, 1)
        .await
}

/// Two writers, as two processes have, each with a store of its own.
async fn two_writers(db: &TestDb) -> (Store, Writer, Writer) {
    let other = Store::connect(&db.url).await.unwrap();
    let config = WriterConfig {
        max_batch: 64,
        ..WriterConfig::default()
    };
    let (a, _) = Writer::spawn(db.store.clone(), config.clone());
    let (b, _) = Writer::spawn(other.clone(), config);
    (other, a, b)
}

#[tokio::test]
async fn two_writers_storing_overlapping_payloads_fail_no_caller() {
    let db = TestDb::postgres().await;
    let (other, a, b) = two_writers(&db).await;
    // Many authors, every payload submitted to both writers at once, in
    // opposite orders, a batch's worth at a time: without a fixed insert
    // order the two transactions deadlock on the unique index.
    let mut stored = 0;
    let mut total = 0;
    for _ in 0..20 {
        let payloads: Vec<Payload> = (0..16)
            .flat_map(|_| {
                let key = NodeKey::generate();
                (1..=4).map(move |seq| post(&key, seq, "post", vec![]))
            })
            .collect();
        total += payloads.len();
        let forward = payloads.iter().map(|p| write(&a, p));
        let backward = payloads.iter().rev().map(|p| write(&b, p));
        let (fa, fb) = tokio::join!(
            futures_util::future::join_all(forward),
            futures_util::future::join_all(backward)
        );
        for outcome in fa.into_iter().chain(fb) {
            match outcome.expect("no caller is answered an error") {
                WriteOutcome::Stored { .. } => stored += 1,
                WriteOutcome::Duplicate { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(stored, total, "each payload stored once");
    other.close().await;
    db.finish().await;
}

#[tokio::test]
async fn a_delete_racing_its_target_on_another_writer_hides_it() {
    let db = TestDb::postgres().await;
    let (other, a, b) = two_writers(&db).await;
    let keys: Vec<NodeKey> = (0..4).map(|_| NodeKey::generate()).collect();
    let pairs: Vec<(Payload, Payload)> = (1..=400)
        .map(|seq| {
            let key = &keys[seq as usize % keys.len()];
            let target = post(key, seq, "post", vec![]);
            let delete = post(
                key,
                1000 + seq,
                "delete",
                vec![vec!["e".into(), target.id.clone()]],
            );
            (target, delete)
        })
        .collect();
    let races = pairs.iter().map(|(target, delete)| {
        let (a, b) = (&a, &b);
        async move {
            let (t, d) = tokio::join!(write(a, target), write(b, delete));
            t.unwrap();
            d.unwrap();
        }
    });
    futures_util::future::join_all(races).await;
    for (target, _) in &pairs {
        assert!(
            db.store.get_payload(&target.id).await.unwrap().is_none(),
            "a delete raced its target and lost"
        );
    }
    other.close().await;
    db.finish().await;
}

#[tokio::test]
async fn the_writer_announces_what_it_stored_visible_on_commit() {
    let db = TestDb::postgres().await;
    let mut listener = db
        .store
        .listen("meshrelay-test", &["stored_here"])
        .await
        .unwrap()
        .unwrap();
    let (w, _) = Writer::spawn(
        db.store.clone(),
        WriterConfig {
            announce: Some(Announce {
                channel: "stored_here".into(),
                instance: "test:1".into(),
            }),
            ..WriterConfig::default()
        },
    );
    let key = NodeKey::generate();
    let p = post(&key, 1, "post", vec![]);
    assert_eq!(
        write(&w, &p).await.unwrap(),
        WriteOutcome::Stored { hidden: false }
    );
    let Event::Heard(heard) = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .unwrap()
        .unwrap()
    else {
        panic!("the listener lost its connection")
    };
    let stored: Stored = serde_json::from_str(&heard.payload).unwrap();
    assert_eq!(stored.instance, "test:1");
    let rows = db.store.shown_by_rid(&stored.rids).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, p.to_json());
    // A duplicate stores nothing and announces nothing.
    write(&w, &p).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), listener.recv())
            .await
            .is_err(),
        "a duplicate was announced"
    );
    db.finish().await;
}

#[tokio::test]
async fn a_lease_has_one_holder_until_it_expires() {
    let db = TestDb::postgres().await;
    let s = &db.store;
    let sleep = |ms| tokio::time::sleep(Duration::from_millis(ms));
    // Leases of 400 ms by the database's clock.
    assert!(s.hold_lease("peer", "a", 400).await.unwrap());
    assert!(!s.hold_lease("peer", "b", 400).await.unwrap());
    sleep(250).await;
    assert!(s.hold_lease("peer", "a", 400).await.unwrap(), "renewed");
    sleep(250).await;
    assert!(
        !s.hold_lease("peer", "b", 400).await.unwrap(),
        "still held: the renewal counts from its own time"
    );
    assert_eq!(s.lease_holder("peer").await.unwrap().as_deref(), Some("a"));
    sleep(450).await;
    assert_eq!(s.lease_holder("peer").await.unwrap(), None, "expired");
    assert!(
        s.hold_lease("peer", "b", 400).await.unwrap(),
        "taken over once expired"
    );
    s.release_lease("peer", "a").await.unwrap();
    assert_eq!(s.lease_holder("peer").await.unwrap().as_deref(), Some("b"));
    assert_eq!(s.lease_counts().await.unwrap().get("b"), Some(&1));
    s.release_leases_of("b").await.unwrap();
    assert!(s.hold_lease("peer", "a", 400).await.unwrap());
    db.finish().await;
}

#[tokio::test]
async fn a_nonce_is_accepted_once_by_all_processes_until_purged() {
    let db = TestDb::postgres().await;
    let other = Store::connect(&db.url).await.unwrap();
    assert!(db.store.record_nonce("k:n1", 100).await.unwrap());
    assert!(!other.record_nonce("k:n1", 100).await.unwrap(), "a replay");
    assert!(other.record_nonce("k:n2", 200).await.unwrap());
    assert_eq!(db.store.purge_nonces(150).await.unwrap(), 1);
    assert!(db.store.record_nonce("k:n1", 300).await.unwrap());
    other.close().await;
    db.finish().await;
}

#[tokio::test]
async fn a_job_lock_is_held_by_one_process_and_freed_by_release_or_a_lost_session() {
    let db = TestDb::postgres().await;
    let other = Store::connect(&db.url).await.unwrap();
    let lock = db.store.try_job_lock("sync").await.unwrap().expect("free");
    assert!(other.try_job_lock("sync").await.unwrap().is_none());
    assert!(
        other.try_job_lock("prune").await.unwrap().is_some(),
        "per job"
    );
    lock.release().await;
    let again = other.try_job_lock("sync").await.unwrap().expect("released");
    // Dropped without a release (a panicking run): the session closes and
    // the lock goes with it.
    drop(again);
    let mut taken = None;
    for _ in 0..50 {
        taken = db.store.try_job_lock("sync").await.unwrap();
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(taken.is_some(), "the dropped lock was never freed");
    taken.unwrap().release().await;
    other.close().await;
    db.finish().await;
}

#[tokio::test]
async fn heartbeats_list_the_live_processes() {
    use meshrelay_store::cluster::Instance;
    let db = TestDb::postgres().await;
    let beat = |name: &str, at: i64| Instance {
        instance: name.into(),
        started_at: 10,
        last_seen: at,
        connections: 3,
        subscriptions: 4,
    };
    db.store.heartbeat(&beat("a:1", 100)).await.unwrap();
    db.store.heartbeat(&beat("b:2", 40)).await.unwrap();
    db.store.heartbeat(&beat("a:1", 110)).await.unwrap();
    let live = db.store.instances(60).await.unwrap();
    assert_eq!(live, vec![beat("a:1", 110)]);
    db.store.forget_instance("a:1").await.unwrap();
    assert!(db.store.instances(60).await.unwrap().is_empty());
    db.finish().await;
}
