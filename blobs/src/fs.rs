//! Blobs as files: `<root>/ab/cd/<sha256>` (two levels of 256 directories,
//! so no directory grows past a few thousand entries), written under
//! `<root>/tmp/` first, fsynced, renamed, and the directory fsynced.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::{ByteStream, Result};

#[derive(Clone, Debug)]
pub struct FsStorage {
    root: PathBuf,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl FsStorage {
    pub async fn open(root: PathBuf) -> Result<Self> {
        tokio::fs::create_dir_all(root.join("tmp")).await?;
        Ok(Self { root })
    }

    fn path_of(&self, sha256: &str) -> PathBuf {
        self.root
            .join(&sha256[..2])
            .join(&sha256[2..4])
            .join(sha256)
    }

    pub async fn begin(&self) -> Result<FsUpload> {
        let path = self.root.join("tmp").join(crate::temporary_name());
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(FsUpload {
            file: Some(file),
            guard: TempFile(Some(path)),
            root: self.root.clone(),
        })
    }

    pub async fn open_read(
        &self,
        sha256: &str,
        range: Option<Range<u64>>,
    ) -> Result<Option<ByteStream>> {
        let mut file = match tokio::fs::File::open(self.path_of(sha256)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let stream: ByteStream = match range {
            Some(r) => {
                file.seek(std::io::SeekFrom::Start(r.start)).await?;
                let limited = tokio::io::AsyncReadExt::take(file, r.end.saturating_sub(r.start));
                tokio_util::io::ReaderStream::with_capacity(limited, 64 * 1024).boxed()
            }
            None => tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).boxed(),
        };
        Ok(Some(stream))
    }

    pub async fn delete(&self, sha256: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path_of(sha256)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn sweep_temporary(&self, older_than: Duration) -> Result<u64> {
        let mut removed = 0;
        let mut dir = tokio::fs::read_dir(self.root.join("tmp")).await?;
        let cutoff = SystemTime::now() - older_than;
        while let Some(entry) = dir.next_entry().await? {
            let modified = entry.metadata().await?.modified()?;
            if modified < cutoff && tokio::fs::remove_file(entry.path()).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Deletes the temporary file when dropped, unless it was renamed.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Best effort: what a crash leaves, `sweep_temporary` removes.
            let _ = std::fs::remove_file(path);
        }
    }
}

pub struct FsUpload {
    file: Option<tokio::fs::File>,
    guard: TempFile,
    root: PathBuf,
}

impl FsUpload {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        let file = self.file.as_mut().expect("written before finish");
        file.write_all(chunk).await?;
        Ok(())
    }

    pub async fn finish(mut self) -> Result<FsStaged> {
        let mut file = self.file.take().expect("finished once");
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        Ok(FsStaged {
            guard: std::mem::replace(&mut self.guard, TempFile(None)),
            root: self.root.clone(),
        })
    }
}

pub struct FsStaged {
    guard: TempFile,
    root: PathBuf,
}

impl FsStaged {
    pub async fn publish(mut self, sha256: &str) -> Result<()> {
        let temp = self.guard.0.clone().expect("published once");
        let root = self.root.clone();
        let name = sha256.to_string();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let first = root.join(&name[..2]);
            let second = first.join(&name[2..4]);
            if !second.exists() {
                std::fs::create_dir_all(&second)?;
                // New directory entries are durable only once their parents are synced.
                sync_dir(&first)?;
                sync_dir(&root)?;
            }
            std::fs::rename(&temp, second.join(&name))?;
            sync_dir(&second)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.guard.0 = None;
        Ok(())
    }
}
