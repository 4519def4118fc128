//! The healer's API: state, actions, approvals, pause and resets. Reads are open; every
//! write needs the healer's token (`--token`, `HALE_HEALER_TOKEN`) and goes to the leader.

use hale_core::api::{ActionAnswer, ActionList, HealerHealth, HealerState, Paused, TargetReset};
use reqwest::Method;

use crate::request::{self, CALL_TIMEOUT, ClientError, Peer, Pool};

pub struct Healer(Peer);

impl Healer {
    /// A client of the healer at `base` (`http://host:port`); `token` for the calls that
    /// change something (approvals, pause, resets).
    pub fn new(base: &str, token: Option<String>) -> Result<Healer, ClientError> {
        Healer::with_client(base, token, &Pool::new(CALL_TIMEOUT)?)
    }

    /// A client that shares the caller's connection pool; every call still has `timeout`.
    pub fn with_client(base: &str, token: Option<String>, pool: &Pool) -> Result<Healer, ClientError> {
        Ok(Healer(Peer::new(base, token, pool)?))
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<HealerHealth, ClientError> {
        request::call(self.0.open(Method::GET, &["healthz"])?).await
    }

    /// `GET /api/v1/state`: paused, the queue, targets waiting for a human, refusals kept
    /// for another look, and who leads.
    pub async fn state(&self) -> Result<HealerState, ClientError> {
        request::call(self.0.open(Method::GET, &["api", "v1", "state"])?).await
    }

    /// `GET /api/v1/actions`: newest first.
    pub async fn actions(&self) -> Result<ActionList, ClientError> {
        request::call(self.0.open(Method::GET, &["api", "v1", "actions"])?).await
    }

    /// A write: a POST without a body, with the token.
    async fn post<T: serde::de::DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ClientError> {
        request::call(self.0.authed(Method::POST, segments)?).await
    }

    /// `POST /api/v1/actions/{id}/approve` (token): the action, now running.
    pub async fn approve(&self, id: &str) -> Result<ActionAnswer, ClientError> {
        self.post(&["api", "v1", "actions", id, "approve"]).await
    }

    /// `POST /api/v1/actions/{id}/reject` (token).
    pub async fn reject(&self, id: &str) -> Result<ActionAnswer, ClientError> {
        self.post(&["api", "v1", "actions", id, "reject"]).await
    }

    /// `POST /api/v1/pause` or `/resume` (token): whether the healer is now paused.
    pub async fn set_paused(&self, paused: bool) -> Result<Paused, ClientError> {
        self.post(&["api", "v1", if paused { "pause" } else { "resume" }]).await
    }

    /// `POST /api/v1/targets/{kind}/{name}/reset` (token): automatic repairs of a target
    /// that waits for a human resume. `target` is its key as the state names it
    /// (`instance/search-1`, `service/search`, `node/node-3`).
    pub async fn reset(&self, target: &str) -> Result<TargetReset, ClientError> {
        let (kind, name) = target.split_once('/').unwrap_or((target, ""));
        self.post(&["api", "v1", "targets", kind, name, "reset"]).await
    }
}
