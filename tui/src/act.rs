//! The dashboard's effects over HTTP: what a confirmed key does to the healer and the
//! collector (chaos comes in through a hook, since it needs the cluster's processes).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::json;

use crate::Actuator;
use crate::app::{ChaosKind, Effect};
use crate::source::Endpoints;

/// Injects a chaos fault (the binary's `hale chaos`), saying what it did.
pub type ChaosHook =
    Box<dyn Fn(ChaosKind, String) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// Carries out the dashboard's confirmed actions over HTTP: approvals, pause, resets (the
/// healer) and silences (the collector), with the cluster's tokens; chaos through a hook.
pub struct HttpActuator {
    endpoints: Endpoints,
    /// The healer's write token and the collector's admin token (one secret in `hale up`).
    healer_token: Option<String>,
    admin_token: Option<String>,
    chaos: Option<ChaosHook>,
    client: reqwest::Client,
}

impl HttpActuator {
    pub fn new(
        endpoints: Endpoints,
        healer_token: Option<String>,
        admin_token: Option<String>,
        chaos: Option<ChaosHook>,
    ) -> HttpActuator {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        HttpActuator { endpoints, healer_token, admin_token, chaos, client }
    }

    async fn post(&self, url: String, token: &Option<String>, body: serde_json::Value) -> Result<String, String> {
        let mut r = self.client.post(&url).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.map_err(|e| e.without_url().to_string())?;
        let status = r.status();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        if status.is_success() {
            return Ok(v.to_string());
        }
        let message = v["error"]["message"].as_str().or(v["error"].as_str()).unwrap_or("").to_string();
        Err(format!("HTTP {}: {message}", status.as_u16()))
    }

    async fn carry_out(&self, effect: Effect) -> Result<String, String> {
        let h = self.endpoints.healer.trim_end_matches('/');
        match effect {
            Effect::Approve(id) => {
                self.post(format!("{h}/api/v1/actions/{id}/approve"), &self.healer_token, json!({})).await?;
                Ok(format!("approved {id}; it runs now"))
            }
            Effect::Reject(id) => {
                self.post(format!("{h}/api/v1/actions/{id}/reject"), &self.healer_token, json!({})).await?;
                Ok(format!("rejected {id}"))
            }
            Effect::SetPaused(paused) => {
                let what = if paused { "pause" } else { "resume" };
                self.post(format!("{h}/api/v1/{what}"), &self.healer_token, json!({})).await?;
                Ok(if paused { "healer paused".into() } else { "healer resumed".into() })
            }
            Effect::Reset(target) => {
                self.post(format!("{h}/api/v1/targets/{target}/reset"), &self.healer_token, json!({})).await?;
                Ok(format!("{target} reset: automatic repairs on it resume"))
            }
            Effect::Silence { matchers, duration } => {
                let d = humantime::parse_duration(&duration).map_err(|e| e.to_string())?;
                let ends = std::time::SystemTime::now()
                    .checked_add(d)
                    .filter(|_| d <= Duration::from_secs(366 * 86_400))
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                    .ok_or_else(|| format!("{duration} is too long a silence"))?;
                let body = hale_core::api::NewSilence {
                    id: None,
                    matchers: matchers.iter().map(|(k, v)| hale_core::api::SilenceMatcher::equal(k, v)).collect(),
                    starts_at: None,
                    ends_at: ends,
                    created_by: std::env::var("USER").unwrap_or_else(|_| "hale tui".into()),
                    comment: "from hale tui".into(),
                };
                let c = self.endpoints.collector.trim_end_matches('/');
                let reply = self.post(format!("{c}/api/v1/silences"), &self.admin_token, json!(body)).await?;
                let id = serde_json::from_str::<hale_core::api::Envelope<hale_core::api::SilenceCreated>>(&reply)
                    .ok()
                    .and_then(|r| r.into_data().ok())
                    .map_or_else(|| "?".to_string(), |d| d.silence_id);
                Ok(format!("silenced for {duration} ({id})"))
            }
            Effect::Chaos { kind, target } => match &self.chaos {
                Some(inject) => inject(kind, target).await,
                None => Err("no chaos here: this dashboard does not run the cluster".into()),
            },
            Effect::ExpireSilence(id) => {
                let c = self.endpoints.collector.trim_end_matches('/');
                let mut r = self.client.delete(format!("{c}/api/v1/silences/{id}"));
                if let Some(t) = &self.admin_token {
                    r = r.bearer_auth(t);
                }
                let r = r.send().await.map_err(|e| e.without_url().to_string())?;
                if !r.status().is_success() {
                    return Err(format!("HTTP {}: {}", r.status().as_u16(), r.text().await.unwrap_or_default()));
                }
                Ok(format!("silence {id} expired"))
            }
            Effect::Quit | Effect::Refresh => Ok(String::new()),
        }
    }
}

impl Actuator for HttpActuator {
    fn act(&self, effect: Effect) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(self.carry_out(effect))
    }
}
