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
//!
//! Retention is bounded by disk, not memory: full chunks older than the head window
//! ([`HEAD_WINDOW_MS`] behind the newest sample) go to immutable on-disk blocks (see
//! `block`) of aligned two-hour ranges, which are compacted into day blocks once a day is
//! whole, and deleted whole by retention. A block is durable before its chunks leave the
//! head, so the checkpoint after it may drop them; a crash in between replays them into
//! the head, where opening trims them again (and a query merging head and blocks counts a
//! timestamp once either way). A series stays in the head's index while any block holds
//! it, so references stay stable and a selection finds it without reading a block.

pub mod block;
pub mod chunk;
pub mod head;
mod postings;
mod segment;
mod symbols;
pub mod wal;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use block::{Block, BlockError};

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

/// How far behind the newest sample (or the clock, if that is earlier) full chunks stay
/// in memory before they go to a block: recent data is what rules, SLOs and dashboards
/// read, over and over.
pub const HEAD_WINDOW_MS: i64 = 2 * 3600 * 1000;
/// The aligned range of a block written from the head.
pub const BLOCK_RANGE_MS: i64 = 2 * 3600 * 1000;
/// Blocks of a whole day are compacted into one: fewer files to open and search.
pub const COMPACTED_RANGE_MS: i64 = 24 * 3600 * 1000;

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
    /// Series in the head whose creation is not (yet) known to be in the WAL: created by
    /// an ingest still writing, or by one the WAL refused (a full disk). An ingest that
    /// refers to one logs its creation again, so no durable sample ever refers to a
    /// series the WAL does not hold.
    unlogged: Mutex<std::collections::HashSet<u32>>,
    /// Per reader of the WAL (a forwarder), the oldest segment it still needs.
    wal_readers: Mutex<std::collections::BTreeMap<String, u64>>,
    dir: std::path::PathBuf,
    /// On-disk blocks, by range, oldest first. A query takes a copy of this list while it
    /// holds the head's read lock: a block is listed before its chunks leave the head, so
    /// a query sees each sample in one or the other (or both, counted once).
    blocks: RwLock<Vec<Arc<Block>>>,
    persist_failures: std::sync::atomic::AtomicU64,
    /// Held by a persist pass and by retention: one of them changes the blocks at a time
    /// (retention deleting a block a compaction is reading would bring its data back).
    maintenance: Mutex<()>,
}

/// What a pass moving chunks to blocks did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistReport {
    pub blocks_written: usize,
    pub chunks: u64,
    pub samples: u64,
    pub blocks_compacted: usize,
}

/// The on-disk blocks at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockStats {
    pub blocks: usize,
    pub bytes: u64,
    pub samples: u64,
    /// The oldest sample on disk (`None` with no blocks).
    pub min_t: Option<i64>,
    /// Persist passes that failed (the head kept their chunks).
    pub persist_failures: u64,
}

fn block_to_wal(e: BlockError) -> WalError {
    match e {
        BlockError::Io { path, source } => WalError::Io { path, source },
        other => {
            WalError::Io { path: std::path::PathBuf::from("blocks"), source: std::io::Error::other(other.to_string()) }
        }
    }
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
    pub blocks: usize,
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
        // Blocks after the head: each series they hold is found in the head (or brought
        // back, logged below), and what the head replayed of it that is on disk goes.
        let mut restored = Vec::new();
        let blocks = block::open_all(&dir.join("blocks"), |listed| {
            let (r, record) = head.resolve_listed(listed.r, &listed.labels);
            restored.extend(record);
            head.trim_on_disk(r, listed.newest);
            Some(r)
        })
        .map_err(block_to_wal)?;
        if !restored.is_empty() {
            tracing::warn!(
                series = restored.len(),
                "series held by blocks were missing from the checkpoint and WAL; brought back"
            );
            let next = wal::segments(&wal_dir)?.last().map_or(1, |id| id + 1);
            wal::write_file(&wal::segment_path(&wal_dir, next), restored.into_iter())?;
        }
        let open = OpenReport {
            series: head.num_series(),
            samples: head.samples_appended(),
            wal: report,
            checkpoint_records,
            blocks: blocks.len(),
        };
        let wal = Wal::open(&wal_dir)?;
        Ok((
            Store {
                gate: tokio::sync::RwLock::new(()),
                head: RwLock::new(head),
                wal,
                seen: Mutex::new(seen),
                unlogged: Mutex::default(),
                wal_readers: Mutex::default(),
                dir: dir.to_path_buf(),
                blocks: RwLock::new(blocks.into_iter().map(Arc::new).collect()),
                persist_failures: Default::default(),
                maintenance: Mutex::new(()),
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

    /// Drops data older than `min_t`, then the oldest data beyond `max_bytes` of head
    /// and blocks together (0: no size limit): whole blocks first, then head chunks.
    /// Returns the bytes freed.
    pub fn apply_retention(&self, min_t: i64, max_bytes: usize) -> usize {
        let _one_at_a_time = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        let doomed: Vec<Arc<Block>> = {
            let head_bytes = self.read().chunk_bytes() as u64;
            let mut blocks = self.blocks_write();
            let (mut doomed, mut kept): (Vec<_>, Vec<_>) = blocks.drain(..).partition(|b| b.meta().max_t < min_t);
            if max_bytes > 0 {
                let mut total = head_bytes + kept.iter().map(|b| b.bytes()).sum::<u64>();
                kept.sort_by_key(|b| b.meta().max_t);
                while total > max_bytes as u64 && !kept.is_empty() {
                    let oldest = kept.remove(0);
                    total -= oldest.bytes();
                    doomed.push(oldest);
                }
                kept.sort_by_key(|b| (b.meta().range, b.meta().min_t));
            }
            *blocks = kept;
            doomed
        };
        let mut freed = 0;
        for b in &doomed {
            freed += b.bytes() as usize;
            if let Err(e) = b.delete() {
                tracing::error!(block = b.name(), error = %e, "an expired block could not be deleted");
            }
        }
        let blocks = self.blocks_read().clone();
        let block_bytes: u64 = blocks.iter().map(|b| b.bytes()).sum();
        let held = |r| blocks.iter().any(|b| b.position(r).is_some());
        let mut head = self.write();
        freed += head.drop_before(min_t, held);
        if max_bytes > 0
            && let Some(cutoff) = head.cutoff_for_size((max_bytes as u64).saturating_sub(block_bytes) as usize)
        {
            freed += head.drop_before(cutoff, held);
        }
        freed
    }

    fn blocks_read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Block>>> {
        self.blocks.read().unwrap_or_else(|p| p.into_inner())
    }

    fn blocks_write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Block>>> {
        self.blocks.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the head window ends: full chunks ending before this go to blocks. Aligned to
    /// [`BLOCK_RANGE_MS`], behind the newest sample or the clock `now`, whichever is first
    /// (so a client's clock running ahead does not push data out early).
    fn persist_upto(&self, now: i64) -> i64 {
        let newest = self.read().newest().min(now);
        (newest - HEAD_WINDOW_MS).div_euclid(BLOCK_RANGE_MS) * BLOCK_RANGE_MS
    }

    /// Moves what has left the head window to blocks, one block per aligned range, then
    /// compacts whole days. Blocking I/O: run it off the async workers.
    pub fn persist(&self, now: i64) -> Result<PersistReport, BlockError> {
        let _one_at_a_time = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.persist_pass(now);
        if result.is_err() {
            self.persist_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    fn persist_pass(&self, now: i64) -> Result<PersistReport, BlockError> {
        let mut report = PersistReport::default();
        let upto = self.persist_upto(now);
        let starts = self.read().persistable_ranges(upto, BLOCK_RANGE_MS);
        let dir = self.dir.join("blocks");
        for start in starts {
            let range = (start, start + BLOCK_RANGE_MS);
            let data = self.read().collect_persistable(range);
            if data.is_empty() {
                continue;
            }
            let block = block::write(&dir, range, Vec::new(), &data)?;
            report.blocks_written += 1;
            report.chunks += block.meta().chunks;
            report.samples += block.meta().samples;
            {
                // Listed before the chunks leave the head (see `blocks`).
                let mut blocks = self.blocks_write();
                blocks.push(Arc::new(block));
                blocks.sort_by_key(|b| (b.meta().range, b.meta().min_t));
            }
            self.write().forget_persisted(&data);
        }
        report.blocks_compacted = self.compact(upto)?;
        Ok(report)
    }

    /// Merges the blocks of each whole day (ending at or before `upto`) into one. Returns
    /// how many blocks were merged away.
    fn compact(&self, upto: i64) -> Result<usize, BlockError> {
        let mut days: std::collections::BTreeMap<i64, Vec<Arc<Block>>> = std::collections::BTreeMap::new();
        for b in self.blocks_read().iter() {
            days.entry(b.meta().range.0.div_euclid(COMPACTED_RANGE_MS)).or_default().push(Arc::clone(b));
        }
        let mut merged = 0;
        for (day, inputs) in days {
            let range = (day * COMPACTED_RANGE_MS, (day + 1) * COMPACTED_RANGE_MS);
            if inputs.len() < 2 || range.1 > upto {
                continue;
            }
            let output = self.merge(range, &inputs)?;
            let names: std::collections::HashSet<&str> = inputs.iter().map(|b| b.name()).collect();
            {
                let mut blocks = self.blocks_write();
                blocks.retain(|b| !names.contains(b.name()));
                blocks.push(Arc::new(output));
                blocks.sort_by_key(|b| (b.meta().range, b.meta().min_t));
            }
            for b in &inputs {
                if let Err(e) = b.delete() {
                    // The output names it as a source: the next start deletes it.
                    tracing::error!(block = b.name(), error = %e, "a compacted block could not be deleted");
                }
            }
            merged += inputs.len();
        }
        Ok(merged)
    }

    /// One block of `inputs`' series, streamed series by series: each series' samples of
    /// every input, merged with each timestamp once (the same range may have been written
    /// twice after a crash), encoded again as one day's segments.
    fn merge(&self, range: (i64, i64), inputs: &[Arc<Block>]) -> Result<Block, BlockError> {
        let refs: std::collections::BTreeSet<SeriesRef> =
            inputs.iter().flat_map(|b| b.refs().iter().copied()).collect();
        let labels: Vec<(SeriesRef, Option<head::Labels>)> = {
            let head = self.read();
            refs.iter().map(|r| (*r, head.labels(*r))).collect()
        };
        if let Some((r, _)) = labels.iter().find(|(_, l)| l.is_none()) {
            return Err(BlockError::Corrupt {
                path: self.dir.join("blocks"),
                what: format!("series {r} is in a block but not in the head; compaction skipped"),
            });
        }
        let failed: std::cell::RefCell<Option<BlockError>> = std::cell::RefCell::new(None);
        let series = labels.into_iter().map_while(|(r, l)| {
            let mut samples = Vec::new();
            for b in inputs {
                if let Some(p) = b.position(r)
                    && let Err(e) = b.read_samples(p, i64::MIN, i64::MAX, &mut samples)
                {
                    *failed.borrow_mut() = Some(e);
                    return None;
                }
            }
            let labels = l
                .unwrap_or_default()
                .into_iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_str().to_string()))
                .collect();
            Some(block::SeriesData { r, labels, chunks: Vec::new(), samples })
        });
        let sources = inputs.iter().map(|b| b.name().to_string()).collect();
        let output = block::write(&self.dir.join("blocks"), range, sources, series)?;
        if let Some(e) = failed.into_inner() {
            let _ = output.delete();
            return Err(e);
        }
        Ok(output)
    }

    /// The on-disk blocks at a glance.
    pub fn block_stats(&self) -> BlockStats {
        let blocks = self.blocks_read();
        BlockStats {
            blocks: blocks.len(),
            bytes: blocks.iter().map(|b| b.bytes()).sum(),
            samples: blocks.iter().map(|b| b.meta().samples).sum(),
            min_t: blocks.iter().map(|b| b.meta().min_t).min(),
            persist_failures: self.persist_failures.load(std::sync::atomic::Ordering::Relaxed),
        }
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
        let mut logging = Vec::new();
        let _gate = self.gate.read().await;
        let done = blocking(|| {
            // Series creation and the WAL send happen under one lock, so the WAL holds a
            // series' creation before any sample that refers to it.
            let mut head = self.write();
            let mut unlogged = self.unlogged.lock().unwrap_or_else(|p| p.into_inner());
            let mut records = Vec::new();
            let mut samples = Vec::new();
            for (labels, points) in series {
                let pairs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                let (r, created) = head.get_or_create(&pairs);
                if created {
                    outcome.series_created += 1;
                    unlogged.insert(r);
                }
                if unlogged.contains(&r) {
                    logging.push(r);
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
        done.await.map_err(|_| WalError::Closed)?.map_err(|e| e.into_error(self.wal.dir()))?;
        {
            let mut unlogged = self.unlogged.lock().unwrap_or_else(|p| p.into_inner());
            for r in &logging {
                unlogged.remove(r);
            }
        }
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
        let head = self.read();
        let blocks = self.blocks_read().clone();
        head.series_labels(matchers, mint, maxt, &blocks)
    }

    /// Matching series with their samples in `[mint, maxt]`. The head's lock is held only
    /// to copy chunk bytes; decoding happens after (over the spare cores for a large
    /// selection), so queries do not hold up ingest.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesData> {
        let raw = {
            let head = self.read();
            // Copied under the head's lock: see `blocks`.
            let blocks = self.blocks_read().clone();
            head.select_raw(matchers, mint, maxt, &blocks)
        };
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

    const HOUR: i64 = 3600 * 1000;

    /// `n` series, one sample every 15 s over `[from, to)`, ingested in time order a
    /// quarter hour at a time (as agents would send them).
    async fn fill(store: &Store, n: usize, from: i64, to: i64) {
        let mut t0 = from;
        while t0 < to {
            let t1 = (t0 + HOUR / 4).min(to);
            let batch = (0..n)
                .map(|i| {
                    let labels = vec![("__name__".to_string(), "m".to_string()), ("i".to_string(), i.to_string())];
                    let points = (t0..t1).step_by(15_000).map(|t| (t, (t / 15_000 + i as i64) as f64)).collect();
                    (labels, points)
                })
                .collect();
            store.ingest(batch, None).await.expect("ingest");
            t0 = t1;
        }
    }

    fn every(store: &Store, mint: i64, maxt: i64) -> Vec<SeriesData> {
        let mut out = store.select(&[Matcher::Eq("__name__".into(), "m".into())], mint, maxt);
        out.sort_by_key(|s| {
            s.labels.iter().find(|(n, _)| n.as_str() == "i").map(|(_, v)| v.as_str().parse::<u32>().unwrap_or(0))
        });
        out
    }

    /// Each series has every sample of `[from, to)` once, in order, with its value.
    fn assert_complete(store: &Store, n: usize, from: i64, to: i64) {
        let all = every(store, from, to - 1);
        assert_eq!(all.len(), n, "every series");
        for (i, s) in all.iter().enumerate() {
            let want: Vec<(i64, f64)> =
                (from..to).step_by(15_000).map(|t| (t, (t / 15_000 + i as i64) as f64)).collect();
            assert_eq!(s.samples.len(), want.len(), "series {i}: each sample once");
            assert!(s.samples == want, "series {i}: the samples, in order");
        }
    }

    #[tokio::test]
    async fn samples_older_than_the_head_window_move_to_blocks_and_queries_span_both() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = Store::open(dir.path()).expect("open");
        let end = 12 * HOUR;
        fill(&store, 3, 0, end).await;
        let before = store.stats().2;
        let report = store.persist(end).expect("persist");
        // Newest just before 12 h: full chunks ending before 8 h (2 h back, aligned down)
        // go, as four 2 h blocks.
        assert_eq!(report.blocks_written, 4, "{report:?}");
        assert_eq!(store.block_stats().blocks, 4);
        let after = store.stats().2;
        assert!(after * 2 < before, "the head shrank from {before} to {after} bytes");
        assert_complete(&store, 3, 0, end);
        assert_complete(&store, 3, 3 * HOUR, 9 * HOUR + 15_000);
        // Labels of old ranges come from the index the head keeps.
        assert_eq!(store.series_labels(&[Matcher::Eq("i".into(), "1".into())], 0, HOUR).len(), 1);
        // Nothing more to move until the window moves on.
        assert_eq!(store.persist(end).expect("again").blocks_written, 0);
        // A late sample for what is on disk is refused as too old, never stored twice.
        let late = store.ingest(vec![series_i(1, HOUR, 5.0)], None).await.expect("ingest");
        assert_eq!(late.samples_too_old, 1);
    }

    fn series_i(i: usize, t: i64, v: f64) -> IncomingSeries {
        (vec![("__name__".into(), "m".into()), ("i".into(), i.to_string())], vec![(t, v)])
    }

    /// Memory holds the head window, not the retention: a week costs the head what a
    /// day does.
    #[tokio::test]
    async fn the_head_stays_the_same_size_as_retention_grows() {
        let mut sizes = Vec::new();
        for days in [1, 4] {
            let dir = tempfile::tempdir().expect("tmp");
            let (store, _) = Store::open(dir.path()).expect("open");
            let end = days * 24 * HOUR;
            let mut t = 0;
            while t < end {
                fill(&store, 2, t, t + 6 * HOUR).await;
                t += 6 * HOUR;
                store.persist(t).expect("persist");
            }
            sizes.push(store.stats().2);
            assert_complete(&store, 2, 0, end);
            if days == 4 {
                // Whole days were compacted: three day blocks and the last day's 2 h ones.
                let names: Vec<(i64, i64)> = store.blocks_read().iter().map(|b| b.meta().range).collect();
                assert_eq!(names.iter().filter(|r| r.1 - r.0 == COMPACTED_RANGE_MS).count(), 3, "{names:?}");
            }
        }
        assert!(sizes[1] <= sizes[0] * 11 / 10, "head bytes: one day {}, four days {}", sizes[0], sizes[1]);
    }

    #[tokio::test]
    async fn a_crash_around_a_block_write_loses_nothing_and_counts_nothing_twice() {
        for checkpoint_after in [false, true] {
            let dir = tempfile::tempdir().expect("tmp");
            let end = 10 * HOUR;
            {
                let (store, _) = Store::open(dir.path()).expect("open");
                fill(&store, 2, 0, end).await;
                store.checkpoint().await.expect("checkpoint with every chunk in it");
                assert!(store.persist(end).expect("persist").blocks_written > 0);
                if checkpoint_after {
                    store.checkpoint().await.expect("checkpoint without the persisted chunks");
                }
                // Dropped here without more: kill -9 as far as the disk is concerned.
            }
            let (store, report) = Store::open(dir.path()).expect("reopen");
            assert!(report.blocks > 0);
            assert_complete(&store, 2, 0, end);
            // What the replay brought back that is on disk was trimmed: nothing to write again.
            assert_eq!(store.persist(end).expect("persist").blocks_written, 0, "after: {checkpoint_after}");
            let on_disk = store.block_stats().samples;
            fill(&store, 2, end, end + 4 * HOUR).await;
            store.persist(end + 4 * HOUR).expect("persist");
            assert!(store.block_stats().samples > on_disk);
            assert_complete(&store, 2, 0, end + 4 * HOUR);
        }
    }

    #[tokio::test]
    async fn series_held_only_by_blocks_come_back_if_the_head_lost_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let end = 8 * HOUR;
        {
            let (store, _) = Store::open(dir.path()).expect("open");
            fill(&store, 3, 0, end).await;
            store.persist(end).expect("persist");
        }
        // The WAL and checkpoints gone (a damaged disk, a hand-cleaned folder): the
        // blocks still say which series they hold.
        std::fs::remove_dir_all(dir.path().join("wal")).expect("rm wal");
        let (store, report) = Store::open(dir.path()).expect("reopen");
        assert_eq!(report.series, 3);
        assert_eq!(every(&store, 0, 4 * HOUR).len(), 3);
        assert!(store.ingest(vec![series_i(1, HOUR, 1.0)], None).await.expect("ingest").samples_too_old == 1);
        store.ingest(vec![series_i(9, end, 1.0)], None).await.expect("a new series");
        drop(store);
        // The series brought back were logged: a second restart knows them too, and the
        // new series did not take one of their references.
        let (store, report) = Store::open(dir.path()).expect("reopen");
        assert_eq!(report.series, 4);
        let labels = store.series_labels(&[Matcher::Eq("__name__".into(), "m".into())], 0, i64::MAX);
        assert_eq!(labels.len(), 4);
        // On disk: the chunks that ended before 4 h (the newest was just before 8 h).
        let old = every(&store, 0, 4 * HOUR);
        assert_eq!(old.len(), 3);
        assert!(old.iter().all(|s| s.samples.len() == (4 * HOUR / 15_000) as usize), "{:?}", old[0].samples.len());
    }

    #[tokio::test]
    async fn retention_deletes_whole_blocks_and_then_the_series_only_they_held() {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = Store::open(dir.path()).expect("open");
        // Series 0..2 for 30 h; series 2 stops after 6 h.
        fill(&store, 2, 0, 30 * HOUR).await;
        let gone: Vec<IncomingSeries> = (0..6 * HOUR)
            .step_by(15 * 60_000)
            .map(|t| (vec![("__name__".into(), "m".into()), ("i".into(), "2".into())], vec![(t, 1.0)]))
            .collect();
        store.ingest(gone, None).await.expect("ingest");
        store.persist(30 * HOUR).expect("persist");
        // Day 0 was compacted into one block.
        assert!(store.blocks_read().iter().any(|b| b.meta().range == (0, COMPACTED_RANGE_MS)));
        assert_eq!(store.label_values("i"), ["0", "1", "2"], "series 2 lives on in a block");
        let freed = store.apply_retention(25 * HOUR, 0);
        assert!(freed > 0);
        assert!(store.blocks_read().iter().all(|b| b.meta().max_t >= 25 * HOUR), "whole expired blocks are gone");
        assert_eq!(store.label_values("i"), ["0", "1"], "and the series only they held");
        assert_eq!(std::fs::read_dir(dir.path().join("blocks")).expect("ls").count(), store.block_stats().blocks);
        // A size limit takes the oldest blocks first.
        let (_, _, head) = store.stats();
        store.apply_retention(0, head + 1);
        assert_eq!(store.block_stats().blocks, 0);
        assert!(!every(&store, 28 * HOUR, 30 * HOUR).is_empty(), "the newest data stays");
    }
}
