//! TLS on a real component: `hale certs` makes a CA and the collector's certificate, the
//! collector serves only TLS with it, remote_write and PromQL work over it for a client
//! that trusts the CA, and a certificate issued again is served without a restart.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, free_addr};
use hale_core::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};

fn hale(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_hale")).args(args).output().expect("hale");
    assert!(out.status.success(), "hale {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The serial number of the certificate the server presented.
async fn served_serial(client: &reqwest::Client, url: &str) -> Option<Vec<u8>> {
    let r = client.get(url).send().await.ok()?;
    let der = r.extensions().get::<reqwest::tls::TlsInfo>()?.peer_certificate()?.to_vec();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.raw_serial().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_serves_tls_with_certificates_from_hale_certs_and_reloads_a_new_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let certs = tmp.path().join("certs");
    let certs_dir = certs.display().to_string();
    let addr = free_addr();
    hale(&["certs", "init", "--dir", &certs_dir]);
    hale(&["certs", "issue", "collector", "--dir", &certs_dir, "--san", &addr.ip().to_string()]);
    let (cert, key) = (certs.join("collector.pem"), certs.join("collector-key.pem"));
    let _collector = common::spawn_collector(
        addr,
        &tmp.path().join("data"),
        &tmp.path().join("collector.out"),
        &["--tls-cert".into(), cert.display().to_string(), "--tls-key".into(), key.display().to_string()],
        &[],
    );
    let ca = std::fs::read(certs.join("ca.pem")).expect("ca");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca"))
        .tls_info(true)
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let base = format!("https://{addr}");
    eventually("the collector ready over TLS", Duration::from_secs(30), async || {
        let r = client.get(format!("{base}/-/ready")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    // Plain HTTP gets no answer; a client that does not trust the CA refuses the server.
    assert!(reqwest::get(format!("http://{addr}/-/ready")).await.is_err(), "plain HTTP is not served");
    let stranger = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().expect("client");
    assert!(stranger.get(format!("{base}/-/ready")).send().await.is_err(), "an unknown CA is refused");

    // remote_write and PromQL over TLS.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let body = remote_write::encode(&WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label { name: "__name__".into(), value: "over_tls".into() },
                Label { name: "job".into(), value: "tls".into() },
            ],
            samples: vec![Sample { value: 42.0, timestamp: now }],
        }],
        metadata: Vec::new(),
    });
    common::send_remote_write_to(&client, &base, body).await;
    let value = common::query_value(&client, &base, "over_tls").await;
    assert_eq!(value, Some(42.0));

    // An agent ships to it over TLS, trusting the CA the standard way (SSL_CERT_FILE).
    let agent_addr = free_addr();
    let out = std::fs::File::create(tmp.path().join("agent.out")).expect("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hale"));
    cmd.args(["agent", "--node", "tls-node", "--listen", &agent_addr.to_string(), "--remote-write"])
        .arg(format!("{base}/api/v1/write"))
        .arg("--data-dir")
        .arg(tmp.path().join("agent"))
        .env("SSL_CERT_FILE", certs.join("ca.pem"))
        .env("HALE_AGENT_TOKEN", "tls-test-agent-token-0123456789");
    let _agent = common::Proc(common::spawn_logged(&mut cmd, out, "agent"));
    eventually("the agent's host metrics arrived over TLS", Duration::from_secs(30), async || {
        common::query_value(&client, &base, "count(node_load1{node=\"tls-node\"})").await
    })
    .await;

    // Issued again (renewal): the running collector serves the new certificate.
    let before = served_serial(&client, &format!("{base}/-/ready")).await.expect("a certificate");
    hale(&["certs", "issue", "collector", "--dir", &certs_dir, "--san", &addr.ip().to_string()]);
    eventually("the renewed certificate served", Duration::from_secs(15), async || {
        let fresh = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).ok()?)
            .tls_info(true)
            .build()
            .ok()?;
        let now = served_serial(&fresh, &format!("{base}/-/ready")).await?;
        (now != before).then_some(())
    })
    .await;
}

/// Tokens from files: rotated without a restart (the old one taken for a grace period so
/// senders move over one by one), and a token file others can read is warned about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_token_rotates_from_its_file_without_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let token_file = tmp.path().join("ingest.token");
    std::fs::write(&token_file, "first-ingest-token-0123456789\n").expect("token");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let addr = free_addr();
    let out = tmp.path().join("collector.out");
    let _collector = common::spawn_collector(
        addr,
        &tmp.path().join("data"),
        &out,
        &["--ingest-token-file".into(), token_file.display().to_string()],
        &[],
    );
    common::wait_ready("collector", addr).await;
    let log = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(log.contains("readable by others") && log.contains("chmod 600"), "{log}");
    let client = reqwest::Client::new();
    let write = async |token: Option<&str>| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
        let body = remote_write::encode(&WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label { name: "__name__".into(), value: "rotated".into() }],
                samples: vec![Sample { value: 1.0, timestamp: now }],
            }],
            metadata: Vec::new(),
        });
        let mut request = client
            .post(format!("http://{addr}/api/v1/write"))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("write").status().as_u16()
    };
    assert_eq!(write(Some("first-ingest-token-0123456789")).await, 204);
    assert_eq!(write(None).await, 401);
    std::fs::write(&token_file, "second-ingest-token-0123456789\n").expect("rotate");
    eventually("the rotated token taken", Duration::from_secs(10), async || {
        (write(Some("second-ingest-token-0123456789")).await == 204).then_some(())
    })
    .await;
    assert_eq!(write(Some("first-ingest-token-0123456789")).await, 204, "the old one within the grace period");
    assert_eq!(write(Some("a-made-up-token")).await, 401);
}
