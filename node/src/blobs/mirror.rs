//! Mirroring (PROTOCOL.md 4.3): a payload from a peer that names a blob this
//! node lacks queues a fetch in the writer's transaction (`blob_fetches`);
//! this task works the queue: `GET <peer>/v1/blobs/{sha256}` through the
//! guarded outbound client, size-limited, hash-checked, retried with the
//! delivery backoff until `max_delivery_age_secs`, a few at a time.

use std::time::Duration;

use futures_util::StreamExt;
use meshrelay_protocol::clock;
use meshrelay_store::{BlobFetch, BlobInsert};

use crate::state::AppState;

/// Fetches worked at once.
const CONCURRENCY: usize = 4;
/// Fetches claimed per pass.
const BATCH: u32 = 16;
/// How long a claimed fetch is left to this process before another may take it.
const LEASE_MS: i64 = 10 * 60 * 1000;
/// How often the queue is looked at.
const POLL: Duration = Duration::from_secs(1);

/// Work the queue until the node shuts down.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = state.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(POLL) => {}
            }
            let now = clock::now_ms();
            let due = match state.store.claim_blob_fetches(now, LEASE_MS, BATCH).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %meshrelay_protocol::error::cause_chain(&e), "claiming blob fetches failed");
                    continue;
                }
            };
            let work = futures_util::stream::iter(due)
                .map(|fetch| {
                    let state = state.clone();
                    async move { work_one(&state, fetch).await }
                })
                .buffer_unordered(CONCURRENCY)
                .collect::<Vec<()>>();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = work => {}
            }
        }
    })
}

async fn work_one(state: &AppState, fetch: BlobFetch) {
    let result = fetch_one(state, &fetch).await;
    let store = &state.store;
    let outcome = match result {
        Ok(Done::Stored) => {
            state.metrics.blob_mirrored.inc();
            store.drop_blob_fetch(&fetch).await
        }
        Ok(Done::NotNeeded) => store.drop_blob_fetch(&fetch).await,
        Err(why) => {
            state.metrics.blob_mirror_failures.inc();
            let fed = &state.settings.federation;
            let now = clock::now_ms();
            let age_ms = now - fetch.created_at;
            if age_ms > fed.max_delivery_age_secs as i64 * 1000 {
                tracing::warn!(sha256 = %fetch.sha256, peer = %fetch.peer, attempts = fetch.attempts + 1, error = %why, "giving up mirroring a blob");
                store.drop_blob_fetch(&fetch).await
            } else {
                let exp = fetch.attempts.clamp(0, 20) as u32;
                let delay = fed
                    .retry_min_secs
                    .saturating_mul(1 << exp)
                    .min(fed.retry_max_secs);
                tracing::debug!(sha256 = %fetch.sha256, peer = %fetch.peer, delay, error = %why, "mirroring a blob failed; retrying");
                store
                    .retry_blob_fetch(&fetch, now + delay as i64 * 1000, &why)
                    .await
            }
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %meshrelay_protocol::error::cause_chain(&e), "updating a blob fetch failed");
    }
}

enum Done {
    Stored,
    /// Held already, removed by the operator, or its peer is gone.
    NotNeeded,
}

async fn fetch_one(state: &AppState, fetch: &BlobFetch) -> Result<Done, String> {
    let store = &state.store;
    let err = |e: meshrelay_store::Error| meshrelay_protocol::error::cause_chain(&e);
    // A held blob needs nothing, and a removed one is never mirrored.
    if store.blob(&fetch.sha256).await.map_err(err)?.is_some() {
        return Ok(Done::NotNeeded);
    }
    let Some(peer) = store.peer(&fetch.peer).await.map_err(err)? else {
        return Ok(Done::NotNeeded);
    };
    let max = state.blobs.settings.max_blob_bytes;
    let url = format!(
        "{}/v1/blobs/{}",
        peer.url.trim_end_matches('/'),
        fetch.sha256
    );
    let timeout =
        Duration::from_secs(state.settings.connections.request_timeout_secs + max / (128 * 1024));
    let resp = state
        .federation
        .client()
        .outbound()
        .get_stream(&url, timeout)
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(format!("{url} is larger than max_blob_bytes = {max}"));
    }
    let staged = state
        .blobs
        .take_in(resp.bytes_stream())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if staged.sha256_hex() != fetch.sha256 {
        return Err(format!("{url} served bytes that do not hash to the name"));
    }
    let (size, content_type) = (staged.size, staged.content_type);
    staged.publish().await.map_err(|e| e.to_string())?;
    let now = clock::now_secs();
    match store
        .insert_blob(&fetch.sha256, size as i64, content_type, None, None, now)
        .await
        .map_err(err)?
    {
        BlobInsert::Inserted => {
            tracing::info!(sha256 = %fetch.sha256, size, peer = %fetch.peer, "blob mirrored");
            Ok(Done::Stored)
        }
        BlobInsert::Held(_) => Ok(Done::NotNeeded),
        BlobInsert::Removed | BlobInsert::OverQuota { .. } => {
            let _ = state.blobs.storage.delete(&fetch.sha256).await;
            Ok(Done::NotNeeded)
        }
    }
}
