//! Notifications: alerts from the rule groups become signed webhooks (Alertmanager's
//! payload) through grouping, silences and a durable outbox, and optionally go to a real
//! Alertmanager as well.
//!
//! Data flows one way: rule groups → [`AlertsUpdate`] channel → [`run`], which keeps
//! the [`dispatch::Dispatcher`], writes due notifications into the [`outbox::Outbox`]
//! (one file per receiver and notification) and forwards alerts to Alertmanager; the
//! outbox's own task delivers the files.
//!
//! A notification the outbox cannot store (disk full, an I/O error) is kept in memory, in
//! order, and stored again every second: the dispatcher already counts it as told.
//!
//! Alertmanager forwarding does not go through the outbox. As Prometheus does, every
//! firing alert is sent again at least once a minute with an `endsAt` four evaluation
//! intervals (at least four minutes) ahead, so a lost request is repaired by the next and
//! Alertmanager resolves the alert itself if the collector goes away. Logged receiver URLs
//! keep scheme, host, port and path only: users, passwords and queries are where tokens
//! hide.

pub mod dispatch;
pub mod outbox;
pub mod payload;
pub mod silence;

use std::sync::Arc;
use std::time::Duration;

use crate::rules::AlertsUpdate;
use dispatch::{Dispatcher, Route};
use hale_core::secret::Secret;
use hale_core::time::now_ms;
use outbox::{Entry, Outbox};
use payload::NotifyAlert;
use silence::Silences;

/// Where notifications go and how they are grouped.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    /// Webhook receivers (Alertmanager's webhook payload, signed).
    pub webhooks: Vec<String>,
    /// The HMAC key for `X-Hale-Signature`. Required when there are webhooks.
    pub webhook_secret: Option<Secret<Arc<[u8]>>>,
    /// Alertmanager base URLs to forward alerts to (`POST /api/v2/alerts`).
    pub alertmanagers: Vec<String>,
    pub route: Route,
    /// This collector's URL, for links in notifications.
    pub external_url: String,
}

/// Receiver names in payloads: `webhook-1`, `webhook-2`, … in configuration order.
fn receiver_name(i: usize) -> String {
    format!("webhook-{}", i + 1)
}

/// Turns alert updates into notifications until the channel closes.
pub async fn run(
    config: NotifyConfig,
    mut updates: tokio::sync::mpsc::Receiver<AlertsUpdate>,
    silences: Arc<Silences>,
    outbox: Arc<Outbox>,
    client: reqwest::Client,
) {
    let mut dispatcher = Dispatcher::new(config.route.clone());
    let mut forwarder = Forwarder::default();
    // Notifications the outbox could not store yet (disk full, I/O error): the dispatcher
    // already counts them as told, so they are kept here and stored as soon as possible.
    let mut unstored: Vec<Entry> = Vec::new();
    loop {
        let now = now_ms();
        let mut wait = dispatcher
            .next_deadline()
            .map_or(Duration::from_secs(3600), |d| Duration::from_millis((d - now).max(0) as u64));
        if !unstored.is_empty() {
            wait = wait.min(Duration::from_secs(1));
        }
        tokio::select! {
            update = updates.recv() => {
                let Some(update) = update else { return };
                let now = now_ms();
                dispatcher.update(&update, now);
                if !config.alertmanagers.is_empty() {
                    forwarder.forward(&config, &client, &update, now);
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let now = now_ms();
        for n in dispatcher.due(now, &|labels| silences.silenced(labels, now)) {
            for (i, url) in config.webhooks.iter().enumerate() {
                let body = payload::webhook_body(&receiver_name(i), &n.group_labels, &n.alerts, &config.external_url);
                // The outbox keeps any JSON body; this one is always representable.
                let body = serde_json::to_value(body).unwrap_or_default();
                unstored.push(Entry { url: url.clone(), created_ms: now, body });
            }
        }
        if !unstored.is_empty() {
            unstored = store(&outbox, std::mem::take(&mut unstored)).await;
        }
    }
}

/// Stores notifications in order, off the async workers (each is an fsync); returns the
/// ones not stored, from the first failure on, so their order is kept.
async fn store(outbox: &Arc<Outbox>, entries: Vec<Entry>) -> Vec<Entry> {
    let outbox = outbox.clone();
    let stored = tokio::task::spawn_blocking(move || {
        for (i, entry) in entries.iter().enumerate() {
            if let Err(e) = outbox.put(entry) {
                tracing::error!(error = %e, receiver = %redact_url(&entry.url), "could not store a notification in the outbox; trying again in a second");
                return entries[i..].to_vec();
            }
        }
        Vec::new()
    })
    .await;
    stored.unwrap_or_default()
}

pub use hale_outbox::redact_url;

/// Forwarding to Alertmanager as Prometheus does: every firing alert again at least once
/// a minute with an `endsAt` a few evaluations ahead (Alertmanager resolves it by itself
/// if the collector goes away), and resolved alerts with their end time.
#[derive(Default)]
struct Forwarder {
    /// fingerprint → (last sent ms, was firing)
    sent: std::collections::HashMap<u64, (i64, bool)>,
}

const RESEND_MS: i64 = 60_000;

impl Forwarder {
    /// Sends in the background: a slow Alertmanager must not hold up the webhooks.
    fn forward(&mut self, config: &NotifyConfig, client: &reqwest::Client, update: &AlertsUpdate, now: i64) {
        use crate::rules::AlertState;
        let mut batch = Vec::new();
        for a in &update.alerts {
            let fp = payload::fingerprint(&a.labels);
            let firing = match a.state {
                AlertState::Pending => continue,
                AlertState::Firing => true,
                AlertState::Inactive => false,
            };
            // Resolved alerts are re-sent too, for as long as the rules keep them (15 min),
            // so one lost request does not leave an alert firing in Alertmanager.
            let due = match self.sent.get(&fp) {
                None => firing,
                Some((at, was_firing)) => *was_firing != firing || now - at >= RESEND_MS,
            };
            if due {
                batch.push(NotifyAlert {
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    starts_at: a.active_at,
                    ends_at: (!firing).then(|| a.resolved_at.unwrap_or(now)),
                    fingerprint: fp,
                });
                self.sent.insert(fp, (now, firing));
            }
        }
        if batch.is_empty() {
            return;
        }
        let valid_until = now + 4 * (update.interval.as_millis() as i64).max(RESEND_MS);
        let body = payload::alertmanager_body(&batch, valid_until, &config.external_url);
        for am in &config.alertmanagers {
            let url = format!("{}/api/v2/alerts", am.trim_end_matches('/'));
            let (client, body) = (client.clone(), body.clone());
            tokio::spawn(async move {
                match client.post(&url).timeout(Duration::from_secs(5)).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => {
                        tracing::warn!(url = %redact_url(&url), status = %r.status(), "Alertmanager refused alerts; they are sent again within a minute")
                    }
                    Err(e) => {
                        tracing::warn!(url = %redact_url(&url), error = %e.without_url(), "Alertmanager unreachable; alerts are sent again within a minute")
                    }
                }
            });
        }
        // Forget alerts that resolved and were sent: they are done.
        self.sent.retain(|_, (at, firing)| *firing || now - *at < RESEND_MS * 15);
    }
}
