//! Several processes, one node (PROTOCOL.md 8.1): what the processes sharing
//! one PostgreSQL database tell each other and settle between them. The
//! database is the only thing they share: NOTIFY carries news (new payloads,
//! signals, peer changes), rows settle who does what (delivery leases, seen
//! nonces, each process's heartbeat), advisory locks keep a job from
//! overlapping itself. On SQLite a node is one process and most of this is a
//! no-op.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::QueryBuilder;

use crate::{with_pool, Backend, Pool, Result, Store};

/// The NOTIFY channels of one node, named after its key so that nodes
/// sharing a database server (in different schemas) never hear each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// New visible payloads: `Stored` messages from the writer's transaction.
    pub payloads: String,
    /// Signals (PROTOCOL.md 4.2), relayed to every process's connections.
    pub signals: String,
    /// Peer changes: the peer's node key.
    pub peers: String,
}

impl Channels {
    pub fn for_node(node_hex: &str) -> Self {
        let tag = &node_hex[..node_hex.len().min(16)];
        Self {
            payloads: format!("meshrelay_{tag}_payloads"),
            signals: format!("meshrelay_{tag}_signals"),
            peers: format!("meshrelay_{tag}_peers"),
        }
    }
}

/// NOTIFY's payload limit is 8,000 bytes; stay clear of it.
pub const MAX_NOTIFY_BYTES: usize = 7_500;

/// What the writer tells the other processes after a commit: the row ids of
/// the payloads it stored visible, and whether it queued forwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The instance that stored them (it delivered them itself).
    #[serde(rename = "i")]
    pub instance: String,
    #[serde(rename = "r")]
    pub rids: Vec<i64>,
    /// Forwards were queued: delivery loops have work.
    #[serde(rename = "f")]
    pub forwards: bool,
}

impl Stored {
    /// The messages announcing `rids`, each within `MAX_NOTIFY_BYTES`.
    pub fn messages(instance: &str, rids: &[i64], forwards: bool) -> Vec<String> {
        // 20 characters per rid at most, plus the envelope.
        let per = ((MAX_NOTIFY_BYTES - 64 - instance.len()) / 21).max(1);
        rids.chunks(per)
            .map(|chunk| {
                serde_json::to_string(&Stored {
                    instance: instance.to_string(),
                    rids: chunk.to_vec(),
                    forwards,
                })
                .expect("serializes")
            })
            .collect()
    }
}

/// A peer change told to the other processes: who changed it, and the
/// peer's node key (`*` for every peer, after a poll of all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNote {
    #[serde(rename = "i")]
    pub instance: String,
    pub node: String,
}

/// One process's heartbeat, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct Instance {
    pub instance: String,
    pub started_at: i64,
    pub last_seen: i64,
    pub connections: i64,
    pub subscriptions: i64,
}

/// A notification heard on one of the node's channels.
#[derive(Debug, Clone)]
pub struct Heard {
    pub channel: String,
    pub payload: String,
}

/// What the listener's `recv` gives.
#[derive(Debug)]
pub enum Event {
    Heard(Heard),
    /// The connection was lost: notifications sent meanwhile are gone; the
    /// next `recv` reconnects and listens again.
    Lost,
}

/// A LISTEN connection of its own, under an application name of the caller's.
pub struct Listener {
    inner: PgListener,
}

impl Listener {
    /// Next notification, or `Lost`.
    pub async fn recv(&mut self) -> Result<Event> {
        Ok(match self.inner.try_recv().await? {
            Some(n) => Event::Heard(Heard {
                channel: n.channel().to_string(),
                payload: n.payload().to_string(),
            }),
            None => Event::Lost,
        })
    }

    /// A round trip on the listening connection: its server process id.
    /// Another id than last time means the connection was replaced (the
    /// listener reconnects by itself) and notifications may have been lost.
    pub async fn backend_pid(&mut self) -> Result<i32> {
        Ok(sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut self.inner)
            .await?)
    }
}

/// A job's cluster-wide lock, held for one run (PROTOCOL.md 8.1: a job never
/// overlaps itself). On PostgreSQL a session advisory lock on a connection
/// kept out of the pool: a process that dies drops the connection and with
/// it the lock.
pub struct JobLock {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    key: i64,
    /// The lock's own pool of one connection, so a running job never holds
    /// one of the handlers' connections.
    _pool: Option<sqlx::PgPool>,
}

impl JobLock {
    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.key)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // Closing the session releases the lock.
                drop(conn.detach());
            }
        }
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Not released (the run panicked or was cancelled): closing the
            // session releases the lock; the pool opens another connection.
            drop(conn.detach());
        }
    }
}

impl Store {
    /// Whether this store can hold several processes (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.backend() == Backend::Postgres
    }

    /// A listener on `channels`, on a connection of its own named
    /// `application` (in `pg_stat_activity`). None on SQLite.
    pub async fn listen(&self, application: &str, channels: &[&str]) -> Result<Option<Listener>> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(None);
        };
        let opts = p
            .connect_options()
            .as_ref()
            .clone()
            .application_name(application);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(opts);
        let mut inner = PgListener::connect_with(&pool).await?;
        inner.listen_all(channels.iter().copied()).await?;
        Ok(Some(Listener { inner }))
    }

    /// Have the server close the connections named `application` (tests of
    /// a lost listener; an operator does the same with `pg_terminate_backend`).
    pub async fn terminate_backends(&self, application: &str) -> Result<Vec<bool>> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(Vec::new());
        };
        Ok(sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(application)
        .fetch_all(p)
        .await?)
    }

    /// Send a notification on `channel` (PostgreSQL; nothing on SQLite).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        if let Pool::Postgres(p) = &self.pool {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(p)
                .await?;
        }
        Ok(())
    }

    /// Record this process's heartbeat.
    pub async fn heartbeat(&self, beat: &Instance) -> Result<()> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO instances (instance, started_at, last_seen, connections, subscriptions) VALUES (",
            );
            let mut sep = qb.separated(", ");
            sep.push_bind(beat.instance.clone())
                .push_bind(beat.started_at)
                .push_bind(beat.last_seen)
                .push_bind(beat.connections)
                .push_bind(beat.subscriptions);
            qb.push(
                ") ON CONFLICT (instance) DO UPDATE SET last_seen = EXCLUDED.last_seen, \
                 connections = EXCLUDED.connections, subscriptions = EXCLUDED.subscriptions",
            );
            qb.build().execute(p).await?;
            Ok(())
        })
    }

    /// Delete the rows of processes not seen since `before` (Unix seconds).
    pub async fn purge_instances(&self, before: i64) -> Result<u64> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("DELETE FROM instances WHERE last_seen < ");
            qb.push_bind(before);
            Ok(qb.build().execute(p).await?.rows_affected())
        })
    }

    /// The processes seen since `since` (Unix seconds), newest start first.
    pub async fn instances(&self, since: i64) -> Result<Vec<Instance>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(
                "SELECT instance, started_at, last_seen, connections, subscriptions FROM instances WHERE last_seen >= ",
            );
            qb.push_bind(since).push(" ORDER BY started_at DESC, instance");
            Ok(qb.build_query_as().fetch_all(p).await?)
        })
    }

    /// A process stopping cleanly leaves the list at once.
    pub async fn forget_instance(&self, instance: &str) -> Result<()> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("DELETE FROM instances WHERE instance = ");
            qb.push_bind(instance.to_string());
            qb.build().execute(p).await?;
            Ok(())
        })
    }

    /// Give up every delivery lease `holder` holds (its delivery loops have
    /// stopped: another process may take them over at once).
    pub async fn release_leases_of(&self, holder: &str) -> Result<()> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("DELETE FROM delivery_leases WHERE holder = ");
            qb.push_bind(holder.to_string());
            qb.build().execute(p).await?;
            Ok(())
        })
    }

    /// Take or renew the lease on delivering to `peer` for `ttl_ms`: true
    /// when `holder` holds it now. A lease held by another process is taken
    /// over only once it has expired. Times are the database's clock, so
    /// machines whose clocks differ agree on when a lease expires. On SQLite
    /// the one process always holds it.
    pub async fn hold_lease(&self, peer: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(true);
        };
        let held: Option<String> = sqlx::query_scalar(
            "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms) \
             INSERT INTO delivery_leases (peer, holder, expires_at) \
             SELECT $1, $2, now.ms + $3 FROM now \
             ON CONFLICT (peer) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE delivery_leases.holder = EXCLUDED.holder \
             OR delivery_leases.expires_at < (SELECT ms FROM now) \
             RETURNING holder",
        )
        .bind(peer)
        .bind(holder)
        .bind(ttl_ms)
        .fetch_optional(p)
        .await?;
        Ok(held.is_some())
    }

    /// Who holds the lease on delivering to `peer`, while it is valid (by
    /// the database's clock; None on SQLite).
    pub async fn lease_holder(&self, peer: &str) -> Result<Option<String>> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(None);
        };
        Ok(sqlx::query_scalar(
            "SELECT holder FROM delivery_leases WHERE peer = $1 \
             AND expires_at >= (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
        )
        .bind(peer)
        .fetch_optional(p)
        .await?)
    }

    /// How many valid delivery leases each process holds (PostgreSQL; on
    /// SQLite the one process delivers to every peer and holds none).
    pub async fn lease_counts(&self) -> Result<std::collections::HashMap<String, i64>> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(Default::default());
        };
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT holder, count(*) FROM delivery_leases \
             WHERE expires_at >= (extract(epoch FROM clock_timestamp()) * 1000)::bigint GROUP BY holder",
        )
        .fetch_all(p)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Give up a lease (the loop stops, or the peer no longer takes forwards).
    pub async fn release_lease(&self, peer: &str, holder: &str) -> Result<()> {
        if let Pool::Postgres(p) = &self.pool {
            sqlx::query("DELETE FROM delivery_leases WHERE peer = $1 AND holder = $2")
                .bind(peer)
                .bind(holder)
                .execute(p)
                .await?;
        }
        Ok(())
    }

    /// Record a signed request's nonce until `expires_at` (Unix seconds):
    /// false when some process recorded it already (a replay). On SQLite the
    /// process's own cache is the whole node's, and this records nothing.
    pub async fn record_nonce(&self, nonce: &str, expires_at: i64) -> Result<bool> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(true);
        };
        let n = sqlx::query(
            "INSERT INTO request_nonces (nonce, expires_at) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(nonce)
        .bind(expires_at)
        .execute(p)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Delete nonces no signature can use any more; returns how many.
    pub async fn purge_nonces(&self, now_secs: i64) -> Result<u64> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("DELETE FROM request_nonces WHERE expires_at < ");
            qb.push_bind(now_secs);
            Ok(qb.build().execute(p).await?.rows_affected())
        })
    }

    /// The JSON of the payloads among `rids` that are shown, in rid order.
    pub async fn shown_by_rid(&self, rids: &[i64]) -> Result<Vec<(i64, String)>> {
        if rids.is_empty() {
            return Ok(Vec::new());
        }
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("SELECT rid, json FROM payloads WHERE rid IN (");
            let mut sep = qb.separated(", ");
            for r in rids {
                sep.push_bind(*r);
            }
            qb.push(") AND NOT hidden AND NOT held_back ORDER BY rid");
            Ok(qb.build_query_as().fetch_all(p).await?)
        })
    }

    /// The shown payloads first stored at or after `since` (Unix seconds,
    /// as `received_at`) with a row id above `after_rid`, oldest rid first,
    /// at most `limit` (a page of a listener's catch-up after a reconnect).
    pub async fn shown_since(
        &self,
        since: i64,
        after_rid: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("SELECT rid, json FROM payloads WHERE received_at >= ");
            qb.push_bind(since)
                .push(" AND rid > ")
                .push_bind(after_rid)
                .push(" AND NOT hidden AND NOT held_back ORDER BY rid LIMIT ")
                .push_bind(limit);
            Ok(qb.build_query_as().fetch_all(p).await?)
        })
    }

    /// Try to take the cluster-wide lock of job `name` for one run: None when
    /// another run holds it. On SQLite the scheduler's own flag suffices.
    pub async fn try_job_lock(&self, name: &str) -> Result<Option<JobLock>> {
        let Pool::Postgres(p) = &self.pool else {
            return Ok(Some(JobLock {
                conn: None,
                key: 0,
                _pool: None,
            }));
        };
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(p.connect_options().as_ref().clone());
        let mut conn = pool.acquire().await?;
        // Advisory locks are database-wide: the schema is part of the key.
        let key: i64 =
            sqlx::query_scalar("SELECT hashtextextended(current_schema() || ':job:' || $1, 0)")
                .bind(name)
                .fetch_one(&mut *conn)
                .await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then_some(JobLock {
            conn: Some(conn),
            key,
            _pool: Some(pool),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_messages_stay_within_notify_limit_and_keep_every_rid() {
        let rids: Vec<i64> = (0..5000).map(|i| i64::MAX - i).collect();
        let msgs = Stored::messages("host:123:abcd", &rids, true);
        assert!(msgs.len() > 1);
        let mut back = Vec::new();
        for m in &msgs {
            assert!(m.len() <= MAX_NOTIFY_BYTES, "{}", m.len());
            let s: Stored = serde_json::from_str(m).unwrap();
            assert!(s.forwards);
            back.extend(s.rids);
        }
        assert_eq!(back, rids);
    }

    #[test]
    fn channels_are_named_after_the_node() {
        let c = Channels::for_node(&"ab".repeat(32));
        assert_eq!(c.payloads, "meshrelay_abababababababab_payloads");
        assert!(c.peers.len() < 64, "identifiers are at most 63 bytes");
    }
}
