//! `hale agent`: its flags, laid over agent.toml by the agent's own config
//! ([`ConfigSource::load`]), and the agent run until Ctrl-C or SIGTERM (SIGHUP reloads).

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use hale_agent::config::{AgentFlags, ConfigSource};

/// No `Debug`: it holds tokens.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// agent.toml; the flags below override it. Read again at SIGHUP or `POST /-/reload`.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: AgentFlags,
    #[command(flatten)]
    tls: hale_serve::tls::TlsFlags,
}

/// `hale agent`.
pub async fn run(args: AgentArgs) -> Result<()> {
    let AgentArgs { config, flags, tls } = args;
    let security = tls.security()?;
    let source = ConfigSource { file: config, flags };
    let config = source.load().map_err(|e| anyhow!(e))?;
    let _tracing = crate::logging::to_stderr_traced("info", "hale-agent", &config.node, 0.1);
    Ok(hale_agent::run(config, source, security, crate::shutdown::requested()).await?)
}
