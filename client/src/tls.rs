//! Outgoing TLS for a whole Hale process: which CA its servers' certificates are checked
//! against, and the certificate it shows when a server asks for one (mutual TLS).
//!
//! A process has one identity on the wire, whatever it calls — the agent shipping to the
//! collector, the healer acting through an agent, a catalog replica confirming to its
//! primary — so the binary [`install`]s it once from its flags, and every HTTP client in
//! the process is made by [`builder`]. The client certificate is read again when its files
//! change, at the next handshake (a renewal needs no restart, as for the servers); a
//! renewal that does not load keeps the last good pair, with a warning.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// The flags every Hale command that calls another takes for its outgoing TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ClientTlsFlags {
    /// Trust servers whose certificate this CA signed (PEM), besides the system's roots.
    #[arg(long, global = true, env = "HALE_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Show this certificate (PEM) to servers that ask for one (mutual TLS); a renewed
    /// file is used from the next connection on.
    #[arg(long, global = true, env = "HALE_TLS_CLIENT_CERT", requires = "tls_client_key", value_name = "PEM")]
    pub tls_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "HALE_TLS_CLIENT_KEY", requires = "tls_client_cert", value_name = "PEM")]
    pub tls_client_key: Option<PathBuf>,
}

impl ClientTlsFlags {
    pub fn is_empty(&self) -> bool {
        self.tls_ca.is_none() && self.tls_client_cert.is_none()
    }

    /// These flags, or where they are empty, the CA and certificate `hale up --tls` made
    /// in `certs` (`ca.pem`, `<name>.pem`, `<name>-key.pem`) — so a command run beside a
    /// TLS demo needs no flags.
    pub fn or_from_dir(self, certs: &Path, name: &str) -> ClientTlsFlags {
        if !self.is_empty() {
            return self;
        }
        let (ca, cert, key) =
            (certs.join("ca.pem"), certs.join(format!("{name}.pem")), certs.join(format!("{name}-key.pem")));
        let both = cert.exists() && key.exists();
        ClientTlsFlags {
            tls_ca: ca.exists().then_some(ca),
            tls_client_cert: both.then_some(cert),
            tls_client_key: both.then_some(key),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("reading {path}: {error}; give the PEM file `hale certs` wrote, readable by this user")]
    Read { path: PathBuf, error: String },
    #[error("{path} holds no certificate")]
    Empty { path: PathBuf },
    #[error("the TLS client configuration was refused: {0}")]
    Config(String),
    #[error("the outgoing TLS of this process is already set")]
    Installed,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientTlsError> {
    let read = |error: String| ClientTlsError::Read { path: path.to_path_buf(), error };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(ClientTlsError::Empty { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// A rustls client configuration for these flags; `None` when they ask for nothing (then
/// reqwest's own, which trusts the system's roots and `SSL_CERT_FILE`).
pub fn client_config(flags: &ClientTlsFlags) -> Result<Option<rustls::ClientConfig>, ClientTlsError> {
    if flags.is_empty() {
        return Ok(None);
    }
    let extra_roots = match &flags.tls_ca {
        Some(ca) => read_certs(ca)?,
        None => Vec::new(),
    };
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider())
        .map_err(|e| ClientTlsError::Config(e.to_string()))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientTlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match (&flags.tls_client_cert, &flags.tls_client_key) {
        (Some(cert), Some(key)) => builder.with_client_cert_resolver(Arc::new(Identity::load(cert, key)?)),
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(config))
}

static INSTALLED: OnceLock<Option<rustls::ClientConfig>> = OnceLock::new();

/// Sets this process's outgoing TLS from its flags, once, before any client is built; the
/// files are read now, so a wrong path fails the start and names the file.
pub fn install(flags: &ClientTlsFlags) -> Result<(), ClientTlsError> {
    let config = client_config(flags)?;
    INSTALLED.set(config).map_err(|_| ClientTlsError::Installed)
}

/// A reqwest client builder with this process's outgoing TLS: the one way Hale makes an
/// HTTP client.
pub fn builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match INSTALLED.get() {
        Some(Some(config)) => builder.tls_backend_preconfigured(config.clone()),
        _ => builder,
    }
}

/// A reqwest client builder with the TLS of `flags` rather than the process's: for a
/// tool that speaks to more than one cluster, and for tests.
pub fn builder_with(flags: &ClientTlsFlags) -> Result<reqwest::ClientBuilder, ClientTlsError> {
    let builder = reqwest::Client::builder();
    Ok(match client_config(flags)? {
        Some(config) => builder.tls_backend_preconfigured(config),
        None => builder,
    })
}

/// How often the certificate files are looked at, at most: a handshake costs a `stat`
/// only once a second.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The client certificate, read again when its files change.
#[derive(Debug)]
struct Identity {
    cert: PathBuf,
    key: PathBuf,
    /// [`CHECK_EVERY`]; tests look at every handshake.
    check_every: Duration,
    state: Mutex<IdentityState>,
}

#[derive(Debug)]
struct IdentityState {
    current: Arc<CertifiedKey>,
    seen: [Option<SystemTime>; 2],
    checked: Instant,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, ClientTlsError> {
    let certs = read_certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ClientTlsError::Read { path: key.to_path_buf(), error: e.to_string() })?;
    CertifiedKey::from_der(certs, der, &provider())
        .map_err(|e| ClientTlsError::Config(format!("{} and {}: {e}", cert.display(), key.display())))
}

impl Identity {
    fn load(cert: &Path, key: &Path) -> Result<Identity, ClientTlsError> {
        let seen = [modified(cert), modified(key)];
        let current = Arc::new(certified_key(cert, key)?);
        Ok(Identity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            check_every: CHECK_EVERY,
            state: Mutex::new(IdentityState { current, seen, checked: Instant::now() }),
        })
    }

    /// The pair in force, first reloaded if the files changed since it was read.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= self.check_every {
            state.checked = Instant::now();
            let now = [modified(&self.cert), modified(&self.key)];
            if now != state.seen {
                // Seen either way: a broken renewal is reported once, not per handshake.
                state.seen = now;
                match certified_key(&self.cert, &self.key) {
                    Ok(key) => {
                        state.current = Arc::new(key);
                        tracing::info!(cert = %self.cert.display(), "TLS client certificate reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the new client certificate does not load; keeping the previous one")
                    }
                }
            }
        }
        state.current.clone()
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(&self, _root_hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed pair for `name`, written to `dir`; its certificate's DER.
    fn pair(dir: &Path, name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert =
            rcgen::CertificateParams::new(vec![name.to_string()]).expect("params").self_signed(&key).expect("cert");
        std::fs::write(dir.join("client-key.pem"), key.serialize_pem()).expect("key file");
        std::fs::write(dir.join("client.pem"), cert.pem()).expect("cert file");
        cert.der().to_vec()
    }

    fn shown(identity: &Identity) -> Vec<u8> {
        identity.resolve(&[], &[]).expect("a certificate").cert[0].as_ref().to_vec()
    }

    #[test]
    fn a_renewed_client_certificate_is_shown_from_the_next_handshake_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let (cert, key) = (dir.path().join("client.pem"), dir.path().join("client-key.pem"));
        let first = pair(dir.path(), "first");
        let mut identity = Identity::load(&cert, &key).expect("loads");
        identity.check_every = Duration::ZERO;
        assert_eq!(shown(&identity), first);
        // Renewed (a new mtime even within the same second: set it).
        let second = pair(dir.path(), "second");
        let later = SystemTime::now() + Duration::from_secs(5);
        for path in [&cert, &key] {
            std::fs::File::options().write(true).open(path).expect("open").set_modified(later).expect("mtime");
        }
        assert_eq!(shown(&identity), second, "the renewal is shown");
        // A half-written renewal keeps the last good pair.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ntruncated").expect("write");
        let later = later + Duration::from_secs(5);
        std::fs::File::options().write(true).open(&cert).expect("open").set_modified(later).expect("mtime");
        assert_eq!(shown(&identity), second, "a broken file changes nothing");
        // And a missing file is named when the process starts.
        let missing = ClientTlsFlags {
            tls_ca: Some(dir.path().join("nowhere.pem")),
            tls_client_cert: None,
            tls_client_key: None,
        };
        assert!(client_config(&missing).expect_err("no CA file").to_string().contains("nowhere.pem"));
    }
}
