//! `hale tui` and `hale status`: the dashboard and its one-shot summary, pointed at a
//! cluster's collector and healer (addresses and tokens from its data dir), and the
//! actuator that carries out what the dashboard's keys confirm.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hale_core::ClusterConfig;
use hale_tui::app::Effect;
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
    Endpoints {
        collector: collector
            .or_else(|| cluster.map(|c| format!("http://{}", c.collector.listen)))
            .unwrap_or_else(|| "http://127.0.0.1:9464".into()),
        healer: healer
            .or_else(|| cluster.map(|c| format!("http://{}", c.healer.listen)))
            .unwrap_or_else(|| "http://127.0.0.1:9465".into()),
        agents: cluster
            .map(|c| c.nodes.iter().map(|n| (n.name.clone(), format!("http://{}", c.agent_listen(n)))).collect())
            .unwrap_or_default(),
    }
}

/// A running cluster's APIs, from its effective config.
pub fn endpoints_of(cluster: &ClusterConfig) -> Endpoints {
    endpoints(Some(cluster), None, None)
}

/// Approvals, pause, resets (the healer), silences (the collector) and chaos (the data
/// dir's cluster), with the cluster's tokens.
pub struct ClusterActuator {
    endpoints: Endpoints,
    /// The healer's write token and the collector's admin token (one secret in `hale up`).
    healer_token: Option<String>,
    admin_token: Option<String>,
    data_dir: PathBuf,
    client: reqwest::Client,
}

impl ClusterActuator {
    pub fn new(endpoints: Endpoints, cluster: Option<&ClusterConfig>, data_dir: &Path) -> ClusterActuator {
        let admin = cluster.map(|c| c.secrets.admin_token.clone());
        ClusterActuator {
            endpoints,
            healer_token: std::env::var("HALE_HEALER_TOKEN").ok().or_else(|| admin.clone()),
            admin_token: std::env::var("HALE_ADMIN_TOKEN").ok().or(admin),
            data_dir: data_dir.to_path_buf(),
            client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default(),
        }
    }

    async fn post(&self, url: String, token: &Option<String>, body: serde_json::Value) -> Result<String, String> {
        let mut r = self.client.post(&url).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.map_err(|e| e.without_url().to_string())?;
        let status = r.status();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        if status.is_success() {
            return Ok(v.to_string());
        }
        let message = v["error"]["message"].as_str().or(v["error"].as_str()).unwrap_or("").to_string();
        Err(format!("HTTP {}: {message}", status.as_u16()))
    }

    async fn carry_out(&self, effect: Effect) -> Result<String, String> {
        let h = self.endpoints.healer.trim_end_matches('/');
        match effect {
            Effect::Approve(id) => {
                self.post(format!("{h}/api/v1/actions/{id}/approve"), &self.healer_token, json!({})).await?;
                Ok(format!("approved {id}; it runs now"))
            }
            Effect::Reject(id) => {
                self.post(format!("{h}/api/v1/actions/{id}/reject"), &self.healer_token, json!({})).await?;
                Ok(format!("rejected {id}"))
            }
            Effect::SetPaused(paused) => {
                let what = if paused { "pause" } else { "resume" };
                self.post(format!("{h}/api/v1/{what}"), &self.healer_token, json!({})).await?;
                Ok(if paused { "healer paused".into() } else { "healer resumed".into() })
            }
            Effect::Reset(target) => {
                self.post(format!("{h}/api/v1/targets/{target}/reset"), &self.healer_token, json!({})).await?;
                Ok(format!("{target} reset: automatic repairs on it resume"))
            }
            Effect::Silence { matchers, duration } => {
                let d = humantime::parse_duration(&duration).map_err(|e| e.to_string())?;
                let ends = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + d).to_string();
                let matchers: Vec<_> = matchers
                    .iter()
                    .map(|(k, v)| json!({"name": k, "value": v, "isRegex": false, "isEqual": true}))
                    .collect();
                let who = std::env::var("USER").unwrap_or_else(|_| "hale tui".into());
                let body = json!({"matchers": matchers, "endsAt": ends, "createdBy": who, "comment": "from hale tui"});
                let c = self.endpoints.collector.trim_end_matches('/');
                let reply = self.post(format!("{c}/api/v1/silences"), &self.admin_token, body).await?;
                let id: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
                Ok(format!("silenced for {duration} ({})", id["data"]["silenceID"].as_str().unwrap_or("?")))
            }
            Effect::Chaos { kind, target } => {
                let args = crate::chaos::ChaosArgs::from_menu(kind, &target, &self.data_dir);
                crate::chaos::apply(args).await.map_err(|e| format!("{e:#}"))
            }
            Effect::Quit | Effect::Refresh => Ok(String::new()),
        }
    }
}

impl hale_tui::Actuator for ClusterActuator {
    fn act(&self, effect: Effect) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(self.carry_out(effect))
    }
}

/// `hale tui`.
pub async fn tui(args: TuiArgs) -> Result<()> {
    let ClusterFlags { data_dir, collector, healer } = args.cluster;
    let cluster = cluster_of(&data_dir);
    let endpoints = endpoints(cluster.as_ref(), collector, healer);
    let actuator = Arc::new(ClusterActuator::new(endpoints.clone(), cluster.as_ref(), &data_dir));
    let options = hale_tui::Options {
        endpoints,
        readonly: args.readonly,
        // Chaos only on a cluster whose data dir says where its processes are.
        chaos: cluster.is_some(),
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
