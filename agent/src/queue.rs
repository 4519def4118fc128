//! A durable, bounded, multi-reader queue of batches on disk.
//!
//! Segment files (`<id>.seg`, the id being the sequence number of the segment's first
//! record, so sequence numbers survive even an emptied segment) hold records framed as
//! `MAGIC | len | crc32 | payload`,
//! payload = `seq (u64) | created_ms (i64) | body`. Every push is fsynced before it
//! returns. Each reader (one per destination) has a cursor file, replaced atomically on
//! every acknowledgement and fsynced at least every [`CURSOR_SYNC`] and always before a
//! segment it passed is deleted; a segment is deleted once every reader has passed it. A
//! power loss can so set a cursor back by a few seconds, never past data still on disk:
//! those batches are sent again, under their old batch numbers, and the collector
//! recognises them as stored. Nothing is
//! ever read whole into memory: readers seek to their cursor and read one record.
//!
//! Damage is survived, not refused: a torn tail of the newest segment (a crash mid-write)
//! is truncated at open; a record whose checksum or framing is wrong is skipped by
//! scanning forward to the next `MAGIC`, counted and logged.
//!
//! Bounded by `max_bytes` (256 MiB by default, in 8 MiB segments). What a full queue does
//! is the queue's choice: the metrics queue drops its oldest segment (recent data is worth
//! more; counted as dropped bytes), the logs queue refuses the push, so the tailer waits
//! and the lines wait in their files, which loses nothing while the files are kept.

use hale_core::time::now_ms;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{QueueConfig, WhenFull};

const MAGIC: u32 = 0x454C_4148; // "HALE" little-endian
const HEADER: u64 = 12;
const PAYLOAD_PREFIX: usize = 16;

fn max_record(config: &QueueConfig) -> u64 {
    config.segment_bytes.max(1 << 20) * 4
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue I/O in {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the queue is full ({max_bytes} bytes) and its policy is to block")]
    Full { max_bytes: u64 },
    #[error("a batch of {bytes} bytes is larger than the queue's record limit of {max_bytes}")]
    TooLarge { bytes: usize, max_bytes: u64 },
    #[error("unknown queue reader {0:?}")]
    UnknownReader(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::Io { path: path.to_path_buf(), source }
}

/// Where a reader stands: the next record starts at `offset` in segment `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
}

/// One queued batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub created_ms: i64,
    pub body: Vec<u8>,
    /// The cursor just past this record: acknowledge it once the batch is delivered.
    pub next: Cursor,
}

/// What `open` found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub segments: usize,
    pub truncated_bytes: u64,
}

struct Inner {
    /// Segment id → size in bytes.
    /// Segment id → bytes of complete, fsynced records (what readers may read).
    segments: BTreeMap<u64, u64>,
    active: std::sync::Arc<File>,
    active_id: u64,
    next_seq: u64,
    readers: HashMap<String, Cursor>,
    /// Newest record's seq and created_ms per segment start, for the oldest-unsent age.
    last_pushed_ms: i64,
    /// When each reader's cursor was last fsynced.
    cursor_synced: HashMap<String, std::time::Instant>,
}

/// A reader's cursor is fsynced at least this often (and before any segment it passed
/// is deleted); in between it is replaced without waiting for the disk.
pub const CURSOR_SYNC: std::time::Duration = std::time::Duration::from_secs(5);

/// Records written to the active segment but not yet fsynced: invisible to readers.
#[derive(Default)]
struct Unsynced {
    bytes: u64,
    records: u64,
    last_created_ms: i64,
}

pub struct DiskQueue {
    dir: PathBuf,
    config: QueueConfig,
    inner: Mutex<Inner>,
    /// Held by a push from its write to its fsync: pushes are one at a time, readers and
    /// acknowledgements (which take only `inner`) are not held up by the disk.
    writer: Mutex<Unsynced>,
    pub corrupt_records: AtomicU64,
    pub dropped_bytes: AtomicU64,
    notify: tokio::sync::Notify,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn cursor_path(dir: &Path, reader: &str) -> PathBuf {
    dir.join(format!("cursor-{reader}"))
}

/// Outcome of reading at one offset of a segment.
enum Read1 {
    Record {
        seq: u64,
        created_ms: i64,
        body: Vec<u8>,
        end: u64,
    },
    /// Framing or checksum wrong at this offset.
    Corrupt,
    /// The segment ends here (possibly in the middle of a record).
    End,
}

fn read_at(file: &mut File, offset: u64, file_len: u64, max_record: u64) -> std::io::Result<Read1> {
    if offset.saturating_add(HEADER) > file_len {
        // Fewer bytes than a header: the end, or a torn header at the very end.
        return Ok(if offset < file_len { Read1::Corrupt } else { Read1::End });
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut header = [0u8; HEADER as usize];
    file.read_exact(&mut header)?;
    let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let len = u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]]));
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if magic != MAGIC || len < PAYLOAD_PREFIX as u64 || len > max_record {
        return Ok(Read1::Corrupt);
    }
    if offset + HEADER + len > file_len {
        // Lengths of segments are those of complete, fsynced writes: a record that runs
        // past the end is a damaged length field or a torn write, never one in progress.
        return Ok(Read1::Corrupt);
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(Read1::Corrupt);
    }
    let seq = u64::from_le_bytes(payload[0..8].try_into().unwrap_or([0; 8]));
    let created_ms = i64::from_le_bytes(payload[8..16].try_into().unwrap_or([0; 8]));
    payload.drain(..PAYLOAD_PREFIX);
    Ok(Read1::Record { seq, created_ms, body: payload, end: offset + HEADER + len })
}

/// Offset of the next `MAGIC` after `from`, or the file length.
fn resync(file: &mut File, from: u64, file_len: u64) -> std::io::Result<u64> {
    let mut pos = from + 1;
    let mut buf = vec![0u8; 64 * 1024];
    let needle = MAGIC.to_le_bytes();
    while pos + 4 <= file_len {
        file.seek(SeekFrom::Start(pos))?;
        let n = file.read(&mut buf)?;
        if n < 4 {
            break;
        }
        if let Some(i) = buf[..n].windows(4).position(|w| w == needle) {
            return Ok(pos + i as u64);
        }
        pos += (n - 3) as u64;
    }
    Ok(file_len)
}

impl DiskQueue {
    /// Opens (or creates) the queue in `dir` for the named readers. A reader without a
    /// cursor starts at the oldest record.
    pub fn open(dir: &Path, config: QueueConfig, readers: &[&str]) -> Result<(Self, OpenReport), QueueError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".seg").and_then(|n| n.parse::<u64>().ok()) {
                let len = entry.metadata().map_err(io(&entry.path()))?.len();
                segments.insert(id, len);
            }
        }
        let mut report = OpenReport { segments: segments.len(), ..Default::default() };
        let max_record = max_record(&config);
        // Find the last good record of the newest segment; cut a torn tail.
        let mut next_seq = 1;
        let mut last_pushed_ms = 0;
        let active_id = match segments.keys().next_back().copied() {
            None => 1,
            Some(id) => {
                // A segment is named after its first sequence number.
                next_seq = id;
                let path = segment_path(dir, id);
                let mut f = OpenOptions::new().read(true).write(true).open(&path).map_err(io(&path))?;
                let len = segments[&id];
                let mut offset = 0;
                let mut good_end = 0;
                loop {
                    match read_at(&mut f, offset, len, max_record).map_err(io(&path))? {
                        Read1::Record { seq, created_ms, end, .. } => {
                            next_seq = seq + 1;
                            last_pushed_ms = created_ms;
                            offset = end;
                            good_end = end;
                        }
                        Read1::Corrupt => offset = resync(&mut f, offset, len).map_err(io(&path))?,
                        Read1::End => break,
                    }
                }
                if good_end < len {
                    // No good record follows: a torn or damaged tail, cut so appends
                    // start on a clean boundary.
                    f.set_len(good_end).map_err(io(&path))?;
                    f.sync_all().map_err(io(&path))?;
                    report.truncated_bytes = len - good_end;
                    segments.insert(id, good_end);
                    tracing::warn!(segment = id, bytes = len - good_end, "queue: truncated a torn tail");
                }
                id
            }
        };
        let active_path = segment_path(dir, active_id);
        let active = std::sync::Arc::new(
            OpenOptions::new().create(true).append(true).open(&active_path).map_err(io(&active_path))?,
        );
        segments.entry(active_id).or_insert(0);
        let oldest = *segments.keys().next().unwrap_or(&active_id);
        let mut cursors = HashMap::new();
        for reader in readers {
            let path = cursor_path(dir, reader);
            let cursor = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| {
                    let mut parts = t.split_whitespace();
                    Some(Cursor { segment: parts.next()?.parse().ok()?, offset: parts.next()?.parse().ok()? })
                })
                .filter(|c| c.segment >= oldest && c.segment <= active_id)
                // An offset beyond its segment (a damaged cursor file) means "that segment is done".
                .map(|c| match segments.get(&c.segment) {
                    Some(len) if c.offset > *len => Cursor { segment: c.segment, offset: *len },
                    _ => c,
                })
                .unwrap_or(Cursor { segment: oldest, offset: 0 });
            cursors.insert(reader.to_string(), cursor);
        }
        let queue = DiskQueue {
            dir: dir.to_path_buf(),
            config,
            inner: Mutex::new(Inner {
                segments,
                active,
                active_id,
                next_seq,
                readers: cursors,
                last_pushed_ms,
                cursor_synced: HashMap::new(),
            }),
            writer: Mutex::new(Unsynced::default()),
            corrupt_records: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            notify: tokio::sync::Notify::new(),
        };
        Ok((queue, report))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Largest record payload accepted (and believed when reading a length field).
    fn max_record(&self) -> u64 {
        max_record(&self.config)
    }

    /// Appends a batch durably (fsynced) and returns its sequence number.
    pub fn push(&self, body: &[u8]) -> Result<u64, QueueError> {
        let seq = self.append(body)?;
        self.sync()?;
        Ok(seq)
    }

    /// Writes a batch without waiting for the disk and returns its sequence number. It is
    /// not delivered, nor counted as queued, until a [`sync`](Self::sync) makes it durable;
    /// one sync makes every batch appended before it durable (group commit). If the sync
    /// fails, those batches are gone and must be appended again.
    pub fn append(&self, body: &[u8]) -> Result<u64, QueueError> {
        if body.len() as u64 + PAYLOAD_PREFIX as u64 > self.max_record() {
            return Err(QueueError::TooLarge { bytes: body.len(), max_bytes: self.max_record() });
        }
        let mut unsynced = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let record_len = HEADER + (PAYLOAD_PREFIX + body.len()) as u64;
        let mut inner = self.lock();
        let total = |i: &Inner| i.segments.values().sum::<u64>();
        while total(&inner) + unsynced.bytes + record_len > self.config.max_bytes {
            match self.config.when_full {
                WhenFull::Block => return Err(QueueError::Full { max_bytes: self.config.max_bytes }),
                WhenFull::DropOldest => {
                    let Some((&oldest, &size)) = inner.segments.iter().next().filter(|(id, _)| **id != inner.active_id)
                    else {
                        break; // Only the active segment is left: it may grow past the bound once.
                    };
                    let path = segment_path(&self.dir, oldest);
                    std::fs::remove_file(&path).map_err(io(&path))?;
                    inner.segments.remove(&oldest);
                    let next = *inner.segments.keys().next().unwrap_or(&inner.active_id);
                    for cursor in inner.readers.values_mut() {
                        if cursor.segment <= oldest {
                            *cursor = Cursor { segment: next, offset: 0 };
                        }
                    }
                    self.dropped_bytes.fetch_add(size, Ordering::Relaxed);
                    tracing::warn!(segment = oldest, bytes = size, "queue full: dropped the oldest segment");
                }
            }
        }
        if inner.segments.get(&inner.active_id).copied().unwrap_or(0) + unsynced.bytes >= self.config.segment_bytes {
            // What the full segment still waits for is made durable first.
            drop(inner);
            self.sync_locked(&mut unsynced)?;
            inner = self.lock();
            // Named after the first sequence it will hold; the directory entry is made
            // durable before any record relies on it.
            let id = inner.next_seq.max(inner.active_id + 1);
            let path = segment_path(&self.dir, id);
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
            File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
            inner.active = std::sync::Arc::new(file);
            inner.active_id = id;
            inner.segments.insert(id, 0);
        }
        let seq = inner.next_seq + unsynced.records;
        let created_ms = now_ms();
        let (file, id) = (inner.active.clone(), inner.active_id);
        let durable = inner.segments.get(&id).copied().unwrap_or(0);
        drop(inner);
        let mut payload = Vec::with_capacity(PAYLOAD_PREFIX + body.len());
        payload.extend_from_slice(&seq.to_le_bytes());
        payload.extend_from_slice(&created_ms.to_le_bytes());
        payload.extend_from_slice(body);
        let mut frame = Vec::with_capacity(HEADER as usize + payload.len());
        frame.extend_from_slice(&MAGIC.to_le_bytes());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        if let Err(e) = (&*file).write_all(&frame) {
            // Leave no partial frame behind (a full disk, say): cut back to the last record.
            let _ = file.set_len(durable + unsynced.bytes);
            return Err(io(&segment_path(&self.dir, id))(e));
        }
        unsynced.bytes += frame.len() as u64;
        unsynced.records += 1;
        unsynced.last_created_ms = created_ms;
        Ok(seq)
    }

    /// Makes every appended batch durable (one fsync) and hands them to the readers.
    pub fn sync(&self) -> Result<(), QueueError> {
        let mut unsynced = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.sync_locked(&mut unsynced)
    }

    fn sync_locked(&self, unsynced: &mut Unsynced) -> Result<(), QueueError> {
        if unsynced.records == 0 {
            return Ok(());
        }
        let (file, id) = {
            let inner = self.lock();
            (inner.active.clone(), inner.active_id)
        };
        if let Err(e) = file.sync_data() {
            // What was not made durable is taken back, so no reader ever sees it.
            let durable = self.lock().segments.get(&id).copied().unwrap_or(0);
            let _ = file.set_len(durable);
            *unsynced = Unsynced::default();
            return Err(io(&segment_path(&self.dir, id))(e));
        }
        let mut inner = self.lock();
        *inner.segments.entry(id).or_insert(0) += unsynced.bytes;
        inner.next_seq += unsynced.records;
        inner.last_pushed_ms = unsynced.last_created_ms;
        drop(inner);
        *unsynced = Unsynced::default();
        self.notify.notify_waiters();
        Ok(())
    }

    /// The next record for `reader`, skipping damaged ones; `None` when it has read all.
    pub fn peek(&self, reader: &str) -> Result<Option<Record>, QueueError> {
        let cursor = *self.lock().readers.get(reader).ok_or_else(|| QueueError::UnknownReader(reader.into()))?;
        self.read_from(cursor, Some(reader))
    }

    /// The first good record at or after `after`, without moving or counting anything
    /// (a shipper reading ahead of its acknowledged cursor).
    pub fn peek_after(&self, after: Cursor) -> Result<Option<Record>, QueueError> {
        self.read_from(after, None)
    }

    /// Sequence number and age of `reader`'s next record, without counting damage or
    /// moving anything (for telemetry, which must not race the delivery loop).
    pub fn next_for(&self, reader: &str) -> Result<Option<(u64, i64)>, QueueError> {
        let cursor = *self.lock().readers.get(reader).ok_or_else(|| QueueError::UnknownReader(reader.into()))?;
        Ok(self.read_from(cursor, None)?.map(|r| (r.seq, r.created_ms)))
    }

    /// Moves `reader` past a delivered record, durably, and deletes segments every reader
    /// has finished.
    pub fn ack(&self, reader: &str, next: Cursor) -> Result<(), QueueError> {
        let mut inner = self.lock();
        if !inner.readers.contains_key(reader) {
            return Err(QueueError::UnknownReader(reader.into()));
        }
        inner.readers.insert(reader.to_string(), next);
        let min_segment = inner.readers.values().map(|c| c.segment).min().unwrap_or(0);
        // The segment with the newest record stays too (the active one may be new and
        // empty): the log tailer recovers its positions from that record.
        let newest = inner.segments.iter().rev().find(|(_, len)| **len > 0).map(|(id, _)| *id);
        let finished: Vec<u64> = inner
            .segments
            .keys()
            .copied()
            .filter(|id| *id < min_segment && *id != inner.active_id && Some(*id) != newest)
            .collect();
        let path = cursor_path(&self.dir, reader);
        let text = format!("{} {}\n", next.segment, next.offset);
        let due = inner.cursor_synced.get(reader).is_none_or(|at| at.elapsed() >= CURSOR_SYNC);
        if due || !finished.is_empty() {
            hale_fs::write_durable(&path, text.as_bytes()).map_err(io(&path))?;
            inner.cursor_synced.insert(reader.to_string(), std::time::Instant::now());
        } else {
            hale_fs::write_atomic(&path, text.as_bytes()).map_err(io(&path))?;
        }
        for id in finished {
            let path = segment_path(&self.dir, id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
            inner.segments.remove(&id);
        }
        Ok(())
    }

    /// Waits until something is pushed (or a timeout passes; callers poll anyway).
    pub async fn wait_for_push(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().segments.values().sum()
    }

    /// The first good record at or after `cursor`. With a `reader`, damage skipped on
    /// the way is counted, logged and remembered in that reader's cursor (so it is
    /// counted once).
    fn read_from(&self, mut cursor: Cursor, reader: Option<&str>) -> Result<Option<Record>, QueueError> {
        let segments = self.lock().segments.clone();
        let max_record = self.max_record();
        loop {
            let Some((&id, &len)) = segments.range(cursor.segment..).next() else { return Ok(None) };
            if id != cursor.segment {
                cursor = Cursor { segment: id, offset: 0 };
            }
            let path = segment_path(&self.dir, id);
            let mut file = match File::open(&path) {
                Ok(f) => f,
                // Dropped by a full queue between the snapshot and now.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    cursor = Cursor { segment: id + 1, offset: 0 };
                    continue;
                }
                Err(e) => return Err(io(&path)(e)),
            };
            match read_at(&mut file, cursor.offset, len, max_record).map_err(io(&path))? {
                Read1::Record { seq, created_ms, body, end } => {
                    return Ok(Some(Record { seq, created_ms, body, next: Cursor { segment: id, offset: end } }));
                }
                Read1::Corrupt => {
                    let at = cursor.offset;
                    cursor.offset = resync(&mut file, at, len).map_err(io(&path))?;
                    if let Some(reader) = reader {
                        self.corrupt_records.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(segment = id, offset = at, "queue: skipped a corrupted record");
                        self.lock().readers.insert(reader.to_string(), cursor);
                    }
                }
                Read1::End => {
                    if segments.keys().next_back().is_none_or(|newest| id >= *newest) {
                        return Ok(None);
                    }
                    cursor = Cursor { segment: id + 1, offset: 0 };
                }
            }
        }
    }

    /// The newest record in the queue, delivered or not (the log tailer recovers its
    /// positions from it after a crash). Acknowledging never deletes the segment that
    /// holds it, so it is there whenever anything was ever pushed.
    pub fn last_record(&self) -> Result<Option<Record>, QueueError> {
        let ids: Vec<u64> = self.lock().segments.iter().rev().filter(|(_, len)| **len > 0).map(|(id, _)| *id).collect();
        for id in ids {
            let mut cursor = Cursor { segment: id, offset: 0 };
            let mut last = None;
            while let Some(record) = self.read_from(cursor, None)?
                && record.next.segment == id
            {
                cursor = record.next;
                last = Some(record);
            }
            if last.is_some() {
                return Ok(last);
            }
        }
        Ok(None)
    }

    /// Sequence number the next push will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    pub fn last_pushed_ms(&self) -> i64 {
        self.lock().last_pushed_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(segment: u64, max: u64, when_full: WhenFull) -> QueueConfig {
        QueueConfig { max_bytes: max, segment_bytes: segment, when_full }
    }

    /// Pushes `records` records of 100 bytes, lets `damage` change the first segment's
    /// bytes (given the size of one record on disk), and opens the queue again.
    fn reopen_damaged(dir: &Path, records: u8, damage: impl FnOnce(&mut Vec<u8>, usize)) -> (DiskQueue, OpenReport) {
        let cfg = config(1 << 20, 4 << 20, WhenFull::Block);
        {
            let (q, _) = DiskQueue::open(dir, cfg.clone(), &["r"]).expect("open");
            for i in 0..records {
                q.push(&[i; 100]).expect("push");
            }
        }
        let seg = segment_path(dir, 1);
        let mut bytes = std::fs::read(&seg).expect("read");
        damage(&mut bytes, (HEADER as usize) + PAYLOAD_PREFIX + 100);
        std::fs::write(&seg, &bytes).expect("write");
        DiskQueue::open(dir, cfg, &["r"]).expect("opens despite damage")
    }

    fn drain(q: &DiskQueue, reader: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(r) = q.peek(reader).expect("peek") {
            out.push(r.body.clone());
            q.ack(reader, r.next).expect("ack");
        }
        out
    }

    #[test]
    fn records_survive_reopen_and_each_reader_sees_all() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config(4096, 1 << 20, WhenFull::Block);
        {
            let (q, _) = DiskQueue::open(dir.path(), cfg.clone(), &["a", "b"]).expect("open");
            for i in 0..100u32 {
                assert_eq!(q.push(&i.to_le_bytes()).expect("push"), u64::from(i) + 1);
            }
            assert_eq!(drain(&q, "a").len(), 100);
        }
        let (q, _) = DiskQueue::open(dir.path(), cfg, &["a", "b"]).expect("reopen");
        assert_eq!(q.peek("a").expect("peek"), None, "a's cursor survived");
        let b = drain(&q, "b");
        assert_eq!(b.len(), 100);
        assert_eq!(b[42], 42u32.to_le_bytes());
        assert_eq!(q.push(b"next").expect("push"), 101, "sequence continues");
        let segments = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg")))
            .count();
        assert!(segments <= 2, "finished segments are deleted ({segments} left)");
    }

    #[test]
    fn torn_tail_is_truncated_and_corrupt_records_are_skipped() {
        let dir = tempfile::tempdir().expect("tmp");
        let (q, report) = reopen_damaged(dir.path(), 10, |bytes, record| {
            bytes[3 * record + 40] ^= 0xff; // damage the payload of record 4
            bytes.extend_from_slice(&MAGIC.to_le_bytes()); // and leave a torn fifth of a header
        });
        assert_eq!(report.truncated_bytes, 4);
        let got = drain(&q, "r");
        assert_eq!(got.len(), 9);
        assert!(!got.contains(&vec![3u8; 100]));
        assert_eq!(q.corrupt_records.load(Ordering::Relaxed), 1);
        assert_eq!(q.push(b"after").expect("push"), 11);
    }

    #[test]
    fn full_queue_blocks_or_drops_the_oldest() {
        let dir = tempfile::tempdir().expect("tmp");
        let (q, _) = DiskQueue::open(&dir.path().join("b"), config(4096, 8192, WhenFull::Block), &["r"]).expect("open");
        let mut pushed = 0;
        while q.push(&[0u8; 1000]).is_ok() {
            pushed += 1;
            assert!(pushed < 100);
        }
        assert!(matches!(q.push(&[0u8; 1000]), Err(QueueError::Full { .. })));
        let got = drain(&q, "r");
        assert_eq!(got.len(), pushed);
        assert!(q.push(&[0u8; 1000]).is_ok(), "room again once delivered");

        let (q, _) =
            DiskQueue::open(&dir.path().join("d"), config(4096, 8192, WhenFull::DropOldest), &["r"]).expect("open");
        for i in 0..50u32 {
            q.push(&i.to_le_bytes().repeat(250)).expect("never refuses");
        }
        assert!(q.bytes() <= 8192 + 4096);
        assert!(q.dropped_bytes.load(Ordering::Relaxed) > 0);
        let got = drain(&q, "r");
        assert_eq!(got.last().map(|b| b[..4].to_vec()), Some(49u32.to_le_bytes().to_vec()), "newest kept");
    }

    /// A queue of 64-byte segments holding `n` records, one filling each segment.
    fn one_record_per_segment(dir: &Path, n: u8) -> (DiskQueue, QueueConfig) {
        let cfg = config(64, 1 << 20, WhenFull::Block);
        let (q, _) = DiskQueue::open(dir, cfg.clone(), &["r"]).expect("open");
        for i in 0..n {
            q.push(&[i; 60]).expect("push");
        }
        (q, cfg)
    }

    #[test]
    fn sequence_numbers_survive_an_emptied_newest_segment() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = one_record_per_segment(dir.path(), 3).1;
        // The newest segment holds seq 3; a crash tore its only write.
        std::fs::OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 3))
            .expect("seg")
            .set_len(5)
            .expect("tear");
        let (q, _) = DiskQueue::open(dir.path(), cfg, &["r"]).expect("reopen");
        assert_eq!(q.push(b"x").expect("push"), 3, "seq 3 was never acknowledged, 1 and 2 are not reused");
        let seqs: Vec<u64> = std::iter::from_fn(|| {
            let r = q.peek("r").expect("peek")?;
            q.ack("r", r.next).expect("ack");
            Some(r.seq)
        })
        .collect();
        assert_eq!(seqs, [1, 2, 3]);
    }

    #[test]
    fn a_damaged_length_field_skips_one_record_not_the_rest() {
        let dir = tempfile::tempdir().expect("tmp");
        let (q, report) = reopen_damaged(dir.path(), 5, |bytes, record| {
            // record 2 claims to run past the end
            bytes[record + 4..record + 8].copy_from_slice(&1_000_000u32.to_le_bytes());
        });
        assert_eq!(report.truncated_bytes, 0, "good records follow: nothing is cut");
        let got = drain(&q, "r");
        assert_eq!(got.len(), 4);
        assert_eq!(q.corrupt_records.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn damaged_cursor_files_do_not_stall_or_panic() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = config(4096, 1 << 20, WhenFull::Block);
        {
            let (q, _) = DiskQueue::open(dir.path(), cfg.clone(), &["a", "b"]).expect("open");
            q.push(b"one").expect("push");
        }
        std::fs::write(dir.path().join("cursor-a"), "999 0\n").expect("write");
        std::fs::write(dir.path().join("cursor-b"), format!("1 {}\n", u64::MAX)).expect("write");
        let (q, _) = DiskQueue::open(dir.path(), cfg, &["a", "b"]).expect("open");
        assert_eq!(drain(&q, "a").len(), 1, "a cursor past the newest segment restarts at the oldest");
        assert_eq!(drain(&q, "b").len(), 0, "an offset past the end means done");
        q.push(b"two").expect("push");
        assert_eq!(drain(&q, "b").len(), 1);
    }

    #[test]
    fn oversized_bodies_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let (q, _) = DiskQueue::open(dir.path(), config(4096, 1 << 20, WhenFull::Block), &["r"]).expect("open");
        assert!(matches!(q.push(&vec![0u8; 5 << 20]), Err(QueueError::TooLarge { .. })));
    }

    #[test]
    fn last_record_and_next_for() {
        let dir = tempfile::tempdir().expect("tmp");
        let (q, _) = DiskQueue::open(dir.path(), config(4096, 1 << 20, WhenFull::Block), &["r"]).expect("open");
        assert_eq!(q.last_record().expect("last"), None);
        for i in 0..5u8 {
            q.push(&[i]).expect("push");
        }
        assert_eq!(q.last_record().expect("last").map(|r| r.body), Some(vec![4]));
        assert_eq!(q.next_for("r").expect("next").map(|n| n.0), Some(1));
        let r = q.peek("r").expect("peek").expect("one");
        q.ack("r", r.next).expect("ack");
        assert_eq!(q.next_for("r").expect("next").map(|n| n.0), Some(2));
    }

    #[test]
    fn appended_batches_are_read_only_once_a_sync_made_them_durable() {
        let dir = tempfile::tempdir().expect("tmp");
        let (q, _) = DiskQueue::open(dir.path(), config(4096, 1 << 20, WhenFull::Block), &["r"]).expect("open");
        assert_eq!((q.append(b"a").expect("append"), q.append(b"b").expect("append")), (1, 2));
        assert_eq!(q.peek("r").expect("peek"), None, "not durable yet");
        assert_eq!(q.bytes(), 0);
        q.sync().expect("sync");
        // Filling a segment syncs what it holds before the next one starts.
        for i in 0..100u8 {
            q.append(&[i; 100]).expect("append");
        }
        q.sync().expect("sync");
        let bodies = drain(&q, "r");
        assert_eq!(bodies.len(), 102);
        assert_eq!(&bodies[..2], [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(bodies[101], vec![99; 100]);
        drop(q);
        let (q, _) = DiskQueue::open(dir.path(), config(4096, 1 << 20, WhenFull::Block), &["r"]).expect("reopen");
        assert_eq!(q.push(b"c").expect("push"), 103, "sequence numbers go on");
    }

    #[test]
    fn the_newest_record_outlives_its_acknowledgement_and_a_torn_newer_segment() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = {
            let (q, cfg) = one_record_per_segment(dir.path(), 4);
            assert_eq!(drain(&q, "r").len(), 4);
            assert_eq!(q.last_record().expect("last").map(|r| r.body), Some(vec![3; 60]), "kept once delivered");
            assert!(!segment_path(dir.path(), 1).exists(), "older delivered segments go");
            cfg
        };
        // A fifth push's segment was created, then its only write torn by a crash.
        std::fs::write(segment_path(dir.path(), 5), [1, 2, 3]).expect("torn");
        let (q, _) = DiskQueue::open(dir.path(), cfg, &["r"]).expect("reopen");
        assert_eq!(q.last_record().expect("last").map(|r| r.seq), Some(4));
    }
}
