//! The single writer: every payload write goes through one task that commits
//! many payloads per transaction and answers each caller only after the commit,
//! so "accepted" always means "durable" without paying one fsync per payload.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use meshrelay_protocol::Payload;
use sqlx::QueryBuilder;
use tokio::sync::{mpsc, oneshot};

use crate::{with_pool, BeginWrite, Error, Result, Store};

/// What happened to one submitted payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Newly stored. `hidden` when a delete stored earlier already names it.
    Stored { hidden: bool },
    /// Already held (visible or not); nothing changed.
    Duplicate,
    /// Its author is blocked; not stored.
    Blocked,
}

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Most payloads committed in one transaction.
    pub max_batch: usize,
    /// Submissions waiting for the writer before callers wait too.
    pub queue: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            queue: 16384,
        }
    }
}

struct Job {
    payload: Arc<Payload>,
    json: Arc<str>,
    source: Option<String>,
    received_at: i64,
    /// Peers to forward to (node key, hops), queued in the same transaction.
    forward: Vec<(String, i64)>,
    reply: oneshot::Sender<Result<WriteOutcome, Error>>,
}

/// A clonable handle to the writer task.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Start the writer on a thread of its own. It stops when every handle is
    /// dropped, after committing what was already queued.
    ///
    /// The thread matters: on the shared runtime the writer's many short awaits
    /// per batch queue behind thousands of CPU-bound signature checks, and the
    /// whole node then ingests at a third of what the database can commit.
    pub fn spawn(store: Store, config: WriterConfig) -> (Writer, WriterTask) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let (done_tx, done_rx) = oneshot::channel();
        let max_batch = config.max_batch.max(1);
        std::thread::Builder::new()
            .name("meshrelay-writer".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the writer's runtime");
                rt.block_on(run(store, rx, max_batch));
                let _ = done_tx.send(());
            })
            .expect("spawning the writer thread");
        (Writer { tx }, WriterTask { done: done_rx })
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

/// Completes when the writer has committed its queue and stopped.
pub struct WriterTask {
    done: oneshot::Receiver<()>,
}

impl std::future::Future for WriterTask {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.done).poll(cx).map(|_| ())
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let started = std::time::Instant::now();
        let result = commit_batch(&store, &batch).await;
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
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(Error::WriterStopped));
                }
            }
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Rows per multi-row INSERT, kept well under both backends' bind limits.
const ROWS_PER_INSERT: usize = 500;

async fn commit_batch(store: &Store, batch: &[Job]) -> Result<Vec<WriteOutcome>> {
    let mut outcomes = vec![WriteOutcome::Duplicate; batch.len()];
    // The first submission of an id in this batch is the one that may be stored.
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, job) in batch.iter().enumerate() {
        first.entry(job.payload.id.as_str()).or_insert(i);
    }
    let mut unique: Vec<usize> = first.values().copied().collect();
    unique.sort_unstable();
    let authors: HashSet<&str> = unique
        .iter()
        .map(|&i| batch[i].payload.author.as_str())
        .collect();

    with_pool!(store, pool => {
        let mut tx = pool.begin_write().await?;

        let mut qb = QueryBuilder::new("SELECT author FROM blocked_authors WHERE author IN (");
        let mut sep = qb.separated(", ");
        for a in &authors {
            sep.push_bind(a.to_string());
        }
        qb.push(")");
        let blocked: HashSet<String> = qb.build_query_scalar::<String>().fetch_all(&mut *tx).await?.into_iter().collect();
        let candidates: Vec<usize> = unique
            .into_iter()
            .filter(|&i| {
                if blocked.contains(&batch[i].payload.author) {
                    outcomes[i] = WriteOutcome::Blocked;
                    false
                } else {
                    true
                }
            })
            .collect();

        let mut inserted: HashMap<String, i64> = HashMap::new();
        for chunk in candidates.chunks(ROWS_PER_INSERT) {
            let mut qb = QueryBuilder::new(
                "INSERT INTO payloads (id, author, seq, created_at, kind, channel, json, received_at, source) ",
            );
            qb.push_values(chunk, |mut b, &i| {
                let j = &batch[i];
                let p = &j.payload;
                b.push_bind(p.id.clone())
                    .push_bind(p.author.clone())
                    .push_bind(p.seq as i64)
                    .push_bind(p.created_at as i64)
                    .push_bind(p.kind.clone())
                    .push_bind(p.channel.clone())
                    .push_bind(j.json.to_string())
                    .push_bind(j.received_at)
                    .push_bind(j.source.clone());
            });
            qb.push(" ON CONFLICT (id) DO NOTHING RETURNING id, rid");
            inserted.extend(qb.build_query_as::<(String, i64)>().fetch_all(&mut *tx).await?);
        }
        let stored: Vec<&Payload> = candidates
            .iter()
            .map(|&i| &*batch[i].payload)
            .filter(|p| inserted.contains_key(&p.id))
            .collect();

        let tag_rows: Vec<(i64, &str, &str)> = stored
            .iter()
            .flat_map(|p| {
                let rid = inserted[&p.id];
                p.tags.iter().filter_map(move |t| match t.as_slice() {
                    [name, value, ..] => Some((rid, name.as_str(), value.as_str())),
                    _ => None,
                })
            })
            .collect();
        for chunk in tag_rows.chunks(ROWS_PER_INSERT * 3) {
            let mut qb = QueryBuilder::new("INSERT INTO payload_tags (rid, name, value) ");
            qb.push_values(chunk, |mut b, (rid, name, value)| {
                b.push_bind(*rid)
                    .push_bind(name.to_string())
                    .push_bind(value.as_bytes().to_vec());
            });
            qb.build().execute(&mut *tx).await?;
        }

        let deletions: Vec<(&str, &str, &str)> = stored
            .iter()
            .flat_map(|p| p.delete_targets().map(move |t| (t, p.author.as_str(), p.id.as_str())))
            .collect();
        for chunk in deletions.chunks(ROWS_PER_INSERT) {
            let mut qb = QueryBuilder::new("INSERT INTO deletions (target, author, delete_id) ");
            qb.push_values(chunk, |mut b, (target, author, delete_id)| {
                b.push_bind(target.to_string())
                    .push_bind(author.to_string())
                    .push_bind(delete_id.to_string());
            });
            qb.push(" ON CONFLICT DO NOTHING");
            qb.build().execute(&mut *tx).await?;
        }

        // Hide what a delete names, in both orders: new payloads named by an
        // earlier delete, and earlier payloads named by a new delete.
        let mut check: Vec<String> = inserted.keys().cloned().collect();
        check.extend(deletions.iter().map(|(t, _, _)| t.to_string()));
        let mut hidden: HashSet<String> = HashSet::new();
        for chunk in check.chunks(ROWS_PER_INSERT) {
            let mut qb = QueryBuilder::new("UPDATE payloads SET hidden = TRUE, hidden_at = ");
            qb.push_bind(now_ms()).push(" WHERE NOT hidden AND id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(id.clone());
            }
            qb.push(") AND EXISTS (SELECT 1 FROM deletions d WHERE d.target = payloads.id AND d.author = payloads.author) RETURNING id");
            hidden.extend(qb.build_query_scalar::<String>().fetch_all(&mut *tx).await?);
        }

        let now = now_ms();
        let outbox_rows: Vec<(&str, &str, i64)> = candidates
            .iter()
            .filter(|&&i| {
                let id = &batch[i].payload.id;
                inserted.contains_key(id) && !hidden.contains(id)
            })
            .flat_map(|&i| {
                batch[i]
                    .forward
                    .iter()
                    .map(move |(peer, hops)| (peer.as_str(), batch[i].payload.id.as_str(), *hops))
            })
            .collect();
        for chunk in outbox_rows.chunks(ROWS_PER_INSERT) {
            let mut qb = QueryBuilder::new("INSERT INTO outbox (peer, payload_id, hops, enqueued_at, next_attempt) ");
            qb.push_values(chunk, |mut b, (peer, id, hops)| {
                b.push_bind(peer.to_string())
                    .push_bind(id.to_string())
                    .push_bind(*hops)
                    .push_bind(now)
                    .push_bind(now);
            });
            qb.push(" ON CONFLICT (peer, payload_id) DO NOTHING");
            qb.build().execute(&mut *tx).await?;
        }

        tx.commit().await?;

        for &i in &candidates {
            let id = &batch[i].payload.id;
            if inserted.contains_key(id) {
                outcomes[i] = WriteOutcome::Stored { hidden: hidden.contains(id) };
            }
        }
        Ok(outcomes)
    })
}
