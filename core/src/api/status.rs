//! `hale status --json`: a cluster at a glance, for scripts.
//!
//! The fields are in alphabetical order, each object's too: `hale status` wrote this with
//! `json!` (whose maps are sorted) before it had a type, and a script may compare its
//! output as text.

use serde::{Deserialize, Serialize};

use crate::cluster::AgentState;

/// The whole answer: whether the cluster is healthy, and why not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Whether the collector's API answered.
    pub collector: bool,
    /// Alerts firing now.
    pub firing_alerts: usize,
    /// Whether the healer's API answered.
    pub healer: bool,
    /// Nothing pages, every node's agent is up and every service has a ready replica;
    /// `hale status` exits 1 otherwise.
    pub healthy: bool,
    pub nodes: Vec<NodeStatus>,
    /// What is wrong, one line each (empty when healthy).
    pub problems: Vec<String>,
    pub services: Vec<ServiceStatus>,
    pub slos: Vec<SloSummary>,
}

/// A node, as the collector judges its agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub agent: AgentState,
    /// Seconds since the agent's last report (`null`: never seen).
    pub last_seen_secs_ago: Option<f64>,
    pub node: String,
}

/// A shop service and how many of its replicas are ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub ready: usize,
    pub replicas: usize,
    pub service: String,
}

/// An SLO in the dashboard's words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloSummary {
    /// Share of the period's error budget left (`null`: no data).
    pub error_budget_remaining: Option<f64>,
    pub service: String,
    /// The SLI over the period, a ratio (`null`: no data).
    pub sli: Option<f64>,
    pub slo: String,
    /// The dashboard's word for where it stands: `ok`, `burning`, `PAGE`, `too few
    /// events` or `no data`.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::round_trip;

    /// What `hale status --json` printed with `json!` before this type, byte for byte.
    const PRINTED: &str = concat!(
        r#"{"collector":true,"firing_alerts":1,"healer":false,"healthy":false,"#,
        r#""nodes":[{"agent":"up","last_seen_secs_ago":0.8,"node":"node-1"},"#,
        r#"{"agent":"stale","last_seen_secs_ago":null,"node":"node-2"}],"#,
        r#""problems":["SLO orders/checkout-availability pages"],"#,
        r#""services":[{"ready":2,"replicas":2,"service":"search"}],"#,
        r#""slos":[{"error_budget_remaining":null,"service":"orders","sli":0.98,"slo":"checkout-availability","status":"PAGE"}]}"#
    );

    #[test]
    fn the_report_reads_and_writes_what_status_printed() {
        let report: StatusReport = serde_json::from_str(PRINTED).expect("valid");
        assert_eq!(report.nodes[1].agent, AgentState::Stale);
        assert_eq!(report.slos[0].status, "PAGE");
        assert_eq!(serde_json::to_string(&report).expect("json"), PRINTED);
        round_trip(&report);
    }
}
