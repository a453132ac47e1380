//! Blob records (PROTOCOL.md 4.3): which blobs this node holds, who uploaded
//! them, which an operator removed, and the queue of blobs to mirror from
//! peers. The bytes themselves live in the blob storage (`meshrelay-blobs`);
//! a record is written only after its bytes are durable, so a record always
//! names bytes that exist.

use sqlx::QueryBuilder;

use crate::{with_pool, BeginWrite, Result, Store};

/// Tag values name blobs as bytes (tag strings may hold NUL), so the
/// reference check binds the name's bytes.
const REFERENCED: &str = "EXISTS (SELECT 1 FROM payload_tags t JOIN payloads p ON p.rid = t.rid \
     WHERE t.name = 'b' AND t.value = CAST(b.sha256 AS BLOBTYPE) AND NOT p.hidden AND NOT p.held_back \
     AND NOT EXISTS (SELECT 1 FROM blocked_authors ba WHERE ba.author = p.author))";

/// One blob as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BlobRecord {
    pub sha256: String,
    pub size: i64,
    /// The type served (detected from the bytes).
    #[sqlx(rename = "type")]
    pub content_type: String,
    /// `None` for a blob mirrored from a peer.
    pub uploader: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; set for a blob an operator removed (its bytes are gone).
    pub removed_at: Option<i64>,
    /// Visible payloads whose `["b", sha256]` tag names it; `None` where
    /// they were not counted (`blob`, which serves every GET: counting a
    /// popular blob's references on each download would cost as much as
    /// it has references).
    pub references: Option<i64>,
}

/// What `insert_blob` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobInsert {
    /// A new record: the blob is held from now on.
    Inserted,
    /// Held already (uploaded or mirrored before).
    Held(BlobRecord),
    /// An operator removed this blob: it is refused `blocked`.
    Removed,
    /// The uploader's blobs would pass the quota: `used` bytes are held.
    OverQuota { used: i64 },
}

/// A blob to fetch from a peer.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BlobFetch {
    pub sha256: String,
    /// The peer's node key.
    pub peer: String,
    pub attempts: i64,
    /// Unix ms.
    pub created_at: i64,
}

/// Blob counts for stats and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobTotals {
    pub count: i64,
    pub bytes: i64,
    pub removed: i64,
    pub fetches_pending: i64,
}

fn referenced(pg: bool) -> String {
    REFERENCED.replace("BLOBTYPE", if pg { "BYTEA" } else { "BLOB" })
}

/// The record's columns; with `count`, its references counted too.
fn columns(pg: bool, count: bool) -> String {
    if !count {
        return "SELECT b.sha256, b.size, b.type, b.uploader, b.created_at, b.removed_at, \
                CAST(NULL AS BIGINT) AS \"references\" FROM blobs b"
            .to_string();
    }
    format!(
        "SELECT b.sha256, b.size, b.type, b.uploader, b.created_at, b.removed_at, \
         (SELECT COUNT(*) FROM payload_tags t JOIN payloads p ON p.rid = t.rid \
          WHERE t.name = 'b' AND t.value = CAST(b.sha256 AS {}) AND NOT p.hidden AND NOT p.held_back \
          AND NOT EXISTS (SELECT 1 FROM blocked_authors ba WHERE ba.author = p.author)) AS \"references\" \
         FROM blobs b",
        if pg { "BYTEA" } else { "BLOB" }
    )
}

impl Store {
    fn is_pg(&self) -> bool {
        self.backend() == crate::Backend::Postgres
    }

    /// The record of one blob, held or removed, without its references.
    pub async fn blob(&self, sha256: &str) -> Result<Option<BlobRecord>> {
        let sql = format!("{} WHERE b.sha256 = $1", columns(self.is_pg(), false));
        with_pool!(self, p => Ok(sqlx::query_as(&sql).bind(sha256).fetch_optional(p).await?))
    }

    /// The record of one blob with its references counted (the admin API).
    pub async fn blob_with_references(&self, sha256: &str) -> Result<Option<BlobRecord>> {
        let sql = format!("{} WHERE b.sha256 = $1", columns(self.is_pg(), true));
        with_pool!(self, p => Ok(sqlx::query_as(&sql).bind(sha256).fetch_optional(p).await?))
    }

    /// Bytes of the blobs `uploader` holds (removed ones do not count).
    pub async fn blob_bytes_of(&self, uploader: &str) -> Result<i64> {
        with_pool!(self, p => {
            let used: Option<i64> = sqlx::query_scalar(
                "SELECT CAST(SUM(size) AS BIGINT) FROM blobs WHERE uploader = $1 AND removed_at IS NULL",
            )
            .bind(uploader)
            .fetch_one(p)
            .await?;
            Ok(used.unwrap_or(0))
        })
    }

    /// Record a blob whose bytes are durable. `uploader` is `None` for a
    /// mirrored blob; with an uploader, `quota` bounds what it holds
    /// (used + size <= quota), checked under a lock on that uploader so two
    /// uploads at once cannot both pass it.
    pub async fn insert_blob(
        &self,
        sha256: &str,
        size: i64,
        content_type: &str,
        uploader: Option<&str>,
        quota: Option<i64>,
        now_secs: i64,
    ) -> Result<BlobInsert> {
        let existing = columns(self.is_pg(), false) + " WHERE b.sha256 = $1";
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            if let (true, Some(up)) = (self.is_pg(), uploader) {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('meshrelay-blob-quota:' || $1))")
                    .bind(up)
                    .execute(&mut *tx)
                    .await?;
            }
            let held: Option<BlobRecord> = sqlx::query_as(&existing)
                .bind(sha256)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(rec) = held {
                return Ok(if rec.removed_at.is_some() {
                    BlobInsert::Removed
                } else {
                    BlobInsert::Held(rec)
                });
            }
            if let (Some(up), Some(quota)) = (uploader, quota) {
                let used: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(SUM(size) AS BIGINT) FROM blobs WHERE uploader = $1 AND removed_at IS NULL",
                )
                .bind(up)
                .fetch_one(&mut *tx)
                .await?;
                let used = used.unwrap_or(0);
                if used + size > quota {
                    return Ok(BlobInsert::OverQuota { used });
                }
            }
            let done = sqlx::query(
                "INSERT INTO blobs (sha256, size, type, uploader, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(sha256)
            .bind(size)
            .bind(content_type)
            .bind(uploader)
            .bind(now_secs)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM blob_fetches WHERE sha256 = $1")
                .bind(sha256)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            if done.rows_affected() == 1 {
                Ok(BlobInsert::Inserted)
            } else {
                // Another upload of the same bytes committed first.
                match self.blob(sha256).await? {
                    Some(rec) if rec.removed_at.is_none() => Ok(BlobInsert::Held(rec)),
                    _ => Ok(BlobInsert::Removed),
                }
            }
        })
    }

    /// Mark a blob removed by an operator (a tombstone: re-uploads and
    /// mirroring are refused), also one never held. Returns the record as it
    /// was, `None` when none existed; the caller deletes the bytes.
    pub async fn remove_blob(&self, sha256: &str, now_secs: i64) -> Result<Option<BlobRecord>> {
        let before = self.blob_with_references(sha256).await?;
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(
                "INSERT INTO blobs (sha256, size, type, uploader, created_at, removed_at) \
                 VALUES ($1, 0, 'application/octet-stream', NULL, $2, $2) \
                 ON CONFLICT (sha256) DO UPDATE SET removed_at = COALESCE(blobs.removed_at, $2)",
            )
            .bind(sha256)
            .bind(now_secs)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM blob_fetches WHERE sha256 = $1")
                .bind(sha256)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(before)
    }

    /// Blobs by name, after `after`, at most `limit`; only `uploader`'s when given.
    /// Removed blobs are listed too (`removed_at` set).
    pub async fn list_blobs(
        &self,
        uploader: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BlobRecord>> {
        let cols = columns(self.is_pg(), true);
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(cols);
            qb.push(" WHERE 1 = 1");
            if let Some(up) = uploader {
                qb.push(" AND b.uploader = ").push_bind(up.to_string());
            }
            if let Some(after) = after {
                qb.push(" AND b.sha256 > ").push_bind(after.to_string());
            }
            qb.push(" ORDER BY b.sha256 LIMIT ").push_bind(i64::from(limit));
            Ok(qb.build_query_as().fetch_all(p).await?)
        })
    }

    /// Held blobs older than `created_before` (Unix seconds) that no visible
    /// payload references, at most `limit`: `(sha256, size)`.
    pub async fn unreferenced_blobs(
        &self,
        created_before: i64,
        limit: u32,
    ) -> Result<Vec<(String, i64)>> {
        let sql = format!(
            "SELECT b.sha256, b.size FROM blobs b WHERE b.removed_at IS NULL AND b.created_at < $1 \
             AND NOT {} ORDER BY b.created_at LIMIT $2",
            referenced(self.is_pg())
        );
        with_pool!(self, p => Ok(sqlx::query_as(&sql)
            .bind(created_before)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?))
    }

    /// Delete a blob's record if it is still unreferenced and older than
    /// `created_before` (a payload naming it may have arrived since it was
    /// listed); true when deleted, and the caller deletes the bytes.
    pub async fn delete_unreferenced_blob(
        &self,
        sha256: &str,
        created_before: i64,
    ) -> Result<bool> {
        let sql = format!(
            "DELETE FROM blobs WHERE sha256 = $1 AND removed_at IS NULL AND created_at < $2 \
             AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.sha256 = $1 AND {})",
            referenced(self.is_pg())
        );
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let done = sqlx::query(&sql).bind(sha256).bind(created_before).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Counts for stats and `/metrics`.
    pub async fn blob_totals(&self) -> Result<BlobTotals> {
        with_pool!(self, p => {
            let (count, bytes, removed): (i64, Option<i64>, i64) = sqlx::query_as(
                "SELECT CAST(COUNT(*) FILTER (WHERE removed_at IS NULL) AS BIGINT), \
                 CAST(SUM(size) FILTER (WHERE removed_at IS NULL) AS BIGINT), \
                 CAST(COUNT(*) FILTER (WHERE removed_at IS NOT NULL) AS BIGINT) FROM blobs",
            )
            .fetch_one(p)
            .await?;
            let fetches: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM blob_fetches")
                .fetch_one(p)
                .await?;
            Ok(BlobTotals { count, bytes: bytes.unwrap_or(0), removed, fetches_pending: fetches })
        })
    }

    /// Claim up to `limit` fetches due at `now_ms`: each is pushed `lease_ms`
    /// into the future, so another process (or a later pass) does not take it
    /// while this one works on it.
    pub async fn claim_blob_fetches(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<BlobFetch>> {
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let due: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
                "SELECT sha256, peer, attempts, created_at, next_at FROM blob_fetches \
                 WHERE next_at <= $1 ORDER BY next_at LIMIT $2",
            )
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
            let mut claimed = Vec::with_capacity(due.len());
            for (sha256, peer, attempts, created_at, next_at) in due {
                let done = sqlx::query(
                    "UPDATE blob_fetches SET next_at = $1 WHERE sha256 = $2 AND peer = $3 AND next_at = $4",
                )
                .bind(now_ms + lease_ms)
                .bind(&sha256)
                .bind(&peer)
                .bind(next_at)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 {
                    claimed.push(BlobFetch { sha256, peer, attempts, created_at });
                }
            }
            tx.commit().await?;
            Ok(claimed)
        })
    }

    /// A fetch failed: try again at `next_at_ms`, keeping why (at most 1 KiB).
    pub async fn retry_blob_fetch(
        &self,
        fetch: &BlobFetch,
        next_at_ms: i64,
        error: &str,
    ) -> Result<()> {
        let mut end = error.len().min(1024);
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        let error = error[..end].to_string();
        with_pool!(self, p => {
            sqlx::query(
                "UPDATE blob_fetches SET attempts = attempts + 1, next_at = $1, last_error = $2 \
                 WHERE sha256 = $3 AND peer = $4",
            )
            .bind(next_at_ms)
            .bind(error)
            .bind(&fetch.sha256)
            .bind(&fetch.peer)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Forget one fetch (done, given up, or no longer needed).
    pub async fn drop_blob_fetch(&self, fetch: &BlobFetch) -> Result<()> {
        with_pool!(self, p => {
            sqlx::query("DELETE FROM blob_fetches WHERE sha256 = $1 AND peer = $2")
                .bind(&fetch.sha256)
                .bind(&fetch.peer)
                .execute(p)
                .await?;
        });
        Ok(())
    }
}
