//! A node agent's API: its health, the processes it supervises, and the actuator (start,
//! restart, stop a replica; the actuator needs the agents' token).

use std::time::Duration;

use hale_core::api::{AgentHealth, ProcessList, ProcessRestarted, ProcessStarted, ProcessStopped, StartProcess};
use reqwest::Method;

use crate::request::{self, CALL_TIMEOUT, ClientError, Peer, Pool};

pub struct Agent(Peer);

impl Agent {
    /// A client of the agent at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<Agent, ClientError> {
        Agent::with_timeout(base, CALL_TIMEOUT)
    }

    pub fn with_timeout(base: &str, timeout: Duration) -> Result<Agent, ClientError> {
        Agent::with_client(base, &Pool::new(timeout)?)
    }

    /// A client that shares the caller's connection pool; every call still has `timeout`.
    pub fn with_client(base: &str, pool: &Pool) -> Result<Agent, ClientError> {
        Ok(Agent(Peer::new(base, None, pool)?))
    }

    /// The same client with the actuator's bearer token.
    pub fn with_token(mut self, token: &str) -> Agent {
        self.0.token = Some(token.to_string());
        self
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<AgentHealth, ClientError> {
        request::call(self.0.open(Method::GET, &["healthz"])?).await
    }

    /// `GET /api/v1/processes`.
    pub async fn processes(&self) -> Result<ProcessList, ClientError> {
        request::call(self.0.open(Method::GET, &["api", "v1", "processes"])?).await
    }

    /// `POST /api/v1/processes` (token): a new replica from the agent's template for the
    /// service; the agent picks the name (unless given) and a free port.
    pub async fn start(&self, start: &StartProcess) -> Result<ProcessStarted, ClientError> {
        request::call(self.0.authed(Method::POST, &["api", "v1", "processes"])?.json(start)).await
    }

    /// `POST /api/v1/processes/{name}/restart` (token); `grace` replaces the agent's wait
    /// between SIGTERM and SIGKILL (zero: kill at once, for a hung replica).
    pub async fn restart(
        &self,
        name: &str,
        grace: Option<std::time::Duration>,
    ) -> Result<ProcessRestarted, ClientError> {
        let mut url = request::url(&self.0.base, &["api", "v1", "processes", name, "restart"])?;
        if let Some(grace) = grace {
            url.query_pairs_mut().append_pair("grace_ms", &grace.as_millis().to_string());
        }
        request::call(self.0.authed_url(Method::POST, url)?).await
    }

    /// `DELETE /api/v1/processes/{name}` (token): stops the replica and forgets it.
    pub async fn stop(&self, name: &str) -> Result<ProcessStopped, ClientError> {
        request::call(self.0.authed(Method::DELETE, &["api", "v1", "processes", name])?).await
    }
}
