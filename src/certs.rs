//! `hale certs`: a small certificate authority for Hale's own TLS (rcgen) — `init` makes
//! the CA, `issue` a certificate for one component, signed by it. Keys are written 0600
//! and never printed. Meant for the demo and for trying TLS by hand; a fleet with its own
//! PKI gives each component its certificate from there instead.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    which: CertsCommand,
}

#[derive(clap::Subcommand)]
enum CertsCommand {
    /// Make a CA: <dir>/ca.pem (give it to every client) and <dir>/ca-key.pem (0600).
    Init {
        #[arg(long, default_value = ".hale/certs")]
        dir: PathBuf,
        /// The CA's name.
        #[arg(long, default_value = "Hale demo CA")]
        name: String,
        /// Replace a CA already there (every certificate it signed stops being trusted).
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate for NAME signed by the CA: <dir>/NAME.pem and <dir>/NAME-key.pem.
    /// NAME is its CN (what a mutual-TLS allow-list names); it serves as a server under
    /// every --san, and as a client everywhere.
    Issue {
        name: String,
        #[arg(long, default_value = ".hale/certs")]
        dir: PathBuf,
        /// DNS names and IP addresses it serves under (comma-separated, repeatable).
        #[arg(long = "san", value_delimiter = ',')]
        sans: Vec<String>,
        /// Days it is valid (renew by issuing again: servers reload it by themselves).
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
}

pub fn run(args: CertsArgs) -> Result<()> {
    match args.which {
        CertsCommand::Init { dir, name, force } => {
            let ca = init(&dir, &name, force)?;
            println!("hale: CA {name:?} in {} (key {}, 0600)", ca.display(), dir.join("ca-key.pem").display());
        }
        CertsCommand::Issue { name, dir, sans, days } => {
            let (cert, key) = issue(&dir, &name, &sans, days)?;
            println!(
                "hale: {} and {} (0600), signed by {}",
                cert.display(),
                key.display(),
                dir.join("ca.pem").display()
            );
        }
    }
    Ok(())
}

/// Makes the CA in `dir`; returns the CA certificate's path.
pub fn init(dir: &Path, name: &str, force: bool) -> Result<PathBuf> {
    hale_fs::create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    if cert_path.exists() && !force {
        bail!(
            "{} exists: keep it, or replace it with --force (what it signed is then no longer trusted)",
            cert_path.display()
        );
    }
    let mut params = CertificateParams::new(Vec::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = params.not_before + time_days(3650);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    hale_fs::write_private(&key_path, key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", key_path.display()))?;
    std::fs::write(&cert_path, cert.pem()).with_context(|| format!("writing {}", cert_path.display()))?;
    Ok(cert_path)
}

fn time_days(days: u32) -> time::Duration {
    time::Duration::days(i64::from(days))
}

/// Issues `name`'s certificate; returns (certificate, key) paths.
pub fn issue(dir: &Path, name: &str, sans: &[String], days: u32) -> Result<(PathBuf, PathBuf)> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bail!("{name:?}: a certificate name is letters, digits, '-', '_' and '.' (it names the files too)");
    }
    if days == 0 || days > 3650 {
        bail!("--days {days}: between 1 and 3650");
    }
    let (ca_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let ca_pem = std::fs::read_to_string(&ca_path).with_context(|| {
        format!("reading {}: make the CA first with `hale certs init --dir {}`", ca_path.display(), dir.display())
    })?;
    let ca_key = std::fs::read_to_string(&ca_key_path).with_context(|| format!("reading {}", ca_key_path.display()))?;
    let ca_key =
        KeyPair::from_pem(&ca_key).with_context(|| format!("{} is not a private key", ca_key_path.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .with_context(|| format!("{} is not a CA certificate", ca_path.display()))?;
    let mut names = vec![name.to_string()];
    names.extend(sans.iter().filter(|s| !s.is_empty() && s.as_str() != name).cloned());
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time_days(days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
    // The key first, whole and private, then the certificate: a server watching the pair
    // never sees a new certificate beside the old key.
    let tmp = dir.join(format!(".{name}-key.pem.tmp"));
    hale_fs::write_private(&tmp, key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &key_path).with_context(|| format!("writing {}", key_path.display()))?;
    let tmp = dir.join(format!(".{name}.pem.tmp"));
    std::fs::write(&tmp, cert.pem()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &cert_path).with_context(|| format!("writing {}", cert_path.display()))?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_signs_what_it_issues_and_keys_are_private() {
        let dir = tempfile::tempdir().expect("tmp");
        let certs = dir.path().join("certs");
        init(&certs, "Test CA", false).expect("init");
        assert!(init(&certs, "Test CA", false).is_err(), "an existing CA is kept");
        let (cert, key) = issue(&certs, "collector", &["127.0.0.1".into(), "localhost".into()], 30).expect("issue");
        use std::os::unix::fs::PermissionsExt;
        for private in [key.clone(), certs.join("ca-key.pem")] {
            let mode = std::fs::metadata(&private).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", private.display());
        }
        let pem = std::fs::read_to_string(&cert).expect("cert");
        use hale_serve::tls::pki_types::pem::PemObject;
        let der = hale_serve::tls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("der");
        assert_eq!(hale_serve::tls::names_of(&der), ["collector", "localhost"], "CN then DNS SANs");
        assert!(issue(&certs, "../evil", &[], 30).is_err());
        assert!(
            issue(&dir.path().join("nowhere"), "x", &[], 30)
                .expect_err("no CA")
                .to_string()
                .contains("hale certs init")
        );
    }
}
