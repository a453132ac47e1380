//! TLS for meshrelay's listeners (PROTOCOL.md 8: `tls_cert_file`,
//! `tls_key_file`, and the admin listener's pair).
//!
//! A `CertPair` is loaded from PEM files with errors that name the file and
//! the reason (unreadable, no certificate, no key, a key that does not match
//! the certificate). Every handshake asks it for the current certificate, so
//! `reload` swaps the pair for new connections while open ones keep theirs;
//! a reload that fails keeps the old pair. HTTP/2 and HTTP/1.1 are offered
//! by ALPN.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting} {path}: {why}")]
    File {
        setting: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("{key_setting} {key} does not match the certificate in {cert_setting} {cert}")]
    Mismatch {
        cert_setting: &'static str,
        cert: PathBuf,
        key_setting: &'static str,
        key: PathBuf,
    },
    #[error("building the TLS configuration: {0}")]
    Config(String),
}

/// The settings a pair comes from, for messages: `("tls_cert_file",
/// "tls_key_file")` or the admin listener's.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    pub cert: &'static str,
    pub key: &'static str,
}

pub const PUBLIC: Names = Names {
    cert: "tls_cert_file",
    key: "tls_key_file",
};
pub const ADMIN: Names = Names {
    cert: "admin_tls_cert_file",
    key: "admin_tls_key_file",
};

/// The one crypto provider: ring, which reqwest's rustls uses too.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, reloadable in place.
#[derive(Debug)]
pub struct CertPair {
    names: Names,
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The leaf certificate's notAfter, Unix seconds.
    not_after: AtomicI64,
}

fn file_error(setting: &'static str, path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        setting,
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// Read and check one pair.
fn load(
    names: Names,
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Arc<CertifiedKey>, i64), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| file_error(names.cert, cert_file, format!("cannot be read: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            file_error(
                names.cert,
                cert_file,
                format!("is not a PEM certificate chain: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(file_error(names.cert, cert_file, "holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        file_error(
            names.key,
            key_file,
            format!("holds no usable private key: {e}"),
        )
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| file_error(names.key, key_file, format!("the key cannot sign: {e}")))?;
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).map_err(|e| {
        file_error(
            names.cert,
            cert_file,
            format!("the first certificate does not parse: {e}"),
        )
    })?;
    let not_after = leaf.validity().not_after.timestamp();
    let pair = CertifiedKey::new(certs, signing);
    if pair.keys_match().is_err() {
        return Err(TlsError::Mismatch {
            cert_setting: names.cert,
            cert: cert_file.to_path_buf(),
            key_setting: names.key,
            key: key_file.to_path_buf(),
        });
    }
    Ok((Arc::new(pair), not_after))
}

impl CertPair {
    /// Load `cert_file` and `key_file`; an error names the setting, the file
    /// and what is wrong.
    pub fn load(names: Names, cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, TlsError> {
        let (pair, not_after) = load(names, cert_file, key_file)?;
        Ok(Arc::new(Self {
            names,
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new(pair),
            not_after: AtomicI64::new(not_after),
        }))
    }

    /// Read both files again; on success new handshakes use the new pair,
    /// on failure the old one stays (and the error says why).
    pub fn reload(&self) -> Result<(), TlsError> {
        let (pair, not_after) = load(self.names, &self.cert_file, &self.key_file)?;
        *self.current.write().expect("lock") = pair;
        self.not_after.store(not_after, Ordering::Relaxed);
        Ok(())
    }

    /// When the current certificate expires, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    /// An acceptor whose handshakes use this pair as it is at each handshake.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertPair>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.read().expect("lock").clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(
        dir: &Path,
        name: &str,
    ) -> (PathBuf, PathBuf, rcgen::CertifiedKey<rcgen::KeyPair>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key, made)
    }

    #[test]
    fn a_pair_loads_and_bad_files_are_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = write_pair(dir.path(), "a");
        let pair = CertPair::load(PUBLIC, &cert, &key).unwrap();
        assert!(pair.not_after() > 1_700_000_000);
        assert!(pair.acceptor().is_ok());

        let (_, other_key, _) = write_pair(dir.path(), "b");
        let err = CertPair::load(PUBLIC, &cert, &other_key)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tls_key_file") && err.contains("does not match") && err.contains("a.crt"),
            "{err}"
        );

        let missing = dir.path().join("nope.crt");
        let err = CertPair::load(ADMIN, &missing, &key)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("admin_tls_cert_file")
                && err.contains("nope.crt")
                && err.contains("cannot be read"),
            "{err}"
        );

        let err = CertPair::load(PUBLIC, &key, &key).unwrap_err().to_string();
        assert!(err.contains("holds no certificate"), "{err}");
        let err = CertPair::load(PUBLIC, &cert, &cert)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tls_key_file") && err.contains("no usable private key"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_reload_keeps_the_old_pair_and_a_good_one_swaps_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, first) = write_pair(dir.path(), "a");
        let pair = CertPair::load(PUBLIC, &cert, &key).unwrap();
        let now = |p: &CertPair| p.current.read().unwrap().cert[0].clone();
        assert_eq!(now(&pair).as_ref(), first.cert.der().as_ref());

        std::fs::write(&key, "not a key").unwrap();
        assert!(pair.reload().is_err());
        assert_eq!(
            now(&pair).as_ref(),
            first.cert.der().as_ref(),
            "the old pair stays"
        );

        let second = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, second.cert.pem()).unwrap();
        std::fs::write(&key, second.signing_key.serialize_pem()).unwrap();
        pair.reload().unwrap();
        assert_eq!(now(&pair).as_ref(), second.cert.der().as_ref());
    }
}
