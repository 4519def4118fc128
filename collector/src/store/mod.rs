//! The time-series store: a WAL for durability in front of an in-memory head.
//!
//! "Durable" here means: a sample is acknowledged only after the WAL record holding it has
//! been written and `fdatasync`ed (group commit), so a power cut or `kill -9` after the
//! acknowledgement cannot lose it; on start the WAL is replayed into the head.

pub mod chunk;
pub mod head;
pub mod wal;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, RwLock};

use head::{Head, Matcher, Rejected, SeriesData};
use wal::{Record, Wal, WalError};

/// What one ingest did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    pub series_created: usize,
    pub samples_stored: usize,
    pub samples_too_old: usize,
    pub samples_duplicate: usize,
    /// The whole batch had been stored before (same `X-Hale-Batch`).
    pub duplicate_batch: bool,
}

/// One series of an ingest: sorted labels and samples.
pub type IncomingSeries = (Vec<(String, String)>, Vec<(i64, f64)>);

pub struct Store {
    head: RwLock<Head>,
    wal: Wal,
    /// Highest batch sequence stored per source (agent id).
    seen: Mutex<HashMap<String, u64>>,
}

/// What opening the store found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub wal: wal::ReplayReport,
    pub series: usize,
    pub samples: u64,
}

impl Store {
    /// Replays the WAL in `dir` and opens it for writing.
    pub fn open(dir: &Path) -> Result<(Self, OpenReport), WalError> {
        let wal_dir = dir.join("wal");
        let mut head = Head::default();
        let mut seen: HashMap<String, u64> = HashMap::new();
        // WAL refs are the head's refs as they were; map them in case they differ now.
        let mut refs: HashMap<u32, u32> = HashMap::new();
        let report = wal::replay(&wal_dir, 0, |record| match record {
            Record::Series { r, labels } => {
                let pairs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                refs.insert(r, head.get_or_create(&pairs).0);
            }
            Record::Samples(samples) => {
                for (r, t, v) in samples {
                    if let Some(r) = refs.get(&r) {
                        let _ = head.append(*r, t, v);
                    }
                }
            }
            Record::BatchSeen { source, seq } => {
                let e = seen.entry(source).or_default();
                *e = (*e).max(seq);
            }
        })?;
        let open = OpenReport { series: head.num_series(), samples: head.samples_appended(), wal: report };
        let wal = Wal::open(&wal_dir)?;
        Ok((Store { head: RwLock::new(head), wal, seen: Mutex::new(seen) }, open))
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Head> {
        self.head.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Head> {
        self.head.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `series` durably. Resolves after the WAL fsync; only then is it visible.
    pub async fn ingest(
        &self,
        series: Vec<IncomingSeries>,
        batch: Option<(String, u64)>,
    ) -> Result<IngestOutcome, WalError> {
        if let Some((source, seq)) = &batch
            && self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(source).is_some_and(|s| s >= seq)
        {
            return Ok(IngestOutcome { duplicate_batch: true, ..Default::default() });
        }
        let mut outcome = IngestOutcome::default();
        let mut resolved: Vec<(u32, Vec<(i64, f64)>)> = Vec::with_capacity(series.len());
        let done = {
            // Series creation and the WAL send happen under one lock, so the WAL holds a
            // series' creation before any sample that refers to it.
            let mut head = self.write();
            let mut records = Vec::new();
            let mut samples = Vec::new();
            for (labels, points) in series {
                let pairs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                let (r, created) = head.get_or_create(&pairs);
                if created {
                    outcome.series_created += 1;
                    records.push(Record::Series { r, labels });
                }
                samples.extend(points.iter().map(|(t, v)| (r, *t, *v)));
                resolved.push((r, points));
            }
            records.push(Record::Samples(samples));
            if let Some((source, seq)) = &batch {
                records.push(Record::BatchSeen { source: source.clone(), seq: *seq });
            }
            self.wal.send(&records)?
        };
        done.await
            .map_err(|_| WalError::Closed)?
            .map_err(|e| WalError::Io { path: self.wal.dir().to_path_buf(), source: std::io::Error::other(e) })?;
        {
            let mut head = self.write();
            for (r, points) in resolved {
                for (t, v) in points {
                    match head.append(r, t, v) {
                        Ok(()) => outcome.samples_stored += 1,
                        Err(Rejected::TooOld) => outcome.samples_too_old += 1,
                        Err(Rejected::Duplicate) => outcome.samples_duplicate += 1,
                    }
                }
            }
        }
        if let Some((source, seq)) = batch {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let e = seen.entry(source).or_default();
            *e = (*e).max(seq);
        }
        Ok(outcome)
    }

    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesData> {
        self.read().select(matchers, mint, maxt)
    }

    pub fn label_names(&self) -> Vec<String> {
        self.read().label_names()
    }

    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.read().label_values(name)
    }

    /// (active series, samples appended, bytes of chunks)
    pub fn stats(&self) -> (usize, u64, usize) {
        let head = self.read();
        (head.num_series(), head.samples_appended(), head.chunk_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, t: i64, v: f64) -> IncomingSeries {
        (vec![("__name__".into(), name.into()), ("job".into(), "t".into())], vec![(t, v)])
    }

    #[tokio::test]
    async fn acknowledged_samples_survive_a_reopen_and_batches_are_not_stored_twice() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (store, _) = Store::open(dir.path()).expect("open");
            let out = store
                .ingest(vec![series("a", 1000, 1.0), series("b", 1000, 2.0)], Some(("agent".into(), 1)))
                .await
                .expect("ingest");
            assert_eq!((out.series_created, out.samples_stored), (2, 2));
            store.ingest(vec![series("a", 2000, 3.0)], Some(("agent".into(), 2))).await.expect("ingest");
            let again = store.ingest(vec![series("a", 2000, 3.0)], Some(("agent".into(), 2))).await.expect("ingest");
            assert!(again.duplicate_batch);
        }
        let (store, report) = Store::open(dir.path()).expect("reopen");
        assert_eq!((report.series, report.samples), (2, 3));
        let a = store.select(&[Matcher::Eq("__name__".into(), "a".into())], 0, 10_000);
        assert_eq!(a[0].samples, vec![(1000, 1.0), (2000, 3.0)]);
        let dup = store.ingest(vec![series("a", 2000, 3.0)], Some(("agent".into(), 2))).await.expect("ingest");
        assert!(dup.duplicate_batch, "batch ids survive a restart");
    }
}
