//! `hale up`: the whole demo cluster on one machine. Turns the cluster topology into
//! process specs, supervises them, seeds the shop, starts the load generator, prints
//! where everything is, and stops it all on Ctrl-C or SIGTERM.

use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hale_core::api::GatewayReadiness;
use hale_core::{ClusterConfig, DEFAULT_CLUSTER_TOML, ProcessSpec, Role, ServiceKind};

use hale_agent::config::{AgentConfig, BatchConfig, ProcessConfig, QueueConfig, ScrapeConfig, ServiceTemplate};
use hale_agent::supervise::Supervisor;

/// No `Debug`: it holds the webhook secret.
#[derive(clap::Args)]
pub struct UpArgs {
    /// Run without the terminal dashboard (then Ctrl-C stops everything).
    #[arg(long)]
    pub headless: bool,
    /// Quitting the dashboard leaves the cluster running (Ctrl-C stops it).
    #[arg(long)]
    pub keep_running: bool,
    /// Number of nodes (loopback addresses) to spread replicas over.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Where every component keeps its data and logs.
    #[arg(long, default_value = ".hale")]
    pub data_dir: PathBuf,
    /// A cluster.toml to run instead of the embedded default.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// First three octets of the node addresses (default from the config: 127.0.1).
    #[arg(long)]
    pub ip_prefix: Option<String>,
    /// Address of the control plane (the gateway), default 127.0.0.1.
    #[arg(long)]
    pub control_ip: Option<IpAddr>,
    /// Added to every port, so a second cluster can run beside the first.
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Requests per second of background shop traffic; 0 turns it off.
    #[arg(long, default_value_t = 20)]
    pub load_rps: u32,
    /// Also send alert notifications to this webhook (repeatable; signed).
    #[arg(long = "alert-webhook", value_name = "URL")]
    pub alert_webhooks: Vec<String>,
    /// Healing policies to run instead of the embedded config/policies.yaml.
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// Where the healer escalates failed repairs (repeatable; signed).
    #[arg(long = "escalation-webhook", value_name = "URL")]
    pub escalation_webhooks: Vec<String>,
    /// The HMAC key webhooks are signed with; a random one is made when absent.
    #[arg(long, env = "HALE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Run each node on a host of its own — a network namespace with its own address — and
    /// the collector, healer and gateway on a control host, all wired to one switch that
    /// `hale chaos partition|heal|delay|loss` can break (root; Linux). Addresses default
    /// to 10.77.0.0/24, which exists only inside the namespaces.
    #[arg(long)]
    pub netns: bool,
    /// Run every component over HTTPS, Hale's own parts over mutual TLS: a CA in
    /// <data-dir>/certs (made once, then kept) signs a certificate per host at each start;
    /// the shop gateway asks shoppers for none. Commands given the same --data-dir
    /// (`hale tui`, `hale chaos`) find the CA and the `hale` client certificate there.
    #[arg(long)]
    pub tls: bool,
    /// Keep the demo's metrics in a Prometheus-compatible backend as well (VictoriaMetrics:
    /// http://127.0.0.1:8428): the collector forwards everything it stores to
    /// `<URL>/api/v1/write` and evaluates rules, SLOs and queries through `<URL>`'s query
    /// API, its own head keeping the last hour.
    #[arg(long, value_name = "URL")]
    pub backend: Option<String>,
    /// The share of the shop's requests traced end to end, 0 to 1 (default: the cluster
    /// file's `trace_sample_ratio`, 0.1); failed and slow requests are traced anyway.
    #[arg(long, value_name = "RATIO")]
    pub trace_sample_ratio: Option<f64>,
    /// Send no spans at all (the cluster file's `traces = false`): no replica or component
    /// starts a tracing pipeline.
    #[arg(long)]
    pub no_traces: bool,
}

/// The effective cluster: config file (or embedded default) with the flags applied.
pub fn cluster_from(args: &UpArgs) -> Result<ClusterConfig> {
    let (source, origin) = match &args.config {
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (DEFAULT_CLUSTER_TOML.to_string(), "embedded cluster.toml".to_string()),
    };
    let mut cluster = ClusterConfig::parse(&source).context(origin)?;
    if let Some(n) = args.nodes {
        cluster.set_node_count(n)?;
    }
    if args.netns {
        let prefix = args.ip_prefix.as_deref().unwrap_or(crate::netns::DEFAULT_PREFIX);
        cluster.set_ip_prefix(prefix)?;
        let control = match args.control_ip {
            Some(IpAddr::V4(ip)) => ip,
            Some(IpAddr::V6(ip)) => bail!("--control-ip {ip}: the lab is IPv4; give an address in the nodes' /24"),
            None => crate::netns::control_ip(prefix)?,
        };
        cluster.add_control_host(crate::netns::CONTROL, control)?;
    } else {
        if let Some(prefix) = &args.ip_prefix {
            cluster.set_ip_prefix(prefix)?;
        }
        if let Some(ip) = args.control_ip {
            cluster.set_control_ip(ip);
        }
    }
    cluster.add_port_offset(args.port_offset)?;
    cluster.tls |= args.tls;
    if let Some(ratio) = args.trace_sample_ratio {
        if !(0.0..=1.0).contains(&ratio) {
            bail!(
                "--trace-sample-ratio {ratio}: give a share from 0 (only failed and slow requests) to 1 (every request)"
            );
        }
        cluster.trace_sample_ratio = ratio;
    }
    cluster.traces &= !args.no_traces;
    Ok(cluster)
}

/// Where `hale up --tls` keeps its CA and the certificates it issued.
pub fn certs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("certs")
}

/// The certificate the command line's own clients show: `hale up` itself, its dashboard
/// and load, and `hale tui|chaos|status|silence` beside it.
pub const CLI_CERT: &str = "hale";
/// The client certificate the generated prometheus.yml scrapes with.
const PROMETHEUS_CERT: &str = "prometheus";

/// The CA (made at the first TLS start, kept after: what it signed stays trusted) and a
/// certificate for each component, issued again at every start so their addresses are
/// always the cluster's own (`--nodes`, `--netns`, `--port-offset` move them). A node's
/// certificate serves its agent and every replica on it; the gateway's node's serves
/// the gateway.
fn issue_certs(cluster: &ClusterConfig, data_dir: &Path) -> Result<()> {
    let dir = certs_dir(data_dir);
    if !dir.join("ca.pem").exists() {
        crate::certs::init(&dir, "Hale demo CA", false)?;
    }
    let ip = |addr: std::net::SocketAddr| addr.ip().to_string();
    let mut certs: Vec<(String, Vec<String>)> = vec![
        ("collector".into(), vec![ip(cluster.collector.listen)]),
        ("healer".into(), vec![ip(cluster.healer.listen)]),
        (CLI_CERT.into(), Vec::new()),
        (PROMETHEUS_CERT.into(), Vec::new()),
    ];
    for node in &cluster.nodes {
        let mut sans = vec![node.ip.to_string()];
        if node.name == *cluster.gateway.node.get_ref() {
            sans.push(ip(cluster.gateway.listen));
        }
        certs.push((node.name.clone(), sans));
    }
    for (name, mut sans) in certs {
        sans.push("localhost".into());
        crate::certs::issue(&dir, &name, &sans, 90).with_context(|| format!("issuing {name}'s certificate"))?;
    }
    Ok(())
}

/// The flags under which a component that `hale up --tls` issued the certificate `name`
/// calls the others: trusting the CA, showing its certificate.
fn client_tls_args(cluster: &ClusterConfig, data_dir: &Path, name: &str) -> Vec<String> {
    if !cluster.tls {
        return Vec::new();
    }
    let dir = certs_dir(data_dir);
    let path = |file: String| dir.join(file).display().to_string();
    vec![
        "--tls-ca".into(),
        path("ca.pem".into()),
        "--tls-client-cert".into(),
        path(format!("{name}.pem")),
        "--tls-client-key".into(),
        path(format!("{name}-key.pem")),
    ]
}

/// [`client_tls_args`], and the flags under which it serves with the same certificate —
/// requiring a client certificate the CA signed when `mutual` (every server of Hale's own
/// and of the shop but the gateway, which shoppers reach).
fn tls_args(cluster: &ClusterConfig, data_dir: &Path, name: &str, mutual: bool) -> Vec<String> {
    if !cluster.tls {
        return Vec::new();
    }
    let dir = certs_dir(data_dir);
    let path = |file: String| dir.join(file).display().to_string();
    let mut args =
        vec!["--tls-cert".into(), path(format!("{name}.pem")), "--tls-key".into(), path(format!("{name}-key.pem"))];
    if mutual {
        args.extend(["--tls-client-ca".into(), path("ca.pem".into())]);
    }
    args.extend(client_tls_args(cluster, data_dir, name));
    args
}

/// Ports new replicas started through an agent's actuator may take: above every port
/// the topology hands out.
const SPARE_PORTS: u16 = 100;
/// The shop's default alerting rules, written into the data dir for the collector.
const DEFAULT_RULES: &str = include_str!("../config/rules.yml");
/// The shop's default healing policies, likewise for the healer.
pub(crate) const DEFAULT_POLICIES: &str = include_str!("../config/policies.yaml");
/// The shop's default SLOs (Sloth specs), likewise.
const DEFAULT_SLOS: &str = include_str!("../config/slo.yaml");
/// Events an SLO alert window needs in the demo: its 5m window, scaled, holds a few
/// seconds of checkout traffic.
const DEMO_SLO_MIN_EVENTS: u64 = 5;

/// One agent config per node: a template per shop service, and the node's replicas.
pub fn agent_configs(cluster: &ClusterConfig, program: &Path, data_dir: &Path, config_file: &Path) -> Vec<AgentConfig> {
    let instances = cluster.instances();
    let gateway_url = cluster.url(cluster.gateway.listen);
    let primary_url =
        instances.iter().find(|i| i.service == ServiceKind::Catalog && i.role == Role::Primary).map(|i| i.url());
    let logs = data_dir.join("logs");
    let spare_from = cluster.first_port.saturating_add(instances.len() as u16 + 10);
    // A node's replicas serve with its certificate (TLS clusters); the gateway asks for none.
    let templates = |node: &str| -> Vec<ServiceTemplate> {
        ServiceKind::ALL
            .iter()
            .map(|kind| ServiceTemplate {
                managed: None,
                name: kind.to_string(),
                program: program.to_path_buf(),
                args: vec![
                    "shop".into(),
                    kind.to_string(),
                    "--config".into(),
                    config_file.display().to_string(),
                    "--instance".into(),
                    "{name}".into(),
                    "--listen".into(),
                    "{listen}".into(),
                    "--data-dir".into(),
                    data_dir.join("shop").display().to_string(),
                    "--log-dir".into(),
                    logs.display().to_string(),
                    "--gateway".into(),
                    gateway_url.clone(),
                ]
                .into_iter()
                .chain(plaintext_flags(cluster))
                .chain(tls_args(cluster, data_dir, node, *kind != ServiceKind::Gateway))
                .collect(),
                env: trace_env(cluster)
                    .into_iter()
                    .chain(
                        cluster
                            .traces
                            .then(|| ("OTEL_TRACES_SAMPLER_ARG".to_string(), cluster.trace_sample_ratio.to_string())),
                    )
                    .chain(
                        cluster
                            .trace_slow_ms(*kind)
                            .filter(|_| cluster.traces)
                            .map(|ms| ("HALE_TRACE_SLOW_MS".to_string(), ms.to_string())),
                    )
                    .collect(),
                log_file: Some(logs.join("{name}.log").display().to_string()),
                output_file: logs.join("{name}.out").display().to_string(),
                metrics_path: "/metrics".into(),
                health_path: "/healthz".into(),
                ready_path: "/readyz".into(),
                port_range: Some((spare_from, spare_from.saturating_add(SPARE_PORTS - 1))),
                tls: cluster.tls,
            })
            .collect()
    };
    cluster
        .nodes
        .iter()
        .map(|node| {
            let processes = instances
                .iter()
                .filter(|i| i.node == node.name)
                .map(|i| {
                    let mut extra_args = Vec::new();
                    if i.service == ServiceKind::Catalog {
                        extra_args.extend(["--role".to_string(), i.role.to_string()]);
                        if i.role == Role::Standby
                            && let Some(primary) = &primary_url
                        {
                            extra_args.extend(["--follow".to_string(), primary.clone()]);
                        }
                    }
                    ProcessConfig { name: i.name.clone(), service: i.service.to_string(), listen: i.listen, extra_args }
                })
                .collect();
            // The control node's agent also scrapes the collector and the healer, so their
            // own metrics (ingest, WAL, rules, notifications; repairs) are in the collector
            // for the dashboards, as a Prometheus scraping them would have them.
            let scrape = if node.name == *cluster.gateway.node.get_ref() {
                [("collector", cluster.collector.listen), ("healer", cluster.healer.listen)]
                    .map(|(name, listen)| ScrapeConfig {
                        service: name.into(),
                        instance: name.into(),
                        url: format!("{}/metrics", cluster.url(listen)),
                    })
                    .to_vec()
            } else {
                Vec::new()
            };
            AgentConfig {
                node: node.name.clone(),
                listen: cluster.agent_listen(node),
                data_dir: data_dir.join("agent").join(&node.name),
                remote_write: vec![format!("{}/api/v1/write", cluster.url(cluster.collector.listen))],
                logs_endpoint: Some(format!("{}/v1/logs", cluster.url(cluster.collector.listen))),
                logs_compression: Default::default(),
                token: None,
                token_file: None,
                ingest_token: None,
                ingest_token_file: None,
                // The demo cluster watches closely: scrapes every second, probes twice a
                // second; the gateway's node twice a second, as the gateway's word on the
                // catalog primary is what a failover starts from.
                scrape_interval_ms: if node.name == *cluster.gateway.node.get_ref() { 500 } else { 1000 },
                probe_interval_ms: 500,
                timeout_ms: 400,
                metrics_queue: QueueConfig::metrics(),
                logs_queue: QueueConfig::logs(),
                batch: BatchConfig::default(),
                services: templates(&node.name),
                processes,
                logs: Vec::new(),
                scrape,
                scrape_configs: Vec::new(),
                probes: Vec::new(),
                textfile_dir: None,
            }
        })
        .collect()
}

/// `--insecure-plaintext` for every child when the cluster's addresses are not all
/// loopback (`--netns`, or a cluster.toml on real addresses): `hale up` speaks plain HTTP,
/// and a server beyond loopback otherwise takes no writes.
fn plaintext_flags(cluster: &ClusterConfig) -> Option<String> {
    if cluster.tls {
        return None;
    }
    let loopback = cluster.nodes.iter().all(|n| n.ip.is_loopback())
        && [cluster.gateway.listen, cluster.collector.listen, cluster.healer.listen]
            .iter()
            .all(|a| a.ip().is_loopback());
    (!loopback).then(|| "--insecure-plaintext".to_string())
}

/// Refuses to start when an address is taken, naming the way out.
fn check_addresses_free(cluster: &ClusterConfig) -> Result<()> {
    let agents = cluster.nodes.iter().map(|n| (format!("agent of {}", n.name), cluster.agent_listen(n)));
    let replicas = cluster.instances().into_iter().map(|i| (format!("{} ({})", i.name, i.service), i.listen));
    let collector = std::iter::once(("the collector".to_string(), cluster.collector.listen));
    let healer = std::iter::once(("the healer".to_string(), cluster.healer.listen));
    for (what, addr) in replicas.chain(agents).chain(collector).chain(healer) {
        if let Err(e) = TcpListener::bind(addr) {
            bail!(
                "{what} cannot listen on {addr}: {e}.\n  Is another `hale up` running? Stop it, or move this cluster with \
                 --port-offset 1000 (and --ip-prefix 127.0.2 --control-ip 127.0.2.254)."
            );
        }
    }
    Ok(())
}

/// Writes a file only its owner may read (0600): secrets and the config holding them.
fn write_private(path: &Path, text: &str) -> Result<()> {
    hale_fs::write_private(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// Where a data dir keeps the secrets `hale up` generated for it.
const SECRETS_FILE: &str = "secrets.toml";

/// Settles the cluster's secrets: the config file's own `[secrets]` when it has them;
/// else the ones this data dir was given at its first start (`secrets.toml`, 0600);
/// else fresh random ones, stored there. The repository's files carry no secret, so no
/// two data dirs share one. The `orders` client gets the hash of its secret unless the
/// config file gave both.
pub fn settle_secrets(cluster: &mut ClusterConfig, data_dir: &Path) -> Result<()> {
    let path = data_dir.join(SECRETS_FILE);
    let from_file = !cluster.secrets.generated;
    if !from_file {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let kept: hale_core::Secrets = toml::from_str(&text).with_context(|| {
                    format!("reading {}: fix it, or remove it to give this data dir new secrets", path.display())
                })?;
                cluster.secrets = hale_core::Secrets { generated: true, ..kept };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let text = toml::to_string(&cluster.secrets).context("encoding the secrets")?;
                write_private(&path, &text)?;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    for client in cluster.clients.iter_mut().filter(|c| c.client_id == "orders") {
        if !from_file || client.secret_hash.is_none() {
            let hash = hale_shop::auth::hash_secret(&cluster.secrets.orders_client_secret)
                .map_err(anyhow::Error::msg)
                .context("hashing the orders client secret")?;
            client.secret_hash = Some(hash);
        }
    }
    Ok(())
}

/// Creates `dir` (and its parents) readable by its owner only: a data dir holds
/// databases, logs and secrets.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    hale_fs::create_private_dir(dir).with_context(|| format!("creating data dir {} (0700)", dir.display()))
}

/// Where `hale up` keeps what its children read and write: all in the data dir.
struct Layout {
    /// The `hale` executable every child runs.
    program: PathBuf,
    data_dir: PathBuf,
    /// The network lab the nodes run in (`--netns`).
    lab: Option<hale_netlab::LabFile>,
}

impl Layout {
    fn file(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }
    /// The effective cluster.toml: children read their secrets from it, never from their
    /// command line.
    fn config_file(&self) -> PathBuf {
        self.file("cluster.toml")
    }
    fn rules_file(&self) -> PathBuf {
        self.file("rules.yml")
    }
    fn slo_file(&self) -> PathBuf {
        self.file("slo.yaml")
    }
    fn policies_file(&self) -> PathBuf {
        self.file("policies.yaml")
    }
    fn agent_file(&self, node: &str) -> PathBuf {
        self.file(&format!("agent-{node}.toml"))
    }
    /// Where a child's stdout and stderr go.
    fn output(&self, name: &str) -> PathBuf {
        self.data_dir.join("logs").join(format!("{name}.out"))
    }
}

/// A process `hale up` supervises itself (the agents supervise the replicas): `hale
/// <args>` on the control node, its output in `logs/<name>.out`.
/// OpenTelemetry's variables that send a process's spans to the collector, with the token
/// that writes spans only; none when the cluster sends no traces.
fn trace_env(cluster: &ClusterConfig) -> Vec<(String, String)> {
    if !cluster.traces {
        return Vec::new();
    }
    vec![
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".to_string(),
            format!("{}/v1/traces", cluster.url(cluster.collector.listen)),
        ),
        ("OTEL_EXPORTER_OTLP_HEADERS".to_string(), format!("authorization=Bearer%20{}", cluster.secrets.traces_token)),
    ]
}

fn own_process(
    cluster: &ClusterConfig,
    layout: &Layout,
    (name, service): (&str, &str),
    listen: std::net::SocketAddr,
    args: Vec<String>,
    env: Vec<(String, String)>,
) -> ProcessSpec {
    ProcessSpec {
        name: name.into(),
        service: service.into(),
        node: cluster.gateway.node.get_ref().clone(),
        listen,
        program: layout.program.clone(),
        args,
        env,
        output_file: layout.output(name),
    }
}

/// `hale <sub> --flag value …`.
fn command<const N: usize>(sub: &str, flags: [(&str, String); N]) -> impl Iterator<Item = String> {
    std::iter::once(sub.to_string()).chain(flags.into_iter().flat_map(|(flag, value)| [flag.to_string(), value]))
}

/// `--flag value` for each value.
fn repeated(flag: &str, values: &[String]) -> impl Iterator<Item = String> {
    values.iter().flat_map(move |v| [flag.to_string(), v.clone()])
}

/// The collector: the demo's rules and SLOs, the healer and `alert_webhooks` notified.
/// The fewest events an SLO window needs before it may alert: a handful at the demo's
/// compressed pace, more in real time.
fn slo_min_events(cluster: &ClusterConfig) -> u64 {
    if cluster.time_scale < 1.0 { DEMO_SLO_MIN_EVENTS } else { 10 }
}

fn collector_spec(
    cluster: &ClusterConfig,
    layout: &Layout,
    alert_webhooks: &[String],
    webhook_secret: &str,
    backend: Option<&str>,
) -> ProcessSpec {
    let min_events = slo_min_events(cluster);
    let healer_hook = format!("{}/hooks/alertmanager", cluster.url(cluster.healer.listen));
    // Demo pace: alerts evaluate every second and notify at once, so a fault shows within
    // seconds; production configs keep Prometheus's and Alertmanager's pace.
    let args = command(
        "collector",
        [
            ("--listen", cluster.collector.listen.to_string()),
            ("--data-dir", layout.file("collector").display().to_string()),
            ("--rules", layout.rules_file().display().to_string()),
            ("--evaluation-interval", "1s".into()),
            ("--group-wait", "0s".into()),
            ("--group-interval", "1s".into()),
            ("--repeat-interval", "5m".into()),
            ("--slo", layout.slo_file().display().to_string()),
            ("--slo-time-scale", cluster.time_scale.to_string()),
            ("--slo-min-events", min_events.to_string()),
        ],
    )
    // The healer hears every alert; the user's receivers too.
    .chain(repeated("--alert-webhook", &[healer_hook]))
    .chain(repeated("--alert-webhook", alert_webhooks))
    .chain(plaintext_flags(cluster))
    .chain(tls_args(cluster, &layout.data_dir, "collector", true))
    .chain(backend.into_iter().flat_map(|url| {
        let url = url.trim_end_matches('/');
        [
            "--forward".to_string(),
            format!("{url}/api/v1/write"),
            "--query-url".into(),
            url.to_string(),
            "--retention".into(),
            "1h".into(),
        ]
    }))
    .collect();
    let env = vec![
        ("HALE_INGEST_TOKEN".into(), cluster.secrets.ingest_token.clone()),
        ("HALE_TRACES_TOKEN".into(), cluster.secrets.traces_token.clone()),
        ("HALE_ADMIN_TOKEN".into(), cluster.secrets.admin_token.clone()),
        ("HALE_WEBHOOK_SECRET".into(), webhook_secret.to_string()),
    ]
    .into_iter()
    .chain(trace_env(cluster))
    .collect();
    own_process(cluster, layout, ("collector", "collector"), cluster.collector.listen, args, env)
}

/// The healer: the demo's policies over the cluster's agents, escalating to
/// `escalation_webhooks`.
fn healer_spec(
    cluster: &ClusterConfig,
    layout: &Layout,
    escalation_webhooks: &[String],
    webhook_secret: &str,
) -> ProcessSpec {
    let args = command(
        "healer",
        [
            ("--listen", cluster.healer.listen.to_string()),
            ("--data-dir", layout.file("healer").display().to_string()),
            ("--policies", layout.policies_file().display().to_string()),
            ("--inventory", layout.file("healer.toml").display().to_string()),
            ("--collector", cluster.url(cluster.collector.listen)),
        ],
    )
    .chain(repeated("--escalation-webhook", escalation_webhooks))
    .chain(plaintext_flags(cluster))
    .chain(tls_args(cluster, &layout.data_dir, "healer", true))
    .collect();
    let env = vec![
        ("HALE_WEBHOOK_SECRET".into(), webhook_secret.to_string()),
        ("HALE_HEALER_TOKEN".into(), cluster.secrets.admin_token.clone()),
        ("HALE_AGENT_TOKEN".into(), cluster.secrets.agent_token.clone()),
        ("HALE_ADMIN_TOKEN".into(), cluster.secrets.admin_token.clone()),
    ]
    .into_iter()
    .chain(trace_env(cluster))
    .collect();
    own_process(cluster, layout, ("healer", "healer"), cluster.healer.listen, args, env)
}

/// A node's agent, reading its config from the data dir, on its node.
fn agent_spec(cluster: &ClusterConfig, layout: &Layout, agent: &AgentConfig) -> ProcessSpec {
    let name = format!("agent-{}", agent.node);
    let args = command("agent", [("--config", layout.agent_file(&agent.node).display().to_string())])
        .chain(plaintext_flags(cluster))
        .chain(tls_args(cluster, &layout.data_dir, &agent.node, true))
        .collect();
    let env = [
        ("HALE_AGENT_TOKEN".into(), cluster.secrets.agent_token.clone()),
        ("HALE_INGEST_TOKEN".into(), cluster.secrets.ingest_token.clone()),
    ]
    .into_iter()
    .chain(trace_env(cluster))
    .collect();
    let spec = own_process(cluster, layout, (&name, "agent"), agent.listen, args, env);
    // In a lab, the agent (and every replica it starts) lives on its node's host:
    // `ip netns exec` joins the namespace and execs, so the PID stays the agent's.
    let host = layout.lab.as_ref().and_then(|lab| lab.host(&agent.node));
    let (program, args) = match host {
        Some(host) => (
            PathBuf::from("ip"),
            ["netns", "exec", &host.namespace, &spec.program.display().to_string()]
                .map(String::from)
                .into_iter()
                .chain(spec.args)
                .collect(),
        ),
        None => (spec.program, spec.args),
    };
    ProcessSpec { node: agent.node.clone(), program, args, ..spec }
}

/// The background shop traffic: `rps` requests a second through the gateway as the
/// `shopper` demo login (else the first), until stopped.
fn load_spec(cluster: &ClusterConfig, layout: &Layout, rps: u32) -> ProcessSpec {
    let (user, password) = cluster
        .demo_logins
        .iter()
        .find(|l| l.username == "shopper")
        .or(cluster.demo_logins.first())
        .map(|l| (l.username.clone(), l.password.expose().clone()))
        .unwrap_or_default();
    let gateway = cluster.url(cluster.gateway.listen);
    let args = command("load", [("--gateway", gateway), ("--rps", rps.to_string()), ("--duration", "0".into())])
        .chain(["--no-progress".to_string(), "--username".into(), user])
        .chain(client_tls_args(cluster, &layout.data_dir, CLI_CERT))
        .collect();
    let env = vec![("HALE_LOAD_PASSWORD".into(), password)];
    own_process(cluster, layout, ("load", "load"), cluster.gateway.listen, args, env)
}

/// `hale up`.
pub async fn run(args: UpArgs, client_tls: hale_client::tls::ClientTlsFlags) -> Result<()> {
    if args.headless {
        crate::logging::to_stderr("warn");
    } else {
        // The dashboard owns the screen: warnings go to a file beside the others.
        crate::logging::to_file("warn", &args.data_dir.join("logs").join("hale-up.log"))?;
    }
    let (cluster, layout, webhook_secret) = prepare(&args)?;
    // This process calls the cluster too (readiness, seeding, the dashboard).
    let client_tls = match cluster.tls {
        true => client_tls.or_from_dir(&certs_dir(&layout.data_dir), CLI_CERT),
        false => client_tls,
    };
    hale_client::tls::install(&client_tls)?;
    let supervisor = Supervisor::new(Duration::from_secs(10));
    let shutdown = crate::shutdown::requested();
    tokio::pin!(shutdown);
    let attended = async {
        start(&supervisor, &cluster, &layout, &args, &webhook_secret)?;
        // Prometheus's view of the shop follows what the agents run; it stops with us.
        let files = crate::prometheus_files::PrometheusFiles { dir: crate::prometheus_files::dir_of(&layout.data_dir) };
        let following = tokio::spawn(files.follow(cluster.clone()));
        let attended = attend(&supervisor, &cluster, &layout, &args, shutdown.as_mut()).await;
        following.abort();
        attended
    }
    .await;
    match attended {
        Ok(true) => {
            stop(&supervisor, &cluster, &layout.data_dir).await;
            Ok(())
        }
        // Stopped before the shop was up: nothing to report.
        Ok(false) => {
            supervisor.shutdown().await;
            Ok(())
        }
        Err(e) => {
            supervisor.shutdown().await;
            Err(e)
        }
    }
}

/// The cluster with its secrets settled, and the files its children read written into
/// the data dir; the webhook secret (given, or a random one).
fn prepare(args: &UpArgs) -> Result<(ClusterConfig, Layout, String)> {
    // Receivers verify with the same secret; it stays in a 0600 file, never on a command line.
    if args.webhook_secret.as_deref().is_some_and(str::is_empty) {
        bail!(
            "--webhook-secret (or HALE_WEBHOOK_SECRET) is empty: give it a long random value, or leave it out for a random one"
        );
    }
    let mut cluster = cluster_from(args)?;
    create_private_dir(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize().with_context(|| format!("finding {}", args.data_dir.display()))?;
    settle_secrets(&mut cluster, &data_dir)?;
    if cluster.tls {
        issue_certs(&cluster, &data_dir)?;
    }
    let lab = if args.netns {
        // Fresh namespaces: nothing else listens there.
        Some(hale_netlab::LabFile::read(&crate::netns::lab_dir(&data_dir))?.context("the network lab is gone")?)
    } else {
        check_addresses_free(&cluster)?;
        None
    };
    let program = std::env::current_exe().context("finding the hale executable")?;
    let layout = Layout { program, data_dir, lab };
    write_private(&layout.config_file(), &cluster.to_toml())?;
    let policies = match &args.policies {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => DEFAULT_POLICIES.to_string(),
    };
    let parsed = hale_healer::policy::PolicyFile::parse(&policies).context("policies")?;
    // The healer's inventory: the demo's services, where they run, through what.
    let inventory = hale_healer::inventory::Inventory::of_cluster(&cluster);
    hale_healer::executor::check_policies(&parsed, &inventory).map_err(|e| anyhow::anyhow!("policies: {e}"))?;
    write_private(&layout.file("healer.toml"), &inventory.to_toml())?;
    for (path, text) in
        [(layout.rules_file(), DEFAULT_RULES), (layout.slo_file(), DEFAULT_SLOS), (layout.policies_file(), &policies)]
    {
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let options = hale_collector::slo::Options { time_scale: cluster.time_scale, min_events: slo_min_events(&cluster) };
    let slo_rules = hale_collector::slo::load(&layout.slo_file(), options).context("the SLOs")?.rules;
    crate::prometheus_files::PrometheusFiles { dir: crate::prometheus_files::dir_of(&layout.data_dir) }.write_all(
        &cluster,
        DEFAULT_RULES,
        &slo_rules,
    )?;
    let webhook_secret = args.webhook_secret.clone().unwrap_or_else(hale_core::auth::random_token);
    write_private(&layout.file("webhook-secret"), &webhook_secret)?;
    Ok((cluster, layout, webhook_secret))
}

/// Starts the collector, the healer and each node's agent (which start that node's
/// replicas), with each agent's config written beside the others.
fn start(
    supervisor: &Supervisor,
    cluster: &ClusterConfig,
    layout: &Layout,
    args: &UpArgs,
    webhook_secret: &str,
) -> Result<()> {
    let agents = agent_configs(cluster, &layout.program, &layout.data_dir, &layout.config_file());
    for agent in &agents {
        write_private(&layout.agent_file(&agent.node), &agent.to_toml())?;
    }
    println!(
        "hale: starting {} agents and {} shop replicas (data in {})",
        agents.len(),
        agents.iter().map(|a| a.processes.len()).sum::<usize>(),
        layout.data_dir.display()
    );
    let own = [
        collector_spec(cluster, layout, &args.alert_webhooks, webhook_secret, args.backend.as_deref()),
        healer_spec(cluster, layout, &args.escalation_webhooks, webhook_secret),
    ];
    for spec in own.into_iter().chain(agents.iter().map(|agent| agent_spec(cluster, layout, agent))) {
        let name = spec.name.clone();
        supervisor.start(spec).with_context(|| format!("starting {name}"))?;
    }
    Ok(())
}

/// Waits for the shop, seeds it and starts the load; then shows the dashboard (or the
/// banner, headless) until it is time to stop. `false`: interrupted before the shop was
/// ready.
async fn attend(
    supervisor: &Supervisor,
    cluster: &ClusterConfig,
    layout: &Layout,
    args: &UpArgs,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<bool> {
    let gateway = cluster.url(cluster.gateway.listen);
    let data_dir = &layout.data_dir;
    tokio::select! {
        ready = wait_ready(&gateway, Duration::from_secs(60)) => ready.with_context(|| {
            format!("the shop did not become ready; see the logs in {}", data_dir.join("logs").display())
        })?,
        _ = &mut shutdown => return Ok(false),
    }
    if let Err(e) = crate::seed::seed_if_empty(&gateway, cluster).await {
        eprintln!("hale: seeding the catalog failed: {e:#}");
    }
    if args.load_rps > 0 {
        supervisor.start(load_spec(cluster, layout, args.load_rps)).context("starting the load")?;
    }
    let banner = || print_banner(cluster, &gateway, data_dir, args.load_rps);
    if args.headless {
        banner();
        (&mut shutdown).await;
        return Ok(true);
    }
    let endpoints = crate::dashboard::endpoints_of(cluster);
    let actuator = std::sync::Arc::new(crate::dashboard::actuator(endpoints.clone(), Some(cluster), data_dir));
    let options = hale_tui::Options {
        endpoints,
        readonly: false,
        chaos: true,
        owns_cluster: !args.keep_running,
        refresh: Duration::from_secs(1),
        info: Some(crate::dashboard::info_of(cluster, data_dir, Some(args.load_rps))),
    };
    if let Err(e) = hale_tui::run(options, actuator, &mut shutdown).await {
        eprintln!("hale: the dashboard failed ({e}); the cluster keeps running headless, Ctrl-C stops it");
        banner();
        (&mut shutdown).await;
    } else if args.keep_running {
        banner();
        println!(
            "  the dashboard closed; the cluster keeps running (`hale tui --data-dir {}` opens it again)",
            data_dir.display()
        );
        (&mut shutdown).await;
    }
    Ok(true)
}

/// Stops everything, the agents first, and says what ran and where the data stays.
async fn stop(supervisor: &Supervisor, cluster: &ClusterConfig, data_dir: &Path) {
    println!("\nhale: stopping the cluster…");
    let stopping = Instant::now();
    // The replicas' restarts are their agents' to count (this supervisor only sees the
    // agents, the collector, the healer and the load): asked before they stop.
    let replicas = replica_restarts(cluster).await;
    let status = supervisor.list();
    let own_restarts: u64 = status.iter().map(|s| s.restarts).sum();
    // The agents first, while the collector still takes their last batch: the staleness
    // markers that end their replicas' series, so a restarted cluster never counts a
    // replica of this run as alive.
    let agents = status.iter().filter(|p| p.service == "agent").map(|p| supervisor.stop(&p.name));
    for result in futures::future::join_all(agents).await {
        if let Err(e) = result {
            tracing::warn!(error = %e, "stopping an agent");
        }
    }
    supervisor.shutdown().await;
    println!("{}", stopped_line(status.len(), &replicas, own_restarts, stopping.elapsed()));
    println!(
        "hale: the data stays in {} (logs: {}, repairs: {}); `hale up --data-dir {0}` starts the cluster again with \
         the same secrets",
        data_dir.display(),
        data_dir.join("logs").display(),
        data_dir.join("healer").join("audit.jsonl").display()
    );
}

/// What the node agents said about their replicas just before the stop.
#[derive(Debug, Default, PartialEq)]
struct ReplicaCount {
    replicas: usize,
    restarts: u64,
    /// Nodes whose agent did not answer (frozen by `chaos node-down`, or dead).
    silent: Vec<String>,
}

/// Asks every node agent for its replicas and their restarts (crashes restarted and
/// restarts on request, the healer's included), briefly: a frozen node must not hold up
/// the stop.
async fn replica_restarts(cluster: &ClusterConfig) -> ReplicaCount {
    let mut asks = tokio::task::JoinSet::new();
    for node in &cluster.nodes {
        let agent =
            hale_client::Agent::with_timeout(&cluster.url(cluster.agent_listen(node)), Duration::from_millis(1500));
        let name = node.name.clone();
        asks.spawn(async move {
            let list = match agent {
                Ok(agent) => agent.processes().await.ok(),
                Err(_) => None,
            };
            (name, list)
        });
    }
    let mut count = ReplicaCount::default();
    while let Some(Ok((node, list))) = asks.join_next().await {
        match list {
            Some(list) => {
                count.replicas += list.processes.len();
                count.restarts += list.processes.iter().map(|p| p.restarts).sum::<u64>();
            }
            None => count.silent.push(node),
        }
    }
    count.silent.sort();
    count
}

/// The last line of a run: what stopped, and how often things were restarted on the way.
fn stopped_line(own: usize, replicas: &ReplicaCount, own_restarts: u64, took: Duration) -> String {
    let silent = if replicas.silent.is_empty() {
        String::new()
    } else {
        format!(" ({} did not answer: not counted)", replicas.silent.join(", "))
    };
    format!(
        "hale: stopped {own} of Hale's processes and {} replicas in {:.1}s; during the run replicas were restarted {} \
         times{silent}, Hale's own processes {own_restarts} times",
        replicas.replicas,
        took.as_secs_f64(),
        replicas.restarts,
    )
}

fn print_banner(cluster: &ClusterConfig, gateway: &str, data_dir: &Path, load_rps: u32) {
    println!("\nHale demo cluster is up.\n");
    println!("  shop gateway   {gateway}");
    println!(
        "  collector      {}  (Prometheus API: /api/v1/query, /api/v1/alerts; SLOs: /api/v1/slos; /metrics)",
        cluster.url(cluster.collector.listen)
    );
    println!(
        "  healer         {}  (actions: /api/v1/actions; audit: {})",
        cluster.url(cluster.healer.listen),
        data_dir.join("healer").join("audit.jsonl").display()
    );
    for instance in cluster.instances().iter().filter(|i| i.service != ServiceKind::Gateway) {
        let role =
            if instance.service == ServiceKind::Catalog { format!(" ({})", instance.role) } else { String::new() };
        println!("  {:<14} {}  on {}{role}", instance.name, instance.url(), instance.node);
    }
    for node in &cluster.nodes {
        println!(
            "  agent {:<8} {}  (processes: /api/v1/processes, metrics: /metrics)",
            node.name,
            cluster.url(cluster.agent_listen(node))
        );
    }
    println!("\n  demo logins:");
    for login in &cluster.demo_logins {
        println!("    {} / {}", login.username, login.password.expose());
    }
    println!("\n  try:");
    // Over TLS, curl trusts the demo CA; Hale's own servers also want the `hale` certificate.
    let certs = certs_dir(data_dir);
    let (ca, own) = if cluster.tls {
        let cert = |f: &str| certs.join(f).display().to_string();
        (
            format!(" --cacert {}", cert("ca.pem")),
            format!(" --cacert {} --cert {} --key {}", cert("ca.pem"), cert("hale.pem"), cert("hale-key.pem")),
        )
    } else {
        (String::new(), String::new())
    };
    println!(
        "    curl -s{ca} -d grant_type=password -d username=shopper -d password=hale-shopper {gateway}/oauth/token"
    );
    println!("    curl -s{ca} '{gateway}/api/search?q=lamp'");
    println!("    curl -s{own} '{}/api/v1/alerts'", cluster.url(cluster.collector.listen));
    println!("\n  logs: {}", data_dir.join("logs").display());
    if load_rps > 0 {
        println!("  load: {load_rps} requests/s of browse, search and buy traffic");
    }
    println!("\n  Ctrl-C stops everything.");
}

/// Waits until the gateway is ready and so is the catalog primary behind it: seeding
/// writes.
async fn wait_ready(gateway: &str, limit: Duration) -> Result<()> {
    let client = hale_client::tls::builder().timeout(Duration::from_millis(500)).build()?;
    let deadline = Instant::now() + limit;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match client.get(format!("{gateway}/readyz")).send().await {
            Ok(r) if r.status().is_success() => match r.json::<GatewayReadiness>().await {
                Ok(ready) if ready.catalog_primary.ready => return Ok(()),
                Ok(ready) => {
                    let primary = ready.catalog_primary.instance.unwrap_or_else(|| "none".into());
                    last = format!(
                        "the catalog primary ({primary}) is not ready yet; ready replicas: {:?}",
                        ready.ready_replicas
                    );
                }
                Err(e) => last = format!("its readiness is not the gateway's: {e}"),
            },
            Ok(r) => last = r.text().await.unwrap_or_default(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("gateway not ready after {}s: {last}", limit.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_data_dir_gets_its_own_secrets_and_keeps_them() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tmp");
        let settle = |dir: &str| {
            let dir = root.path().join(dir);
            create_private_dir(&dir).expect("dir");
            let mut cluster = ClusterConfig::parse(DEFAULT_CLUSTER_TOML).expect("config");
            settle_secrets(&mut cluster, &dir).expect("secrets");
            cluster
        };
        let first = settle("a");
        let again = settle("a");
        let other = settle("b");
        assert!(first.secrets == again.secrets, "a restart of the same data dir keeps its secrets");
        for (x, y) in [
            (&first.secrets.jwt_secret, &other.secrets.jwt_secret),
            (&first.secrets.encryption_key, &other.secrets.encryption_key),
            (&first.secrets.admin_token, &other.secrets.admin_token),
            (&first.secrets.agent_token, &other.secrets.agent_token),
            (&first.secrets.ingest_token, &other.secrets.ingest_token),
            (&first.secrets.orders_client_secret, &other.secrets.orders_client_secret),
        ] {
            assert_ne!(x, y, "two data dirs never share a secret");
        }
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&root.path().join("a").join(SECRETS_FILE)), 0o600);
        assert_eq!(mode(&root.path().join("a")), 0o700);
        let hash = first.clients.iter().find(|c| c.client_id == "orders").and_then(|c| c.secret_hash.clone());
        assert!(hash.is_some_and(|h| h.starts_with("$argon2")), "the orders client can log in with its new secret");
    }

    #[test]
    fn the_repository_carries_no_usable_secret() {
        let committed = ClusterConfig::parse(DEFAULT_CLUSTER_TOML).expect("config");
        assert!(committed.secrets.generated, "config/cluster.toml must not have a [secrets] table");
        assert!(committed.clients.iter().all(|c| c.secret_hash.is_none()), "nor a client secret's hash");
        for word in ["jwt_secret", "encryption_key", "admin_token", "agent_token", "ingest_token", "client_secret"] {
            assert!(
                !DEFAULT_CLUSTER_TOML.lines().any(|l| l.trim_start().starts_with(word)),
                "config/cluster.toml sets {word}"
            );
        }
    }

    /// Issue #12, finding 17: the README's fixed addresses (`hale up` with no flags) are
    /// the ones `hale up` prints: each `http://IP:PORT` with the instance named on its
    /// line, and the node agents on `<node-ip>:9100`.
    #[test]
    fn the_readmes_addresses_are_the_ones_hale_up_prints() {
        let cluster = ClusterConfig::parse(DEFAULT_CLUSTER_TOML).expect("config");
        let readme = include_str!("../README.md");
        let instances = cluster.instances();
        let mut checked = 0;
        // The examples name their replica in a comment at most three lines above.
        let lines: Vec<&str> = readme.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            for url in line.split_whitespace().filter(|w| w.starts_with("http://127.0.1.")) {
                let addr = url.trim_start_matches("http://").split('/').next().unwrap_or_default();
                let context = lines[i.saturating_sub(3)..=i].join(" ");
                if addr.ends_with(":9100") {
                    let known = cluster.nodes.iter().any(|n| cluster.agent_listen(n).to_string() == addr);
                    assert!(known, "README line {}: {addr} is no node agent", i + 1);
                    checked += 1;
                    continue;
                }
                let instance = instances.iter().find(|x| x.url().trim_start_matches("http://") == addr);
                let instance = instance.unwrap_or_else(|| panic!("README line {}: no replica on {addr}", i + 1));
                let named = context.contains(&instance.name)
                    || (instance.service == ServiceKind::Catalog
                        && context.contains(&format!("{}", instance.role))
                        && context.contains("catalog"));
                assert!(named, "README line {}: {addr} is {}, not what the text says: {context}", i + 1, instance.name);
                checked += 1;
            }
        }
        assert!(checked >= 3, "the README's examples were found ({checked})");
        assert!(readme.contains(&format!("`{}`", cluster.gateway.listen)), "the gateway's address");
        assert!(readme.contains(&format!("127.0.0.1:{}", cluster.collector.listen.port())));
        assert!(readme.contains(&format!("127.0.0.1:{}", cluster.healer.listen.port())));
    }

    /// The default cluster with its secrets settled, laid out in `/d`.
    fn demo() -> (ClusterConfig, Layout) {
        let cluster = ClusterConfig::parse(DEFAULT_CLUSTER_TOML).expect("config");
        (cluster, Layout { program: PathBuf::from("/bin/hale"), data_dir: PathBuf::from("/d"), lab: None })
    }

    /// A child's secrets are in its environment, never on its command line (where `ps`
    /// shows them to every user).
    fn secrets_only_in_env(spec: &ProcessSpec, cluster: &ClusterConfig, webhook_secret: &str) {
        let s = &cluster.secrets;
        for secret in [&s.jwt_secret, &s.admin_token, &s.agent_token, &s.ingest_token, &s.orders_client_secret] {
            assert!(!spec.args.contains(secret), "{}: a secret on the command line", spec.name);
        }
        assert!(
            !spec.args.iter().any(|a| a == webhook_secret),
            "{}: the webhook secret on the command line",
            spec.name
        );
        assert_eq!(spec.program, PathBuf::from("/bin/hale"));
        assert_eq!(spec.output_file, PathBuf::from(format!("/d/logs/{}.out", spec.name)));
    }

    fn env<'a>(spec: &'a ProcessSpec, key: &str) -> Option<&'a str> {
        spec.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn flag_values<'a>(spec: &'a ProcessSpec, flag: &str) -> Vec<&'a str> {
        spec.args.windows(2).filter(|w| w[0] == flag).map(|w| w[1].as_str()).collect()
    }

    #[test]
    fn the_collector_notifies_the_healer_and_the_users_hooks_at_demo_pace() {
        let (cluster, layout) = demo();
        let spec = collector_spec(&cluster, &layout, &["http://me/hook".into()], "whsec", None);
        assert_eq!((spec.name.as_str(), spec.listen), ("collector", cluster.collector.listen));
        assert_eq!(spec.args[0], "collector");
        let healer_hook = format!("http://{}/hooks/alertmanager", cluster.healer.listen);
        assert_eq!(flag_values(&spec, "--alert-webhook"), [healer_hook.as_str(), "http://me/hook"]);
        assert_eq!(flag_values(&spec, "--rules"), ["/d/rules.yml"]);
        assert_eq!(flag_values(&spec, "--slo"), ["/d/slo.yaml"]);
        assert_eq!(flag_values(&spec, "--slo-time-scale"), [cluster.time_scale.to_string()]);
        assert_eq!(flag_values(&spec, "--slo-min-events"), [DEMO_SLO_MIN_EVENTS.to_string()], "the demo's time scale");
        assert_eq!(flag_values(&spec, "--evaluation-interval"), ["1s"]);
        assert_eq!(env(&spec, "HALE_WEBHOOK_SECRET"), Some("whsec"));
        assert_eq!(env(&spec, "HALE_INGEST_TOKEN"), Some(cluster.secrets.ingest_token.as_str()));
        assert_eq!(env(&spec, "HALE_ADMIN_TOKEN"), Some(cluster.secrets.admin_token.as_str()));
        secrets_only_in_env(&spec, &cluster, "whsec");
    }

    #[test]
    fn the_healer_reads_its_inventory_and_escalates_where_asked() {
        let (cluster, layout) = demo();
        let spec = healer_spec(&cluster, &layout, &["http://pager/a".into(), "http://pager/b".into()], "whsec");
        assert_eq!((spec.name.as_str(), spec.listen), ("healer", cluster.healer.listen));
        assert_eq!(flag_values(&spec, "--inventory"), ["/d/healer.toml"]);
        assert!(flag_values(&spec, "--cluster").is_empty(), "no cluster.toml: its own inventory");
        assert_eq!(env(&spec, "HALE_AGENT_TOKEN"), Some(cluster.secrets.agent_token.as_str()));
        assert_eq!(flag_values(&spec, "--policies"), ["/d/policies.yaml"]);
        assert_eq!(flag_values(&spec, "--collector"), [format!("http://{}", cluster.collector.listen)]);
        assert_eq!(flag_values(&spec, "--escalation-webhook"), ["http://pager/a", "http://pager/b"]);
        assert_eq!(env(&spec, "HALE_HEALER_TOKEN"), Some(cluster.secrets.admin_token.as_str()));
        assert_eq!(env(&spec, "HALE_WEBHOOK_SECRET"), Some("whsec"));
        secrets_only_in_env(&spec, &cluster, "whsec");
    }

    #[test]
    fn each_agent_runs_on_its_node_with_its_config_file() {
        let (cluster, layout) = demo();
        let agents = agent_configs(&cluster, &layout.program, &layout.data_dir, &layout.config_file());
        for agent in &agents {
            let spec = agent_spec(&cluster, &layout, agent);
            assert_eq!(
                (spec.node.as_str(), spec.service.as_str(), spec.listen),
                (agent.node.as_str(), "agent", agent.listen)
            );
            assert_eq!(spec.name, format!("agent-{}", agent.node));
            assert_eq!(spec.args, ["agent", "--config", &format!("/d/agent-{}.toml", agent.node)]);
            assert_eq!(env(&spec, "HALE_AGENT_TOKEN"), Some(cluster.secrets.agent_token.as_str()));
            secrets_only_in_env(&spec, &cluster, "-");
        }
    }

    #[test]
    fn the_load_logs_in_as_the_shopper_with_its_password_in_the_environment() {
        let (cluster, layout) = demo();
        let spec = load_spec(&cluster, &layout, 7);
        let shopper = cluster.demo_logins.iter().find(|l| l.username == "shopper").expect("shopper");
        assert_eq!(flag_values(&spec, "--username"), ["shopper"]);
        assert_eq!(flag_values(&spec, "--rps"), ["7"]);
        assert_eq!(flag_values(&spec, "--gateway"), [format!("http://{}", cluster.gateway.listen)]);
        assert_eq!(env(&spec, "HALE_LOAD_PASSWORD"), Some(shopper.password.expose().as_str()));
        assert!(!spec.args.contains(shopper.password.expose()));
        secrets_only_in_env(&spec, &cluster, "-");
    }

    #[test]
    fn each_node_agent_runs_its_replicas_and_secrets_stay_off_the_command_line() {
        let cluster = ClusterConfig::parse(DEFAULT_CLUSTER_TOML).expect("config");
        let agents = agent_configs(&cluster, Path::new("/bin/hale"), Path::new("/d"), Path::new("/d/cluster.toml"));
        assert_eq!(agents.len(), 3);
        let total: usize = agents.iter().map(|a| a.processes.len()).sum();
        assert_eq!(total, cluster.instances().len());
        let primary = cluster.instances().into_iter().find(|i| i.name == "catalog-1").expect("primary");
        let standby = agents.iter().flat_map(|a| &a.processes).find(|p| p.name == "catalog-2").expect("standby");
        assert!(standby.extra_args.windows(2).any(|w| w[0] == "--follow" && w[1] == primary.url()));
        for agent in &agents {
            agent.validate().expect("valid agent config");
            let text = agent.to_toml();
            assert!(!text.contains(&cluster.secrets.jwt_secret));
            assert!(!text.contains(&cluster.secrets.agent_token));
            assert!(!text.contains(&cluster.secrets.ingest_token));
            // The traces-only token is there (the file is 0600), in the replicas' environment
            // and nowhere else.
            for template in &agent.services {
                assert!(!template.args.iter().any(|a| a.contains(&cluster.secrets.traces_token)));
                let headers = template.env.get("OTEL_EXPORTER_OTLP_HEADERS").expect("trace export headers");
                assert!(headers.ends_with(&cluster.secrets.traces_token));
            }
            assert_eq!(agent.remote_write, [format!("http://{}/api/v1/write", cluster.collector.listen)]);
            for p in &agent.processes {
                let template = agent.template(&p.service).expect("template");
                let spec = agent.render(template, &p.name, p.listen, &p.extra_args);
                assert!(spec.args.contains(&p.name) && spec.args.contains(&p.listen.to_string()));
            }
        }
    }

    /// A service's `trace_slow_ms` reaches its replicas (and only theirs) as
    /// `HALE_TRACE_SLOW_MS`, which hale-trace reads.
    #[test]
    fn a_services_trace_threshold_reaches_its_replicas() {
        let src = DEFAULT_CLUSTER_TOML.replacen("max_in_flight = 4", "max_in_flight = 4\ntrace_slow_ms = 1500", 1);
        let cluster = ClusterConfig::parse(&src).expect("config");
        let agents = agent_configs(&cluster, Path::new("/bin/hale"), Path::new("/d"), Path::new("/d/cluster.toml"));
        for template in agents.iter().flat_map(|a| &a.services) {
            let slow = template.env.get("HALE_TRACE_SLOW_MS").map(String::as_str);
            assert_eq!(slow, (template.name == "search").then_some("1500"), "{}", template.name);
        }
    }

    /// `--tls`: every URL is https; each component serves and calls with its own
    /// certificate and asks callers for theirs, but for the gateway, which shoppers reach;
    /// nothing is left to plain HTTP.
    #[test]
    fn a_tls_cluster_gives_every_part_its_certificate_and_https_everywhere() {
        let (mut cluster, layout) = demo();
        cluster.tls = true;
        let certs = "/d/certs";
        let flag = |spec_args: &[String], flag: &str| -> Option<String> {
            spec_args.windows(2).find(|w| w[0] == flag).map(|w| w[1].clone())
        };
        let collector = collector_spec(&cluster, &layout, &[], "whsec", None);
        let healer = healer_spec(&cluster, &layout, &[], "whsec");
        for (spec, name) in [(&collector, "collector"), (&healer, "healer")] {
            assert_eq!(flag(&spec.args, "--tls-cert"), Some(format!("{certs}/{name}.pem")), "{name}");
            assert_eq!(flag(&spec.args, "--tls-client-cert"), Some(format!("{certs}/{name}.pem")), "{name}");
            assert_eq!(flag(&spec.args, "--tls-client-ca"), Some(format!("{certs}/ca.pem")), "{name}: mutual TLS");
            assert_eq!(flag(&spec.args, "--tls-ca"), Some(format!("{certs}/ca.pem")), "{name}");
            assert!(!spec.args.iter().any(|a| a == "--insecure-plaintext"), "{name}");
        }
        assert!(flag(&collector.args, "--alert-webhook").is_some_and(|u| u.starts_with("https://")));
        assert!(flag(&healer.args, "--collector").is_some_and(|u| u.starts_with("https://")));
        let agents = agent_configs(&cluster, Path::new("/bin/hale"), Path::new("/d"), Path::new("/d/cluster.toml"));
        for agent in &agents {
            assert!(agent.remote_write.iter().all(|u| u.starts_with("https://")));
            let spec = agent_spec(&cluster, &layout, agent);
            assert_eq!(flag(&spec.args, "--tls-cert"), Some(format!("{certs}/{}.pem", agent.node)));
            for template in &agent.services {
                assert!(template.tls, "{}: probed and scraped over https", template.name);
                let own = Some(format!("{certs}/{}.pem", agent.node));
                assert_eq!(flag(&template.args, "--tls-cert"), own, "{} on {}", template.name, agent.node);
                let mutual = flag(&template.args, "--tls-client-ca").is_some();
                assert_eq!(mutual, template.name != "gateway", "{}: mutual TLS but for the gateway", template.name);
            }
        }
        let load = load_spec(&cluster, &layout, 5);
        assert_eq!(flag(&load.args, "--tls-client-cert"), Some(format!("{certs}/hale.pem")));
        assert!(flag(&load.args, "--gateway").is_some_and(|u| u.starts_with("https://")));
        assert!(crate::prometheus_files::config_yaml(true).contains("scheme: https"));
    }
}
