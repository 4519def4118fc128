//! The healer's self-metrics (`/metrics`), through `prometheus-client` as every Hale
//! server's: alerts received and duplicated, decisions by outcome, actions by result,
//! escalations, the pause, and the time from an alert's start to its verified repair.
//! The library adds `_total` to counters and the unit to the MTTR histogram's name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use hale_serve::metrics::registered;

use crate::policy::ActionKind;

/// MTTR histogram bounds (seconds): a restart heals in seconds, a lost node in minutes.
const MTTR_BUCKETS_SECS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    /// acted, refused, dry_run, awaiting_approval, ignored, dropped.
    decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
    /// succeeded or failed.
    result: &'static str,
}

/// The `hale_healer_*` metrics.
pub struct Metrics {
    registry: Registry,
    received: Counter,
    duplicates: Counter,
    escalations: Counter,
    paused: Gauge,
    leader: Gauge,
    decisions: Family<DecisionLabels, Counter>,
    results: Family<ActionLabels, Counter>,
    mttr: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::with_prefix("hale");
        let registry = root.sub_registry_with_prefix("healer");
        let received = registered(registry, "alerts_received", "Firing alerts received");
        let duplicates =
            registered(registry, "alerts_duplicate", "Alerts received again (same fingerprint and start) and ignored");
        let escalations = registered(registry, "escalations", "Failed repairs handed to humans");
        let paused = registered(registry, "paused", "1 while the healer is paused");
        let leader =
            registered(registry, "leader", "1 while this healer leads (decides and acts); a lone healer always leads");
        let decisions = registered(registry, "decisions", "Decisions by outcome");
        let results = registered(registry, "actions", "Actions taken, by action and result");
        let mttr = Histogram::new(MTTR_BUCKETS_SECS);
        registry.register_with_unit(
            "mttr",
            "From the alert's start to its verified recovery",
            Unit::Seconds,
            mttr.clone(),
        );
        Metrics { registry: root, received, duplicates, escalations, paused, leader, decisions, results, mttr }
    }
}

impl Metrics {
    /// A firing alert stored for a decision.
    pub fn received(&self) {
        self.received.inc();
    }

    /// An alert the healer already had.
    pub fn duplicate(&self) {
        self.duplicates.inc();
    }

    pub fn escalated(&self) {
        self.escalations.inc();
    }

    pub fn decided(&self, decision: &'static str) {
        self.decisions.get_or_create(&DecisionLabels { decision }).inc();
    }

    pub fn result(&self, kind: ActionKind, result: &'static str) {
        self.results.get_or_create(&ActionLabels { action: kind.as_str(), result }).inc();
    }

    /// An alert's time from its start to its verified recovery.
    pub fn mttr(&self, seconds: f64) {
        self.mttr.observe(seconds);
    }

    /// The metrics in the OpenMetrics text format; `paused` and `leader` as they are now
    /// (another healer may have changed them).
    pub fn encode(&self, paused: bool, leader: bool) -> String {
        self.paused.set(i64::from(paused));
        self.leader.set(i64::from(leader));
        hale_serve::metrics::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_help_units_and_labels_are_the_healers() {
        let m = Metrics::default();
        m.received();
        m.duplicate();
        m.duplicate();
        m.decided("refused");
        m.result(ActionKind::ScaleOut, "succeeded");
        m.mttr(3.0);
        m.mttr(4000.0);
        let text = m.encode(true, true);
        for line in [
            "# HELP hale_healer_alerts_received Firing alerts received.",
            "# TYPE hale_healer_alerts_received counter",
            "hale_healer_alerts_received_total 1",
            "hale_healer_alerts_duplicate_total 2",
            "hale_healer_escalations_total 0",
            "hale_healer_paused 1",
            "hale_healer_leader 1",
            "hale_healer_decisions_total{decision=\"refused\"} 1",
            "hale_healer_actions_total{action=\"scale_out\",result=\"succeeded\"} 1",
            "# UNIT hale_healer_mttr_seconds seconds",
            "# TYPE hale_healer_mttr_seconds histogram",
            "hale_healer_mttr_seconds_bucket{le=\"2.0\"} 0",
            "hale_healer_mttr_seconds_bucket{le=\"5.0\"} 1",
            "hale_healer_mttr_seconds_bucket{le=\"+Inf\"} 2",
            "hale_healer_mttr_seconds_sum 4003.0",
            "hale_healer_mttr_seconds_count 2",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from\n{text}");
        }
        let follower = m.encode(false, false);
        assert!(follower.contains("hale_healer_paused 0") && follower.contains("hale_healer_leader 0"));
    }
}
