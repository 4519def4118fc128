//! What the collector tells Prometheus's status endpoints about itself: the settings it
//! runs with, as flags and as a Prometheus-shaped config, and when it started. Built once
//! from the [`CollectorConfig`]; it never holds a secret (tokens, the webhook key, and
//! webhook URLs, which may carry credentials, are left out or counted).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use hale_core::api::Flags;
use serde::Serialize;

use crate::run::CollectorConfig;

#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub started_at: SystemTime,
    pub flags: Flags,
    /// The configuration as Prometheus YAML (`global`, `rule_files`, `alerting`).
    pub config_yaml: String,
    /// `15d`, or `15d or 512MiB` with a byte bound.
    pub retention: String,
    /// The notification route as Alertmanager YAML (its `/api/v2/status`).
    pub alertmanager_yaml: String,
}

/// The Prometheus configuration subset that describes what the collector does.
#[derive(Serialize)]
struct PromConfig<'a> {
    global: Global<'a>,
    rule_files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alerting: Option<Alerting>,
}

#[derive(Serialize)]
struct Global<'a> {
    evaluation_interval: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    external_labels: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Alerting {
    alertmanagers: Vec<Alertmanager>,
}

#[derive(Serialize)]
struct Alertmanager {
    api_version: &'static str,
    static_configs: Vec<StaticConfig>,
}

#[derive(Serialize)]
struct StaticConfig {
    targets: Vec<String>,
}

/// A URL without its user and password.
fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            // Only fails for URLs that cannot carry credentials, which then have none.
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

impl ServerInfo {
    pub fn of(config: &CollectorConfig) -> ServerInfo {
        let paths = |files: &[std::path::PathBuf]| files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
        let retention = match config.retention_bytes {
            0 => human(config.retention),
            bytes => format!("{} or {bytes}B", human(config.retention)),
        };
        let alertmanagers: Vec<String> = config.notify.alertmanagers.iter().map(|u| without_credentials(u)).collect();
        let route = &config.notify.route;
        let flags: Flags = [
            ("listen", config.listen.to_string()),
            ("data-dir", config.data_dir.display().to_string()),
            ("retention", human(config.retention)),
            ("retention-bytes", config.retention_bytes.to_string()),
            ("checkpoint-interval", human(config.checkpoint_interval)),
            ("rules", paths(&config.rule_files).join(",")),
            ("evaluation-interval", human(config.evaluation_interval)),
            ("alertmanager", alertmanagers.join(",")),
            ("alert-webhooks", config.notify.webhooks.len().to_string()),
            ("group-wait", human(route.group_wait)),
            ("group-interval", human(route.group_interval)),
            ("repeat-interval", human(route.repeat_interval)),
            ("slo", paths(&config.slo_files).join(",")),
            ("slo-time-scale", config.slo_options.time_scale.to_string()),
            ("slo-min-events", config.slo_options.min_events.to_string()),
            ("ingest-token", if config.ingest_token.is_some() { "set" } else { "unset" }.to_string()),
            ("admin-token", if config.admin_token.is_some() { "set" } else { "unset" }.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut rule_files = paths(&config.rule_files);
        rule_files.extend(paths(&config.slo_files).into_iter().map(|f| format!("{f} (SLO spec, rules generated)")));
        let prom = PromConfig {
            global: Global {
                evaluation_interval: human(config.evaluation_interval),
                external_labels: &config.external_labels,
            },
            rule_files,
            alerting: (!alertmanagers.is_empty()).then(|| Alerting {
                alertmanagers: vec![Alertmanager {
                    api_version: "v2",
                    static_configs: vec![StaticConfig { targets: alertmanagers }],
                }],
            }),
        };
        let config_yaml = serde_norway::to_string(&prom).unwrap_or_default();
        let alertmanager_yaml = format!(
            "route:\n  receiver: hale\n  group_by: [{}]\n  group_wait: {}\n  group_interval: {}\n  repeat_interval: {}\nreceivers:\n  - name: hale\n",
            route.group_by.join(", "),
            human(route.group_wait),
            human(route.group_interval),
            human(route.repeat_interval),
        );
        ServerInfo { started_at: SystemTime::now(), flags, config_yaml, retention, alertmanager_yaml }
    }
}

impl Default for ServerInfo {
    fn default() -> Self {
        ServerInfo {
            started_at: SystemTime::now(),
            flags: Flags::new(),
            config_yaml: String::new(),
            retention: String::new(),
            alertmanager_yaml: String::new(),
        }
    }
}
