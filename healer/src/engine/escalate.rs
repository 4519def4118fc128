//! A failed repair: the target waits for a human, and the escalation — an Alertmanager
//! alert with Hale's record in its annotations — goes through the durable outbox.

use super::*;

pub(super) fn escalated_alert(a: &Alert) -> hale_core::api::EscalatedAlert {
    hale_core::api::EscalatedAlert {
        alertname: a.name().to_string(),
        fingerprint: a.fingerprint.clone(),
        starts_at: a.starts_at.clone(),
        labels: a.labels.clone(),
    }
}

impl Healer {
    /// A failed repair: the target needs a human, and the escalation receivers hear what
    /// was tried.
    pub(super) async fn escalate(&self, action: &Action, why: &str) {
        let key = action.target.key();
        let _ = self
            .store
            .update(|s| {
                s.targets.entry(key.clone()).or_default().needs_human = Some(format!("{} failed: {why}", action.id));
            })
            .await;
        self.metrics.escalated();
        let tried: Vec<hale_core::api::TriedAction> = self.store.read(|s| {
            s.actions
                .iter()
                .filter(|a| a.target.key() == key)
                .map(|a| hale_core::api::TriedAction {
                    action_id: a.id.clone(),
                    action: a.kind,
                    status: a.status,
                    detail: a.detail.clone(),
                })
                .collect()
        });
        let burn = match action.burn_after {
            Some(b) => Some(b),
            None => self.burn_of(&action.alert).await,
        };
        let body = hale_core::api::Escalation {
            version: hale_core::api::ESCALATION_VERSION.into(),
            action_id: action.id.clone(),
            policy: action.policy.clone(),
            action: action.kind,
            target: action.target.clone(),
            alert: escalated_alert(&action.alert),
            why: why.to_string(),
            tried,
            burn_rate_before: action.burn_before,
            burn_rate_after: burn,
            next: format!("no automatic action on {key} until a human resets it: POST /api/v1/targets/{key}/reset"),
        };
        // Stored durably before anything is sent: a healer killed now sends it on restart.
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let generator = format!("{}/api/v1/actions/{}", self.escalation.external_url, action.id);
        let payload = serde_json::to_value(body.to_webhook(&now, &generator)).unwrap_or_default();
        let until = humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs(86_400));
        let postable =
            serde_json::to_value([body.to_postable(&now, &until.to_string(), &generator)]).unwrap_or_default();
        let created_ms = now_ms();
        let entries = self
            .escalation
            .urls
            .iter()
            .map(|url| hale_outbox::Entry { url: url.clone(), created_ms, body: payload.clone() })
            .chain(self.escalation.alertmanagers.iter().map(|am| hale_outbox::Entry {
                url: format!("{}/api/v2/alerts", am.trim_end_matches('/')),
                created_ms,
                body: postable.clone(),
            }));
        let mut stored = 0;
        for entry in entries {
            match self.escalation.outbox.put(&entry) {
                Ok(()) => stored += 1,
                Err(e) => {
                    tracing::error!(error = %e, receiver = %hale_outbox::redact_url(&entry.url), action_id = %action.id, "could not store an escalation; it is in the audit log")
                }
            }
        }
        self.audit(
            "escalated",
            json!({"action_id": action.id, "target": action.target, "why": why, "receivers": stored}),
        );
    }
}
