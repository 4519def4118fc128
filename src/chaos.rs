//! `hale chaos`: faults for a running cluster, with its addresses and tokens read from
//! the data dir (`cluster.toml`, as `hale up` wrote it).
//!
//! Replica faults go through the replica's `/admin/chaos` (hang, latency, errors, cpu) or
//! are a real SIGKILL (kill). `node-down` freezes a node's agent and every replica it runs
//! (SIGSTOP): a frozen process answers nothing and is not restarted by anyone, which is
//! what a dead machine looks like from the network; `node-up` thaws them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hale_core::ClusterConfig;
use hale_netlab::LinkCommand;
use hale_shop::http::chaos::ChaosRequest;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    #[command(subcommand)]
    fault: Fault,
    /// The cluster's data dir (where `hale up` wrote cluster.toml).
    #[arg(long, global = true, default_value = ".hale")]
    data_dir: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum Fault {
    /// SIGKILL a replica (its agent restarts it).
    Kill { instance: String },
    /// Make a replica stop answering, alive but hung.
    Hang {
        instance: String,
        #[arg(long, default_value = "60s")]
        duration: String,
    },
    /// Add latency to every request of a replica.
    Latency {
        instance: String,
        #[arg(long, default_value_t = 500)]
        ms: u64,
        #[arg(long, default_value = "60s")]
        duration: String,
    },
    /// Answer a share of a replica's API requests with 500.
    Errors {
        instance: String,
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        #[arg(long, default_value = "60s")]
        duration: String,
    },
    /// Burn one core in a replica.
    Cpu {
        instance: String,
        #[arg(long, default_value = "60s")]
        duration: String,
    },
    /// Freeze a node's agent and all its replicas, as if the machine died.
    NodeDown { node: String },
    /// Thaw a node frozen by node-down.
    NodeUp { node: String },
    /// Cut a node off the network (`hale up --netns`): its processes keep running and
    /// answer whoever can still reach them.
    Partition {
        node: String,
        /// Cut it off from these hosts only (comma-separated; `control` is the host of
        /// the collector, healer and gateway); default every other host.
        #[arg(long, value_delimiter = ',')]
        from: Vec<String>,
    },
    /// Give a node a whole link again: no cut, no delay, no loss.
    Heal { node: String },
    /// Delay every frame a node sends (`hale up --netns`); 0 removes the delay.
    Delay {
        node: String,
        #[arg(long, default_value_t = 200)]
        ms: u64,
    },
    /// Drop a share of the frames a node sends (`hale up --netns`); 0 removes the loss.
    Loss {
        node: String,
        #[arg(long, default_value_t = 10.0)]
        percent: f64,
    },
}

impl ChaosArgs {
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// `hale chaos node-down <node>` on a cluster's data dir (for benchmarks).
    pub fn node_down(node: &str, data_dir: &std::path::Path) -> ChaosArgs {
        ChaosArgs { fault: Fault::NodeDown { node: node.to_string() }, data_dir: data_dir.to_path_buf() }
    }

    /// `hale chaos node-up <node>`.
    pub fn node_up(node: &str, data_dir: &std::path::Path) -> ChaosArgs {
        ChaosArgs { fault: Fault::NodeUp { node: node.to_string() }, data_dir: data_dir.to_path_buf() }
    }
}

fn seconds(text: &str) -> Result<u64> {
    humantime::parse_duration(text)
        .map(|d| d.as_secs().max(1))
        .with_context(|| format!("{text:?} is not a duration; write 30s or 2m"))
}

fn cluster(data_dir: &std::path::Path) -> Result<ClusterConfig> {
    let path = data_dir.join("cluster.toml");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("reading {}; is a cluster running with --data-dir {}?", path.display(), data_dir.display())
    })?;
    crate::cluster_file::parse(&text, &path)
}

/// `hale chaos`: injects the fault and prints what happened.
pub async fn run(args: ChaosArgs) -> Result<()> {
    println!("{}", apply(args).await?);
    Ok(())
}

impl ChaosArgs {
    /// The faults the dashboard's chaos menu offers, with their menu's defaults.
    pub fn from_menu(kind: hale_tui::app::ChaosKind, target: &str, data_dir: &std::path::Path) -> ChaosArgs {
        use hale_tui::app::ChaosKind;
        let (instance, duration) = (target.to_string(), "60s".to_string());
        let fault = match kind {
            ChaosKind::Kill => Fault::Kill { instance },
            ChaosKind::Hang => Fault::Hang { instance, duration },
            ChaosKind::Latency => Fault::Latency { instance, ms: 300, duration },
            ChaosKind::Errors => Fault::Errors { instance, rate: 0.5, duration },
            ChaosKind::NodeDown => Fault::NodeDown { node: instance },
            ChaosKind::NodeUp => Fault::NodeUp { node: instance },
            ChaosKind::Partition => Fault::Partition { node: instance, from: Vec::new() },
            ChaosKind::Heal => Fault::Heal { node: instance },
            ChaosKind::Delay => Fault::Delay { node: instance, ms: 200 },
            ChaosKind::Loss => Fault::Loss { node: instance, percent: 10.0 },
        };
        ChaosArgs { fault, data_dir: data_dir.to_path_buf() }
    }
}

/// Injects the fault; says what was done.
pub async fn apply(args: ChaosArgs) -> Result<String> {
    let cluster = cluster(&args.data_dir)?;
    let client = hale_client::tls::builder().timeout(Duration::from_secs(5)).build()?;
    let replica = |name: &str| -> Result<hale_core::Instance> {
        cluster.instances().into_iter().find(|i| i.name == name).ok_or_else(|| {
            let names: Vec<String> = cluster.instances().into_iter().map(|i| i.name).collect();
            anyhow::anyhow!("no replica {name:?}; the cluster has {}", names.join(", "))
        })
    };
    let inject = |instance: &str, body: ChaosRequest| {
        let target = replica(instance);
        let (client, token) = (client.clone(), cluster.secrets.admin_token.clone());
        async move {
            let target = target?;
            let r = client
                .post(format!("{}/admin/chaos", target.url()))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .with_context(|| format!("reaching {} at {}", target.name, target.listen))?;
            if !r.status().is_success() {
                bail!("{} answered {}: {}", target.name, r.status(), r.text().await.unwrap_or_default());
            }
            let _ = r.bytes().await;
            Ok(format!("{}: fault injected", target.name))
        }
    };
    match args.fault {
        Fault::Hang { instance, duration } => {
            let duration_secs = Some(seconds(&duration)?);
            inject(&instance, ChaosRequest { hang: true, duration_secs, ..Default::default() }).await
        }
        Fault::Latency { instance, ms, duration } => {
            let duration_secs = Some(seconds(&duration)?);
            inject(&instance, ChaosRequest { latency_ms: Some(ms), duration_secs, ..Default::default() }).await
        }
        Fault::Errors { instance, rate, duration } => {
            if !(0.0..=1.0).contains(&rate) {
                bail!("--rate must be between 0 and 1");
            }
            let duration_secs = Some(seconds(&duration)?);
            inject(&instance, ChaosRequest { error_rate: Some(rate), duration_secs, ..Default::default() }).await
        }
        Fault::Cpu { instance, duration } => {
            inject(&instance, ChaosRequest { cpu_burn_secs: Some(seconds(&duration)?), ..Default::default() }).await
        }
        Fault::Kill { instance } => {
            let target = replica(&instance)?;
            let pid = processes(&cluster, &target.node)
                .await?
                .into_iter()
                .find(|(name, _)| *name == instance)
                .and_then(|(_, pid)| pid)
                .ok_or_else(|| anyhow::anyhow!("{instance} is not running"))?;
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL).with_context(|| format!("SIGKILL {pid}"))?;
            Ok(format!("{instance}: SIGKILL sent to {pid}"))
        }
        Fault::NodeDown { node } => node_down(&cluster, &args.data_dir, &node).await,
        Fault::NodeUp { node } => node_up(&args.data_dir, &node),
        Fault::Partition { node, from } => link(&args.data_dir, LinkCommand::Partition { host: node, from }).await,
        Fault::Heal { node } => link(&args.data_dir, LinkCommand::Heal { host: node }).await,
        Fault::Delay { node, ms } => link(&args.data_dir, LinkCommand::Delay { host: node, ms }).await,
        Fault::Loss { node, percent } => link(&args.data_dir, LinkCommand::Loss { host: node, percent }).await,
    }
}

/// A change to a node's link in the cluster's network lab, applied by its switch.
async fn link(data_dir: &std::path::Path, command: LinkCommand) -> Result<String> {
    let lab = crate::netns::lab_of(data_dir)?;
    Ok(tokio::task::spawn_blocking(move || lab.command(&command)).await??)
}

/// (replica name, pid) of what a node's agent runs.
async fn processes(cluster: &ClusterConfig, node: &str) -> Result<Vec<(String, Option<u32>)>> {
    let n = cluster.nodes.iter().find(|n| n.name == node).ok_or_else(|| anyhow::anyhow!("no node {node:?}"))?;
    let list = agent(cluster, n)?.processes().await.with_context(|| format!("reaching the agent of {node}"))?;
    Ok(list.processes.into_iter().map(|p| (p.name, p.pid)).collect())
}

/// The typed client of a node's agent, with chaos's short timeout.
fn agent(cluster: &ClusterConfig, node: &hale_core::NodeConfig) -> Result<hale_client::Agent> {
    Ok(hale_client::Agent::with_timeout(&cluster.url(cluster.agent_listen(node)), Duration::from_secs(5))?)
}

fn frozen_file(data_dir: &std::path::Path, node: &str) -> PathBuf {
    data_dir.join(format!("chaos-{node}.frozen"))
}

async fn node_down(cluster: &ClusterConfig, data_dir: &std::path::Path, node: &str) -> Result<String> {
    let n = cluster.nodes.iter().find(|n| n.name == node).ok_or_else(|| anyhow::anyhow!("no node {node:?}"))?;
    let health = agent(cluster, n)?
        .health()
        .await
        .with_context(|| format!("reaching the agent of {node}; is it already down?"))?;
    let agent = health.pid.ok_or_else(|| anyhow::anyhow!("the agent of {node} does not say its pid"))?;
    let mut pids: Vec<u32> = processes(cluster, node).await?.into_iter().filter_map(|(_, p)| p).collect();
    // The agent first, so it cannot react to its replicas stopping.
    pids.insert(0, agent);
    std::fs::write(frozen_file(data_dir, node), pids.iter().map(u32::to_string).collect::<Vec<_>>().join("\n"))?;
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGSTOP);
    }
    Ok(format!(
        "{node}: down (agent and {} replicas frozen); `hale chaos node-up {node}` brings it back",
        pids.len() - 1
    ))
}

fn node_up(data_dir: &std::path::Path, node: &str) -> Result<String> {
    let path = frozen_file(data_dir, node);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{node} was not taken down by `hale chaos node-down`"))?;
    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
    }
    std::fs::remove_file(&path)?;
    Ok(format!("{node}: up"))
}
