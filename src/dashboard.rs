//! `hale tui` and `hale status`: the dashboard and its one-shot summary, pointed at a
//! cluster's collector and healer (addresses and tokens from its data dir), and the
//! actuator that carries out what the dashboard's keys confirm.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hale_core::ClusterConfig;
use hale_tui::act::{ChaosHook, HttpActuator};
use hale_tui::source::{Endpoints, Source};
use serde_json::json;

/// Which cluster: its data dir, or the APIs' addresses.
#[derive(Debug, clap::Args)]
pub struct ClusterFlags {
    /// The cluster's data dir: its cluster.toml gives the addresses and tokens.
    #[arg(long, default_value = ".hale")]
    pub data_dir: PathBuf,
    /// The collector's URL (default: from the data dir, else 127.0.0.1:9464).
    #[arg(long)]
    pub collector: Option<String>,
    /// The healer's URL (default: from the data dir, else 127.0.0.1:9465).
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

/// The cluster a data dir describes, if `hale up` wrote one there.
fn cluster_of(data_dir: &Path) -> Option<ClusterConfig> {
    let text = std::fs::read_to_string(data_dir.join("cluster.toml")).ok()?;
    ClusterConfig::parse(&text).ok()
}

fn endpoints(cluster: Option<&ClusterConfig>, collector: Option<String>, healer: Option<String>) -> Endpoints {
    let explicit = collector.clone().or(healer.clone());
    Endpoints {
        collector: collector
            .or_else(|| cluster.map(|c| format!("http://{}", c.collector.listen)))
            .unwrap_or_else(|| "http://127.0.0.1:9464".into()),
        healer: healer
            .or_else(|| cluster.map(|c| format!("http://{}", c.healer.listen)))
            .unwrap_or_else(|| "http://127.0.0.1:9465".into()),
        // The data dir's agents only when the screen shows the data dir's cluster.
        agents: cluster
            .filter(|_| explicit.is_none())
            .map(|c| c.nodes.iter().map(|n| (n.name.clone(), format!("http://{}", c.agent_listen(n)))).collect())
            .unwrap_or_default(),
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
    let ClusterFlags { data_dir, collector, healer } = args.cluster;
    let explicit = collector.clone().or(healer.clone());
    let cluster = cluster_of(&data_dir);
    let endpoints = endpoints(cluster.as_ref(), collector, healer);
    let actuator = Arc::new(actuator(endpoints.clone(), cluster.as_ref(), &data_dir));
    let options = hale_tui::Options {
        endpoints,
        readonly: args.readonly,
        // Chaos only on the cluster whose data dir says where its processes are, and only
        // when the screen shows that cluster (no other collector or healer given).
        chaos: cluster.is_some() && explicit.is_none(),
        owns_cluster: false,
        refresh: args.refresh,
    };
    hale_tui::run(options, actuator, std::future::pending()).await.context("the terminal dashboard")
}

/// `hale status`: the health summary for scripts; fails when an SLO pages or a service
/// has no ready replica (or the collector cannot be read).
pub async fn status(args: StatusArgs) -> Result<bool> {
    let ClusterFlags { data_dir, collector, healer } = args.cluster;
    let cluster = cluster_of(&data_dir);
    let mut source = Source::new(endpoints(cluster.as_ref(), collector, healer));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let snapshot = source.refresh(now).await;
    let health = snapshot.health();
    if args.json {
        let services: Vec<_> = snapshot
            .services
            .iter()
            .flatten()
            .map(|s| json!({"service": s.name, "ready": s.ready(), "replicas": s.replicas.len()}))
            .collect();
        let slos: Vec<_> = snapshot
            .slos
            .iter()
            .flatten()
            .map(|o| json!({"service": o.service, "slo": o.name, "status": o.status.label(), "sli": o.sli, "error_budget_remaining": o.budget_left}))
            .collect();
        let firing = snapshot.alerts.iter().flatten().filter(|a| a.firing).count();
        let out = json!({
            "healthy": health.healthy,
            "problems": health.problems,
            "collector": source.collector.is_up(),
            "healer": source.healer.is_up(),
            "services": services,
            "slos": slos,
            "firing_alerts": firing,
        });
        println!("{out}");
        return Ok(health.healthy);
    }
    let mark = |ok: bool| if ok { "ok " } else { "BAD" };
    println!("collector {}   healer {}", mark(source.collector.is_up()), mark(source.healer.is_up()));
    for s in snapshot.services.iter().flatten() {
        println!("  {} {:<8} {}/{} replicas ready", mark(s.ready() > 0), s.name, s.ready(), s.replicas.len());
    }
    for o in snapshot.slos.iter().flatten() {
        let sli = o.sli.map_or("—".to_string(), |v| format!("{:.3}%", v * 100.0));
        println!(
            "  {} SLO {}/{} {} (objective {}%, SLI {sli})",
            mark(o.status != hale_tui::model::SloStatus::Page),
            o.service,
            o.name,
            o.status.label(),
            o.objective
        );
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
