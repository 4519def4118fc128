//! `hale tui` and `hale status`: the dashboard and its one-shot summary, pointed at a
//! cluster's collector and healer (addresses and tokens from its data dir), and the
//! actuator that carries out what the dashboard's keys confirm.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hale_core::api::{NodeStatus, ServiceStatus, SloSummary, StatusReport};
use hale_core::cluster::AgentState;
use hale_core::{ClusterConfig, ServiceKind};
use hale_tui::act::{ChaosHook, HttpActuator};
use hale_tui::info::ClusterInfo;
use hale_tui::model::slo_label;
use hale_tui::source::{Endpoints, Source};

/// Which cluster: its data dir, or the APIs' addresses.
#[derive(Debug, clap::Args)]
pub struct ClusterFlags {
    /// The cluster's data dir: its cluster.toml gives the addresses and tokens.
    #[arg(long, default_value = ".hale")]
    pub data_dir: PathBuf,
    /// The collector's URL (default: from the data dir's cluster.toml).
    #[arg(long)]
    pub collector: Option<String>,
    /// The healer's URL (default: from the data dir's cluster.toml).
    #[arg(long)]
    pub healer: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct TuiArgs {
    #[command(flatten)]
    pub cluster: ClusterFlags,
    /// Show everything, change nothing: no action keys at all.
    #[arg(long)]
    pub readonly: bool,
    /// How often to read the APIs.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cluster: ClusterFlags,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The cluster a data dir describes: `None` when it has no cluster.toml, an error that
/// names the file and the line when it has a broken one (a broken file is never taken
/// for an absent one: that would report on whatever else listens on the default ports).
pub fn cluster_of(data_dir: &Path) -> Result<Option<ClusterConfig>> {
    let path = data_dir.join("cluster.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    crate::cluster_file::parse(&text, &path).map(Some).with_context(|| {
        format!(
            "the data dir's cluster.toml cannot be used: fix it, or start the cluster again with `hale up --data-dir \
             {}`, which rewrites it",
            data_dir.display()
        )
    })
}

/// What a command says when a data dir has no cluster: where it looked and the ways on.
pub fn no_cluster(data_dir: &Path, flags: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no cluster.toml in {}: start one with `hale up` (or `hale up --data-dir {0}`), or pass the data dir of a \
         running cluster with --data-dir, or its addresses with {flags}",
        data_dir.display()
    )
}

/// The cluster a command reports on: the data dir's, with the addresses given on the
/// command line in front. Without a cluster.toml both addresses must be given: a guessed
/// 127.0.0.1 could be another cluster's.
fn resolve(flags: ClusterFlags) -> Result<(Option<ClusterConfig>, Endpoints)> {
    let ClusterFlags { data_dir, collector, healer } = flags;
    let cluster = cluster_of(&data_dir)?;
    if cluster.is_none() {
        match (&collector, &healer) {
            (Some(_), Some(_)) => {}
            (None, None) => return Err(no_cluster(&data_dir, "--collector URL --healer URL")),
            (Some(_), None) => bail!(
                "no cluster.toml in {} to say where the healer is: pass --healer URL as well (or --data-dir)",
                data_dir.display()
            ),
            (None, Some(_)) => bail!(
                "no cluster.toml in {} to say where the collector is: pass --collector URL as well (or --data-dir)",
                data_dir.display()
            ),
        }
    }
    let endpoints = endpoints(cluster.as_ref(), collector, healer);
    Ok((cluster, endpoints))
}

fn endpoints(cluster: Option<&ClusterConfig>, collector: Option<String>, healer: Option<String>) -> Endpoints {
    let explicit = collector.is_some() || healer.is_some();
    // `resolve` makes sure each address is either given or in the cluster.toml.
    let from_cluster =
        |which: fn(&ClusterConfig) -> std::net::SocketAddr| cluster.map(|c| c.url(which(c))).unwrap_or_default();
    Endpoints {
        collector: collector.unwrap_or_else(|| from_cluster(|c| c.collector.listen)),
        healer: healer.unwrap_or_else(|| from_cluster(|c| c.healer.listen)),
        // The data dir's agents only when the screen shows the data dir's cluster.
        agents: cluster
            .filter(|_| !explicit)
            .map(|c| c.nodes.iter().map(|n| (n.name.clone(), c.url(c.agent_listen(n)))).collect())
            .unwrap_or_default(),
    }
}

/// What the dashboard's info view shows about a cluster: `hale up`'s banner (the URLs,
/// the demo logins, where the admin token is, the data dir), kept on screen.
pub fn info_of(cluster: &ClusterConfig, data_dir: &Path, load_rps: Option<u32>) -> ClusterInfo {
    let replicas = cluster
        .instances()
        .into_iter()
        .filter(|i| i.service != ServiceKind::Gateway)
        .map(|i| {
            let on = if i.service == ServiceKind::Catalog { format!("{}, {}", i.node, i.role) } else { i.node.clone() };
            (i.name.clone(), i.url(), on)
        })
        .collect();
    ClusterInfo {
        gateway: Some(cluster.url(cluster.gateway.listen)),
        collector: cluster.url(cluster.collector.listen),
        healer: cluster.url(cluster.healer.listen),
        agents: cluster.nodes.iter().map(|n| (n.name.clone(), cluster.url(cluster.agent_listen(n)))).collect(),
        replicas,
        logins: cluster.demo_logins.iter().map(|l| (l.username.clone(), l.password.expose().clone())).collect(),
        data_dir: Some(data_dir.display().to_string()),
        load: load_rps.filter(|r| *r > 0).map(|r| format!("{r} requests/s of browse, search and buy traffic")),
    }
}

/// A running cluster's APIs, from its effective config.
pub fn endpoints_of(cluster: &ClusterConfig) -> Endpoints {
    endpoints(Some(cluster), None, None)
}

/// The dashboard's actuator for a cluster: its tokens (the environment's win), and chaos
/// on the processes its data dir lists.
pub fn actuator(endpoints: Endpoints, cluster: Option<&ClusterConfig>, data_dir: &Path) -> HttpActuator {
    let admin = cluster.map(|c| c.secrets.admin_token.clone());
    let healer_token = std::env::var("HALE_HEALER_TOKEN").ok().or_else(|| admin.clone());
    let admin_token = std::env::var("HALE_ADMIN_TOKEN").ok().or(admin);
    let data_dir = data_dir.to_path_buf();
    let chaos: ChaosHook = Box::new(move |kind, target| {
        let args = crate::chaos::ChaosArgs::from_menu(kind, &target, &data_dir);
        Box::pin(async move { crate::chaos::apply(args).await.map_err(|e| format!("{e:#}")) })
    });
    HttpActuator::new(endpoints, healer_token, admin_token, cluster.map(|_| chaos))
}

/// `hale tui`.
pub async fn tui(args: TuiArgs) -> Result<()> {
    let explicit = args.cluster.collector.is_some() || args.cluster.healer.is_some();
    let data_dir = args.cluster.data_dir.clone();
    let (cluster, endpoints) = resolve(args.cluster)?;
    let actuator = Arc::new(actuator(endpoints.clone(), cluster.as_ref(), &data_dir));
    let options = hale_tui::Options {
        endpoints: endpoints.clone(),
        readonly: args.readonly,
        // Chaos only on the cluster whose data dir says where its processes are, and only
        // when the screen shows that cluster (no other collector or healer given).
        chaos: cluster.is_some() && !explicit,
        owns_cluster: false,
        refresh: args.refresh,
        // The data dir's cluster when the screen shows it, else only the addresses given.
        info: Some(match cluster.as_ref().filter(|_| !explicit) {
            Some(c) => info_of(c, &data_dir, None),
            None => ClusterInfo {
                collector: endpoints.collector.clone(),
                healer: endpoints.healer.clone(),
                ..ClusterInfo::default()
            },
        }),
    };
    hale_tui::run(options, actuator, std::future::pending()).await.context("the terminal dashboard")
}

/// One SLO's line of `hale status`: its status word leads, alone (an `ok` mark before
/// `burning` read as two verdicts).
fn slo_line(o: &hale_tui::model::Slo) -> String {
    let sli = o.sli.map_or("—".to_string(), |v| format!("{:.3}%", v * 100.0));
    format!("  {:<7} SLO {}/{} (objective {}%, SLI {sli})", slo_label(o.status), o.service, o.name, o.objective)
}

/// `hale status`: the health summary for scripts; fails when an SLO pages or a service
/// has no ready replica (or the collector cannot be read).
pub async fn status(args: StatusArgs) -> Result<bool> {
    let (_, endpoints) = resolve(args.cluster)?;
    let mut source = Source::new(endpoints);
    let now = hale_core::time::now_ms();
    let snapshot = source.refresh(now).await;
    let health = snapshot.health();
    if args.json {
        let report = StatusReport {
            collector: source.collector.is_up(),
            firing_alerts: snapshot.alerts.iter().flatten().filter(|a| a.firing).count(),
            healer: source.healer.is_up(),
            healthy: health.healthy,
            nodes: snapshot
                .nodes
                .iter()
                .flatten()
                .map(|n| NodeStatus { agent: n.agent, last_seen_secs_ago: n.last_seen_secs_ago, node: n.node.clone() })
                .collect(),
            problems: health.problems,
            services: snapshot
                .services
                .iter()
                .flatten()
                .map(|s| ServiceStatus { ready: s.ready(), replicas: s.replicas.len(), service: s.name.clone() })
                .collect(),
            slos: snapshot
                .slos
                .iter()
                .flatten()
                .map(|o| SloSummary {
                    error_budget_remaining: o.budget_left,
                    service: o.service.clone(),
                    sli: o.sli,
                    slo: o.name.clone(),
                    status: slo_label(o.status).to_string(),
                })
                .collect(),
        };
        println!("{}", serde_json::to_string(&report).context("encoding the status")?);
        return Ok(report.healthy);
    }
    let mark = |ok: bool| if ok { "ok " } else { "BAD" };
    println!("collector {}   healer {}", mark(source.collector.is_up()), mark(source.healer.is_up()));
    for n in snapshot.nodes.iter().flatten() {
        let seen = n.last_seen_secs_ago.map_or(String::new(), |s| format!(", last report {s:.0}s ago"));
        println!("  {} {:<8} agent {}{seen}", mark(n.agent_up), n.node, agent_word(n.agent));
    }
    for s in snapshot.services.iter().flatten() {
        println!("  {} {:<8} {}/{} replicas ready", mark(s.ready() > 0), s.name, s.ready(), s.replicas.len());
    }
    for o in snapshot.slos.iter().flatten() {
        println!("{}", slo_line(o));
    }
    let firing = snapshot.alerts.iter().flatten().filter(|a| a.firing).count();
    println!("  firing alerts: {firing}");
    if health.healthy {
        println!("healthy");
    } else {
        for p in &health.problems {
            println!("problem: {p}");
        }
    }
    Ok(health.healthy)
}

/// The state as `hale status` prints it (the JSON's word too).
fn agent_word(state: AgentState) -> &'static str {
    match state {
        AgentState::Up => "up",
        AgentState::Stale => "stale",
        AgentState::Down => "down",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The info view's snapshot (tui's fixture) shows what `hale up` with the defaults
    /// really gives it, so the README's screen is true.
    /// Issue #12, finding 18: `ok … burning` on one line; the status word is the mark.
    #[test]
    fn an_slo_line_says_its_status_once() {
        use hale_tui::model::{Slo, SloStatus};
        let slo = |status| Slo {
            service: "orders".into(),
            name: "checkout-availability".into(),
            objective: 99.5,
            sli: Some(0.98),
            budget_left: None,
            burn_1h: None,
            burn_6h: None,
            status,
        };
        let burning = slo_line(&slo(SloStatus::Ticket));
        assert!(burning.trim_start().starts_with("burning"), "{burning}");
        assert!(!burning.split_whitespace().any(|w| w == "ok"), "{burning}");
        let paging = slo_line(&slo(SloStatus::Page));
        assert!(paging.trim_start().starts_with("PAGE") && !paging.contains("ok"), "{paging}");
        assert!(slo_line(&slo(SloStatus::Ok)).trim_start().starts_with("ok "));
    }

    #[test]
    fn the_info_views_fixture_is_the_default_cluster() {
        let cluster = ClusterConfig::parse(hale_core::DEFAULT_CLUSTER_TOML).expect("config");
        let real = info_of(&cluster, Path::new("/home/sre/.hale"), Some(20));
        let shown = hale_tui::fixture::info();
        assert_eq!(real.replicas, shown.replicas);
        assert_eq!(real.agents, shown.agents);
        assert_eq!((real.gateway, real.collector, real.healer), (shown.gateway, shown.collector, shown.healer));
        assert_eq!((real.data_dir, real.load), (shown.data_dir, shown.load));
        assert_eq!(real.logins.len(), cluster.demo_logins.len());
    }
}
