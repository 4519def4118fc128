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
        Ok(Probe {
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
#[derive(Clone)]
pub struct Clients {
    follow: reqwest::Client,
    stay: reqwest::Client,
}

impl Clients {
    pub fn new() -> Result<Clients, reqwest::Error> {
        Ok(Clients {
            follow: reqwest::Client::builder().redirect(reqwest::redirect::Policy::limited(10)).build()?,
            stay: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?,
        })
    }
}

/// What one probe found: gauges by name, and whether it succeeded.
struct Found {
    success: bool,
    gauges: Vec<(&'static str, &'static str, f64)>,
}

async fn http(clients: &Clients, probe: &Probe) -> Found {
    let c = &probe.config;
    let client = if c.follow_redirects { &clients.follow } else { &clients.stay };
    let mut request = client.request(probe.method.clone(), &c.target).timeout(probe.timeout);
    for (name, value) in &c.headers {
        request = request.header(name, value);
    }
    if !c.body.is_empty() {
        request = request.body(c.body.clone());
    }
    let mut gauges = vec![("probe_http_ssl", "1 if the final answer came over TLS.", 0.0)];
    let Ok(response) = request.send().await else {
        gauges.push(("probe_http_status_code", "HTTP status of the answer (0 without one).", 0.0));
        return Found { success: false, gauges };
    };
    let status = response.status().as_u16();
    let final_url = response.url().clone();
    let redirected = final_url.as_str() != c.target;
    gauges[0].2 = if final_url.scheme() == "https" { 1.0 } else { 0.0 };
    gauges.push(("probe_http_status_code", "HTTP status of the answer (0 without one).", f64::from(status)));
    gauges.push(("probe_http_redirects", "Redirects followed.", if redirected { 1.0 } else { 0.0 }));
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
}
