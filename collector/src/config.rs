//! `collector.toml`: everything `hale collector` takes beyond its flags. Unknown keys and
//! bad values are refused with the line they are on. [`CollectorFile::into_config`] lays
//! the flags over the file: a flag beats the file, the file beats the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hale_core::secret::Secret;
use serde::Deserialize;

pub use hale_core::ConfigError;

use crate::CollectorConfig;
use crate::notify::NotifyConfig;

/// Where the collector listens when neither a flag nor the file says.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);
/// Where its data lives when neither a flag nor the file says.
pub const DEFAULT_DATA_DIR: &str = ".hale/collector";

/// The file's contents; durations as text (`15d`, `5m`). What the file leaves out is the
/// [`Default`].
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorFile {
    /// Address to serve on.
    pub listen: Option<SocketAddr>,
    /// Where the WAL, checkpoints and logs live.
    pub data_dir: Option<PathBuf>,
    /// Keep samples and logs this long.
    pub retention: String,
    /// Keep at most this many bytes of compressed samples, on disk and in memory together
    /// (0: no limit); the oldest go first.
    pub retention_bytes: usize,
    /// Keep at most this many bytes of spans on disk (default 1 GiB; 0: no limit).
    pub traces_max_bytes: u64,
    /// Refuse ingest while less than this many bytes are free under the data dir
    /// (default 256 MiB).
    pub min_free_bytes: Option<u64>,
    /// Exemplars kept in memory, the newest over all series (default 100,000; 0: none).
    pub exemplars_max: usize,
    /// Fold the WAL into a checkpoint this often.
    pub checkpoint_interval: String,
    /// Prometheus rule files to evaluate (relative to this file's folder).
    pub rule_files: Vec<PathBuf>,
    /// How often rule groups without an interval of their own run.
    pub evaluation_interval: String,
    /// Labels alert templates see as `$externalLabels`.
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// Where alerts are notified and how they are grouped.
    pub notify: NotifyFile,
    /// Sloth SLO specs to evaluate (relative to this file's folder).
    pub slo_files: Vec<PathBuf>,
    /// SLO windows are multiplied by this (1 in production).
    pub slo_time_scale: f64,
    /// An SLO alert window needs at least this many events (0: no guard).
    pub slo_min_events: u64,
    /// Samples one query may load and produce (Prometheus's `--query.max-samples`).
    pub query_max_samples: usize,
    /// remote_write backends everything stored is forwarded to (`[[forward]]`).
    pub forward: Vec<crate::forward::Endpoint>,
    /// Bytes of WAL one lagging backend may hold back (default 1 GiB).
    pub forward_max_backlog: u64,
    /// Evaluate rules, SLOs and queries through this Prometheus query API.
    pub query_url: Option<String>,
    /// Its bearer token, from a file.
    pub query_token_file: Option<PathBuf>,
}

impl Default for CollectorFile {
    fn default() -> Self {
        CollectorFile {
            listen: None,
            data_dir: None,
            retention: "15d".into(),
            retention_bytes: 0,
            min_free_bytes: None,
            traces_max_bytes: 1 << 30,
            exemplars_max: crate::exemplars::DEFAULT_CAPACITY,
            checkpoint_interval: "5m".into(),
            rule_files: Vec::new(),
            evaluation_interval: "15s".into(),
            external_labels: Default::default(),
            notify: NotifyFile::default(),
            slo_files: Vec::new(),
            slo_time_scale: 1.0,
            slo_min_events: 0,
            query_max_samples: crate::query::MAX_SAMPLES,
            forward: Vec::new(),
            forward_max_backlog: crate::forward::DEFAULT_MAX_BACKLOG,
            query_url: None,
            query_token_file: None,
        }
    }
}

/// The `[notify]` table. The webhook secret is not here: it comes from
/// `--webhook-secret` or `HALE_WEBHOOK_SECRET`, never from a file that may be shared.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyFile {
    /// Webhook receivers (Alertmanager's payload, signed).
    pub webhooks: Vec<String>,
    /// Alertmanager base URLs to forward alerts to.
    pub alertmanagers: Vec<String>,
    /// Labels that group alerts into one notification (default: alertname).
    pub group_by: Option<Vec<String>>,
    /// How long a new group waits for more alerts (default 30s).
    pub group_wait: Option<String>,
    /// How often a group is looked at again (default 5m).
    pub group_interval: Option<String>,
    /// How often an unchanged firing group is notified again (default 4h).
    pub repeat_interval: Option<String>,
    /// Whether resolved alerts are notified (default true).
    pub send_resolved: Option<bool>,
    /// This collector's URL, for links in notifications (default `http://<listen>`).
    pub external_url: Option<String>,
}

impl NotifyFile {
    /// The route, with durations checked; `line` finds a key's line for errors.
    pub fn route(&self, line: impl Fn(&str) -> Option<usize>) -> Result<crate::notify::dispatch::Route, ConfigError> {
        let default = crate::notify::dispatch::Route::default();
        let at = |key: &str, message: String| ConfigError { line: line(key), message };
        let parse = |key: &str, text: &Option<String>, fallback: Duration| match text {
            None => Ok(fallback),
            Some(t) => humantime::parse_duration(t)
                .map_err(|_| at(key, format!("{key} = {t:?} is not a duration; write 0s, 30s, 5m or 4h"))),
        };
        let route = crate::notify::dispatch::Route {
            group_by: self.group_by.clone().unwrap_or(default.group_by),
            group_wait: parse("group_wait", &self.group_wait, default.group_wait)?,
            group_interval: parse("group_interval", &self.group_interval, default.group_interval)?,
            repeat_interval: parse("repeat_interval", &self.repeat_interval, default.repeat_interval)?,
            send_resolved: self.send_resolved.unwrap_or(default.send_resolved),
        };
        if route.group_interval.is_zero() {
            return Err(at("group_interval", "group_interval must be more than 0".into()));
        }
        if route.repeat_interval < route.group_interval {
            return Err(at("repeat_interval", "repeat_interval must be at least group_interval".into()));
        }
        for (key, urls) in [("webhooks", &self.webhooks), ("alertmanagers", &self.alertmanagers)] {
            if let Some(bad) = urls.iter().find(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
                return Err(at(key, format!("{key}: {bad:?} is not an http:// or https:// URL")));
            }
        }
        Ok(route)
    }
}

/// Validated durations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durations {
    pub retention: Duration,
    pub checkpoint_interval: Duration,
    pub evaluation_interval: Duration,
}

impl CollectorFile {
    /// Parses and checks a file; errors carry the line.
    pub fn parse(source: &str) -> Result<(Self, Durations), ConfigError> {
        let file: CollectorFile = toml::from_str(source).map_err(|e| ConfigError::from_toml(source, &e))?;
        let durations = file.durations(|key| hale_core::find_key_line(source, key))?;
        file.notify.route(|key| hale_core::find_key_line(source, key))?;
        file.slo_options(|key| hale_core::find_key_line(source, key))?;
        Ok((file, durations))
    }

    /// The SLO options, checked.
    pub fn slo_options(&self, line: impl Fn(&str) -> Option<usize>) -> Result<crate::slo::Options, ConfigError> {
        if !(self.slo_time_scale > 0.0 && self.slo_time_scale <= 1.0) {
            return Err(ConfigError {
                line: line("slo_time_scale"),
                message: "slo_time_scale must be more than 0 and at most 1 (1 in production)".into(),
            });
        }
        Ok(crate::slo::Options { time_scale: self.slo_time_scale, min_events: self.slo_min_events })
    }

    /// Checks and converts the durations; `line` finds a key's line for errors.
    pub fn durations(&self, line: impl Fn(&str) -> Option<usize>) -> Result<Durations, ConfigError> {
        let parse = |key: &str, text: &str, min: Duration| -> Result<Duration, ConfigError> {
            let at = |message: String| ConfigError { line: line(key), message };
            let d = humantime::parse_duration(text)
                .map_err(|_| at(format!("{key} = {text:?} is not a duration; write 15d, 12h or 5m")))?;
            if d < min {
                return Err(at(format!("{key} must be at least {}", humantime::format_duration(min))));
            }
            Ok(d)
        };
        Ok(Durations {
            retention: parse("retention", &self.retention, Duration::from_secs(60))?,
            checkpoint_interval: parse("checkpoint_interval", &self.checkpoint_interval, Duration::from_millis(100))?,
            evaluation_interval: parse("evaluation_interval", &self.evaluation_interval, Duration::from_millis(100))?,
        })
    }

    /// The collector's config: `flags` over this file over the defaults. `dir` is the
    /// file's folder: its rule and SLO files are relative to it, as in Prometheus. Errors
    /// name no line: a value that fails here may have come from a flag.
    pub fn into_config(mut self, dir: &Path, flags: CollectorFlags) -> Result<CollectorConfig, ConfigError> {
        let set = |slot: &mut String, flag: Option<String>| {
            if let Some(value) = flag {
                *slot = value;
            }
        };
        set(&mut self.retention, flags.retention);
        set(&mut self.checkpoint_interval, flags.checkpoint_interval);
        set(&mut self.evaluation_interval, flags.evaluation_interval);
        self.retention_bytes = flags.retention_bytes.unwrap_or(self.retention_bytes);
        self.traces_max_bytes = flags.traces_max_bytes.unwrap_or(self.traces_max_bytes);
        self.exemplars_max = flags.exemplars_max.unwrap_or(self.exemplars_max);
        self.slo_time_scale = flags.slo_time_scale.unwrap_or(self.slo_time_scale);
        self.slo_min_events = flags.slo_min_events.unwrap_or(self.slo_min_events);
        self.query_max_samples = flags.query_max_samples.unwrap_or(self.query_max_samples);
        if self.query_max_samples == 0 {
            return Err(ConfigError::new(
                "query_max_samples (--query-max-samples) is 0: no query could run; the default is 50000000",
            ));
        }
        let notify = &mut self.notify;
        notify.webhooks.extend(flags.alert_webhooks);
        notify.alertmanagers.extend(flags.alertmanagers);
        for (slot, flag) in [
            (&mut notify.group_wait, flags.group_wait),
            (&mut notify.group_interval, flags.group_interval),
            (&mut notify.repeat_interval, flags.repeat_interval),
        ] {
            if flag.is_some() {
                *slot = flag;
            }
        }
        let route = self.notify.route(|_| None)?;
        if flags.webhook_secret.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::new(
                "--webhook-secret (or HALE_WEBHOOK_SECRET) is empty: give it a long random value",
            ));
        }
        let slo_options = self.slo_options(|_| None)?;
        let durations = self.durations(|_| None)?;
        let relative = |files: Vec<PathBuf>, added: Vec<PathBuf>| -> Vec<PathBuf> {
            files.iter().map(|f| dir.join(f)).chain(added).collect()
        };
        let listen = flags.listen.or(self.listen).unwrap_or(DEFAULT_LISTEN);
        let mut forward = self.forward;
        forward.extend(flags.forward.into_iter().map(|url| crate::forward::Endpoint {
            url,
            name: None,
            bearer_token_file: None,
            headers: Default::default(),
        }));
        let mut names = std::collections::BTreeSet::new();
        for endpoint in &forward {
            if !(endpoint.url.starts_with("http://") || endpoint.url.starts_with("https://")) {
                return Err(ConfigError::new(format!("forward: {:?} is not an http:// or https:// URL", endpoint.url)));
            }
            if !names.insert(endpoint.name()) {
                return Err(ConfigError::new(format!(
                    "forward: two endpoints are named {:?}: give them `name`s of their own",
                    endpoint.name()
                )));
            }
        }
        let forward_max_backlog = flags.forward_max_backlog.unwrap_or(self.forward_max_backlog);
        let query_url = flags.query_url.or(self.query_url);
        if let Some(url) = query_url.as_deref().filter(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
            return Err(ConfigError::new(format!(
                "query_url {url:?} is not an http:// or https:// URL (the backend's Prometheus API base)"
            )));
        }
        let query_token_file = flags.query_token_file.or(self.query_token_file);
        Ok(CollectorConfig {
            listen,
            data_dir: flags.data_dir.or(self.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            ingest_token: token_of(flags.ingest_token, flags.ingest_token_file, "--ingest-token")?,
            open_ingest: flags.insecure_open_ingest,
            min_free_bytes: flags.min_free_bytes.or(self.min_free_bytes).unwrap_or(crate::disk::DEFAULT_MIN_FREE_BYTES),
            traces_token: token_of(flags.traces_token, flags.traces_token_file, "--traces-token")?,
            retention: durations.retention,
            retention_bytes: self.retention_bytes,
            traces_max_bytes: self.traces_max_bytes,
            exemplars_max: self.exemplars_max,
            checkpoint_interval: durations.checkpoint_interval,
            rule_files: relative(self.rule_files, flags.rules),
            evaluation_interval: durations.evaluation_interval,
            external_labels: self.external_labels,
            notify: NotifyConfig {
                webhooks: self.notify.webhooks,
                webhook_secret: flags.webhook_secret.map(|s| Secret::new(Arc::from(s.into_bytes().into_boxed_slice()))),
                alertmanagers: self.notify.alertmanagers,
                route,
                external_url: self.notify.external_url.unwrap_or_else(|| format!("http://{listen}")),
            },
            admin_token: token_of(flags.admin_token, flags.admin_token_file, "--admin-token")?,
            slo_files: relative(self.slo_files, flags.slos),
            slo_options,
            query_max_samples: self.query_max_samples,
            forward,
            forward_max_backlog,
            query_url,
            query_token_file,
        })
    }
}

/// A token given inline or from a file (not both).
fn token_of(
    inline: Option<String>,
    file: Option<PathBuf>,
    flag: &str,
) -> Result<Option<std::sync::Arc<hale_core::token::Token>>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(format!("give {flag} or {flag}-file, not both"))),
        (Some(token), None) => Ok(Some(hale_core::token::Token::fixed(token))),
        (None, Some(path)) => hale_core::token::Token::from_file(&path, hale_core::token::DEFAULT_GRACE)
            .map(Some)
            .map_err(|e| ConfigError::new(e.to_string())),
        (None, None) => Ok(None),
    }
}

/// What `hale collector`'s flags say, each `None` or empty when not given. A value here
/// beats the file's; the lists (`rules`, `slos`, `alert_webhooks`, `alertmanagers`) add
/// to the file's. The tokens and the webhook secret come only from here (flags or the
/// environment), never from a file that may be shared. No `Debug`: it holds them. With
/// the `cli` feature it is the clap arguments of `hale collector`, doc comments as help.
#[derive(Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct CollectorFlags {
    /// Address to serve on (default 127.0.0.1:9464).
    #[cfg_attr(feature = "cli", arg(long))]
    pub listen: Option<SocketAddr>,
    /// Where the WAL, checkpoints and logs live (default .hale/collector).
    #[cfg_attr(feature = "cli", arg(long))]
    pub data_dir: Option<PathBuf>,
    /// Bearer token required to store telemetry (remote_write, OTLP logs and traces).
    #[cfg_attr(feature = "cli", arg(long, env = "HALE_INGEST_TOKEN", hide_env_values = true))]
    pub ingest_token: Option<String>,
    /// The ingest token from a file (0600), read again when it changes; the token it
    /// replaced is taken for 5 more minutes, so agents can be moved over one by one.
    #[cfg_attr(feature = "cli", arg(long, env = "HALE_INGEST_TOKEN_FILE", value_name = "FILE"))]
    pub ingest_token_file: Option<PathBuf>,
    /// A bearer token that may write spans (`/v1/traces`) and nothing else, for the
    /// services that export traces; the ingest token is taken there too.
    #[cfg_attr(feature = "cli", arg(long, env = "HALE_TRACES_TOKEN", hide_env_values = true))]
    pub traces_token: Option<String>,
    /// The traces token from a file (0600), read again when it changes.
    #[cfg_attr(feature = "cli", arg(long, env = "HALE_TRACES_TOKEN_FILE", value_name = "FILE"))]
    pub traces_token_file: Option<PathBuf>,
    /// Store telemetry from anyone who can reach the collector, with no ingest token
    /// (a throwaway collector on loopback). Forged telemetry fires alerts the healer acts
    /// on: a collector refuses to start without an ingest token unless told this.
    #[cfg_attr(feature = "cli", arg(long))]
    pub insecure_open_ingest: bool,
    /// Refuse ingest (507, Retry-After) while less than this many bytes are free under
    /// the data dir (default 268435456): the WAL and checkpoints never run the disk dry,
    /// queries go on, senders keep what they could not deliver.
    #[cfg_attr(feature = "cli", arg(long, value_name = "BYTES"))]
    pub min_free_bytes: Option<u64>,
    /// Keep data this long (15d, 12h, ...; default 15d).
    #[cfg_attr(feature = "cli", arg(long))]
    pub retention: Option<String>,
    /// Keep at most this many bytes of compressed samples, on disk and in memory together
    /// (0: no limit); the oldest go first.
    #[cfg_attr(feature = "cli", arg(long))]
    pub retention_bytes: Option<usize>,
    /// Keep at most this many bytes of spans on disk, the oldest going first (default
    /// 1 GiB; 0: no limit).
    #[cfg_attr(feature = "cli", arg(long))]
    pub traces_max_bytes: Option<u64>,
    /// Exemplars kept in memory, the newest over all series (default 100,000; 0: none).
    #[cfg_attr(feature = "cli", arg(long))]
    pub exemplars_max: Option<usize>,
    /// Fold the WAL into a checkpoint this often, bounding replay time (default 5m).
    #[cfg_attr(feature = "cli", arg(long))]
    pub checkpoint_interval: Option<String>,
    /// A Prometheus rule file to evaluate (repeatable; added to the config's rule_files).
    #[cfg_attr(feature = "cli", arg(long = "rules", value_name = "FILE"))]
    pub rules: Vec<PathBuf>,
    /// How often rule groups without their own interval run (default 15s).
    #[cfg_attr(feature = "cli", arg(long))]
    pub evaluation_interval: Option<String>,
    /// A webhook receiver for alerts (repeatable; Alertmanager's payload, signed).
    #[cfg_attr(feature = "cli", arg(long = "alert-webhook", value_name = "URL"))]
    pub alert_webhooks: Vec<String>,
    /// The HMAC key webhooks are signed with (X-Hale-Signature).
    #[cfg_attr(feature = "cli", arg(long, env = "HALE_WEBHOOK_SECRET", hide_env_values = true))]
    pub webhook_secret: Option<String>,
    /// An Alertmanager to forward alerts to (repeatable; base URL).
    #[cfg_attr(feature = "cli", arg(long = "alertmanager", value_name = "URL"))]
    pub alertmanagers: Vec<String>,
    /// Bearer token for writing silences; without it they are read-only.
    #[cfg_attr(feature = "cli", arg(long, env = "HALE_ADMIN_TOKEN", hide_env_values = true))]
    pub admin_token: Option<String>,
    /// The admin token from a file, read again when it changes (as --ingest-token-file).
    #[cfg_attr(feature = "cli", arg(long, env = "HALE_ADMIN_TOKEN_FILE", value_name = "FILE"))]
    pub admin_token_file: Option<PathBuf>,
    /// How long a new alert group waits before its first notification (default 30s).
    #[cfg_attr(feature = "cli", arg(long))]
    pub group_wait: Option<String>,
    /// How often an alert group is looked at again (default 5m).
    #[cfg_attr(feature = "cli", arg(long))]
    pub group_interval: Option<String>,
    /// How often an unchanged firing group is notified again (default 4h).
    #[cfg_attr(feature = "cli", arg(long))]
    pub repeat_interval: Option<String>,
    /// A Sloth SLO spec file to evaluate (repeatable; added to the config's slo_files).
    #[cfg_attr(feature = "cli", arg(long = "slo", value_name = "FILE"))]
    pub slos: Vec<PathBuf>,
    /// SLO windows are multiplied by this (default 1; demos use less).
    #[cfg_attr(feature = "cli", arg(long))]
    pub slo_time_scale: Option<f64>,
    /// An SLO alert window needs at least this many events (default 0: no guard).
    #[cfg_attr(feature = "cli", arg(long))]
    pub slo_min_events: Option<u64>,
    /// Samples one query may load and produce before it is refused (default 50000000,
    /// as Prometheus's --query.max-samples).
    #[cfg_attr(feature = "cli", arg(long))]
    pub query_max_samples: Option<usize>,
    /// Forward everything stored to this remote_write URL (repeatable; added to the
    /// config's [[forward]]), from the WAL: nothing acknowledged is lost across restarts
    /// or the backend's outages.
    #[cfg_attr(feature = "cli", arg(long = "forward", value_name = "URL"))]
    pub forward: Vec<String>,
    /// Bytes of WAL one lagging backend may hold back before its oldest unread part is
    /// given up (default 1073741824).
    #[cfg_attr(feature = "cli", arg(long))]
    pub forward_max_backlog: Option<u64>,
    /// Evaluate rules and SLOs, and answer /api/v1/query and query_range, through this
    /// Prometheus query API (VictoriaMetrics, Mimir, Thanos, Prometheus) instead of the
    /// local head; pair it with --forward to the same backend.
    #[cfg_attr(feature = "cli", arg(long, value_name = "URL"))]
    pub query_url: Option<String>,
    /// The query backend's bearer token, from a file (read at each query).
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub query_token_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_and_reports_lines() {
        let (file, d) = CollectorFile::parse("listen = \"127.0.0.1:9464\"\nretention = \"2d\"\n").expect("parse");
        assert_eq!(file.listen.map(|l| l.port()), Some(9464));
        assert_eq!(d.retention, Duration::from_secs(2 * 86400));
        assert_eq!(d.checkpoint_interval, Duration::from_secs(300));
        let e = CollectorFile::parse("listen = \"127.0.0.1:9464\"\ncolour = 1\n").expect_err("unknown key");
        assert_eq!(e.line, Some(2), "{e}");
        let e = CollectorFile::parse("\nretention = \"forever\"\n").expect_err("bad duration");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("15d"));
        let e = CollectorFile::parse("retention = \"1s\"\n").expect_err("too short");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn notify_table_is_checked_with_lines() {
        let source = "listen = \"127.0.0.1:9464\"\n[notify]\nwebhooks = [\"http://127.0.0.1:9465/hooks/alertmanager\"]\ngroup_wait = \"1s\"\n";
        let (file, _) = CollectorFile::parse(source).expect("parse");
        let route = file.notify.route(|_| None).expect("route");
        assert_eq!(route.group_wait, Duration::from_secs(1));
        assert_eq!(route.group_by, ["alertname"]);
        let e = CollectorFile::parse("[notify]\ngroup_wait = \"soon\"\n").expect_err("bad duration");
        assert_eq!(e.line, Some(2), "{e}");
        let e = CollectorFile::parse("[notify]\nwebhooks = [\"ftp://x\"]\n").expect_err("bad url");
        assert_eq!(e.line, Some(2), "{e}");
        let e = CollectorFile::parse("[notify]\nsecret = \"x\"\n").expect_err("unknown key");
        assert_eq!(e.line, Some(2), "{e}");
        let e =
            CollectorFile::parse("[notify]\ngroup_interval = \"1h\"\nrepeat_interval = \"5m\"\n").expect_err("order");
        assert_eq!(e.line, Some(3), "{e}");
    }

    const FILE: &str = "listen = \"127.0.0.2:9000\"\nretention = \"2d\"\nrule_files = [\"rules.yml\"]\n\
                        slo_time_scale = 0.5\n[notify]\nwebhooks = [\"http://file/hook\"]\ngroup_wait = \"3s\"\n";

    fn merged(source: &str, flags: CollectorFlags) -> Result<CollectorConfig, ConfigError> {
        CollectorFile::parse(source).expect("parse").0.into_config(Path::new("/etc/hale"), flags)
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let defaults = merged("", CollectorFlags::default()).expect("defaults");
        let file = merged(FILE, CollectorFlags::default()).expect("file");
        let flags = || CollectorFlags {
            listen: Some("127.0.0.3:9999".parse().expect("addr")),
            retention: Some("3d".into()),
            group_wait: Some("7s".into()),
            slo_time_scale: Some(0.25),
            ..CollectorFlags::default()
        };
        let both = merged(FILE, flags()).expect("flags");
        let day = Duration::from_secs(86400);
        assert_eq!([defaults.retention, file.retention, both.retention], [15 * day, 2 * day, 3 * day]);
        assert_eq!(
            [defaults.listen, file.listen, both.listen].map(|a| a.to_string()),
            ["127.0.0.1:9464", "127.0.0.2:9000", "127.0.0.3:9999"]
        );
        assert_eq!(
            [&defaults, &file, &both].map(|c| c.notify.route.group_wait),
            [crate::notify::dispatch::Route::default().group_wait, Duration::from_secs(3), Duration::from_secs(7)]
        );
        assert_eq!([&defaults, &file, &both].map(|c| c.slo_options.time_scale), [1.0, 0.5, 0.25]);
        assert_eq!(both.notify.external_url, "http://127.0.0.3:9999", "links point where it listens");
        assert_eq!(defaults.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        // Settings the flags only ever give: never from the file.
        assert!(both.ingest_token.is_none() && both.admin_token.is_none() && both.notify.webhook_secret.is_none());
    }

    #[test]
    fn listed_flags_add_to_the_files_lists_which_are_relative_to_it() {
        let flags = CollectorFlags {
            rules: vec![PathBuf::from("extra.yml")],
            slos: vec![PathBuf::from("/abs/slo.yaml")],
            alert_webhooks: vec!["http://flag/hook".into()],
            ..CollectorFlags::default()
        };
        let config = merged(FILE, flags).expect("config");
        assert_eq!(config.rule_files, [PathBuf::from("/etc/hale/rules.yml"), PathBuf::from("extra.yml")]);
        assert_eq!(config.slo_files, [PathBuf::from("/abs/slo.yaml")]);
        assert_eq!(config.notify.webhooks, ["http://file/hook", "http://flag/hook"]);
    }

    #[test]
    fn the_config_prints_without_its_secrets() {
        let flags = CollectorFlags {
            ingest_token: Some("ingest-0f3a".into()),
            admin_token: Some("admin-9c1d".into()),
            webhook_secret: Some("hmac-77be".into()),
            alert_webhooks: vec!["http://file/hook".into()],
            ..CollectorFlags::default()
        };
        let config = merged(FILE, flags).expect("config");
        let printed = format!("{config:?}");
        assert!(printed.contains("http://file/hook") && printed.contains("Secret(..)"), "{printed}");
        for secret in ["ingest-0f3a", "admin-9c1d", "hmac-77be"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }

    #[test]
    fn bad_flags_are_refused_in_the_flags_words() {
        let bad = |flags: CollectorFlags| merged("", flags).map(|_| ()).expect_err("refused").to_string();
        let secret = bad(CollectorFlags { webhook_secret: Some(String::new()), ..CollectorFlags::default() });
        assert!(secret.contains("--webhook-secret"), "{secret}");
        let retention = bad(CollectorFlags { retention: Some("1s".into()), ..CollectorFlags::default() });
        assert!(retention.contains("retention must be at least"), "{retention}");
        let scale = bad(CollectorFlags { slo_time_scale: Some(2.0), ..CollectorFlags::default() });
        assert!(scale.contains("slo_time_scale"), "{scale}");
        let hook = bad(CollectorFlags { alert_webhooks: vec!["ftp://x".into()], ..CollectorFlags::default() });
        assert!(hook.contains("not an http://"), "{hook}");
    }
}
