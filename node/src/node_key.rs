//! The node key: generated once into `data_dir/node.key` and reused, since peers
//! pin it. Also used by the CLI for client key files (same format: seed hex).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use meshrelay_protocol::NodeKey;

/// Read the key at `path`, or create it (mode 0600) when the file does not exist.
/// A file that exists but does not hold a key is an error, never overwritten.
pub fn load_or_create(path: &Path) -> anyhow::Result<NodeKey> {
    if path.exists() {
        return load(path);
    }
    let key = NodeKey::generate();
    write_new(path, &key)?;
    tracing::info!(path = %path.display(), node = %key.public_hex(), "generated a new node key");
    Ok(key)
}

pub fn load(path: &Path) -> anyhow::Result<NodeKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    NodeKey::from_seed_hex(text.trim())
        .map_err(|e| anyhow::anyhow!("key file {} does not hold a key: {e}", path.display()))
}

/// Write a key to a new file, readable by its owner only; refuses to overwrite.
pub fn write_new(path: &Path, key: &NodeKey) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; not overwriting a key", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    writeln!(f, "{}", key.seed_hex())?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/node.key");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public_hex(), b.public_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(write_new(&path, &NodeKey::generate()).is_err());
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        std::fs::write(&path, "not a key").unwrap();
        assert!(load_or_create(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    }
}
