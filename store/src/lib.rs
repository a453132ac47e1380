//! Storage for meshrelay: one API over SQLite and PostgreSQL, chosen by the
//! `database_url`, with every write going through the batching writer (`writer`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub mod admin;
pub mod blobs;
pub mod cluster;
pub mod communities;
pub use meshrelay_protocol::clock;
pub mod federation;
pub mod jobs;
mod queries;
pub mod states;
pub mod writer;

pub use admin::{AuditEntry, OutboxDepth, StatsSample};
pub use blobs::{BlobFetch, BlobInsert, BlobRecord, BlobTotals};
pub use communities::CommunitySummary;
pub use federation::{OutboxItem, Peer};
pub use jobs::{JobRun, Pruned};
pub use queries::{Cursor, LogPage, Page, StoredRow};
pub use states::{Forwarding, OutboxState, PeerStatus};
pub use writer::{WriteOutcome, Writer, WriterConfig, WriterTask};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database_url {0:?}: use sqlite://... or postgres://...")]
    UnsupportedUrl(String),
    #[error("the writer has stopped")]
    WriterStopped,
    /// The transaction of the batch holding this payload failed; the text is
    /// the failure with its causes (the writer answers many callers at once).
    #[error("the batch holding this payload failed to commit: {0}")]
    BatchFailed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// WAL frames (pages) past which the checkpointer forces the log to start
/// over: 10,000 frames of 4 KiB, about 40 MB.
const WAL_RESTART_FRAMES: i64 = 10_000;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The two backends. Every query is written once and compiled against both
/// through `with_pool!`, so they cannot drift apart.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run the same body with whichever pool the store holds.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::Pool::Sqlite($pool) => $body,
            $crate::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Opening a transaction that will write. On SQLite it takes the write lock at
/// once (`BEGIN IMMEDIATE`): a deferred transaction that reads first and writes
/// later fails outright with SQLITE_BUSY_SNAPSHOT when another connection wrote
/// in between, which the busy timeout cannot wait out.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
           + Send;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// Which backend a store runs on, for logs and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle to the database: cheap to clone, shared by all readers.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: Pool,
}

impl Store {
    /// Connect to `url` (`sqlite://path` or `postgres://...`). SQLite files are
    /// created when missing and run in WAL mode with `synchronous=FULL`, so a
    /// committed write survives `kill -9` and power loss alike.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_sized(url, 16).await
    }

    /// Like `connect`, with at most `max_connections` PostgreSQL connections
    /// in the shared pool (`database_max_connections`; SQLite keeps 8).
    pub async fn connect_sized(url: &str, max_connections: u32) -> Result<Self> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .pragma("cache_size", "-16384")
                .pragma("temp_store", "memory")
                .pragma("wal_autocheckpoint", "0");
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .min_connections(1)
                .connect_with(opts)
                .await?;
            Ok(Self {
                pool: Pool::Sqlite(pool),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Ok(Self {
                pool: Pool::Postgres(pool),
            })
        } else {
            Err(Error::UnsupportedUrl(url.to_string()))
        }
    }

    /// SQLite only: fold the write-ahead log back into the database every
    /// second from a connection of its own. Writers never checkpoint (the
    /// pool turns `wal_autocheckpoint` off), so a commit never waits for it;
    /// a PASSIVE checkpoint runs beside the writer without blocking it.
    /// The task ends when `stop` resolves.
    pub fn spawn_checkpointer(
        &self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let Pool::Sqlite(pool) = &self.pool else {
            return None;
        };
        let pool = pool.clone();
        Some(tokio::spawn(async move {
            tokio::pin!(stop);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tick.tick() => {}
                }
                // (busy, frames in the log, frames checkpointed)
                let passive: Result<(i64, i64, i64), _> =
                    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                        .fetch_one(&pool)
                        .await;
                match passive {
                    // A PASSIVE checkpoint never makes the log start over while the
                    // writer keeps writing, so under steady load the WAL grew without
                    // bound (it filled a disk in a soak run). Past the limit, RESTART
                    // waits for a gap between the writer's transactions and makes the
                    // next one start the log from the beginning.
                    Ok((_, frames, _)) if frames > WAL_RESTART_FRAMES => {
                        let restart = sqlx::query("PRAGMA wal_checkpoint(RESTART)");
                        if let Err(e) = restart.execute(&pool).await {
                            tracing::warn!(error = ?e, frames, "WAL restart checkpoint failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = ?e, "WAL checkpoint failed"),
                }
            }
            // Leave a small WAL behind on a clean stop.
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&pool)
                .await;
        }))
    }

    /// Apply the migrations of this backend that are not applied yet.
    pub async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await?,
            Pool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Readiness: the database answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, p => { sqlx::query("SELECT 1").execute(p).await?; });
        Ok(())
    }

    /// Size of the database on disk, in bytes.
    pub async fn database_size(&self) -> Result<i64> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                )
                .fetch_one(p)
                .await?
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar("SELECT pg_database_size(current_database())")
                    .fetch_one(p)
                    .await?
            }
        })
    }

    /// A store for a task on another runtime than the one this store was opened
    /// on. PostgreSQL connections belong to the runtime that opened them (their
    /// sockets are registered with its I/O driver), so this opens a separate pool
    /// of at most `max_connections`, connecting lazily on the caller's runtime.
    /// SQLite connections run on threads of their own and are shared as they are.
    /// Close a PostgreSQL store made here when done with it.
    pub fn for_this_runtime(&self, max_connections: u32) -> Self {
        match &self.pool {
            Pool::Sqlite(_) => self.clone(),
            Pool::Postgres(p) => {
                let opts = p.connect_options().as_ref().clone();
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_lazy_with(opts);
                Self {
                    pool: Pool::Postgres(pool),
                }
            }
        }
    }

    /// Close the pool, waiting for connections to finish.
    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }
}

impl Store {
    /// Run one SQL statement without binds (schema set-up in tests and tools).
    pub async fn execute_raw(&self, sql: &str) -> Result<()> {
        with_pool!(self, p => { sqlx::raw_sql(sql).execute(p).await?; });
        Ok(())
    }
}
