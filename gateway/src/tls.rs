//! TLS for the scoring listener: rustls with HTTP/2 and HTTP/1.1 offered by ALPN, and a
//! certificate that follows its files: when the certificate or key file changes, new
//! connections get the new pair without a restart (a pair that does not load is logged and
//! the old one kept).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
pub use tokio_rustls::TlsAcceptor;

/// Where the listener's certificate chain and private key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Hands every handshake the current certificate.
struct Current(ArcSwap<CertifiedKey>);

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Current(<certificate>)")
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Reads and checks a certificate chain and its key; the error names the file at fault.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("tls.cert {}: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.cert {}: no certificate in the file", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("tls.key {}: {e}", files.key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("tls.key {}: {e}", files.key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| format!("tls.key {} does not match tls.cert: {e}", files.key.display()))?;
    Ok(certified)
}

/// The acceptor for the listener, and a handle that reloads its certificate.
pub fn acceptor(files: &TlsFiles) -> Result<(TlsAcceptor, Reloader), String> {
    let current = Arc::new(Current(ArcSwap::from_pointee(load(files)?)));
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let reloader = Reloader { files: files.clone(), current, seen: stamps(files) };
    Ok((TlsAcceptor::from(Arc::new(config)), reloader))
}

fn stamps(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(&files.cert), modified(&files.key))
}

/// Watches the files and swaps the certificate in when they change.
pub struct Reloader {
    files: TlsFiles,
    current: Arc<Current>,
    seen: (Option<SystemTime>, Option<SystemTime>),
}

impl Reloader {
    /// Loads the pair again if either file changed; true when a new certificate is in use.
    pub fn check(&mut self) -> bool {
        let now = stamps(&self.files);
        if now == self.seen {
            return false;
        }
        match load(&self.files) {
            Ok(certified) => {
                self.seen = now;
                self.current.0.store(Arc::new(certified));
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // A half-written pair: keep serving the old one and try again next time.
                tracing::warn!(error = %e, "TLS certificate changed but does not load; keeping the old one");
                false
            }
        }
    }

    /// Checks every `period` for as long as the task lives.
    pub async fn watch(mut self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            self.check();
        }
    }
}
