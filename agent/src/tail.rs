//! Tailing log files: JSON lines or plain text, through rename-and-create and
//! copytruncate rotation, with partial last lines held back until they are complete.
//!
//! Positions (inode and offset of the end of the last complete line) are what makes
//! "neither lost nor repeated" hold across restarts: every batch carries the positions it
//! reaches into the disk queue, and a checkpoint file is replaced (fsynced) after each
//! push. On start the agent takes, per file, the further of the checkpoint and the newest
//! queued batch. A file rotated while the agent was down is found again by its inode.
//!
//! Lines become OTLP log records ([`records`]): a JSON line's `timestamp`, `level` and
//! `message` become the record's own fields and its other fields attributes; a plain line
//! is the message, its level the first level word in it. One OTLP resource per instance.
//! A queued batch is an envelope, the positions it reaches (length-prefixed JSON) then the
//! OTLP body, so the shipper sends only the body and a restart reads the positions back.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod records;
pub use records::to_otlp;

/// Longest line kept; a longer one is cut (and still shipped).
const MAX_LINE_BYTES: usize = 256 * 1024;
/// Bytes read from one file per poll, so one busy file cannot starve the others.
const READ_CHUNK: usize = 256 * 1024;

/// A file to follow and whose lines are whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSource {
    pub path: PathBuf,
    pub service: String,
    pub instance: String,
}

/// Where reading a file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub inode: u64,
    pub offset: u64,
}

/// Path → position.
pub type Positions = BTreeMap<PathBuf, Position>;

/// A complete line read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Shared by every line of the file (a batch holds thousands).
    pub service: std::sync::Arc<str>,
    pub instance: std::sync::Arc<str>,
    pub text: String,
    pub observed_unix_nano: u64,
}

/// A rotated-away file still being read: writers may not have reopened the log yet.
struct Draining {
    file: File,
    inode: u64,
    offset: u64,
    since: std::time::Instant,
}

/// How long a rotated file is still read after its rotation was noticed.
const ROTATION_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whose lines a file's are, shared by all of them.
#[derive(Clone)]
struct Names {
    service: std::sync::Arc<str>,
    instance: std::sync::Arc<str>,
}

impl Names {
    fn line(&self, text: String, observed_unix_nano: u64) -> Line {
        Line { service: self.service.clone(), instance: self.instance.clone(), text, observed_unix_nano }
    }
}

struct Tailed {
    source: LogSource,
    names: Names,
    grace: std::time::Duration,
    file: Option<File>,
    inode: u64,
    /// End of the last complete line taken from the current file.
    offset: u64,
    partial: Vec<u8>,
    /// A rotated-away file still to be read to its end before the current one.
    draining: Option<Draining>,
}

pub struct Tailer {
    files: Vec<Tailed>,
}

fn now_nano() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A file in `dir` with this inode (where a rotated file went), if any.
fn find_by_inode(dir: &Path, inode: u64) -> Option<File> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let meta = e.metadata().ok()?;
        (meta.is_file() && meta.ino() == inode).then(|| File::open(e.path()).ok()).flatten()
    })
}

impl Tailer {
    /// Starts following `sources` from `positions` (files without a position are read
    /// from their beginning).
    pub fn new(sources: Vec<LogSource>, positions: &Positions) -> Self {
        let files = sources
            .into_iter()
            .map(|source| {
                let names =
                    Names { service: source.service.as_str().into(), instance: source.instance.as_str().into() };
                let mut t = Tailed {
                    names,
                    source,
                    grace: ROTATION_GRACE,
                    file: None,
                    inode: 0,
                    offset: 0,
                    partial: Vec::new(),
                    draining: None,
                };
                if let Some(pos) = positions.get(&t.source.path) {
                    t.inode = pos.inode;
                    t.offset = pos.offset;
                }
                t
            })
            .collect();
        Tailer { files }
    }

    /// Changes how long a rotated file is still read after its rotation (tests use 0).
    pub fn with_rotation_grace(mut self, grace: std::time::Duration) -> Self {
        for t in &mut self.files {
            t.grace = grace;
        }
        self
    }

    /// Positions after the last complete line returned so far.
    pub fn positions(&self) -> Positions {
        self.files
            .iter()
            .filter(|t| t.inode != 0)
            .map(|t| {
                // While draining a rotated file, the position to keep is in that file.
                let pos = match &t.draining {
                    Some(d) => Position { inode: d.inode, offset: d.offset },
                    None => Position { inode: t.inode, offset: t.offset },
                };
                (t.source.path.clone(), pos)
            })
            .collect()
    }

    /// Per file, the bytes written to it that are not yet read as lines (a rotated file
    /// still being finished counts too): how far behind the agent is.
    pub fn unread(&self) -> Vec<(&Path, u64)> {
        self.files
            .iter()
            .map(|t| {
                let behind = |file: &Option<&File>, offset: u64| {
                    file.and_then(|f| f.metadata().ok()).map_or(0, |m| m.len().saturating_sub(offset))
                };
                let draining = t.draining.as_ref().map_or(0, |d| behind(&Some(&d.file), d.offset));
                let current = match &t.file {
                    Some(_) => behind(&t.file.as_ref(), t.offset),
                    // Not opened yet: the file at the path, from where reading will start.
                    None => std::fs::metadata(&t.source.path).map_or(0, |m| m.len().saturating_sub(t.offset)),
                };
                (t.source.path.as_path(), draining + current)
            })
            .collect()
    }

    /// Reads what is new in every file, up to about `max_lines` lines.
    pub fn poll(&mut self, max_lines: usize) -> Vec<Line> {
        let mut out = Vec::new();
        for t in &mut self.files {
            if out.len() >= max_lines {
                break;
            }
            if let Err(e) = t.poll(&mut out, max_lines) {
                tracing::debug!(path = %t.source.path.display(), error = %e, "tail: read failed; retrying");
            }
        }
        out
    }
}

impl Tailed {
    fn poll(&mut self, out: &mut Vec<Line>, max_lines: usize) -> std::io::Result<()> {
        // First finish a file that was rotated away.
        if let Some(mut d) = self.draining.take() {
            let at_end = read_lines(&mut d.file, &mut d.offset, &mut self.partial, &self.names, out, max_lines)?;
            if !at_end || d.since.elapsed() < self.grace {
                self.draining = Some(d);
                return Ok(());
            }
            flush_partial(&mut d.offset, &mut self.partial, &self.names, out);
        }
        let meta = match std::fs::metadata(&self.source.path) {
            Ok(m) => m,
            // Removed and not yet recreated: keep reading what is open.
            Err(_) => {
                if let Some(file) = self.file.as_mut() {
                    read_lines(file, &mut self.offset, &mut self.partial, &self.names, out, max_lines)?;
                }
                return Ok(());
            }
        };
        if self.file.is_none() {
            if self.inode != 0 && meta.ino() != self.inode {
                // Rotated while we were not looking: finish the old file where it went.
                let dir = self.source.path.parent().unwrap_or(Path::new("."));
                if let Some(old) = find_by_inode(dir, self.inode) {
                    // Rotated long ago: no writer will come back to it.
                    let since = std::time::Instant::now() - self.grace;
                    self.draining = Some(Draining { file: old, inode: self.inode, offset: self.offset, since });
                    tracing::info!(path = %self.source.path.display(), "tail: finishing a file rotated while the agent was down");
                }
                self.offset = 0;
            }
            self.file = Some(File::open(&self.source.path)?);
            self.inode = meta.ino();
            if self.draining.is_some() {
                return self.poll(out, max_lines);
            }
        } else if meta.ino() != self.inode {
            // Rename-and-create: drain the old file (still open), then follow the new one.
            if let Some(old) = self.file.take() {
                let since = std::time::Instant::now();
                self.draining = Some(Draining { file: old, inode: self.inode, offset: self.offset, since });
            }
            self.file = Some(File::open(&self.source.path)?);
            self.inode = meta.ino();
            self.offset = 0;
            tracing::info!(path = %self.source.path.display(), "tail: file rotated (renamed); following the new one");
            return self.poll(out, max_lines);
        }
        if meta.len() < self.offset + self.partial.len() as u64 {
            // Copytruncate: the file was cut below where we were.
            tracing::info!(path = %self.source.path.display(), "tail: file truncated; reading from its start");
            self.offset = 0;
            self.partial.clear();
        }
        if let Some(file) = self.file.as_mut() {
            read_lines(file, &mut self.offset, &mut self.partial, &self.names, out, max_lines)?;
        }
        Ok(())
    }
}

/// Reads from `offset` and appends complete lines. `offset` advances past complete lines
/// only; a partial last line waits in `partial`. Returns true at end of file.
fn read_lines(
    file: &mut File,
    offset: &mut u64,
    partial: &mut Vec<u8>,
    names: &Names,
    out: &mut Vec<Line>,
    max_lines: usize,
) -> std::io::Result<bool> {
    // Read more only when no complete line waits: a read cut short by `max_lines` leaves
    // lines in `partial`, and reading on regardless would pile up the backlog in memory.
    let mut n = 0;
    if memchr::memchr(b'\n', partial).is_none() {
        file.seek(SeekFrom::Start(*offset + partial.len() as u64))?;
        // Straight into `partial`'s spare room: no zeroed buffer, no copy.
        n = file.take(READ_CHUNK as u64).read_to_end(partial)?;
        if n == 0 {
            return Ok(true);
        }
    }
    let mut start = 0;
    let observed = now_nano();
    while out.len() < max_lines
        && let Some(nl) = memchr::memchr(b'\n', &partial[start..])
    {
        let end = start + nl;
        let mut bytes = &partial[start..end];
        if bytes.last() == Some(&b'\r') {
            bytes = &bytes[..bytes.len() - 1];
        }
        let bytes = &bytes[..bytes.len().min(MAX_LINE_BYTES)];
        out.push(names.line(String::from_utf8_lossy(bytes).into_owned(), observed));
        start = end + 1;
    }
    *offset += start as u64;
    partial.drain(..start);
    if partial.len() > MAX_LINE_BYTES && memchr::memchr(b'\n', partial).is_none() {
        // A "line" this long has no end in sight; ship its start as one line and skip on.
        out.push(names.line(String::from_utf8_lossy(&partial[..MAX_LINE_BYTES]).into_owned(), observed));
        *offset += partial.len() as u64;
        partial.clear();
    }
    Ok(n < READ_CHUNK && memchr::memchr(b'\n', partial).is_none())
}

/// Emits what is left in `partial` as a last line (a rotated file that ended without a
/// newline).
fn flush_partial(offset: &mut u64, partial: &mut Vec<u8>, names: &Names, out: &mut Vec<Line>) {
    if partial.is_empty() {
        return;
    }
    let text =
        String::from_utf8_lossy(&partial[..partial.len().min(MAX_LINE_BYTES)]).trim_end_matches('\r').to_string();
    out.push(names.line(text, now_nano()));
    *offset += partial.len() as u64;
    partial.clear();
}

/// A queued log batch: the positions it reaches, then the OTLP body.
pub fn envelope(positions: &Positions, otlp: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(positions).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + json.len() + otlp.len());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(otlp);
    out
}

/// The OTLP body of a queued batch.
pub fn unwrap_envelope(body: &[u8]) -> &[u8] {
    let Some(len) = body.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize) else { return &[] };
    body.get(4 + len..).unwrap_or(&[])
}

/// The positions a queued batch reaches.
pub fn envelope_positions(body: &[u8]) -> Option<Positions> {
    let len = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
    serde_json::from_slice(body.get(4..4 + len)?).ok()
}

/// Loads the checkpoint file (missing or damaged: empty).
pub fn load_checkpoint(path: &Path) -> Positions {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Replaces the checkpoint file durably.
pub fn save_checkpoint(path: &Path, positions: &Positions) -> std::io::Result<()> {
    hale_fs::write_durable(path, &serde_json::to_vec(positions).unwrap_or_default())
}

/// Per file, the further of two positions on the same inode (the newer inode wins).
pub fn merge(a: &Positions, b: &Positions) -> Positions {
    let mut out = a.clone();
    for (path, pos) in b {
        out.entry(path.clone())
            .and_modify(|cur| {
                if cur.inode != pos.inode || pos.offset > cur.offset {
                    *cur = *pos;
                }
            })
            .or_insert(*pos);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn source(path: &Path) -> LogSource {
        LogSource { path: path.to_path_buf(), service: "search".into(), instance: "search-1".into() }
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open");
        f.write_all(text.as_bytes()).expect("write");
    }

    /// A temporary directory with `a.log` holding `text`.
    fn log_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a.log");
        append(&path, text);
        (dir, path)
    }

    /// A tailer of `path` from its start.
    fn tail(path: &Path) -> Tailer {
        Tailer::new(vec![source(path)], &Positions::new())
    }

    /// Rotates `path` by renaming it to `<path>.1`, as logrotate does by default.
    fn rotate(path: &Path) {
        std::fs::rename(path, path.with_extension("log.1")).expect("rename");
    }

    fn texts(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.text.clone()).collect()
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let (_dir, path) = log_file("one\ntw");
        let mut t = tail(&path);
        assert_eq!(texts(&t.poll(100)), ["one"]);
        append(&path, "o\nthree\n");
        assert_eq!(texts(&t.poll(100)), ["two", "three"]);
        assert_eq!(t.positions()[&path].offset, 14);
    }

    #[test]
    fn a_poll_cut_short_by_max_lines_resumes_where_it_stopped() {
        let (_dir, path) = log_file(&(0..10).map(|i| format!("{i}\n")).collect::<String>());
        let mut t = tail(&path);
        let mut got = Vec::new();
        for _ in 0..5 {
            got.extend(texts(&t.poll(3)));
        }
        assert_eq!(got, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    #[test]
    fn rename_and_create_rotation_loses_nothing() {
        let (_dir, path) = log_file("1\n2\n");
        let mut t = tail(&path).with_rotation_grace(std::time::Duration::ZERO);
        assert_eq!(texts(&t.poll(100)), ["1", "2"]);
        append(&path, "3\n");
        rotate(&path);
        append(&path, "4\n");
        assert_eq!(texts(&t.poll(100)), ["3", "4"]);
        append(&path, "5\n");
        assert_eq!(texts(&t.poll(100)), ["5"]);
    }

    #[test]
    fn a_rotated_file_is_still_read_during_the_grace_period_and_its_last_line_kept() {
        let (dir, path) = log_file("1\n");
        let old = dir.path().join("a.log.1");
        let mut t = tail(&path).with_rotation_grace(std::time::Duration::from_millis(200));
        assert_eq!(texts(&t.poll(100)), ["1"]);
        std::fs::rename(&path, &old).expect("rename");
        append(&path, "new\n");
        assert!(t.poll(100).is_empty(), "old file first");
        append(&old, "2\nlast-without-newline"); // the writer had not reopened yet
        let mut got = texts(&t.poll(100));
        std::thread::sleep(std::time::Duration::from_millis(250));
        got.extend(texts(&t.poll(100)));
        got.extend(texts(&t.poll(100)));
        assert_eq!(got, ["2", "last-without-newline", "new"]);
    }

    #[test]
    fn unread_bytes_say_how_far_behind_the_tailer_is() {
        let (_dir, path) = log_file("one\ntwo\nthr");
        let mut t = tail(&path);
        assert_eq!(t.unread(), [(path.as_path(), 11)], "not opened yet");
        assert_eq!(texts(&t.poll(1)), ["one"]);
        assert_eq!(t.unread(), [(path.as_path(), 7)], "two lines and a partial one");
        t.poll(100);
        assert_eq!(t.unread(), [(path.as_path(), 3)], "the partial line waits");
    }

    #[test]
    fn copytruncate_rotation_starts_over() {
        let (dir, path) = log_file("aaaaaaaaaa\nbbbbbbbbbb\n");
        let mut t = tail(&path);
        assert_eq!(t.poll(100).len(), 2);
        std::fs::copy(&path, dir.path().join("a.log.1")).expect("copy");
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(0).expect("truncate");
        append(&path, "c\n");
        assert_eq!(texts(&t.poll(100)), ["c"]);
    }

    #[test]
    fn restart_from_positions_neither_loses_nor_repeats_even_after_rotation() {
        let (_dir, path) = log_file("1\n2\n");
        let mut t = tail(&path);
        assert_eq!(t.poll(100).len(), 2);
        let saved = t.positions();
        drop(t);
        // While "down": more lines, then a rotation, then more lines.
        append(&path, "3\n");
        rotate(&path);
        append(&path, "4\n");
        let mut t = Tailer::new(vec![source(&path)], &saved);
        let mut got = texts(&t.poll(100));
        got.extend(texts(&t.poll(100)));
        assert_eq!(got, ["3", "4"]);
    }

    #[test]
    fn envelopes_round_trip_and_positions_merge() {
        let mut p = Positions::new();
        p.insert("/a".into(), Position { inode: 1, offset: 10 });
        let body = envelope(&p, b"otlp");
        assert_eq!(unwrap_envelope(&body), b"otlp");
        assert_eq!(envelope_positions(&body), Some(p.clone()));
        let mut later = Positions::new();
        later.insert("/a".into(), Position { inode: 1, offset: 20 });
        assert_eq!(merge(&p, &later)[Path::new("/a")].offset, 20);
        assert_eq!(merge(&later, &p)[Path::new("/a")].offset, 20);
    }
}
