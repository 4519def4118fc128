//! Helpers every end-to-end test binary shares. Each binary uses some of them.
#![allow(dead_code)]

pub mod tmux;
pub mod up;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use hale_core::api::{ActiveAlert, Envelope, MatrixSeries, QueryResult, SloState, VectorSample};
use hale_core::cluster::{ClusterView, ReplicaView};

/// A child process killed (by PID) when the test ends, however it ends.
pub struct Proc(pub Child);

impl Proc {
    /// SIGKILL and reap: the crash a durability test wants, with nothing left to clean up.
    pub fn kill_9(&mut self) {
        self.0.kill().expect("kill -9");
        self.0.wait().expect("reap");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` as every test child runs: no input, both outputs into `log`.
pub fn spawn_logged(cmd: &mut std::process::Command, log: std::fs::File, what: &str) -> Child {
    use std::process::Stdio;
    let stdout = log.try_clone().expect("clone the log");
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(log).spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"))
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A free address on a loopback IP of its own (127.64–127.127.x.y), so that no two tests,
/// and nothing else on the machine (a `hale up` someone left running), race for it.
pub fn free_addr() -> SocketAddr {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
        ^ std::process::id().rotate_left(16)
        ^ COUNTER.fetch_add(0x9e37_79b9, std::sync::atomic::Ordering::Relaxed);
    let ip = std::net::Ipv4Addr::new(127, 64 + (n % 64) as u8, (n >> 8) as u8, 2 + ((n >> 16) % 250) as u8);
    TcpListener::bind((ip, 0)).expect("bind").local_addr().expect("addr")
}

/// The path of a Debian program the tests need, or a failure that says how to get it.
pub fn need(program: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{program} is not installed: `apt-get install prometheus prometheus-node-exporter prometheus-alertmanager etcd-server` (.ci/run does this)"
    );
}

/// Polls `f` every 50 ms until it gives a value, failing after `limit`.
pub async fn eventually<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`eventually`], but on failure the panic message also carries `dump()` (the
/// logs and state that say why), since the test's data dir goes with the panic.
pub async fn eventually_or_dump<T>(
    what: &str,
    limit: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
    dump: impl AsyncFnOnce() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {limit:?}\n{}", dump().await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `n` lines of a file, for a failing test's message.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    format!("--- {} (last {n} lines)\n{}", path.display(), lines[lines.len().saturating_sub(n)..].join("\n"))
}

/// Writes one sample, now, of `name{labels}` to a collector's remote_write endpoint.
pub async fn push_gauge(addr: SocketAddr, name: &str, labels: &[(&str, &str)], value: f64) {
    use hale_core::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let mut all = vec![Label { name: "__name__".into(), value: name.into() }];
    all.extend(labels.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }));
    let body = remote_write::encode(&WriteRequest {
        timeseries: vec![TimeSeries::new(all, vec![Sample { value, timestamp: now }])],
        metadata: Vec::new(),
    });
    let r = reqwest::Client::new().post(format!("http://{addr}/api/v1/write")).body(body).send().await.expect("write");
    assert!(r.status().is_success(), "write: {}", r.status());
}

/// Starts `hale collector` on `addr` with `data` as its data dir and `args` after, output
/// appended to `out`; does not wait.
pub fn spawn_collector(addr: SocketAddr, data: &Path, out: &Path, args: &[String], env: &[(&str, &str)]) -> Proc {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(out).expect("log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hale"));
    cmd.args(["collector", "--listen", &addr.to_string(), "--data-dir"]).arg(data).args(args).envs(env.iter().copied());
    cmd.args(open_ingest_unless_token(args, env));
    Proc(spawn_logged(&mut cmd, log, "collector"))
}

/// `--insecure-open-ingest` for a test collector given no ingest token (most tests send
/// telemetry without one; those that test the token give it).
pub fn open_ingest_unless_token(args: &[String], env: &[(&str, &str)]) -> Option<&'static str> {
    let token = args.iter().any(|a| a.starts_with("--ingest-token"))
        || env.iter().any(|(k, _)| k.starts_with("HALE_INGEST_TOKEN"));
    (!token).then_some("--insecure-open-ingest")
}

/// `text` written to `dir/name`: its path.
pub fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// A collector evaluating `rules` (written to `dir/rules.yml`), its data in `dir/data`
/// and its output in `dir/collector.out`, with `env`; returns once it is ready.
pub async fn collector_with_rules(dir: &Path, rules: &str, env: &[(&str, &str)]) -> (Proc, SocketAddr) {
    let path = file(dir, "rules.yml", rules);
    let (addr, out) = (free_addr(), dir.join("collector.out"));
    let args = ["--rules".to_string(), path.display().to_string()];
    let mut proc = spawn_collector(addr, &dir.join("data"), &out, &args, env);
    collector_ready(&mut proc, addr, &out).await;
    (proc, addr)
}

/// Whether the server at `addr` answers `/-/ready` with a success (Prometheus's,
/// Alertmanager's and Hale's readiness path).
pub async fn is_ready(addr: impl std::fmt::Display) -> Option<()> {
    reqwest::get(format!("http://{addr}/-/ready")).await.ok().filter(|r| r.status().is_success()).map(|_| ())
}

/// Waits up to 30 s for `what` at `addr` to answer `/-/ready`.
pub async fn wait_ready(what: &str, addr: impl std::fmt::Display) {
    eventually(&format!("{what} ready"), Duration::from_secs(30), async || is_ready(&addr).await).await;
}

/// Posts a snappy-compressed remote_write body as Prometheus's senders do (the headers
/// real Prometheus requires) and asserts it is accepted.
pub async fn send_remote_write(client: &reqwest::Client, addr: SocketAddr, body: Vec<u8>) {
    send_remote_write_to(client, &format!("http://{addr}"), body).await;
}

/// [`send_remote_write`] to a collector at `base` (`http://…` or `https://…`).
pub async fn send_remote_write_to(client: &reqwest::Client, base: &str, body: Vec<u8>) {
    let r = client
        .post(format!("{base}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .expect("write");
    assert!(r.status().is_success(), "{base}: {} {}", r.status(), r.text().await.unwrap_or_default());
}

/// Waits for a collector to answer `/-/ready`, failing with its output if it exits.
pub async fn collector_ready(proc: &mut Proc, addr: SocketAddr, out: &Path) {
    eventually("collector ready", Duration::from_secs(30), async || {
        if let Ok(Some(status)) = proc.0.try_wait() {
            panic!("collector exited ({status}): {}", std::fs::read_to_string(out).unwrap_or_default());
        }
        is_ready(addr).await
    })
    .await;
}

/// GET `url` with `query` parameters as raw JSON; `None` on any failure (for polling).
/// Only for tests of the JSON's shape itself; the others read typed answers ([`get_as`]).
pub async fn get_json(client: &reqwest::Client, url: &str, query: &[(&str, &str)]) -> Option<serde_json::Value> {
    get_as(client, url, query).await
}

/// GET `url` with `query` parameters, read as `T`; `None` on any failure (for polling).
pub async fn get_as<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
) -> Option<T> {
    client.get(url).query(query).send().await.ok()?.json().await.ok()
}

/// The `data` of a successful collector (or Prometheus) answer at `url`.
pub async fn get_data<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
) -> Option<T> {
    get_as::<Envelope<T>>(client, url, query).await?.into_data().ok()
}

/// An instant PromQL query of the collector or Prometheus at `base` (`http://host:port`):
/// its samples, `None` on any failure or an answer that is not a vector.
pub async fn query(client: &reqwest::Client, base: &str, promql: &str) -> Option<Vec<VectorSample>> {
    match query_result(client, base, promql).await? {
        QueryResult::Vector(samples) => Some(samples),
        _ => None,
    }
}

/// An instant query of a range selector (`x[5m]`): every series with its raw points;
/// `None` on any failure or an answer that is not a matrix.
pub async fn query_matrix(client: &reqwest::Client, base: &str, promql: &str) -> Option<Vec<MatrixSeries>> {
    match query_result(client, base, promql).await? {
        QueryResult::Matrix(series) => Some(series),
        _ => None,
    }
}

/// An instant PromQL query's answer, whatever its type.
pub async fn query_result(client: &reqwest::Client, base: &str, promql: &str) -> Option<QueryResult> {
    get_data(client, &format!("{base}/api/v1/query"), &[("query", promql)]).await
}

/// The value of the first sample of an instant query, if it has one.
pub async fn query_value(client: &reqwest::Client, base: &str, promql: &str) -> Option<f64> {
    query(client, base, promql).await?.first()?.value.value()
}

/// A range PromQL query (`start`, `end`, `step` as the API takes them): its series.
pub async fn query_range(
    client: &reqwest::Client,
    base: &str,
    promql: &str,
    range: [(&str, &str); 3],
) -> Option<Vec<MatrixSeries>> {
    let mut params = vec![("query", promql)];
    params.extend(range);
    match get_data(client, &format!("{base}/api/v1/query_range"), &params).await? {
        QueryResult::Matrix(series) => Some(series),
        _ => None,
    }
}

/// The collector's pending and firing alerts.
pub async fn alerts(client: &reqwest::Client, base: &str) -> Option<Vec<ActiveAlert>> {
    Some(collector(client, base).alerts().await.ok()?.alerts)
}

/// The collector's view of the cluster (`/api/v1/cluster`).
pub async fn cluster_view(client: &reqwest::Client, base: &str) -> Option<ClusterView> {
    collector(client, base).cluster().await.ok()
}

/// The collector's typed client at `base`, sharing `client`'s connections (no admin token).
pub fn collector(client: &reqwest::Client, base: &str) -> hale_client::Collector {
    hale_client::Collector::with_client(base, None, &hale_client::Pool::of(client, Duration::from_secs(5)))
        .expect("collector client")
}

/// Every replica of every service in a cluster view.
pub fn replicas(view: &ClusterView) -> impl Iterator<Item = &ReplicaView> {
    view.services.iter().flat_map(|s| &s.replicas)
}

/// The collector's SLO states.
pub async fn slos(client: &reqwest::Client, base: &str) -> Option<Vec<SloState>> {
    collector(client, base).slos().await.ok()
}

/// Requests a [`receiver`] got: (arrival, headers, body).
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(Instant, axum::http::HeaderMap, axum::body::Bytes)>>>;

/// An HTTP receiver on a free loopback address that records every POST to `path` and
/// answers 200. The task ends with the test's runtime.
pub async fn receiver(path: &str) -> (SocketAddr, Received) {
    let addr = free_addr();
    (addr, receiver_on(addr, path).await)
}

/// [`receiver`] on `addr` (one a test chose earlier, while nothing listened there).
pub async fn receiver_on(addr: SocketAddr, path: &str) -> Received {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind receiver");
    let got: Received = Default::default();
    let store = got.clone();
    let app = axum::Router::new().route(
        path,
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                store.lock().expect("lock").push((Instant::now(), headers, body));
                "ok"
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    got
}

/// Starts Debian's Prometheus on `addr` with `dir/prometheus.yml`, its TSDB in `dir/tsdb`
/// and the remote-write receiver on; does not wait.
pub fn spawn_prometheus(dir: &Path, addr: SocketAddr) -> Proc {
    use std::process::{Command, Stdio};
    Proc(
        Command::new(need("prometheus"))
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus"),
    )
}

/// Debian's Prometheus with `config` (a `hale up` data dir's, say) and its TSDB in `tsdb`,
/// on a free address, once it answers `/-/ready`.
pub async fn prometheus_with(config: &Path, tsdb: &Path) -> (Proc, SocketAddr) {
    use std::process::{Command, Stdio};
    let addr = free_addr();
    let proc = Proc(
        Command::new(need("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus"),
    );
    wait_ready("prometheus", addr).await;
    (proc, addr)
}

/// Debian's Prometheus with a minimal config (no scrapes, the remote-write receiver on)
/// in `dir`, on a free address, once it answers `/-/ready`.
pub async fn prometheus_receiver(dir: &Path) -> (Proc, SocketAddr) {
    let addr = free_addr();
    std::fs::write(dir.join("prometheus.yml"), "global:\n  scrape_interval: 1m\n").expect("config");
    let proc = spawn_prometheus(dir, addr);
    wait_ready("prometheus", addr).await;
    (proc, addr)
}

/// A real single-member etcd (Debian's etcd-server) on two free loopback ports, with its
/// data in `dir`; returns once it answers `/health`. Its client URL is the second value.
pub async fn spawn_etcd(dir: &Path) -> (Proc, String) {
    let etcd = need("etcd");
    let (client, peer) = (free_addr(), free_addr());
    let (client, peer) = (format!("http://{client}"), format!("http://{peer}"));
    let log = std::fs::File::create(dir.join("etcd.out")).expect("etcd log");
    let mut cmd = std::process::Command::new(etcd);
    cmd.args(["--name", "hale-test", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("hale-test={peer}")]);
    let proc = Proc(spawn_logged(&mut cmd, log, "etcd"));
    let health = format!("{client}/health");
    eventually("etcd healthy", Duration::from_secs(30), async || {
        let r = reqwest::get(&health).await.ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        (v["health"] == "true").then_some(())
    })
    .await;
    (proc, client)
}

/// [`spawn_etcd`] over mutual TLS: `hale certs` makes a CA in `dir/certs`, etcd's
/// certificate and a client one (`client.pem`); etcd takes only clients with a
/// certificate of that CA (`--client-cert-auth`). Its https client URL is the second value.
pub async fn spawn_etcd_tls(dir: &Path) -> (Proc, String) {
    let etcd = need("etcd");
    let certs = dir.join("certs");
    let hale = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hale")).args(args).arg("--dir").arg(&certs).output();
        assert!(out.expect("hale certs").status.success(), "hale certs {args:?}");
    };
    let (client, peer) = (free_addr(), free_addr());
    hale(&["certs", "init"]);
    hale(&["certs", "issue", "etcd", "--san", &client.ip().to_string()]);
    hale(&["certs", "issue", "client"]);
    let (client, peer) = (format!("https://{client}"), format!("http://{peer}"));
    let log = std::fs::File::create(dir.join("etcd.out")).expect("etcd log");
    let pem = |name: &str| certs.join(name);
    let mut cmd = std::process::Command::new(etcd);
    cmd.args(["--name", "hale-test", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("hale-test={peer}")])
        .arg("--cert-file")
        .arg(pem("etcd.pem"))
        .arg("--key-file")
        .arg(pem("etcd-key.pem"))
        .arg("--trusted-ca-file")
        .arg(pem("ca.pem"))
        .arg("--client-cert-auth");
    let proc = Proc(spawn_logged(&mut cmd, log, "etcd"));
    let flags = hale_client::tls::ClientTlsFlags::default().or_from_dir(&certs, "client");
    let https = hale_client::tls::builder_with(&flags).expect("certs").build().expect("client");
    let health = format!("{client}/health");
    eventually("etcd healthy over TLS", Duration::from_secs(30), async || {
        let r = https.get(&health).send().await.ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        (v["health"] == "true").then_some(())
    })
    .await;
    (proc, client)
}

/// A loopback /24 and port offset of our own, so this test runs beside a default
/// `hale up` and beside itself.
pub fn private_addresses() -> (String, String, u16) {
    let seed = std::process::id() as u64
        ^ Instant::now().elapsed().as_nanos() as u64
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let b = 100 + (seed % 100) as u8;
    let c = ((seed >> 8) % 250) as u8;
    let offset = 2000 + ((seed >> 16) % 20000) as u16;
    (format!("127.{b}.{c}"), format!("127.{b}.{c}.254"), offset)
}
