//! `agent.toml`: what one node agent watches, where it ships, and which replicas it runs.
//! Flags override the common settings ([`AgentConfig::with_flags`]); everything is
//! validated before the agent starts, and errors name the line.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hale_core::ProcessSpec;
use hale_core::token::Token;
use serde::{Deserialize, Serialize};

pub use hale_core::ConfigError;

/// Where the agent listens when neither a flag nor a file says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9100";
/// Where its queues live when neither a flag nor a file says.
pub const DEFAULT_DATA_DIR: &str = ".hale/agent";

fn default_scrape_interval_ms() -> u64 {
    15_000
}
fn default_probe_interval_ms() -> u64 {
    5_000
}
fn default_timeout_ms() -> u64 {
    2_000
}
fn default_metrics_path() -> String {
    "/metrics".into()
}
fn default_health_path() -> String {
    "/healthz".into()
}
fn default_ready_path() -> String {
    "/readyz".into()
}

/// Compression of log batches. `auto`: zstd, unless the endpoint is on this machine
/// (loopback), where compressing costs CPU and saves no network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Auto,
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// What `auto` means for `endpoint`.
    pub fn for_endpoint(self, endpoint: &str) -> Compression {
        if self != Compression::Auto {
            return self;
        }
        let host =
            endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest).split(['/', '?']).next().unwrap_or_default();
        // `host:port`, `[v6]:port` or a bare host.
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        let local =
            host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if local { Compression::None } else { Compression::Zstd }
    }
}

/// What to do when a disk queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest segment: recent data is worth more (metrics).
    DropOldest,
    /// Stop reading the source until there is room: nothing is lost while the source
    /// keeps it (log files stay on disk).
    Block,
}

/// One disk queue's limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Upper bound of the queue on disk.
    #[serde(default = "QueueConfig::default_max_bytes")]
    pub max_bytes: u64,
    /// Size at which a segment file is closed and a new one started.
    #[serde(default = "QueueConfig::default_segment_bytes")]
    pub segment_bytes: u64,
    pub when_full: WhenFull,
}

impl QueueConfig {
    fn default_max_bytes() -> u64 {
        256 << 20
    }
    fn default_segment_bytes() -> u64 {
        8 << 20
    }
    pub fn metrics() -> Self {
        QueueConfig {
            max_bytes: Self::default_max_bytes(),
            segment_bytes: Self::default_segment_bytes(),
            when_full: WhenFull::DropOldest,
        }
    }
    pub fn logs() -> Self {
        QueueConfig {
            max_bytes: Self::default_max_bytes(),
            segment_bytes: Self::default_segment_bytes(),
            when_full: WhenFull::Block,
        }
    }
}

/// How batches are cut before they are queued. What a file leaves out is the [`Default`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// A log batch is cut at this many records...
    pub max_records: usize,
    /// ...or when its oldest record has waited this long.
    pub max_wait_ms: u64,
    /// Log batches in flight to the receiver at once (each acknowledged in order, so a
    /// restart resends nothing it stored, and the collector stores each batch id once in
    /// whatever order they land). Metrics go one at a time: remote_write is in order.
    pub max_in_flight: usize,
}

impl Default for BatchConfig {
    /// 5,000 records (and at most 1 MiB of lines, `logs::MAX_LOG_BATCH_BYTES`): large
    /// enough that each request's own cost is small beside its lines' (with one batch in
    /// flight, 5,000-line batches shipped a backlog 30 % faster than 1,000-line ones); a
    /// live source still ships within `max_wait_ms`. Four in flight keep the collector
    /// busy while one request travels and another waits on its fsync.
    fn default() -> Self {
        BatchConfig { max_records: 5000, max_wait_ms: 1000, max_in_flight: 4 }
    }
}

/// How to run replicas of one service. `{name}` and `{listen}` in `args`, `env` values,
/// `log_file` and `output_file` are replaced by each replica's instance name and address,
/// which is how the agent starts a new replica on request without being sent a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTemplate {
    pub name: String,
    /// A service run elsewhere (systemd, a pidfile, commands) that the agent adopts:
    /// then `program` and `output_file` are not used ([`crate::adopted`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<crate::adopted::Managed>,
    /// What the agent runs for each replica (services it runs itself).
    #[serde(default)]
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// JSON-lines log the replica writes; tailed and shipped.
    pub log_file: Option<String>,
    /// Where the replica's stdout and stderr go.
    #[serde(default)]
    pub output_file: String,
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    #[serde(default = "default_health_path")]
    pub health_path: String,
    #[serde(default = "default_ready_path")]
    pub ready_path: String,
    /// Ports new replicas of this service may take (inclusive).
    pub port_range: Option<(u16, u16)>,
    /// The replicas serve HTTPS: the agent probes and scrapes them at `https://`, with the
    /// process's outgoing TLS (`--tls-ca`, `--tls-client-cert`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}

impl ServiceTemplate {
    /// The base URL of this service's replica on `listen`.
    pub fn url(&self, listen: impl std::fmt::Display) -> String {
        format!("{}://{listen}", if self.tls { "https" } else { "http" })
    }
}

/// One replica the agent starts at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Instance name, unique in the cluster (`search-1`).
    pub name: String,
    /// Which `[[services]]` template to run.
    pub service: String,
    pub listen: SocketAddr,
    /// Arguments for this replica only (a catalog standby's `--follow`).
    #[serde(default)]
    pub extra_args: Vec<String>,
}

/// A service the agent scrapes but does not run (`[[scrape]]`): the collector, the healer,
/// anything that serves Prometheus metrics. Its series get `service`, `instance` and
/// `node` as the agent's own replicas' do, and an `up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub service: String,
    pub instance: String,
    /// The metrics URL, `http://host:port/metrics`.
    pub url: String,
}

impl ScrapeConfig {
    /// (`http://host:port`, `/path`): the URL split as targets keep it.
    pub fn split(&self) -> Option<(String, String)> {
        let (scheme, rest) =
            ["http://", "https://"].into_iter().find_map(|scheme| Some((scheme, self.url.strip_prefix(scheme)?)))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        (!authority.is_empty()).then(|| (format!("{scheme}{authority}"), path.to_string()))
    }
}

/// Files to tail that no supervised replica owns (`[[logs]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFileConfig {
    /// A file, or a glob (`/var/log/nginx/*.log`); files that match later are followed
    /// from their start, files gone are let go once read to their end. Match live files
    /// only (`*.log`, not `*.log*`): a rotated-away copy is already read under its old
    /// name (files already followed are never taken twice, by inode).
    pub path: PathBuf,
    pub service: String,
    /// The `instance` of the lines; by default each file's stem (`access` for
    /// `access.log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Added to every record as attributes (`env = "prod"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "crate::config::is_default")]
    pub format: crate::tail::LogFormat,
    /// Joins the lines of one record (stack traces): `{ start = "^\\d{4}-", timeout_ms = 1000 }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<crate::tail::Multiline>,
}

impl LogFileConfig {
    /// Checks the pattern, the labels and the multiline rule; the message names them.
    fn check(&self) -> Result<(), String> {
        let path = self.path.to_string_lossy();
        glob::Pattern::new(&path).map_err(|e| format!("path {path:?} is not a valid glob: {e}"))?;
        if self.service.trim().is_empty() {
            return Err(format!("path {path:?} needs a `service`"));
        }
        if self.instance.as_deref().is_some_and(|i| i.trim().is_empty()) {
            return Err(format!("path {path:?}: `instance` must not be empty (leave it out for the file stem)"));
        }
        for key in self.labels.keys() {
            let mut chars = key.chars();
            let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !ok {
                return Err(format!("label {key:?} of {path:?}: use letters, digits, '_' and '.'"));
            }
        }
        if let Some(m) = &self.multiline {
            m.compile()?;
        }
        Ok(())
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// A whole `agent.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Node name: the `node` label of everything this agent ships.
    pub node: String,
    /// Address of the agent's own API (`/metrics`, the actuator).
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Every URL receives every metric batch (remote_write 1.0).
    #[serde(default)]
    pub remote_write: Vec<String>,
    /// OTLP/HTTP logs endpoint (`.../v1/logs`).
    pub logs_endpoint: Option<String>,
    /// How log batches are compressed on the wire (and in the queue).
    #[serde(default)]
    pub logs_compression: Compression,
    /// Bearer token for the actuator API. Prefer `token_file` or `HALE_AGENT_TOKEN` to
    /// writing it here.
    pub token: Option<String>,
    /// The actuator token from a file (0600), read again when it changes; the token it
    /// replaced is taken for five minutes more, so callers move over one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Bearer token sent to receivers. Prefer `ingest_token_file` or `HALE_INGEST_TOKEN`.
    pub ingest_token: Option<String>,
    /// The ingest token from a file, read again when it changes: every batch is sent with
    /// what the file holds then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_token_file: Option<PathBuf>,
    /// Host metrics and scrapes of local services.
    #[serde(default = "default_scrape_interval_ms")]
    pub scrape_interval_ms: u64,
    /// `/healthz` and `/readyz` probes.
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
    /// Per scrape or probe.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "QueueConfig::metrics")]
    pub metrics_queue: QueueConfig,
    #[serde(default = "QueueConfig::logs")]
    pub logs_queue: QueueConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub services: Vec<ServiceTemplate>,
    #[serde(default)]
    pub processes: Vec<ProcessConfig>,
    #[serde(default)]
    pub logs: Vec<LogFileConfig>,
    #[serde(default)]
    pub scrape: Vec<ScrapeConfig>,
    /// Prometheus-style scrape jobs: static and `file_sd` targets, relabelling, limits
    /// (`crate::targets`).
    #[serde(default)]
    pub scrape_configs: Vec<crate::targets::ScrapeJob>,
    /// blackbox_exporter-style probes of anything reachable (`crate::blackbox`).
    #[serde(default)]
    pub probes: Vec<crate::blackbox::ProbeConfig>,
    /// node_exporter's textfile collector: the `*.prom` files here are merged into the
    /// host metrics (cron jobs, backups, anything that writes a metrics file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub textfile_dir: Option<PathBuf>,
}

impl AgentConfig {
    /// Parses and validates; errors carry the line.
    pub fn parse(source: &str) -> Result<Self, ConfigError> {
        let config: AgentConfig = toml::from_str(source).map_err(|e| ConfigError::from_toml(source, &e))?;
        config.validate().map_err(|mut e| {
            e.line =
                e.line.or_else(|| e.message.split('`').nth(1).and_then(|key| hale_core::find_key_line(source, key)));
            e
        })?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The agent's config: `flags` over `file` (a parsed agent.toml) over the defaults,
    /// validated. Without a file, `--node` is required and everything else is the default.
    pub fn with_flags(file: Option<AgentConfig>, flags: AgentFlags) -> Result<AgentConfig, ConfigError> {
        let mut config = match file {
            Some(config) => config,
            None => {
                let node = flags.node.clone().ok_or_else(|| ConfigError::new("--node is required without --config"))?;
                AgentConfig::with_defaults(node)?
            }
        };
        let AgentFlags {
            node,
            listen,
            remote_write,
            logs_endpoint,
            token,
            token_file,
            ingest_token,
            ingest_token_file,
            data_dir,
            textfile_dir,
        } = flags;
        config.node = node.unwrap_or(config.node);
        config.listen = listen.unwrap_or(config.listen);
        if !remote_write.is_empty() {
            config.remote_write = remote_write;
        }
        config.logs_endpoint = logs_endpoint.or(config.logs_endpoint);
        // A flag replaces the file's token whichever way the file gave it.
        if token.is_some() || token_file.is_some() {
            (config.token, config.token_file) = (token, token_file);
        }
        if ingest_token.is_some() || ingest_token_file.is_some() {
            (config.ingest_token, config.ingest_token_file) = (ingest_token, ingest_token_file);
        }
        config.data_dir = data_dir.unwrap_or(config.data_dir);
        config.textfile_dir = textfile_dir.or(config.textfile_dir);
        config.validate()?;
        Ok(config)
    }

    /// A config of `node` with every other setting its default: what a file with only
    /// the required keys gives, so a flag-only agent and a file agent agree.
    fn with_defaults(node: String) -> Result<AgentConfig, ConfigError> {
        let required = toml::Table::from_iter([
            ("node".to_string(), toml::Value::String(node)),
            ("listen".to_string(), toml::Value::String(DEFAULT_LISTEN.into())),
            ("data_dir".to_string(), toml::Value::String(DEFAULT_DATA_DIR.into())),
        ]);
        toml::Value::Table(required).try_into().map_err(|e: toml::de::Error| ConfigError::new(e.message().trim()))
    }

    /// Checks what serde cannot. Messages quote the offending key in backticks so the
    /// line can be found.
    /// The actuator's token (`token_file`, read now, or `token`); `None` leaves the
    /// actuator off.
    pub fn actuator_token(&self) -> Result<Option<Arc<Token>>, ConfigError> {
        token_of(&self.token, &self.token_file)
    }

    /// The token batches are sent with (`ingest_token_file` or `ingest_token`).
    pub fn ingest_bearer(&self) -> Result<Option<Arc<Token>>, ConfigError> {
        token_of(&self.ingest_token, &self.ingest_token_file)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.trim().is_empty() {
            return Err(ConfigError::new("`node` must not be empty"));
        }
        if self.token.is_some() && self.token_file.is_some() {
            return Err(ConfigError::new("`token` and `token_file` both given: keep one"));
        }
        if self.ingest_token.is_some() && self.ingest_token_file.is_some() {
            return Err(ConfigError::new("`ingest_token` and `ingest_token_file` both given: keep one"));
        }
        for url in self.remote_write.iter().chain(self.logs_endpoint.iter()) {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new(format!(
                    "`remote_write`/`logs_endpoint` {url:?} must be an http:// or https:// URL"
                )));
            }
        }
        if !(100..=3_600_000).contains(&self.scrape_interval_ms) {
            return Err(ConfigError::new("`scrape_interval_ms` must be between 100 and 3600000"));
        }
        if !(100..=3_600_000).contains(&self.probe_interval_ms) {
            return Err(ConfigError::new("`probe_interval_ms` must be between 100 and 3600000"));
        }
        if !(10..=60_000).contains(&self.timeout_ms) {
            return Err(ConfigError::new("`timeout_ms` must be between 10 and 60000"));
        }
        for (key, q) in [("metrics_queue", &self.metrics_queue), ("logs_queue", &self.logs_queue)] {
            if q.segment_bytes < 4096 || q.max_bytes < 2 * q.segment_bytes {
                return Err(ConfigError::new(format!(
                    "`{key}`: segment_bytes must be at least 4096 and max_bytes at least two segments"
                )));
            }
        }
        for s in &self.scrape {
            if s.split().is_none() || s.service.trim().is_empty() || s.instance.trim().is_empty() {
                return Err(ConfigError::new(format!(
                    "`scrape` {:?}: needs a service, an instance and an http:// or https:// url",
                    s.url
                )));
            }
        }
        for logs in &self.logs {
            logs.check().map_err(|e| ConfigError::new(format!("`logs`: {e}")))?;
        }
        if self.batch.max_records == 0 || self.batch.max_wait_ms == 0 {
            return Err(ConfigError::new("`batch`: max_records and max_wait_ms must be positive"));
        }
        let mut jobs = std::collections::BTreeSet::new();
        for job in &self.scrape_configs {
            job.compile(
                std::time::Duration::from_millis(self.scrape_interval_ms),
                std::time::Duration::from_millis(self.timeout_ms),
            )
            .map_err(|e| ConfigError::new(format!("`scrape_configs`: {e}")))?;
            if !jobs.insert(job.job_name.as_str()) {
                return Err(ConfigError::new(format!("`scrape_configs`: job_name {:?} is used twice", job.job_name)));
            }
            if !job.kubernetes_sd_configs.is_empty() && !crate::kubernetes_sd::AVAILABLE {
                return Err(ConfigError::new(format!(
                    "`scrape_configs`: job {:?} has kubernetes_sd_configs, but this agent was built without Kubernetes \
                     discovery: run `hale agent` (the all-in-one binary has it) or build hale-agent with \
                     --features kubernetes",
                    job.job_name
                )));
            }
        }
        let mut probes = std::collections::BTreeSet::new();
        for probe in &self.probes {
            probe
                .compile(
                    std::time::Duration::from_millis(self.probe_interval_ms),
                    std::time::Duration::from_millis(self.timeout_ms),
                )
                .map_err(|e| ConfigError::new(format!("`probes`: {e}")))?;
            if !probes.insert(probe.name.as_str()) {
                return Err(ConfigError::new(format!("`probes`: name {:?} is used twice", probe.name)));
            }
        }
        if !(1..=64).contains(&self.batch.max_in_flight) {
            return Err(ConfigError::new("`batch`: max_in_flight must be between 1 and 64"));
        }
        let mut services = HashSet::new();
        for s in &self.services {
            if !services.insert(s.name.as_str()) {
                return Err(ConfigError::new(format!("`services`: {:?} is defined twice", s.name)));
            }
            if let Some((lo, hi)) = s.port_range
                && lo > hi
            {
                return Err(ConfigError::new(format!("`port_range` of {:?} is empty", s.name)));
            }
            match &s.managed {
                Some(managed) => {
                    managed.check().map_err(|e| ConfigError::new(format!("`managed` of service {:?}: {e}", s.name)))?
                }
                None if s.program.as_os_str().is_empty() || s.output_file.is_empty() => {
                    return Err(ConfigError::new(format!(
                        "`services` {:?}: needs `program` and `output_file` (a service the agent runs), or `managed` (one run elsewhere)",
                        s.name
                    )));
                }
                None => {}
            }
        }
        let mut names = HashSet::new();
        for p in &self.processes {
            if !names.insert(p.name.as_str()) {
                return Err(ConfigError::new(format!("`processes`: {:?} is defined twice", p.name)));
            }
            if self.template(&p.service).is_some_and(|t| t.managed.is_some()) {
                return Err(ConfigError::new(format!(
                    "`service` {:?} of process {:?} is managed elsewhere; the agent cannot start it",
                    p.service, p.name
                )));
            }
            if !services.contains(p.service.as_str()) {
                return Err(ConfigError::new(format!(
                    "`service` {:?} of process {:?} has no [[services]] template",
                    p.service, p.name
                )));
            }
            if !valid_instance_name(&p.name) {
                return Err(ConfigError::new(format!("`name` {:?}: use letters, digits, '-' and '_'", p.name)));
            }
        }
        let mut names: HashSet<String> = names.into_iter().map(str::to_string).collect();
        for adopted in crate::adopted::services(self) {
            if !valid_instance_name(&adopted.instance) || !names.insert(adopted.instance.clone()) {
                return Err(ConfigError::new(format!(
                    "`managed` of service {:?}: instance {:?} must be unique and use letters, digits, '-' and '_'",
                    adopted.service, adopted.instance
                )));
            }
        }
        Ok(())
    }

    pub fn template(&self, service: &str) -> Option<&ServiceTemplate> {
        self.services.iter().find(|s| s.name == service)
    }

    /// The concrete spec of a replica of `service` named `name` on `listen`.
    pub fn render(
        &self,
        template: &ServiceTemplate,
        name: &str,
        listen: SocketAddr,
        extra_args: &[String],
    ) -> ProcessSpec {
        let fill = |s: &str| s.replace("{name}", name).replace("{listen}", &listen.to_string());
        ProcessSpec {
            name: name.to_string(),
            service: template.name.clone(),
            node: self.node.clone(),
            listen,
            program: template.program.clone(),
            args: template.args.iter().map(|a| fill(a)).chain(extra_args.iter().cloned()).collect(),
            env: template.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect(),
            output_file: PathBuf::from(fill(&template.output_file)),
        }
    }
}

/// What `hale agent`'s flags say, each `None` or empty when not given: a value here beats
/// the file's (`remote_write` replaces the file's list). No `Debug`: it holds tokens. With
/// the `cli` feature it is the clap arguments of `hale agent`, doc comments as help.
#[derive(Default, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct AgentFlags {
    /// Node name (required without --config).
    #[cfg_attr(feature = "cli", arg(long))]
    pub node: Option<String>,
    /// Address of the agent's API (default `<node-ip>:9100` from the config).
    #[cfg_attr(feature = "cli", arg(long))]
    pub listen: Option<SocketAddr>,
    /// A Prometheus remote_write receiver; repeat for several (each gets everything).
    #[cfg_attr(feature = "cli", arg(long = "remote-write"))]
    pub remote_write: Vec<String>,
    /// OTLP/HTTP logs endpoint.
    #[cfg_attr(feature = "cli", arg(long))]
    pub logs_endpoint: Option<String>,
    /// Bearer token of the actuator API.
    #[cfg_attr(feature = "cli", arg(long, env = "HALE_AGENT_TOKEN", hide_env_values = true))]
    pub token: Option<String>,
    /// The actuator token from a file, read again when it changes (the old one is taken
    /// five minutes more).
    #[cfg_attr(feature = "cli", arg(long, env = "HALE_AGENT_TOKEN_FILE", conflicts_with = "token"))]
    pub token_file: Option<PathBuf>,
    /// Bearer token sent to receivers.
    #[cfg_attr(feature = "cli", arg(long, env = "HALE_INGEST_TOKEN", hide_env_values = true))]
    pub ingest_token: Option<String>,
    /// The token sent to receivers from a file, read again when it changes.
    #[cfg_attr(feature = "cli", arg(long, env = "HALE_INGEST_TOKEN_FILE", conflicts_with = "ingest_token"))]
    pub ingest_token_file: Option<PathBuf>,
    /// Queues, checkpoints and the agent id live here.
    #[cfg_attr(feature = "cli", arg(long))]
    pub data_dir: Option<PathBuf>,
    /// node_exporter's textfile collector: merge the `*.prom` files of this directory.
    #[cfg_attr(feature = "cli", arg(long))]
    pub textfile_dir: Option<PathBuf>,
}

fn token_of(inline: &Option<String>, file: &Option<PathBuf>) -> Result<Option<Arc<Token>>, ConfigError> {
    match (inline, file) {
        (_, Some(path)) => Token::from_file(path, hale_core::token::DEFAULT_GRACE)
            .map(Some)
            .map_err(|e| ConfigError::new(e.to_string())),
        (Some(token), None) => Ok(Some(Token::fixed(token.clone()))),
        (None, None) => Ok(None),
    }
}

/// The keys whose change a reload cannot apply: the agent's identity, listener, data
/// directory, destinations, queues and its own cycles' intervals are set up once at the
/// start. Every key is named here or in [`reloadable_changes`] (the destructuring makes a
/// new key a compile error until it is sorted into one of the two).
pub fn restart_only_changes(old: &AgentConfig, new: &AgentConfig) -> Vec<&'static str> {
    let AgentConfig {
        node,
        listen,
        data_dir,
        remote_write,
        logs_endpoint,
        logs_compression,
        token: _,
        token_file: _,
        ingest_token,
        ingest_token_file,
        scrape_interval_ms,
        probe_interval_ms,
        timeout_ms: _,
        metrics_queue,
        logs_queue,
        batch,
        services: _,
        processes: _,
        logs: _,
        scrape: _,
        scrape_configs: _,
        probes: _,
        textfile_dir: _,
    } = old;
    let mut changed = Vec::new();
    let mut check = |key: &'static str, same: bool| {
        if !same {
            changed.push(key);
        }
    };
    check("node", *node == new.node);
    check("listen", *listen == new.listen);
    check("data_dir", *data_dir == new.data_dir);
    check("remote_write", *remote_write == new.remote_write);
    check("logs_endpoint", *logs_endpoint == new.logs_endpoint);
    check("logs_compression", *logs_compression == new.logs_compression);
    check("ingest_token", *ingest_token == new.ingest_token);
    check("ingest_token_file", *ingest_token_file == new.ingest_token_file);
    check("scrape_interval_ms", *scrape_interval_ms == new.scrape_interval_ms);
    check("probe_interval_ms", *probe_interval_ms == new.probe_interval_ms);
    check("metrics_queue", *metrics_queue == new.metrics_queue);
    check("logs_queue", *logs_queue == new.logs_queue);
    check("batch", *batch == new.batch);
    changed
}

/// The keys a reload changes (and applies): the actuator token, the timeout, service
/// templates and processes, log sources, scrape targets and jobs, probes, the textfile
/// directory. Secrets are named, never shown.
pub fn reloadable_changes(old: &AgentConfig, new: &AgentConfig) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |key: &'static str, same: bool| {
        if !same {
            changed.push(key);
        }
    };
    check("token", old.token == new.token);
    check("token_file", old.token_file == new.token_file);
    check("timeout_ms", old.timeout_ms == new.timeout_ms);
    check("services", old.services == new.services);
    check("processes", old.processes == new.processes);
    check("logs", old.logs == new.logs);
    check("scrape", old.scrape == new.scrape);
    check("scrape_configs", old.scrape_configs == new.scrape_configs);
    check("probes", old.probes == new.probes);
    check("textfile_dir", old.textfile_dir == new.textfile_dir);
    changed
}

/// Where the agent's config comes from (agent.toml, then the flags over it), kept so a
/// reload (SIGHUP, `POST /-/reload`) reads the file again and lays the same flags over
/// it. No `Debug`: the flags hold tokens.
#[derive(Default, Clone)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    pub flags: AgentFlags,
}

impl ConfigSource {
    /// The config as the file says now, with the flags over it, validated; errors name
    /// the file and the line.
    pub fn load(&self) -> Result<AgentConfig, String> {
        let file = match &self.file {
            Some(path) => {
                let source = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
                Some(AgentConfig::parse(&source).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            None => None,
        };
        AgentConfig::with_flags(file, self.flags.clone()).map_err(|e| e.to_string())
    }
}

pub fn valid_instance_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
node = "node-1"
listen = "127.0.1.1:9100"
data_dir = "/tmp/agent"
remote_write = ["http://127.0.0.1:9464/api/v1/write"]
scrape_interval_ms = 1000
probe_interval_ms = 500

[[services]]
name = "search"
program = "/usr/bin/hale"
args = ["shop", "search", "--instance", "{name}", "--listen", "{listen}"]
output_file = "/tmp/logs/{name}.out"
log_file = "/tmp/logs/{name}.log"
port_range = [8100, 8199]

[[processes]]
name = "search-1"
service = "search"
listen = "127.0.1.1:8085"
"#;

    #[test]
    fn the_shipped_example_reads() {
        let c = AgentConfig::parse(include_str!("../../config/examples/agent.toml")).expect("the example");
        assert_eq!((c.scrape_configs.len(), c.probes.len(), c.logs.len()), (2, 2, 2));
        assert_eq!(crate::adopted::services(&c).len(), 2);
    }

    #[test]
    fn parses_and_renders_specs() {
        let c = AgentConfig::parse(SAMPLE).expect("parse");
        assert_eq!(c.metrics_queue.when_full, WhenFull::DropOldest);
        assert_eq!(c.logs_queue.when_full, WhenFull::Block);
        let t = c.template("search").expect("template");
        let spec = c.render(t, "search-9", "127.0.1.1:8100".parse().expect("addr"), &["--x".into()]);
        assert_eq!(spec.args, ["shop", "search", "--instance", "search-9", "--listen", "127.0.1.1:8100", "--x"]);
        assert_eq!(spec.output_file, PathBuf::from("/tmp/logs/search-9.out"));
        assert_eq!(AgentConfig::parse(&c.to_toml()).expect("round trip"), c);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_line() {
        let bad_key = SAMPLE.replace("probe_interval_ms = 500", "probe_interval_ms = 500\ncolour = 1");
        let e = AgentConfig::parse(&bad_key).expect_err("unknown key");
        assert_eq!(e.line, bad_key.lines().position(|l| l.starts_with("colour")).map(|i| i + 1), "{e}");
        let bad_value = SAMPLE.replace("probe_interval_ms = 500", "probe_interval_ms = 5");
        let e = AgentConfig::parse(&bad_value).expect_err("range");
        assert_eq!(e.line, bad_value.lines().position(|l| l.starts_with("probe_interval_ms")).map(|i| i + 1), "{e}");
        let no_template = SAMPLE.replace("service = \"search\"", "service = \"nope\"");
        assert!(AgentConfig::parse(&no_template).expect_err("template").message.contains("no [[services]] template"));
        let bad_url = SAMPLE.replace("http://127.0.0.1:9464/api/v1/write", "ftp://x");
        assert!(AgentConfig::parse(&bad_url).is_err());
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let file = || Some(AgentConfig::parse(SAMPLE).expect("parse"));
        let node = || AgentFlags { node: Some("node-9".into()), ..AgentFlags::default() };
        let defaults = AgentConfig::with_flags(None, node()).expect("flags only");
        let from_file = AgentConfig::with_flags(file(), AgentFlags::default()).expect("file");
        let flags = AgentFlags {
            listen: Some("127.0.0.9:9101".parse().expect("addr")),
            remote_write: vec!["http://flag/api/v1/write".into()],
            token: Some("t".into()),
            ..node()
        };
        let both = AgentConfig::with_flags(file(), flags).expect("both");
        assert_eq!([&defaults.node, &from_file.node, &both.node], ["node-9", "node-1", "node-9"]);
        assert_eq!(
            [defaults.listen, from_file.listen, both.listen].map(|a| a.to_string()),
            [DEFAULT_LISTEN, "127.0.1.1:9100", "127.0.0.9:9101"]
        );
        assert_eq!(
            [defaults.scrape_interval_ms, from_file.scrape_interval_ms, both.scrape_interval_ms],
            [15_000, 1000, 1000]
        );
        assert_eq!(both.remote_write, ["http://flag/api/v1/write"], "the flags' receivers replace the file's");
        assert_eq!(from_file.remote_write, ["http://127.0.0.1:9464/api/v1/write"]);
        assert_eq!((defaults.data_dir, both.data_dir), (PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from("/tmp/agent")));
        assert_eq!((from_file.token, both.token), (None, Some("t".into())));
        assert_eq!(both.processes, from_file.processes, "what only the file says stays");
    }

    #[test]
    fn a_partial_batch_table_keeps_the_other_default() {
        let c = AgentConfig::parse(&format!("{SAMPLE}\n[batch]\nmax_records = 5\n")).expect("parse");
        assert_eq!(c.batch, BatchConfig { max_records: 5, ..BatchConfig::default() });
        assert_eq!(c.batch.max_wait_ms, 1000);
    }

    #[test]
    fn flags_alone_need_a_node_and_are_validated() {
        let e = AgentConfig::with_flags(None, AgentFlags::default()).expect_err("no node");
        assert!(e.message.contains("--node"), "{e}");
        let bad = AgentFlags { node: Some("n".into()), logs_endpoint: Some("ftp://x".into()), ..AgentFlags::default() };
        assert!(AgentConfig::with_flags(None, bad).expect_err("bad url").message.contains("http://"));
    }

    #[test]
    fn auto_compression_is_off_on_this_machine_and_zstd_elsewhere() {
        for (endpoint, expected) in [
            ("http://127.0.0.1:9090/v1/logs", Compression::None),
            ("http://localhost:9090/v1/logs", Compression::None),
            ("http://[::1]:9090/v1/logs", Compression::None),
            ("https://collector.example:443/v1/logs", Compression::Zstd),
            ("http://10.0.0.5/v1/logs", Compression::Zstd),
            ("http://[fd00::5]:9090/v1/logs", Compression::Zstd),
        ] {
            assert_eq!(Compression::Auto.for_endpoint(endpoint), expected, "{endpoint}");
        }
        assert_eq!(Compression::Gzip.for_endpoint("http://127.0.0.1/v1/logs"), Compression::Gzip);
        let c = AgentConfig::parse(&format!("logs_compression = \"gzip\"\n{SAMPLE}")).expect("parse");
        assert_eq!(c.logs_compression, Compression::Gzip);
    }
}
