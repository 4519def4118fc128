//! TLS and mutual TLS for real: a CA and certificates made here (rcgen), a server on
//! loopback, reqwest as the client verifying against the CA.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hale_serve::tls::{Tls, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca() -> Ca {
    let mut params = CertificateParams::new(Vec::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "test CA");
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("ca");
    Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
}

/// A certificate for `cn` (also its DNS SAN), with `ips` as IP SANs: (cert PEM, key PEM).
fn issue(ca: &Ca, cn: &str, ips: &[&str]) -> (String, String) {
    let mut sans = vec![cn.to_string()];
    sans.extend(ips.iter().map(|s| s.to_string()));
    let mut params = CertificateParams::new(sans).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

async fn start(tls: Arc<Tls>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello over TLS" }));
    let security = hale_serve::Security { tls: Some(tls), insecure_plaintext: false };
    tokio::spawn(hale_serve::serve_secure(
        listener,
        app,
        hale_serve::Limits::default(),
        security,
        std::future::pending(),
    ));
    addr
}

fn client(ca: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"))
        .tls_info(true)
        .timeout(Duration::from_secs(5));
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).expect("identity"));
    }
    b.build().expect("client")
}

/// The CN of the certificate the server presented.
async fn served_cn(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let r = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let info = r.extensions().get::<reqwest::tls::TlsInfo>().cloned().expect("tls info");
    assert_eq!(r.text().await.expect("body"), "hello over TLS");
    let der = info.peer_certificate().expect("a certificate").to_vec();
    Ok(hale_serve::tls::names_of(&der.into()).into_iter().next().unwrap_or_default())
}

#[tokio::test]
async fn serves_tls_verified_against_the_ca_and_reloads_a_renewed_certificate() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = new_ca();
    let (cert, key) = issue(&ca, "localhost", &["127.0.0.1"]);
    let files = TlsFiles {
        cert: write(dir.path(), "server.pem", &cert),
        key: write(dir.path(), "server-key.pem", &key),
        client_ca: None,
        client_allow: Vec::new(),
    };
    let tls = Tls::load(files.clone()).expect("load");
    let addr = start(tls.clone()).await;
    let url = format!("https://localhost:{}/", addr.port());
    let good = client(&ca.pem, None);
    assert_eq!(served_cn(&good, &url).await.expect("verified"), "localhost");
    // A client that trusts another CA refuses the server; plain HTTP gets nothing.
    let other = new_ca();
    assert!(served_cn(&client(&other.pem, None), &url).await.is_err(), "unknown CA");
    let plain = reqwest::Client::new().get(format!("http://localhost:{}/", addr.port())).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()), "plain HTTP is not served");

    // Renewed (a new certificate, another name): served from the next connection on.
    let (renewed, renewed_key) = issue(&ca, "renewed.localhost", &["127.0.0.1"]);
    std::fs::write(&files.key, &renewed_key).expect("key");
    std::fs::write(&files.cert, &renewed).expect("cert");
    assert!(tls.reload_if_changed().expect("reloaded"));
    let fresh = client(&ca.pem, None);
    // The renewed certificate names renewed.localhost; reach it as that name.
    let fresh = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).expect("ca"))
        .resolve("renewed.localhost", addr)
        .tls_info(true)
        .build()
        .unwrap_or(fresh);
    let renewed_url = format!("https://renewed.localhost:{}/", addr.port());
    assert_eq!(served_cn(&fresh, &renewed_url).await.expect("renewed"), "renewed.localhost");

    // A broken renewal (a key from another certificate) is refused; the last good one
    // stays in force.
    let (_, stray_key) = issue(&ca, "stray", &[]);
    std::fs::write(&files.key, &stray_key).expect("key");
    assert!(tls.reload_if_changed().is_err(), "a key that does not match is refused");
    assert_eq!(served_cn(&fresh, &renewed_url).await.expect("still served"), "renewed.localhost");
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_and_keeps_to_the_allow_list() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = new_ca();
    let (cert, key) = issue(&ca, "localhost", &["127.0.0.1"]);
    let files = TlsFiles {
        cert: write(dir.path(), "server.pem", &cert),
        key: write(dir.path(), "server-key.pem", &key),
        client_ca: Some(write(dir.path(), "ca.pem", &ca.pem)),
        client_allow: vec!["agent-node-1".into()],
    };
    let addr = start(Tls::load(files).expect("load")).await;
    let url = format!("https://localhost:{}/", addr.port());
    assert!(served_cn(&client(&ca.pem, None), &url).await.is_err(), "no client certificate");
    let (agent, agent_key) = issue(&ca, "agent-node-1", &[]);
    assert_eq!(served_cn(&client(&ca.pem, Some((&agent, &agent_key))), &url).await.expect("allowed"), "localhost");
    let (stranger, stranger_key) = issue(&ca, "stranger", &[]);
    assert!(
        served_cn(&client(&ca.pem, Some((&stranger, &stranger_key))), &url).await.is_err(),
        "signed by the CA, but not on the allow-list"
    );
    // A certificate from another CA is refused in the handshake.
    let other = new_ca();
    let (forged, forged_key) = issue(&other, "agent-node-1", &[]);
    assert!(served_cn(&client(&ca.pem, Some((&forged, &forged_key))), &url).await.is_err(), "another CA");
}

#[test]
fn missing_and_empty_files_say_which() {
    let dir = tempfile::tempdir().expect("tmp");
    let files = TlsFiles {
        cert: dir.path().join("nope.pem"),
        key: dir.path().join("nope-key.pem"),
        client_ca: None,
        client_allow: Vec::new(),
    };
    let err = Tls::load(files).err().expect("missing");
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let empty = write(dir.path(), "empty.pem", "");
    let files = TlsFiles { cert: empty, key: dir.path().join("k.pem"), client_ca: None, client_allow: Vec::new() };
    let err = Tls::load(files).err().expect("empty");
    assert!(err.to_string().contains("empty.pem"), "{err}");
}
