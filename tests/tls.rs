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
            exemplars: Vec::new(),
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
                exemplars: Vec::new(),
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

/// `hale up --tls`: every component over HTTPS, Hale's own parts and the shop's services
/// over mutual TLS. The whole loop runs on it — agents ship, alerts reach the healer, the
/// healer restarts a hung replica through its agent and verifies it — while a client
/// without a certificate of the cluster's CA gets nothing but the shop's gateway, and
/// plain HTTP nothing at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hale_up_tls_heals_over_mutual_tls_and_lets_no_stranger_in() {
    use common::up::{Cluster, chaos};
    use hale_core::api::{ActionKind, ActionList, ActionStatus};
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(tmp.path(), 5, &["--tls".into()]).await;
    let config = cluster.config();
    assert!(config.tls, "the effective cluster.toml says tls");
    let client = cluster.client();
    let (gateway, collector) = (cluster.gateway(), cluster.collector());
    let healer = config.url(config.healer.listen);
    assert!(gateway.starts_with("https://") && healer.starts_with("https://"));
    let agent = config.url(config.agent_listen(&config.nodes[0]));
    let catalog = config.instances().into_iter().find(|i| i.name == "catalog-1").expect("catalog-1").url();

    // A shopper trusts the CA and shows no certificate: the gateway serves it, Hale's own
    // servers and the shop's internal ones refuse the handshake.
    let ca = std::fs::read(cluster.data_dir.join("certs").join("ca.pem")).expect("ca");
    let shopper = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca"))
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let products = shopper.get(format!("{gateway}/api/products")).send().await.expect("the gateway over TLS");
    assert_eq!(products.status(), 200);
    for url in [
        format!("{collector}/api/v1/alerts"),
        format!("{healer}/api/v1/actions"),
        format!("{agent}/api/v1/processes"),
        format!("{catalog}/healthz"),
    ] {
        assert!(shopper.get(&url).send().await.is_err(), "{url} answered a client without a certificate");
        let plain = url.replacen("https://", "http://", 1);
        assert!(shopper.get(&plain).send().await.is_err(), "{plain} answered plain HTTP");
        assert_eq!(client.get(&url).send().await.expect(&url).status(), 200, "{url} with the cluster's certificate");
    }

    // The loop: the agents' data arrives (agent → collector), the hang is alerted
    // (collector → healer), the healer restarts through the agent and verifies
    // (healer → agent, healer → collector), all over mutual TLS.
    let q = "max_over_time(probe_success{probe=\"readyz\",instance=\"search-1\"}[1h])";
    eventually("search-1 seen ready at the collector", Duration::from_secs(60), async || {
        (common::query(&client, &collector, q).await?.first()?.value.1 == "1").then_some(())
    })
    .await;
    // `hale chaos` beside the cluster finds its certificates in the data dir.
    chaos(&cluster.data_dir, &["hang", "search-1", "--duration", "120s"]);
    let action = eventually("a verified restart of search-1", Duration::from_secs(60), async || {
        let r = client.get(format!("{healer}/api/v1/actions")).send().await.ok()?;
        let actions = r.json::<ActionList>().await.ok()?.actions;
        actions
            .into_iter()
            .find(|a| a.target.instance.as_deref() == Some("search-1") && a.status == ActionStatus::Succeeded)
    })
    .await;
    assert_eq!(action.kind, ActionKind::Restart);
    // And `hale status` reads the cluster the same way.
    let status = Command::new(env!("CARGO_BIN_EXE_hale"))
        .args(["status", "--data-dir"])
        .arg(&cluster.data_dir)
        .output()
        .expect("hale status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("collector ok") && text.contains("healer ok") && text.contains("agent up"),
        "hale status over TLS: {text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// An agent's tokens from files: the actuator token rotates without a restart (the old
/// one taken for the grace period), and the ingest token it sends follows its file, so a
/// collector and its agents move to a new ingest token with no batch refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_tokens_rotate_from_their_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = |name: &str, text: &str| common::file(tmp.path(), name, text);
    let collector_token = file("collector-ingest.token", "ingest-one-0123456789\n");
    let agent_ingest = file("agent-ingest.token", "ingest-one-0123456789\n");
    let actuator = file("actuator.token", "actuator-one-0123456789\n");
    let addr = free_addr();
    let _collector = common::spawn_collector(
        addr,
        &tmp.path().join("data"),
        &tmp.path().join("collector.out"),
        &["--ingest-token-file".into(), collector_token.display().to_string()],
        &[],
    );
    common::wait_ready("collector", addr).await;
    let agent_addr = free_addr();
    let out = std::fs::File::create(tmp.path().join("agent.out")).expect("out");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hale"));
    cmd.args(["agent", "--node", "rotating", "--listen", &agent_addr.to_string(), "--remote-write"])
        .arg(format!("http://{addr}/api/v1/write"))
        .arg("--data-dir")
        .arg(tmp.path().join("agent"))
        .arg("--token-file")
        .arg(&actuator)
        .arg("--ingest-token-file")
        .arg(&agent_ingest);
    let _agent = common::Proc(common::spawn_logged(&mut cmd, out, "agent"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().expect("client");
    let base = format!("http://{addr}");
    let newest = async || common::query_value(&client, &base, "timestamp(node_load1{node=\"rotating\"})").await;
    eventually("the agent's metrics in", Duration::from_secs(30), newest).await;

    // The actuator: a start of an unknown service is a 404 past the token check, a 401 before.
    let act = async |token: &str| {
        let r = client
            .post(format!("http://{agent_addr}/api/v1/processes"))
            .bearer_auth(token)
            .body("{\"service\":\"nope\"}")
            .send()
            .await
            .expect("actuator");
        r.status().as_u16()
    };
    assert_eq!(act("actuator-one-0123456789").await, 404);
    assert_eq!(act("actuator-two-0123456789").await, 401);
    std::fs::write(&actuator, "actuator-two-0123456789\n").expect("rotate");
    eventually("the rotated actuator token taken", Duration::from_secs(10), async || {
        (act("actuator-two-0123456789").await == 404).then_some(())
    })
    .await;
    assert_eq!(act("actuator-one-0123456789").await, 404, "the old one, within the grace period");
    assert_eq!(act("made-up").await, 401);

    // The ingest token, the agent first: the collector refuses it (401) until its own file
    // has it too. A refused credential is the operator's to fix, not the data's fault, so
    // the agent keeps those batches and sends them once the token is taken: none dropped.
    let dropped = async || {
        let text = client.get(format!("http://{agent_addr}/metrics")).send().await.ok()?.text().await.ok()?;
        let line = text.lines().find(|l| l.starts_with("hale_agent_batches_dropped_total"));
        Some(line.and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).unwrap_or(0.0))
    };
    std::fs::write(&agent_ingest, "ingest-two-0123456789\n").expect("rotate");
    eventually("the agent's batches refused for the new token", Duration::from_secs(30), async || {
        let log = std::fs::read_to_string(tmp.path().join("agent.out")).unwrap_or_default();
        log.contains("401").then_some(())
    })
    .await;
    std::fs::write(&collector_token, "ingest-two-0123456789\n").expect("rotate");
    let rotated = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    // (The agent's backoff has grown while refused: up to 30 s between tries.)
    eventually("samples sent after the rotation", Duration::from_secs(60), async || {
        newest().await.filter(|t| *t > rotated + 2.0)
    })
    .await;
    assert_eq!(dropped().await, Some(0.0), "no batch dropped across the rotation");
}
