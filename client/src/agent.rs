//! A node agent's API: its health, the processes it supervises, and the actuator (start,
//! restart, stop a replica; the actuator needs the agents' token).

use hale_core::api::{AgentHealth, ProcessList, ProcessRestarted, ProcessStarted, ProcessStopped, StartProcess};

use crate::request::{self, CALL_TIMEOUT, ClientError};

pub struct Agent {
    base: String,
    http: reqwest::Client,
    timeout: std::time::Duration,
    /// For the actuator.
    token: Option<String>,
}

impl Agent {
    /// A client of the agent at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<Agent, ClientError> {
        Agent::with_timeout(base, CALL_TIMEOUT)
    }

    pub fn with_timeout(base: &str, timeout: std::time::Duration) -> Result<Agent, ClientError> {
        Agent::with_client(base, request::http(timeout)?, timeout)
    }

    /// A client that shares the caller's connection pool; every call still has `timeout`.
    pub fn with_client(base: &str, http: reqwest::Client, timeout: std::time::Duration) -> Result<Agent, ClientError> {
        let base = request::base(base)?;
        Ok(Agent { base, http, timeout, token: None })
    }

    /// The same client with the actuator's bearer token.
    pub fn with_token(self, token: &str) -> Agent {
        Agent { token: Some(token.to_string()), ..self }
    }

    fn authed(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request::authed(r, self.timeout, self.token.as_deref())
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<AgentHealth, ClientError> {
        request::call(self.http.get(request::url(&self.base, &["healthz"])?).timeout(self.timeout)).await
    }

    /// `GET /api/v1/processes`.
    pub async fn processes(&self) -> Result<ProcessList, ClientError> {
        let url = request::url(&self.base, &["api", "v1", "processes"])?;
        request::call(self.http.get(url).timeout(self.timeout)).await
    }

    /// `POST /api/v1/processes` (token): a new replica from the agent's template for the
    /// service; the agent picks the name (unless given) and a free port.
    pub async fn start(&self, start: &StartProcess) -> Result<ProcessStarted, ClientError> {
        let url = request::url(&self.base, &["api", "v1", "processes"])?;
        request::call(self.authed(self.http.post(url).json(start))).await
    }

    /// `POST /api/v1/processes/{name}/restart` (token); `grace` replaces the agent's wait
    /// between SIGTERM and SIGKILL (zero: kill at once, for a hung replica).
    pub async fn restart(
        &self,
        name: &str,
        grace: Option<std::time::Duration>,
    ) -> Result<ProcessRestarted, ClientError> {
        let mut url = request::url(&self.base, &["api", "v1", "processes", name, "restart"])?;
        if let Some(grace) = grace {
            url.query_pairs_mut().append_pair("grace_ms", &grace.as_millis().to_string());
        }
        request::call(self.authed(self.http.post(url))).await
    }

    /// `DELETE /api/v1/processes/{name}` (token): stops the replica and forgets it.
    pub async fn stop(&self, name: &str) -> Result<ProcessStopped, ClientError> {
        let url = request::url(&self.base, &["api", "v1", "processes", name])?;
        request::call(self.authed(self.http.delete(url))).await
    }
}
