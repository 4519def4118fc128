//! Alertmanager's v4 webhook and API payloads, and the healer's escalation.

use serde::{Deserialize, Serialize};

use super::{ActionKind, ActionStatus, Labels, Target};

/// Whether a notified alert still fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyStatus {
    Firing,
    Resolved,
    /// Missing or not Alertmanager's: neither firing nor resolved, so never acted on.
    #[default]
    #[serde(other)]
    Unknown,
}

/// One alert of Alertmanager's webhook payload; whatever another sender leaves out is
/// empty (and its status unknown).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: NotifyStatus,
    pub labels: Labels,
    pub annotations: Labels,
    /// RFC 3339, as is `ends_at` (`0001-01-01T00:00:00Z` while firing).
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// 16 hex digits ([`crate::webhook::fingerprint`]); may be empty from other senders.
    pub fingerprint: String,
}

/// Alertmanager's webhook payload (`"version": "4"`): what the collector's notifications
/// carry and the healer's intake reads, so any receiver written for Alertmanager reads
/// Hale's unchanged. Only `alerts` is required of other senders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    #[serde(default)]
    pub status: NotifyStatus,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: Labels,
    #[serde(default)]
    pub common_labels: Labels,
    #[serde(default)]
    pub common_annotations: Labels,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<WebhookAlert>,
}

/// One alert of Alertmanager's `POST /api/v2/alerts` body (`PostableAlert`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
}

/// The `version` of [`Escalation`].
pub const ESCALATION_VERSION: &str = "hale-escalation/1";

/// The alert an escalation is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalatedAlert {
    pub alertname: String,
    pub fingerprint: String,
    pub starts_at: String,
    pub labels: Labels,
}

/// One action already tried on an escalated target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriedAction {
    pub action_id: String,
    pub action: ActionKind,
    pub status: ActionStatus,
    pub detail: String,
}

/// What the healer sends its escalation receivers when a repair failed and a human is
/// needed (signed like webhooks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// [`ESCALATION_VERSION`].
    pub version: String,
    pub action_id: String,
    pub policy: String,
    pub action: ActionKind,
    pub target: Target,
    pub alert: EscalatedAlert,
    pub why: String,
    /// Every action taken on the target, oldest first.
    pub tried: Vec<TriedAction>,
    pub burn_rate_before: Option<f64>,
    pub burn_rate_after: Option<f64>,
    /// What a human should do.
    pub next: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::round_trip;

    #[test]
    fn the_webhook_payload_round_trips_and_parses_as_the_collector_writes_it() {
        let served = r#"{"version":"4","groupKey":"{}:{alertname=\"Down\"}","truncatedAlerts":0,"status":"firing",
            "receiver":"webhook-1","groupLabels":{"alertname":"Down"},"commonLabels":{"alertname":"Down"},
            "commonAnnotations":{},"externalURL":"http://c:9464","alerts":[{"status":"firing",
            "labels":{"alertname":"Down","instance":"a"},"annotations":{"summary":"a is down"},
            "startsAt":"1970-01-01T00:00:01.000000000Z","endsAt":"0001-01-01T00:00:00Z",
            "generatorURL":"http://c:9464/api/v1/rules?type=alert#Down","fingerprint":"000000000000002a"}]}"#;
        let payload: WebhookPayload = serde_json::from_str(served).expect("payload");
        assert_eq!(payload.status, NotifyStatus::Firing);
        assert_eq!(payload.alerts[0].fingerprint, "000000000000002a");
        assert_eq!(payload.alerts[0].generator_url, "http://c:9464/api/v1/rules?type=alert#Down");
        round_trip(&payload);
        let again: serde_json::Value = serde_json::to_value(&payload).expect("json");
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(served).expect("json"));
        // Another sender's bare minimum still reads; a status that is not Alertmanager's is neither.
        let bare: WebhookPayload =
            serde_json::from_str(r#"{"alerts":[{"status":"weird","labels":{"a":"b"}}]}"#).expect("bare");
        assert_eq!(bare.alerts[0].status, NotifyStatus::Unknown);
        assert_eq!(serde_json::from_str::<WebhookAlert>("{}").expect("empty"), WebhookAlert::default());
        round_trip(&vec![PostableAlert {
            labels: [("alertname".to_string(), "Down".to_string())].into(),
            annotations: Labels::new(),
            starts_at: "1970-01-01T00:00:01Z".into(),
            ends_at: "1970-01-01T00:04:01Z".into(),
            generator_url: String::new(),
        }]);
    }

    #[test]
    fn the_escalation_round_trips() {
        let escalation = Escalation {
            version: ESCALATION_VERSION.into(),
            action_id: "act-1".into(),
            policy: "restart-hung".into(),
            action: ActionKind::Restart,
            target: Target { service: Some("orders".into()), instance: Some("orders-2".into()), node: None },
            alert: EscalatedAlert {
                alertname: "ReplicaDown".into(),
                fingerprint: "f".into(),
                starts_at: "2026-01-01T00:00:00Z".into(),
                labels: Labels::new(),
            },
            why: "still down".into(),
            tried: vec![TriedAction {
                action_id: "act-1".into(),
                action: ActionKind::Restart,
                status: ActionStatus::Failed,
                detail: "x".into(),
            }],
            burn_rate_before: Some(14.4),
            burn_rate_after: None,
            next: "reset it".into(),
        };
        round_trip(&escalation);
        let v = serde_json::to_value(&escalation).expect("json");
        assert_eq!(v["version"], "hale-escalation/1");
        assert_eq!(v["target"], serde_json::json!({"service": "orders", "instance": "orders-2", "node": null}));
        assert_eq!(v["burn_rate_after"], serde_json::Value::Null);
    }
}
