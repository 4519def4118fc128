//! The collector's own metrics that are counted as requests are served: query latency and
//! what ingest refused. Everything else on `/metrics` is a reading of state kept elsewhere
//! (the store, the WAL, the outbox, the rule groups, the SLOs), taken when it is scraped.
//!
//! Through `prometheus-client`, which adds the unit and `_total` to the names itself.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the query latency buckets, in seconds.
const QUERY_BUCKETS_SECS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Why a sample offered at ingest was not stored.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// More than [`crate::api::MAX_AHEAD_MS`] ahead of the clock (refused with a 400).
    TooFarAhead,
    /// Older than the series' newest sample by more than the out-of-order window.
    TooOld,
    /// A second sample at a timestamp the series already has.
    Duplicate,
}

impl DropReason {
    const ALL: [DropReason; 3] = [DropReason::TooFarAhead, DropReason::TooOld, DropReason::Duplicate];

    fn as_str(self) -> &'static str {
        match self {
            DropReason::TooFarAhead => "too_far_ahead",
            DropReason::TooOld => "too_old",
            DropReason::Duplicate => "duplicate",
        }
    }
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: DropReason,
}

/// Counted while serving; cheap to clone (each metric is a shared handle).
#[derive(Clone, Debug)]
pub struct Telemetry {
    query_duration: Histogram,
    samples_dropped: Family<DropLabels, Counter>,
    rejected_batches: Counter,
    /// Queries evaluated: housekeeping hands freed heap back after them (a query over a
    /// week decodes hundreds of megabytes it then frees).
    queries: Counter,
}

impl Default for Telemetry {
    fn default() -> Self {
        let samples_dropped = Family::<DropLabels, Counter>::default();
        // Every reason is listed from the start, at 0.
        for reason in DropReason::ALL {
            samples_dropped.get_or_create(&DropLabels { reason }).inc_by(0);
        }
        Telemetry {
            query_duration: Histogram::new(QUERY_BUCKETS_SECS),
            samples_dropped,
            rejected_batches: Counter::default(),
            queries: Counter::default(),
        }
    }
}

impl Telemetry {
    /// One PromQL query took `secs`.
    pub fn query_took(&self, secs: f64) {
        self.query_duration.observe(secs);
        self.queries.inc();
    }

    /// Queries evaluated since start.
    pub fn queries(&self) -> u64 {
        self.queries.get()
    }

    /// `n` samples were not stored, for `reason`.
    pub fn samples_dropped(&self, reason: DropReason, n: usize) {
        if n > 0 {
            self.samples_dropped.get_or_create(&DropLabels { reason }).inc_by(n as u64);
        }
    }

    /// A remote_write batch was refused as malformed.
    pub fn batch_rejected(&self) {
        self.rejected_batches.inc();
    }

    /// Adds these metrics to `registry` (the collector's, prefixed `hale_collector`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "query_duration",
            "Time to evaluate PromQL queries",
            Unit::Seconds,
            self.query_duration.clone(),
        );
        registry.register(
            "samples_dropped",
            "Samples not stored at ingest, by reason (too_far_ahead is refused with a 400; too_old and duplicate are acknowledged and dropped, as Prometheus does)",
            self.samples_dropped.clone(),
        );
        registry.register(
            "rejected_batches",
            "remote_write batches refused as malformed",
            self.rejected_batches.clone(),
        );
    }
}
