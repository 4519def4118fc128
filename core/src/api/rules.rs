//! Rule groups as the collector's `/api/v1/rules` reports them: Prometheus's shape (what
//! Grafana and promtool-minded tools read), each rule with how its last evaluation went.

use serde::{Deserialize, Serialize};

use super::{ActiveAlert, AlertState, Labels};

/// `GET /api/v1/rules`'s `data`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RulesData {
    pub groups: Vec<RuleGroup>,
}

/// What a group's last evaluation is reported as before its first.
pub const NEVER_EVALUATED: &str = "0001-01-01T00:00:00Z";

/// One rule group, in file order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleGroup {
    pub name: String,
    /// The file it was read from.
    pub file: String,
    pub rules: Vec<Rule>,
    /// Seconds between evaluations.
    pub interval: f64,
    /// At most this many series or alerts per rule; 0: no limit.
    #[serde(default)]
    pub limit: u64,
    /// Seconds the last evaluation of the whole group took.
    #[serde(default)]
    pub evaluation_time: f64,
    /// RFC 3339; [`NEVER_EVALUATED`] before the first.
    #[serde(default)]
    pub last_evaluation: String,
}

/// A rule, what kind it is, and how its last evaluation went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The recorded series' name, or the alert's.
    pub name: String,
    /// The PromQL expression, as written.
    pub query: String,
    #[serde(default)]
    pub labels: Labels,
    /// `"type": "recording"` or `"alerting"`, with the alerting rule's own fields.
    #[serde(flatten)]
    pub kind: RuleKind,
    pub health: RuleHealth,
    /// Empty unless the last evaluation failed.
    #[serde(default)]
    pub last_error: String,
    /// Seconds.
    #[serde(default)]
    pub evaluation_time: f64,
    /// RFC 3339; [`NEVER_EVALUATED`] before the first.
    #[serde(default)]
    pub last_evaluation: String,
}

impl Rule {
    pub fn is_alerting(&self) -> bool {
        matches!(self.kind, RuleKind::Alerting(_))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RuleKind {
    Recording,
    Alerting(AlertingRule),
}

/// What only an alerting rule has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertingRule {
    /// The rule's state: firing if any alert fires, else pending if any is pending.
    pub state: AlertState,
    /// `for`, in seconds.
    pub duration: f64,
    /// `keep_firing_for`, in seconds.
    #[serde(default)]
    pub keep_firing_for: f64,
    /// As written (templates unexpanded).
    #[serde(default)]
    pub annotations: Labels,
    /// Its pending and firing alerts.
    #[serde(default)]
    pub alerts: Vec<ActiveAlert>,
}

/// Whether a rule's last evaluation succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleHealth {
    /// Not evaluated yet.
    Unknown,
    Ok,
    Err,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Envelope, test_support::round_trip};

    /// `/api/v1/rules` as the collector served it before these types (from its `json!`).
    const SERVED: &str = r#"{"status":"success","data":{"groups":[{"evaluationTime":0.0012,
        "file":"/etc/hale/rules.yml","interval":0.2,"lastEvaluation":"2026-12-06T05:00:00.250000000Z",
        "limit":0,"name":"test","rules":[
        {"evaluationTime":0.0003,"health":"ok","labels":{"team":"shop"},"lastError":"",
         "lastEvaluation":"2026-12-06T05:00:00.250000000Z","name":"instance:test_up:doubled",
         "query":"test_up * 2","type":"recording"},
        {"alerts":[{"activeAt":"2026-12-06T04:59:58.000000000Z","annotations":{"summary":"b is down (0)"},
          "labels":{"alertname":"TestDown","instance":"b","severity":"page"},"state":"firing","value":"0e+00"}],
         "annotations":{"summary":"{{ $labels.instance }} is down ({{ $value }})"},"duration":1.0,
         "evaluationTime":0.0004,"health":"ok","keepFiringFor":0.0,"labels":{"severity":"page"},"lastError":"",
         "lastEvaluation":"2026-12-06T05:00:00.250000000Z","name":"TestDown","query":"test_up == 0",
         "state":"firing","type":"alerting"},
        {"alerts":[],"annotations":{},"duration":3600.0,"evaluationTime":0.0,"health":"err","keepFiringFor":60.0,
         "labels":{},"lastError":"too many series","lastEvaluation":"0001-01-01T00:00:00Z","name":"TestStillDown",
         "query":"test_up == 0","state":"inactive","type":"alerting"}]}]}}"#;

    #[test]
    fn rule_groups_parse_as_served_and_round_trip() {
        let parsed: Envelope<RulesData> = serde_json::from_str(SERVED).expect("valid");
        round_trip(&parsed);
        let again = serde_json::to_value(&parsed).expect("json");
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(SERVED).expect("json"), "same JSON as served");
        let group = &parsed.into_data().expect("data").groups[0];
        assert_eq!((group.name.as_str(), group.interval), ("test", 0.2));
        let [record, alert, failing] = &group.rules[..] else { panic!("three rules") };
        assert_eq!(record.kind, RuleKind::Recording);
        assert!(!record.is_alerting() && alert.is_alerting());
        let RuleKind::Alerting(alerting) = &alert.kind else { panic!("alerting") };
        assert_eq!((alerting.state, alerting.duration, alerting.alerts.len()), (AlertState::Firing, 1.0, 1));
        assert_eq!((failing.health, failing.last_error.as_str()), (RuleHealth::Err, "too many series"));
        assert_eq!(failing.last_evaluation, NEVER_EVALUATED);
    }
}
