//! Job run history and the maintenance queries the scheduled jobs run.

use sqlx::QueryBuilder;

use crate::{with_pool, BeginWrite, Pool, Result, Store};

/// One recorded run of a job.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobRun {
    pub run_id: i64,
    pub job: String,
    /// The tick it ran for (Unix seconds); None for a run on demand.
    pub scheduled_for: Option<i64>,
    pub instance: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: String,
    pub summary: Option<String>,
    pub error: Option<String>,
}

/// What one prune pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub expired: u64,
    pub purged_hidden: u64,
    /// Tombstones older than retention plus the grace, dropped.
    pub tombstones_dropped: u64,
}

/// Rows deleted per statement, so a prune never holds the database for long.
const PRUNE_CHUNK: i64 = 5000;

impl Store {
    /// Record the start of a run. For a scheduled run (`scheduled_for` set) this
    /// is also the claim: None when another instance already holds that tick.
    pub async fn claim_run(
        &self,
        job: &str,
        scheduled_for: Option<i64>,
        instance: &str,
        started_at_ms: i64,
    ) -> Result<Option<i64>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(
                "INSERT INTO job_runs (job, scheduled_for, instance, started_at, outcome) VALUES (",
            );
            qb.push_bind(job.to_string())
                .push(", ")
                .push_bind(scheduled_for)
                .push(", ")
                .push_bind(instance.to_string())
                .push(", ")
                .push_bind(started_at_ms)
                .push(", 'running') ON CONFLICT (job, scheduled_for) DO NOTHING RETURNING run_id");
            Ok(qb.build_query_scalar::<i64>().fetch_optional(p).await?)
        })
    }

    pub async fn finish_run(
        &self,
        run_id: i64,
        finished_at_ms: i64,
        outcome: &str,
        summary: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("UPDATE job_runs SET finished_at = ");
            qb.push_bind(finished_at_ms)
                .push(", outcome = ")
                .push_bind(outcome.to_string())
                .push(", summary = ")
                .push_bind(summary.map(String::from))
                .push(", error = ")
                .push_bind(error.map(String::from))
                .push(" WHERE run_id = ")
                .push_bind(run_id);
            qb.build().execute(p).await?;
            Ok(())
        })
    }

    /// The newest runs of a job, newest first.
    pub async fn recent_runs(&self, job: &str, limit: i64) -> Result<Vec<JobRun>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("SELECT * FROM job_runs WHERE job = ");
            qb.push_bind(job.to_string())
                .push(" ORDER BY run_id DESC LIMIT ")
                .push_bind(limit);
            Ok(qb.build_query_as::<JobRun>().fetch_all(p).await?)
        })
    }

    /// Keep only the newest `keep` runs of a job.
    pub async fn trim_runs(&self, job: &str, keep: i64) -> Result<u64> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new("DELETE FROM job_runs WHERE job = ");
            qb.push_bind(job.to_string())
                .push(" AND run_id < (SELECT COALESCE(MIN(run_id), 0) FROM (SELECT run_id FROM job_runs WHERE job = ")
                .push_bind(job.to_string())
                .push(" ORDER BY run_id DESC LIMIT ")
                .push_bind(keep.max(1))
                .push(") AS newest)");
            Ok(qb.build().execute(p).await?.rows_affected())
        })
    }

    /// Retention: delete payloads created before `created_before` (when given), and
    /// purge payloads hidden before `hidden_before_ms`, keeping each purged id
    /// as a tombstone (PROTOCOL.md 2.3: published again, it is a duplicate).
    /// Tombstones purged before `tombstones_before` (when given) are dropped.
    pub async fn prune(
        &self,
        created_before: Option<i64>,
        hidden_before_ms: i64,
        tombstones_before: Option<i64>,
    ) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        if let Some(cutoff) = created_before {
            pruned.expired = self
                .delete_payloads_where("p.created_at < ", cutoff)
                .await?;
        }
        pruned.purged_hidden = self
            .delete_payloads_where("p.hidden AND p.hidden_at < ", hidden_before_ms)
            .await?;
        if let Some(cutoff) = tombstones_before {
            pruned.tombstones_dropped = with_pool!(self, p => {
                let mut qb = QueryBuilder::new("DELETE FROM tombstones WHERE purged_at < ");
                qb.push_bind(cutoff);
                qb.build().execute(p).await?.rows_affected()
            });
        }
        Ok(pruned)
    }

    /// Delete the payloads matching `condition`, keeping a tombstone for each
    /// hidden one (whether it goes for its grace or for retention).
    async fn delete_payloads_where(&self, condition: &str, value: i64) -> Result<u64> {
        let mut total = 0;
        loop {
            let deleted = with_pool!(self, p => {
                let mut tx = p.begin_write().await?;
                let mut qb = QueryBuilder::new("SELECT p.rid, p.id, p.hidden, p.received_at FROM payloads p WHERE ");
                qb.push(condition).push_bind(value).push(" LIMIT ").push_bind(PRUNE_CHUNK);
                let rows: Vec<(i64, String, bool, i64)> = qb.build_query_as().fetch_all(&mut *tx).await?;
                let rids: Vec<i64> = rows.iter().map(|r| r.0).collect();
                // The first time it was stored goes with the id: a duplicate's
                // receipt carries it (PROTOCOL.md 4.4).
                let hidden: Vec<(&str, i64)> =
                    rows.iter().filter(|r| r.2).map(|r| (r.1.as_str(), r.3)).collect();
                if !hidden.is_empty() {
                    let now = crate::clock::now_secs();
                    let mut qb = QueryBuilder::new("INSERT INTO tombstones (id, purged_at, received_at) ");
                    qb.push_values(&hidden, |mut b, (id, received_at)| {
                        b.push_bind(id.to_string()).push_bind(now).push_bind(*received_at);
                    });
                    qb.push(" ON CONFLICT (id) DO NOTHING");
                    qb.build().execute(&mut *tx).await?;
                }
                if !rids.is_empty() {
                    for table in ["payload_tags", "payloads"] {
                        let mut qb = QueryBuilder::new(format!("DELETE FROM {table} WHERE rid IN ("));
                        let mut sep = qb.separated(", ");
                        for rid in &rids {
                            sep.push_bind(*rid);
                        }
                        qb.push(")");
                        qb.build().execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                rids.len() as u64
            });
            total += deleted;
            if deleted < PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// Let the database refresh its planner statistics (SQLite `PRAGMA optimize`,
    /// PostgreSQL `ANALYZE`).
    pub async fn optimize(&self) -> Result<()> {
        match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query("PRAGMA optimize").execute(p).await?;
            }
            Pool::Postgres(p) => {
                sqlx::query("ANALYZE").execute(p).await?;
            }
        }
        Ok(())
    }
}
