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

/// The `version` of [`Escalation`]: `/2` travels as an Alertmanager alert.
pub const ESCALATION_VERSION: &str = "hale-escalation/2";

/// The `alertname` of the alert an escalation travels as.
pub const ESCALATION_ALERTNAME: &str = "HaleRepairFailed";

/// The annotation holding the whole [`Escalation`] as JSON, so a Hale-aware receiver
/// reads it back ([`Escalation::from_webhook`]) while any other shows the summary.
pub const ESCALATION_ANNOTATION: &str = "hale_escalation";

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

impl Escalation {
    /// The escalation as an Alertmanager alert that fires: labels say what needs a human
    /// (`alertname="HaleRepairFailed"`, `severity="page"`, the target's service, instance
    /// and node, the alert that started it), annotations why (`summary`, `description`)
    /// and Hale's own fields (`hale_action_id`, `hale_policy`, the burn rates, the whole
    /// record in [`ESCALATION_ANNOTATION`]). `now` is RFC 3339.
    pub fn to_alert(&self, now: &str, generator_url: &str) -> WebhookAlert {
        let mut labels = Labels::new();
        labels.insert("alertname".into(), ESCALATION_ALERTNAME.into());
        labels.insert("severity".into(), "page".into());
        labels.insert("escalated_alertname".into(), self.alert.alertname.clone());
        labels.insert("hale_target".into(), self.target.key());
        for (name, value) in
            [("service", &self.target.service), ("instance", &self.target.instance), ("node", &self.target.node)]
        {
            if let Some(value) = value {
                labels.insert(name.into(), value.clone());
            }
        }
        let target = self.target.key();
        let mut annotations = Labels::new();
        annotations.insert("summary".into(), format!("Hale could not repair {target}: a human is needed"));
        annotations.insert("description".into(), format!("{}. {}", self.why, self.next));
        annotations.insert("hale_action_id".into(), self.action_id.clone());
        annotations.insert("hale_policy".into(), self.policy.clone());
        for (name, burn) in
            [("hale_burn_rate_before", self.burn_rate_before), ("hale_burn_rate_after", self.burn_rate_after)]
        {
            if let Some(burn) = burn {
                annotations.insert(name.into(), burn.to_string());
            }
        }
        annotations.insert(ESCALATION_ANNOTATION.into(), serde_json::to_string(self).unwrap_or_default());
        let fingerprint = format!("{:016x}", crate::webhook::fingerprint(&labels));
        WebhookAlert {
            status: NotifyStatus::Firing,
            labels,
            annotations,
            starts_at: now.to_string(),
            ends_at: "0001-01-01T00:00:00Z".into(),
            generator_url: generator_url.to_string(),
            fingerprint,
        }
    }

    /// The escalation as Alertmanager's webhook payload (`"version": "4"`): what Slack
    /// and PagerDuty bridges and any receiver written for Alertmanager take unchanged.
    pub fn to_webhook(&self, now: &str, generator_url: &str) -> WebhookPayload {
        let alert = self.to_alert(now, generator_url);
        let group = [("alertname".to_string(), ESCALATION_ALERTNAME.to_string())].into_iter().collect::<Labels>();
        WebhookPayload {
            version: "4".into(),
            group_key: format!("{{}}:{{alertname=\"{ESCALATION_ALERTNAME}\"}}"),
            truncated_alerts: 0,
            status: NotifyStatus::Firing,
            receiver: "hale-escalation".into(),
            group_labels: group,
            common_labels: alert.labels.clone(),
            common_annotations: alert.annotations.clone(),
            external_url: generator_url.to_string(),
            alerts: vec![alert],
        }
    }

    /// The escalation as an alert for Alertmanager's `POST /api/v2/alerts`, firing until
    /// `ends_at` (RFC 3339) unless sent again.
    pub fn to_postable(&self, now: &str, ends_at: &str, generator_url: &str) -> PostableAlert {
        let alert = self.to_alert(now, generator_url);
        PostableAlert {
            labels: alert.labels,
            annotations: alert.annotations,
            starts_at: alert.starts_at,
            ends_at: ends_at.to_string(),
            generator_url: alert.generator_url,
        }
    }

    /// The escalation a webhook payload carries, if it is one of Hale's.
    pub fn from_webhook(payload: &WebhookPayload) -> Option<Escalation> {
        payload.alerts.iter().find_map(|a| serde_json::from_str(a.annotations.get(ESCALATION_ANNOTATION)?).ok())
    }
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
        assert_eq!(v["version"], "hale-escalation/2");
        // As an Alertmanager alert: labels for routing, the record whole in an annotation.
        let payload = escalation.to_webhook("2026-01-01T00:01:00Z", "http://healer:9465/api/v1/actions/act-1");
        round_trip(&payload);
        let alert = &payload.alerts[0];
        assert_eq!(alert.labels["alertname"], ESCALATION_ALERTNAME);
        assert_eq!(alert.labels["instance"], "orders-2");
        assert_eq!(alert.labels["escalated_alertname"], "ReplicaDown");
        assert_eq!(alert.annotations["hale_burn_rate_before"], "14.4");
        assert!(alert.annotations["summary"].contains("instance/orders-2"));
        assert_eq!(Escalation::from_webhook(&payload), Some(escalation.clone()));
        let postable = escalation.to_postable("2026-01-01T00:01:00Z", "2026-01-02T00:01:00Z", "");
        assert_eq!(postable.labels, alert.labels);
        assert_eq!(v["target"], serde_json::json!({"service": "orders", "instance": "orders-2", "node": null}));
        assert_eq!(v["burn_rate_after"], serde_json::Value::Null);
    }
}
