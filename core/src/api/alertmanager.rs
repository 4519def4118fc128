//! Alertmanager's v2 API as the collector answers it (`/api/v2/alerts`, `/alerts/groups`,
//! `/silences`, `/silence/{id}`, `/status`, `/receivers`), so `amtool` and Grafana's
//! Alertmanager datasource work against it. Field names and required fields follow
//! Alertmanager 0.25's OpenAPI spec, which amtool validates answers against. Silences use
//! [`Silence`](super::Silence) and [`NewSilence`](super::NewSilence), already in its shape.

use serde::{Deserialize, Serialize};

use super::{BuildInfo, Labels};

/// The Alertmanager API version the collector answers as.
pub const ALERTMANAGER_API_VERSION: &str = "0.25.0";

/// A receiver, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmReceiver {
    pub name: String,
}

/// Where an alert stands in Alertmanager's eyes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmAlertState {
    /// Not yet looked at.
    Unprocessed,
    /// Notified.
    Active,
    /// Silenced (or inhibited).
    Suppressed,
}

/// An alert's state and what suppresses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmAlertStatus {
    pub state: AmAlertState,
    pub silenced_by: Vec<String>,
    pub inhibited_by: Vec<String>,
}

/// `GettableAlert`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmAlert {
    pub labels: Labels,
    pub annotations: Labels,
    /// RFC 3339, as the other times.
    pub starts_at: String,
    pub ends_at: String,
    pub updated_at: String,
    pub fingerprint: String,
    pub receivers: Vec<AmReceiver>,
    pub status: AmAlertStatus,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
}

/// `AlertGroup`: the alerts notifications group together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmAlertGroup {
    pub labels: Labels,
    pub receiver: AmReceiver,
    pub alerts: Vec<AmAlert>,
}

/// `POST /api/v2/silences`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmSilenceCreated {
    #[serde(rename = "silenceID")]
    pub silence_id: String,
}

/// `GET /api/v2/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AmStatus {
    pub cluster: AmCluster,
    pub config: AmConfig,
    /// RFC 3339: when the collector started.
    pub uptime: String,
    /// Prometheus's build info fields, which Alertmanager's are too.
    pub version_info: BuildInfo,
}

/// One collector, no gossip cluster: `disabled`, as a lone Alertmanager says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmCluster {
    pub status: String,
    #[serde(default)]
    pub peers: Vec<AmPeer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmPeer {
    pub name: String,
    pub address: String,
}

/// The routing configuration, as Alertmanager YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmConfig {
    pub original: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_read_and_write_alertmanagers_field_names() {
        let text = r#"{"labels":{"alertname":"X"},"annotations":{},"startsAt":"2026-12-06T10:00:00.000Z",
            "endsAt":"2026-12-06T10:05:00.000Z","updatedAt":"2026-12-06T10:00:01.000Z","fingerprint":"0a1b",
            "receivers":[{"name":"hale"}],"status":{"state":"suppressed","silencedBy":["s1"],"inhibitedBy":[]},
            "generatorURL":"http://collector/graph"}"#;
        let alert: AmAlert = serde_json::from_str(text).expect("an Alertmanager alert");
        assert_eq!(alert.status.silenced_by, ["s1"]);
        let again = serde_json::to_value(&alert).expect("json");
        for key in ["startsAt", "endsAt", "updatedAt", "generatorURL", "receivers", "fingerprint"] {
            assert!(again.get(key).is_some(), "{key}");
        }
        assert_eq!(serde_json::to_value(AmSilenceCreated { silence_id: "x".into() }).expect("json")["silenceID"], "x");
        let status = serde_json::to_value(AmStatus {
            cluster: AmCluster { status: "disabled".into(), peers: Vec::new() },
            config: AmConfig { original: String::new() },
            uptime: "2026-12-06T10:00:00Z".into(),
            version_info: BuildInfo {
                version: ALERTMANAGER_API_VERSION.into(),
                revision: String::new(),
                branch: String::new(),
                build_user: String::new(),
                build_date: String::new(),
                go_version: String::new(),
            },
        })
        .expect("json");
        assert!(status["versionInfo"]["goVersion"].is_string() && status["cluster"]["status"] == "disabled");
    }
}
