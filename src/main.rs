//! `hale`: the command line. Parses flags and hands over to a component; no logic of its
//! own beyond wiring.

mod bench;
mod bench_alert;
mod bench_cluster;
mod bench_heal;
mod chaos;
mod cluster_file;
mod dashboard;
mod seed;
mod silence;
mod up;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hale_core::{Role, ServiceKind};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Parser)]
#[command(name = "hale", version, about = "Observability and self-healing for a fleet of services")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the demo cluster: the shop's replicas on loopback nodes, and load.
    Up(up::UpArgs),
    /// Run one shop service, or hash a password for cluster.toml.
    Shop(ShopCommand),
    /// Send realistic shop traffic through the gateway and summarise it.
    Load(LoadArgs),
    /// Run a node agent: host metrics, scrapes, probes, logs, shipping, supervision.
    Agent(AgentArgs),
    /// Run the collector: remote_write ingest into a WAL-backed time-series store.
    Collector(Box<CollectorArgs>),
    /// Measure: `hale bench ingest` sends a synthetic remote_write workload.
    Bench(BenchCommand),
    /// Prometheus rule files: `hale rules check FILE...` validates them.
    Rules(RulesCommand),
    /// Silence alerts on a running collector: add, list, expire.
    Silence(silence::SilenceArgs),
    /// SLO specs (Sloth prometheus/v1): check them, or export them as Prometheus rules.
    Slo(SloCommand),
    /// Run the healer: alerts in, safe and verified repairs out.
    Healer(Box<HealerArgs>),
    /// Healing policies: `hale policies check FILE...` validates them.
    Policies(PoliciesCommand),
    /// Inject a fault into a running cluster: kill, hang, latency, errors, cpu, node-down.
    Chaos(chaos::ChaosArgs),
    /// The on-call terminal dashboard on a running cluster (`hale up` opens it itself).
    Tui(dashboard::TuiArgs),
    /// The cluster's health for scripts; exits 1 when an SLO pages or a service has no
    /// ready replica.
    Status(dashboard::StatusArgs),
}

/// No `Debug`: it holds tokens.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct HealerArgs {
    #[command(subcommand)]
    sub: Option<HealerSub>,
    /// Address to serve on (the collector's webhooks come here).
    #[arg(long, default_value = "127.0.0.1:9465")]
    listen: SocketAddr,
    /// Where the audit log and the durable state live.
    #[arg(long, default_value = ".hale/healer")]
    data_dir: PathBuf,
    /// Healing policies (required).
    #[arg(long)]
    policies: Option<PathBuf>,
    /// The cluster's cluster.toml: where the node agents are, and their token (required).
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// The collector's URL (queries, alerts, silences).
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    collector: String,
    /// Bearer token for the healer's write endpoints (approve, pause, reset…).
    #[arg(long, env = "HALE_HEALER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A bearer token the alert intake accepts in place of a signature, for senders that
    /// cannot sign (Alertmanager's http_config.authorization). Without it the intake takes
    /// signed webhooks only; the write token is never accepted there.
    #[arg(long, env = "HALE_HEALER_INTAKE_TOKEN", hide_env_values = true)]
    intake_token: Option<String>,
    /// Key of the X-Hale-Signature on incoming webhooks and on escalations.
    #[arg(long, env = "HALE_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Where failed repairs are escalated (repeatable; signed).
    #[arg(long = "escalation-webhook", value_name = "URL")]
    escalation_webhooks: Vec<String>,
    /// Shadow mode: record what every policy would do, do nothing.
    #[arg(long)]
    dry_run: bool,
    /// etcd endpoints (comma-separated URLs): healers sharing them elect one leader, the
    /// only one that acts, and keep their safety state there.
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    etcd: Vec<String>,
    /// Key prefix in etcd; healers with the same prefix form one group.
    #[arg(long, default_value = "/hale/healer")]
    etcd_prefix: String,
    /// Leader lease TTL: a leader that dies is replaced within about this long.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    etcd_ttl: std::time::Duration,
}

#[derive(Subcommand)]
enum HealerSub {
    /// What a policy set would have done with recorded alerts (JSON lines: webhook
    /// payloads, alerts, or the healer's audit log).
    Replay {
        #[arg(long)]
        policies: PathBuf,
        alerts: PathBuf,
    },
}

#[derive(clap::Args)]
struct PoliciesCommand {
    #[command(subcommand)]
    which: PoliciesWhich,
}

#[derive(Subcommand)]
enum PoliciesWhich {
    /// Check policy files, errors with their line.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct SloCommand {
    #[command(subcommand)]
    which: SloWhich,
}

#[derive(Subcommand)]
enum SloWhich {
    /// Check SLO spec files, errors with their line.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the Prometheus recording and alerting rules of a spec file.
    Export {
        /// Only `prometheus` (rule files for Prometheus, promtool-clean).
        #[arg(long, default_value = "prometheus")]
        format: String,
        /// Multiply windows by this (1 in production).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// An alert window needs at least this many events (0: no guard).
        #[arg(long, default_value_t = 0)]
        min_events: u64,
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct RulesCommand {
    #[command(subcommand)]
    which: RulesWhich,
}

#[derive(Subcommand)]
enum RulesWhich {
    /// Check rule files: syntax, PromQL, durations, templates; errors with their line.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct BenchCommand {
    #[command(subcommand)]
    which: BenchWhich,
}

#[derive(Subcommand)]
enum BenchWhich {
    /// Send a fixed synthetic workload to a remote_write receiver and print samples/s.
    Ingest(bench::IngestArgs),
    /// Time fault -> signed webhook in a demo cluster of its own.
    Alert(bench_alert::AlertArgs),
    /// Time the healer's repairs (kill -9, hang, failover) in demo clusters of its own.
    Heal(bench_heal::HealArgs),
    /// Time the dashboard's frames: every view of a demo cluster's state.
    Tui(TuiBenchArgs),
}

#[derive(clap::Args)]
struct TuiBenchArgs {
    #[arg(long, default_value_t = 2000)]
    frames: usize,
    #[arg(long, default_value_t = 160)]
    width: u16,
    #[arg(long, default_value_t = 48)]
    height: u16,
}

/// No `Debug`: it holds a token.
#[derive(clap::Args)]
struct CollectorArgs {
    /// collector.toml for the settings below; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to serve on (default 127.0.0.1:9464).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where the WAL, checkpoints and logs live (default .hale/collector).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Bearer token required to write (remote_write); without it, writes are open.
    #[arg(long, env = "HALE_INGEST_TOKEN", hide_env_values = true)]
    ingest_token: Option<String>,
    /// Keep data this long (15d, 12h, ...; default 15d).
    #[arg(long)]
    retention: Option<String>,
    /// Keep at most this many bytes of compressed samples in memory (0: no limit).
    #[arg(long)]
    retention_bytes: Option<usize>,
    /// Fold the WAL into a checkpoint this often, bounding replay time (default 5m).
    #[arg(long)]
    checkpoint_interval: Option<String>,
    /// A Prometheus rule file to evaluate (repeatable; added to the config's rule_files).
    #[arg(long = "rules", value_name = "FILE")]
    rules: Vec<PathBuf>,
    /// How often rule groups without their own interval run (default 15s).
    #[arg(long)]
    evaluation_interval: Option<String>,
    /// A webhook receiver for alerts (repeatable; Alertmanager's payload, signed).
    #[arg(long = "alert-webhook", value_name = "URL")]
    alert_webhooks: Vec<String>,
    /// The HMAC key webhooks are signed with (X-Hale-Signature).
    #[arg(long, env = "HALE_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// An Alertmanager to forward alerts to (repeatable; base URL).
    #[arg(long = "alertmanager", value_name = "URL")]
    alertmanagers: Vec<String>,
    /// Bearer token for writing silences; without it they are read-only.
    #[arg(long, env = "HALE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// How long a new alert group waits before its first notification (default 30s).
    #[arg(long)]
    group_wait: Option<String>,
    /// How often an alert group is looked at again (default 5m).
    #[arg(long)]
    group_interval: Option<String>,
    /// How often an unchanged firing group is notified again (default 4h).
    #[arg(long)]
    repeat_interval: Option<String>,
    /// A Sloth SLO spec file to evaluate (repeatable; added to the config's slo_files).
    #[arg(long = "slo", value_name = "FILE")]
    slos: Vec<PathBuf>,
    /// SLO windows are multiplied by this (default 1; demos use less).
    #[arg(long)]
    slo_time_scale: Option<f64>,
    /// An SLO alert window needs at least this many events (default 0: no guard).
    #[arg(long)]
    slo_min_events: Option<u64>,
}

/// `hale healer replay`: one line per alert, then a summary.
fn replay(policies: &std::path::Path, alerts: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(policies).with_context(|| format!("reading {}", policies.display()))?;
    let file =
        hale_healer::policy::PolicyFile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", policies.display()))?;
    let recorded = std::fs::read_to_string(alerts).with_context(|| format!("reading {}", alerts.display()))?;
    let decisions =
        hale_healer::replay::replay(&file, &recorded).map_err(|e| anyhow::anyhow!("{}: {e}", alerts.display()))?;
    println!("{:<32}  {:<22}  {:<24}  {:<10}  {:<26}  WHY", "STARTS", "ALERT", "TARGET", "OUTCOME", "POLICY / ACTION");
    let mut counts = std::collections::BTreeMap::new();
    for d in &decisions {
        *counts.entry(d.outcome).or_insert(0) += 1;
        let policy = match (&d.policy, d.action) {
            (Some(p), Some(a)) => format!(
                "{p} / {}",
                serde_json::to_value(a).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
            ),
            _ => "-".into(),
        };
        println!(
            "{:<32}  {:<22}  {:<24}  {:<10}  {:<26}  {}",
            d.starts_at, d.alertname, d.target, d.outcome, policy, d.reason
        );
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("{} alerts: {}", decisions.len(), summary.join(", "));
    Ok(())
}

fn check_policy_files(files: &[PathBuf]) -> anyhow::Result<()> {
    let parse = |source: &str| hale_healer::policy::PolicyFile::parse(source);
    check_files(files, "policy", parse, |f| format!("{} policies", f.policies.len()))
}

/// `hale rules check` and `hale slo check`: every file checked; each error printed as
/// `FILE:LINE: message`, each good file with `summary` of it.
fn check_files<T>(
    files: &[PathBuf],
    what: &str,
    parse: impl Fn(&str) -> Result<T, hale_core::ConfigError>,
    summary: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    let mut failed = 0;
    for path in files {
        let result = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display())).and_then(|source| {
            parse(&source).map_err(|e| match e.line {
                Some(line) => format!("{}:{line}: {}", path.display(), e.message),
                None => format!("{}: {}", path.display(), e.message),
            })
        });
        match result {
            Ok(parsed) => println!("{}: OK, {}", path.display(), summary(&parsed)),
            Err(message) => {
                eprintln!("{message}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} {what} files have errors; fix the lines above and run the check again",
            files.len()
        );
    }
    Ok(())
}

fn check_rule_files(files: &[PathBuf]) -> anyhow::Result<()> {
    check_files(files, "rule", hale_collector::rules::RuleFile::parse, |file| {
        let rules: Vec<_> = file.groups.iter().flat_map(|g| &g.rules).collect();
        let alerting = rules.iter().filter(|r| r.alert.is_some()).count();
        format!(
            "{} groups, {} rules ({} recording, {alerting} alerting)",
            file.groups.len(),
            rules.len(),
            rules.len() - alerting
        )
    })
}

fn check_slo_files(files: &[PathBuf]) -> anyhow::Result<()> {
    check_files(files, "SLO", hale_collector::slo::spec::parse, |specs| {
        let slos: usize = specs.iter().map(|s| s.slos.len()).sum();
        format!("{} services, {slos} SLOs", specs.len())
    })
}

/// No `Debug`: it holds tokens.
#[derive(clap::Args)]
struct AgentArgs {
    /// agent.toml; the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Node name (required without --config).
    #[arg(long)]
    node: Option<String>,
    /// Address of the agent's API (default <node-ip>:9100 from the config).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// A Prometheus remote_write receiver; repeat for several (each gets everything).
    #[arg(long = "remote-write")]
    remote_write: Vec<String>,
    /// OTLP/HTTP logs endpoint.
    #[arg(long)]
    logs_endpoint: Option<String>,
    /// Bearer token of the actuator API.
    #[arg(long, env = "HALE_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Bearer token sent to receivers.
    #[arg(long, env = "HALE_INGEST_TOKEN", hide_env_values = true)]
    ingest_token: Option<String>,
    /// Queues, checkpoints and the agent id live here.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ShopCommand {
    #[command(subcommand)]
    which: ShopWhich,
}

#[derive(Debug, Subcommand)]
enum ShopWhich {
    /// The entry point: routing, balancing, readiness checks, pool admin.
    Gateway(ServiceFlags),
    /// OAuth2 token endpoint.
    Auth(ServiceFlags),
    /// Products and stock, primary or standby.
    Catalog(ServiceFlags),
    /// Full-text product search.
    Search(ServiceFlags),
    /// Order placement with encrypted personal data.
    Orders(ServiceFlags),
    /// Read a password on stdin and print its Argon2 hash for cluster.toml.
    HashPassword,
}

#[derive(Debug, clap::Args)]
struct ServiceFlags {
    /// cluster.toml with the topology, accounts and secrets.
    #[arg(long)]
    config: PathBuf,
    /// Instance name, such as search-1.
    #[arg(long)]
    instance: String,
    /// Address to serve on.
    #[arg(long)]
    listen: SocketAddr,
    /// Root folder of the shop's state.
    #[arg(long)]
    data_dir: PathBuf,
    /// Folder of the JSON-lines log (<log-dir>/<instance>.log); default <data-dir>/logs.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// The gateway's URL, for calls between services.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Catalog: starting role (primary or standby).
    #[arg(long, default_value = "primary")]
    role: RoleArg,
    /// Catalog standby: URL of the primary to follow.
    #[arg(long)]
    follow: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Primary,
    Standby,
}

/// No `Debug`: it holds a password.
#[derive(clap::Args)]
struct LoadArgs {
    /// The shop gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Requests per second at the gateway (journeys start at the pace that gives it).
    #[arg(long, default_value_t = 20)]
    rps: u32,
    /// How long to run (30s, 5m, 1h); 0 runs until interrupted.
    #[arg(long, default_value = "30s")]
    duration: String,
    /// Weights of the journeys, such as browse=50,search=35,buy=15.
    #[arg(long, default_value = "browse=50,search=35,buy=15")]
    mix: String,
    /// Shop account the traffic logs in as.
    #[arg(long, default_value = "shopper")]
    username: String,
    /// Its password.
    #[arg(long, env = "HALE_LOAD_PASSWORD", default_value = "hale-shopper", hide_env_values = true)]
    password: String,
    /// Print a status line every 10 s instead of a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Requests allowed in flight at once.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
}

fn main() -> std::process::ExitCode {
    // Everything Hale writes — databases, WALs, queues, logs, audit trails, secrets — is
    // for its owner only: files 0600, directories 0700, in every component and every
    // child (the umask is inherited), instead of a mode to remember at each create.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hale: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hale: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Up(args) => {
            if args.headless {
                init_stderr_logging("warn");
            } else {
                // The dashboard owns the screen: warnings go to a file beside the others.
                init_file_logging("warn", &args.data_dir.join("logs").join("hale-up.log"))?;
            }
            up::run(args).await
        }
        Command::Shop(ShopCommand { which: ShopWhich::HashPassword }) => hash_password(),
        Command::Shop(ShopCommand { which }) => {
            let (service, flags) = match which {
                ShopWhich::Gateway(f) => (ServiceKind::Gateway, f),
                ShopWhich::Auth(f) => (ServiceKind::Auth, f),
                ShopWhich::Catalog(f) => (ServiceKind::Catalog, f),
                ShopWhich::Search(f) => (ServiceKind::Search, f),
                ShopWhich::Orders(f) => (ServiceKind::Orders, f),
                ShopWhich::HashPassword => unreachable!("handled above"),
            };
            run_shop(service, flags).await
        }
        Command::Load(args) => load(args).await,
        Command::Agent(args) => agent(args).await,
        Command::Bench(BenchCommand { which: BenchWhich::Ingest(args) }) => bench::ingest(args).await,
        Command::Bench(BenchCommand { which: BenchWhich::Alert(args) }) => bench_alert::alert(args).await,
        Command::Bench(BenchCommand { which: BenchWhich::Tui(args) }) => {
            bench_tui(&args);
            Ok(())
        }
        Command::Bench(BenchCommand { which: BenchWhich::Heal(args) }) => bench_heal::heal(args).await,
        Command::Rules(RulesCommand { which: RulesWhich::Check { files } }) => check_rule_files(&files),
        Command::Silence(args) => silence::run(args).await,
        Command::Healer(args) => {
            if let Some(HealerSub::Replay { policies, alerts }) = args.sub {
                return replay(&policies, &alerts);
            }
            init_stderr_logging("info");
            let (Some(cluster_path), Some(policies)) = (args.cluster, args.policies) else {
                bail!("hale healer needs --policies FILE and --cluster cluster.toml (hale up passes both)");
            };
            if args.intake_token.is_some() && args.intake_token == args.token {
                bail!(
                    "--intake-token is the same as --token: the token that feeds the healer alerts must not also \
                     approve, pause and reset it; give the intake a token of its own"
                );
            }
            let cluster = cluster_file::read(&cluster_path)?;
            if args.webhook_secret.as_deref().is_some_and(str::is_empty) {
                bail!("--webhook-secret (or HALE_WEBHOOK_SECRET) is empty: give it the collector's webhook secret");
            }
            let config = hale_healer::HealerConfig {
                listen: args.listen,
                data_dir: args.data_dir,
                policies,
                cluster,
                collector: args.collector,
                token: args.token,
                webhook_secret: args.webhook_secret.map(|s| std::sync::Arc::from(s.into_bytes().into_boxed_slice())),
                intake_token: args.intake_token.filter(|t| !t.is_empty()),
                escalation_webhooks: args.escalation_webhooks,
                dry_run: args.dry_run,
                etcd: args.etcd,
                etcd_prefix: args.etcd_prefix,
                etcd_ttl: args.etcd_ttl,
            };
            if config.etcd_ttl < std::time::Duration::from_secs(2) {
                bail!("--etcd-ttl must be at least 2s (etcd's shortest lease)");
            }
            Ok(hale_healer::run(config, up::shutdown_signal()).await?)
        }
        Command::Policies(PoliciesCommand { which: PoliciesWhich::Check { files } }) => check_policy_files(&files),
        Command::Chaos(args) => chaos::run(args).await,
        Command::Tui(args) => dashboard::tui(args).await,
        Command::Status(args) => {
            if !dashboard::status(args).await? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Slo(SloCommand { which: SloWhich::Check { files } }) => check_slo_files(&files),
        Command::Slo(SloCommand { which: SloWhich::Export { format, time_scale, min_events, file } }) => {
            if format != "prometheus" {
                bail!("--format {format:?}: only `prometheus` is supported");
            }
            if !(time_scale > 0.0 && time_scale <= 1.0) {
                bail!("--time-scale must be more than 0 and at most 1");
            }
            let loaded = hale_collector::slo::load(&file, hale_collector::slo::Options { time_scale, min_events })
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            print!("{}", loaded.rules);
            Ok(())
        }
        Command::Collector(args) => {
            init_stderr_logging("info");
            use hale_collector::config::CollectorFile;
            let mut file = match &args.config {
                Some(path) => {
                    let source =
                        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                    CollectorFile::parse(&source).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?.0
                }
                None => CollectorFile::default(),
            };
            if let Some(r) = args.retention {
                file.retention = r;
            }
            if let Some(r) = args.retention_bytes {
                file.retention_bytes = r;
            }
            if let Some(c) = args.checkpoint_interval {
                file.checkpoint_interval = c;
            }
            if let Some(e) = args.evaluation_interval {
                file.evaluation_interval = e;
            }
            file.notify.webhooks.extend(args.alert_webhooks);
            file.notify.alertmanagers.extend(args.alertmanagers);
            for (flag, value) in [
                (&mut file.notify.group_wait, args.group_wait),
                (&mut file.notify.group_interval, args.group_interval),
                (&mut file.notify.repeat_interval, args.repeat_interval),
            ] {
                if value.is_some() {
                    *flag = value;
                }
            }
            let route = file.notify.route(|_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
            if args.webhook_secret.as_deref().is_some_and(str::is_empty) {
                bail!("--webhook-secret (or HALE_WEBHOOK_SECRET) is empty: give it a long random value");
            }
            // Rule files in the config are relative to it, as in Prometheus.
            let base = args.config.as_deref().and_then(std::path::Path::parent).map(PathBuf::from).unwrap_or_default();
            let mut rule_files: Vec<PathBuf> = file.rule_files.iter().map(|f| base.join(f)).collect();
            rule_files.extend(args.rules);
            let mut slo_files: Vec<PathBuf> = file.slo_files.iter().map(|f| base.join(f)).collect();
            slo_files.extend(args.slos);
            if let Some(t) = args.slo_time_scale {
                file.slo_time_scale = t;
            }
            if let Some(m) = args.slo_min_events {
                file.slo_min_events = m;
            }
            let slo_options = file.slo_options(|_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
            let durations =
                file.durations(|key| Some(0).filter(|_| key.is_empty())).map_err(|e| anyhow::anyhow!("{e}"))?;
            let listen = args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9464)));
            let external_url = file.notify.external_url.clone().unwrap_or_else(|| format!("http://{listen}"));
            let config = hale_collector::CollectorConfig {
                listen,
                data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(".hale/collector")),
                ingest_token: args.ingest_token,
                retention: durations.retention,
                retention_bytes: file.retention_bytes,
                checkpoint_interval: durations.checkpoint_interval,
                rule_files,
                evaluation_interval: durations.evaluation_interval,
                external_labels: file.external_labels,
                notify: hale_collector::notify::NotifyConfig {
                    webhooks: file.notify.webhooks,
                    webhook_secret: args
                        .webhook_secret
                        .map(|s| std::sync::Arc::from(s.into_bytes().into_boxed_slice())),
                    alertmanagers: file.notify.alertmanagers,
                    route,
                    external_url,
                },
                admin_token: args.admin_token,
                slo_files,
                slo_options,
            };
            Ok(hale_collector::run(config, up::shutdown_signal()).await?)
        }
    }
}

/// Human-readable logs on stderr at `default` level, or what `HALE_LOG` says.
/// `hale bench tui`: per view, the time to draw one frame of the demo cluster.
fn bench_tui(args: &TuiBenchArgs) {
    println!("{} frames of each view at {}x{} (the demo fixture):", args.frames, args.width, args.height);
    for (view, mut times) in hale_tui::bench::frame_times(args.width, args.height, args.frames.max(1)) {
        times.sort();
        let pick = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
        println!(
            "  {view:<16} p50 {:>7.1} µs   p99 {:>7.1} µs   max {:>7.1} µs",
            pick(0.5).as_secs_f64() * 1e6,
            pick(0.99).as_secs_f64() * 1e6,
            times.last().map_or(0.0, |t| t.as_secs_f64() * 1e6)
        );
    }
}

fn init_file_logging(default: &str, path: &std::path::Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(std::sync::Mutex::new(file)))
        .try_init();
    Ok(())
}

fn init_stderr_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init();
}

async fn run_shop(service: ServiceKind, flags: ServiceFlags) -> Result<()> {
    let cluster = cluster_file::read(&flags.config)?;
    let log_dir = flags.log_dir.clone().unwrap_or_else(|| flags.data_dir.join("logs"));
    let log_file = log_dir.join(format!("{}.log", flags.instance));
    let layer = hale_shop::logging::JsonLines::open(&log_file, service.as_str(), &flags.instance)
        .with_context(|| format!("opening log {}", log_file.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::registry().with(filter).with(layer).try_init();
    if matches!(flags.role, RoleArg::Standby) && flags.follow.is_none() {
        bail!("a catalog standby needs --follow <primary URL>");
    }
    let args = hale_shop::ShopArgs {
        service,
        instance: flags.instance,
        listen: flags.listen,
        data_dir: flags.data_dir,
        gateway_url: flags.gateway,
        role: match flags.role {
            RoleArg::Primary => Role::Primary,
            RoleArg::Standby => Role::Standby,
        },
        follow: flags.follow,
        cluster,
    };
    let result = hale_shop::run(args, up::shutdown_signal()).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "service failed");
    }
    Ok(result?)
}

async fn agent(args: AgentArgs) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => {
            let source = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            hale_agent::config::AgentConfig::parse(&source).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => {
            let node = args.node.clone().context("--node is required without --config")?;
            let text = format!(
                "node = {node:?}\nlisten = {:?}\ndata_dir = {:?}\n",
                args.listen.map(|a| a.to_string()).unwrap_or_else(|| "127.0.0.1:9100".into()),
                args.data_dir.clone().unwrap_or_else(|| PathBuf::from(".hale/agent")).display().to_string()
            );
            hale_agent::config::AgentConfig::parse(&text).map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    if let Some(node) = args.node {
        config.node = node;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if !args.remote_write.is_empty() {
        config.remote_write = args.remote_write;
    }
    if args.logs_endpoint.is_some() {
        config.logs_endpoint = args.logs_endpoint;
    }
    if args.token.is_some() {
        config.token = args.token;
    }
    if args.ingest_token.is_some() {
        config.ingest_token = args.ingest_token;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    init_stderr_logging("info");
    Ok(hale_agent::run(config, up::shutdown_signal()).await?)
}

fn hash_password() -> Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("empty password: pipe one in, e.g. `printf %s 'secret' | hale shop hash-password`");
    }
    println!("{}", hale_shop::auth::hash_secret(password).map_err(anyhow::Error::msg)?);
    Ok(())
}

async fn load(args: LoadArgs) -> Result<()> {
    let duration = match args.duration.trim() {
        "0" | "" => None,
        d => Some(humantime::parse_duration(d).with_context(|| format!("--duration {d:?}: use 30s, 5m or 1h"))?),
    };
    let config = hale_shop::load::LoadConfig {
        gateway: args.gateway.trim_end_matches('/').to_string(),
        rps: args.rps,
        duration,
        mix: args.mix.parse()?,
        username: args.username,
        password: args.password,
        progress: !args.no_progress,
        max_in_flight: args.max_in_flight,
    };
    let summary = hale_shop::load::run(config, up::shutdown_signal()).await?;
    print!("{}", summary.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn load_duration_parses() {
        assert_eq!(humantime::parse_duration("5m").expect("5m"), Duration::from_secs(300));
    }
}
