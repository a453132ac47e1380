//! What the admin API keeps: its audit log and the samples behind the
//! dashboard's charts.

use sqlx::QueryBuilder;

use crate::{with_pool, Result, Store};

/// One change made through the admin API.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    pub entry_id: i64,
    /// Unix seconds.
    pub at: i64,
    pub action: String,
    pub target: String,
    pub from_addr: String,
    /// `api` or `dashboard`.
    pub via: String,
    pub detail: Option<String>,
}

/// One minute's sample of the node's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct StatsSample {
    /// Unix seconds.
    pub at: i64,
    /// Payloads ever stored here (the highest insertion number).
    pub stored_total: i64,
    /// Items delivered to peers since the previous sample.
    pub forwarded: i64,
    pub outbox_pending: i64,
    pub outbox_dead: i64,
}

/// Outbox items of one peer, by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxDepth {
    pub pending: i64,
    pub dead: i64,
}

impl Store {
    pub async fn insert_audit(
        &self,
        at: i64,
        action: &str,
        target: &str,
        from_addr: &str,
        via: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("INSERT INTO audit_log (at, action, target, from_addr, via, detail) VALUES (");
            let mut sep = qb.separated(", ");
            sep.push_bind(at)
                .push_bind(action.to_string())
                .push_bind(target.to_string())
                .push_bind(from_addr.to_string())
                .push_bind(via.to_string())
                .push_bind(detail.map(str::to_string));
            qb.push(")");
            qb.build().execute(p).await?;
            Ok(())
        })
    }

    /// Audit entries, newest first, older than `before` (an entry id) if given.
    pub async fn audit(&self, before: Option<i64>, limit: i64) -> Result<Vec<AuditEntry>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(
                "SELECT entry_id, at, action, target, from_addr, via, detail FROM audit_log",
            );
            if let Some(b) = before {
                qb.push(" WHERE entry_id < ").push_bind(b);
            }
            qb.push(" ORDER BY entry_id DESC LIMIT ").push_bind(limit);
            Ok(qb.build_query_as::<AuditEntry>().fetch_all(p).await?)
        })
    }

    /// Record a sample and drop those older than `keep_after`.
    pub async fn insert_sample(&self, s: StatsSample, keep_after: i64) -> Result<()> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO stats_samples (at, stored_total, forwarded, outbox_pending, outbox_dead) VALUES (",
            );
            let mut sep = qb.separated(", ");
            sep.push_bind(s.at)
                .push_bind(s.stored_total)
                .push_bind(s.forwarded)
                .push_bind(s.outbox_pending)
                .push_bind(s.outbox_dead);
            qb.push(") ON CONFLICT (at) DO NOTHING");
            qb.build().execute(p).await?;
            let mut qb = QueryBuilder::new("DELETE FROM stats_samples WHERE at < ");
            qb.push_bind(keep_after);
            qb.build().execute(p).await?;
            Ok(())
        })
    }

    /// Samples taken at or after `since`, oldest first.
    pub async fn samples(&self, since: i64) -> Result<Vec<StatsSample>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(
                "SELECT at, stored_total, forwarded, outbox_pending, outbox_dead FROM stats_samples WHERE at >= ",
            );
            qb.push_bind(since).push(" ORDER BY at");
            Ok(qb.build_query_as::<StatsSample>().fetch_all(p).await?)
        })
    }

    /// The newest sample taken at or before `at`.
    pub async fn sample_before(&self, at: i64) -> Result<Option<StatsSample>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(
                "SELECT at, stored_total, forwarded, outbox_pending, outbox_dead FROM stats_samples WHERE at <= ",
            );
            qb.push_bind(at).push(" ORDER BY at DESC LIMIT 1");
            Ok(qb.build_query_as::<StatsSample>().fetch_optional(p).await?)
        })
    }

    /// Outbox items per peer and state, for every peer with any.
    pub async fn outbox_depth_by_peer(
        &self,
    ) -> Result<std::collections::BTreeMap<String, OutboxDepth>> {
        let rows = with_pool!(self, p => {
            sqlx::query_as::<_, (String, String, i64)>(
                "SELECT peer, state, COUNT(*) FROM outbox GROUP BY peer, state",
            )
            .fetch_all(p)
            .await?
        });
        let mut out = std::collections::BTreeMap::<String, OutboxDepth>::new();
        for (peer, state, n) in rows {
            let d = out.entry(peer).or_default();
            match state.parse() {
                Ok(crate::OutboxState::Dead) => d.dead += n,
                _ => d.pending += n,
            }
        }
        Ok(out)
    }

    /// Payloads received at or after `since` (Unix seconds). A table scan:
    /// the admin API asks only while its samples do not reach back that far.
    pub async fn count_received_since(&self, since: i64) -> Result<i64> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM payloads WHERE received_at >= ");
            qb.push_bind(since);
            Ok(qb.build_query_scalar::<i64>().fetch_one(p).await?)
        })
    }

    /// Payloads hidden by their author or an operator.
    pub async fn count_hidden(&self) -> Result<i64> {
        with_pool!(self, p => {
            Ok(sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM payloads WHERE hidden").fetch_one(p).await?)
        })
    }

    /// Whether a payload with this id is stored (hidden or not).
    pub async fn payload_exists(&self, id: &str) -> Result<bool> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM payloads WHERE id = ");
            qb.push_bind(id.to_string());
            Ok(qb.build_query_scalar::<i64>().fetch_one(p).await? > 0)
        })
    }
}

impl Store {
    /// Record `node_key` as the key this database belongs to, unless one is
    /// recorded already; returns the recorded one (PROTOCOL.md 8.1).
    pub async fn claim_node_key(&self, node_key: &str, now_secs: i64) -> Result<String> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("INSERT INTO node_identity (id, node_key, recorded_at) VALUES (1, ");
            let mut sep = qb.separated(", ");
            sep.push_bind(node_key.to_string()).push_bind(now_secs);
            qb.push(") ON CONFLICT (id) DO NOTHING");
            qb.build().execute(p).await?;
            Ok(sqlx::query_scalar("SELECT node_key FROM node_identity WHERE id = 1")
                .fetch_one(p)
                .await?)
        })
    }
}
