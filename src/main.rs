//! `hale`: the command line. Parses the flags and hands each command to its module; every
//! command's flags live beside the code that runs it, and each component's own config
//! lays those flags over its file.

mod agent_cmd;
mod bench;
mod bench_alert;
mod bench_cluster;
mod bench_fleet;
mod bench_heal;
mod bench_logs;
mod bench_query;
mod bench_retention;
mod bench_spans;
mod bench_stats;
mod bench_tracing;
mod bench_tui;
mod certs;
mod chaos;
mod cluster_file;
mod collector_cmd;
mod dashboard;
mod file_checks;
mod healer_cmd;
mod load_cmd;
mod logging;
mod netns;
mod prometheus_files;
mod seed;
mod shop_cmd;
mod shutdown;
mod silence;
mod up;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "hale", version, about = "Observability and self-healing for a fleet of services")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Outgoing TLS, for every command that calls a Hale server.
    #[command(flatten)]
    client_tls: hale_client::tls::ClientTlsFlags,
}

#[derive(Subcommand)]
enum Command {
    /// Start the demo cluster: the shop's replicas on loopback nodes, and load.
    Up(up::UpArgs),
    /// Run one shop service, or hash a password for cluster.toml.
    Shop(shop_cmd::ShopCommand),
    /// Send realistic shop traffic through the gateway and summarise it.
    Load(load_cmd::LoadArgs),
    /// Run a node agent: host metrics, scrapes, probes, logs, shipping, supervision.
    Agent(agent_cmd::AgentArgs),
    /// Run the collector: remote_write ingest into a WAL-backed time-series store.
    Collector(Box<collector_cmd::CollectorArgs>),
    /// Measure: `hale bench ingest` sends a synthetic remote_write workload.
    Bench(BenchCommand),
    /// Prometheus rule files: `hale rules check FILE...` validates them.
    Rules(file_checks::RulesCommand),
    /// Silence alerts on a running collector: add, list, expire.
    Silence(silence::SilenceArgs),
    /// SLO specs (Sloth prometheus/v1): check them, or export them as Prometheus rules.
    Slo(file_checks::SloCommand),
    /// Run the healer: alerts in, safe and verified repairs out.
    Healer(Box<healer_cmd::HealerArgs>),
    /// Healing policies: `hale policies check FILE...` validates them.
    Policies(file_checks::PoliciesCommand),
    /// Inject a fault into a running cluster: kill, hang, latency, errors, cpu, node-down.
    Chaos(chaos::ChaosArgs),
    /// The on-call terminal dashboard on a running cluster (`hale up` opens it itself).
    Tui(dashboard::TuiArgs),
    /// The cluster's health for scripts; exits 1 when an SLO pages or a service has no
    /// ready replica.
    Status(dashboard::StatusArgs),
    /// A certificate authority for Hale's TLS: `init` the CA, `issue` a component's
    /// certificate.
    Certs(certs::CertsArgs),
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
    /// PromQL latency, side by side: the collector, Prometheus and VictoriaMetrics on the
    /// same data.
    Query(bench_query::QueryArgs),
    /// A week of retention, side by side: resident memory, disk bytes per sample and
    /// whole-range query latency of the collector, Prometheus and VictoriaMetrics.
    Retention(bench_retention::RetentionArgs),
    /// The log path end to end: a file of JSON lines tailed by an agent into a collector,
    /// beside the machine's own read and fsync'd write speed.
    Logs(bench_logs::LogsArgs),
    /// Span ingest: OTLP requests into a collector pinned to one core; spans/s, spans per
    /// CPU-second, bytes per stored span.
    Spans(bench_spans::SpansArgs),
    /// What tracing costs the shop: the same load with tracing on and off, in alternating
    /// pairs; latency and the cluster's CPU per request, side by side.
    Tracing(bench_tracing::TracingArgs),
    /// Time the dashboard's frames: every view of a demo cluster's state.
    Tui(bench_tui::TuiBenchArgs),
}

fn main() -> std::process::ExitCode {
    // Everything Hale writes — databases, WALs, queues, logs, audit trails, secrets — is
    // for its owner only: files 0600, directories 0700, in every component and every
    // child (the umask is inherited), instead of a mode to remember at each create.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    // Network namespaces are joined before any thread starts (threads are born in their
    // parent's): `hale up --netns` builds its lab and joins the control host; a command
    // aimed at a cluster in a lab joins it too.
    let joined = match &cli.command {
        Command::Up(args) if args.netns => netns::start_for_up(args).map(Some),
        Command::Chaos(args) => netns::join_if_lab(args.data_dir()).map(|()| None),
        Command::Tui(args) => netns::join_if_lab(&args.cluster.data_dir).map(|()| None),
        Command::Status(args) => netns::join_if_lab(&args.cluster.data_dir).map(|()| None),
        _ => Ok(None),
    };
    let lab = match joined {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("hale: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // One outgoing identity per process. A command aimed at a cluster's data dir takes the
    // CA and client certificate `hale up --tls` left there unless flags say otherwise;
    // `hale up` installs its own once it has made them.
    let client_tls = match &cli.command {
        Command::Up(_) => None,
        Command::Silence(args) => Some(cli.client_tls.clone().or_from_dir(&args.data_dir.join("certs"), "hale")),
        Command::Chaos(args) => Some(cli.client_tls.clone().or_from_dir(&args.data_dir().join("certs"), "hale")),
        Command::Tui(args) => Some(cli.client_tls.clone().or_from_dir(&args.cluster.data_dir.join("certs"), "hale")),
        Command::Status(args) => Some(cli.client_tls.clone().or_from_dir(&args.cluster.data_dir.join("certs"), "hale")),
        _ => Some(cli.client_tls.clone()),
    };
    if let Some(flags) = client_tls
        && let Err(e) = hale_client::tls::install(&flags)
    {
        eprintln!("hale: {e}");
        return std::process::ExitCode::FAILURE;
    }
    // An agent runs on the agent's own small runtime (one thread, one malloc arena), as
    // `hale-agent` does; every other command on a thread per core.
    let runtime = match &cli.command {
        Command::Agent(_) => hale_agent::runtime(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hale: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli.command, cli.client_tls));
    drop(runtime);
    if let Some(lab) = lab
        && let Err(e) = lab.remove()
    {
        eprintln!("hale: removing the network lab: {e} (the next `hale up --netns` removes what is left)");
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hale: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, client_tls: hale_client::tls::ClientTlsFlags) -> Result<()> {
    match command {
        Command::Up(args) => up::run(args, client_tls).await,
        Command::Shop(command) => shop_cmd::run(command).await,
        Command::Load(args) => load_cmd::run(args).await,
        Command::Agent(args) => agent_cmd::run(args).await,
        Command::Collector(args) => collector_cmd::run(*args).await,
        Command::Bench(BenchCommand { which }) => match which {
            BenchWhich::Ingest(args) => bench::ingest(args).await,
            BenchWhich::Alert(args) => bench_alert::alert(args).await,
            BenchWhich::Heal(args) => bench_heal::heal(args).await,
            BenchWhich::Query(args) => bench_query::query(args).await,
            BenchWhich::Retention(args) => bench_retention::retention(args).await,
            BenchWhich::Logs(args) => bench_logs::logs(args).await,
            BenchWhich::Spans(args) => bench_spans::spans(args).await,
            BenchWhich::Tracing(args) => bench_tracing::tracing(args).await,
            BenchWhich::Tui(args) => {
                bench_tui::run(&args);
                Ok(())
            }
        },
        Command::Rules(command) => file_checks::rules(command),
        Command::Silence(args) => silence::run(args).await,
        Command::Slo(command) => file_checks::slo(command),
        Command::Healer(args) => healer_cmd::run(*args).await,
        Command::Policies(command) => file_checks::policies(command),
        Command::Chaos(args) => chaos::run(args).await,
        Command::Certs(args) => certs::run(args),
        Command::Tui(args) => dashboard::tui(args).await,
        Command::Status(args) => {
            if !dashboard::status(args).await? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
