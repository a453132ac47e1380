//! Blobs on an S3-compatible service through `object_store`: `<prefix>/<sha256>`,
//! uploaded to `<prefix>/tmp/<random>.part` first as a streaming multipart
//! upload (parts of `PART_BYTES`, at most `PARTS_IN_FLIGHT` at once), then
//! copied to its name once the hash checked.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, WriteMultipart};

use crate::{ByteStream, Result};

/// Size of one multipart part (S3's smallest but the last is 5 MiB): an
/// upload holds at most this much in memory, plus the parts in flight.
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts of one upload sent at once.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Clone)]
pub struct S3Storage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl S3Storage {
    /// `aws` are the `AWS_*` variables (as `AmazonS3Builder::from_env`
    /// reads them, but from the caller's list rather than the process).
    pub fn open(bucket: &str, prefix: &str, aws: &[(String, String)]) -> Result<Self> {
        let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
        let var = |name: &str| aws.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        for (name, value) in aws {
            if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(key, value);
            }
        }
        if let Some(endpoint) = var("AWS_ENDPOINT_URL") {
            // A custom endpoint (MinIO, s3s, Garage ...) is addressed by path.
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        if var("AWS_REGION").is_none() && var("AWS_DEFAULT_REGION").is_none() {
            builder = builder.with_region("us-east-1");
        }
        Ok(Self {
            store: Arc::new(builder.build()?),
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    pub async fn begin(&self) -> Result<S3Upload> {
        let temp = self.key(&format!("tmp/{}", crate::temporary_name()));
        let upload = self.store.put_multipart(&temp).await?;
        Ok(S3Upload {
            writer: Some(WriteMultipart::new_with_chunk_size(upload, PART_BYTES)),
            storage: self.clone(),
            temp,
        })
    }

    pub async fn open_read(
        &self,
        sha256: &str,
        range: Option<Range<u64>>,
    ) -> Result<Option<ByteStream>> {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        match self.store.get_opts(&self.key(sha256), opts).await {
            Ok(got) => Ok(Some(
                got.into_stream().map_err(std::io::Error::other).boxed(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete(&self, sha256: &str) -> Result<()> {
        match self.store.delete(&self.key(sha256)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn sweep_temporary(&self, older_than: Duration) -> Result<u64> {
        let cutoff = std::time::SystemTime::now() - older_than;
        let cutoff = cutoff
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let prefix = self.key("tmp");
        let old: Vec<ObjectPath> = self
            .store
            .list(Some(&prefix))
            .try_filter_map(|meta| async move {
                Ok((meta.last_modified.timestamp() < cutoff).then_some(meta.location))
            })
            .try_collect()
            .await?;
        let mut removed = 0;
        for path in old {
            if self.store.delete(&path).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

pub struct S3Upload {
    writer: Option<WriteMultipart>,
    storage: S3Storage,
    temp: ObjectPath,
}

impl S3Upload {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let writer = self.writer.as_mut().expect("written before finish");
        writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        writer.write(chunk);
        Ok(())
    }

    pub async fn finish(mut self) -> Result<S3Staged> {
        let writer = self.writer.take().expect("finished once");
        writer.finish().await?;
        Ok(S3Staged {
            temp: Some(self.temp.clone()),
            storage: self.storage.clone(),
        })
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        // An upload dropped midway (a refused or interrupted body) is aborted,
        // so the service frees its parts.
        if let (Some(writer), Ok(rt)) = (self.writer.take(), tokio::runtime::Handle::try_current())
        {
            rt.spawn(async move {
                if let Err(e) = writer.abort().await {
                    tracing::warn!(error = %e, "aborting an S3 multipart upload failed");
                }
            });
        }
    }
}

pub struct S3Staged {
    temp: Option<ObjectPath>,
    storage: S3Storage,
}

impl S3Staged {
    pub async fn publish(mut self, sha256: &str) -> Result<()> {
        let temp = self.temp.take().expect("published once");
        let target = self.storage.key(sha256);
        let copied = self.storage.store.copy(&temp, &target).await;
        let _ = self.storage.store.delete(&temp).await;
        copied?;
        Ok(())
    }
}

impl Drop for S3Staged {
    fn drop(&mut self) {
        if let (Some(temp), Ok(rt)) = (self.temp.take(), tokio::runtime::Handle::try_current()) {
            let store = self.storage.store.clone();
            rt.spawn(async move {
                let _ = store.delete(&temp).await;
            });
        }
    }
}
