//! The cluster view (`GET /api/v1/cluster`'s `data`) as wire types, and the freshness rule
//! every health judgement uses.
//!
//! A value is only as good as its age: a node that froze keeps its last `probe_success`
//! of 1 in the store, and nothing about that number says the node is gone. So every
//! judgement compares the age of the sample it uses with the interval its source sends
//! at: older than [`STALE_AFTER_INTERVALS`] intervals (and [`MIN_STALE_AFTER_MS`]) is
//! *stale*, shown as such and never counted as ready. The collector serves this view and
//! the dashboard and `hale status` read it, so both sides share these types.

use serde::{Deserialize, Serialize};

/// A sample older than this many of its source's intervals is stale: one late cycle is
/// jitter, three in a row is a source that stopped. Prometheus's own rule of thumb for
/// `absent`-style alerts on scraped data is the same few intervals.
pub const STALE_AFTER_INTERVALS: i64 = 3;

/// Never stale sooner than this, whatever the interval: with sub-second intervals (the
/// demo probes every 500 ms) shipping through the agent's queue and one slow probe cycle
/// (a hung replica's probe waits for its timeout) would otherwise flap.
pub const MIN_STALE_AFTER_MS: i64 = 2_000;

/// The interval assumed for a series with a single sample (its spacing is not known yet):
/// the agent's default probe interval.
pub const DEFAULT_INTERVAL_MS: i64 = 5_000;

/// An agent silent for this long is `down`, not merely `stale`: the `NodeDown` alert's
/// own threshold (rules.yml), so the view and the page agree.
pub const AGENT_DOWN_AFTER_MS: i64 = 15_000;

/// How old a sample from a source sending every `interval_ms` may be and still count.
pub fn stale_after_ms(interval_ms: i64) -> i64 {
    interval_ms.max(1).saturating_mul(STALE_AFTER_INTERVALS).max(MIN_STALE_AFTER_MS)
}

/// Whether a sample `age_ms` old, from a source sending every `interval_ms`, is fresh.
pub fn is_fresh(age_ms: i64, interval_ms: i64) -> bool {
    age_ms <= stale_after_ms(interval_ms)
}

/// A node agent as its last report shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Reported within [`stale_after_ms`] of its interval.
    Up,
    /// Silent for a few intervals: its numbers are not believed any more.
    Stale,
    /// Silent for [`AGENT_DOWN_AFTER_MS`] or more.
    Down,
}

impl AgentState {
    /// The state of an agent whose last report is `age_ms` old, sent every `interval_ms`.
    pub fn of(age_ms: i64, interval_ms: i64) -> AgentState {
        if is_fresh(age_ms, interval_ms) {
            AgentState::Up
        } else if age_ms < AGENT_DOWN_AFTER_MS {
            AgentState::Stale
        } else {
            AgentState::Down
        }
    }
}

/// A replica as its agent's fresh probes show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// Its fresh `/readyz` probe succeeds.
    Ready,
    /// Alive (`/healthz`) but failing `/readyz`: hung, catching up, fenced.
    NotReady,
    /// Neither probe answers.
    Down,
    /// No fresh probe: its node or agent is silent, or its probes stopped. Never ready.
    Stale,
}

/// One node and its agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub node: String,
    /// The agent's state by the age of its last host report.
    pub agent: AgentState,
    /// `agent == Up`, kept for readers of the older view.
    pub agent_up: bool,
    /// Seconds since the agent's last host report.
    pub last_seen_secs_ago: Option<f64>,
    /// The spacing of its host reports (seconds), which the age is judged against.
    pub interval_secs: Option<f64>,
    /// Resource use; `None` without data or once the agent is not up (old numbers are
    /// not today's).
    pub cpu_used_ratio: Option<f64>,
    pub memory_used_ratio: Option<f64>,
    pub disk_used_ratio: Option<f64>,
}

/// A replica's last logged error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    pub time_unix_nano: u64,
    pub message: String,
}

/// One replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub instance: String,
    pub node: Option<String>,
    /// The judgement: what a client shows and counts.
    pub state: ReplicaState,
    /// Fresh `/readyz` probe; `None` without a fresh one.
    pub ready: Option<bool>,
    /// Fresh `/healthz` probe; `None` without a fresh one.
    pub alive: Option<bool>,
    /// Fresh scrape outcome; `None` without a fresh one.
    pub up: Option<bool>,
    /// Seconds since its last readiness probe (whatever it said).
    pub age_secs: Option<f64>,
    /// The spacing of its probes (seconds), which the age is judged against.
    pub interval_secs: Option<f64>,
    pub restarts: Option<f64>,
    pub last_error: Option<LastError>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    pub service: String,
    pub replicas: Vec<ReplicaView>,
    /// Replicas whose state is `ready` (fresh and ready), never a stale one.
    pub ready_replicas: usize,
}

/// `GET /api/v1/cluster`'s `data`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    pub services: Vec<ServiceView>,
    /// Why the collector refuses telemetry now (its disk is full), if it does: what
    /// agents send waits in their queues meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_refused: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_is_a_few_intervals_with_a_floor() {
        assert_eq!(stale_after_ms(1_000), 3_000);
        assert_eq!(stale_after_ms(500), MIN_STALE_AFTER_MS);
        assert_eq!(stale_after_ms(15_000), 45_000);
        assert!(is_fresh(3_000, 1_000));
        assert!(!is_fresh(3_001, 1_000));
        assert_eq!(AgentState::of(900, 1_000), AgentState::Up);
        assert_eq!(AgentState::of(4_000, 1_000), AgentState::Stale);
        assert_eq!(AgentState::of(15_000, 1_000), AgentState::Down);
    }
}
