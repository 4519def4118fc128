//! What notifications carry: Alertmanager's webhook payload (`"version": "4"`), so any
//! receiver written for Alertmanager (the healer, PagerDuty bridges, chat bots) reads
//! Hale's notifications unchanged. Fingerprints (FNV-1a of the labels, stable across
//! restarts, so receivers can deduplicate) and group keys are computed as Alertmanager
//! computes them. Also the `POST /api/v2/alerts` body for forwarding to an Alertmanager.

use hale_core::api::{NotifyStatus, PostableAlert, WebhookAlert, WebhookPayload};

use crate::rules::LabelSet;
use crate::rules::manager::rfc3339;

/// An alert as notifications describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyAlert {
    pub labels: LabelSet,
    pub annotations: LabelSet,
    /// When it became active (ms).
    pub starts_at: i64,
    /// When it resolved (ms); `None` while firing.
    pub ends_at: Option<i64>,
    pub fingerprint: u64,
}

impl NotifyAlert {
    pub fn firing(&self) -> bool {
        self.ends_at.is_none()
    }
}

/// Alertmanager's fingerprint of a label set (shared with the healer, which
/// deduplicates by it).
pub fn fingerprint(labels: &LabelSet) -> u64 {
    hale_core::webhook::fingerprint(labels)
}

/// Alertmanager's group key: the route (`{}`, the root) and the group's labels.
pub fn group_key(group_labels: &LabelSet) -> String {
    let pairs: Vec<String> =
        group_labels.iter().map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default())).collect();
    format!("{{}}:{{{}}}", pairs.join(", "))
}

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The webhook body for one group's notification to `receiver`.
pub fn webhook_body(
    receiver: &str,
    group_labels: &LabelSet,
    alerts: &[NotifyAlert],
    external_url: &str,
) -> WebhookPayload {
    let status = |firing: bool| if firing { NotifyStatus::Firing } else { NotifyStatus::Resolved };
    let common = |pick: fn(&NotifyAlert) -> &LabelSet| -> LabelSet {
        let Some(first) = alerts.first() else { return LabelSet::new() };
        pick(first)
            .iter()
            .filter(|(k, v)| alerts.iter().all(|a| pick(a).get(*k) == Some(*v)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    WebhookPayload {
        version: "4".into(),
        group_key: group_key(group_labels),
        truncated_alerts: 0,
        status: status(alerts.iter().any(NotifyAlert::firing)),
        receiver: receiver.into(),
        group_labels: group_labels.clone(),
        common_labels: common(|a| &a.labels),
        common_annotations: common(|a| &a.annotations),
        external_url: external_url.into(),
        alerts: alerts
            .iter()
            .map(|a| WebhookAlert {
                status: status(a.firing()),
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: rfc3339(a.starts_at),
                ends_at: a.ends_at.map_or_else(|| ZERO_TIME.to_string(), rfc3339),
                generator_url: generator_url(external_url, a),
                fingerprint: format!("{:016x}", a.fingerprint),
            })
            .collect(),
    }
}

/// A link to the alert's rule in the collector's API.
fn generator_url(external_url: &str, a: &NotifyAlert) -> String {
    let name = a.labels.get("alertname").map_or("", String::as_str);
    let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("type", "alert").finish();
    format!("{}/api/v1/rules?{query}#{name}", external_url.trim_end_matches('/'))
}

/// Alertmanager's `POST /api/v2/alerts` body for these alerts. `valid_until` is the
/// `endsAt` of firing ones: Alertmanager resolves them itself if no update comes by then.
pub fn alertmanager_body(alerts: &[NotifyAlert], valid_until: i64, external_url: &str) -> Vec<PostableAlert> {
    alerts
        .iter()
        .map(|a| PostableAlert {
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: rfc3339(a.starts_at),
            ends_at: rfc3339(a.ends_at.unwrap_or(valid_until)),
            generator_url: generator_url(external_url, a),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn fingerprint_is_alertmanagers() {
        // Alertmanager (model.LabelSet.Fingerprint) gives 0xcbf29ce484222325 for no labels
        // and is order independent; the labels are sorted here by construction.
        assert_eq!(fingerprint(&LabelSet::new()), 0xcbf2_9ce4_8422_2325);
        let a = fingerprint(&labels(&[("alertname", "Down"), ("instance", "a")]));
        let b = fingerprint(&labels(&[("instance", "a"), ("alertname", "Down")]));
        assert_eq!(a, b);
        assert_ne!(a, fingerprint(&labels(&[("alertname", "Down"), ("instance", "b")])));
        // The separators keep "ab"+"c" apart from "a"+"bc".
        assert_ne!(fingerprint(&labels(&[("ab", "c")])), fingerprint(&labels(&[("a", "bc")])));
    }

    #[test]
    fn webhook_body_has_alertmanagers_shape() {
        let firing = NotifyAlert {
            labels: labels(&[("alertname", "Down"), ("instance", "a"), ("severity", "page")]),
            annotations: labels(&[("summary", "a is down")]),
            starts_at: 1_000,
            ends_at: None,
            fingerprint: 42,
        };
        let resolved = NotifyAlert {
            labels: labels(&[("alertname", "Down"), ("instance", "b"), ("severity", "page")]),
            annotations: labels(&[("summary", "b is down")]),
            starts_at: 1_000,
            ends_at: Some(5_000),
            fingerprint: 43,
        };
        let body = webhook_body("healer", &labels(&[("alertname", "Down")]), &[firing, resolved], "http://c:9464");
        let body = serde_json::to_value(body).expect("json");
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["receiver"], "healer");
        assert_eq!(body["groupKey"], "{}:{alertname=\"Down\"}");
        assert_eq!(body["groupLabels"]["alertname"], "Down");
        assert_eq!(body["commonLabels"], json!({"alertname": "Down", "severity": "page"}));
        assert_eq!(body["commonAnnotations"], json!({}));
        assert_eq!(body["alerts"][0]["status"], "firing");
        assert_eq!(body["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(body["alerts"][0]["startsAt"], "1970-01-01T00:00:01.000000000Z");
        assert_eq!(body["alerts"][0]["fingerprint"], "000000000000002a");
        assert_eq!(body["alerts"][1]["status"], "resolved");
        assert_eq!(body["alerts"][1]["endsAt"], "1970-01-01T00:00:05.000000000Z");
        assert!(
            body["alerts"][0]["generatorURL"].as_str().is_some_and(|u| u.starts_with("http://c:9464/api/v1/rules"))
        );
    }
}
