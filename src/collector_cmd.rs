//! `hale collector`: its flags, laid over collector.toml by the collector's own config
//! ([`CollectorFile::into_config`]), and the collector run until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hale_collector::config::{CollectorFile, CollectorFlags};

/// No `Debug`: it holds a token.
#[derive(clap::Args)]
pub struct CollectorArgs {
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

impl CollectorArgs {
    /// The config file's path, and what the flags say over it.
    fn split(self) -> (Option<PathBuf>, CollectorFlags) {
        #[rustfmt::skip]
        let CollectorArgs {
            config, listen, data_dir, ingest_token, retention, retention_bytes, checkpoint_interval, rules,
            evaluation_interval, alert_webhooks, webhook_secret, alertmanagers, admin_token, group_wait,
            group_interval, repeat_interval, slos, slo_time_scale, slo_min_events,
        } = self;
        #[rustfmt::skip]
        let flags = CollectorFlags {
            listen, data_dir, ingest_token, retention, retention_bytes, checkpoint_interval, rules,
            evaluation_interval, alert_webhooks, webhook_secret, alertmanagers, admin_token, group_wait,
            group_interval, repeat_interval, slos, slo_time_scale, slo_min_events,
        };
        (config, flags)
    }
}

/// `hale collector`.
pub async fn run(args: CollectorArgs) -> Result<()> {
    crate::logging::to_stderr("info");
    let (path, flags) = args.split();
    let file = match &path {
        Some(path) => {
            let source = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            CollectorFile::parse(&source).with_context(|| path.display().to_string())?.0
        }
        None => CollectorFile::default(),
    };
    // Rule and SLO files named in the config are relative to it, as in Prometheus.
    let dir = path.as_deref().and_then(Path::parent).unwrap_or(Path::new(""));
    let config = file.into_config(dir, flags)?;
    Ok(hale_collector::run(config, crate::shutdown::requested()).await?)
}
