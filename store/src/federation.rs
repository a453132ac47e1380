//! Peers and the durable outbox: what federation remembers across restarts.

use sqlx::QueryBuilder;

use crate::states::{Forwarding, OutboxState, PeerStatus};
use crate::{with_pool, BeginWrite, Result, Store};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Peer {
    /// The node key pinned on first contact (hex).
    pub node: String,
    pub url: String,
    #[sqlx(try_from = "String")]
    pub status: PeerStatus,
    /// The last preference its node document announced (JSON), if ever polled.
    pub subscribe: Option<String>,
    pub inbox: Option<String>,
    pub added_at: i64,
    pub last_poll: Option<i64>,
    pub last_poll_ok: Option<i64>,
    pub poll_failures: i64,
    pub delivery_failures: i64,
    pub last_delivery: Option<i64>,
    /// Whole payloads or offers of their ids (PROTOCOL.md 5.6).
    #[sqlx(try_from = "String")]
    pub forwarding: Forwarding,
    /// Its `/v1/info` said `"lazy_forwarding": true` when last asked: it
    /// may be sent offers.
    pub answers_offers: bool,
}

/// One queued delivery, with the payload's JSON when it is still visible.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxItem {
    pub item_id: i64,
    pub peer: String,
    pub payload_id: String,
    pub hops: i64,
    pub enqueued_at: i64,
    pub attempts: i64,
    pub next_attempt: i64,
    pub last_error: Option<String>,
    #[sqlx(try_from = "String")]
    pub state: OutboxState,
    /// None when the payload was hidden (or pruned) since: it is never forwarded.
    pub json: Option<String>,
}

const PEER_COLUMNS: &str = "SELECT node, url, status, subscribe, inbox, added_at, last_poll, last_poll_ok, poll_failures, delivery_failures, last_delivery, forwarding, answers_offers FROM peers";
const ITEM_COLUMNS: &str = "SELECT o.item_id, o.peer, o.payload_id, o.hops, o.enqueued_at, o.attempts, o.next_attempt, o.last_error, o.state, \
     CASE WHEN p.hidden OR p.held_back OR EXISTS (SELECT 1 FROM blocked_authors b WHERE b.author = p.author) THEN NULL ELSE p.json END AS json \
     FROM outbox o LEFT JOIN payloads p ON p.id = o.payload_id";

impl Store {
    pub async fn peers(&self) -> Result<Vec<Peer>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(PEER_COLUMNS);
            qb.push(" ORDER BY added_at, node");
            Ok(qb.build_query_as::<Peer>().fetch_all(p).await?)
        })
    }

    pub async fn peer(&self, node: &str) -> Result<Option<Peer>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(PEER_COLUMNS);
            qb.push(" WHERE node = ").push_bind(node.to_string());
            Ok(qb.build_query_as::<Peer>().fetch_optional(p).await?)
        })
    }

    pub async fn peer_by_url(&self, url: &str) -> Result<Option<Peer>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(PEER_COLUMNS);
            qb.push(" WHERE url = ").push_bind(url.to_string());
            Ok(qb.build_query_as::<Peer>().fetch_optional(p).await?)
        })
    }

    /// Record a new peer with its first document. False when the key or URL is known.
    pub async fn insert_peer(
        &self,
        node: &str,
        url: &str,
        status: PeerStatus,
        subscribe: &str,
        inbox: &str,
        now: i64,
    ) -> Result<bool> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO peers (node, url, status, subscribe, inbox, added_at, last_poll, last_poll_ok) VALUES (",
            );
            let mut sep = qb.separated(", ");
            sep.push_bind(node.to_string())
                .push_bind(url.to_string())
                .push_bind(status.as_str())
                .push_bind(subscribe.to_string())
                .push_bind(inbox.to_string())
                .push_bind(now)
                .push_bind(now)
                .push_bind(now);
            qb.push(") ON CONFLICT DO NOTHING");
            Ok(qb.build().execute(p).await?.rows_affected() > 0)
        })
    }

    pub async fn set_peer_status(&self, node: &str, status: PeerStatus) -> Result<bool> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("UPDATE peers SET status = ");
            qb.push_bind(status.as_str()).push(" WHERE node = ").push_bind(node.to_string());
            Ok(qb.build().execute(p).await?.rows_affected() > 0)
        })
    }

    /// Change a peer's status only while it is still `expected`: a delivery
    /// loop's "unreachable" or "active again" never overwrites an operator's
    /// decision made while its request was in flight. False when it was not.
    pub async fn swap_peer_status(
        &self,
        node: &str,
        expected: PeerStatus,
        status: PeerStatus,
    ) -> Result<bool> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("UPDATE peers SET status = ");
            qb.push_bind(status.as_str())
                .push(" WHERE node = ")
                .push_bind(node.to_string())
                .push(" AND status = ")
                .push_bind(expected.as_str());
            Ok(qb.build().execute(p).await?.rows_affected() > 0)
        })
    }

    /// Forward to a peer whole payloads or offers (PROTOCOL.md 5.6); true
    /// when this changed it (several processes may decide at once: one write).
    pub async fn set_forwarding(&self, node: &str, forwarding: Forwarding) -> Result<bool> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("UPDATE peers SET forwarding = ");
            qb.push_bind(forwarding.as_str())
                .push(" WHERE node = ")
                .push_bind(node.to_string())
                .push(" AND forwarding <> ")
                .push_bind(forwarding.as_str());
            Ok(qb.build().execute(p).await?.rows_affected() > 0)
        })
    }

    /// What the peer's `/v1/info` said of offers; a peer that no longer
    /// answers them gets whole payloads again.
    pub async fn set_answers_offers(&self, node: &str, answers: bool) -> Result<()> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("UPDATE peers SET answers_offers = ");
            qb.push_bind(answers);
            if !answers {
                qb.push(", forwarding = 'eager'");
            }
            qb.push(" WHERE node = ").push_bind(node.to_string());
            qb.build().execute(p).await?;
            Ok(())
        })
    }

    /// The ids among these that this node holds (shown or not) or keeps a
    /// tombstone of: what an offer (PROTOCOL.md 5.6) need not bring.
    pub async fn known_ids(&self, ids: &[String]) -> Result<std::collections::HashSet<String>> {
        let mut known = std::collections::HashSet::new();
        for chunk in ids.chunks(500) {
            for table in ["payloads", "tombstones"] {
                with_pool!(self, p => {
                    let mut qb = QueryBuilder::new(format!("SELECT id FROM {table} WHERE id IN ("));
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(id.clone());
                    }
                    qb.push(")");
                    known.extend(qb.build_query_scalar::<String>().fetch_all(p).await?);
                });
            }
        }
        Ok(known)
    }

    pub async fn delete_peer(&self, node: &str) -> Result<bool> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let mut qb = QueryBuilder::new("DELETE FROM outbox WHERE peer = ");
            qb.push_bind(node.to_string());
            qb.build().execute(&mut *tx).await?;
            let mut qb = QueryBuilder::new("DELETE FROM peers WHERE node = ");
            qb.push_bind(node.to_string());
            let n = qb.build().execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(n > 0)
        })
    }

    /// A successful poll: keep the new preference and inbox.
    pub async fn record_poll_ok(
        &self,
        node: &str,
        subscribe: &str,
        inbox: &str,
        now: i64,
    ) -> Result<()> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("UPDATE peers SET subscribe = ");
            qb.push_bind(subscribe.to_string())
                .push(", inbox = ")
                .push_bind(inbox.to_string())
                .push(", last_poll = ")
                .push_bind(now)
                .push(", last_poll_ok = ")
                .push_bind(now)
                .push(", poll_failures = 0 WHERE node = ")
                .push_bind(node.to_string());
            qb.build().execute(p).await?;
            Ok(())
        })
    }

    /// A failed poll keeps the last preference and counts toward health.
    pub async fn record_poll_failure(&self, node: &str, now: i64) -> Result<()> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("UPDATE peers SET poll_failures = poll_failures + 1, last_poll = ");
            qb.push_bind(now).push(" WHERE node = ").push_bind(node.to_string());
            qb.build().execute(p).await?;
            Ok(())
        })
    }

    pub async fn record_delivery(&self, node: &str, ok: bool, now: i64) -> Result<()> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("UPDATE peers SET ");
            if ok {
                qb.push("delivery_failures = 0, last_delivery = ").push_bind(now);
            } else {
                qb.push("delivery_failures = delivery_failures + 1");
            }
            qb.push(" WHERE node = ").push_bind(node.to_string());
            qb.build().execute(p).await?;
            Ok(())
        })
    }

    /// Pending items for a peer that are due at `now_ms`, oldest first.
    ///
    /// In the order of `outbox_pending_in_order` (peer, state, item_id,
    /// next_attempt), so the database reads that index from the oldest item
    /// on and joins only the rows it returns. The unary `+` keeps
    /// `next_attempt` a filter: offered `outbox_due` for its range, SQLite
    /// without planner statistics (a fresh database, until `PRAGMA optimize`)
    /// read, joined with `payloads` and sorted every due item for each
    /// batch, 225–310 ms a batch with 48,000 queued (docs/performance.md).
    pub async fn due_items(&self, peer: &str, now_ms: i64, limit: i64) -> Result<Vec<OutboxItem>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(ITEM_COLUMNS);
            qb.push(" WHERE o.peer = ")
                .push_bind(peer.to_string())
                .push(" AND o.state = 'pending' AND +o.next_attempt <= ")
                .push_bind(now_ms)
                .push(" ORDER BY o.item_id LIMIT ")
                .push_bind(limit);
            Ok(qb.build_query_as::<OutboxItem>().fetch_all(p).await?)
        })
    }

    /// Make every pending item for `peer` due at `now_ms` (it is back: what
    /// waits out a backoff goes now); the number of items moved up.
    pub async fn make_due(&self, peer: &str, now_ms: i64) -> Result<u64> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("UPDATE outbox SET next_attempt = ");
            qb.push_bind(now_ms)
                .push(" WHERE peer = ")
                .push_bind(peer.to_string())
                .push(" AND state = 'pending' AND next_attempt > ")
                .push_bind(now_ms);
            Ok(qb.build().execute(p).await?.rows_affected())
        })
    }

    /// When the peer's next pending item falls due (Unix ms), if it has any.
    pub async fn next_due(&self, peer: &str) -> Result<Option<i64>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("SELECT MIN(next_attempt) FROM outbox WHERE state = 'pending' AND peer = ");
            qb.push_bind(peer.to_string());
            Ok(qb.build_query_scalar::<Option<i64>>().fetch_one(p).await?)
        })
    }

    pub async fn delete_items(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("DELETE FROM outbox WHERE item_id IN (");
            let mut sep = qb.separated(", ");
            for id in ids {
                sep.push_bind(*id);
            }
            qb.push(")");
            qb.build().execute(p).await?;
            Ok(())
        })
    }

    /// A failed attempt: try again at `next_attempt_ms`, or give up (dead letter).
    pub async fn defer_items(
        &self,
        ids: &[i64],
        next_attempt_ms: i64,
        error: &str,
        dead: bool,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("UPDATE outbox SET attempts = attempts + 1, next_attempt = ");
            qb.push_bind(next_attempt_ms)
                .push(", last_error = ")
                .push_bind(error.to_string())
                .push(", state = ")
                .push_bind(if dead { OutboxState::Dead } else { OutboxState::Pending }.as_str())
                .push(" WHERE item_id IN (");
            let mut sep = qb.separated(", ");
            for id in ids {
                sep.push_bind(*id);
            }
            qb.push(")");
            qb.build().execute(p).await?;
            Ok(())
        })
    }

    /// Items in a state, oldest first.
    pub async fn outbox_items(&self, state: OutboxState, limit: i64) -> Result<Vec<OutboxItem>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(ITEM_COLUMNS);
            qb.push(" WHERE o.state = ")
                .push_bind(state.as_str())
                .push(" ORDER BY o.item_id LIMIT ")
                .push_bind(limit);
            Ok(qb.build_query_as::<OutboxItem>().fetch_all(p).await?)
        })
    }

    /// Pending items per peer.
    pub async fn outbox_depths(&self) -> Result<Vec<(String, i64)>> {
        with_pool!(self, p => {
            Ok(sqlx::query_as::<_, (String, i64)>(
                "SELECT peer, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY peer ORDER BY peer",
            )
            .fetch_all(p)
            .await?)
        })
    }

    /// Drop dead letters given up before `before_ms` (their last attempt):
    /// a peer that keeps failing cannot grow the outbox forever.
    pub async fn prune_dead_letters(&self, before_ms: i64) -> Result<u64> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("DELETE FROM outbox WHERE state = ");
            qb.push_bind(OutboxState::Dead.as_str())
                .push(" AND next_attempt < ")
                .push_bind(before_ms);
            Ok(qb.build().execute(p).await?.rows_affected())
        })
    }

    /// Put dead letters back in the queue (all, or the given ids), due now.
    pub async fn retry_dead(&self, ids: Option<&[i64]>, now_ms: i64) -> Result<u64> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("UPDATE outbox SET state = 'pending', attempts = 0, enqueued_at = ");
            qb.push_bind(now_ms)
                .push(", next_attempt = ")
                .push_bind(now_ms)
                .push(" WHERE state = 'dead'");
            if let Some(ids) = ids {
                if ids.is_empty() {
                    return Ok(0);
                }
                qb.push(" AND item_id IN (");
                let mut sep = qb.separated(", ");
                for id in ids {
                    sep.push_bind(*id);
                }
                qb.push(")");
            }
            Ok(qb.build().execute(p).await?.rows_affected())
        })
    }
}
