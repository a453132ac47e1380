//! Blob storage for meshrelay (PROTOCOL.md 4.3): one interface, `BlobStorage`,
//! over the local filesystem (`blob_store = "fs"`) and S3-compatible services
//! (`blob_store = "s3://bucket[/prefix]"`, through `object_store`).
//!
//! Every write goes to a temporary name first and becomes visible under the
//! blob's name only once the bytes are durable and their hash matched: an
//! upload that is refused, interrupted or dropped leaves nothing behind (a
//! crash may leave a temporary object, which `sweep_temporary` removes).
//! Bytes stream through; no blob is ever held whole in memory.

use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use sha2::{Digest, Sha256};

mod fs;
pub mod kind;
mod s3;

pub use kind::Sniffer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("blob_store {0:?}: use fs or s3://bucket[/prefix]")]
    BadSetting(String),
    #[error("blob storage I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("S3 storage: {0}")]
    S3(#[from] object_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stream of a blob's bytes (or a range of them).
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// Where blobs live.
#[derive(Clone, Debug)]
pub enum BlobStorage {
    Fs(fs::FsStorage),
    S3(s3::S3Storage),
}

impl BlobStorage {
    /// Open the storage a `blob_store` setting names; `fs` keeps files under
    /// `data_dir/blobs`. S3 takes its credentials, region and endpoint from
    /// the usual variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL`), given as `aws`.
    pub async fn open(setting: &str, data_dir: &Path, aws: &[(String, String)]) -> Result<Self> {
        if setting == "fs" {
            return Ok(Self::Fs(fs::FsStorage::open(data_dir.join("blobs")).await?));
        }
        if let Some(rest) = setting.strip_prefix("s3://") {
            let (bucket, prefix) = match rest.split_once('/') {
                Some((b, p)) => (b, p.trim_matches('/')),
                None => (rest, ""),
            };
            if bucket.is_empty() {
                return Err(Error::BadSetting(setting.to_string()));
            }
            return Ok(Self::S3(s3::S3Storage::open(bucket, prefix, aws)?));
        }
        Err(Error::BadSetting(setting.to_string()))
    }

    /// A filesystem storage rooted at `root` (tests and tools).
    pub async fn fs_at(root: PathBuf) -> Result<Self> {
        Ok(Self::Fs(fs::FsStorage::open(root).await?))
    }

    /// `fs` or `s3`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fs(_) => "fs",
            Self::S3(_) => "s3",
        }
    }

    /// Start writing a blob under a temporary name.
    pub async fn begin(&self) -> Result<Upload> {
        let inner = match self {
            Self::Fs(s) => Staging::Fs(s.begin().await?),
            Self::S3(s) => Staging::S3(s.begin().await?),
        };
        Ok(Upload {
            inner,
            hasher: Sha256::new(),
            sniffer: Sniffer::default(),
            size: 0,
        })
    }

    /// The bytes of a held blob, or of `range` of them; `None` when the
    /// storage has no such blob.
    pub async fn open_read(
        &self,
        sha256: &str,
        range: Option<Range<u64>>,
    ) -> Result<Option<ByteStream>> {
        match self {
            Self::Fs(s) => s.open_read(sha256, range).await,
            Self::S3(s) => s.open_read(sha256, range).await,
        }
    }

    /// Delete a blob's bytes; deleting what is not there is not an error.
    pub async fn delete(&self, sha256: &str) -> Result<()> {
        match self {
            Self::Fs(s) => s.delete(sha256).await,
            Self::S3(s) => s.delete(sha256).await,
        }
    }

    /// Remove temporary objects older than `older_than` (left by a crash);
    /// returns how many.
    pub async fn sweep_temporary(&self, older_than: std::time::Duration) -> Result<u64> {
        match self {
            Self::Fs(s) => s.sweep_temporary(older_than).await,
            Self::S3(s) => s.sweep_temporary(older_than).await,
        }
    }
}

enum Staging {
    Fs(fs::FsUpload),
    S3(s3::S3Upload),
}

/// A blob being written: bytes go to a temporary name while their hash and
/// type are computed. Dropped without `publish`, it leaves nothing behind.
pub struct Upload {
    inner: Staging,
    hasher: Sha256,
    sniffer: Sniffer,
    size: u64,
}

impl Upload {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.hasher.update(chunk);
        self.sniffer.feed(chunk);
        self.size += chunk.len() as u64;
        match &mut self.inner {
            Staging::Fs(u) => u.write(chunk).await,
            Staging::S3(u) => u.write(chunk).await,
        }
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Make the bytes durable under the temporary name; the digest and
    /// the type are known from here on.
    pub async fn finish(self) -> Result<Staged> {
        let digest: [u8; 32] = self.hasher.finalize().into();
        let content_type = self.sniffer.finish();
        let inner = match self.inner {
            Staging::Fs(u) => StagedInner::Fs(u.finish().await?),
            Staging::S3(u) => StagedInner::S3(u.finish().await?),
        };
        Ok(Staged {
            inner,
            digest,
            size: self.size,
            content_type,
        })
    }
}

enum StagedInner {
    Fs(fs::FsStaged),
    S3(s3::S3Staged),
}

/// A blob whose bytes are durable under a temporary name, not visible yet.
/// Dropped without `publish`, the temporary object is deleted.
pub struct Staged {
    inner: StagedInner,
    pub digest: [u8; 32],
    pub size: u64,
    pub content_type: &'static str,
}

impl Staged {
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.digest)
    }

    /// Make the blob visible under its name (its hash, checked by the caller).
    pub async fn publish(self) -> Result<()> {
        let name = self.sha256_hex();
        match self.inner {
            StagedInner::Fs(s) => s.publish(&name).await,
            StagedInner::S3(s) => s.publish(&name).await,
        }
    }
}

/// Random name of a temporary object.
fn temporary_name() -> String {
    format!("{}.part", hex::encode(rand::random::<[u8; 16]>()))
}
