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
    /// Added to every record of the file as attributes (`[[logs]] labels`).
    pub labels: Vec<(String, String)>,
    pub format: LogFormat,
    pub multiline: Option<Multiline>,
}

impl LogSource {
    /// A JSON-lines file of `service`'s `instance`, nothing added.
    pub fn new(path: impl Into<PathBuf>, service: impl Into<String>, instance: impl Into<String>) -> Self {
        LogSource {
            path: path.into(),
            service: service.into(),
            instance: instance.into(),
            labels: Vec::new(),
            format: LogFormat::Json,
            multiline: None,
        }
    }
}

/// How a file's lines are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON objects, one a line (`timestamp`, `level`, `message`, the rest attributes); a
    /// line that is not one is kept as plain text.
    #[default]
    Json,
    /// Text: the line is the message, its level the first upper-case level word in it.
    Plain,
}

/// Joining the lines of one record (a stack trace under the line that raised it): a line
/// matching `start` begins a record, every other line continues the one before. A record
/// is complete when the next one starts, when `timeout_ms` pass without a line, or at
/// `max_lines`. Until then its lines are held back, and the checkpoint stays at its
/// first line, so a restart joins it again rather than losing or splitting it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Multiline {
    /// A regular expression (Rust `regex` syntax) that the first line of a record matches.
    pub start: String,
    #[serde(default = "Multiline::default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "Multiline::default_max_lines")]
    pub max_lines: usize,
}

impl Multiline {
    fn default_timeout_ms() -> u64 {
        1000
    }

    fn default_max_lines() -> usize {
        500
    }

    /// The start pattern, compiled; the error says what is wrong with it.
    pub fn compile(&self) -> Result<regex::bytes::Regex, String> {
        if self.timeout_ms == 0 || self.max_lines < 2 {
            return Err("multiline: timeout_ms must be positive and max_lines at least 2".into());
        }
        regex::bytes::RegexBuilder::new(&self.start)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("multiline.start {:?}: {e}", self.start))
    }
}

/// Where reading a file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub inode: u64,
    pub offset: u64,
}

/// Path → position.
pub type Positions = BTreeMap<PathBuf, Position>;

/// A complete line (or joined record) read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Shared by every line of the file (a batch holds thousands).
    pub origin: std::sync::Arc<Origin>,
    pub text: String,
    pub observed_unix_nano: u64,
}

/// Whose a file's lines are and how they are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub service: String,
    pub instance: String,
    pub labels: Vec<(String, String)>,
    pub format: LogFormat,
}

impl Origin {
    pub fn new(service: &str, instance: &str) -> std::sync::Arc<Origin> {
        std::sync::Arc::new(Origin {
            service: service.into(),
            instance: instance.into(),
            labels: Vec::new(),
            format: LogFormat::Json,
        })
    }
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

/// Where a file's lines go: straight out, or through the record being joined.
struct Names {
    origin: std::sync::Arc<Origin>,
    joiner: Option<Joiner>,
}

/// The record being joined, and how records start.
struct Joiner {
    start: regex::bytes::Regex,
    timeout: std::time::Duration,
    max_lines: usize,
    pending: Option<Pending>,
}

struct Pending {
    text: Vec<u8>,
    /// Offset of its first line: where reading starts again after a restart.
    from: u64,
    lines: usize,
    observed_unix_nano: u64,
    last_line_at: std::time::Instant,
}

impl Names {
    fn line(&self, text: String, observed_unix_nano: u64) -> Line {
        Line { origin: self.origin.clone(), text, observed_unix_nano }
    }

    /// Takes the line `bytes` that starts at offset `at`.
    fn push(&mut self, bytes: &[u8], at: u64, observed: u64, out: &mut Vec<Line>) {
        let Some(joiner) = self.joiner.as_mut() else {
            out.push(self.line(String::from_utf8_lossy(bytes).into_owned(), observed));
            return;
        };
        let continues = joiner.pending.is_some() && !joiner.start.is_match(bytes);
        match joiner.pending.as_mut() {
            Some(p) if continues && p.text.len() + 1 + bytes.len() <= MAX_LINE_BYTES => {
                p.text.push(b'\n');
                p.text.extend_from_slice(bytes);
                p.lines += 1;
                p.last_line_at = std::time::Instant::now();
                if p.lines >= joiner.max_lines {
                    self.flush(out);
                }
                return;
            }
            _ => self.flush(out),
        }
        if let Some(joiner) = self.joiner.as_mut() {
            joiner.pending = Some(Pending {
                text: bytes.to_vec(),
                from: at,
                lines: 1,
                observed_unix_nano: observed,
                last_line_at: std::time::Instant::now(),
            });
        }
    }

    /// Emits the record being joined, if any.
    fn flush(&mut self, out: &mut Vec<Line>) {
        if let Some(p) = self.joiner.as_mut().and_then(|j| j.pending.take()) {
            let text = String::from_utf8_lossy(&p.text).into_owned();
            out.push(self.line(text, p.observed_unix_nano));
        }
    }

    /// Emits the record being joined if no line came for its timeout.
    fn flush_if_quiet(&mut self, out: &mut Vec<Line>) {
        if let Some(j) = &self.joiner
            && j.pending.as_ref().is_some_and(|p| p.last_line_at.elapsed() >= j.timeout)
        {
            self.flush(out);
        }
    }

    /// Where the record being joined starts: the position to keep while it is held.
    fn held_from(&self) -> Option<u64> {
        Some(self.joiner.as_ref()?.pending.as_ref()?.from)
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
                let origin = std::sync::Arc::new(Origin {
                    service: source.service.clone(),
                    instance: source.instance.clone(),
                    labels: source.labels.clone(),
                    format: source.format,
                });
                // Checked when the config was loaded.
                let joiner = source.multiline.as_ref().and_then(|m| {
                    Some(Joiner {
                        start: m.compile().ok()?,
                        timeout: std::time::Duration::from_millis(m.timeout_ms),
                        max_lines: m.max_lines,
                        pending: None,
                    })
                });
                let names = Names { origin, joiner };
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
                // While draining a rotated file, the position to keep is in that file; a
                // record being joined is kept from its first line.
                let pos = match &t.draining {
                    Some(d) => Position { inode: d.inode, offset: t.names.held_from().unwrap_or(d.offset) },
                    None => Position { inode: t.inode, offset: t.names.held_from().unwrap_or(t.offset) },
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

    /// Whether everything written to `path` has been returned as lines: nothing unread,
    /// no partial line, no record being joined, no rotated file to finish. A file no
    /// longer wanted (a glob no longer matches it) is let go only then.
    pub fn finished(&self, path: &Path) -> bool {
        let Some(t) = self.files.iter().find(|t| t.source.path == path) else { return true };
        t.draining.is_none()
            && t.partial.is_empty()
            && t.names.held_from().is_none()
            && self.unread().iter().all(|(p, unread)| *p != path || *unread == 0)
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
        self.names.flush_if_quiet(out);
        // First finish a file that was rotated away.
        if let Some(mut d) = self.draining.take() {
            let at_end = read_lines(&mut d.file, &mut d.offset, &mut self.partial, &mut self.names, out, max_lines)?;
            if !at_end || d.since.elapsed() < self.grace {
                self.draining = Some(d);
                return Ok(());
            }
            flush_partial(&mut d.offset, &mut self.partial, &mut self.names, out);
            self.names.flush(out);
        }
        let meta = match std::fs::metadata(&self.source.path) {
            Ok(m) => m,
            // Removed and not yet recreated: keep reading what is open.
            Err(_) => {
                if let Some(file) = self.file.as_mut() {
                    read_lines(file, &mut self.offset, &mut self.partial, &mut self.names, out, max_lines)?;
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
            self.names.flush(out);
            self.offset = 0;
            self.partial.clear();
        }
        if let Some(file) = self.file.as_mut() {
            read_lines(file, &mut self.offset, &mut self.partial, &mut self.names, out, max_lines)?;
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
    names: &mut Names,
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
        names.push(bytes, *offset + start as u64, observed, out);
        start = end + 1;
    }
    *offset += start as u64;
    partial.drain(..start);
    if partial.len() > MAX_LINE_BYTES && memchr::memchr(b'\n', partial).is_none() {
        // A "line" this long has no end in sight; ship its start as one line and skip on.
        names.push(&partial[..MAX_LINE_BYTES], *offset, observed, out);
        *offset += partial.len() as u64;
        partial.clear();
    }
    Ok(n < READ_CHUNK && memchr::memchr(b'\n', partial).is_none())
}

/// Emits what is left in `partial` as a last line (a rotated file that ended without a
/// newline).
fn flush_partial(offset: &mut u64, partial: &mut Vec<u8>, names: &mut Names, out: &mut Vec<Line>) {
    if partial.is_empty() {
        return;
    }
    let mut text = &partial[..partial.len().min(MAX_LINE_BYTES)];
    if text.last() == Some(&b'\r') {
        text = &text[..text.len() - 1];
    }
    names.push(text, *offset, now_nano(), out);
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
        LogSource::new(path, "search", "search-1")
    }

    /// A tailer of `path` joining records that start with a date, quiet after `timeout_ms`.
    fn joining(path: &Path, timeout_ms: u64, positions: &Positions) -> Tailer {
        let multiline = Multiline { start: r"^\d{4}-\d\d-\d\d ".into(), timeout_ms, max_lines: 4 };
        Tailer::new(vec![LogSource { multiline: Some(multiline), ..source(path) }], positions)
    }

    const TRACE: &str = "2026-12-07 ERROR boom\n  at a.b(c.rs:1)\n  at d.e(f.rs:2)\n";

    #[test]
    fn multiline_records_are_joined_and_held_until_the_next_record_starts() {
        let (_dir, path) = log_file(&format!("{TRACE}2026-12-07 INFO next\n"));
        let mut t = joining(&path, 60_000, &Positions::new());
        assert_eq!(texts(&t.poll(100)), ["2026-12-07 ERROR boom\n  at a.b(c.rs:1)\n  at d.e(f.rs:2)"]);
        // The last record may go on: held, and the position stays at its first line.
        assert_eq!(t.positions()[&path].offset, TRACE.len() as u64);
        assert!(!t.finished(&path));
        append(&path, "  more\n2026-12-07 INFO third\n");
        assert_eq!(texts(&t.poll(100)), ["2026-12-07 INFO next\n  more"]);
    }

    #[test]
    fn a_held_record_goes_out_after_its_quiet_timeout_and_max_lines_cuts_long_ones() {
        let (_dir, path) = log_file(TRACE);
        let mut t = joining(&path, 1, &Positions::new());
        assert!(t.poll(100).is_empty());
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(t.poll(100).len(), 1);
        assert_eq!(t.positions()[&path].offset, TRACE.len() as u64);
        assert!(t.finished(&path));
        append(&path, "2026-12-07 ERROR long\n1\n2\n3\n4\n5\n");
        let mut t = joining(&path, 60_000, &t.positions());
        assert_eq!(texts(&t.poll(100)), ["2026-12-07 ERROR long\n1\n2\n3"]);
    }

    #[test]
    fn a_restart_with_a_held_record_joins_it_again_whole() {
        let (_dir, path) = log_file("2026-12-07 INFO a\n2026-12-07 ERROR b\n  at x\n");
        let mut t = joining(&path, 60_000, &Positions::new());
        assert_eq!(texts(&t.poll(100)), ["2026-12-07 INFO a"]);
        let saved = t.positions();
        drop(t);
        append(&path, "  at y\n2026-12-07 INFO c\n");
        let mut t = joining(&path, 60_000, &saved);
        assert_eq!(texts(&t.poll(100)), ["2026-12-07 ERROR b\n  at x\n  at y"]);
    }

    #[test]
    fn a_rotated_files_last_record_is_emitted_when_the_file_is_done() {
        let (_dir, path) = log_file(TRACE);
        let mut t = joining(&path, 60_000, &Positions::new()).with_rotation_grace(std::time::Duration::ZERO);
        assert!(t.poll(100).is_empty());
        rotate(&path);
        append(&path, "2026-12-07 INFO new\n");
        let got = texts(&t.poll(100));
        assert_eq!(got, ["2026-12-07 ERROR boom\n  at a.b(c.rs:1)\n  at d.e(f.rs:2)"]);
        assert_eq!(t.positions()[&path].offset, 0, "the new file's record is held");
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
