//! `hale agent`: its flags, laid over agent.toml by the agent's own config
//! ([`AgentConfig::with_flags`]), and the agent run until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result};
use hale_agent::config::{AgentConfig, AgentFlags};

/// No `Debug`: it holds tokens.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// agent.toml; the flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: AgentFlags,
}

/// `hale agent`.
pub async fn run(args: AgentArgs) -> Result<()> {
    let AgentArgs { config, flags } = args;
    let file = match &config {
        Some(path) => {
            let source = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(AgentConfig::parse(&source).with_context(|| path.display().to_string())?)
        }
        None => None,
    };
    let config = AgentConfig::with_flags(file, flags)?;
    crate::logging::to_stderr("info");
    Ok(hale_agent::run(config, crate::shutdown::requested()).await?)
}
