//! Staleness markers for series that disappear, as Prometheus writes them.
//!
//! A receiver cannot tell "this series ended" from "this series has not changed": without
//! a marker, a replica the agent stopped keeps its last `up` and `probe_success` for the
//! whole five-minute PromQL lookback. So each collection cycle (host, the agent's own,
//! scrapes, probes) remembers the series it sent; a series sent last time and missing now
//! — its target was removed, its scrape failed, or the target stopped exposing it — is
//! sent once more with the staleness marker (a NaN with Prometheus's exact bit pattern),
//! which ends it for every PromQL reader.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use hale_core::metrics::{Family, MetricKind, Sample};

/// Prometheus's staleness marker: a NaN with this exact bit pattern (a NaN computed by
/// arithmetic is an ordinary value, not a marker).
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// One series: its name and sorted labels.
type SeriesKey = (String, Vec<(String, String)>);

/// What each collection cycle sent last time.
#[derive(Debug, Default)]
pub struct Staleness {
    last: Mutex<HashMap<String, HashSet<SeriesKey>>>,
}

impl Staleness {
    /// Adds to `families` a staleness marker for every series `cycle` sent last time and
    /// does not send now, and remembers what it sends now.
    pub fn mark_vanished(&self, cycle: &str, families: &mut Vec<Family>) {
        let now: HashSet<SeriesKey> = families
            .iter()
            .flat_map(|f| &f.samples)
            .map(|s| {
                let mut labels = s.labels.clone();
                labels.sort();
                (s.name.clone(), labels)
            })
            .collect();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let before = last.insert(cycle.to_string(), now.clone()).unwrap_or_default();
        let mut vanished: Vec<&SeriesKey> = before.difference(&now).collect();
        if vanished.is_empty() {
            return;
        }
        vanished.sort();
        let mut markers = Family::new("stale_markers", "Series that ended since the last cycle.", MetricKind::Untyped);
        markers.samples = vanished
            .into_iter()
            .map(|(name, labels)| Sample {
                name: name.clone(),
                labels: labels.clone(),
                value: f64::from_bits(STALE_NAN),
                timestamp_ms: None,
                exemplar: None,
            })
            .collect();
        tracing::debug!(cycle, series = markers.samples.len(), "series ended: staleness markers sent");
        families.push(markers);
    }

    /// Staleness markers for every series `cycle` sent last, which is then forgotten (a
    /// scrape target that went away).
    pub fn end(&self, cycle: &str) -> Vec<Family> {
        let mut families = Vec::new();
        self.mark_vanished(cycle, &mut families);
        self.last.lock().unwrap_or_else(|p| p.into_inner()).remove(cycle);
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(name: &str, instances: &[&str]) -> Family {
        let mut f = Family::new(name, "", MetricKind::Gauge);
        for i in instances {
            f.push(&[("instance", i), ("service", "search")], 1.0);
        }
        f
    }

    fn markers(families: &[Family]) -> Vec<(String, String)> {
        families
            .iter()
            .flat_map(|f| &f.samples)
            .filter(|s| s.value.to_bits() == STALE_NAN)
            .map(|s| {
                (
                    s.name.clone(),
                    s.labels.iter().find(|(k, _)| k == "instance").map(|(_, v)| v.clone()).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Issue #12, finding 12: a replica the agent no longer watches, and a series a
    /// target stopped exposing, each get one marker on the next cycle.
    #[test]
    fn issue_12_vanished_targets_and_series_get_one_staleness_marker() {
        let s = Staleness::default();
        let mut first = vec![family("up", &["search-1", "search-2"]), family("shop_items", &["search-1", "search-2"])];
        s.mark_vanished("scrape", &mut first);
        assert!(markers(&first).is_empty(), "nothing ended on the first cycle");

        // search-2 removed; search-1 stopped exposing shop_items.
        let mut second = vec![family("up", &["search-1"])];
        s.mark_vanished("scrape", &mut second);
        assert_eq!(
            markers(&second),
            [
                ("shop_items".into(), "search-1".into()),
                ("shop_items".into(), "search-2".into()),
                ("up".into(), "search-2".into())
            ]
        );

        let mut third = vec![family("up", &["search-1"])];
        s.mark_vanished("scrape", &mut third);
        assert!(markers(&third).is_empty(), "one marker, not one per cycle");
        // Cycles are apart: the probe cycle's series are not the scrape cycle's.
        let mut probes = vec![family("probe_success", &["search-1"])];
        s.mark_vanished("probe", &mut probes);
        assert!(markers(&probes).is_empty());
    }
}
