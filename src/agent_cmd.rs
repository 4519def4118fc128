//! `hale agent`: its flags, laid over agent.toml by the agent's own config
//! ([`AgentConfig::with_flags`]), and the agent run until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use hale_agent::config::{AgentConfig, AgentFlags};

/// No `Debug`: it holds tokens.
#[derive(clap::Args)]
pub struct AgentArgs {
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

/// `hale agent`.
pub async fn run(args: AgentArgs) -> Result<()> {
    let AgentArgs { config, node, listen, remote_write, logs_endpoint, token, ingest_token, data_dir } = args;
    let file = match &config {
        Some(path) => {
            let source = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(AgentConfig::parse(&source).with_context(|| path.display().to_string())?)
        }
        None => None,
    };
    let flags = AgentFlags { node, listen, remote_write, logs_endpoint, token, ingest_token, data_dir };
    let config = AgentConfig::with_flags(file, flags)?;
    crate::logging::to_stderr("info");
    Ok(hale_agent::run(config, crate::shutdown::requested()).await?)
}
