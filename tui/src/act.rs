//! The dashboard's effects, through the healer's and the collector's clients: what a
//! confirmed key does (chaos comes in through a hook, since it needs the cluster's
//! processes).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use hale_client::{Collector, Healer};
use hale_core::api::{NewSilence, SilenceMatcher};

use crate::Actuator;
use crate::app::{ChaosKind, Effect};
use crate::source::{Endpoints, said};

/// Injects a chaos fault (the binary's `hale chaos`), saying what it did.
pub type ChaosHook =
    Box<dyn Fn(ChaosKind, String) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// Carries out the dashboard's confirmed actions over HTTP: approvals, pause, resets (the
/// healer) and silences (the collector), with the cluster's tokens; chaos through a hook.
pub struct HttpActuator {
    /// The clients, or why an address cannot be one. The healer's write token and the
    /// collector's admin token are one secret in `hale up`.
    healer: Result<Healer, String>,
    collector: Result<Collector, String>,
    chaos: Option<ChaosHook>,
}

impl HttpActuator {
    pub fn new(
        endpoints: Endpoints,
        healer_token: Option<String>,
        admin_token: Option<String>,
        chaos: Option<ChaosHook>,
    ) -> HttpActuator {
        HttpActuator {
            healer: Healer::new(&endpoints.healer, healer_token).map_err(|e| e.to_string()),
            collector: Collector::new(&endpoints.collector, admin_token).map_err(|e| e.to_string()),
            chaos,
        }
    }

    async fn carry_out(&self, effect: Effect) -> Result<String, String> {
        let healer = || self.healer.as_ref().map_err(Clone::clone);
        let collector = || self.collector.as_ref().map_err(Clone::clone);
        match effect {
            Effect::Approve(id) => {
                healer()?.approve(&id).await.map_err(|e| said(&e))?;
                Ok(format!("approved {id}; it runs now"))
            }
            Effect::Reject(id) => {
                healer()?.reject(&id).await.map_err(|e| said(&e))?;
                Ok(format!("rejected {id}"))
            }
            Effect::SetPaused(paused) => {
                healer()?.set_paused(paused).await.map_err(|e| said(&e))?;
                Ok(if paused { "healer paused".into() } else { "healer resumed".into() })
            }
            Effect::Reset(target) => {
                healer()?.reset(&target).await.map_err(|e| said(&e))?;
                Ok(format!("{target} reset: automatic repairs on it resume"))
            }
            Effect::Silence { matchers, duration } => {
                let d = humantime::parse_duration(&duration).map_err(|e| e.to_string())?;
                let ends = std::time::SystemTime::now()
                    .checked_add(d)
                    .filter(|_| d <= Duration::from_secs(366 * 86_400))
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                    .ok_or_else(|| format!("{duration} is too long a silence"))?;
                let body = NewSilence {
                    id: None,
                    matchers: matchers.iter().map(|(k, v)| SilenceMatcher::equal(k, v)).collect(),
                    starts_at: None,
                    ends_at: ends,
                    created_by: std::env::var("USER").unwrap_or_else(|_| "hale tui".into()),
                    comment: "from hale tui".into(),
                };
                let id = collector()?.add_silence(&body).await.map_err(|e| said(&e))?;
                Ok(format!("silenced for {duration} ({id})"))
            }
            Effect::Chaos { kind, target } => match &self.chaos {
                Some(inject) => inject(kind, target).await,
                None => Err("no chaos here: this dashboard does not run the cluster".into()),
            },
            Effect::ExpireSilence(id) => {
                collector()?.expire_silence(&id).await.map_err(|e| said(&e))?;
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
