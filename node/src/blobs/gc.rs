//! The `blob_gc` job (PROTOCOL.md 4.3): delete the blobs no visible payload
//! references once this node has held them longer than `blob_grace_secs`,
//! and temporary objects a crash left behind.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use meshrelay_protocol::clock;

use super::BlobService;

/// Blobs looked at per round, and rounds per run: a run deletes at most
/// 100,000 blobs and the next run goes on.
const PER_ROUND: u32 = 1000;
const ROUNDS: usize = 100;
/// A temporary object older than this belongs to no upload still running
/// (the slowest allowed upload takes minutes).
const TEMPORARY_AGE: Duration = Duration::from_secs(3600);

pub fn job(store: meshrelay_store::Store, blobs: Arc<BlobService>) -> meshrelay_scheduler::JobFn {
    Arc::new(move || {
        let (store, blobs) = (store.clone(), blobs.clone());
        async move {
            let before = clock::now_secs() - blobs.settings.grace_secs as i64;
            let (mut deleted, mut bytes) = (0u64, 0i64);
            for _ in 0..ROUNDS {
                let found = store.unreferenced_blobs(before, PER_ROUND).await?;
                if found.is_empty() {
                    break;
                }
                let mut progressed = false;
                for (name, size) in &found {
                    // Checked again in its own transaction: a payload naming
                    // it may have arrived since the list was made.
                    if store.delete_unreferenced_blob(name, before).await? {
                        blobs.storage.delete(name).await?;
                        deleted += 1;
                        bytes += *size;
                        progressed = true;
                    }
                }
                if !progressed {
                    break;
                }
            }
            let temporary = blobs.storage.sweep_temporary(TEMPORARY_AGE).await?;
            Ok(format!(
                "deleted {deleted} unreferenced blobs ({bytes} bytes) and {temporary} temporary objects"
            ))
        }
        .boxed()
    })
}
