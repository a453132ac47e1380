//! The steps of a batch's transaction: one body per step, compiled for both
//! backends by `impl_steps!`.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use sqlx::{QueryBuilder, Transaction};

use super::community::root_of;
use super::Job;
use crate::Result;

/// Rows per multi-row INSERT, kept well under both backends' bind limits.
pub(super) const ROWS_PER_INSERT: usize = 500;

/// The steps of a batch's transaction, one implementation per backend from
/// one body (`impl_steps!`).
pub(super) trait Steps: sqlx::Database + Sized {
    /// The authors among these that the operator blocked.
    fn blocked_among<'a>(
        tx: &'a mut Transaction<'static, Self>,
        authors: &'a HashSet<&str>,
    ) -> impl Future<Output = Result<HashSet<String>>> + Send + 'a;

    /// The ids among these that `table` (`payloads` or `tombstones`) holds,
    /// with when each was first stored (`None` for a tombstone older than
    /// that record).
    fn received_at_in<'a>(
        tx: &'a mut Transaction<'static, Self>,
        table: &'static str,
        ids: &'a [&str],
    ) -> impl Future<Output = Result<HashMap<String, Option<i64>>>> + Send + 'a;

    /// The JSON of every governance payload held of a community (shown or not).
    fn governance_of<'a>(
        tx: &'a mut Transaction<'static, Self>,
        root: &'a str,
    ) -> impl Future<Output = Result<Vec<String>>> + Send + 'a;

    /// `(id, author, created_at, kind, channel, held_back)` of every payload
    /// of a community.
    #[allow(clippy::type_complexity)]
    fn community_rows<'a>(
        tx: &'a mut Transaction<'static, Self>,
        root: &'a str,
    ) -> impl Future<Output = Result<Vec<(String, String, i64, String, String, bool)>>> + Send + 'a;

    fn set_held_back<'a>(
        tx: &'a mut Transaction<'static, Self>,
        ids: &'a [String],
        held_back: bool,
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    /// Insert the payloads not held yet; returns the new ones' `id -> rid`.
    fn insert_payloads<'a>(
        tx: &'a mut Transaction<'static, Self>,
        jobs: &'a [&Job],
    ) -> impl Future<Output = Result<HashMap<String, i64>>> + Send + 'a;

    fn insert_tags<'a>(
        tx: &'a mut Transaction<'static, Self>,
        rows: &'a [(i64, &str, &str)],
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    fn record_deletions<'a>(
        tx: &'a mut Transaction<'static, Self>,
        rows: &'a [(&str, &str, &str)],
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    /// Hide those of `ids` that a delete by their own author names; returns them.
    fn hide_deleted<'a>(
        tx: &'a mut Transaction<'static, Self>,
        ids: &'a [&str],
        now_ms: i64,
    ) -> impl Future<Output = Result<HashSet<String>>> + Send + 'a;

    /// Queue `(sha256, peer)` blob fetches, due now; those queued already stay.
    fn queue_blob_fetches<'a>(
        tx: &'a mut Transaction<'static, Self>,
        rows: &'a [(&str, &str)],
        now_ms: i64,
    ) -> impl Future<Output = Result<()>> + Send + 'a;

    /// Queue `(peer, payload id, hops)` in the outbox, due now.
    fn queue_forwards<'a>(
        tx: &'a mut Transaction<'static, Self>,
        rows: &'a [(&str, &str, i64)],
        now_ms: i64,
    ) -> impl Future<Output = Result<()>> + Send + 'a;
}

macro_rules! impl_steps {
    ($db:ty) => {
        impl Steps for $db {
            async fn blocked_among(
                tx: &mut Transaction<'static, Self>,
                authors: &HashSet<&str>,
            ) -> Result<HashSet<String>> {
                let mut qb = QueryBuilder::new("SELECT author FROM blocked_authors WHERE author IN (");
                let mut sep = qb.separated(", ");
                for a in authors {
                    sep.push_bind(a.to_string());
                }
                qb.push(")");
                let rows = qb.build_query_scalar::<String>().fetch_all(&mut **tx).await?;
                Ok(rows.into_iter().collect())
            }

            async fn received_at_in(
                tx: &mut Transaction<'static, Self>,
                table: &'static str,
                ids: &[&str],
            ) -> Result<HashMap<String, Option<i64>>> {
                let mut found = HashMap::new();
                for chunk in ids.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new(format!("SELECT id, received_at FROM {table} WHERE id IN ("));
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(id.to_string());
                    }
                    qb.push(")");
                    found.extend(
                        qb.build_query_as::<(String, Option<i64>)>().fetch_all(&mut **tx).await?,
                    );
                }
                Ok(found)
            }

            async fn governance_of(
                tx: &mut Transaction<'static, Self>,
                root: &str,
            ) -> Result<Vec<String>> {
                let mut qb = QueryBuilder::new("SELECT json FROM payloads WHERE community = ");
                qb.push_bind(root.to_string()).push(" AND kind IN (");
                let mut sep = qb.separated(", ");
                for k in meshrelay_protocol::community::GOVERNANCE_KINDS {
                    sep.push_bind(k.to_string());
                }
                qb.push(")");
                Ok(qb.build_query_scalar::<String>().fetch_all(&mut **tx).await?)
            }

            async fn community_rows(
                tx: &mut Transaction<'static, Self>,
                root: &str,
            ) -> Result<Vec<(String, String, i64, String, String, bool)>> {
                let mut qb = QueryBuilder::new(
                    "SELECT id, author, created_at, kind, channel, held_back FROM payloads WHERE community = ",
                );
                qb.push_bind(root.to_string());
                Ok(qb.build_query_as().fetch_all(&mut **tx).await?)
            }

            async fn set_held_back(
                tx: &mut Transaction<'static, Self>,
                ids: &[String],
                held_back: bool,
            ) -> Result<()> {
                for chunk in ids.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new("UPDATE payloads SET held_back = ");
                    qb.push_bind(held_back).push(" WHERE id IN (");
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(id.clone());
                    }
                    qb.push(")");
                    qb.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn insert_payloads(
                tx: &mut Transaction<'static, Self>,
                jobs: &[&Job],
            ) -> Result<HashMap<String, i64>> {
                let mut inserted = HashMap::new();
                for chunk in jobs.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO payloads (id, author, seq, created_at, kind, channel, json, received_at, source, community) ",
                    );
                    qb.push_values(chunk, |mut b, j| {
                        let p = &j.payload;
                        b.push_bind(p.id.clone())
                            .push_bind(p.author.clone())
                            .push_bind(p.seq as i64)
                            .push_bind(p.created_at as i64)
                            .push_bind(p.kind.clone())
                            .push_bind(p.channel.clone())
                            .push_bind(j.json.to_string())
                            .push_bind(j.received_at)
                            .push_bind(j.source.clone())
                            .push_bind(root_of(p).map(String::from));
                    });
                    qb.push(" ON CONFLICT (id) DO NOTHING RETURNING id, rid");
                    inserted.extend(qb.build_query_as::<(String, i64)>().fetch_all(&mut **tx).await?);
                }
                Ok(inserted)
            }

            async fn insert_tags(
                tx: &mut Transaction<'static, Self>,
                rows: &[(i64, &str, &str)],
            ) -> Result<()> {
                for chunk in rows.chunks(ROWS_PER_INSERT * 3) {
                    let mut qb = QueryBuilder::new("INSERT INTO payload_tags (rid, name, value) ");
                    qb.push_values(chunk, |mut b, (rid, name, value)| {
                        b.push_bind(*rid)
                            .push_bind(name.to_string())
                            .push_bind(value.as_bytes().to_vec());
                    });
                    qb.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn record_deletions(
                tx: &mut Transaction<'static, Self>,
                rows: &[(&str, &str, &str)],
            ) -> Result<()> {
                for chunk in rows.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new("INSERT INTO deletions (target, author, delete_id) ");
                    qb.push_values(chunk, |mut b, (target, author, delete_id)| {
                        b.push_bind(target.to_string())
                            .push_bind(author.to_string())
                            .push_bind(delete_id.to_string());
                    });
                    qb.push(" ON CONFLICT DO NOTHING");
                    qb.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn hide_deleted(
                tx: &mut Transaction<'static, Self>,
                ids: &[&str],
                now_ms: i64,
            ) -> Result<HashSet<String>> {
                let mut hidden = HashSet::new();
                for chunk in ids.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new("UPDATE payloads SET hidden = TRUE, hidden_at = ");
                    qb.push_bind(now_ms).push(" WHERE NOT hidden AND id IN (");
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(id.to_string());
                    }
                    // Deletes naming governance payloads are ignored (PROTOCOL.md 9.3).
                    qb.push(") AND NOT (payloads.community IS NOT NULL AND payloads.kind IN ('role', 'policy', 'invite', 'join', 'moderate'))");
                    qb.push(" AND EXISTS (SELECT 1 FROM deletions d WHERE d.target = payloads.id AND d.author = payloads.author) RETURNING id");
                    hidden.extend(qb.build_query_scalar::<String>().fetch_all(&mut **tx).await?);
                }
                Ok(hidden)
            }

            async fn queue_blob_fetches(
                tx: &mut Transaction<'static, Self>,
                rows: &[(&str, &str)],
                now_ms: i64,
            ) -> Result<()> {
                for chunk in rows.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO blob_fetches (sha256, peer, attempts, next_at, created_at) ",
                    );
                    qb.push_values(chunk, |mut b, (sha, peer)| {
                        b.push_bind(sha.to_string())
                            .push_bind(peer.to_string())
                            .push_bind(0_i64)
                            .push_bind(now_ms)
                            .push_bind(now_ms);
                    });
                    qb.push(" ON CONFLICT (sha256, peer) DO NOTHING");
                    qb.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn queue_forwards(
                tx: &mut Transaction<'static, Self>,
                rows: &[(&str, &str, i64)],
                now_ms: i64,
            ) -> Result<()> {
                for chunk in rows.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO outbox (peer, payload_id, hops, enqueued_at, next_attempt) ",
                    );
                    qb.push_values(chunk, |mut b, (peer, id, hops)| {
                        b.push_bind(peer.to_string())
                            .push_bind(id.to_string())
                            .push_bind(*hops)
                            .push_bind(now_ms)
                            .push_bind(now_ms);
                    });
                    qb.push(" ON CONFLICT (peer, payload_id) DO NOTHING");
                    qb.build().execute(&mut **tx).await?;
                }
                Ok(())
            }
        }
    };
}

impl_steps!(sqlx::Sqlite);
impl_steps!(sqlx::Postgres);
