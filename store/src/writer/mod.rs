//! The single writer: every payload write goes through one task that commits
//! many payloads per transaction and answers each caller only after the commit,
//! so "accepted" always means "durable" without paying one fsync per payload.

use std::sync::Arc;

use meshrelay_protocol::Payload;
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result, Store};

mod batch;
mod community;
mod shared;
mod steps;

/// What happened to one submitted payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Newly stored. `hidden` when it is not shown: a delete stored earlier
    /// already names it, or its community holds it back (9.4).
    Stored { hidden: bool },
    /// Already held (visible or not), or kept as a tombstone; nothing
    /// changed. `received_at` is when this node first stored it (PROTOCOL.md
    /// 4.4), `None` only for a tombstone older than that record.
    Duplicate { received_at: Option<i64> },
    /// Its author is blocked; not stored.
    Blocked,
    /// A community's governance does not authorize it at its place
    /// (PROTOCOL.md 9.4); not stored. Which rule refused it.
    Forbidden(String),
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most payloads committed in one transaction.
    pub max_batch: usize,
    /// Submissions waiting for the writer before callers wait too.
    pub queue: usize,
    /// Queue a fetch of each blob a peer's payload names (`mirror_blobs`).
    pub mirror_blobs: bool,
    /// PostgreSQL: tell the node's other processes what each batch stored
    /// (PROTOCOL.md 8.1).
    pub announce: Option<Announce>,
}

/// Where the writer announces the rows it stored visible, and as whom.
#[derive(Debug, Clone)]
pub struct Announce {
    /// The NOTIFY channel (`cluster::Channels::payloads`).
    pub channel: String,
    /// This process's instance id: its own announcements it ignores.
    pub instance: String,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            queue: 16384,
            mirror_blobs: true,
            announce: None,
        }
    }
}

pub(crate) struct Job {
    pub(crate) payload: Arc<Payload>,
    pub(crate) json: Arc<str>,
    pub(crate) source: Option<String>,
    pub(crate) received_at: i64,
    /// Peers to forward to (node key, hops), queued in the same transaction.
    pub(crate) forward: Vec<(String, i64)>,
    reply: oneshot::Sender<Result<WriteOutcome, Error>>,
}

/// Connections of the writer's own PostgreSQL pool: one transaction at a
/// time, and one spare so a broken connection is replaced without waiting.
const WRITER_CONNECTIONS: u32 = 2;

/// A clonable handle to the writer task.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Start the writer on a thread of its own. It runs until `WriterTask::close`
    /// (or until every handle is dropped), and commits what was queued first.
    ///
    /// The thread matters: on the shared runtime the writer's many short awaits
    /// per batch queue behind thousands of CPU-bound signature checks, and the
    /// whole node then ingests at a third of what the database can commit.
    pub fn spawn(store: Store, config: WriterConfig) -> (Writer, WriterTask) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let (done_tx, done_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("meshrelay-writer".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the writer's runtime");
                rt.block_on(async move {
                    // Connections opened on this runtime are driven by it, so the
                    // writer uses a pool of its own: a PostgreSQL connection it
                    // opened in the shared pool would be handed to tasks of
                    // another runtime and fail ("being shutdown") once this
                    // one has stopped, and would stall while this thread is busy.
                    let own = store.for_this_runtime(WRITER_CONNECTIONS);
                    run(own.clone(), rx, stop_rx, config).await;
                    if own.backend() == crate::Backend::Postgres {
                        own.close().await;
                    }
                });
                let _ = done_tx.send(());
            })
            .expect("spawning the writer thread");
        let task = WriterTask {
            done: done_rx,
            stop: stop_tx,
        };
        (Writer { tx }, task)
    }

    /// Store one checked payload; returns after the transaction holding it committed.
    /// `source` is the peer it came from, `None` for a local client.
    pub async fn write(
        &self,
        payload: Arc<Payload>,
        json: Arc<str>,
        source: Option<String>,
        received_at: i64,
    ) -> Result<WriteOutcome> {
        self.write_and_forward(payload, json, source, received_at, Vec::new())
            .await
    }

    /// Like `write`, also queueing the payload for the given peers (node key,
    /// hops) in the same transaction when it is newly stored and visible, so a
    /// crash can never keep a payload while losing its forwards.
    pub async fn write_and_forward(
        &self,
        payload: Arc<Payload>,
        json: Arc<str>,
        source: Option<String>,
        received_at: i64,
        forward: Vec<(String, i64)>,
    ) -> Result<WriteOutcome> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                payload,
                json,
                source,
                received_at,
                forward,
                reply,
            })
            .await
            .map_err(|_| Error::WriterStopped)?;
        rx.await.map_err(|_| Error::WriterStopped)?
    }
}

/// The writer's lifecycle handle, held by whoever owns the node.
pub struct WriterTask {
    done: oneshot::Receiver<()>,
    stop: oneshot::Sender<()>,
}

impl WriterTask {
    /// Stop taking new submissions, commit every one already queued, and wait
    /// until the writer has stopped. Submissions after this answer
    /// `WriterStopped`; handles still held elsewhere do not keep it running.
    pub async fn close(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Job>,
    stop: oneshot::Receiver<()>,
    config: WriterConfig,
) {
    let max_batch = config.max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    let mut communities = community::Cache::new();
    // None once `close` was asked for (or its handle dropped without asking).
    let mut stop = Some(stop);
    loop {
        let received = match stop.as_mut() {
            Some(signal) => tokio::select! {
                n = rx.recv_many(&mut batch, max_batch) => n,
                asked = signal => {
                    stop = None;
                    if asked.is_ok() {
                        // What is queued still commits; nothing new gets in.
                        rx.close();
                    }
                    continue;
                }
            },
            None => rx.recv_many(&mut batch, max_batch).await,
        };
        if received == 0 {
            break;
        }
        let started = std::time::Instant::now();
        let result = commit_retrying(&store, &batch, &mut communities, &config).await;
        tracing::debug!(
            size = batch.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "batch committed"
        );
        match result {
            Ok(outcomes) => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = ?e, size = batch.len(), "payload batch failed to commit");
                let cause = meshrelay_protocol::error::cause_chain(&e);
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(Error::BatchFailed(cause.clone())));
                }
            }
        }
    }
}

/// Attempts of a batch that another process's transaction deadlocked or
/// serialized against; the batch's callers wait, they are not refused.
const CONTENTION_ATTEMPTS: u32 = 6;

/// Commit a batch; a deadlock or serialization failure (another process's
/// writer on the same rows) is retried after a short random pause, never
/// answered to callers as a failure of theirs.
async fn commit_retrying(
    store: &Store,
    batch: &[Job],
    communities: &mut community::Cache,
    config: &WriterConfig,
) -> Result<Vec<WriteOutcome>> {
    let mut attempt = 1;
    loop {
        match batch::commit(store, batch, communities, config).await {
            Err(e) if is_contention(&e) && attempt < CONTENTION_ATTEMPTS => {
                let pause =
                    std::time::Duration::from_millis((5u64 << attempt) + rand_jitter_ms(attempt));
                tracing::info!(attempt, ?pause, size = batch.len(), error = %meshrelay_protocol::error::cause_chain(&e),
                    "batch met another process's transaction; retrying");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A few milliseconds of jitter, so two retrying writers do not meet again.
fn rand_jitter_ms(attempt: u32) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) % (5u64 << attempt)
}

/// PostgreSQL's deadlock (40P01) and serialization failure (40001).
pub(crate) fn is_contention(e: &Error) -> bool {
    match e {
        Error::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40P01") | Some("40001"))
        }
        _ => false,
    }
}
