//! `collector.toml`: everything `hale collector` takes beyond its flags. Unknown keys and
//! bad values are refused with the line they are on.

use serde::Deserialize;

pub use hale_core::ConfigError;

fn default_retention() -> String {
    "15d".into()
}
fn default_checkpoint_interval() -> String {
    "5m".into()
}
fn default_evaluation_interval() -> String {
    "15s".into()
}

/// The file's contents; durations as text (`15d`, `5m`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CollectorFile {
    /// Address to serve on.
    pub listen: Option<std::net::SocketAddr>,
    /// Where the WAL, checkpoints and logs live.
    pub data_dir: Option<std::path::PathBuf>,
    /// Keep samples and logs this long.
    #[serde(default = "default_retention")]
    pub retention: String,
    /// Keep at most this many bytes of compressed samples in memory (0: no limit).
    #[serde(default)]
    pub retention_bytes: usize,
    /// Fold the WAL into a checkpoint this often.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: String,
    /// Prometheus rule files to evaluate (relative to this file's folder).
    #[serde(default)]
    pub rule_files: Vec<std::path::PathBuf>,
    /// How often rule groups without an interval of their own run.
    #[serde(default = "default_evaluation_interval")]
    pub evaluation_interval: String,
    /// Labels alert templates see as `$externalLabels`.
    #[serde(default)]
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// Where alerts are notified and how they are grouped.
    #[serde(default)]
    pub notify: NotifyFile,
    /// Sloth SLO specs to evaluate (relative to this file's folder).
    #[serde(default)]
    pub slo_files: Vec<std::path::PathBuf>,
    /// SLO windows are multiplied by this (1 in production).
    #[serde(default = "one")]
    pub slo_time_scale: f64,
    /// An SLO alert window needs at least this many events (0: no guard).
    #[serde(default)]
    pub slo_min_events: u64,
}

fn one() -> f64 {
    1.0
}

/// The `[notify]` table. The webhook secret is not here: it comes from
/// `--webhook-secret` or `HALE_WEBHOOK_SECRET`, never from a file that may be shared.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    /// Webhook receivers (Alertmanager's payload, signed).
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// Alertmanager base URLs to forward alerts to.
    #[serde(default)]
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
    /// This collector's URL, for links in notifications (default http://<listen>).
    pub external_url: Option<String>,
}

impl NotifyFile {
    /// The route, with durations checked; `line` finds a key's line for errors.
    pub fn route(&self, line: impl Fn(&str) -> Option<usize>) -> Result<crate::notify::dispatch::Route, ConfigError> {
        let default = crate::notify::dispatch::Route::default();
        let parse = |key: &str, text: &Option<String>, fallback: std::time::Duration| match text {
            None => Ok(fallback),
            Some(t) => humantime::parse_duration(t).map_err(|_| ConfigError {
                line: line(key),
                message: format!("{key} = {t:?} is not a duration; write 0s, 30s, 5m or 4h"),
            }),
        };
        let route = crate::notify::dispatch::Route {
            group_by: self.group_by.clone().unwrap_or(default.group_by),
            group_wait: parse("group_wait", &self.group_wait, default.group_wait)?,
            group_interval: parse("group_interval", &self.group_interval, default.group_interval)?,
            repeat_interval: parse("repeat_interval", &self.repeat_interval, default.repeat_interval)?,
            send_resolved: self.send_resolved.unwrap_or(default.send_resolved),
        };
        if route.group_interval.is_zero() {
            return Err(ConfigError {
                line: line("group_interval"),
                message: "group_interval must be more than 0".into(),
            });
        }
        if route.repeat_interval < route.group_interval {
            return Err(ConfigError {
                line: line("repeat_interval"),
                message: "repeat_interval must be at least group_interval".into(),
            });
        }
        for (key, urls) in [("webhooks", &self.webhooks), ("alertmanagers", &self.alertmanagers)] {
            if let Some(bad) = urls.iter().find(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
                return Err(ConfigError {
                    line: line(key),
                    message: format!("{key}: {bad:?} is not an http:// or https:// URL"),
                });
            }
        }
        Ok(route)
    }
}

#[cfg(test)]
mod notify_tests {
    use super::*;

    #[test]
    fn notify_table_is_checked_with_lines() {
        let source = "listen = \"127.0.0.1:9464\"\n[notify]\nwebhooks = [\"http://127.0.0.1:9465/hooks/alertmanager\"]\ngroup_wait = \"1s\"\n";
        let (file, _) = CollectorFile::parse(source).expect("parse");
        let route = file.notify.route(|_| None).expect("route");
        assert_eq!(route.group_wait, std::time::Duration::from_secs(1));
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
}

impl Default for CollectorFile {
    fn default() -> Self {
        CollectorFile {
            listen: None,
            data_dir: None,
            retention: default_retention(),
            retention_bytes: 0,
            checkpoint_interval: default_checkpoint_interval(),
            rule_files: Vec::new(),
            evaluation_interval: default_evaluation_interval(),
            external_labels: Default::default(),
            notify: NotifyFile::default(),
            slo_files: Vec::new(),
            slo_time_scale: 1.0,
            slo_min_events: 0,
        }
    }
}

/// Validated durations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durations {
    pub retention: std::time::Duration,
    pub checkpoint_interval: std::time::Duration,
    pub evaluation_interval: std::time::Duration,
}

impl CollectorFile {
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

    pub fn parse(source: &str) -> Result<(Self, Durations), ConfigError> {
        let file: CollectorFile = toml::from_str(source).map_err(|e| ConfigError::from_toml(source, &e))?;
        let durations = file.durations(|key| hale_core::find_key_line(source, key))?;
        file.notify.route(|key| hale_core::find_key_line(source, key))?;
        file.slo_options(|key| hale_core::find_key_line(source, key))?;
        Ok((file, durations))
    }

    /// Checks and converts the durations; `line` finds a key's line for errors.
    pub fn durations(&self, line: impl Fn(&str) -> Option<usize>) -> Result<Durations, ConfigError> {
        let parse = |key: &str, text: &str, min: std::time::Duration| -> Result<std::time::Duration, ConfigError> {
            let d = humantime::parse_duration(text).map_err(|_| ConfigError {
                line: line(key),
                message: format!("{key} = {text:?} is not a duration; write 15d, 12h or 5m"),
            })?;
            if d < min {
                return Err(ConfigError {
                    line: line(key),
                    message: format!("{key} must be at least {}", humantime::format_duration(min)),
                });
            }
            Ok(d)
        };
        Ok(Durations {
            retention: parse("retention", &self.retention, std::time::Duration::from_secs(60))?,
            checkpoint_interval: parse(
                "checkpoint_interval",
                &self.checkpoint_interval,
                std::time::Duration::from_millis(100),
            )?,
            evaluation_interval: parse(
                "evaluation_interval",
                &self.evaluation_interval,
                std::time::Duration::from_millis(100),
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_and_reports_lines() {
        let (file, d) = CollectorFile::parse("listen = \"127.0.0.1:9464\"\nretention = \"2d\"\n").expect("parse");
        assert_eq!(file.listen.map(|l| l.port()), Some(9464));
        assert_eq!(d.retention, std::time::Duration::from_secs(2 * 86400));
        assert_eq!(d.checkpoint_interval, std::time::Duration::from_secs(300));
        let e = CollectorFile::parse("listen = \"127.0.0.1:9464\"\ncolour = 1\n").expect_err("unknown key");
        assert_eq!(e.line, Some(2), "{e}");
        let e = CollectorFile::parse("\nretention = \"forever\"\n").expect_err("bad duration");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("15d"));
        let e = CollectorFile::parse("retention = \"1s\"\n").expect_err("too short");
        assert_eq!(e.line, Some(1));
    }
}
