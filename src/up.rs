//! `hale up`: the whole demo cluster on one machine. Turns the cluster topology into
//! process specs, supervises them, seeds the shop, starts the load generator, prints
//! where everything is, and stops it all on Ctrl-C or SIGTERM.

use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hale_core::{ClusterConfig, DEFAULT_CLUSTER_TOML, ProcessSpec, Role, ServiceKind};

use hale_agent::config::{AgentConfig, BatchConfig, ProcessConfig, QueueConfig, ServiceTemplate};
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
    let mut cluster = ClusterConfig::parse(&source).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    if let Some(n) = args.nodes {
        cluster.set_node_count(n)?;
    }
    if let Some(prefix) = &args.ip_prefix {
        cluster.set_ip_prefix(prefix)?;
    }
    if let Some(ip) = args.control_ip {
        cluster.set_control_ip(ip);
    }
    cluster.add_port_offset(args.port_offset)?;
    Ok(cluster)
}

/// Ports new replicas started through an agent's actuator may take: above every port
/// the topology hands out.
const SPARE_PORTS: u16 = 100;
/// The shop's default alerting rules, written into the data dir for the collector.
const DEFAULT_RULES: &str = include_str!("../config/rules.yml");
/// The shop's default healing policies, likewise for the healer.
const DEFAULT_POLICIES: &str = include_str!("../config/policies.yaml");
/// The shop's default SLOs (Sloth specs), likewise.
const DEFAULT_SLOS: &str = include_str!("../config/slo.yaml");
/// Events an SLO alert window needs in the demo: its 5m window, scaled, holds a few
/// seconds of checkout traffic.
const DEMO_SLO_MIN_EVENTS: u64 = 5;

/// One agent config per node: a template per shop service, and the node's replicas.
pub fn agent_configs(cluster: &ClusterConfig, program: &Path, data_dir: &Path, config_file: &Path) -> Vec<AgentConfig> {
    let instances = cluster.instances();
    let gateway_url = format!("http://{}", cluster.gateway.listen);
    let primary_url =
        instances.iter().find(|i| i.service == ServiceKind::Catalog && i.role == Role::Primary).map(|i| i.url());
    let logs = data_dir.join("logs");
    let spare_from = cluster.first_port.saturating_add(instances.len() as u16 + 10);
    let templates: Vec<ServiceTemplate> = ServiceKind::ALL
        .iter()
        .map(|kind| ServiceTemplate {
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
            ],
            env: Default::default(),
            log_file: Some(logs.join("{name}.log").display().to_string()),
            output_file: logs.join("{name}.out").display().to_string(),
            metrics_path: "/metrics".into(),
            health_path: "/healthz".into(),
            ready_path: "/readyz".into(),
            port_range: Some((spare_from, spare_from.saturating_add(SPARE_PORTS - 1))),
        })
        .collect();
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
            AgentConfig {
                node: node.name.clone(),
                listen: cluster.agent_listen(node),
                data_dir: data_dir.join("agent").join(&node.name),
                remote_write: vec![format!("http://{}/api/v1/write", cluster.collector.listen)],
                logs_endpoint: Some(format!("http://{}/v1/logs", cluster.collector.listen)),
                token: None,
                ingest_token: None,
                // The demo cluster watches closely: scrapes every second, probes twice a second.
                scrape_interval_ms: 1000,
                probe_interval_ms: 500,
                timeout_ms: 400,
                metrics_queue: QueueConfig::metrics(),
                logs_queue: QueueConfig::logs(),
                batch: BatchConfig::default(),
                services: templates.clone(),
                processes,
                logs: Vec::new(),
            }
        })
        .collect()
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
                .map_err(|e| anyhow::anyhow!("hashing the orders client secret: {e}"))?;
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

pub async fn run(args: UpArgs) -> Result<()> {
    let mut cluster = cluster_from(&args)?;
    create_private_dir(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize()?;
    settle_secrets(&mut cluster, &data_dir)?;
    check_addresses_free(&cluster)?;
    // Children read secrets from this file, never from their command line.
    let config_file = data_dir.join("cluster.toml");
    write_private(&config_file, &cluster.to_toml())?;
    let program = std::env::current_exe().context("finding the hale executable")?;
    let rules_file = data_dir.join("rules.yml");
    std::fs::write(&rules_file, DEFAULT_RULES).with_context(|| format!("writing {}", rules_file.display()))?;
    let slo_file = data_dir.join("slo.yaml");
    std::fs::write(&slo_file, DEFAULT_SLOS).with_context(|| format!("writing {}", slo_file.display()))?;
    // Receivers verify with the same secret; it stays in a 0600 file, never on a command line.
    if args.webhook_secret.as_deref().is_some_and(str::is_empty) {
        bail!(
            "--webhook-secret (or HALE_WEBHOOK_SECRET) is empty: give it a long random value, or leave it out for a random one"
        );
    }
    let webhook_secret = args.webhook_secret.clone().unwrap_or_else(hale_core::auth::random_token);
    write_private(&data_dir.join("webhook-secret"), &webhook_secret)?;
    let mut collector_args = vec![
        "collector".to_string(),
        "--listen".into(),
        cluster.collector.listen.to_string(),
        "--data-dir".into(),
        data_dir.join("collector").display().to_string(),
        "--rules".into(),
        rules_file.display().to_string(),
        // Demo pace: alerts evaluate every second and notify at once, so a fault shows
        // within seconds; production configs keep Prometheus's and Alertmanager's pace.
        "--evaluation-interval".into(),
        "1s".into(),
        "--group-wait".into(),
        "0s".into(),
        "--group-interval".into(),
        "1s".into(),
        "--repeat-interval".into(),
        "5m".into(),
        "--slo".into(),
        slo_file.display().to_string(),
        "--slo-time-scale".into(),
        cluster.time_scale.to_string(),
        "--slo-min-events".into(),
        if cluster.time_scale < 1.0 { DEMO_SLO_MIN_EVENTS } else { 10 }.to_string(),
    ];
    // The healer hears every alert; the user's receivers too.
    collector_args
        .extend(["--alert-webhook".to_string(), format!("http://{}/hooks/alertmanager", cluster.healer.listen)]);
    for hook in &args.alert_webhooks {
        collector_args.extend(["--alert-webhook".to_string(), hook.clone()]);
    }
    let policies_file = data_dir.join("policies.yaml");
    let policies = match &args.policies {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        None => DEFAULT_POLICIES.to_string(),
    };
    hale_healer::policy::PolicyFile::parse(&policies).map_err(|e| anyhow::anyhow!("policies: {e}"))?;
    std::fs::write(&policies_file, policies).with_context(|| format!("writing {}", policies_file.display()))?;

    // Each node's agent supervises that node's replicas; hale up supervises the agents
    // and the collector they ship to.
    let supervisor = Supervisor::new(Duration::from_secs(10));
    supervisor
        .start(ProcessSpec {
            name: "collector".into(),
            service: "collector".into(),
            node: cluster.gateway.node.get_ref().clone(),
            listen: cluster.collector.listen,
            program: program.clone(),
            args: collector_args,
            env: vec![
                ("HALE_INGEST_TOKEN".into(), cluster.secrets.ingest_token.clone()),
                ("HALE_ADMIN_TOKEN".into(), cluster.secrets.admin_token.clone()),
                ("HALE_WEBHOOK_SECRET".into(), webhook_secret.clone()),
            ],
            output_file: data_dir.join("logs").join("collector.out"),
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    supervisor
        .start(ProcessSpec {
            name: "healer".into(),
            service: "healer".into(),
            node: cluster.gateway.node.get_ref().clone(),
            listen: cluster.healer.listen,
            program: program.clone(),
            args: vec![
                "healer".into(),
                "--listen".into(),
                cluster.healer.listen.to_string(),
                "--data-dir".into(),
                data_dir.join("healer").display().to_string(),
                "--policies".into(),
                policies_file.display().to_string(),
                "--cluster".into(),
                config_file.display().to_string(),
                "--collector".into(),
                format!("http://{}", cluster.collector.listen),
            ]
            .into_iter()
            .chain(args.escalation_webhooks.iter().flat_map(|u| ["--escalation-webhook".to_string(), u.clone()]))
            .collect(),
            env: vec![
                ("HALE_WEBHOOK_SECRET".into(), webhook_secret.clone()),
                ("HALE_HEALER_TOKEN".into(), cluster.secrets.admin_token.clone()),
            ],
            output_file: data_dir.join("logs").join("healer.out"),
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let agents = agent_configs(&cluster, &program, &data_dir, &config_file);
    println!(
        "hale: starting {} agents and {} shop replicas (data in {})",
        agents.len(),
        agents.iter().map(|a| a.processes.len()).sum::<usize>(),
        data_dir.display()
    );
    for agent in &agents {
        let path = data_dir.join(format!("agent-{}.toml", agent.node));
        write_private(&path, &agent.to_toml())?;
        supervisor
            .start(ProcessSpec {
                name: format!("agent-{}", agent.node),
                service: "agent".into(),
                node: agent.node.clone(),
                listen: agent.listen,
                program: program.clone(),
                args: vec!["agent".into(), "--config".into(), path.display().to_string()],
                env: vec![
                    ("HALE_AGENT_TOKEN".into(), cluster.secrets.agent_token.clone()),
                    ("HALE_INGEST_TOKEN".into(), cluster.secrets.ingest_token.clone()),
                ],
                output_file: data_dir.join("logs").join(format!("agent-{}.out", agent.node)),
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let gateway = format!("http://{}", cluster.gateway.listen);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let started = tokio::select! {
        r = wait_ready(&gateway, Duration::from_secs(60)) => r,
        _ = &mut shutdown => { supervisor.shutdown().await; return Ok(()); }
    };
    if let Err(e) = started {
        supervisor.shutdown().await;
        return Err(
            e.context(format!("the shop did not become ready; see the logs in {}", data_dir.join("logs").display()))
        );
    }
    if let Err(e) = crate::seed::seed_if_empty(&gateway, &cluster).await {
        eprintln!("hale: seeding the catalog failed: {e:#}");
    }
    if args.load_rps > 0 {
        let (user, password) = cluster
            .demo_logins
            .iter()
            .find(|l| l.username == "shopper")
            .or(cluster.demo_logins.first())
            .map(|l| (l.username.clone(), l.password.clone()))
            .unwrap_or_default();
        let load = ProcessSpec {
            name: "load".into(),
            service: "load".into(),
            node: cluster.gateway.node.get_ref().clone(),
            listen: cluster.gateway.listen,
            program: program.clone(),
            args: vec![
                "load".into(),
                "--gateway".into(),
                gateway.clone(),
                "--rps".into(),
                args.load_rps.to_string(),
                "--duration".into(),
                "0".into(),
                "--no-progress".into(),
                "--username".into(),
                user,
            ],
            env: vec![("HALE_LOAD_PASSWORD".into(), password)],
            output_file: data_dir.join("logs").join("load.out"),
        };
        supervisor.start(load).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if args.headless {
        print_banner(&cluster, &gateway, &data_dir, args.load_rps);
        (&mut shutdown).await;
    } else {
        let endpoints = crate::dashboard::endpoints_of(&cluster);
        let actuator = std::sync::Arc::new(crate::dashboard::actuator(endpoints.clone(), Some(&cluster), &data_dir));
        let options = hale_tui::Options {
            endpoints,
            readonly: false,
            chaos: true,
            owns_cluster: !args.keep_running,
            refresh: Duration::from_secs(1),
            info: Some(crate::dashboard::info_of(&cluster, &data_dir, Some(args.load_rps))),
        };
        let shown = hale_tui::run(options, actuator, &mut shutdown).await;
        if let Err(e) = shown {
            eprintln!("hale: the dashboard failed ({e}); the cluster keeps running headless, Ctrl-C stops it");
            print_banner(&cluster, &gateway, &data_dir, args.load_rps);
            (&mut shutdown).await;
        } else if args.keep_running {
            print_banner(&cluster, &gateway, &data_dir, args.load_rps);
            println!(
                "  the dashboard closed; the cluster keeps running (`hale tui --data-dir {}` opens it again)",
                data_dir.display()
            );
            (&mut shutdown).await;
        }
    }
    println!("\nhale: stopping the cluster…");
    let stopping = Instant::now();
    // The replicas' restarts are their agents' to count (this supervisor only sees the
    // agents, the collector, the healer and the load): asked before they stop.
    let replicas = replica_restarts(&cluster).await;
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
    Ok(())
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
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_millis(1500)).build() else {
        return ReplicaCount { silent: cluster.nodes.iter().map(|n| n.name.clone()).collect(), ..Default::default() };
    };
    let mut asks = tokio::task::JoinSet::new();
    for node in &cluster.nodes {
        let url = format!("http://{}/api/v1/processes", cluster.agent_listen(node));
        let (client, name) = (client.clone(), node.name.clone());
        asks.spawn(async move {
            let answer: Option<serde_json::Value> = match client.get(url).send().await {
                Ok(r) if r.status().is_success() => r.json().await.ok(),
                _ => None,
            };
            (name, answer.as_ref().and_then(hale_tui::model::parse_processes))
        });
    }
    let mut count = ReplicaCount::default();
    while let Some(Ok((node, processes))) = asks.join_next().await {
        match processes {
            Some(list) => {
                count.replicas += list.len();
                count.restarts += list.iter().map(|p| p.restarts).sum::<u64>();
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
        "  collector      http://{}  (Prometheus API: /api/v1/query, /api/v1/alerts; SLOs: /api/v1/slos; /metrics)",
        cluster.collector.listen
    );
    println!(
        "  healer         http://{}  (actions: /api/v1/actions; audit: {})",
        cluster.healer.listen,
        data_dir.join("healer").join("audit.jsonl").display()
    );
    for instance in cluster.instances().iter().filter(|i| i.service != ServiceKind::Gateway) {
        let role =
            if instance.service == ServiceKind::Catalog { format!(" ({})", instance.role) } else { String::new() };
        println!("  {:<14} {}  on {}{role}", instance.name, instance.url(), instance.node);
    }
    for node in &cluster.nodes {
        println!(
            "  agent {:<8} http://{}  (processes: /api/v1/processes, metrics: /metrics)",
            node.name,
            cluster.agent_listen(node)
        );
    }
    println!("\n  demo logins:");
    for login in &cluster.demo_logins {
        println!("    {} / {}", login.username, login.password);
    }
    println!("\n  try:");
    println!("    curl -s -d grant_type=password -d username=shopper -d password=hale-shopper {gateway}/oauth/token");
    println!("    curl -s '{gateway}/api/search?q=lamp'");
    println!("\n  logs: {}", data_dir.join("logs").display());
    if load_rps > 0 {
        println!("  load: {load_rps} requests/s of browse, search and buy traffic");
    }
    println!("\n  Ctrl-C stops everything.");
}

async fn wait_ready(gateway: &str, limit: Duration) -> Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build()?;
    let deadline = Instant::now() + limit;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match client.get(format!("{gateway}/readyz")).send().await {
            Ok(r) if r.status().is_success() => {
                // Seeding writes, so the catalog primary must be ready too.
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if body["catalog_primary"]["ready"] == true {
                    return Ok(());
                }
                last = format!("the catalog primary is not ready yet: {body}");
            }
            Ok(r) => last = r.text().await.unwrap_or_default(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("gateway not ready after {}s: {last}", limit.as_secs())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
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
            assert_eq!(agent.remote_write, [format!("http://{}/api/v1/write", cluster.collector.listen)]);
            for p in &agent.processes {
                let template = agent.template(&p.service).expect("template");
                let spec = agent.render(template, &p.name, p.listen, &p.extra_args);
                assert!(spec.args.contains(&p.name) && spec.args.contains(&p.listen.to_string()));
            }
        }
    }
}
