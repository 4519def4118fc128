//! Trace storage: OTLP spans in segment files, fsynced before they are acknowledged,
//! found again by trace id and by search, kept for the retention period and within a
//! byte bound.
//!
//! A request's spans are stored as one record per resource (`len | crc32 | payload`, the
//! payload an OTLP `ResourceSpans` protobuf holding only the spans not stored before), in
//! 64 MiB segments `traces/<id>.spans`. A span already stored (same trace and span id,
//! a sender's resend after a lost acknowledgement, even across a restart) is counted as a
//! duplicate, not stored again. Memory holds an index: per trace its records' places,
//! bounds, root and a few fields of each span (service, name, times, error), which search
//! filters on; attributes are read from disk for the traces a search inspects. Opening
//! reads every segment back (a torn tail is cut) and rebuilds the index. Retention
//! deletes whole segments: past the retention period, then the oldest beyond the bound.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData, status};
use prost::Message;

/// A segment is closed and a new one started past this size.
/// Spans one `/v1/traces` request may carry.
pub const MAX_SPANS: usize = 100_000;
/// Attributes, values, events and links one request may carry.
pub const MAX_SPAN_VALUES: usize = 1_000_000;
const MAX_VALUE_DEPTH: usize = 32;

/// An OTLP traces request's body (protobuf, or JSON with `json`), checked for size, count
/// and depth on its raw bytes before it is decoded, so a body cannot expand past the
/// limits; the error says what is wrong, for a 400.
pub fn decode_request(body: &[u8], json: bool) -> Result<ExportTraceServiceRequest, String> {
    use crate::otlp_scan::{Limits, Scan, Signal};
    if json {
        const MAX_OBJECTS: usize = MAX_SPANS + 2 * MAX_SPAN_VALUES;
        const MAX_NESTING: usize = 10 + 3 * MAX_VALUE_DEPTH;
        let (objects, nesting) = crate::otlp_scan::json_objects(body);
        if objects > MAX_OBJECTS {
            return Err(format!("{objects} JSON objects in one request; at most {MAX_OBJECTS}, send smaller batches"));
        }
        if nesting > MAX_NESTING {
            return Err(format!("JSON nested {nesting} levels deep; at most {MAX_NESTING} are accepted"));
        }
        return serde_json::from_slice(body).map_err(|e| format!("not an OTLP/JSON traces request: {e}"));
    }
    let limits = Limits { records: MAX_SPANS, values: MAX_SPAN_VALUES, depth: MAX_VALUE_DEPTH };
    crate::otlp_scan::check_protobuf(body, Signal::Traces, limits).map_err(|e| match e {
        Scan::Malformed(e) => format!("not an OTLP/protobuf traces request: {e}"),
        Scan::TooManyRecords => {
            format!("over {MAX_SPANS} spans in one request; at most {MAX_SPANS} are accepted, send smaller batches")
        }
        Scan::TooManyValues => {
            format!("over {MAX_SPAN_VALUES} attributes, values, events and links in one request; send smaller batches")
        }
        Scan::TooDeep => format!("a value nested over {MAX_VALUE_DEPTH} levels deep"),
    })?;
    ExportTraceServiceRequest::decode(body).map_err(|e| format!("not an OTLP/protobuf traces request: {e}"))
}

const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest record read back: a request's body is at most 8 MiB.
const MAX_RECORD: u32 = 32 << 20;
/// Distinct values kept per tag name for `/api/search/tag/<name>/values`.
const MAX_TAG_VALUES: usize = 1000;
/// Traces a search reads from disk to match attributes, at most.
const MAX_INSPECTED_FROM_DISK: usize = 5000;

pub type TraceId = [u8; 16];
type SpanId = [u8; 8];

#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("trace store I/O in {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    BadRequest(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TracesError + '_ {
    move |source| TracesError::Io { path: path.to_path_buf(), source }
}

/// What storing a request did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stored {
    pub spans: usize,
    /// Spans stored before (a resend).
    pub duplicates: usize,
    /// Spans without a valid trace or span id (16 and 8 bytes, not all zero).
    pub rejected: usize,
}

/// A span as search sees it.
#[derive(Debug, Clone)]
struct SpanMeta {
    service: Arc<str>,
    name: Arc<str>,
    start_ns: u64,
    end_ns: u64,
    error: bool,
}

#[derive(Debug, Default)]
struct TraceMeta {
    /// (segment, offset, length) of the records holding its spans.
    records: Vec<(u32, u64, u32)>,
    spans: Vec<SpanMeta>,
    /// Index in `spans` of the root (no parent).
    root: Option<usize>,
}

impl TraceMeta {
    fn start_ns(&self) -> u64 {
        self.spans.iter().map(|s| s.start_ns).min().unwrap_or(0)
    }
    fn end_ns(&self) -> u64 {
        self.spans.iter().map(|s| s.end_ns).max().unwrap_or(0)
    }
    /// The root span, or the earliest while the root has not arrived.
    fn root_span(&self) -> Option<&SpanMeta> {
        self.root.and_then(|i| self.spans.get(i)).or_else(|| self.spans.iter().min_by_key(|s| s.start_ns))
    }
}

#[derive(Debug, Default)]
struct SegmentInfo {
    bytes: u64,
    /// The latest span end in it.
    max_end_ns: u64,
}

#[derive(Default)]
struct Index {
    traces: HashMap<TraceId, TraceMeta>,
    seen: HashSet<(TraceId, SpanId)>,
    segments: BTreeMap<u32, SegmentInfo>,
    strings: HashSet<Arc<str>>,
    /// Values of resource and span string attributes by (scope, name), for tag listings.
    tags: BTreeMap<(Scope, String), BTreeSet<String>>,
}

/// Where an attribute is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Resource,
    Span,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Resource => "resource",
            Scope::Span => "span",
        }
    }
}

impl Index {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.strings.get(s) {
            return found.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.strings.insert(new.clone());
        new
    }

    fn note_tags(&mut self, scope: Scope, attributes: &[KeyValue]) {
        for kv in attributes {
            if let Some(any_value::Value::StringValue(v)) = kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                let values = self.tags.entry((scope, kv.key.clone())).or_default();
                if values.len() < MAX_TAG_VALUES || values.contains(v) {
                    values.insert(v.clone());
                }
            }
        }
    }

    /// Adds a stored record's spans.
    fn add(&mut self, (segment, offset, len): (u32, u64, u32), rs: &ResourceSpans) {
        let service = service_of(rs);
        let service = self.intern(&service);
        if let Some(resource) = &rs.resource {
            self.note_tags(Scope::Resource, &resource.attributes);
        }
        let info = self.segments.entry(segment).or_default();
        info.bytes = info.bytes.max(offset + u64::from(len));
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            let (Some(trace), Some(id)) = (trace_id(&span.trace_id), span_id(&span.span_id)) else { continue };
            self.seen.insert((trace, id));
            let end = span.end_time_unix_nano.max(span.start_time_unix_nano);
            if let Some(info) = self.segments.get_mut(&segment) {
                info.max_end_ns = info.max_end_ns.max(end);
            }
            let name = self.intern(&span.name);
            self.note_tags(Scope::Span, &span.attributes);
            let error = span.status.as_ref().is_some_and(|s| s.code == status::StatusCode::Error as i32);
            let meta = self.traces.entry(trace).or_default();
            if meta.records.last() != Some(&(segment, offset, len)) {
                meta.records.push((segment, offset, len));
            }
            if span_id(&span.parent_span_id).is_none() {
                meta.root = Some(meta.spans.len());
            }
            meta.spans.push(SpanMeta {
                service: service.clone(),
                name,
                start_ns: span.start_time_unix_nano,
                end_ns: end,
                error,
            });
        }
    }
}

/// A 16-byte trace id that is not all zeros.
pub fn trace_id(bytes: &[u8]) -> Option<TraceId> {
    let id: TraceId = bytes.try_into().ok()?;
    (id != [0; 16]).then_some(id)
}

fn span_id(bytes: &[u8]) -> Option<SpanId> {
    let id: SpanId = bytes.try_into().ok()?;
    (id != [0; 8]).then_some(id)
}

/// A resource's `service.name` (`unknown_service` without one, as OpenTelemetry says).
fn service_of(rs: &ResourceSpans) -> String {
    rs.resource
        .as_ref()
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| string_value(kv.value.as_ref()))
        .unwrap_or_else(|| "unknown_service".into())
}

/// An attribute value as text (strings as they are; numbers and booleans printed).
fn string_value(v: Option<&AnyValue>) -> Option<String> {
    match v?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What a search asks for.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Tags every matching trace has on some span (or its resource): `service.name`,
    /// `name` (a span's name), `status` (`error`, `ok`, `unset`), or any attribute.
    pub tags: Vec<(String, String)>,
    /// The trace's duration (earliest start to latest end).
    pub min_duration_ns: Option<u64>,
    pub max_duration_ns: Option<u64>,
    /// Some span of the trace lasts at least / at most this long.
    pub span_min_duration_ns: Option<u64>,
    pub span_max_duration_ns: Option<u64>,
    /// The trace overlaps `[start, end]` (ns).
    pub start_ns: Option<u64>,
    pub end_ns: Option<u64>,
    pub limit: usize,
}

/// The trace store.
pub struct TraceStore {
    dir: PathBuf,
    /// The open segment; held across a request's write and fsync, so a span checked as
    /// new is stored once even if its resend races it.
    writer: Mutex<Writer>,
    index: RwLock<Index>,
    pub spans_stored: std::sync::atomic::AtomicU64,
    pub spans_duplicate: std::sync::atomic::AtomicU64,
    /// RED metrics of the spans stored since start.
    pub metrics: crate::spanmetrics::SpanMetrics,
}

struct Writer {
    file: File,
    id: u32,
    len: u64,
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.spans"))
}

fn open_segment(dir: &Path, id: u32) -> Result<File, TracesError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = segment_path(dir, id);
    OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(io(&path))
}

impl TraceStore {
    /// Opens (or creates) the store in `dir`, reading every segment back.
    pub fn open(dir: &Path) -> Result<Self, TracesError> {
        hale_fs::create_private_dir(dir).map_err(io(dir))?;
        let mut ids: Vec<u32> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".spans")?.parse().ok())
            .collect();
        ids.sort_unstable();
        let mut index = Index::default();
        for (i, id) in ids.iter().enumerate() {
            let path = segment_path(dir, *id);
            let mut bytes = Vec::new();
            File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io(&path))?;
            let mut pos = 0usize;
            while pos + 8 <= bytes.len() {
                let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]);
                let crc = u32::from_le_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]);
                let end = pos + 8 + len as usize;
                if len > MAX_RECORD || end > bytes.len() || crc32fast::hash(&bytes[pos + 8..end]) != crc {
                    break;
                }
                let Ok(rs) = ResourceSpans::decode(&bytes[pos + 8..end]) else { break };
                index.add((*id, pos as u64 + 8, len), &rs);
                pos = end;
            }
            index.segments.entry(*id).or_default().bytes = pos as u64;
            if pos < bytes.len() {
                let lost = bytes.len() - pos;
                if i + 1 == ids.len() {
                    let f = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
                    f.set_len(pos as u64).and_then(|()| f.sync_all()).map_err(io(&path))?;
                    tracing::warn!(segment = id, bytes = lost, "traces: truncated a torn or damaged tail");
                } else {
                    tracing::error!(
                        segment = id,
                        bytes = lost,
                        "traces: damaged record in an older segment; its remainder is skipped"
                    );
                }
            }
        }
        let id = ids.last().map_or(1, |id| id + 1);
        let file = open_segment(dir, id)?;
        index.segments.entry(id).or_default();
        let stored = index.seen.len() as u64;
        Ok(TraceStore {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer { file, id, len: 0 }),
            index: RwLock::new(index),
            spans_stored: stored.into(),
            spans_duplicate: 0.into(),
            metrics: Default::default(),
        })
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the spans of `request` not stored before, durably: returns once they are
    /// fsynced.
    pub fn append(&self, request: ExportTraceServiceRequest) -> Result<Stored, TracesError> {
        let mut outcome = Stored::default();
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut records = Vec::new();
        {
            let index = self.read_index();
            let mut fresh: HashSet<(TraceId, SpanId)> = HashSet::new();
            for mut rs in request.resource_spans {
                for scope in &mut rs.scope_spans {
                    scope.spans.retain(|span| match (trace_id(&span.trace_id), span_id(&span.span_id)) {
                        (Some(t), Some(s)) if index.seen.contains(&(t, s)) || !fresh.insert((t, s)) => {
                            outcome.duplicates += 1;
                            false
                        }
                        (Some(_), Some(_)) => true,
                        _ => {
                            outcome.rejected += 1;
                            false
                        }
                    });
                }
                rs.scope_spans.retain(|s: &ScopeSpans| !s.spans.is_empty());
                if !rs.scope_spans.is_empty() {
                    outcome.spans += rs.scope_spans.iter().map(|s| s.spans.len()).sum::<usize>();
                    records.push(rs);
                }
            }
        }
        if records.is_empty() {
            self.spans_duplicate.fetch_add(outcome.duplicates as u64, std::sync::atomic::Ordering::Relaxed);
            return Ok(outcome);
        }
        if writer.len >= SEGMENT_BYTES {
            let id = writer.id + 1;
            writer.file = open_segment(&self.dir, id)?;
            writer.id = id;
            writer.len = 0;
            File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        }
        let mut bytes = Vec::new();
        let mut places = Vec::with_capacity(records.len());
        for rs in &records {
            let payload = rs.encode_to_vec();
            places.push((writer.id, writer.len + bytes.len() as u64 + 8, payload.len() as u32));
            bytes.extend_from_slice(&crate::store::wal::frame(&payload));
        }
        let path = segment_path(&self.dir, writer.id);
        if let Err(e) = writer.file.write_all(&bytes).and_then(|()| writer.file.sync_data()) {
            // What was written of this request is not indexed; cut it, so a retry starts clean.
            let _ = writer.file.set_len(writer.len);
            return Err(io(&path)(e));
        }
        writer.len += bytes.len() as u64;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for (place, rs) in places.into_iter().zip(&records) {
            index.add(place, rs);
        }
        drop(index);
        for rs in &records {
            self.metrics.observe(&service_of(rs), rs);
        }
        drop(writer);
        self.spans_stored.fetch_add(outcome.spans as u64, std::sync::atomic::Ordering::Relaxed);
        self.spans_duplicate.fetch_add(outcome.duplicates as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(outcome)
    }

    /// Reads the records at `places` back.
    fn read_records(&self, places: &[(u32, u64, u32)]) -> Vec<ResourceSpans> {
        let mut files: HashMap<u32, File> = HashMap::new();
        let mut out = Vec::new();
        for (segment, offset, len) in places {
            let path = segment_path(&self.dir, *segment);
            let file = match files.entry(*segment) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => match File::open(&path) {
                    Ok(f) => e.insert(f),
                    Err(err) => {
                        tracing::warn!(segment = %path.display(), error = %err, "traces: a segment went (retention?)");
                        continue;
                    }
                },
            };
            let mut buf = vec![0u8; *len as usize];
            match file.read_exact_at(&mut buf, *offset).ok().and_then(|()| ResourceSpans::decode(&buf[..]).ok()) {
                Some(rs) => out.push(rs),
                None => tracing::error!(segment = %path.display(), offset, "traces: a record could not be read back"),
            }
        }
        out
    }

    /// A trace's spans, grouped by resource and scope as they came; `None` if unknown.
    pub fn trace(&self, id: &TraceId) -> Option<TracesData> {
        let places = self.read_index().traces.get(id)?.records.clone();
        let mut resource_spans = self.read_records(&places);
        for rs in &mut resource_spans {
            for scope in &mut rs.scope_spans {
                scope.spans.retain(|s: &Span| s.trace_id.as_slice() == id.as_slice());
            }
            rs.scope_spans.retain(|s| !s.spans.is_empty());
        }
        resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        (!resource_spans.is_empty()).then_some(TracesData { resource_spans })
    }

    /// The traces matching `q`, newest first, at most `q.limit`.
    pub fn search(&self, q: &Search) -> hale_core::api::TraceSearch {
        let index = self.read_index();
        let mut candidates: Vec<(u64, TraceId)> = Vec::new();
        let mut inspected = 0u32;
        let mut attribute_tags = Vec::new();
        for (k, v) in &q.tags {
            if !matches!(k.as_str(), "service.name" | "name" | "status" | "rootServiceName" | "rootName") {
                attribute_tags.push((k.clone(), v.clone()));
            }
        }
        for (id, t) in &index.traces {
            inspected += 1;
            let (start, end) = (t.start_ns(), t.end_ns());
            let duration = end.saturating_sub(start);
            if q.start_ns.is_some_and(|s| end < s) || q.end_ns.is_some_and(|e| start > e) {
                continue;
            }
            if q.min_duration_ns.is_some_and(|m| duration < m) || q.max_duration_ns.is_some_and(|m| duration > m) {
                continue;
            }
            if (q.span_min_duration_ns.is_some() || q.span_max_duration_ns.is_some())
                && !t.spans.iter().any(|s| {
                    let d = s.end_ns.saturating_sub(s.start_ns);
                    q.span_min_duration_ns.is_none_or(|m| d >= m) && q.span_max_duration_ns.is_none_or(|m| d <= m)
                })
            {
                continue;
            }
            let root = t.root_span();
            let intrinsic = q.tags.iter().all(|(k, v)| match k.as_str() {
                "service.name" => t.spans.iter().any(|s| *s.service == **v),
                "name" => t.spans.iter().any(|s| *s.name == **v),
                "status" => match v.as_str() {
                    "error" => t.spans.iter().any(|s| s.error),
                    _ => !t.spans.iter().any(|s| s.error),
                },
                "rootServiceName" => root.is_some_and(|r| *r.service == **v),
                "rootName" => root.is_some_and(|r| *r.name == **v),
                _ => true,
            });
            if intrinsic {
                candidates.push((start, *id));
            }
        }
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        let mut found = Vec::new();
        let mut read_from_disk = 0;
        for (start, id) in candidates {
            if found.len() >= q.limit {
                break;
            }
            if !attribute_tags.is_empty() {
                if read_from_disk >= MAX_INSPECTED_FROM_DISK {
                    break;
                }
                read_from_disk += 1;
                let Some(meta) = index.traces.get(&id) else { continue };
                let records = self.read_records(&meta.records);
                let has = |key: &str, value: &str| {
                    records.iter().any(|rs| {
                        let resource = rs.resource.iter().flat_map(|r| &r.attributes);
                        let spans = rs
                            .scope_spans
                            .iter()
                            .flat_map(|s| &s.spans)
                            .filter(|s| s.trace_id.as_slice() == id.as_slice())
                            .flat_map(|s| &s.attributes);
                        resource
                            .chain(spans)
                            .any(|kv| kv.key == key && string_value(kv.value.as_ref()).as_deref() == Some(value))
                    })
                };
                if !attribute_tags.iter().all(|(k, v)| has(k, v)) {
                    continue;
                }
            }
            let Some(meta) = index.traces.get(&id) else { continue };
            let root = meta.root_span();
            found.push(hale_core::api::TraceSummary {
                trace_id: hex::encode(id),
                root_service_name: root.map(|r| r.service.to_string()).unwrap_or_default(),
                root_trace_name: root.map(|r| r.name.to_string()).unwrap_or_default(),
                start_time_unix_nano: start.to_string(),
                duration_ms: (meta.end_ns().saturating_sub(start) / 1_000_000).min(u64::from(u32::MAX)) as u32,
            });
        }
        hale_core::api::TraceSearch {
            traces: found,
            metrics: hale_core::api::SearchMetrics { inspected_traces: inspected },
        }
    }

    /// Tag names by scope: resource and span attributes seen, and the intrinsics search
    /// takes.
    pub fn tag_names(&self) -> Vec<(Scope, Vec<String>)> {
        let index = self.read_index();
        [Scope::Resource, Scope::Span]
            .into_iter()
            .map(|scope| (scope, index.tags.keys().filter(|(s, _)| *s == scope).map(|(_, n)| n.clone()).collect()))
            .collect()
    }

    /// Values seen of a tag (`service.name`, `name`, `status` or an attribute), sorted.
    pub fn tag_values(&self, name: &str) -> Vec<String> {
        let index = self.read_index();
        let mut out: BTreeSet<String> = BTreeSet::new();
        match name {
            "name" => out.extend(index.traces.values().flat_map(|t| t.spans.iter().map(|s| s.name.to_string()))),
            "status" => out.extend(["error", "ok", "unset"].map(String::from)),
            _ => {
                for scope in [Scope::Resource, Scope::Span] {
                    if let Some(values) = index.tags.get(&(scope, name.to_string())) {
                        out.extend(values.iter().cloned());
                    }
                }
            }
        }
        out.into_iter().take(MAX_TAG_VALUES).collect()
    }

    /// Deletes whole segments whose spans all ended before `min_ns`, then the oldest while
    /// the store is over `max_bytes` (0: no bound); the open segment stays. Returns the
    /// bytes freed.
    pub fn apply_retention(&self, min_ns: u64, max_bytes: u64) -> Result<u64, TracesError> {
        let current = self.writer.lock().unwrap_or_else(|p| p.into_inner()).id;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        let mut total: u64 = index.segments.values().map(|s| s.bytes).sum();
        let mut doomed = Vec::new();
        for (id, info) in &index.segments {
            if *id == current {
                break;
            }
            if info.max_end_ns < min_ns || (max_bytes > 0 && total > max_bytes) {
                doomed.push(*id);
                total -= info.bytes;
            }
        }
        let mut freed = 0;
        for id in &doomed {
            let path = segment_path(&self.dir, *id);
            std::fs::remove_file(&path).map_err(io(&path))?;
            freed += index.segments.remove(id).map_or(0, |s| s.bytes);
        }
        if !doomed.is_empty() {
            let doomed: HashSet<u32> = doomed.into_iter().collect();
            index.traces.retain(|_, t| {
                t.records.retain(|(segment, _, _)| !doomed.contains(segment));
                !t.records.is_empty()
            });
            let Index { traces, seen, .. } = &mut *index;
            seen.retain(|(t, _)| traces.contains_key(t));
        }
        Ok(freed)
    }

    /// (traces, spans, bytes on disk)
    pub fn stats(&self) -> (usize, usize, u64) {
        let index = self.read_index();
        (index.traces.len(), index.seen.len(), index.segments.values().map(|s| s.bytes).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Status;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
            ..Default::default()
        }
    }

    /// A span of trace `t`, id `s`, parent `p` (0: a root), from `start` for `ms`.
    fn span(t: u8, s: u8, p: u8, name: &str, start: u64, ms: u64, error: bool) -> Span {
        Span {
            trace_id: vec![t; 16],
            span_id: vec![s; 8],
            parent_span_id: if p == 0 { Vec::new() } else { vec![p; 8] },
            name: name.into(),
            start_time_unix_nano: start,
            end_time_unix_nano: start + ms * 1_000_000,
            attributes: vec![kv("http.route", &format!("/{name}"))],
            status: error.then(|| Status { code: status::StatusCode::Error as i32, message: "boom".into() }),
            ..Default::default()
        }
    }

    fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    const T0: u64 = 1_700_000_000_000_000_000;

    fn purchase(store: &TraceStore) {
        store.append(request("gateway", vec![span(1, 1, 0, "POST /buy", T0, 120, false)])).expect("gateway");
        store
            .append(request("orders", vec![span(1, 2, 1, "INSERT orders", T0 + 1_000_000, 80, false)]))
            .expect("orders");
        store
            .append(request("catalog", vec![span(2, 3, 0, "GET /items", T0 + 5_000_000_000, 3, true)]))
            .expect("catalog");
    }

    #[test]
    fn spans_are_found_by_trace_and_search_and_stored_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = TraceStore::open(dir.path()).expect("open");
        purchase(&store);
        let trace = store.trace(&[1; 16]).expect("trace 1");
        let services: Vec<String> = trace.resource_spans.iter().map(service_of).collect();
        assert_eq!(services, ["gateway", "orders"]);
        assert!(store.trace(&[9; 16]).is_none());
        // A resend is counted, not stored.
        let again = store.append(request("orders", vec![span(1, 2, 1, "INSERT orders", T0 + 1_000_000, 80, false)]));
        assert_eq!(again.expect("resend"), Stored { spans: 0, duplicates: 1, rejected: 0 });
        assert_eq!(store.trace(&[1; 16]).expect("trace").resource_spans.len(), 2);
        // Invalid ids are refused.
        let mut bad = span(3, 0, 0, "x", T0, 1, false);
        bad.span_id = vec![1, 2];
        assert_eq!(store.append(request("x", vec![bad])).expect("bad").rejected, 1);

        let all = store.search(&Search { limit: 10, ..Default::default() });
        let ids: Vec<&str> = all.traces.iter().map(|t| t.trace_id.as_str()).collect();
        assert_eq!(ids, ["02020202020202020202020202020202", "01010101010101010101010101010101"], "newest first");
        let t1 = &all.traces[1];
        assert_eq!(
            (t1.root_service_name.as_str(), t1.root_trace_name.as_str(), t1.duration_ms),
            ("gateway", "POST /buy", 120)
        );
        assert_eq!(t1.start_time_unix_nano, T0.to_string());
        let q = |tags: &[(&str, &str)], min_ms: Option<u64>| {
            let tags = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let found = store.search(&Search {
                tags,
                min_duration_ns: min_ms.map(|m| m * 1_000_000),
                limit: 10,
                ..Default::default()
            });
            found.traces.into_iter().map(|t| t.trace_id[..2].to_string()).collect::<Vec<_>>()
        };
        assert_eq!(q(&[("service.name", "orders")], None), ["01"]);
        assert_eq!(q(&[("status", "error")], None), ["02"]);
        assert_eq!(q(&[("name", "INSERT orders"), ("service.name", "orders")], None), ["01"]);
        assert_eq!(q(&[], Some(100)), ["01"], "by duration");
        assert_eq!(q(&[("http.route", "/GET /items")], None), ["02"], "by an attribute, read from disk");
        assert!(q(&[("http.route", "/nowhere")], None).is_empty());
        assert_eq!(
            store.tag_values("service.name"),
            ["catalog", "gateway", "orders", "x"]
                .map(String::from)
                .to_vec()
                .into_iter()
                .filter(|s| s != "x")
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_restart_finds_every_span_and_still_recognises_resends() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let store = TraceStore::open(dir.path()).expect("open");
            purchase(&store);
        }
        // A torn tail: half a record after the last whole one.
        let last = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.path())
            .filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
            .max()
            .expect("a segment");
        let mut f = OpenOptions::new().append(true).open(&last).expect("open");
        f.write_all(&[200, 0, 0, 0, 1, 2]).expect("tear");
        drop(f);
        let store = TraceStore::open(dir.path()).expect("reopen");
        assert_eq!(store.stats().1, 3, "every span back");
        assert_eq!(store.trace(&[1; 16]).expect("trace").resource_spans.len(), 2);
        let again = store.append(request("gateway", vec![span(1, 1, 0, "POST /buy", T0, 120, false)])).expect("resend");
        assert_eq!(again.duplicates, 1, "known after a restart");
        store.append(request("late", vec![span(4, 4, 0, "x", T0, 1, false)])).expect("append after the tear");
        drop(store);
        assert_eq!(TraceStore::open(dir.path()).expect("reopen").stats().1, 4);
    }

    #[test]
    fn retention_deletes_whole_old_segments() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let store = TraceStore::open(dir.path()).expect("open");
            purchase(&store);
        }
        // The next run writes to a new segment: the first one is closed.
        let store = TraceStore::open(dir.path()).expect("reopen");
        store.append(request("new", vec![span(5, 5, 0, "new", T0 + 100_000_000_000, 1, false)])).expect("append");
        assert!(store.apply_retention(T0 + 50_000_000_000, 0).expect("retention") > 0);
        assert!(store.trace(&[1; 16]).is_none() && store.trace(&[2; 16]).is_none());
        assert!(store.trace(&[5; 16]).is_some(), "the open segment stays");
        assert_eq!(store.search(&Search { limit: 10, ..Default::default() }).traces.len(), 1);
        // A resend of a span past retention is stored again (it is new to the store).
        assert_eq!(
            store.append(request("gateway", vec![span(1, 1, 0, "POST /buy", T0, 120, false)])).expect("again").spans,
            1
        );
    }
}
