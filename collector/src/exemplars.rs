//! Exemplars: the trace ids senders attach to histogram buckets and counters, kept so
//! that `/api/v1/query_exemplars` can link a latency spike on a chart to its traces.
//!
//! Like Prometheus's exemplar storage, a fixed-size ring in memory: the newest
//! [`ExemplarStore::capacity`] exemplars over all series, the oldest pushed out first.
//! Unlike Prometheus (which logs them in its WAL), they are not written to the WAL: a
//! restart forgets them (the traces they point at are durable, and the next scrapes bring
//! new exemplars), which keeps them off the fsync path of every write. Nor are they
//! forwarded. A scrape resends a bucket's last exemplar until a newer one
//! replaces it, so an exemplar no newer than its series' newest is a duplicate and
//! dropped, which also refuses out-of-order ones as Prometheus does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use hale_core::api::{ExemplarPoint, ExemplarSeries, value_text};
use hale_core::remote_write::{Exemplar, Label};

use crate::store::head::Matcher;

/// Label pairs, stored compactly.
type Pairs = Vec<(Box<str>, Box<str>)>;
/// A series' labels, shared by its exemplars.
type SeriesLabels = Arc<[(Box<str>, Box<str>)]>;

struct Stored {
    series: SeriesLabels,
    labels: Box<[(Box<str>, Box<str>)]>,
    value: f64,
    timestamp_ms: i64,
}

#[derive(Default)]
struct Ring {
    entries: VecDeque<Stored>,
    /// Each series with exemplars in the ring: its shared labels and newest timestamp.
    series: HashMap<Pairs, (SeriesLabels, i64)>,
}

/// What one write added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    pub stored: u64,
    /// Not newer than the newest of their series (resent or out of order).
    pub duplicate: u64,
}

pub struct ExemplarStore {
    ring: Mutex<Ring>,
    capacity: usize,
}

/// Prometheus's default (`--storage.exemplars.exemplars-limit` in its docs' example).
pub const DEFAULT_CAPACITY: usize = 100_000;

fn owned(labels: &[Label]) -> Pairs {
    labels.iter().map(|l| (l.name.as_str().into(), l.value.as_str().into())).collect()
}

impl ExemplarStore {
    pub fn new(capacity: usize) -> Self {
        ExemplarStore { ring: Mutex::new(Ring::default()), capacity }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Exemplars held now.
    pub fn len(&self) -> usize {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the exemplars of one series (labels sorted, as remote_write sends them).
    pub fn add(&self, series: &[Label], exemplars: &[Exemplar]) -> Added {
        let mut added = Added::default();
        if exemplars.is_empty() || self.capacity == 0 {
            return added;
        }
        let key = owned(series);
        let mut guard = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let ring = &mut *guard;
        let mut sorted: Vec<&Exemplar> = exemplars.iter().collect();
        sorted.sort_by_key(|e| e.timestamp);
        for e in sorted {
            let entry = ring.series.entry(key.clone()).or_insert_with(|| (key.clone().into(), i64::MIN));
            if e.timestamp <= entry.1 {
                added.duplicate += 1;
                continue;
            }
            entry.1 = e.timestamp;
            let shared = entry.0.clone();
            ring.entries.push_back(Stored {
                series: shared,
                labels: owned(&e.labels).into(),
                value: e.value,
                timestamp_ms: e.timestamp,
            });
            added.stored += 1;
            while ring.entries.len() > self.capacity {
                let Some(old) = ring.entries.pop_front() else { break };
                // The map's copy and this one: the series has no exemplar left.
                if Arc::strong_count(&old.series) == 2 {
                    ring.series.remove(&old.series[..]);
                }
            }
        }
        added
    }

    /// The exemplars of series matching any of `selectors`, between `start` and `end`
    /// (ms, inclusive), by series, oldest first.
    pub fn query(&self, selectors: &[Vec<Matcher>], start: i64, end: i64) -> Vec<ExemplarSeries> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let matches = |series: &[(Box<str>, Box<str>)]| {
            selectors.iter().any(|set| {
                set.iter().all(|m| {
                    let value = series.iter().find(|(n, _)| **n == *m.name()).map_or("", |(_, v)| &**v);
                    m.matches(value)
                })
            })
        };
        let mut by_series: Vec<(SeriesLabels, Vec<ExemplarPoint>)> = Vec::new();
        let mut index: HashMap<*const (Box<str>, Box<str>), usize> = HashMap::new();
        let mut verdict: HashMap<*const (Box<str>, Box<str>), bool> = HashMap::new();
        for e in ring.entries.iter().filter(|e| (start..=end).contains(&e.timestamp_ms)) {
            let id = e.series.as_ptr();
            if !*verdict.entry(id).or_insert_with(|| matches(&e.series)) {
                continue;
            }
            let slot = *index.entry(id).or_insert_with(|| {
                by_series.push((e.series.clone(), Vec::new()));
                by_series.len() - 1
            });
            by_series[slot].1.push(ExemplarPoint {
                labels: e.labels.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
                value: value_text(e.value),
                timestamp: e.timestamp_ms as f64 / 1000.0,
            });
        }
        by_series
            .into_iter()
            .map(|(series, exemplars)| ExemplarSeries {
                series_labels: series.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
                exemplars,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(n: &str, v: &str) -> Label {
        Label { name: n.into(), value: v.into() }
    }

    fn exemplar(trace: &str, value: f64, timestamp: i64) -> Exemplar {
        Exemplar { labels: vec![label("trace_id", trace)], value, timestamp }
    }

    fn series(route: &str) -> Vec<Label> {
        vec![label("__name__", "d_bucket"), label("le", "0.5"), label("route", route)]
    }

    #[test]
    fn resent_and_out_of_order_exemplars_are_stored_once() {
        let store = ExemplarStore::new(10);
        assert_eq!(store.add(&series("/a"), &[exemplar("t1", 0.3, 1000)]).stored, 1);
        // The next scrape resends the bucket's last exemplar, then a newer one arrives.
        assert_eq!(store.add(&series("/a"), &[exemplar("t1", 0.3, 1000)]), Added { stored: 0, duplicate: 1 });
        assert_eq!(store.add(&series("/a"), &[exemplar("t0", 0.1, 500)]).duplicate, 1, "out of order");
        assert_eq!(store.add(&series("/a"), &[exemplar("t2", 0.4, 2000)]).stored, 1);
        assert_eq!(store.add(&series("/b"), &[exemplar("t3", 0.2, 1000)]).stored, 1, "another series");
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn queries_select_series_and_time_and_the_ring_forgets_the_oldest() {
        let store = ExemplarStore::new(3);
        for (i, route) in ["/a", "/b", "/a", "/b"].iter().enumerate() {
            store.add(&series(route), &[exemplar(&format!("t{i}"), 0.25, 1000 * (i as i64 + 1))]);
        }
        assert_eq!(store.len(), 3, "bounded");
        let a = vec![Matcher::Eq("route".into(), "/a".into())];
        let got = store.query(std::slice::from_ref(&a), 0, i64::MAX);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].series_labels["route"], "/a");
        let traces: Vec<&str> = got[0].exemplars.iter().map(|e| e.labels["trace_id"].as_str()).collect();
        assert_eq!(traces, ["t2"], "t0 was pushed out");
        assert_eq!((got[0].exemplars[0].value.as_str(), got[0].exemplars[0].timestamp), ("0.25", 3.0));
        let any = vec![Matcher::Eq("__name__".into(), "d_bucket".into())];
        let window = store.query(&[any], 2500, 4000);
        let mut traces: Vec<String> =
            window.iter().flat_map(|s| s.exemplars.iter().map(|e| e.labels["trace_id"].clone())).collect();
        traces.sort();
        assert_eq!(traces, ["t2", "t3"]);
        // Every exemplar of "/b" pushed out: a new one for it is not a duplicate of a forgotten one.
        store.add(&series("/c"), &[exemplar("t4", 1.0, 5000)]);
        store.add(&series("/c"), &[exemplar("t5", 1.0, 6000)]);
        store.add(&series("/c"), &[exemplar("t6", 1.0, 7000)]);
        assert!(store.query(&[vec![Matcher::Eq("route".into(), "/b".into())]], 0, i64::MAX).is_empty());
        assert_eq!(store.add(&series("/b"), &[exemplar("t1", 0.25, 2000)]).stored, 1);
    }
}
