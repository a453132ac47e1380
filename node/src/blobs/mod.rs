//! Blobs (PROTOCOL.md 4.3): uploads and downloads over HTTP (`http`), mirroring
//! from peers (`mirror`) and the `blob_gc` job (`gc`), over the storage of
//! `meshrelay-blobs` and the records of `meshrelay-store`.

use std::sync::Arc;

use meshrelay_blobs::{BlobStorage, Staged, Upload};
use tokio::sync::Semaphore;

use crate::settings::Blobs as BlobSettings;

pub mod gc;
pub mod http;
pub mod mirror;

/// Uploads and mirror downloads streaming at once into filesystem storage,
/// which holds no bytes in memory for them.
const FS_TRANSFERS: usize = 32;
/// The same into S3 storage: each holds up to three 5 MiB parts in memory
/// (one filling, two in flight), so at most about 60 MiB in all.
const S3_TRANSFERS: usize = 4;

/// The node's blob storage, its bounds and the transfer permits.
pub struct BlobService {
    pub storage: BlobStorage,
    pub settings: BlobSettings,
    transfers: Arc<Semaphore>,
}

/// One transfer into storage: its permit and the upload under way.
pub struct Transfer {
    _permit: tokio::sync::OwnedSemaphorePermit,
    pub upload: Upload,
}

/// Why a stream of bytes did not become a blob.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("more than {0} bytes")]
    TooLarge(u64),
    #[error("reading the body: {0}")]
    Body(String),
    #[error(transparent)]
    Storage(#[from] meshrelay_blobs::Error),
}

impl BlobService {
    pub fn new(storage: BlobStorage, settings: BlobSettings) -> Self {
        let permits = match storage {
            BlobStorage::Fs(_) => FS_TRANSFERS,
            BlobStorage::S3(_) => S3_TRANSFERS,
        };
        Self {
            storage,
            settings,
            transfers: Arc::new(Semaphore::new(permits)),
        }
    }

    /// Wait for a transfer permit and start writing a blob.
    pub async fn begin(&self) -> Result<Transfer, meshrelay_blobs::Error> {
        let permit = self
            .transfers
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        Ok(Transfer {
            _permit: permit,
            upload: self.storage.begin().await?,
        })
    }

    /// Stream `chunks` into a new blob, refusing past `max_blob_bytes`; the
    /// bytes end durable under a temporary name, not yet visible.
    pub async fn take_in<S, B, E>(&self, mut chunks: S) -> Result<Staged, IntakeError>
    where
        S: futures_util::Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        let max = self.settings.max_blob_bytes;
        let mut transfer = self.begin().await?;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| IntakeError::Body(e.to_string()))?;
            let chunk = chunk.as_ref();
            if transfer.upload.size() + chunk.len() as u64 > max {
                return Err(IntakeError::TooLarge(max));
            }
            transfer.upload.write(chunk).await?;
        }
        Ok(transfer.upload.finish().await?)
    }
}
