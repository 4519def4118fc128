//! TLS for every Hale server (rustls): a certificate and key from PEM files, optionally
//! a CA whose client certificates are required (mutual TLS) with an allow-list of the
//! names (CN or DNS SAN) that may connect. The files are watched: a renewed certificate
//! is served from the next connection on, without a restart; a bad renewal is refused
//! with a warning and the last good one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

pub use rustls::pki_types;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Where a server's TLS material is, and whom it lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// With a CA, clients must present a certificate it signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// With mutual TLS: the client names (certificate CN or DNS SAN) let in; empty lets in
    /// every certificate the CA signed.
    pub client_allow: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {error}; give the PEM file `hale certs issue` wrote, readable by this user")]
    Read { path: PathBuf, error: String },
    #[error("{path} holds no {what}")]
    Empty { path: PathBuf, what: &'static str },
    #[error("the TLS configuration was refused: {0}")]
    Config(String),
}

/// A server's TLS: the configuration in force, rebuilt when its files change.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// The files' modification times when `current` was built.
    seen: RwLock<Vec<Option<SystemTime>>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |error: String| TlsError::Read { path: path.to_path_buf(), error };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty { path: path.to_path_buf(), what: "certificate" });
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Read { path: files.key.clone(), error: e.to_string() })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| TlsError::Config(e.to_string()))?;
    // HTTP/1.1 only, as `serve` speaks.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn modified(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

impl Tls {
    /// Loads the files; an error says which file and why.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let seen = modified(&files);
        let config = build(&files)?;
        Ok(Arc::new(Tls { files, current: RwLock::new(Arc::new(config)), seen: RwLock::new(seen) }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration new connections get.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Rebuilds the configuration if a file changed since; `Ok(true)` when it did. A
    /// change that does not load (a key from another certificate, a half-written file)
    /// keeps the configuration in force.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = modified(&self.files);
        if *self.seen.read().unwrap_or_else(|p| p.into_inner()) == now {
            return Ok(false);
        }
        let config = build(&self.files);
        // Seen either way: a broken file is reported once, not every second.
        *self.seen.write().unwrap_or_else(|p| p.into_inner()) = now;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config?);
        Ok(true)
    }

    /// Looks at the files every `every` for as long as the server runs.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(tls) = tls.upgrade() else { return };
                match tls.reload_if_changed() {
                    Ok(true) => tracing::info!(cert = %tls.files.cert.display(), "TLS certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the new TLS files do not load; serving with the previous ones")
                    }
                }
            }
        })
    }

    /// Whether the client that completed this handshake may stay: with an allow-list,
    /// its certificate's CN or one of its DNS names must be on it.
    pub fn admits(&self, connection: &rustls::ServerConnection) -> Result<(), String> {
        if self.files.client_ca.is_none() || self.files.client_allow.is_empty() {
            return Ok(());
        }
        let Some(leaf) = connection.peer_certificates().and_then(|c| c.first()) else {
            return Err("no client certificate".into());
        };
        let names = names_of(leaf);
        if names.iter().any(|n| self.files.client_allow.iter().any(|a| a == n)) {
            Ok(())
        } else {
            Err(format!("client certificate for {} is not on the allow-list", names.join(", ")))
        }
    }
}

/// A certificate's CN and DNS subject alternative names, each once.
pub fn names_of(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else { return Vec::new() };
    let mut names: Vec<String> =
        parsed.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)).collect();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name
                && !names.iter().any(|n| n == dns)
            {
                names.push((*dns).to_string());
            }
        }
    }
    names
}

/// The flags every Hale server takes for TLS, laid over its config.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsFlags {
    /// Serve TLS with this certificate chain (PEM); a renewed file is served from the next
    /// connection on.
    #[arg(long, env = "HALE_TLS_CERT", requires = "tls_key", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "HALE_TLS_KEY", requires = "tls_cert", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS).
    #[arg(long, env = "HALE_TLS_CLIENT_CA", requires = "tls_cert", value_name = "PEM")]
    pub tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: the client names (certificate CN or DNS SAN) let in,
    /// comma-separated; default every certificate the CA signed.
    #[arg(
        long,
        env = "HALE_TLS_CLIENT_ALLOW",
        value_delimiter = ',',
        requires = "tls_client_ca",
        value_name = "NAMES"
    )]
    pub tls_client_allow: Vec<String>,
    /// Serve writes and actions over plain HTTP even beyond loopback, where their tokens
    /// cross the network in clear (by default such a server serves reads only).
    #[arg(long)]
    pub insecure_plaintext: bool,
}

impl TlsFlags {
    /// What the server is to do: its TLS loaded (an error names the file), or none.
    pub fn security(&self) -> Result<crate::Security, TlsError> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(Tls::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
                client_allow: self.tls_client_allow.clone(),
            })?),
            _ => None,
        };
        Ok(crate::Security { tls, insecure_plaintext: self.insecure_plaintext })
    }
}
