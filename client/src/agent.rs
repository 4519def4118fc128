//! A node agent's API: its health and the processes it supervises.

use hale_core::api::{AgentHealth, ProcessList};

use crate::request::{self, CALL_TIMEOUT, ClientError};

pub struct Agent {
    base: String,
    http: reqwest::Client,
}

impl Agent {
    /// A client of the agent at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<Agent, ClientError> {
        Agent::with_timeout(base, CALL_TIMEOUT)
    }

    pub fn with_timeout(base: &str, timeout: std::time::Duration) -> Result<Agent, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        request::url(&base, &[])?;
        Ok(Agent { base, http: request::http(timeout)? })
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<AgentHealth, ClientError> {
        request::call(self.http.get(request::url(&self.base, &["healthz"])?)).await
    }

    /// `GET /api/v1/processes`.
    pub async fn processes(&self) -> Result<ProcessList, ClientError> {
        request::call(self.http.get(request::url(&self.base, &["api", "v1", "processes"])?)).await
    }
}
