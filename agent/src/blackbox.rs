//! Probes like blackbox_exporter's (`[[probes]]`), of anything the agent can reach: HTTP
//! (method, headers, body, accepted status codes, body regexes, redirects followed or
//! not), a TCP connect, and a DNS resolution (through the system's resolver). Each probe
//! reports blackbox's names — `probe_success`, `probe_duration_seconds`, and per module
//! `probe_http_status_code`, `probe_http_content_length`, `probe_http_redirects`,
//! `probe_http_ssl`, `probe_failed_due_to_regex`, `probe_dns_lookup_time_seconds`,
//! `probe_dns_answer_rrs`, `probe_ip_protocol` — labelled `service`, `instance` (the
//! target), `node` and `probe` (its name).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hale_core::metrics::{Family, MetricKind};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// What a probe checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Module {
    Http,
    Tcp,
    Dns,
}

fn default_method() -> String {
    "GET".into()
}

fn default_true() -> bool {
    true
}

/// One probe as `agent.toml` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// The `probe` label.
    pub name: String,
    pub module: Module,
    /// A URL (http), `host:port` (tcp) or a name to resolve (dns).
    pub target: String,
    /// The `service` label (the name unless given).
    #[serde(default)]
    pub service: Option<String>,
    /// Defaults to the agent's `probe_interval_ms`.
    #[serde(default, with = "crate::targets::opt_duration")]
    pub interval: Option<Duration>,
    /// Defaults to the agent's `timeout_ms`.
    #[serde(default, with = "crate::targets::opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    // HTTP
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
    /// Accepted status codes (any 2xx when empty).
    #[serde(default)]
    pub valid_status_codes: Vec<u16>,
    #[serde(default)]
    pub fail_if_body_matches_regexp: Vec<String>,
    #[serde(default)]
    pub fail_if_body_not_matches_regexp: Vec<String>,
    #[serde(default = "default_true")]
    pub follow_redirects: bool,
    /// TLS: a PEM file of CA certificates to trust besides the system's (blackbox's
    /// `tls_config.ca_file`), for services with an internal CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// TLS: accept any certificate (its expiry is still reported).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

/// A probe checked and compiled.
#[derive(Debug, Clone)]
pub struct Probe {
    pub config: ProbeConfig,
    pub interval: Duration,
    pub timeout: Duration,
    must_not_match: Vec<Regex>,
    must_match: Vec<Regex>,
    method: reqwest::Method,
    /// Clients of its own when its TLS settings differ from the shared ones.
    clients: Option<Clients>,
}

impl ProbeConfig {
    /// Checks the probe; `interval` and `timeout` are the agent's defaults.
    pub fn compile(&self, interval: Duration, timeout: Duration) -> Result<Probe, String> {
        let what = |e: String| format!("probe {:?}: {e}", self.name);
        if self.name.is_empty() {
            return Err("a probe needs a name".into());
        }
        let regexes = |list: &[String]| {
            list.iter()
                .map(|r| Regex::new(r).map_err(|e| what(format!("regex {r:?}: {e}"))))
                .collect::<Result<Vec<_>, _>>()
        };
        let method = reqwest::Method::from_bytes(self.method.as_bytes())
            .map_err(|_| what(format!("{:?} is not an HTTP method", self.method)))?;
        match self.module {
            Module::Http if !(self.target.starts_with("http://") || self.target.starts_with("https://")) => {
                return Err(what(format!("an http probe's target is a URL, not {:?}", self.target)));
            }
            Module::Tcp if self.target.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()) => {
                return Err(what(format!("a tcp probe's target is host:port, not {:?}", self.target)));
            }
            _ => {}
        }
        let interval = self.interval.unwrap_or(interval);
        let timeout = self.timeout.unwrap_or(timeout).min(interval);
        if interval.is_zero() || timeout.is_zero() {
            return Err(what("interval and timeout must be positive".into()));
        }
        let clients = if self.tls_ca_file.is_some() || self.insecure_skip_verify {
            let ca = match &self.tls_ca_file {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| what(format!("tls_ca_file {}: {e}", path.display())))?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem)
                        .map_err(|e| what(format!("tls_ca_file {}: {e}", path.display())))?;
                    if certs.is_empty() {
                        return Err(what(format!("tls_ca_file {} holds no certificate", path.display())));
                    }
                    certs
                }
                None => Vec::new(),
            };
            let tls = TlsSettings { ca, insecure: self.insecure_skip_verify };
            Some(Clients::with_tls(&tls).map_err(|e| what(format!("TLS client: {e}")))?)
        } else {
            None
        };
        Ok(Probe {
            clients,
            config: self.clone(),
            interval,
            timeout,
            must_not_match: regexes(&self.fail_if_body_matches_regexp)?,
            must_match: regexes(&self.fail_if_body_not_matches_regexp)?,
            method,
        })
    }
}

/// The HTTP clients probes use: one that follows redirects (at most 10), one that does not.
#[derive(Clone, Debug)]
pub struct Clients {
    follow: reqwest::Client,
    stay: reqwest::Client,
}

/// CA certificates to trust besides the system's, and whether to verify at all.
#[derive(Default)]
struct TlsSettings {
    ca: Vec<reqwest::Certificate>,
    insecure: bool,
}

impl Clients {
    pub fn new() -> Result<Clients, reqwest::Error> {
        Clients::with_tls(&TlsSettings::default())
    }

    /// Clients that keep the peer's certificate (for its expiry) and trust `tls`.
    fn with_tls(tls: &TlsSettings) -> Result<Clients, reqwest::Error> {
        let build = |policy| {
            let mut builder = reqwest::Client::builder().redirect(policy).tls_info(true);
            for ca in &tls.ca {
                builder = builder.add_root_certificate(ca.clone());
            }
            builder.danger_accept_invalid_certs(tls.insecure).build()
        };
        Ok(Clients {
            follow: build(reqwest::redirect::Policy::limited(10))?,
            stay: build(reqwest::redirect::Policy::none())?,
        })
    }
}

/// When the certificate in `der` expires (unix seconds), if it parses.
fn not_after(der: &[u8]) -> Option<f64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp() as f64)
}

/// What one probe found: gauges by name, and whether it succeeded.
struct Found {
    success: bool,
    gauges: Vec<(&'static str, &'static str, f64)>,
}

async fn http(clients: &Clients, probe: &Probe) -> Found {
    let c = &probe.config;
    let clients = probe.clients.as_ref().unwrap_or(clients);
    let client = if c.follow_redirects { &clients.follow } else { &clients.stay };
    let mut request = client.request(probe.method.clone(), &c.target).timeout(probe.timeout);
    for (name, value) in &c.headers {
        request = request.header(name, value);
    }
    if !c.body.is_empty() {
        request = request.body(c.body.clone());
    }
    let mut gauges = vec![("probe_http_ssl", "1 if the final answer came over TLS.", 0.0)];
    let response = request.send().await.inspect_err(|e| {
        let chain: Vec<String> =
            std::iter::successors(std::error::Error::source(e), |e| e.source()).map(|e| e.to_string()).collect();
        tracing::debug!(probe = %c.name, error = %e, cause = ?chain, "http probe failed");
    });
    let Ok(response) = response else {
        gauges.push(("probe_http_status_code", "HTTP status of the answer (0 without one).", 0.0));
        return Found { success: false, gauges };
    };
    let status = response.status().as_u16();
    let final_url = response.url().clone();
    let redirected = final_url.as_str() != c.target;
    gauges[0].2 = if final_url.scheme() == "https" { 1.0 } else { 0.0 };
    gauges.push(("probe_http_status_code", "HTTP status of the answer (0 without one).", f64::from(status)));
    gauges.push(("probe_http_redirects", "Redirects followed.", if redirected { 1.0 } else { 0.0 }));
    // The leaf the server presented (rustls hands over only the end entity; it is the
    // one that expires first in all but odd chains).
    if let Some(expiry) = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .and_then(not_after)
    {
        gauges.push(("probe_ssl_earliest_cert_expiry", "When the server's certificate expires, in unixtime.", expiry));
    }
    let body = response.bytes().await.unwrap_or_default();
    gauges.push(("probe_http_content_length", "Length of the answer's body.", body.len() as f64));
    let status_ok = if c.valid_status_codes.is_empty() {
        (200..300).contains(&status)
    } else {
        c.valid_status_codes.contains(&status)
    };
    let text = String::from_utf8_lossy(&body);
    let regex_failed =
        probe.must_not_match.iter().any(|r| r.is_match(&text)) || probe.must_match.iter().any(|r| !r.is_match(&text));
    gauges.push((
        "probe_failed_due_to_regex",
        "1 if the body failed a regex check.",
        if regex_failed { 1.0 } else { 0.0 },
    ));
    Found { success: status_ok && !regex_failed, gauges }
}

async fn tcp(probe: &Probe) -> Found {
    let connected = tokio::time::timeout(probe.timeout, tokio::net::TcpStream::connect(&probe.config.target)).await;
    let (success, protocol) = match connected {
        Ok(Ok(stream)) => (true, stream.peer_addr().map_or(0.0, |a| if a.is_ipv4() { 4.0 } else { 6.0 })),
        _ => (false, 0.0),
    };
    Found { success, gauges: vec![("probe_ip_protocol", "IP version of the connection (0 without one).", protocol)] }
}

async fn dns(probe: &Probe) -> Found {
    let started = Instant::now();
    // The system's resolver (getaddrinfo), with any port: only the names count.
    let lookup = tokio::time::timeout(probe.timeout, tokio::net::lookup_host((probe.config.target.as_str(), 0))).await;
    let took = started.elapsed().as_secs_f64();
    let answers = match lookup {
        Ok(Ok(addresses)) => addresses.count(),
        _ => 0,
    };
    Found {
        success: answers > 0,
        gauges: vec![
            ("probe_dns_lookup_time_seconds", "How long the resolution took.", took),
            ("probe_dns_answer_rrs", "Addresses the name resolved to.", answers as f64),
        ],
    }
}

/// Runs `probe` once; its series, labelled for `node`.
pub async fn run(clients: &Clients, probe: &Probe, node: &str) -> Vec<Family> {
    let started = Instant::now();
    let found = match probe.config.module {
        Module::Http => http(clients, probe).await,
        Module::Tcp => tcp(probe).await,
        Module::Dns => dns(probe).await,
    };
    let c = &probe.config;
    let mut labels: Vec<(&str, &str)> = c.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    labels.retain(|(k, _)| !matches!(*k, "service" | "instance" | "node" | "probe"));
    labels.extend([
        ("service", c.service.as_deref().unwrap_or(&c.name)),
        ("instance", c.target.as_str()),
        ("node", node),
        ("probe", c.name.as_str()),
    ]);
    let gauge = |name: &str, help: &str, value: f64| {
        let mut family = Family::new(name, help, MetricKind::Gauge);
        family.push(&labels, value);
        family
    };
    let mut families = vec![
        gauge("probe_success", "Whether the probe succeeded.", if found.success { 1.0 } else { 0.0 }),
        gauge("probe_duration_seconds", "How long the probe took.", started.elapsed().as_secs_f64()),
    ];
    families.extend(found.gauges.into_iter().map(|(name, help, value)| gauge(name, help, value)));
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(toml: &str) -> Probe {
        toml::from_str::<ProbeConfig>(toml)
            .expect("parses")
            .compile(Duration::from_secs(5), Duration::from_secs(2))
            .expect("valid")
    }

    fn value(families: &[Family], name: &str) -> Option<f64> {
        families.iter().find(|f| f.name == name)?.samples.first().map(|s| s.value)
    }

    async fn server() -> std::net::SocketAddr {
        use axum::routing::get;
        let router = axum::Router::new()
            .route("/ok", get(|| async { "all good" }))
            .route("/broken", get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") }))
            .route("/moved", get(|| async { axum::response::Redirect::temporary("/ok") }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        addr
    }

    #[tokio::test]
    async fn http_probes_check_status_body_and_redirects_as_blackbox_does() {
        let addr = server().await;
        let clients = Clients::new().expect("clients");
        let run = |toml: String| {
            let clients = clients.clone();
            async move { super::run(&clients, &probe(&toml), "n").await }
        };
        let ok = run(format!(
            "name = \"ok\"\nmodule = \"http\"\ntarget = \"http://{addr}/ok\"\nfail_if_body_not_matches_regexp = [\"good\"]"
        ))
        .await;
        assert_eq!(value(&ok, "probe_success"), Some(1.0));
        assert_eq!(value(&ok, "probe_http_status_code"), Some(200.0));
        assert_eq!(value(&ok, "probe_http_content_length"), Some(8.0));
        let regex = run(format!(
            "name = \"r\"\nmodule = \"http\"\ntarget = \"http://{addr}/ok\"\nfail_if_body_matches_regexp = [\"good\"]"
        ))
        .await;
        assert_eq!(
            (value(&regex, "probe_success"), value(&regex, "probe_failed_due_to_regex")),
            (Some(0.0), Some(1.0))
        );
        let broken = run(format!("name = \"b\"\nmodule = \"http\"\ntarget = \"http://{addr}/broken\"")).await;
        assert_eq!(
            (value(&broken, "probe_success"), value(&broken, "probe_http_status_code")),
            (Some(0.0), Some(503.0))
        );
        let accepted = run(format!(
            "name = \"b\"\nmodule = \"http\"\ntarget = \"http://{addr}/broken\"\nvalid_status_codes = [503]"
        ))
        .await;
        assert_eq!(value(&accepted, "probe_success"), Some(1.0));
        let followed = run(format!("name = \"m\"\nmodule = \"http\"\ntarget = \"http://{addr}/moved\"")).await;
        assert_eq!(
            (value(&followed, "probe_http_status_code"), value(&followed, "probe_http_redirects")),
            (Some(200.0), Some(1.0))
        );
        let stayed =
            run(format!("name = \"m\"\nmodule = \"http\"\ntarget = \"http://{addr}/moved\"\nfollow_redirects = false"))
                .await;
        assert_eq!(
            (value(&stayed, "probe_success"), value(&stayed, "probe_http_status_code")),
            (Some(0.0), Some(307.0))
        );
        let sample = &ok.iter().find(|f| f.name == "probe_success").expect("success").samples[0];
        let labels: BTreeMap<&str, &str> = sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(labels["probe"], "ok");
        assert_eq!(labels["service"], "ok");
        assert_eq!(labels["instance"], format!("http://{addr}/ok"));
    }

    #[tokio::test]
    async fn tcp_and_dns_probes() {
        let addr = server().await;
        let clients = Clients::new().expect("clients");
        let open = run(&clients, &probe(&format!("name = \"t\"\nmodule = \"tcp\"\ntarget = \"{addr}\"")), "n").await;
        assert_eq!((value(&open, "probe_success"), value(&open, "probe_ip_protocol")), (Some(1.0), Some(4.0)));
        // A port nothing listens on (bound, then released).
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let shut = run(&clients, &probe(&format!("name = \"t\"\nmodule = \"tcp\"\ntarget = \"{closed}\"")), "n").await;
        assert_eq!(value(&shut, "probe_success"), Some(0.0));
        let local = run(&clients, &probe("name = \"d\"\nmodule = \"dns\"\ntarget = \"localhost\""), "n").await;
        assert_eq!(value(&local, "probe_success"), Some(1.0));
        assert!(value(&local, "probe_dns_answer_rrs").is_some_and(|n| n >= 1.0));
        // (A name that fails to resolve would ask a DNS server off this machine: tests
        // stay on loopback, so the failing case is left to the code's reading.)
    }

    #[test]
    fn bad_probes_are_refused_with_a_reason() {
        for (toml, says) in [
            ("name = \"x\"\nmodule = \"http\"\ntarget = \"example.com\"", "is a URL"),
            ("name = \"x\"\nmodule = \"tcp\"\ntarget = \"example.com\"", "host:port"),
            ("name = \"x\"\nmodule = \"http\"\ntarget = \"http://a\"\nfail_if_body_matches_regexp = [\"(\"]", "regex"),
            ("name = \"x\"\nmodule = \"http\"\ntarget = \"http://a\"\nmethod = \"G T\"", "HTTP method"),
        ] {
            let err = toml::from_str::<ProbeConfig>(toml)
                .expect("parses")
                .compile(Duration::from_secs(5), Duration::from_secs(2))
                .expect_err(toml);
            assert!(err.contains(says), "{toml}: {err}");
        }
    }

    /// A real TLS server (OpenSSL's `s_server`) whose certificate for 127.0.0.1, valid
    /// `days`, is signed by a CA of the test's own, on a free loopback port; killed when
    /// dropped. `cert` is the CA's certificate.
    struct TlsServer {
        child: std::process::Child,
        addr: std::net::SocketAddr,
        cert: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Drop for TlsServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    async fn tls_server(days: u32) -> Option<TlsServer> {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().expect("tmp");
        let at = |name: &str| dir.path().join(name).display().to_string();
        let (ca, ca_key, cert, key, csr, ext) =
            (at("ca.pem"), at("ca.key"), at("cert.pem"), at("key.pem"), at("leaf.csr"), at("leaf.ext"));
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").expect("ext");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let steps: [Vec<&str>; 3] = [
            [&["req", "-x509"][..], &ec, &["-subj", "/CN=test-ca", "-days", "3650", "-keyout", &ca_key, "-out", &ca]]
                .concat(),
            [&["req"][..], &ec, &["-subj", "/CN=probe-test", "-keyout", &key, "-out", &csr]].concat(),
            vec!["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-CAcreateserial", "-out", &cert],
        ];
        let days = days.to_string();
        for (i, step) in steps.iter().enumerate() {
            let mut command = Command::new("openssl");
            command.args(step).stderr(Stdio::null()).stdout(Stdio::null());
            if i == 2 {
                command.args(["-days", &days, "-extfile", &ext]);
            }
            let status = command.status().ok()?;
            assert!(status.success(), "openssl {step:?}");
        }
        let addr = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?;
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &addr.to_string(), "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = TlsServer { child, addr, cert: ca.into(), _dir: dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "s_server did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(server)
    }

    #[tokio::test]
    async fn https_probes_report_the_certificates_expiry_and_trust_only_what_they_are_told() {
        let server = tls_server(30).await.expect("openssl runs (apt-get install openssl; .ci/run installs it)");
        let clients = Clients::new().expect("clients");
        let target = format!("https://{}/", server.addr);
        let trusted = probe(&format!(
            "name = \"t\"\nmodule = \"http\"\ntarget = \"{target}\"\ntls_ca_file = \"{}\"",
            server.cert.display()
        ));
        let found = run(&clients, &trusted, "n").await;
        assert_eq!(value(&found, "probe_success"), Some(1.0), "{found:?}");
        assert_eq!(value(&found, "probe_http_ssl"), Some(1.0));
        let expiry = value(&found, "probe_ssl_earliest_cert_expiry").expect("expiry reported");
        let in_30_days = (hale_core::time::now_ms() / 1000) as f64 + 30.0 * 86_400.0;
        assert!((expiry - in_30_days).abs() < 3600.0, "{expiry} vs {in_30_days}");
        // Not trusted: the probe fails (a self-signed certificate is nobody's word).
        let untrusted =
            run(&clients, &probe(&format!("name = \"t\"\nmodule = \"http\"\ntarget = \"{target}\"")), "n").await;
        assert_eq!(value(&untrusted, "probe_success"), Some(0.0));
        // Told to skip verification: succeeds, and the expiry is still watched.
        let skip =
            probe(&format!("name = \"t\"\nmodule = \"http\"\ntarget = \"{target}\"\ninsecure_skip_verify = true"));
        let found = run(&clients, &skip, "n").await;
        assert_eq!(value(&found, "probe_success"), Some(1.0));
        assert_eq!(value(&found, "probe_ssl_earliest_cert_expiry"), Some(expiry));
    }
}
