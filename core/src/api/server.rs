//! Prometheus's server answers the collector gives as a Grafana datasource:
//! `/api/v1/status/{buildinfo,config,flags,runtimeinfo}`, `/api/v1/targets` and
//! `/api/v1/metadata`, in Prometheus 2.42's field names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Labels;

/// The Prometheus API version the collector answers as: what Grafana reads to decide
/// which calls it may make (`match[]` on label values, for one).
pub const PROMETHEUS_API_VERSION: &str = "2.42.0";

/// `/api/v1/status/buildinfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    /// [`PROMETHEUS_API_VERSION`]: the API level, not Hale's release.
    pub version: String,
    /// `hale <release>`: which program answers.
    pub revision: String,
    pub branch: String,
    pub build_user: String,
    pub build_date: String,
    pub go_version: String,
}

/// `/api/v1/status/config`: the configuration, as Prometheus YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigYaml {
    pub yaml: String,
}

/// `/api/v1/status/runtimeinfo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// RFC 3339.
    #[serde(rename = "startTime")]
    pub start_time: String,
    #[serde(rename = "CWD")]
    pub cwd: String,
    #[serde(rename = "reloadConfigSuccess")]
    pub reload_config_success: bool,
    /// RFC 3339.
    #[serde(rename = "lastConfigTime")]
    pub last_config_time: String,
    #[serde(rename = "corruptionCount")]
    pub corruption_count: u64,
    /// Tasks alive on the runtime (Go's goroutines).
    #[serde(rename = "goroutineCount")]
    pub goroutine_count: u64,
    /// Worker threads.
    #[serde(rename = "GOMAXPROCS")]
    pub gomaxprocs: u64,
    #[serde(rename = "GOGC")]
    pub gogc: String,
    #[serde(rename = "GODEBUG")]
    pub godebug: String,
    /// `15d`, `15d or 1GiB`.
    #[serde(rename = "storageRetention")]
    pub storage_retention: String,
}

/// `/api/v1/status/flags`: each setting by its flag name, as text.
pub type Flags = BTreeMap<String, String>;

/// `/api/v1/targets`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Targets {
    pub active_targets: Vec<ScrapeTarget>,
    pub dropped_targets: Vec<DroppedTarget>,
}

/// One scrape target and how its last scrape went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScrapeTarget {
    pub discovered_labels: Labels,
    pub labels: Labels,
    pub scrape_pool: String,
    pub scrape_url: String,
    pub global_url: String,
    pub last_error: String,
    /// RFC 3339.
    pub last_scrape: String,
    pub last_scrape_duration: f64,
    /// `up`, `down` or `unknown` (no fresh scrape: missing is never healthy).
    pub health: String,
    pub scrape_interval: String,
    pub scrape_timeout: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DroppedTarget {
    pub discovered_labels: Labels,
}

/// `/api/v1/metadata`: per metric family, what its exposition said of it.
pub type Metadata = BTreeMap<String, Vec<MetricMetadata>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MetricMetadata {
    /// `counter`, `gauge`, `histogram`, `summary`, `info`, `stateset`, `unknown`.
    #[serde(rename = "type")]
    pub kind: String,
    pub help: String,
    pub unit: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_use_prometheus_field_names() {
        let info = RuntimeInfo {
            start_time: "2026-12-06T00:00:00Z".into(),
            cwd: "/".into(),
            reload_config_success: true,
            last_config_time: "2026-12-06T00:00:00Z".into(),
            corruption_count: 0,
            goroutine_count: 3,
            gomaxprocs: 2,
            gogc: String::new(),
            godebug: String::new(),
            storage_retention: "15d".into(),
        };
        let json = serde_json::to_value(&info).expect("json");
        for key in ["startTime", "CWD", "reloadConfigSuccess", "goroutineCount", "GOMAXPROCS", "storageRetention"] {
            assert!(json.get(key).is_some(), "{key}: {json}");
        }
        assert_eq!(serde_json::from_value::<RuntimeInfo>(json).expect("back"), info);
        let targets: Targets = serde_json::from_str(
            r#"{"activeTargets":[{"discoveredLabels":{},"labels":{"job":"node"},"scrapePool":"node",
            "scrapeUrl":"http://a/metrics","globalUrl":"http://a/metrics","lastError":"","lastScrape":"2026-12-06T00:00:00Z",
            "lastScrapeDuration":0.01,"health":"up","scrapeInterval":"15s","scrapeTimeout":"10s"}],"droppedTargets":[]}"#,
        )
        .expect("a Prometheus targets answer");
        assert_eq!(targets.active_targets[0].health, "up");
        let meta: Metadata = serde_json::from_str(r#"{"up":[{"type":"gauge","help":"Target is up.","unit":""}]}"#)
            .expect("a Prometheus metadata answer");
        assert_eq!(meta["up"][0].kind, "gauge");
    }
}
