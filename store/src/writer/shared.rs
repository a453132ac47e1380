//! What a batch's transaction does so that several processes' writers on one
//! PostgreSQL database behave as one writer (PROTOCOL.md 8.1). On SQLite a
//! node is one process, and each step is a no-op.

use std::collections::BTreeSet;
use std::future::Future;

use sqlx::Transaction;

use crate::Result;

/// Buckets of authors locked per batch: a delete and its target (same
/// author) serialize, and a batch of a thousand authors still takes at most
/// this many locks (PostgreSQL's lock table is shared by every session).
const AUTHOR_BUCKETS_HEX: usize = 2;

/// The lock names of a batch: one per author bucket, one per community.
pub(super) fn lock_names<'a>(
    authors: impl Iterator<Item = &'a str>,
    roots: impl Iterator<Item = &'a str>,
) -> Vec<String> {
    let mut names: BTreeSet<String> = authors
        .map(|a| format!("a:{}", a.get(..AUTHOR_BUCKETS_HEX).unwrap_or(a)))
        .collect();
    names.extend(roots.map(|r| format!("c:{r}")));
    names.into_iter().collect()
}

pub(super) trait Shared: sqlx::Database + Sized {
    /// Take the transaction's advisory locks on `names`, in one fixed order
    /// (so that two processes' batches wait for each other, never deadlock).
    /// Under READ COMMITTED every later statement then sees what a batch
    /// that held one of them committed.
    fn lock_names<'a>(
        tx: &'a mut Transaction<'static, Self>,
        names: &'a [String],
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    /// How many governance payloads of a community are held and the newest
    /// one's row: another process stored governance when it changed. None
    /// on SQLite, where the writer is the only one.
    fn governance_version<'a>(
        tx: &'a mut Transaction<'static, Self>,
        root: &'a str,
    ) -> impl Future<Output = Result<Option<(i64, i64)>>> + Send + 'a;

    /// NOTIFY each message on `channel`; delivered when the transaction commits.
    fn notify<'a>(
        tx: &'a mut Transaction<'static, Self>,
        channel: &'a str,
        messages: &'a [String],
    ) -> impl Future<Output = Result<()>> + Send + 'a;
}

impl Shared for sqlx::Sqlite {
    async fn lock_names(_: &mut Transaction<'static, Self>, _: &[String]) -> Result<()> {
        // BEGIN IMMEDIATE already holds the database's one write lock.
        Ok(())
    }

    async fn governance_version(
        _: &mut Transaction<'static, Self>,
        _: &str,
    ) -> Result<Option<(i64, i64)>> {
        Ok(None)
    }

    async fn notify(_: &mut Transaction<'static, Self>, _: &str, _: &[String]) -> Result<()> {
        Ok(())
    }
}

impl Shared for sqlx::Postgres {
    async fn lock_names(tx: &mut Transaction<'static, Self>, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        // Advisory locks are database-wide: the schema is part of the key.
        // The function runs after the sort, so the locks are taken in key order.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT \
             hashtextextended(current_schema() || ':writer:' || n, 0) AS k \
             FROM unnest($1::text[]) AS t(n)) s ORDER BY k",
        )
        .bind(names)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn governance_version(
        tx: &mut Transaction<'static, Self>,
        root: &str,
    ) -> Result<Option<(i64, i64)>> {
        let kinds: Vec<String> = meshrelay_protocol::community::GOVERNANCE_KINDS
            .iter()
            .map(|k| k.to_string())
            .collect();
        let version: (i64, i64) = sqlx::query_as(
            "SELECT count(*), COALESCE(max(rid), 0) FROM payloads \
             WHERE community = $1 AND kind = ANY($2)",
        )
        .bind(root)
        .bind(&kinds)
        .fetch_one(&mut **tx)
        .await?;
        Ok(Some(version))
    }

    async fn notify(
        tx: &mut Transaction<'static, Self>,
        channel: &str,
        messages: &[String],
    ) -> Result<()> {
        for m in messages {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(m)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lock_names_are_sorted_bucketed_and_distinct() {
        let a = "ab".repeat(32);
        let b = format!("ab{}", "00".repeat(31));
        let names = super::lock_names(
            [a.as_str(), b.as_str(), "ff00"].into_iter(),
            ["g/x/y"].into_iter(),
        );
        assert_eq!(names, vec!["a:ab", "a:ff", "c:g/x/y"]);
    }
}
