//! The listeners' certificates (PROTOCOL.md 8: `tls_cert_file`,
//! `tls_key_file`, `admin_tls_cert_file`, `admin_tls_key_file`) and the extra
//! CA for peers (`peer_ca_file`): loaded at start with errors naming the file
//! and the reason, reloaded on `SIGHUP` without dropping open connections.

use std::sync::Arc;

use anyhow::{bail, Context};
use meshrelay_tls::{CertPair, TlsAcceptor, ADMIN, PUBLIC};
use tokio_util::sync::CancellationToken;

use crate::settings::Tls;

/// The pairs in use; `None` where a listener speaks plain HTTP.
#[derive(Clone, Default)]
pub struct Certificates {
    pub public: Option<Arc<CertPair>>,
    pub admin: Option<Arc<CertPair>>,
}

fn pair(
    names: meshrelay_tls::Names,
    cert: &Option<std::path::PathBuf>,
    key: &Option<std::path::PathBuf>,
) -> anyhow::Result<Option<Arc<CertPair>>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(c), Some(k)) => Ok(Some(CertPair::load(names, c, k)?)),
        _ => bail!(
            "settings {} and {}: set both, or neither",
            names.cert,
            names.key
        ),
    }
}

impl Certificates {
    pub fn load(tls: &Tls) -> anyhow::Result<Self> {
        Ok(Self {
            public: pair(PUBLIC, &tls.cert_file, &tls.key_file)?,
            admin: pair(ADMIN, &tls.admin_cert_file, &tls.admin_key_file)?,
        })
    }

    fn named(&self) -> impl Iterator<Item = (&'static str, &Arc<CertPair>)> {
        [("public", &self.public), ("admin", &self.admin)]
            .into_iter()
            .filter_map(|(name, p)| p.as_ref().map(|p| (name, p)))
    }

    pub fn public_acceptor(&self) -> anyhow::Result<Option<TlsAcceptor>> {
        Ok(self.public.as_ref().map(|p| p.acceptor()).transpose()?)
    }

    pub fn admin_acceptor(&self) -> anyhow::Result<Option<TlsAcceptor>> {
        Ok(self.admin.as_ref().map(|p| p.acceptor()).transpose()?)
    }

    /// `(listener, notAfter)` of each pair in use.
    pub fn expiries(&self) -> Vec<(String, i64)> {
        self.named()
            .map(|(name, p)| (name.to_string(), p.not_after()))
            .collect()
    }

    /// Read every pair's files again: new handshakes use what loaded; a pair
    /// that fails keeps its old certificate. Each outcome is logged.
    pub fn reload(&self) {
        for (name, p) in self.named() {
            match p.reload() {
                Ok(()) => tracing::info!(
                    listener = name,
                    not_after = p.not_after(),
                    "TLS certificate reloaded"
                ),
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "TLS reload failed; the old certificate stays")
                }
            }
        }
    }
}

/// Reload the certificates on each `SIGHUP` until `shutdown`; `None` when no
/// listener speaks TLS (a `SIGHUP` then does nothing).
pub fn spawn_reload_on_sighup(
    certs: Certificates,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if certs.public.is_none() && certs.admin.is_none() {
        return None;
    }
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: certificates reload only on restart");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                got = hup.recv() => {
                    if got.is_none() {
                        break;
                    }
                    certs.reload();
                }
            }
        }
    }))
}

/// The CA certificates of `peer_ca_file`, trusted for `https://` peers beside
/// the built-in web roots.
pub fn peer_roots(tls: &Tls) -> anyhow::Result<meshrelay_federation::PeerRoots> {
    let Some(path) = &tls.peer_ca_file else {
        return Ok(Default::default());
    };
    let pem = std::fs::read(path)
        .with_context(|| format!("setting peer_ca_file {}: cannot be read", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
        format!(
            "setting peer_ca_file {}: not a PEM certificate bundle",
            path.display()
        )
    })?;
    if certs.is_empty() {
        bail!(
            "setting peer_ca_file {}: holds no certificate",
            path.display()
        );
    }
    Ok(meshrelay_federation::PeerRoots(certs))
}
