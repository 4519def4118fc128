//! Metric metadata for remote_write: each family's type and help travel with the batch
//! that first carries the family, again when they change, and again every [`RESEND`], so
//! a receiver that keeps metadata in memory learns it back after a restart (Prometheus
//! sends its metadata on a timer for the same reason). Not with every batch: help texts
//! would be most of a batch's bytes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hale_core::metrics::Family;
use hale_core::remote_write::MetricMetadata;

/// How often a family's metadata is sent again although it has not changed.
pub const RESEND: Duration = Duration::from_secs(600);

/// Families remembered at most; past it the memory starts over (everything is sent again
/// once), so a target inventing metric names cannot grow the agent without bound.
const MAX_FAMILIES: usize = 100_000;

/// What was sent, and when.
#[derive(Debug, Default)]
pub struct MetadataSchedule {
    sent: Mutex<HashMap<String, (MetricMetadata, Instant)>>,
}

impl MetadataSchedule {
    /// The metadata of `families` that is due at `now`, marked as sent.
    pub fn due(&self, families: &[Family], now: Instant) -> Vec<MetricMetadata> {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if sent.len() > MAX_FAMILIES {
            sent.clear();
        }
        let mut out: Vec<MetricMetadata> = Vec::new();
        for family in families.iter().filter(|f| !f.samples.is_empty()) {
            let meta = MetricMetadata::of(family);
            let fresh = sent
                .get(&meta.metric_family_name)
                .is_some_and(|(before, at)| *before == meta && now.duration_since(*at) < RESEND);
            if !fresh && !out.iter().any(|m| m.metric_family_name == meta.metric_family_name) {
                sent.insert(meta.metric_family_name.clone(), (meta.clone(), now));
                out.push(meta);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hale_core::metrics::MetricKind;

    fn gauge(name: &str, help: &str) -> Family {
        let mut f = Family::new(name, help, MetricKind::Gauge);
        f.push(&[], 1.0);
        f
    }

    #[test]
    fn metadata_is_sent_when_new_changed_or_due_again() {
        let schedule = MetadataSchedule::default();
        let t0 = Instant::now();
        let names = |m: Vec<MetricMetadata>| m.into_iter().map(|m| m.metric_family_name).collect::<Vec<_>>();
        assert_eq!(names(schedule.due(&[gauge("a", "A."), gauge("b", "B.")], t0)), ["a", "b"]);
        assert!(schedule.due(&[gauge("a", "A."), gauge("b", "B.")], t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(
            names(schedule.due(&[gauge("a", "A, better."), gauge("b", "B.")], t0 + Duration::from_secs(6))),
            ["a"]
        );
        assert_eq!(names(schedule.due(&[gauge("b", "B.")], t0 + RESEND)), ["b"]);
        assert!(
            schedule.due(&[Family::new("empty", "", MetricKind::Gauge)], t0).is_empty(),
            "no samples, nothing to describe"
        );
    }
}
