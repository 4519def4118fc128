//! The write-ahead log: every series creation and sample is written and fsynced here
//! before it is acknowledged, and replayed into the head on start.
//!
//! Segment files (`<id>.wal`, 32 MiB) hold records `len (u32) | crc32 (u32) | payload`,
//! payload = `type (u8) | body`. One writer thread does group commit: it takes every
//! batch waiting, writes them, calls `fdatasync` once and then wakes all their senders, so
//! concurrent ingests share an fsync. A torn or damaged tail is truncated at open and
//! reported, never a refusal to start.
//!
//! A full disk (`ENOSPC`, `EDQUOT`) fails the batches being written, the segment is cut
//! back to where they began (so no half record stays ahead of later ones) and the next
//! batch is taken: the collector goes on once there is space again. Any other write or
//! fsync error stops the writer for good (after a failed fsync the kernel's idea of the
//! file is unknown); a restart replays what was durable.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

const SEGMENT_BYTES: u64 = 32 << 20;
const MAX_RECORD: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O in {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the WAL writer has stopped")]
    Closed,
    /// The disk is full: nothing of the batch is in the WAL; the next may be.
    #[error("WAL in {path}: the disk is full ({message}); nothing of this write was kept")]
    NoSpace { path: PathBuf, message: String },
}

/// Why the writer could not make a batch durable.
#[derive(Debug, Clone)]
pub struct Failure {
    message: String,
    /// The disk was full: the batch was taken back out, the writer goes on.
    no_space: bool,
}

impl Failure {
    fn of(e: &std::io::Error) -> Failure {
        Failure { message: e.to_string(), no_space: crate::disk::is_no_space(e) }
    }

    /// The error a writer of the batch sees.
    pub fn into_error(self, dir: &Path) -> WalError {
        if self.no_space {
            WalError::NoSpace { path: dir.to_path_buf(), message: self.message }
        } else {
            WalError::Io { path: dir.to_path_buf(), source: std::io::Error::other(self.message) }
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.to_path_buf(), source }
}

/// A logical WAL entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A new series and the reference it got.
    Series { r: u32, labels: Vec<(String, String)> },
    /// Samples of existing series: (ref, t, v).
    Samples(Vec<(u32, i64, f64)>),
    /// A batch id already stored (`X-Hale-Batch`), so a resend after a restart is still
    /// recognised.
    BatchSeen { source: String, seq: u64 },
    /// A whole encoded chunk of a series (checkpoints only).
    Chunk { r: u32, count: u16, bytes: Vec<u8> },
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Record::Series { r, labels } => {
                out.push(1);
                out.extend_from_slice(&r.to_le_bytes());
                out.extend_from_slice(&(labels.len() as u32).to_le_bytes());
                for (n, v) in labels {
                    put_str(&mut out, n);
                    put_str(&mut out, v);
                }
            }
            Record::Samples(samples) => {
                out.push(2);
                out.extend_from_slice(&(samples.len() as u32).to_le_bytes());
                for (r, t, v) in samples {
                    out.extend_from_slice(&r.to_le_bytes());
                    out.extend_from_slice(&t.to_le_bytes());
                    out.extend_from_slice(&v.to_bits().to_le_bytes());
                }
            }
            Record::BatchSeen { source, seq } => {
                out.push(3);
                put_str(&mut out, source);
                out.extend_from_slice(&seq.to_le_bytes());
            }
            Record::Chunk { r, count, bytes } => {
                out.push(4);
                out.extend_from_slice(&r.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
                out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(bytes);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let mut c = Cursor(bytes);
        let record = match c.u8()? {
            1 => {
                let r = c.u32()?;
                let n = c.u32()? as usize;
                let mut labels = Vec::with_capacity(n.min(256));
                for _ in 0..n {
                    labels.push((c.string()?, c.string()?));
                }
                Record::Series { r, labels }
            }
            2 => {
                let n = c.u32()? as usize;
                let mut samples = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    samples.push((c.u32()?, c.u64()? as i64, f64::from_bits(c.u64()?)));
                }
                Record::Samples(samples)
            }
            3 => Record::BatchSeen { source: c.string()?, seq: c.u64()? },
            4 => {
                let r = c.u32()?;
                let count = c.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))?;
                let n = c.u32()? as usize;
                Record::Chunk { r, count, bytes: c.take(n)?.to_vec() }
            }
            _ => return None,
        };
        c.0.is_empty().then_some(record)
    }
}

/// `len (u32) | crc32 (u32) | payload`: a WAL record, and a trace store record too.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:08}.wal"))
}

/// Segment ids in `dir`, ascending.
pub fn segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    numbered_files(dir, "wal").map_err(io(dir))
}

/// The ids of the numbered files (`00000042.<extension>`) in `dir`, ascending: the WAL's
/// segments, and the log store's (`jsonl`), which rotate the same way.
pub(crate) fn numbered_files(dir: &Path, extension: &str) -> std::io::Result<Vec<u64>> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(extension)?.strip_suffix('.')?.parse().ok())
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub segments: usize,
    pub records: u64,
    /// Bytes cut from a torn or damaged tail.
    pub truncated_bytes: u64,
}

/// Reads the records of one file until the first bad one; returns where the good part
/// ends and the file's length.
pub fn read_file(path: &Path, mut apply: impl FnMut(Record)) -> Result<(usize, usize, u64), WalError> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io(path))?;
    let mut pos = 0usize;
    let mut records = 0u64;
    loop {
        if pos + 8 > bytes.len() {
            break;
        }
        let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]);
        let crc = u32::from_le_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]);
        let end = pos + 8 + len as usize;
        if len > MAX_RECORD || end > bytes.len() || crc32fast::hash(&bytes[pos + 8..end]) != crc {
            break;
        }
        match Record::decode(&bytes[pos + 8..end]) {
            Some(record) => apply(record),
            None => break,
        }
        records += 1;
        pos = end;
    }
    Ok((pos, bytes.len(), records))
}

/// Writes `records` to `path` durably and atomically (temp file, fsync, rename, fsync dir).
pub fn write_file(path: &Path, records: impl Iterator<Item = Record>) -> Result<(), WalError> {
    hale_fs::write_durable_with(path, |f| {
        for r in records {
            f.write_all(&frame(&r.encode()))?;
        }
        Ok(())
    })
    .map_err(io(path))
}

/// Reads every record of the segments with id ≥ `from`, in order, calling `apply`. A bad
/// record ends its segment: the newest segment is truncated there (a torn tail); an older
/// one's remainder is skipped and reported.
pub fn replay(dir: &Path, from: u64, mut apply: impl FnMut(Record)) -> Result<ReplayReport, WalError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ids: Vec<u64> = segments(dir)?.into_iter().filter(|id| *id >= from).collect();
    let mut report = ReplayReport { segments: ids.len(), ..Default::default() };
    for (i, id) in ids.iter().enumerate() {
        let path = segment_path(dir, *id);
        let (good_end, len, records) = read_file(&path, &mut apply)?;
        report.records += records;
        if good_end < len {
            let lost = (len - good_end) as u64;
            report.truncated_bytes += lost;
            if i + 1 == ids.len() {
                let f = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
                f.set_len(good_end as u64).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
                tracing::warn!(segment = id, bytes = lost, "WAL: truncated a torn or damaged tail");
            } else {
                tracing::error!(
                    segment = id,
                    bytes = lost,
                    "WAL: damaged record in an older segment; its remainder is skipped"
                );
            }
        }
    }
    Ok(report)
}

struct Job {
    bytes: Vec<u8>,
    /// The segment the job's bytes went to (for a cut: the segment it closed).
    done: oneshot::Sender<Result<u64, Failure>>,
}

/// Handle to the WAL writer thread.
pub struct Wal {
    tx: mpsc::Sender<Job>,
    dir: PathBuf,
    stats: std::sync::Arc<WalStats>,
}

/// Counters for self-telemetry.
#[derive(Default)]
pub struct WalStats {
    pub bytes_written: std::sync::atomic::AtomicU64,
    pub fsyncs: std::sync::atomic::AtomicU64,
    /// Sum of fsync durations, in microseconds.
    pub fsync_micros: std::sync::atomic::AtomicU64,
    pub segment: std::sync::atomic::AtomicU64,
}

impl Wal {
    /// Starts the writer, appending to a new segment after the newest one.
    pub fn open(dir: &Path) -> Result<Self, WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let next = segments(dir)?.last().map_or(1, |id| id + 1);
        let path = segment_path(dir, next);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = std::sync::Arc::new(WalStats::default());
        stats.segment.store(next, std::sync::atomic::Ordering::Relaxed);
        let thread_stats = stats.clone();
        let thread_dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer(rx, thread_dir, next, file, thread_stats))
            .map_err(io(dir))?;
        Ok(Wal { tx, dir: dir.to_path_buf(), stats })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> &WalStats {
        &self.stats
    }

    /// Writes `records` durably; resolves once they are fsynced.
    pub async fn write(&self, records: &[Record]) -> Result<(), WalError> {
        let done = self.send(records)?;
        done.await.map_err(|_| WalError::Closed)?.map(|_| ()).map_err(|e| e.into_error(&self.dir))
    }

    /// Queues `records` for the writer; the order of `send` calls is the order on disk.
    pub fn send(&self, records: &[Record]) -> Result<oneshot::Receiver<Result<u64, Failure>>, WalError> {
        let mut bytes = Vec::new();
        for r in records {
            bytes.extend_from_slice(&frame(&r.encode()));
        }
        let (done, rx) = oneshot::channel();
        self.tx.send(Job { bytes, done }).map_err(|_| WalError::Closed)?;
        Ok(rx)
    }

    /// Starts a new segment and returns the id of the last closed one: everything up to
    /// it can be folded into a checkpoint.
    pub async fn cut(&self) -> Result<u64, WalError> {
        let (done, rx) = oneshot::channel();
        // The cut marker: the writer rolls over before acknowledging, and answers with the
        // segment it closed.
        self.tx.send(Job { bytes: CUT.to_vec(), done }).map_err(|_| WalError::Closed)?;
        rx.await.map_err(|_| WalError::Closed)?.map_err(|e| e.into_error(&self.dir))
    }
}

/// A job body no real record can have (a zero-length frame is never written).
const CUT: &[u8] = b"\0cut";

fn writer(rx: mpsc::Receiver<Job>, dir: PathBuf, mut id: u64, mut file: File, stats: std::sync::Arc<WalStats>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    // After a failed fsync (or a write that failed for another reason than space) nothing
    // more is written: bytes after a hole would be acknowledged and then lost at replay.
    // Every later write is refused with the cause.
    let mut failed: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        if let Some(cause) = &failed {
            let stopped = Failure { message: format!("the WAL stopped after an I/O error: {cause}"), no_space: false };
            for job in jobs {
                let _ = job.done.send(Err(stopped.clone()));
            }
            continue;
        }
        let began = size;
        let mut result: Result<(), Failure> = Ok(());
        let mut cut = false;
        for job in &jobs {
            if job.bytes == CUT {
                cut = true;
                continue;
            }
            if let Err(e) = file.write_all(&job.bytes) {
                result = Err(Failure::of(&e));
                break;
            }
            size += job.bytes.len() as u64;
            stats.bytes_written.fetch_add(job.bytes.len() as u64, Relaxed);
        }
        let started = Instant::now();
        match &result {
            Ok(()) => {
                if let Err(e) = file.sync_data() {
                    result = Err(Failure::of(&e));
                    failed = Some(e.to_string());
                }
            }
            // Out of space: take the batch back out, so the segment ends on a whole
            // record again, and go on with the next one.
            Err(f) if f.no_space => match file.set_len(began).and_then(|()| file.sync_data()) {
                Ok(()) => {
                    size = began;
                    tracing::warn!(error = %f.message, "the disk is full: a WAL write was refused and taken back out");
                }
                Err(e) => failed = Some(format!("{}; cutting the segment back failed too: {e}", f.message)),
            },
            Err(f) => failed = Some(f.message.clone()),
        }
        stats.fsyncs.fetch_add(1, Relaxed);
        stats.fsync_micros.fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        let written_to = id;
        let mut cut_result = result.clone();
        if (cut || size >= SEGMENT_BYTES) && result.is_ok() {
            let path = segment_path(&dir, id + 1);
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|f| File::open(&dir)?.sync_all().map(|()| f))
            {
                Ok(f) => {
                    file = f;
                    id += 1;
                    size = 0;
                    stats.segment.store(id, Relaxed);
                }
                // What was written is durable; the segment grows on and the next cut tries
                // again (a cut's caller is told, so it checkpoints nothing yet).
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a new WAL segment; writing on");
                    cut_result = Err(Failure::of(&e));
                }
            }
        }
        if let Some(cause) = &failed {
            tracing::error!(error = %cause, "WAL write failed; refusing further writes");
        }
        for job in jobs {
            let answer = if job.bytes == CUT { &cut_result } else { &result };
            let _ = job.done.send(answer.clone().map(|()| written_to));
        }
    }
}

/// Deletes segments with id ≤ `upto` (folded into a checkpoint).
pub fn remove_upto(dir: &Path, upto: u64) -> Result<(), WalError> {
    for id in segments(dir)?.into_iter().filter(|id| *id <= upto) {
        let path = segment_path(dir, id);
        std::fs::remove_file(&path).map_err(io(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(r: u32) -> Record {
        Record::Series { r, labels: vec![("__name__".into(), format!("m{r}")), ("job".into(), "x".into())] }
    }

    #[test]
    fn records_encode_and_decode() {
        for r in [
            series(3),
            Record::Samples(vec![(1, 5, 1.5), (2, -5, f64::NAN)]),
            Record::BatchSeen { source: "n1".into(), seq: 9 },
        ] {
            let back = Record::decode(&r.encode()).expect("decode");
            match (&r, &back) {
                (Record::Samples(a), Record::Samples(b)) => {
                    assert_eq!(
                        a.iter().map(|s| (s.0, s.1, s.2.to_bits())).collect::<Vec<_>>(),
                        b.iter().map(|s| (s.0, s.1, s.2.to_bits())).collect::<Vec<_>>()
                    )
                }
                _ => assert_eq!(r, back),
            }
        }
        assert!(Record::decode(&[9, 1, 2]).is_none());
        assert!(Record::decode(&[1, 0]).is_none());
    }

    #[test]
    fn numbered_files_are_those_of_one_extension_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        for name in ["00000010.wal", "00000002.wal", "00000003.jsonl", "notes.wal", "00000004.wal.tmp", "00000005wal"] {
            std::fs::write(dir.path().join(name), b"").expect("write");
        }
        assert_eq!(numbered_files(dir.path(), "wal").expect("wal"), [2, 10]);
        assert_eq!(numbered_files(dir.path(), "jsonl").expect("jsonl"), [3]);
        assert!(matches!(segments(&dir.path().join("gone")), Err(WalError::Io { .. })));
    }

    #[tokio::test]
    async fn written_records_replay_in_order_even_after_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let wal = Wal::open(dir.path()).expect("open");
            for r in 0..50 {
                wal.write(&[series(r), Record::Samples(vec![(r, 1000, f64::from(r))])]).await.expect("write");
            }
            assert!(wal.stats().fsyncs.load(std::sync::atomic::Ordering::Relaxed) > 0);
        }
        // Tear the tail: half of a last record.
        let last = segments(dir.path()).expect("segments").into_iter().last().expect("one");
        let path = segment_path(dir.path(), last);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&frame(&series(99).encode())[..10]).expect("tear");
        let mut seen = Vec::new();
        let report = replay(dir.path(), 0, |r| seen.push(r)).expect("replay");
        assert_eq!(report.records, 100);
        assert_eq!(report.truncated_bytes, 10);
        assert_eq!(seen[0], series(0));
        assert_eq!(seen[98], series(49));
        // After truncation the log takes new writes and replays cleanly.
        let wal = Wal::open(dir.path()).expect("reopen");
        wal.write(&[series(50)]).await.expect("write");
        let again = replay(dir.path(), 0, |_| {}).expect("replay");
        assert_eq!((again.records, again.truncated_bytes), (101, 0));
    }

    #[tokio::test]
    async fn concurrent_writers_share_fsyncs_and_cut_rolls_the_segment() {
        let dir = tempfile::tempdir().expect("tmp");
        let wal = std::sync::Arc::new(Wal::open(dir.path()).expect("open"));
        let tasks: Vec<_> = (0..20u32)
            .map(|i| {
                let wal = wal.clone();
                tokio::spawn(async move { wal.write(&[series(i)]).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("write");
        }
        let closed = wal.cut().await.expect("cut");
        assert_eq!(closed, 1);
        wal.write(&[series(100)]).await.expect("write");
        let mut n = 0;
        replay(dir.path(), 2, |_| n += 1).expect("replay");
        assert_eq!(n, 1, "only the record after the cut is in segment 2");
        remove_upto(dir.path(), closed).expect("remove");
        assert_eq!(segments(dir.path()).expect("segments"), [2]);
    }
}
