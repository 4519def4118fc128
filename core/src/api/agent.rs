//! A node agent's answers: its supervised processes and its health.

use serde::{Deserialize, Serialize};

/// What a supervised process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    Starting,
    Running,
    /// Waiting out the backoff after an exit.
    Restarting,
    /// Exited too often: waiting out the crash-loop backoff.
    CrashLoop,
    Stopping,
    Stopped,
}

impl ProcessState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Starting => "starting",
            ProcessState::Running => "running",
            ProcessState::Restarting => "restarting",
            ProcessState::CrashLoop => "crash_loop",
            ProcessState::Stopping => "stopping",
            ProcessState::Stopped => "stopped",
        }
    }
}

/// A process as a node agent's `GET /api/v1/processes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub name: String,
    pub service: String,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub listen: String,
    pub pid: Option<u32>,
    pub state: ProcessState,
    #[serde(default)]
    pub restarts: u64,
    #[serde(default)]
    pub uptime_secs: Option<u64>,
    /// How the last run ended, if it did.
    #[serde(default)]
    pub last_exit: Option<String>,
    /// Who runs it when the agent does not (`systemd:nginx.service`,
    /// `pidfile:/run/app.pid`): an adopted service, restarted through its manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    /// The replica's base URL as its agent reaches it (`https://` for a service that
    /// serves TLS), for callers that must reach it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A node agent's `GET /api/v1/processes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessList {
    pub node: String,
    pub processes: Vec<ProcessInfo>,
}

/// A node agent's answer to `POST /-/reload` when the file was put in force: the
/// sections it changed (a refused file is a 400 with the reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReloaded {
    /// `reloaded`.
    pub status: String,
    pub changed: Vec<String>,
}

/// A node agent's `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    /// `alive`.
    pub status: String,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub data_dir: String,
    /// The agent's own process, so `hale chaos node-down` can freeze it first.
    #[serde(default)]
    pub pid: Option<u32>,
}

/// The body of a node agent's `POST /api/v1/processes`: a new replica from a template in
/// the agent's own config (never a command: the agent runs only what it was configured with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartProcess {
    /// A service whose template is in the agent's config.
    pub service: String,
    /// Instance name; default `<service>-<node>-<n>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A node agent's answer to `POST /api/v1/processes` (201): the replica it started, with
/// the name and listen address it chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessStarted {
    /// `null` only if the replica ended before the agent could list it.
    pub process: Option<ProcessInfo>,
}

/// A node agent's answer to `POST /api/v1/processes/{name}/restart` (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRestarted {
    pub restarted: String,
}

/// A node agent's answer to `DELETE /api/v1/processes/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStopped {
    pub stopped: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::round_trip;

    #[test]
    fn processes_round_trip_and_parse_as_the_agent_writes_them() {
        let list = ProcessList {
            node: "node-1".into(),
            processes: vec![ProcessInfo {
                managed_by: None,
                url: None,
                name: "search-1".into(),
                service: "search".into(),
                node: "node-1".into(),
                listen: "127.0.0.1:8091".into(),
                pid: Some(4242),
                state: ProcessState::CrashLoop,
                restarts: 3,
                uptime_secs: None,
                last_exit: Some("exit status: 1".into()),
            }],
        };
        round_trip(&list);
        let served = r#"{"node":"node-1","processes":[{"name":"search-1","service":"search","node":"node-1",
            "listen":"127.0.0.1:8091","pid":4242,"state":"crash_loop","restarts":3,"uptime_secs":null,
            "last_exit":"exit status: 1"}]}"#;
        assert_eq!(serde_json::from_str::<ProcessList>(served).expect("valid"), list);
    }
    #[test]
    fn agent_health_round_trips_and_parses_as_the_agent_writes_it() {
        let served = r#"{"status":"alive","node":"node-1","data_dir":".hale/node-1","pid":4242}"#;
        let health: AgentHealth = serde_json::from_str(served).expect("health");
        assert_eq!(health.pid, Some(4242));
        round_trip(&health);
        assert_eq!(serde_json::to_string(&health).expect("json"), served);
    }

    #[test]
    fn actuator_bodies_round_trip_and_parse_as_the_agent_writes_them() {
        let start: StartProcess = serde_json::from_str(r#"{"service":"search"}"#).expect("start");
        assert_eq!(start, StartProcess { service: "search".into(), name: None });
        assert_eq!(serde_json::to_string(&start).expect("json"), r#"{"service":"search"}"#);
        round_trip(&StartProcess { service: "search".into(), name: Some("search-9".into()) });
        assert!(serde_json::from_str::<StartProcess>(r#"{"service":"sh","program":"/bin/rm"}"#).is_err());
        let served = r#"{"process":{"name":"search-node-1-1","service":"search","node":"node-1",
            "listen":"127.0.0.1:8095","pid":77,"state":"starting","restarts":0,"uptime_secs":0,"last_exit":null}}"#;
        let started: ProcessStarted = serde_json::from_str(served).expect("started");
        assert_eq!(started.process.as_ref().map(|p| p.listen.as_str()), Some("127.0.0.1:8095"));
        round_trip(&started);
        round_trip(&ProcessStarted { process: None });
        let restarted: ProcessRestarted = serde_json::from_str(r#"{"restarted":"search-1"}"#).expect("restarted");
        round_trip(&restarted);
        let stopped: ProcessStopped = serde_json::from_str(r#"{"stopped":"search-1"}"#).expect("stopped");
        assert_eq!(serde_json::to_string(&stopped).expect("json"), r#"{"stopped":"search-1"}"#);
    }
}
