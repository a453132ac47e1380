//! The data directory holds the node's secrets (its key, the admin token) and
//! its database: only the node's user may read it. The directory is made
//! 0700 and the SQLite file 0600 before the database opens, so its journal
//! files (which SQLite creates with the database file's mode) are 0600 too.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Create `dir` (0700), or narrow it to 0700 when it is wider.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data_dir {}", dir.display()))?;
    narrow(dir, 0o700)
}

/// The SQLite file a `sqlite://` URL names, created empty (0600) when
/// missing, narrowed to 0600 when wider; nothing for other databases.
pub fn prepare_sqlite(database_url: &str) -> anyhow::Result<()> {
    let Some(path) = sqlite_path(database_url) else {
        return Ok(());
    };
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating the database {}", path.display()))?;
    }
    for file in [
        path.clone(),
        with_suffix(&path, "-wal"),
        with_suffix(&path, "-shm"),
    ] {
        if file.exists() {
            narrow(&file, 0o600)?;
        }
    }
    Ok(())
}

/// PROTOCOL.md 8.1: on SQLite one process serves a database. Takes an
/// exclusive lock on `<database>.lock` for as long as the returned file is
/// held (the kernel drops it when the process ends, `kill -9` included); a
/// second process on the same database is refused, naming the file.
pub fn lock_sqlite(database_url: &str) -> anyhow::Result<Option<std::fs::File>> {
    let Some(path) = sqlite_path(database_url) else {
        return Ok(None);
    };
    let lock_path = with_suffix(&path, ".lock");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "the SQLite database {} is in use by another meshrelay process (it holds {}); \
             one process serves a SQLite database: several processes need PostgreSQL",
            path.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", lock_path.display()))
        }
    }
}

/// The file of `sqlite://path?options` (`sqlite::memory:` has none).
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Take group and other bits beyond `mode` away (never adds any).
fn narrow(path: &Path, mode: u32) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let current = meta.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(current & mode))
            .with_context(|| format!("making {} private (mode {mode:o})", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite://./data/m.db"),
            Some("./data/m.db".into())
        );
        assert_eq!(
            sqlite_path("sqlite:///srv/m.db?mode=rwc"),
            Some("/srv/m.db".into())
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }

    #[test]
    fn the_directory_and_database_are_made_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let db = dir.join("m.db");
        prepare_sqlite(&format!("sqlite://{}", db.display())).unwrap();
        assert_eq!(mode(&db), 0o600);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare_sqlite(&format!("sqlite://{}", db.display())).unwrap();
        assert_eq!(
            mode(&db),
            0o600,
            "a wider file from an older version is narrowed"
        );
    }
}
