//! `hale collector`: its flags, laid over collector.toml by the collector's own config
//! ([`CollectorFile::into_config`]), and the collector run until Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hale_collector::config::{CollectorFile, CollectorFlags};

/// No `Debug`: it holds a token.
#[derive(clap::Args)]
pub struct CollectorArgs {
    /// collector.toml for the settings below; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: CollectorFlags,
    #[command(flatten)]
    tls: hale_serve::tls::TlsFlags,
}

/// `hale collector`.
pub async fn run(args: CollectorArgs) -> Result<()> {
    let _tracing = crate::logging::to_stderr_traced("info", "hale-collector", "collector", 0.1);
    let CollectorArgs { config: path, flags, tls } = args;
    let security = tls.security()?;
    let file = match &path {
        Some(path) => {
            let source = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            CollectorFile::parse(&source).with_context(|| path.display().to_string())?.0
        }
        None => CollectorFile::default(),
    };
    // Rule and SLO files named in the config are relative to it, as in Prometheus.
    let dir = path.as_deref().and_then(Path::parent).unwrap_or(Path::new(""));
    let mut config = file.into_config(dir, flags)?;
    // Links in notifications point where the collector is served, https when it is.
    if config.notify.external_url == format!("http://{}", config.listen) {
        config.notify.external_url = security.base_url(config.listen);
    }
    Ok(hale_collector::run(config, security, crate::shutdown::requested()).await?)
}
