//! Who writes to this collector, how often, and staleness markers when a writer goes
//! silent.
//!
//! Prometheus ends a series with a staleness marker when its scrape target disappears;
//! a remote_write receiver has no scrape to notice that with, so a frozen agent's last
//! `probe_success` of 1 would answer every instant query for the whole five-minute
//! lookback. The collector therefore follows each numbered sender (the `X-Hale-Batch`
//! source, one per agent queue): the series it wrote, their newest sample and the
//! spacing between their samples. A source that has written nothing for longer than
//! `hale_core::cluster::stale_after_ms` of its interval (the median spacing of its
//! series) is silent, and each of its series gets a staleness marker, through the store's
//! normal ingest (WAL, fsync) like any sample. A series that gets a fresh sample after
//! that simply resumes. Writers that do not number their batches are not followed.
//! Sources are checked every 250 ms, a fraction of the demo's 500 ms probe interval.
//!
//! Known gap: what is followed lives in memory, so a source already silent when the
//! collector restarts gets no markers (its values then age out of the lookback as in any
//! remote_write receiver).

use std::collections::HashMap;
use std::sync::Mutex;

use hale_core::cluster::{DEFAULT_INTERVAL_MS, stale_after_ms};

use crate::query::{STALE_NAN, is_stale};
use crate::store::{IncomingSeries, Store};

/// A series not written for this long is forgotten (its source sent its own marker, or
/// dropped it long ago), so churn does not grow memory.
const FORGET_AFTER_MS: i64 = 60 * 60 * 1000;

type Labels = Vec<(String, String)>;

#[derive(Debug, Default)]
struct SeriesSeen {
    last_ms: i64,
    /// Newest minus previous sample time; 0 until a second sample.
    spacing_ms: i64,
}

#[derive(Debug, Default)]
struct Source {
    /// When it last wrote, by the collector's clock.
    written_ms: i64,
    series: HashMap<Labels, SeriesSeen>,
    /// Markers written since its last write.
    marked: bool,
}

impl Source {
    /// The median spacing of its series' samples: how often it sends.
    fn interval_ms(&self) -> i64 {
        let mut spacings: Vec<i64> = self.series.values().map(|s| s.spacing_ms).filter(|s| *s > 0).collect();
        if spacings.is_empty() {
            return DEFAULT_INTERVAL_MS;
        }
        let mid = spacings.len() / 2;
        *spacings.select_nth_unstable(mid).1
    }
}

/// The sources followed, by `X-Hale-Batch` source.
#[derive(Debug, Default)]
pub struct Sources {
    inner: Mutex<HashMap<String, Source>>,
}

/// Markers for one silent source: its name and the series to end.
pub type Markers = (String, Vec<IncomingSeries>);

impl Sources {
    /// Records a write of `series` by `source` at `now_ms`.
    pub fn observe(&self, source: &str, series: &[IncomingSeries], now_ms: i64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let s = inner.entry(source.to_string()).or_default();
        s.written_ms = now_ms;
        s.marked = false;
        for (labels, points) in series {
            let Some(newest) = points.iter().filter(|(_, v)| !is_stale(*v)).map(|(t, _)| *t).max() else { continue };
            match s.series.get_mut(labels) {
                Some(seen) if newest > seen.last_ms => {
                    seen.spacing_ms = newest - seen.last_ms;
                    seen.last_ms = newest;
                }
                Some(_) => {}
                None => {
                    s.series.insert(labels.clone(), SeriesSeen { last_ms: newest, spacing_ms: 0 });
                }
            }
        }
    }

    /// The markers due at `now_ms`: one per series of every source silent for longer
    /// than its interval allows and not marked yet. Each marker is at `now_ms`, or just
    /// after the series' newest sample if the sender's clock runs ahead, so it always
    /// ends the series. Marks the sources (call [`Sources::unmark`] if storing fails).
    pub fn due(&self, now_ms: i64) -> Vec<Markers> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        inner.retain(|_, s| {
            s.series.retain(|_, seen| now_ms - seen.last_ms < FORGET_AFTER_MS);
            !s.series.is_empty()
        });
        for (name, s) in inner.iter_mut() {
            if s.marked || now_ms - s.written_ms <= stale_after_ms(s.interval_ms()) {
                continue;
            }
            s.marked = true;
            let marker = f64::from_bits(STALE_NAN);
            let series = s
                .series
                .iter()
                .map(|(labels, seen)| (labels.clone(), vec![(now_ms.max(seen.last_ms + 1), marker)]))
                .collect();
            out.push((name.clone(), series));
        }
        out
    }

    /// Lets a source's markers be due again (they could not be stored).
    pub fn unmark(&self, source: &str) {
        if let Some(s) = self.inner.lock().unwrap_or_else(|p| p.into_inner()).get_mut(source) {
            s.marked = false;
        }
    }

    /// Stores the markers due at `now_ms`; returns how many series were ended.
    pub async fn mark_silent(&self, store: &Store, now_ms: i64) -> usize {
        let mut ended = 0;
        for (source, series) in self.due(now_ms) {
            let n = series.len();
            match store.ingest(series, None).await {
                Ok(_) => {
                    ended += n;
                    tracing::info!(source, series = n, "source silent: its series marked stale");
                }
                Err(e) => {
                    tracing::error!(source, error = %e, "cannot store staleness markers; trying again");
                    self.unmark(&source);
                }
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{self, Value};

    fn series(name: &str, node: &str, t: i64) -> IncomingSeries {
        (vec![("__name__".into(), name.into()), ("node".into(), node.into())], vec![(t, 1.0)])
    }

    fn values(store: &Store, q: &str, t: i64) -> Vec<f64> {
        match query::instant_query(store, q, t) {
            Ok(Value::Vector(v)) => v.into_iter().map(|s| s.value).collect(),
            other => panic!("{other:?}"),
        }
    }

    /// Issue #12, finding 12: an agent that goes silent has its series ended within a few
    /// of its intervals, instead of answering its last value for five minutes; one that
    /// comes back resumes.
    #[tokio::test]
    async fn issue_12_a_silent_source_is_marked_stale_and_resumes_when_it_writes() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = Store::open(dir.path()).expect("store");
        let sources = Sources::default();
        let t0 = 1_000_000_000;
        for i in 0..5 {
            let t = t0 + i * 1000;
            let batch = vec![series("probe_success", "node-3", t), series("up", "node-3", t)];
            sources.observe("node-3-x.metrics", &batch, t);
            store.ingest(batch, None).await.expect("ingest");
        }
        let last = t0 + 4000;
        assert_eq!(sources.mark_silent(&store, last + 2_000).await, 0, "within 3 intervals: not silent");
        assert_eq!(values(&store, "probe_success", last + 2_000), [1.0]);
        assert_eq!(sources.mark_silent(&store, last + 3_500).await, 2);
        assert_eq!(sources.mark_silent(&store, last + 4_000).await, 0, "marked once");
        assert!(values(&store, "probe_success", last + 3_500).is_empty(), "ended at once");
        assert!(values(&store, "up", last + 60_000).is_empty(), "not for the five-minute lookback");
        assert_eq!(values(&store, "max_over_time(probe_success[1h])", last + 60_000), [1.0], "history kept");

        // Back: its next sample resumes the series, and a later silence is marked again.
        let back = last + 10_000;
        let batch = vec![series("probe_success", "node-3", back)];
        sources.observe("node-3-x.metrics", &batch, back);
        store.ingest(batch, None).await.expect("ingest");
        assert_eq!(values(&store, "probe_success", back), [1.0]);
        assert_eq!(sources.mark_silent(&store, back + 1_000).await, 0);
        assert!(sources.mark_silent(&store, back + 60_000).await > 0);
    }

    #[test]
    fn a_sender_clock_ahead_still_gets_a_marker_after_its_newest_sample() {
        let sources = Sources::default();
        sources.observe("a", &[series("up", "n", 50_000), series("up", "m", 49_000)], 10_000);
        sources.observe("a", &[series("up", "n", 51_000), series("up", "m", 50_000)], 11_000);
        let due = sources.due(30_000);
        let times: Vec<i64> = due[0].1.iter().map(|(_, p)| p[0].0).collect();
        assert!(times.contains(&51_001) && times.contains(&50_001), "{times:?}");
        assert!(due[0].1.iter().all(|(_, p)| is_stale(p[0].1)));
    }
}
