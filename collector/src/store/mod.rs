//! The time-series store: a WAL for durability in front of an in-memory head.
//!
//! "Durable" here means: a sample is acknowledged only after the WAL record holding it has
//! been written and `fdatasync`ed (group commit), so a power cut or `kill -9` after the
//! acknowledgement cannot lose it; on start the WAL is replayed into the head.
//!
//! An ingest resolves its series under the head's lock and queues the WAL records in that
//! same critical section, so a series' creation precedes its samples on disk; it then
//! awaits the fsync, and only then appends to the head. Samples are split into records of
//! at most 100,000. `X-Hale-Batch` ids are WAL records too (the highest sequence per
//! source), so a resend is recognised even after a restart.
//!
//! A checkpoint cuts the WAL and writes the head as records to `checkpoint.<segment>`;
//! start loads the newest checkpoint and replays the segments after it. Ingests hold a
//! shared gate from their WAL send until their samples are in the head, and a checkpoint
//! takes it exclusively around its cut and snapshot, so it never folds away a segment
//! whose samples the snapshot lacks. Queries copy chunk bytes under the head's read lock
//! and decode after releasing it, so they do not hold up ingest.

pub mod chunk;
pub mod head;
mod postings;
mod symbols;
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

/// A series' number in the head, dense from 0: what the index lists (`postings`) and the
/// head's vectors are indexed by. Here, not in `head`, so the index does not depend on the
/// head that uses it.
pub type SeriesRef = u32;

/// One series of an ingest: sorted labels and samples.
pub type IncomingSeries = (Vec<(String, String)>, Vec<(i64, f64)>);

/// Samples per WAL record: keeps every record far below the replay limit.
const SAMPLES_PER_RECORD: usize = 100_000;

/// Runs `f`, which may wait on the head's lock, without stalling other tasks on this
/// worker thread (on a multi-threaded runtime; tests on a current-thread one just run it).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

pub struct Store {
    /// Held (shared) by every ingest from its WAL send until its samples are in the head,
    /// and exclusively by a checkpoint around its cut and snapshot: a checkpoint never
    /// folds away a WAL segment whose samples are not yet in the head it snapshots.
    gate: tokio::sync::RwLock<()>,
    head: RwLock<Head>,
    wal: Wal,
    /// Highest batch sequence stored per source (agent id).
    seen: Mutex<HashMap<String, u64>>,
    /// Per reader of the WAL (a forwarder), the oldest segment it still needs.
    wal_readers: Mutex<std::collections::BTreeMap<String, u64>>,
    dir: std::path::PathBuf,
}

/// What a checkpoint did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointReport {
    pub upto_segment: u64,
    pub records: usize,
}

/// Checkpoint files in `dir` (`checkpoint.<segment>`), ascending.
fn checkpoints(dir: &Path) -> Result<Vec<(u64, std::path::PathBuf)>, WalError> {
    let mut out: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .map_err(|source| WalError::Io { path: dir.to_path_buf(), source })?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("checkpoint.")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn latest_checkpoint(dir: &Path) -> Result<Option<(u64, std::path::PathBuf)>, WalError> {
    Ok(checkpoints(dir)?.pop())
}

/// What opening the store found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub wal: wal::ReplayReport,
    /// Records loaded from the checkpoint before the WAL.
    pub checkpoint_records: u64,
    pub series: usize,
    pub samples: u64,
}

impl Store {
    /// Loads the newest checkpoint, replays the WAL written after it, and opens the WAL
    /// for writing.
    pub fn open(dir: &Path) -> Result<(Self, OpenReport), WalError> {
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(dir).map_err(|source| WalError::Io { path: dir.to_path_buf(), source })?;
        let mut head = Head::default();
        let mut seen: HashMap<String, u64> = HashMap::new();
        // Logged refs are the head's refs as they were, and come back the same (empty
        // slots included); mapped all the same, in case a log disagrees with itself.
        let mut refs: HashMap<u32, u32> = HashMap::new();
        let mut apply = |record: Record, head: &mut Head| match record {
            Record::Series { r, labels } => {
                let pairs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                let restored = head.restore_series(r, &pairs);
                if pairs.is_empty() {
                    refs.remove(&r);
                } else {
                    refs.insert(r, restored);
                }
            }
            Record::Samples(samples) => {
                for (r, t, v) in samples {
                    if let Some(r) = refs.get(&r) {
                        // Whatever was acknowledged comes back, however far out of order.
                        let _ = head.restore_sample(*r, t, v);
                    }
                }
            }
            Record::BatchSeen { source, seq } => {
                let e = seen.entry(source).or_default();
                *e = (*e).max(seq);
            }
            Record::Chunk { r, count, bytes } => {
                if let (Some(r), Some(chunk)) = (refs.get(&r), chunk::Chunk::from_encoded(bytes, count)) {
                    head.restore_chunk(*r, chunk);
                }
            }
        };
        let mut from = 0;
        let mut checkpoint_records = 0;
        if let Some((upto, path)) = latest_checkpoint(dir)? {
            let (good, len, n) = wal::read_file(&path, |r| apply(r, &mut head))?;
            if good < len {
                tracing::error!(checkpoint = %path.display(), "checkpoint damaged after {n} records; the rest is lost");
            }
            checkpoint_records = n;
            from = upto + 1;
        }
        let report = wal::replay(&wal_dir, from, |r| apply(r, &mut head))?;
        let open =
            OpenReport { series: head.num_series(), samples: head.samples_appended(), wal: report, checkpoint_records };
        let wal = Wal::open(&wal_dir)?;
        Ok((
            Store {
                gate: tokio::sync::RwLock::new(()),
                head: RwLock::new(head),
                wal,
                seen: Mutex::new(seen),
                wal_readers: Mutex::default(),
                dir: dir.to_path_buf(),
            },
            open,
        ))
    }

    /// Folds the WAL into a checkpoint of the head, so the next start replays only what
    /// came after it. Safe at any time: samples arriving meanwhile land in the WAL segment
    /// after the cut (and possibly also in the checkpoint; replaying them twice is harmless).
    pub async fn checkpoint(&self) -> Result<CheckpointReport, WalError> {
        let gate = self.gate.write().await;
        let upto = self.wal.cut().await?;
        let mut records = blocking(|| self.read().snapshot());
        drop(gate);
        records.extend(
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(source, seq)| Record::BatchSeen { source: source.clone(), seq: *seq }),
        );
        let n = records.len();
        let dir = self.dir.clone();
        // Segments a forwarder has not read yet stay, past the checkpoint.
        let removable = match self.wal_floor() {
            Some(floor) => upto.min(floor.saturating_sub(1)),
            None => upto,
        };
        tokio::task::spawn_blocking(move || {
            let path = dir.join(format!("checkpoint.{upto:08}"));
            wal::write_file(&path, records.into_iter())?;
            wal::remove_upto(&dir.join("wal"), removable)?;
            for (old, old_path) in checkpoints(&dir)? {
                if old < upto {
                    std::fs::remove_file(&old_path).map_err(|source| WalError::Io { path: old_path, source })?;
                }
            }
            Ok::<_, WalError>(())
        })
        .await
        .map_err(|_| WalError::Closed)??;
        Ok(CheckpointReport { upto_segment: upto, records: n })
    }

    /// Drops data older than `min_t`, then the oldest data beyond `max_bytes` (0: no size
    /// limit). Returns the bytes freed.
    pub fn apply_retention(&self, min_t: i64, max_bytes: usize) -> usize {
        let mut head = self.write();
        let mut freed = head.drop_before(min_t);
        if max_bytes > 0
            && let Some(cutoff) = head.cutoff_for_size(max_bytes)
        {
            freed += head.drop_before(cutoff);
        }
        freed
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Keeps the WAL from `segment` on for `reader` (a forwarder) past checkpoints.
    pub fn keep_wal_from(&self, reader: &str, segment: u64) {
        self.wal_readers.lock().unwrap_or_else(|p| p.into_inner()).insert(reader.to_string(), segment);
    }

    /// The oldest segment a reader still needs.
    fn wal_floor(&self) -> Option<u64> {
        self.wal_readers.lock().unwrap_or_else(|p| p.into_inner()).values().min().copied()
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
        let _gate = self.gate.read().await;
        let done = blocking(|| {
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
            records.extend(samples.chunks(SAMPLES_PER_RECORD).map(|c| Record::Samples(c.to_vec())));
            if let Some((source, seq)) = &batch {
                records.push(Record::BatchSeen { source: source.clone(), seq: *seq });
            }
            self.wal.send(&records)
        })?;
        done.await
            .map_err(|_| WalError::Closed)?
            .map_err(|e| WalError::Io { path: self.wal.dir().to_path_buf(), source: std::io::Error::other(e) })?;
        blocking(|| {
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
        });
        if let Some((source, seq)) = batch {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let e = seen.entry(source).or_default();
            *e = (*e).max(seq);
        }
        Ok(outcome)
    }

    /// The labels of the series logged as `r` (in any WAL segment, of any run: references
    /// survive restarts); `None` for a series removed since.
    pub fn labels_of(&self, r: u32) -> Option<head::Labels> {
        self.read().labels(r)
    }

    pub fn series_labels(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<head::Labels> {
        self.read().series_labels(matchers, mint, maxt)
    }

    /// Matching series with their samples in `[mint, maxt]`. The head's lock is held only
    /// to copy chunk bytes; decoding happens after (over the spare cores for a large
    /// selection), so queries do not hold up ingest.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesData> {
        let raw = self.read().select_raw(matchers, mint, maxt);
        let work = raw.iter().map(head::RawSeries::samples).sum();
        crate::parallel::par_map(&raw, work, |r| r.decode(mint, maxt)).into_iter().flatten().collect()
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

    /// References are what the WAL logged, across restarts, with or without a checkpoint
    /// in between, a removed series included: a reader of old segments (a forwarder)
    /// resolves them through the head.
    #[tokio::test]
    async fn series_references_survive_restarts_and_removals() {
        let name = |store: &Store, r: u32| {
            store
                .labels_of(r)
                .and_then(|l| l.iter().find(|(n, _)| n.as_ref() == "__name__").map(|(_, v)| v.to_string()))
        };
        for checkpoint in [false, true] {
            let dir = tempfile::tempdir().expect("tmp");
            {
                let (store, _) = Store::open(dir.path()).expect("open");
                store
                    .ingest(vec![series("a", 1000, 1.0), series("b", 10_000, 1.0), series("c", 10_000, 1.0)], None)
                    .await
                    .expect("ingest");
                store.apply_retention(5000, 0);
                assert_eq!(name(&store, 0), None, "a is removed");
                store.ingest(vec![series("d", 20_000, 1.0), series("a", 20_000, 2.0)], None).await.expect("ingest");
                if checkpoint {
                    store.checkpoint().await.expect("checkpoint");
                }
                store.ingest(vec![series("e", 30_000, 1.0)], None).await.expect("ingest");
            }
            let (store, _) = Store::open(dir.path()).expect("reopen");
            let names: Vec<Option<String>> = (0..7).map(|r| name(&store, r)).collect();
            let some = |n: &str| Some(n.to_string());
            // Without a checkpoint the WAL does not know a was removed before it came back:
            // its first slot is emptied when it is logged again. Either way, the same.
            assert_eq!(names, [None, some("b"), some("c"), some("d"), some("a"), some("e"), None], "{checkpoint}");
            // And the next series takes the next reference.
            store.ingest(vec![series("f", 40_000, 1.0)], None).await.expect("ingest");
            assert_eq!(name(&store, 6), some("f"), "checkpoint: {checkpoint}");
        }
    }

    #[tokio::test]
    async fn checkpoints_bound_replay_and_keep_everything() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (store, _) = Store::open(dir.path()).expect("open");
            for i in 0..300 {
                store
                    .ingest(vec![series("m", 1000 * i, i as f64)], Some(("a".into(), i as u64 + 1)))
                    .await
                    .expect("ingest");
            }
            let report = store.checkpoint().await.expect("checkpoint");
            assert!(report.records >= 4, "{report:?}");
            store.ingest(vec![series("m", 400_000, 9.0), series("n", 1, 1.0)], None).await.expect("after");
        }
        assert_eq!(wal::segments(&dir.path().join("wal")).expect("segments").len(), 1, "folded segments are gone");
        let (store, report) = Store::open(dir.path()).expect("reopen");
        assert_eq!(report.wal.records, 2, "only what came after the checkpoint is replayed");
        let m = store.select(&[Matcher::Eq("__name__".into(), "m".into())], 0, i64::MAX);
        assert_eq!(m[0].samples.len(), 301);
        assert_eq!(m[0].samples[299], (299_000, 299.0));
        assert!(
            store.ingest(vec![series("m", 5, 5.0)], Some(("a".into(), 300))).await.expect("ingest").duplicate_batch
        );
        // A second checkpoint replaces the first.
        store.checkpoint().await.expect("again");
        let (_, report) = Store::open(dir.path()).expect("reopen");
        assert_eq!(report.wal.records, 0);
        assert_eq!(checkpoints(dir.path()).expect("list").len(), 1);
    }

    #[tokio::test]
    async fn acknowledged_out_of_order_samples_come_back_from_a_checkpoint() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (store, _) = Store::open(dir.path()).expect("open");
            store.ingest(vec![series("m", 600_000, 1.0)], None).await.expect("ingest");
            let late = store.ingest(vec![series("m", 400_000, 2.0)], None).await.expect("late but in the window");
            assert_eq!(late.samples_stored, 1);
            // The series moves on far beyond the window.
            store.ingest(vec![series("m", 3_600_000, 3.0)], None).await.expect("ingest");
            store.checkpoint().await.expect("checkpoint");
        }
        let (store, _) = Store::open(dir.path()).expect("reopen");
        let m = store.select(&[Matcher::Eq("__name__".into(), "m".into())], 0, i64::MAX);
        assert_eq!(m[0].samples, vec![(400_000, 2.0), (600_000, 1.0), (3_600_000, 3.0)]);
    }

    #[tokio::test]
    async fn retention_drops_old_chunks_by_time_and_size() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = Store::open(dir.path()).expect("open");
        let points: Vec<(i64, f64)> = (0..1200).map(|i| (i * 1000, i as f64)).collect();
        store.ingest(vec![(vec![("__name__".into(), "m".into())], points)], None).await.expect("ingest");
        let all = || store.select(&[Matcher::Eq("__name__".into(), "m".into())], 0, i64::MAX)[0].samples.clone();
        assert_eq!(all().len(), 1200);
        assert!(store.apply_retention(240_000, 0) > 0);
        assert_eq!(all()[0].0, 240_000, "whole chunks older than the cutoff are gone");
        let (_, _, before) = store.stats();
        store.apply_retention(0, before / 2);
        let (_, _, after) = store.stats();
        assert!(after <= before / 2 + 200, "{after} bytes left of {before}");
        assert_eq!(all().last().map(|s| s.0), Some(1_199_000), "the newest data stays");
    }
}
