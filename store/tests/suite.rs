//! The storage suite, run against both SQLite and PostgreSQL: one test body, two backends.

use std::sync::Arc;

use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{Filter, NodeKey, Payload};
use meshrelay_store::{Cursor, OutboxState, PeerStatus, Store, WriteOutcome, Writer, WriterConfig};

mod common;
use common::TestDb;

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                let db = super::TestDb::sqlite().await;
                super::$name(&db.store).await;
                db.finish().await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                let db = super::TestDb::postgres().await;
                super::$name(&db.store).await;
                db.finish().await;
            })*
        }
    };
}

on_both_backends!(
    a_links_forwarding_and_offer_support_are_kept_and_a_returning_peer_is_due_at_once,
    a_written_payload_reads_back_byte_for_byte,
    a_second_write_of_an_id_is_a_duplicate,
    a_duplicate_carries_the_time_it_was_first_stored,
    queries_order_newest_first_and_page_with_a_cursor,
    filters_select_by_channel_prefix_tag_author_kind_and_time,
    head_and_log_keep_forks_together,
    pages_stop_at_their_byte_budget_and_say_more_follow,
    a_blocked_authors_repeat_in_one_batch_is_blocked_too,
    a_delete_hides_its_authors_payloads_in_either_order,
    a_blocked_author_is_refused_and_hidden_until_unblocked,
    an_operator_can_hide_one_payload,
    tag_values_with_nul_bytes_are_stored,
    concurrent_writes_are_batched_and_all_kept,
    migrating_twice_changes_nothing,
    a_scheduled_tick_is_claimed_once,
    runs_are_recorded_and_trimmed_to_the_newest,
    prune_drops_expired_payloads_and_purges_hidden_ones_after_their_grace,
    peers_are_pinned_by_key_and_url_and_keep_their_health,
    forwards_are_queued_with_the_payload_and_retried_until_dead,
    due_items_come_in_queue_order,
    sync_items_cover_a_window_and_a_filter_visible_ones_only,
    the_audit_log_pages_newest_first,
    samples_are_kept_for_their_window_and_outbox_depth_is_per_peer_and_state,
    closing_the_writer_commits_what_was_queued_and_refuses_the_rest,
    the_database_refuses_a_state_that_is_not_one,
    blob_records_keep_quota_references_removal_and_the_mirror_queue,
    the_first_node_key_is_recorded_and_kept,
);

async fn blob_records_keep_quota_references_removal_and_the_mirror_queue(store: &Store) {
    use meshrelay_store::BlobInsert;
    let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let up = "0f".repeat(32);
    let insert = |sha: String, size: i64, quota: Option<i64>| {
        let up = up.clone();
        async move {
            store
                .insert_blob(&sha, size, "image/png", Some(&up), quota, 100)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        insert(a.clone(), 600, Some(1000)).await,
        BlobInsert::Inserted
    );
    // Filling the quota exactly is allowed; one byte more is not.
    assert_eq!(
        insert(b.clone(), 400, Some(1000)).await,
        BlobInsert::Inserted
    );
    assert_eq!(
        insert(c.clone(), 1, Some(1000)).await,
        BlobInsert::OverQuota { used: 1000 }
    );
    assert!(matches!(
        insert(a.clone(), 600, Some(1000)).await,
        BlobInsert::Held(_)
    ));
    assert_eq!(store.blob_bytes_of(&up).await.unwrap(), 1000);
    // Mirrored: no uploader, no quota.
    assert_eq!(
        store
            .insert_blob(&c, 5, "text/plain", None, None, 100)
            .await
            .unwrap(),
        BlobInsert::Inserted
    );

    // References are the visible payloads that name a blob.
    let w = writer(store);
    let key = NodeKey::generate();
    let p = payload(&key, 1, 50, "pics", vec![vec!["b", &a]]);
    assert_eq!(put(&w, &p).await, WriteOutcome::Stored { hidden: false });
    let listed = store.list_blobs(None, None, 10).await.unwrap();
    let refs: Vec<(String, Option<i64>)> = listed
        .iter()
        .map(|r| (r.sha256.clone(), r.references))
        .collect();
    assert_eq!(
        refs,
        vec![
            (a.clone(), Some(1)),
            (b.clone(), Some(0)),
            (c.clone(), Some(0))
        ]
    );
    assert_eq!(store.blob(&a).await.unwrap().unwrap().references, None);
    assert_eq!(
        store
            .list_blobs(Some(&up), Some(&a), 10)
            .await
            .unwrap()
            .len(),
        1,
        "paged after a, this uploader's: b"
    );
    let before = 101;
    let mut loose = store.unreferenced_blobs(before, 10).await.unwrap();
    loose.sort();
    assert_eq!(loose, vec![(b.clone(), 400), (c.clone(), 5)]);
    assert!(
        !store.delete_unreferenced_blob(&a, before).await.unwrap(),
        "referenced"
    );
    assert!(
        !store.delete_unreferenced_blob(&b, 100).await.unwrap(),
        "not past the grace"
    );
    assert!(store.delete_unreferenced_blob(&b, before).await.unwrap());
    let totals = store.blob_totals().await.unwrap();
    assert_eq!((totals.count, totals.bytes, totals.removed), (2, 605, 0));

    // A removed blob stays as a tombstone; one never held can be removed too.
    let d = "d".repeat(64);
    assert!(store.remove_blob(&a, 200).await.unwrap().is_some());
    assert!(store.remove_blob(&d, 200).await.unwrap().is_none());
    assert_eq!(
        insert(a.clone(), 600, Some(10_000)).await,
        BlobInsert::Removed
    );
    assert_eq!(
        insert(d.clone(), 1, Some(10_000)).await,
        BlobInsert::Removed
    );
    assert_eq!(store.blob_totals().await.unwrap().removed, 2);

    // The mirror queue: claimed under a lease, retried, dropped.
    let peer_key = "ee".repeat(32);
    let from_peer = payload(&key, 2, 60, "pics", vec![vec!["b", &"f".repeat(64)]]);
    let out = w
        .write(
            Arc::new(from_peer.clone()),
            from_peer.to_json().into(),
            Some(peer_key.clone()),
            1,
        )
        .await
        .unwrap();
    assert_eq!(out, WriteOutcome::Stored { hidden: false });
    let now = meshrelay_store::clock::now_ms() + 1000;
    let claimed = store.claim_blob_fetches(now, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].sha256.as_str(), claimed[0].peer.as_str()),
        ("f".repeat(64).as_str(), peer_key.as_str())
    );
    assert!(
        store
            .claim_blob_fetches(now, 60_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    store
        .retry_blob_fetch(&claimed[0], now, "503")
        .await
        .unwrap();
    let again = store.claim_blob_fetches(now, 60_000, 10).await.unwrap();
    assert_eq!(again[0].attempts, 1);
    store.drop_blob_fetch(&again[0]).await.unwrap();
    assert_eq!(store.blob_totals().await.unwrap().fetches_pending, 0);
}

async fn the_first_node_key_is_recorded_and_kept(store: &Store) {
    let (a, b) = ("aa".repeat(32), "bb".repeat(32));
    assert_eq!(store.claim_node_key(&a, 1).await.unwrap(), a);
    assert_eq!(store.claim_node_key(&b, 2).await.unwrap(), a);
}

async fn closing_the_writer_commits_what_was_queued_and_refuses_the_rest(store: &Store) {
    let (w, task) = Writer::spawn(store.clone(), WriterConfig::default());
    let key = NodeKey::generate();
    // At most 30, so `join_all` polls every write on its first poll.
    let queued: Vec<Payload> = (1..=30)
        .map(|seq| payload(&key, seq, 100 + seq, "general", vec![]))
        .collect();
    let mut writes = Box::pin(futures_util::future::join_all(
        queued.iter().map(|p| put(&w, p)),
    ));
    // Polled once: every write is queued (the channel has room) and waits
    // for its commit; then the writer is closed.
    let answered = tokio::select! {
        biased;
        outcomes = &mut writes => Some(outcomes),
        _ = std::future::ready(()) => None,
    };
    let outcomes = match answered {
        Some(outcomes) => {
            task.close().await;
            outcomes
        }
        None => tokio::join!(writes, task.close()).0,
    };
    for (outcome, p) in outcomes.into_iter().zip(&queued) {
        assert_eq!(outcome, WriteOutcome::Stored { hidden: false });
        assert!(store.get_payload(&p.id).await.unwrap().is_some());
    }
    // The handle outlives the writer, and later writes are refused, not lost silently.
    let late = payload(&key, 999, 5_000, "general", vec![]);
    let err = w
        .write(Arc::new(late.clone()), late.to_json().into(), None, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, meshrelay_store::Error::WriterStopped),
        "{err}"
    );
    assert!(store.get_payload(&late.id).await.unwrap().is_none());
}

async fn the_database_refuses_a_state_that_is_not_one(store: &Store) {
    let bad_peer =
        "INSERT INTO peers (node, url, status, added_at) VALUES ('n', 'http://n', 'Active', 1)";
    assert!(store.execute_raw(bad_peer).await.is_err());
    let good_peer = "INSERT INTO peers (node, url, status, added_at) VALUES ('n', 'http://n', 'key_changed', 1)";
    store.execute_raw(good_peer).await.unwrap();
    let bad_item = "INSERT INTO outbox (peer, payload_id, hops, enqueued_at, next_attempt, state) VALUES ('n', 'x', 1, 1, 1, 'lost')";
    assert!(store.execute_raw(bad_item).await.is_err());
}

fn payload(
    key: &NodeKey,
    seq: u64,
    created_at: u64,
    channel: &str,
    tags: Vec<Vec<&str>>,
) -> Payload {
    Payload::sign(
        key,
        Draft {
            seq,
            prev: (seq > 1).then(|| "ab".repeat(32)),
            created_at,
            kind: "post".into(),
            channel: channel.into(),
            tags: tags
                .into_iter()
                .map(|t| t.into_iter().map(String::from).collect())
                .collect(),
            content: format!("{seq} at {created_at} in {channel}"),
        },
    )
}

/// What a repeat of a payload `put` stored answers: a duplicate, first stored at 1.
const DUPLICATE: WriteOutcome = WriteOutcome::Duplicate {
    received_at: Some(1),
};

async fn put(w: &Writer, p: &Payload) -> WriteOutcome {
    w.write(Arc::new(p.clone()), p.to_json().into(), None, 1)
        .await
        .unwrap()
}

fn writer(store: &Store) -> Writer {
    Writer::spawn(store.clone(), WriterConfig::default()).0
}

/// Store posts 1..=n by `key`, each queued for `peer` with hops 1.
async fn queue_posts(w: &Writer, key: &NodeKey, peer: &str, n: u64) {
    for seq in 1..=n {
        let p = payload(key, seq, 10 + seq, "general", vec![]);
        w.write_and_forward(
            Arc::new(p.clone()),
            p.to_json().into(),
            None,
            1,
            vec![(peer.to_string(), 1)],
        )
        .await
        .unwrap();
    }
}

fn ids(rows: &[meshrelay_store::StoredRow]) -> Vec<String> {
    rows.iter().map(|r| r.id.clone()).collect()
}

async fn a_written_payload_reads_back_byte_for_byte(store: &Store) {
    let w = writer(store);
    let p = payload(
        &NodeKey::generate(),
        1,
        100,
        "general",
        vec![vec!["t", "rust"]],
    );
    assert_eq!(put(&w, &p).await, WriteOutcome::Stored { hidden: false });
    assert_eq!(store.get_payload(&p.id).await.unwrap(), Some(p.to_json()));
    assert_eq!(store.get_payload(&"00".repeat(32)).await.unwrap(), None);
    assert_eq!(store.count_payloads().await.unwrap(), 1);
}

async fn a_second_write_of_an_id_is_a_duplicate(store: &Store) {
    let w = writer(store);
    let p = payload(&NodeKey::generate(), 1, 100, "general", vec![]);
    let (a, b) = tokio::join!(put(&w, &p), put(&w, &p));
    let mut got = vec![a, b];
    got.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(got, vec![DUPLICATE, WriteOutcome::Stored { hidden: false }]);
    assert_eq!(put(&w, &p).await, DUPLICATE);
    assert_eq!(store.count_payloads().await.unwrap(), 1);
}

/// PROTOCOL.md 4.4: a duplicate's receipt carries the original time, whether
/// the first copy is held, in the same batch, hidden, or purged to a tombstone.
async fn a_duplicate_carries_the_time_it_was_first_stored(store: &Store) {
    let w = writer(store);
    let key = NodeKey::generate();
    let at = |p: &Payload, t: i64| w.write(Arc::new(p.clone()), p.to_json().into(), None, t);
    let p = payload(&key, 1, 100, "general", vec![]);
    assert_eq!(
        at(&p, 50).await.unwrap(),
        WriteOutcome::Stored { hidden: false }
    );
    let again = WriteOutcome::Duplicate {
        received_at: Some(50),
    };
    assert_eq!(at(&p, 60).await.unwrap(), again);
    // Two copies in flight at once: whichever is stored, the other names its time.
    let q = payload(&key, 2, 101, "general", vec![]);
    let (a, b) = tokio::join!(at(&q, 70), at(&q, 70));
    let mut got = vec![a.unwrap(), b.unwrap()];
    got.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        got,
        vec![
            WriteOutcome::Duplicate {
                received_at: Some(70)
            },
            WriteOutcome::Stored { hidden: false }
        ]
    );
    // Hidden, then purged: the tombstone keeps the time.
    store.hide_payload(&p.id).await.unwrap();
    assert_eq!(at(&p, 80).await.unwrap(), again);
    assert_eq!(
        store
            .prune(None, i64::MAX, None)
            .await
            .unwrap()
            .purged_hidden,
        1
    );
    assert_eq!(at(&p, 90).await.unwrap(), again);
}

async fn queries_order_newest_first_and_page_with_a_cursor(store: &Store) {
    let w = writer(store);
    let key = NodeKey::generate();
    let mut all = Vec::new();
    for i in 0..7u64 {
        // two payloads share each timestamp, so ties by id are exercised
        let p = payload(&key, i + 1, 1000 + i / 2, "general", vec![]);
        put(&w, &p).await;
        all.push(p);
    }
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let want: Vec<String> = all.iter().map(|p| p.id.clone()).collect();

    let mut got = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let rows = store
            .query(&Filter::default(), cursor.as_ref(), 3)
            .await
            .unwrap();
        if rows.is_empty() {
            break;
        }
        cursor = Some(Cursor::after(rows.last().unwrap()));
        got.extend(ids(&rows));
    }
    assert_eq!(got, want);
}

async fn filters_select_by_channel_prefix_tag_author_kind_and_time(store: &Store) {
    let w = writer(store);
    let (k1, k2) = (NodeKey::generate(), NodeKey::generate());
    let a = payload(&k1, 1, 10, "plural", vec![vec!["t", "rust"]]);
    let b = payload(&k1, 2, 20, "plural/a", vec![vec!["t", "go"]]);
    let c = payload(
        &k2,
        1,
        30,
        "plural/a/b",
        vec![vec!["t", "rust"], vec!["p", "x"]],
    );
    let d = payload(&k2, 2, 40, "pluralx/a", vec![]);
    for p in [&a, &b, &c, &d] {
        put(&w, p).await;
    }
    let q = |f: &str| {
        let f = Filter::from_value(serde_json::from_str(f).unwrap()).unwrap();
        async move {
            let mut got = ids(&store.query(&f, None, 100).await.unwrap());
            got.sort();
            got
        }
    };
    let sorted = |mut v: Vec<&Payload>| {
        v.sort_by(|x, y| x.id.cmp(&y.id));
        v.into_iter().map(|p| p.id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(
        q(r#"{"channels":["plural/*"]}"#).await,
        sorted(vec![&b, &c])
    );
    assert_eq!(
        q(r#"{"channels":["plural","pluralx/a"]}"#).await,
        sorted(vec![&a, &d])
    );
    assert_eq!(q(r#"{"tags":{"t":["rust"]}}"#).await, sorted(vec![&a, &c]));
    assert_eq!(
        q(r#"{"tags":{"t":["rust"],"p":["x"]}}"#).await,
        sorted(vec![&c])
    );
    assert_eq!(
        q(&format!(
            r#"{{"authors":["{}"],"since":15}}"#,
            k1.public_hex()
        ))
        .await,
        sorted(vec![&b])
    );
    assert_eq!(q(r#"{"since":20,"until":30}"#).await, sorted(vec![&b, &c]));
    assert_eq!(q(r#"{"kinds":["reaction"]}"#).await, Vec::<String>::new());
    assert_eq!(q(r#"{"authors":[]}"#).await, Vec::<String>::new());
    assert_eq!(q("{}").await.len(), 4);
}

async fn head_and_log_keep_forks_together(store: &Store) {
    let w = writer(store);
    let key = NodeKey::generate();
    let p1 = payload(&key, 1, 10, "general", vec![]);
    let p2a = payload(&key, 2, 20, "general", vec![]);
    let p2b = payload(&key, 2, 21, "general", vec![]); // a fork: same seq, other id
    let p3 = payload(&key, 3, 30, "general", vec![]);
    for p in [&p1, &p2a, &p2b, &p3] {
        put(&w, p).await;
    }
    let author = key.public_hex();
    let head = store.head(&author).await.unwrap().unwrap();
    assert_eq!((head.seq, head.id), (3, p3.id.clone()));

    // A page of 2 would end inside seq 2; it is extended to hold both forks.
    let page = store.author_log(&author, 0, 2, usize::MAX).await.unwrap();
    let mut forks = [p2a.id.clone(), p2b.id.clone()];
    forks.sort();
    assert_eq!(
        ids(&page.rows),
        vec![p1.id.clone(), forks[0].clone(), forks[1].clone()]
    );
    let rest = store.author_log(&author, 2, 2, usize::MAX).await.unwrap();
    assert_eq!(ids(&rest.rows), vec![p3.id.clone()]);
    assert!(store.head(&"cd".repeat(32)).await.unwrap().is_none());

    // Out of bytes inside seq 2, a page ends before it instead of splitting it.
    let one = p1.to_json().len();
    let page = store.author_log(&author, 0, 10, one + 10).await.unwrap();
    assert_eq!(ids(&page.rows), vec![p1.id.clone()]);
    // A seq whose forks alone pass the budget is cut, never unbounded.
    let page = store.author_log(&author, 1, 10, 1).await.unwrap();
    assert_eq!(page.rows.len(), 1);
}

async fn pages_stop_at_their_byte_budget_and_say_more_follow(store: &Store) {
    let w = writer(store);
    let key = NodeKey::generate();
    let mut all = Vec::new();
    for i in 0..6u64 {
        let p = payload(&key, i + 1, 5000 + i, "budget", vec![]);
        put(&w, &p).await;
        all.push(p);
    }
    all.reverse(); // newest first
    let size = all[0].to_json().len();
    let f: Filter = serde_json::from_str(r#"{"channels":["budget"]}"#).unwrap();
    let page = store.query_page(&f, None, 100, size * 2 + 1).await.unwrap();
    assert_eq!(ids(&page.rows), vec![all[0].id.clone(), all[1].id.clone()]);
    assert!(page.more, "cut by bytes, so more follow");
    // At least one row, whatever the budget, so paging always advances.
    let page = store.query_page(&f, None, 100, 1).await.unwrap();
    assert_eq!((page.rows.len(), page.more), (1, true));
    let page = store.query_page(&f, None, 6, usize::MAX).await.unwrap();
    assert_eq!((page.rows.len(), page.more), (6, false));
    let page = store.query_page(&f, None, 5, usize::MAX).await.unwrap();
    assert_eq!((page.rows.len(), page.more), (5, true));

    let asked: Vec<String> = all.iter().map(|p| p.id.clone()).collect();
    let (found, more) = store.payloads_by_ids(&asked, size * 3 + 1).await.unwrap();
    assert_eq!((found.len(), more), (3, true));
    let (found, more) = store.payloads_by_ids(&asked, usize::MAX).await.unwrap();
    assert_eq!((found.len(), more), (6, false));
}

fn delete_of(key: &NodeKey, seq: u64, targets: &[&Payload]) -> Payload {
    Payload::sign(
        key,
        Draft {
            seq,
            prev: (seq > 1).then(|| "ab".repeat(32)),
            created_at: 500,
            kind: "delete".into(),
            channel: "general".into(),
            tags: targets
                .iter()
                .map(|t| vec!["e".to_string(), t.id.clone()])
                .collect(),
            content: String::new(),
        },
    )
}

async fn a_delete_hides_its_authors_payloads_in_either_order(store: &Store) {
    let w = writer(store);
    let (me, other) = (NodeKey::generate(), NodeKey::generate());
    let early = payload(&me, 1, 10, "general", vec![]);
    let late = payload(&me, 2, 20, "general", vec![]);
    let theirs = payload(&other, 1, 30, "general", vec![]);
    put(&w, &early).await;
    put(&w, &theirs).await;
    let del = delete_of(&me, 3, &[&early, &late, &theirs]);
    assert_eq!(put(&w, &del).await, WriteOutcome::Stored { hidden: false });
    // the delete arrived before `late`: `late` is stored hidden
    assert_eq!(put(&w, &late).await, WriteOutcome::Stored { hidden: true });
    assert_eq!(store.get_payload(&early.id).await.unwrap(), None);
    assert_eq!(store.get_payload(&late.id).await.unwrap(), None);
    // another author's payload is untouched; the delete itself stays visible
    assert!(store.get_payload(&theirs.id).await.unwrap().is_some());
    assert!(store.get_payload(&del.id).await.unwrap().is_some());
    // publishing a hidden payload again is a duplicate and does not unhide it
    assert_eq!(put(&w, &early).await, DUPLICATE);
    assert_eq!(store.get_payload(&early.id).await.unwrap(), None);
    let log = store
        .author_log(&me.public_hex(), 0, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(ids(&log.rows), vec![del.id.clone()]);
    assert_eq!(
        store.head(&me.public_hex()).await.unwrap().unwrap().id,
        del.id
    );
}

async fn a_blocked_author_is_refused_and_hidden_until_unblocked(store: &Store) {
    let w = writer(store);
    let key = NodeKey::generate();
    let old = payload(&key, 1, 10, "general", vec![]);
    put(&w, &old).await;
    assert!(store.block_author(&key.public_hex(), 5).await.unwrap());
    assert!(!store.block_author(&key.public_hex(), 6).await.unwrap());
    let new = payload(&key, 2, 20, "general", vec![]);
    assert_eq!(put(&w, &new).await, WriteOutcome::Blocked);
    assert_eq!(store.get_payload(&old.id).await.unwrap(), None);
    assert!(store
        .query(&Filter::default(), None, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.blocked_authors().await.unwrap(),
        vec![(key.public_hex(), 5)]
    );
    assert!(store.unblock_author(&key.public_hex()).await.unwrap());
    assert!(store.get_payload(&old.id).await.unwrap().is_some());
    assert_eq!(
        store.get_payload(&new.id).await.unwrap(),
        None,
        "refused, never stored"
    );
}

async fn an_operator_can_hide_one_payload(store: &Store) {
    let w = writer(store);
    let p = payload(&NodeKey::generate(), 1, 10, "general", vec![]);
    put(&w, &p).await;
    assert!(store.hide_payload(&p.id).await.unwrap());
    assert!(!store.hide_payload(&p.id).await.unwrap());
    assert_eq!(store.get_payload(&p.id).await.unwrap(), None);
    assert_eq!(put(&w, &p).await, DUPLICATE);
}

async fn tag_values_with_nul_bytes_are_stored(store: &Store) {
    let w = writer(store);
    let p = payload(
        &NodeKey::generate(),
        1,
        10,
        "general",
        vec![vec!["t", "a\0b"]],
    );
    assert_eq!(put(&w, &p).await, WriteOutcome::Stored { hidden: false });
    let f = Filter::from_value(serde_json::json!({"tags": {"t": ["a\u{0}b"]}})).unwrap();
    assert_eq!(
        ids(&store.query(&f, None, 10).await.unwrap()),
        vec![p.id.clone()]
    );
}

async fn concurrent_writes_are_batched_and_all_kept(store: &Store) {
    let w = writer(store);
    let key = NodeKey::generate();
    let tasks: Vec<_> = (0..2000u64)
        .map(|i| {
            let w = w.clone();
            let p = payload(&key, i + 1, i, "general", vec![vec!["t", "x"]]);
            tokio::spawn(async move { put(&w, &p).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), WriteOutcome::Stored { hidden: false });
    }
    assert_eq!(store.count_payloads().await.unwrap(), 2000);
}

async fn migrating_twice_changes_nothing(store: &Store) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.count_payloads().await.unwrap(), 0);
}

async fn a_scheduled_tick_is_claimed_once(store: &Store) {
    let first = store.claim_run("prune", Some(100), "a", 1).await.unwrap();
    assert!(first.is_some());
    assert_eq!(
        store.claim_run("prune", Some(100), "b", 2).await.unwrap(),
        None
    );
    assert!(store
        .claim_run("prune", Some(101), "b", 3)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .claim_run("optimize", Some(100), "b", 4)
        .await
        .unwrap()
        .is_some());
    // Runs on demand never conflict.
    assert!(store
        .claim_run("prune", None, "a", 5)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .claim_run("prune", None, "a", 6)
        .await
        .unwrap()
        .is_some());
}

async fn runs_are_recorded_and_trimmed_to_the_newest(store: &Store) {
    for i in 0..5 {
        let id = store
            .claim_run("job", Some(i), "me", i * 1000)
            .await
            .unwrap()
            .unwrap();
        let (outcome, error) = if i % 2 == 0 {
            ("ok", None)
        } else {
            ("error", Some("boom"))
        };
        store
            .finish_run(id, i * 1000 + 5, outcome, Some(&format!("run {i}")), error)
            .await
            .unwrap();
    }
    let runs = store.recent_runs("job", 10).await.unwrap();
    assert_eq!(runs.len(), 5);
    assert_eq!(runs[0].summary.as_deref(), Some("run 4"));
    assert_eq!(runs[1].error.as_deref(), Some("boom"));
    assert_eq!(runs[1].finished_at, Some(3005));
    assert_eq!(store.trim_runs("job", 2).await.unwrap(), 3);
    let runs = store.recent_runs("job", 10).await.unwrap();
    let ticks: Vec<_> = runs.iter().map(|r| r.scheduled_for).collect();
    assert_eq!(ticks, vec![Some(4), Some(3)]);
}

async fn prune_drops_expired_payloads_and_purges_hidden_ones_after_their_grace(store: &Store) {
    let w = writer(store);
    let key = NodeKey::generate();
    let old = payload(&key, 1, 100, "general", vec![vec!["t", "x"]]);
    let new = payload(&key, 2, 10_000, "general", vec![vec!["t", "x"]]);
    let gone = payload(&key, 3, 10_001, "general", vec![]);
    for p in [&old, &new, &gone] {
        put(&w, p).await;
    }
    let del = delete_of(&key, 4, &[&gone]);
    put(&w, &del).await;
    // Hidden just now: a grace cutoff in the past keeps it, one in the future purges it.
    let pruned = store.prune(Some(200), 0, None).await.unwrap();
    assert_eq!((pruned.expired, pruned.purged_hidden), (1, 0));
    assert_eq!(store.count_payloads().await.unwrap(), 3);
    let pruned = store.prune(None, i64::MAX, None).await.unwrap();
    assert_eq!((pruned.expired, pruned.purged_hidden), (0, 1));
    assert_eq!(store.count_payloads().await.unwrap(), 2);
    // The tags of pruned payloads went with them; the survivor still matches.
    let f = Filter::from_value(serde_json::json!({"tags": {"t": ["x"]}})).unwrap();
    assert_eq!(
        ids(&store.query(&f, None, 10).await.unwrap()),
        vec![new.id.clone()]
    );
    // A purged payload published again is a duplicate: its tombstone is kept
    // (PROTOCOL.md 2.3), and nothing is stored.
    assert_eq!(put(&w, &gone).await, DUPLICATE);
    assert_eq!(store.count_payloads().await.unwrap(), 2);
    // So is one an operator removed, once it was purged.
    store.hide_payload(&new.id).await.unwrap();
    let pruned = store.prune(None, i64::MAX, None).await.unwrap();
    assert_eq!(pruned.purged_hidden, 1);
    assert_eq!(put(&w, &new).await, DUPLICATE);
    assert!(store.get_payload(&new.id).await.unwrap().is_none());
    // Retention that takes a hidden payload leaves its tombstone too.
    let old_hidden = payload(&key, 7, 150, "general", vec![]);
    put(&w, &old_hidden).await;
    store.hide_payload(&old_hidden.id).await.unwrap();
    let pruned = store.prune(Some(200), 0, None).await.unwrap();
    assert_eq!(pruned.expired, 1);
    assert_eq!(put(&w, &old_hidden).await, DUPLICATE);
    // Tombstones go only when asked to (retention set): then the id is free.
    let pruned = store.prune(None, 0, Some(i64::MAX)).await.unwrap();
    assert_eq!(pruned.tombstones_dropped, 3);
    assert_eq!(put(&w, &new).await, WriteOutcome::Stored { hidden: false });
    store.optimize().await.unwrap();
}

async fn a_blocked_authors_repeat_in_one_batch_is_blocked_too(store: &Store) {
    let key = NodeKey::generate();
    store.block_author(&key.public_hex(), 1).await.unwrap();
    let p = payload(&key, 1, 10, "general", vec![]);
    let (w, task) = Writer::spawn(store.clone(), WriterConfig::default());
    // Polled together, the two land in one batch.
    let (a, b) = tokio::join!(put(&w, &p), put(&w, &p));
    assert_eq!((a, b), (WriteOutcome::Blocked, WriteOutcome::Blocked));
    task.close().await;
}

async fn peers_are_pinned_by_key_and_url_and_keep_their_health(store: &Store) {
    let (a, b) = ("aa".repeat(32), "bb".repeat(32));
    assert!(store
        .insert_peer(
            &a,
            "http://a",
            PeerStatus::Active,
            r#"{"scope":"all"}"#,
            "http://a/inbox",
            10
        )
        .await
        .unwrap());
    assert!(
        !store
            .insert_peer(&a, "http://other", PeerStatus::Active, "{}", "", 11)
            .await
            .unwrap(),
        "same key"
    );
    assert!(
        !store
            .insert_peer(&b, "http://a", PeerStatus::Active, "{}", "", 11)
            .await
            .unwrap(),
        "same URL"
    );
    assert_eq!(
        store.peer_by_url("http://a").await.unwrap().unwrap().node,
        a
    );
    store.record_poll_failure(&a, 20).await.unwrap();
    store.record_poll_failure(&a, 21).await.unwrap();
    let p = store.peer(&a).await.unwrap().unwrap();
    assert_eq!(
        (p.poll_failures, p.last_poll, p.last_poll_ok),
        (2, Some(21), Some(10))
    );
    assert_eq!(
        p.subscribe.as_deref(),
        Some(r#"{"scope":"all"}"#),
        "a failed poll keeps the preference"
    );
    store
        .record_poll_ok(&a, r#"{"scope":"none"}"#, "http://a/inbox", 30)
        .await
        .unwrap();
    let p = store.peer(&a).await.unwrap().unwrap();
    assert_eq!(
        (p.poll_failures, p.subscribe.as_deref()),
        (0, Some(r#"{"scope":"none"}"#))
    );
    assert!(store
        .swap_peer_status(&a, PeerStatus::Active, PeerStatus::Unreachable)
        .await
        .unwrap());
    assert!(store
        .set_peer_status(&a, PeerStatus::Blocked)
        .await
        .unwrap());
    assert!(
        !store
            .swap_peer_status(&a, PeerStatus::Unreachable, PeerStatus::Active)
            .await
            .unwrap(),
        "a delivery loop's status change never overwrites an operator's block"
    );
    assert_eq!(store.peers().await.unwrap()[0].status, PeerStatus::Blocked);
    assert!(store.delete_peer(&a).await.unwrap());
    assert!(store.peers().await.unwrap().is_empty());
}

async fn due_items_come_in_queue_order(store: &Store) {
    let w = writer(store);
    let key = NodeKey::generate();
    let peer = "dd".repeat(32);
    queue_posts(&w, &key, &peer, 3).await;
    let ids =
        |due: Vec<meshrelay_store::OutboxItem>| due.iter().map(|i| i.item_id).collect::<Vec<_>>();
    let items = ids(store.due_items(&peer, i64::MAX, 100).await.unwrap());
    assert_eq!(items.len(), 3);
    // The oldest item waits out a backoff: while it waits, the two younger
    // ones go; once it is due again it goes first, ahead of what was queued
    // while it waited (a community's authority stays ahead of the posts it
    // authorizes).
    let later = i64::MAX / 2;
    store
        .defer_items(&items[..1], later, "timeout", false)
        .await
        .unwrap();
    assert_eq!(
        ids(store.due_items(&peer, later - 1, 100).await.unwrap()),
        vec![items[1], items[2]]
    );
    assert_eq!(
        ids(store.due_items(&peer, later, 100).await.unwrap()),
        items
    );
    assert_eq!(
        ids(store.due_items(&peer, later, 1).await.unwrap()),
        vec![items[0]]
    );
}

async fn forwards_are_queued_with_the_payload_and_retried_until_dead(store: &Store) {
    let w = writer(store);
    let key = NodeKey::generate();
    let peer = "cc".repeat(32);
    let p = payload(&key, 1, 10, "general", vec![]);
    let fwd = vec![(peer.clone(), 1)];
    let put_fwd = |p: Payload| {
        let w = w.clone();
        let fwd = fwd.clone();
        async move {
            w.write_and_forward(Arc::new(p.clone()), p.to_json().into(), None, 1, fwd)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        put_fwd(p.clone()).await,
        WriteOutcome::Stored { hidden: false }
    );
    assert_eq!(
        put_fwd(p.clone()).await,
        DUPLICATE,
        "a duplicate queues nothing new"
    );
    let due = store.due_items(&peer, i64::MAX, 100).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].payload_id.as_str(), due[0].hops),
        (p.id.as_str(), 1)
    );
    assert_eq!(due[0].json.as_deref(), Some(p.to_json().as_str()));

    store
        .defer_items(&[due[0].item_id], 5_000, "connection refused", false)
        .await
        .unwrap();
    assert!(store.due_items(&peer, 4_999, 100).await.unwrap().is_empty());
    assert_eq!(store.next_due(&peer).await.unwrap(), Some(5_000));
    let again = store.due_items(&peer, 5_000, 100).await.unwrap();
    assert_eq!(
        (again[0].attempts, again[0].last_error.as_deref()),
        (1, Some("connection refused"))
    );
    assert_eq!(
        store.outbox_depths().await.unwrap(),
        vec![(peer.clone(), 1)]
    );

    store
        .defer_items(&[again[0].item_id], 6_000, "gave up", true)
        .await
        .unwrap();
    assert!(store
        .due_items(&peer, i64::MAX, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .outbox_items(OutboxState::Dead, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Dead letters go once old enough (given up at 6,000 ms), not before.
    assert_eq!(store.prune_dead_letters(6_000).await.unwrap(), 0);
    assert_eq!(store.retry_dead(None, 7_000).await.unwrap(), 1);
    assert_eq!(
        store.prune_dead_letters(i64::MAX).await.unwrap(),
        0,
        "pending again, so kept"
    );
    assert_eq!(store.due_items(&peer, 7_000, 100).await.unwrap().len(), 1);

    // A payload hidden after it was queued is handed out without its JSON.
    store.hide_payload(&p.id).await.unwrap();
    assert_eq!(
        store.due_items(&peer, 7_000, 100).await.unwrap()[0].json,
        None
    );
    let ids: Vec<i64> = store
        .due_items(&peer, 7_000, 100)
        .await
        .unwrap()
        .iter()
        .map(|i| i.item_id)
        .collect();
    // Given up again at 8,000 ms: a prune after that drops the dead letter.
    store
        .defer_items(&ids, 8_000, "gave up", true)
        .await
        .unwrap();
    assert_eq!(store.prune_dead_letters(8_001).await.unwrap(), 1);
    assert!(store
        .outbox_items(OutboxState::Dead, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store.outbox_depths().await.unwrap().is_empty());
}

async fn sync_items_cover_a_window_and_a_filter_visible_ones_only(store: &Store) {
    let w = writer(store);
    let key = NodeKey::generate();
    let mut all = Vec::new();
    for (seq, (t, channel)) in [
        (100, "plural/a"),
        (200, "plural/b"),
        (200, "general"),
        (300, "plural/a"),
    ]
    .into_iter()
    .enumerate()
    {
        let p = payload(&key, seq as u64 + 1, t, channel, vec![]);
        put(&w, &p).await;
        all.push(p);
    }
    assert!(store.hide_payload(&all[1].id).await.unwrap());
    let items = |v: Vec<(i64, [u8; 32])>| {
        let mut v: Vec<(i64, String)> = v.into_iter().map(|(t, id)| (t, hex::encode(id))).collect();
        v.sort();
        v
    };
    let want = |ps: &[&Payload]| {
        let mut v: Vec<(i64, String)> = ps
            .iter()
            .map(|p| (p.created_at as i64, p.id.clone()))
            .collect();
        v.sort();
        v
    };
    let every = Filter::default();
    let got = store
        .sync_items(&every, 150, 300, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        items(got),
        want(&[&all[2], &all[3]]),
        "inclusive bounds, the hidden one left out"
    );
    let plural = Filter {
        channels: Some(vec!["plural/*".into()]),
        ..Filter::default()
    };
    let got = store
        .sync_items(&plural, 0, 1000, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(items(got), want(&[&all[0], &all[3]]));
    assert_eq!(
        store.sync_items(&every, 0, 1000, 2).await.unwrap(),
        None,
        "over the cap"
    );
    assert_eq!(
        store
            .sync_items(&every, 0, 1000, 3)
            .await
            .unwrap()
            .map(|v| v.len()),
        Some(3)
    );
    // A blocked author's payloads are left out too, and back once unblocked.
    store.block_author(&key.public_hex(), 1).await.unwrap();
    assert_eq!(
        store.sync_items(&every, 0, 1000, 10).await.unwrap(),
        Some(Vec::new())
    );
    store.unblock_author(&key.public_hex()).await.unwrap();
    assert_eq!(
        store.sync_items(&every, 400, 1000, 4).await.unwrap(),
        Some(Vec::new())
    );
    let before = store.payloads_generation().await.unwrap();
    put(&w, &payload(&key, 9, 50, "general", vec![])).await;
    assert!(store.payloads_generation().await.unwrap() > before);
}

async fn the_audit_log_pages_newest_first(store: &Store) {
    for (i, action) in ["approve", "block", "unblock"].iter().enumerate() {
        store
            .insert_audit(100 + i as i64, action, "peer:x", "127.0.0.1", "api", None)
            .await
            .unwrap();
    }
    store
        .insert_audit(
            200,
            "hide",
            "payload:y",
            "::1",
            "dashboard",
            Some("already hidden"),
        )
        .await
        .unwrap();
    let all = store.audit(None, 10).await.unwrap();
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["hide", "unblock", "block", "approve"]);
    assert_eq!(
        (
            all[0].at,
            all[0].from_addr.as_str(),
            all[0].via.as_str(),
            all[0].detail.as_deref()
        ),
        (200, "::1", "dashboard", Some("already hidden"))
    );
    let older = store.audit(Some(all[1].entry_id), 10).await.unwrap();
    assert_eq!(older, all[2..].to_vec());
    assert_eq!(store.audit(None, 1).await.unwrap(), all[..1].to_vec());
}

async fn samples_are_kept_for_their_window_and_outbox_depth_is_per_peer_and_state(store: &Store) {
    let sample = |at, stored_total| meshrelay_store::StatsSample {
        at,
        stored_total,
        forwarded: 1,
        outbox_pending: 2,
        outbox_dead: 3,
    };
    for (at, total) in [(1000, 10), (1060, 25), (1120, 25)] {
        store.insert_sample(sample(at, total), 0).await.unwrap();
    }
    // The same second twice keeps the first.
    store.insert_sample(sample(1120, 99), 0).await.unwrap();
    assert_eq!(
        store.samples(1060).await.unwrap(),
        vec![sample(1060, 25), sample(1120, 25)]
    );
    assert_eq!(
        store.sample_before(1119).await.unwrap(),
        Some(sample(1060, 25))
    );
    assert_eq!(store.sample_before(999).await.unwrap(), None);
    // Older than the window: dropped with the next insert.
    store.insert_sample(sample(1180, 30), 1100).await.unwrap();
    assert_eq!(store.samples(0).await.unwrap().len(), 2);

    let w = writer(store);
    let key = NodeKey::generate();
    let (p1, p2) = ("c1".repeat(32), "c2".repeat(32));
    for seq in 1..=3 {
        let p = payload(&key, seq, 10, "general", vec![]);
        let fwd = vec![(p1.clone(), 1), (p2.clone(), 1)];
        w.write_and_forward(Arc::new(p.clone()), p.to_json().into(), None, 1, fwd)
            .await
            .unwrap();
    }
    let due = store.due_items(&p2, i64::MAX, 1).await.unwrap();
    store
        .defer_items(&[due[0].item_id], 0, "gone", true)
        .await
        .unwrap();
    let depth = store.outbox_depth_by_peer().await.unwrap();
    assert_eq!(
        depth.into_iter().collect::<Vec<_>>(),
        vec![
            (
                p1,
                meshrelay_store::OutboxDepth {
                    pending: 3,
                    dead: 0
                }
            ),
            (
                p2,
                meshrelay_store::OutboxDepth {
                    pending: 2,
                    dead: 1
                }
            ),
        ]
    );
    assert_eq!(store.count_received_since(1).await.unwrap(), 3);
    assert_eq!(store.count_received_since(2).await.unwrap(), 0);
}

/// PROTOCOL.md 5.6: each peer's forwarding mode and whether it answers
/// offers live in its record; a peer that stops answering offers is eager
/// again; `make_due` brings every backed-off item of a peer forward.
async fn a_links_forwarding_and_offer_support_are_kept_and_a_returning_peer_is_due_at_once(
    store: &Store,
) {
    use meshrelay_store::Forwarding;
    let peer = "dd".repeat(32);
    store
        .insert_peer(&peer, "http://d", PeerStatus::Active, "{}", "", 1)
        .await
        .unwrap();
    let got = store.peer(&peer).await.unwrap().unwrap();
    assert_eq!(
        (got.forwarding, got.answers_offers),
        (Forwarding::Eager, false)
    );
    store.set_answers_offers(&peer, true).await.unwrap();
    assert!(store.set_forwarding(&peer, Forwarding::Lazy).await.unwrap());
    assert!(
        !store.set_forwarding(&peer, Forwarding::Lazy).await.unwrap(),
        "no change, no write"
    );
    let got = store.peer(&peer).await.unwrap().unwrap();
    assert_eq!(
        (got.forwarding, got.answers_offers),
        (Forwarding::Lazy, true)
    );
    store.set_answers_offers(&peer, false).await.unwrap();
    let got = store.peer(&peer).await.unwrap().unwrap();
    assert_eq!(
        (got.forwarding, got.answers_offers),
        (Forwarding::Eager, false)
    );

    let w = writer(store);
    let key = NodeKey::generate();
    queue_posts(&w, &key, &peer, 3).await;
    let due = store.due_items(&peer, i64::MAX, 100).await.unwrap();
    let ids: Vec<i64> = due.iter().map(|i| i.item_id).collect();
    let now = meshrelay_protocol::clock::now_ms() + 1_000;
    store
        .defer_items(&ids[..2], now + 90_000, "down", false)
        .await
        .unwrap();
    assert_eq!(store.due_items(&peer, now, 100).await.unwrap().len(), 1);
    assert_eq!(store.make_due(&peer, now).await.unwrap(), 2);
    assert_eq!(store.due_items(&peer, now, 100).await.unwrap().len(), 3);
    assert_eq!(store.make_due(&peer, now).await.unwrap(), 0);
}
