//! Log storage: OTLP log records as JSON lines in segment files, fsynced before they are
//! acknowledged, kept for a retention period; the newest lines of every instance stay in
//! memory for fast reads, and a broadcast channel feeds live tails.
//!
//! A batch's id (`X-Hale-Batch`) is written in the same fsynced write as its records, so a
//! batch resent after a lost acknowledgement, even across a restart, is stored once.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde::{Deserialize, Serialize};

pub mod wire;

use crate::batch_ids::SeenBatches;

/// Lines of each instance kept in memory, and the bytes of JSON they may take.
const RECENT_PER_INSTANCE: usize = 1000;
const RECENT_BYTES_PER_INSTANCE: usize = 1 << 20;

/// A line kept in memory: its stored JSON, read when a query wants it (most are pushed
/// out by newer ones unread: under a backlog, reading each back cost the collector a
/// seventh of its time), with what a query or the cluster view looks at first.
struct RecentLine {
    time_unix_nano: u64,
    /// Its level is `error` or `fatal`.
    error: bool,
    json: Box<str>,
}

impl RecentLine {
    fn line(&self) -> Option<LogLine> {
        serde_json::from_str(&self.json).ok()
    }
}

fn is_error(level: &str) -> bool {
    level == "error" || level == "fatal"
}

/// The newest lines of one instance.
#[derive(Default)]
struct Recent {
    lines: VecDeque<RecentLine>,
    bytes: usize,
    /// Older lines were dropped from memory (they are on disk).
    dropped: bool,
}

impl Recent {
    fn push(&mut self, line: RecentLine) {
        self.bytes += line.json.len();
        self.lines.push_back(line);
        while self.lines.len() > RECENT_PER_INSTANCE || (self.bytes > RECENT_BYTES_PER_INSTANCE && self.lines.len() > 1)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.json.len();
                self.dropped = true;
            }
        }
    }
}
const SEGMENT_BYTES: u64 = 64 << 20;

/// One stored log line is the wire's: segment files hold the JSON `/api/v1/logs` serves.
/// A log query's parameters are the wire's too.
pub use hale_core::api::{AttributeValue, Attributes, LogLine, LogQuery};

/// A parsed query.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub service: Option<String>,
    pub instance: Option<String>,
    pub level: Option<String>,
    pub contains: Option<String>,
    /// Lowercase hex, as lines store it.
    pub trace_id: Option<String>,
    pub since_ns: u64,
    pub until_ns: u64,
}

impl Filter {
    pub fn matches(&self, l: &LogLine) -> bool {
        self.service.as_ref().is_none_or(|s| *s == l.service)
            && self.instance.as_ref().is_none_or(|i| *i == l.instance)
            && self.level.as_ref().is_none_or(|v| v.eq_ignore_ascii_case(&l.level))
            && self.contains.as_ref().is_none_or(|c| l.message.contains(c.as_str()))
            && self.trace_id.as_ref().is_none_or(|t| *t == l.trace_id)
            && l.time_unix_nano >= self.since_ns
            && l.time_unix_nano <= self.until_ns
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("log store I/O in {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    BadRequest(String),
    /// The same batch is being stored by another request: send it again shortly.
    #[error("this batch is being stored by another request; send it again")]
    Busy,
    #[error("{0}")]
    Failed(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogsError + '_ {
    move |source| LogsError::Io { path: path.to_path_buf(), source }
}

/// A line of a segment file: a record, or the id of the batch the preceding records came in.
#[derive(Serialize)]
#[serde(untagged)]
enum Entry {
    /// Opens a batch: the bytes that follow it, its lines and its closing id included.
    /// A batch with fewer bytes behind it was torn by a crash and never acknowledged.
    BatchStart {
        bytes: u64,
    },
    Batch {
        batch: BatchId,
    },
    Line(LogLine),
}

impl Entry {
    /// Reads a segment's line: a batch id starts `{"batch"`, any other is a log line.
    /// (Deciding by the start spares serde's untagged form, which buffers the whole
    /// line to try each variant in turn.)
    fn parse(line: &str) -> Option<Entry> {
        #[derive(Deserialize)]
        struct BatchLine {
            batch: BatchId,
        }
        #[derive(Deserialize)]
        struct StartLine {
            batch_start: u64,
        }
        if line.starts_with(r#"{"batch_start""#) {
            serde_json::from_str::<StartLine>(line).ok().map(|b| Entry::BatchStart { bytes: b.batch_start })
        } else if line.starts_with(r#"{"batch""#) {
            serde_json::from_str::<BatchLine>(line).ok().map(|b| Entry::Batch { batch: b.batch })
        } else {
            serde_json::from_str(line).ok().map(Entry::Line)
        }
    }
}

#[derive(Serialize, Deserialize)]
struct BatchId {
    source: String,
    seq: u64,
}

struct Writer {
    file: std::sync::Arc<File>,
    id: u64,
    size: u64,
    /// Writes made so far; a write is durable once `LogStore::synced` reaches its number.
    written: u64,
}

/// Batch ids stored, and those being stored right now.
#[derive(Default)]
struct Batches {
    stored: SeenBatches,
    storing: std::collections::HashSet<(String, u64)>,
}

/// Segment id → (oldest, newest) line time in it, so a time-bounded query skips the
/// segments that cannot hold a match.
type SegmentTimes = std::collections::BTreeMap<u64, (u64, u64)>;

fn widen(times: &mut SegmentTimes, id: u64, t: u64) {
    let e = times.entry(id).or_insert((t, t));
    e.0 = e.0.min(t);
    e.1 = e.1.max(t);
}

pub struct LogStore {
    times: Mutex<SegmentTimes>,
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// Held while an fsync runs: requests that wrote meanwhile share the next one.
    syncer: Mutex<()>,
    /// The number of the newest write known durable.
    synced: std::sync::atomic::AtomicU64,
    /// An fsync failed: what the page cache holds is unknown, so nothing more is stored
    /// until a restart reads back what the disk has.
    failed: std::sync::atomic::AtomicBool,
    recent: Mutex<HashMap<(String, String), Recent>>,
    batches: Mutex<Batches>,
    live: tokio::sync::broadcast::Sender<LogLine>,
    pub lines_stored: std::sync::atomic::AtomicU64,
    pub stats: LogStoreStats,
}

/// What the log path costs, for `/metrics` and `hale bench logs`.
#[derive(Debug, Default)]
pub struct LogStoreStats {
    /// Time turning requests into stored lines (reading OTLP, writing JSON), µs.
    pub decode_micros: std::sync::atomic::AtomicU64,
    /// Time storing them (the write, waiting for its fsync, the recent lines), µs.
    pub store_micros: std::sync::atomic::AtomicU64,
    /// fsyncs made: fewer than requests when concurrent ones share them.
    pub fsyncs: std::sync::atomic::AtomicU64,
    pub bytes_written: std::sync::atomic::AtomicU64,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:08}.jsonl"))
}

/// Segment ids in `dir`, ascending.
fn segments(dir: &Path) -> Result<Vec<u64>, LogsError> {
    crate::store::wal::numbered_files(dir, "jsonl").map_err(io(dir))
}

/// An OTLP value as the JSON it is: arrays as arrays, key-value lists as objects, bytes
/// in base64 (as OTLP/JSON writes them). Recursion is bounded by the pre-scan's
/// [`MAX_VALUE_DEPTH`] (protobuf) or serde_json's nesting limit (JSON).
fn any_to_json(v: &AnyValue) -> AttributeValue {
    use base64::Engine;
    match &v.value {
        Some(any_value::Value::StringValue(s)) => AttributeValue::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => AttributeValue::Bool(*b),
        Some(any_value::Value::IntValue(i)) => AttributeValue::Int(*i),
        Some(any_value::Value::DoubleValue(d)) if d.is_finite() => AttributeValue::Double(*d),
        Some(any_value::Value::DoubleValue(_)) => AttributeValue::Null,
        Some(any_value::Value::ArrayValue(a)) => AttributeValue::Array(a.values.iter().map(any_to_json).collect()),
        Some(any_value::Value::KvlistValue(kv)) => AttributeValue::Object(attributes_json(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => {
            AttributeValue::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        // An index into a dictionary that only profiles carry: kept as the number it is.
        Some(any_value::Value::StringValueStrindex(i)) => AttributeValue::Int((*i).into()),
        None => AttributeValue::Null,
    }
}

fn attributes_json(kvs: &[KeyValue]) -> Attributes {
    kvs.iter().map(|a| (a.key.clone(), a.value.as_ref().map_or(AttributeValue::Null, any_to_json))).collect()
}

/// Most bytes one stored line may take (its JSON form). A longer record is stored cut to
/// this size, with `hale.truncated: true`: the message is shortened, attributes past the
/// budget are left out, and the service, instance, node and level names are cut to
/// [`MAX_NAME_BYTES`].
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Most bytes of a stored line's service, instance, node or level name (longer ones are
/// cut, and the line marked `hale.truncated`).
pub const MAX_NAME_BYTES: usize = 256;
/// Records whose protobuf form is at most this large cannot reach [`MAX_LINE_BYTES`] as
/// JSON (escaping at most sextuples a byte), so only larger ones are measured.
const SMALL_RECORD_BYTES: usize = MAX_LINE_BYTES / 8;

fn json_len<T: Serialize>(v: &T) -> usize {
    serde_json::to_vec(v).map_or(0, |b| b.len())
}

/// The longest prefix of `s` that ends on a character boundary and is at most `max` bytes.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Cuts the line to [`MAX_LINE_BYTES`] of JSON, keeping attributes in order while they
/// fit in half the budget and the message in what is left.
fn capped(mut line: LogLine) -> LogLine {
    if json_len(&line) <= MAX_LINE_BYTES {
        return line;
    }
    for name in [&mut line.service, &mut line.instance, &mut line.node, &mut line.level] {
        if name.len() > MAX_NAME_BYTES {
            *name = prefix(name, MAX_NAME_BYTES).to_string();
        }
    }
    let mut kept = Attributes::new();
    let mut used = 0;
    for (key, value) in std::mem::take(&mut line.attributes) {
        let size = json_len(&key) + json_len(&value) + 2;
        if used + size > MAX_LINE_BYTES / 2 {
            break;
        }
        used += size;
        kept.insert(key, value);
    }
    kept.insert("hale.truncated".into(), true.into());
    line.attributes = kept;
    let message = std::mem::take(&mut line.message);
    let budget = MAX_LINE_BYTES.saturating_sub(json_len(&line));
    let mut cut = prefix(&message, budget);
    // Escapes make the JSON longer than the text: shrink until it fits.
    while json_len(&cut) > budget {
        cut = prefix(cut, cut.len() * budget / json_len(&cut).max(1));
    }
    line.message = cut.to_string();
    line
}

/// Most log records, and most attributes and values (nested ones included, at every
/// depth), one OTLP request may carry. A protobuf body expands when decoded: an empty
/// record or key-value is 2 bytes on the wire and a few hundred in memory, so the body
/// limit alone would let one request take gigabytes. The agent sends at most its
/// `batch.max_records` (5,000 by default, within 1 MiB of lines) per request.
pub const MAX_LOG_RECORDS: usize = 100_000;
pub const MAX_LOG_ATTRIBUTES: usize = 1_000_000;
/// Deepest nesting of array and key-value-list values accepted.
pub const MAX_VALUE_DEPTH: usize = 32;

/// Counts the records, and the attributes and values at every depth (resource, scope and
/// record attributes, bodies, arrays and key-value lists inside them), in an
/// OTLP/protobuf body by walking the wire format without decoding it, and refuses a body
/// over [`MAX_LOG_RECORDS`], [`MAX_LOG_ATTRIBUTES`] or [`MAX_VALUE_DEPTH`] before it is
/// decoded.
pub fn check_protobuf_size(body: &[u8]) -> Result<(), LogsError> {
    use crate::otlp_scan::{Limits, Scan, Signal};
    let limits = Limits { records: MAX_LOG_RECORDS, values: MAX_LOG_ATTRIBUTES, depth: MAX_VALUE_DEPTH };
    match crate::otlp_scan::check_protobuf(body, Signal::Logs, limits) {
        Ok(()) => Ok(()),
        Err(Scan::Malformed(e)) => Err(LogsError::BadRequest(format!("not an OTLP/protobuf logs request: {e}"))),
        Err(Scan::TooManyRecords) => Err(LogsError::BadRequest(format!(
            "over {MAX_LOG_RECORDS} log records in one request; at most {MAX_LOG_RECORDS} are accepted, send smaller batches"
        ))),
        Err(Scan::TooManyValues) => Err(LogsError::BadRequest(format!(
            "over {MAX_LOG_ATTRIBUTES} attributes and values in one request (nested ones count); at most {MAX_LOG_ATTRIBUTES} are accepted, send smaller batches"
        ))),
        Err(Scan::TooDeep) => Err(LogsError::BadRequest(format!(
            "a value nested over {MAX_VALUE_DEPTH} levels deep; at most {MAX_VALUE_DEPTH} are accepted"
        ))),
    }
}

/// The JSON form of [`check_protobuf_size`]: every record, attribute and value is a JSON
/// object, so counting the objects (the `{` outside strings) bounds what decoding builds,
/// and their nesting bounds its depth.
pub fn check_json_size(body: &[u8]) -> Result<(), LogsError> {
    const MAX_OBJECTS: usize = MAX_LOG_RECORDS + 2 * MAX_LOG_ATTRIBUTES;
    // Request, resource logs, scope logs, record, attribute: then two levels per value.
    const MAX_NESTING: usize = 8 + 3 * MAX_VALUE_DEPTH;
    let (objects, nesting) = crate::otlp_scan::json_objects(body);
    if objects > MAX_OBJECTS {
        return Err(LogsError::BadRequest(format!(
            "{objects} JSON objects in one request; at most {MAX_OBJECTS} are accepted, send smaller batches"
        )));
    }
    if nesting > MAX_NESTING {
        return Err(LogsError::BadRequest(format!(
            "JSON nested {nesting} levels deep; at most {MAX_NESTING} are accepted"
        )));
    }
    Ok(())
}

/// An OTLP value as the JSON it is, taking its strings instead of copying them.
fn any_into_json(v: AnyValue) -> AttributeValue {
    match v.value {
        Some(any_value::Value::StringValue(s)) => AttributeValue::String(s),
        Some(any_value::Value::ArrayValue(a)) => {
            AttributeValue::Array(a.values.into_iter().map(any_into_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => AttributeValue::Object(attributes_into_json(kv.values)),
        other => any_to_json(&AnyValue { value: other }),
    }
}

fn attributes_into_json(kvs: Vec<KeyValue>) -> Attributes {
    kvs.into_iter().map(|a| (a.key, a.value.map_or(AttributeValue::Null, any_into_json))).collect()
}

/// Flattens an OTLP request into lines. The request is consumed: its strings become the
/// lines' own (a 5,000-record batch would otherwise copy each of them once more).
pub fn lines_of(request: ExportLogsServiceRequest) -> Vec<LogLine> {
    let mut out = Vec::with_capacity(
        request.resource_logs.iter().flat_map(|rl| &rl.scope_logs).map(|sl| sl.log_records.len()).sum(),
    );
    for rl in request.resource_logs {
        let attr = |key: &str| {
            rl.resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == key))
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
        };
        let service = attr("service.name").unwrap_or_else(|| "unknown".into());
        let instance = attr("service.instance.id").unwrap_or_else(|| service.clone());
        let node = attr("host.name").unwrap_or_default();
        for sl in rl.scope_logs {
            for r in sl.log_records {
                let small = prost::Message::encoded_len(&r) <= SMALL_RECORD_BYTES;
                let message = match r.body.map(any_into_json) {
                    Some(AttributeValue::String(s)) => s,
                    Some(other) => serde_json::to_string(&other).unwrap_or_default(),
                    None => String::new(),
                };
                let level = match r.severity_text.as_str() {
                    "" => "unknown".to_string(),
                    text if text.bytes().any(|b| b.is_ascii_uppercase()) || !text.is_ascii() => text.to_lowercase(),
                    _ => r.severity_text,
                };
                let line = LogLine {
                    time_unix_nano: if r.time_unix_nano > 0 { r.time_unix_nano } else { r.observed_time_unix_nano },
                    service: service.clone(),
                    instance: instance.clone(),
                    node: node.clone(),
                    level,
                    message,
                    attributes: attributes_into_json(r.attributes),
                    trace_id: wire::hex_id(&r.trace_id, 16),
                    span_id: wire::hex_id(&r.span_id, 8),
                };
                out.push(if small { line } else { capped(line) });
            }
        }
    }
    out
}

fn add_micros(counter: &std::sync::atomic::AtomicU64, since: std::time::Instant) {
    counter.fetch_add(since.elapsed().as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
}

/// Lines written out for the store, not yet stored.
#[derive(Default)]
struct Encoded {
    /// The lines' JSON, one per line.
    text: Vec<u8>,
    lines: Vec<EncodedLine>,
    /// The (service, instance) pairs of the lines, in order of first appearance.
    instances: Vec<(String, String)>,
    /// The oldest and newest line time.
    times: Option<(u64, u64)>,
}

struct EncodedLine {
    /// Where its JSON ends in `text` (at the newline).
    end: usize,
    /// Its (service, instance) in `Encoded::instances`.
    instance: usize,
    time_unix_nano: u64,
    error: bool,
}

impl Encoded {
    /// Appends `line`'s JSON; `service`, `instance`, `time` and `level` are its own.
    fn push(
        &mut self,
        (service, instance): (&str, &str),
        time: u64,
        level: &str,
        line: &impl Serialize,
    ) -> Result<(), LogsError> {
        let of = match self.instances.iter().rposition(|(s, i)| s == service && i == instance) {
            Some(of) => of,
            None => {
                self.instances.push((service.to_string(), instance.to_string()));
                self.instances.len() - 1
            }
        };
        serde_json::to_writer(&mut self.text, line).map_err(|e| LogsError::BadRequest(e.to_string()))?;
        let end = self.text.len();
        self.lines.push(EncodedLine { end, instance: of, time_unix_nano: time, error: is_error(level) });
        self.text.push(b'\n');
        self.times = Some(self.times.map_or((time, time), |(a, b)| (a.min(time), b.max(time))));
        Ok(())
    }

    /// Line `i`'s JSON.
    fn json(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.lines[i - 1].end + 1 };
        &self.text[start..self.lines[i].end]
    }
}

impl LogStore {
    /// Opens the store in `dir`, rebuilding the recent lines and the batch ids from disk.
    pub fn open(dir: &Path) -> Result<Self, LogsError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut recent: HashMap<(String, String), Recent> = HashMap::new();
        let mut seen = SeenBatches::default();
        let ids = segments(dir)?;
        let mut times = SegmentTimes::new();
        for id in &ids {
            let path = segment_path(dir, *id);
            let file = File::open(&path).map_err(io(&path))?;
            let length = file.metadata().map_err(io(&path))?.len();
            let mut reader = BufReader::new(file);
            let (mut offset, mut raw) = (0u64, Vec::new());
            loop {
                raw.clear();
                let n = reader.read_until(b'\n', &mut raw).map_err(io(&path))? as u64;
                if n == 0 {
                    break;
                }
                let at = offset;
                offset += n;
                let Ok(line) = std::str::from_utf8(&raw) else { continue };
                match Entry::parse(line.trim_end_matches('\n')) {
                    Some(Entry::BatchStart { bytes }) if offset + bytes > length => {
                        // Torn by a crash before its id was written: never acknowledged,
                        // and the sender sends it again. Its lines go with it.
                        tracing::warn!(segment = %path.display(), at, "a batch torn by a crash is cut off; its sender sends it again");
                        OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(at)).map_err(io(&path))?;
                        break;
                    }
                    Some(Entry::BatchStart { .. }) => {}
                    Some(Entry::Line(l)) => {
                        widen(&mut times, *id, l.time_unix_nano);
                        let kept = RecentLine {
                            time_unix_nano: l.time_unix_nano,
                            error: is_error(&l.level),
                            json: line.trim_end_matches('\n').into(),
                        };
                        recent.entry((l.service, l.instance)).or_default().push(kept);
                    }
                    Some(Entry::Batch { batch }) => seen.insert(&batch.source, batch.seq),
                    // A torn last line (a crash mid-write) was never acknowledged.
                    None => continue,
                }
            }
        }
        let id = ids.last().map_or(1, |i| i + 1);
        let path = segment_path(dir, id);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        Ok(LogStore {
            times: Mutex::new(times),
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer { file: std::sync::Arc::new(file), id, size: 0, written: 0 }),
            syncer: Mutex::new(()),
            synced: Default::default(),
            failed: Default::default(),
            recent: Mutex::new(recent),
            batches: Mutex::new(Batches { stored: seen, storing: Default::default() }),
            live: tokio::sync::broadcast::channel(4096).0,
            lines_stored: Default::default(),
            stats: Default::default(),
        })
    }

    /// Stores lines durably (one write, one fsync); a batch id already stored is skipped.
    /// Returns how many lines were stored.
    pub fn append(&self, lines: Vec<LogLine>, batch: Option<(String, u64)>) -> Result<usize, LogsError> {
        let started = std::time::Instant::now();
        let mut encoded = Encoded::default();
        for l in &lines {
            encoded.push((&l.service, &l.instance), l.time_unix_nano, &l.level, l)?;
        }
        add_micros(&self.stats.decode_micros, started);
        self.commit(encoded, batch)
    }

    /// Stores the records of an OTLP/protobuf logs request (pre-scanned by
    /// [`check_protobuf_size`]) as [`append`](Self::append) stores lines, reading the
    /// request in place ([`wire`]). A malformed request is refused whole.
    pub fn append_otlp(&self, body: &[u8], batch: Option<(String, u64)>) -> Result<usize, LogsError> {
        let started = std::time::Instant::now();
        let mut encoded = Encoded::default();
        wire::for_each_record(body, |resource, record| {
            let line = wire::StoredLine::new(resource, record);
            if record.wire_len <= SMALL_RECORD_BYTES {
                encoded.push((resource.service, resource.instance), line.time_unix_nano, &line.level, &line)
            } else {
                // A large record may need cutting: the owned path measures and cuts it.
                serde_json::to_vec(&line)
                    .and_then(|json| serde_json::from_slice::<LogLine>(&json))
                    .map_err(|e| LogsError::BadRequest(e.to_string()))
                    .map(capped)
                    .and_then(|l| encoded.push((&l.service, &l.instance), l.time_unix_nano, &l.level, &l))
            }
            .map_err(|e| wire::Malformed(e.to_string()))
        })
        .map_err(|e| LogsError::BadRequest(format!("not an OTLP/protobuf logs request: {e}")))?;
        add_micros(&self.stats.decode_micros, started);
        self.commit(encoded, batch)
    }

    /// Writes encoded lines and the batch id in one write, waits for an fsync that covers
    /// it (group commit: requests that write while one fsync runs share the next), then
    /// updates the segment times, the batch ids, the recent lines and the live tails.
    fn commit(&self, mut encoded: Encoded, batch: Option<(String, u64)>) -> Result<usize, LogsError> {
        let started = std::time::Instant::now();
        if let Some((source, seq)) = &batch {
            serde_json::to_writer(
                &mut encoded.text,
                &Entry::Batch { batch: BatchId { source: source.clone(), seq: *seq } },
            )
            .map_err(|e| LogsError::BadRequest(e.to_string()))?;
            encoded.text.push(b'\n');
            let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
            if batches.stored.contains(source, *seq) {
                return Ok(0);
            }
            // The same batch sent twice at once (a retry racing its original): one is
            // stored, the other told to come back, when it is found stored.
            if !batches.storing.insert((source.clone(), *seq)) {
                return Err(LogsError::Busy);
            }
        }
        // A batch goes out framed by its length, so a write a crash cuts short is seen
        // as torn at the next start (see `open`).
        let framed;
        let bytes: &[u8] = if batch.is_some() {
            let mut f = format!("{{\"batch_start\":{}}}\n", encoded.text.len()).into_bytes();
            f.extend_from_slice(&encoded.text);
            framed = f;
            &framed
        } else {
            &encoded.text
        };
        let stored = self.write_and_sync(bytes);
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((source, seq)) = batch {
            if stored.is_ok() {
                batches.stored.insert(&source, seq);
            }
            batches.storing.remove(&(source, seq));
        }
        drop(batches);
        let segment = stored?;
        if let Some((oldest, newest)) = encoded.times {
            let mut times = self.times.lock().unwrap_or_else(|p| p.into_inner());
            widen(&mut times, segment, oldest);
            widen(&mut times, segment, newest);
        }
        let n = encoded.lines.len();
        if self.live.receiver_count() > 0 {
            for line in (0..n).filter_map(|i| serde_json::from_slice::<LogLine>(encoded.json(i)).ok()) {
                let _ = self.live.send(line);
            }
        }
        // Only the newest lines of each instance stay in memory: of a large batch, only
        // its last RECENT_PER_INSTANCE per instance are kept.
        let mut kept = vec![0usize; encoded.instances.len()];
        let mut keep = vec![false; n];
        for (i, line) in encoded.lines.iter().enumerate().rev() {
            if kept[line.instance] < RECENT_PER_INSTANCE {
                kept[line.instance] += 1;
                keep[i] = true;
            }
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_instance = vec![Vec::new(); encoded.instances.len()];
        for (i, line) in encoded.lines.iter().enumerate() {
            by_instance[line.instance].push(i);
        }
        for (key, lines) in encoded.instances.iter().zip(by_instance) {
            let r = recent.entry(key.clone()).or_default();
            for i in lines {
                let line = &encoded.lines[i];
                match keep[i].then(|| std::str::from_utf8(encoded.json(i)).ok()).flatten() {
                    Some(json) => {
                        r.push(RecentLine { time_unix_nano: line.time_unix_nano, error: line.error, json: json.into() })
                    }
                    None => r.dropped = true,
                }
            }
        }
        drop(recent);
        self.lines_stored.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        add_micros(&self.stats.store_micros, started);
        Ok(n)
    }

    /// Appends `encoded` to the active segment and returns once an fsync covered it;
    /// returns the segment it went to.
    fn write_and_sync(&self, bytes: &[u8]) -> Result<u64, LogsError> {
        use std::sync::atomic::Ordering;
        let failed = || LogsError::Failed("an earlier fsync of the log store failed; restart the collector".into());
        if self.failed.load(Ordering::Acquire) {
            return Err(failed());
        }
        let (segment, ticket) = {
            let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            if w.size >= SEGMENT_BYTES {
                // The full segment's writes are made durable before the next one starts.
                let path = segment_path(&self.dir, w.id);
                if let Err(e) = w.file.sync_data() {
                    self.failed.store(true, Ordering::Release);
                    return Err(io(&path)(e));
                }
                self.synced.fetch_max(w.written, Ordering::AcqRel);
                let id = w.id + 1;
                let path = segment_path(&self.dir, id);
                w.file =
                    std::sync::Arc::new(OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?);
                File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
                w.id = id;
                w.size = 0;
            }
            let path = segment_path(&self.dir, w.id);
            if let Err(e) = (&*w.file).write_all(bytes) {
                // No half line may stay for the next batch to be glued onto.
                let size = w.size;
                let _ = w.file.set_len(size);
                return Err(io(&path)(e));
            }
            w.size += bytes.len() as u64;
            w.written += 1;
            self.stats.bytes_written.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            (w.id, w.written)
        };
        let _syncing = self.syncer.lock().unwrap_or_else(|p| p.into_inner());
        if self.synced.load(Ordering::Acquire) >= ticket {
            return Ok(segment); // an fsync that started after this write covered it
        }
        // The active file's fsync covers every write made so far: those to it, and those
        // to older segments, which were synced when they were closed.
        let (file, upto) = {
            let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            (w.file.clone(), w.written)
        };
        if let Err(e) = file.sync_data() {
            self.failed.store(true, Ordering::Release);
            tracing::error!(error = %e, "fsync of the log store failed; storing no more logs until a restart");
            return Err(io(&segment_path(&self.dir, segment))(e));
        }
        self.synced.fetch_max(upto, Ordering::AcqRel);
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(segment)
    }

    /// Newest lines matching `filter`, newest last, at most `limit`. Served from memory
    /// when it holds enough, else read from the segments, newest first.
    pub fn query(&self, filter: &Filter, limit: usize) -> Result<Vec<LogLine>, LogsError> {
        let (from_memory, dropped_after) = {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            let relevant = recent.iter().filter(|((service, instance), _)| {
                filter.service.as_ref().is_none_or(|s| s == service)
                    && filter.instance.as_ref().is_none_or(|i| i == instance)
            });
            let mut lines = Vec::new();
            // The newest time before which some relevant instance has dropped lines.
            let mut dropped_after: Option<u64> = None;
            for (_, r) in relevant {
                // Copied out under the lock, read after it: ingest does not wait on a query.
                let in_window =
                    r.lines.iter().filter(|l| (filter.since_ns..=filter.until_ns).contains(&l.time_unix_nano));
                lines.extend(in_window.map(|l| l.json.clone()));
                if r.dropped
                    && let Some(front) = r.lines.front()
                {
                    dropped_after = Some(dropped_after.map_or(front.time_unix_nano, |d| d.max(front.time_unix_nano)));
                }
            }
            (lines, dropped_after)
        };
        let mut from_memory: Vec<LogLine> = from_memory
            .iter()
            .filter_map(|json| serde_json::from_str::<LogLine>(json).ok())
            .filter(|l| filter.matches(l))
            .collect();
        from_memory.sort_by_key(|l| l.time_unix_nano);
        let skip = from_memory.len().saturating_sub(limit);
        let answer = from_memory.split_off(skip);
        // Memory is the whole truth when no relevant instance has dropped lines inside the
        // window, or when every line it would return is newer than anything dropped.
        let complete = match dropped_after {
            None => true,
            Some(front) => {
                front <= filter.since_ns
                    || (answer.len() >= limit && answer.first().is_some_and(|l| l.time_unix_nano > front))
            }
        };
        if complete {
            return Ok(answer);
        }
        let mut out: Vec<LogLine> = Vec::new();
        let times = self.times.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for id in segments(&self.dir)?.into_iter().rev() {
            // Skip segments whose lines all lie outside the query's window.
            if let Some((oldest, newest)) = times.get(&id)
                && (*newest < filter.since_ns || *oldest > filter.until_ns)
            {
                continue;
            }
            let path = segment_path(&self.dir, id);
            let file = File::open(&path).map_err(io(&path))?;
            let mut in_segment: Vec<LogLine> = BufReader::new(file)
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| match Entry::parse(&line) {
                    Some(Entry::Line(l)) if filter.matches(&l) => Some(l),
                    _ => None,
                })
                .collect();
            in_segment.append(&mut out);
            out = in_segment;
            if out.len() >= limit {
                break;
            }
        }
        out.sort_by_key(|l| l.time_unix_nano);
        let skip = out.len().saturating_sub(limit);
        Ok(out.split_off(skip))
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LogLine> {
        self.live.subscribe()
    }

    /// The newest error (or worse) line of an instance, if any in memory.
    pub fn last_error(&self, service: &str, instance: &str) -> Option<LogLine> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .get(&(service.to_string(), instance.to_string()))?
            .lines
            .iter()
            .rev()
            .filter(|l| l.error)
            .find_map(RecentLine::line)
    }

    /// Deletes closed segments whose newest line is older than `min_ns`.
    pub fn apply_retention(&self, min_ns: u64) -> Result<usize, LogsError> {
        let active = self.writer.lock().unwrap_or_else(|p| p.into_inner()).id;
        let mut removed = 0;
        for id in segments(&self.dir)?.into_iter().filter(|id| *id < active) {
            let path = segment_path(&self.dir, id);
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            let newest_ns = modified
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(u64::MAX, |d| d.as_nanos() as u64);
            if newest_ns < min_ns {
                std::fs::remove_file(&path).map_err(io(&path))?;
                self.times.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// An OTLP/protobuf body of `n` empty log records in one scope of one resource: 2 bytes
/// a record on the wire, the decode-expansion case.
#[cfg(test)]
pub(crate) fn empty_records(n: usize) -> Vec<u8> {
    let records = [0x12u8, 0x00].repeat(n); // log_records (2), empty
    let mut scope = vec![0x12]; // scope_logs (2)
    prost::encoding::encode_varint(records.len() as u64, &mut scope);
    scope.extend_from_slice(&records);
    let mut body = vec![0x0a]; // resource_logs (1)
    prost::encoding::encode_varint(scope.len() as u64, &mut body);
    body.extend_from_slice(&scope);
    body
}

/// One record whose single attribute is a `kvlist` of `n` empty key-values: 2 bytes a
/// value on the wire, the nested-expansion case.
#[cfg(test)]
pub(crate) fn nested_attribute(n: usize) -> Vec<u8> {
    fn field(number: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2];
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }
    let kvlist = [0x0au8, 0x00].repeat(n); // KeyValueList.values (1), empty
    let any = field(6, &kvlist); // AnyValue.kvlist_value (6)
    let key_value = [field(1, b"a"), field(2, &any)].concat(); // KeyValue.key, .value
    let record = field(6, &key_value); // LogRecord.attributes (6)
    let scope = field(2, &record); // ScopeLogs.log_records (2)
    let resource = field(2, &scope); // ResourceLogs.scope_logs (2)
    field(1, &resource) // ExportLogsServiceRequest.resource_logs (1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_values_are_counted_at_every_depth() {
        let hostile = nested_attribute(MAX_LOG_ATTRIBUTES + 1);
        let err = check_protobuf_size(&hostile).expect_err("too many nested values");
        assert!(err.to_string().contains("attributes and values"), "{err}");
        assert!(check_protobuf_size(&nested_attribute(1000)).is_ok());

        // Deeper than any honest record: refused before decoding.
        let mut any = vec![0x0a, 0x01, b'x']; // AnyValue.string_value
        for _ in 0..=MAX_VALUE_DEPTH {
            let mut array = vec![0x0a]; // ArrayValue.values (1)
            prost::encoding::encode_varint(any.len() as u64, &mut array);
            array.extend_from_slice(&any);
            any = vec![0x2a]; // AnyValue.array_value (5)
            prost::encoding::encode_varint(array.len() as u64, &mut any);
            any.extend_from_slice(&array);
        }
        let mut record = vec![0x2a]; // LogRecord.body (5)
        prost::encoding::encode_varint(any.len() as u64, &mut record);
        record.extend_from_slice(&any);
        let mut scope = vec![0x12];
        prost::encoding::encode_varint(record.len() as u64, &mut scope);
        scope.extend_from_slice(&record);
        let mut resource = vec![0x12];
        prost::encoding::encode_varint(scope.len() as u64, &mut resource);
        resource.extend_from_slice(&scope);
        let mut body = vec![0x0a];
        prost::encoding::encode_varint(resource.len() as u64, &mut body);
        body.extend_from_slice(&resource);
        let err = check_protobuf_size(&body).expect_err("too deep");
        assert!(err.to_string().contains("nested"), "{err}");
    }

    #[test]
    fn structured_values_are_stored_as_json_and_lines_are_capped() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value};
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let s = |v: &str| AnyValue { value: Some(any_value::Value::StringValue(v.into())) };
        let kv = |k: &str, v: AnyValue| KeyValue { key: k.into(), value: Some(v), ..Default::default() };
        let nested = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![
                    kv(
                        "list",
                        AnyValue {
                            value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![s("a"), s("b")] })),
                        },
                    ),
                    kv("raw", AnyValue { value: Some(any_value::Value::BytesValue(vec![1, 2, 255])) }),
                ],
            })),
        };
        let request = |attributes: Vec<KeyValue>, body: AnyValue| ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: 5,
                        body: Some(body),
                        attributes,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let lines = lines_of(request(vec![kv("ctx", nested)], s("hello")));
        assert_eq!(
            serde_json::to_value(&lines[0].attributes).expect("json"),
            serde_json::json!({"ctx": {"list": ["a", "b"], "raw": "AQL/"}})
        );

        // A record far over the cap is stored cut to it, and says so.
        let big = "x".repeat(4 * MAX_LINE_BYTES);
        let many = (0..2000).map(|i| kv(&format!("k{i}"), s(&"y".repeat(100)))).collect();
        let lines = lines_of(request(many, s(&big)));
        let stored = serde_json::to_vec(&lines[0]).expect("json").len();
        assert!(stored <= MAX_LINE_BYTES, "{stored} bytes stored");
        assert!(lines[0].message.starts_with("xxx"));
        assert_eq!(lines[0].attributes.get("hale.truncated"), Some(&true.into()));
    }

    #[test]
    fn protobuf_requests_are_stored_as_their_decoded_lines_are() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use prost::Message;
        let s = |v: &str| AnyValue { value: Some(any_value::Value::StringValue(v.into())) };
        let kv = |k: &str, v: AnyValue| KeyValue { key: k.into(), value: Some(v), ..Default::default() };
        let record = |i: u64, message: &str, attrs: usize| LogRecord {
            time_unix_nano: 1_000 + i,
            severity_text: ["INFO", "error"][i as usize % 2].into(),
            body: Some(s(message)),
            attributes: (0..attrs).map(|a| kv(&format!("k{a}"), s(&"v".repeat(100)))).collect(),
            ..Default::default()
        };
        let resource = |instance: &str, records: Vec<LogRecord>| ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("orders")), kv("service.instance.id", s(instance))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
            ..Default::default()
        };
        // Two instances, one past what memory keeps; and a record far over the line cap.
        let request = ExportLogsServiceRequest {
            resource_logs: vec![
                resource("orders-1", (0..1200).map(|i| record(i, &format!("line {i}"), 2)).collect()),
                resource(
                    "orders-2",
                    vec![record(5000, &"x".repeat(3 * MAX_LINE_BYTES), 1000), record(5001, "after", 0)],
                ),
            ],
        };
        let body = request.encode_to_vec();
        let (a, b) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
        let (in_place, decoded) = (LogStore::open(a.path()).expect("open"), LogStore::open(b.path()).expect("open"));
        assert_eq!(in_place.append_otlp(&body, Some(("agent".into(), 1))).expect("stored"), 1202);
        decoded.append(lines_of(request), Some(("agent".into(), 1))).expect("stored");
        let segment = |dir: &Path| std::fs::read(segment_path(dir, 1)).expect("segment");
        assert_eq!(segment(a.path()), segment(b.path()), "the same bytes on disk");
        let all = Filter { until_ns: u64::MAX, ..Default::default() };
        assert_eq!(in_place.query(&all, 5000).expect("query"), decoded.query(&all, 5000).expect("query"));
        assert_eq!(in_place.query(&all, 5000).expect("query").len(), 1202, "memory or disk, every line");
        let capped = &in_place.query(&Filter { instance: Some("orders-2".into()), ..all.clone() }, 1).expect("q");
        assert_eq!(capped[0].message, "after");
        assert_eq!(in_place.last_error("orders", "orders-1").map(|l| l.message), Some("line 1199".into()));
        // Resent: stored once. Damaged: refused whole, nothing stored.
        assert_eq!(in_place.append_otlp(&body, Some(("agent".into(), 1))).expect("resent"), 0);
        let err = in_place.append_otlp(&body[..body.len() - 3], None).expect_err("cut");
        assert!(matches!(err, LogsError::BadRequest(_)), "{err}");
        assert_eq!(in_place.lines_stored.load(std::sync::atomic::Ordering::Relaxed), 1202);
    }

    #[test]
    fn concurrent_batches_share_fsyncs_and_each_is_stored_once_in_any_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = std::sync::Arc::new(LogStore::open(dir.path()).expect("open"));
        // Two sources, each sending batches 1..=100 from two threads at once in two
        // different orders: every batch twice, a retry racing its original.
        let senders: Vec<_> = (0..4u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let source = format!("agent-{}", t / 2);
                    let mut order: Vec<u64> = (1..=100).collect();
                    order.sort_by_key(|b| (b * 7919 + t * 31) % 101);
                    let mut stored = 0;
                    for b in order {
                        let lines: Vec<LogLine> =
                            (0..10).map(|i| line(b * 100 + i, "info", &format!("i-{}", t / 2))).collect();
                        loop {
                            match store.append(lines.clone(), Some((source.clone(), b))) {
                                Ok(n) => break stored += n,
                                Err(LogsError::Busy) => std::thread::yield_now(),
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    stored
                })
            })
            .collect();
        let stored: usize = senders.into_iter().map(|s| s.join().expect("sender")).sum();
        assert_eq!(stored, 2 * 100 * 10, "every batch once");
        drop(store);
        let reopened = LogStore::open(dir.path()).expect("reopen");
        let all = Filter { until_ns: u64::MAX, ..Default::default() };
        assert_eq!(reopened.query(&all, 5000).expect("query").len(), 2000);
        assert_eq!(reopened.append(vec![line(1, "info", "i-0")], Some(("agent-0".into(), 17))).expect("again"), 0);
    }

    fn line(i: u64, level: &str, instance: &str) -> LogLine {
        LogLine {
            time_unix_nano: 1_000 + i,
            service: "orders".into(),
            instance: instance.into(),
            node: "node-1".into(),
            level: level.into(),
            message: format!("line {i}"),
            attributes: Default::default(),
            trace_id: String::new(),
            span_id: String::new(),
        }
    }

    #[test]
    fn the_wire_prescan_counts_what_decoding_would_build() {
        use opentelemetry_proto::tonic::common::v1::KeyValue;
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use prost::Message;
        let record = |attrs: usize| LogRecord {
            time_unix_nano: 5,
            severity_number: 9,
            attributes: (0..attrs).map(|i| KeyValue { key: format!("k{i}"), ..Default::default() }).collect(),
            ..Default::default()
        };
        let scope = |records: Vec<LogRecord>| ScopeLogs { log_records: records, ..Default::default() };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![
                ResourceLogs {
                    scope_logs: vec![scope(vec![record(2), record(0)]), scope(vec![record(3)])],
                    ..Default::default()
                },
                ResourceLogs { scope_logs: vec![scope(vec![record(1)])], ..Default::default() },
            ],
        };
        let body = request.encode_to_vec();
        assert!(check_protobuf_size(&body).is_ok());
        let cut = check_protobuf_size(&body[..body.len() - 1]).expect_err("a cut body is refused");
        assert!(cut.to_string().contains("not an OTLP/protobuf logs request"), "{cut}");

        // Empty records are 2 bytes each on the wire: a 1 MiB body of them would decode to
        // hundreds of MiB. The pre-scan refuses it without decoding.
        let hostile = empty_records(MAX_LOG_RECORDS + 1);
        let err = check_protobuf_size(&hostile).expect_err("too many records");
        assert!(err.to_string().contains("send smaller batches"), "{err}");

        let json = serde_json::to_vec(&request).expect("json");
        assert!(check_json_size(&json).is_ok());
        assert_eq!(
            crate::otlp_scan::json_objects(br#"{"a":"{{{{\"{{{{","b":{}}"#),
            (2, 2),
            "braces in strings do not count"
        );
        let many =
            format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{}]}}]}}]}}"#, vec!["{}"; 2_200_001].join(","));
        let err = check_json_size(many.as_bytes()).expect_err("too many objects");
        assert!(err.to_string().contains("send smaller batches"), "{err}");
    }

    #[test]
    fn lines_dropped_from_memory_are_read_from_disk() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = LogStore::open(dir.path()).expect("open");
        s.append((0..1500).map(|i| line(i, "info", "orders-1")).collect(), None).expect("append");
        s.append(vec![line(2000, "info", "orders-2")], None).expect("append");
        let all = Filter { until_ns: u64::MAX, ..Default::default() };
        assert_eq!(s.query(&all, 1200).expect("query").len(), 1200, "more than memory holds");
        let early = Filter { contains: Some("line 3".into()), until_ns: u64::MAX, ..Default::default() };
        // "line 3", "line 30".."line 39", "line 300".."line 399": all only on disk now.
        let found = s.query(&early, 200).expect("query");
        assert_eq!(found.len(), 111);
        assert!(found.iter().any(|l| l.message == "line 3"));
        let newest = s.query(&all, 3).expect("query");
        assert_eq!(
            newest.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
            ["line 1498", "line 1499", "line 2000"]
        );
    }

    /// Found by tests/collector.rs (a line stored twice across a kill -9): the kernel may
    /// cut a large write short when the process is killed, leaving a batch's first lines
    /// in the segment but not its id at the end. Those lines counted as stored, the id did
    /// not, and the agent's resend stored them again. A batch is now framed by its length:
    /// a torn one is cut off at reopening, lines and all, so the resend stores it once.
    #[test]
    fn a_batch_torn_by_a_crash_is_dropped_whole_and_stored_once_when_sent_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let batch = |from: u64| -> Vec<LogLine> { (from..from + 50).map(|i| line(i, "info", "orders-1")).collect() };
        let segment = {
            let s = LogStore::open(dir.path()).expect("open");
            s.append(batch(0), Some(("a".into(), 1))).expect("append");
            let before = std::fs::metadata(segment_path(dir.path(), 1)).expect("segment").len();
            s.append(batch(100), Some(("a".into(), 2))).expect("append");
            // The second batch's write torn in the middle, as a kill -9 can leave it.
            let after = std::fs::metadata(segment_path(dir.path(), 1)).expect("segment").len();
            (before, after)
        };
        let path = segment_path(dir.path(), 1);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(segment.0 + (segment.1 - segment.0) / 2))
            .expect("tear");
        let s = LogStore::open(dir.path()).expect("reopen");
        let all = Filter { until_ns: u64::MAX, ..Default::default() };
        assert_eq!(s.query(&all, 1000).expect("query").len(), 50, "the torn batch's lines are gone");
        assert_eq!(std::fs::metadata(&path).expect("segment").len(), segment.0, "cut at the batch");
        assert_eq!(s.append(batch(100), Some(("a".into(), 2))).expect("resend"), 50, "the resend is stored");
        assert_eq!(s.append(batch(100), Some(("a".into(), 2))).expect("again"), 0);
        let stored = s.query(&all, 1000).expect("query");
        let mut messages: Vec<&str> = stored.iter().map(|l| l.message.as_str()).collect();
        messages.sort_unstable();
        messages.dedup();
        assert_eq!((stored.len(), messages.len()), (100, 100), "each line once");
    }

    #[test]
    fn stores_queries_and_survives_reopen_with_batch_ids() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let s = LogStore::open(dir.path()).expect("open");
            assert_eq!(
                s.append(
                    (0..10).map(|i| line(i, if i == 7 { "error" } else { "info" }, "orders-1")).collect(),
                    Some(("a".into(), 1))
                )
                .expect("append"),
                10
            );
            assert_eq!(
                s.append(vec![line(99, "info", "orders-1")], Some(("a".into(), 1))).expect("append"),
                0,
                "same batch id: stored once"
            );
            let all = Filter { until_ns: u64::MAX, ..Default::default() };
            assert_eq!(
                s.query(&all, 3).expect("query").iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
                ["line 7", "line 8", "line 9"]
            );
            let errors = Filter { level: Some("error".into()), until_ns: u64::MAX, ..Default::default() };
            assert_eq!(s.query(&errors, 10).expect("query").len(), 1);
            assert_eq!(s.last_error("orders", "orders-1").map(|l| l.message), Some("line 7".into()));
        }
        let s = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(
            s.append(vec![line(99, "info", "orders-1")], Some(("a".into(), 1))).expect("append"),
            0,
            "ids survive a restart"
        );
        let contains = Filter { contains: Some("line 3".into()), until_ns: u64::MAX, ..Default::default() };
        assert_eq!(s.query(&contains, 10).expect("query").len(), 1);
        let window = Filter { since_ns: 1_005, until_ns: 1_006, ..Default::default() };
        assert_eq!(s.query(&window, 10).expect("query").len(), 2);
        let none = Filter { since_ns: 5_000, until_ns: u64::MAX, contains: Some("line".into()), ..Default::default() };
        assert!(s.query(&none, 10).expect("query").is_empty(), "segments outside the window are skipped");
    }
}
