//! A pre-scan of OTLP request bodies, logs and traces alike: what decoding would build is
//! counted on the raw bytes first, and a body over the limits is refused before it is
//! expanded. A protobuf body is walked by message type (an empty record or key-value is
//! 2 bytes on the wire and hundreds in memory); a JSON body's objects and nesting are
//! counted outside strings.

/// Which OTLP signal a body carries: its messages nest differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Logs,
    Traces,
}

/// The most records (log records, spans), attributes and values at every depth (events
/// and links of spans count as values), and nesting of array and key-value-list values
/// one request may have.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub records: usize,
    pub values: usize,
    pub depth: usize,
}

/// Why a body was refused.
#[derive(Debug, PartialEq)]
pub enum Scan {
    Malformed(String),
    TooManyRecords,
    TooManyValues,
    TooDeep,
}

/// The OTLP messages that nest, for [`walk`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Message {
    LogsRequest,
    ResourceLogs,
    ScopeLogs,
    LogRecord,
    TracesRequest,
    ResourceSpans,
    ScopeSpans,
    Span,
    Event,
    Link,
    Resource,
    Scope,
    KeyValue,
    Any,
    Array,
    KvList,
}

impl Message {
    /// The message a length-delimited field of `self` holds, for the fields that nest
    /// (field numbers from opentelemetry-proto's logs, trace, resource and common messages).
    fn child(self, field: u32) -> Option<Message> {
        use Message::*;
        match (self, field) {
            (LogsRequest, 1) => Some(ResourceLogs),
            (ResourceLogs, 1) | (ResourceSpans, 1) => Some(Resource),
            (ResourceLogs, 2) => Some(ScopeLogs),
            (ScopeLogs, 1) | (ScopeSpans, 1) => Some(Scope),
            (ScopeLogs, 2) => Some(LogRecord),
            (TracesRequest, 1) => Some(ResourceSpans),
            (ResourceSpans, 2) => Some(ScopeSpans),
            (ScopeSpans, 2) => Some(Span),
            (Span, 11) => Some(Event),
            (Span, 13) => Some(Link),
            (Resource, 1) | (Scope, 3) | (LogRecord, 6) | (KvList, 1) | (Span, 9) | (Event, 3) | (Link, 4) => {
                Some(KeyValue)
            }
            (LogRecord, 5) | (KeyValue, 2) | (Array, 1) => Some(Any),
            (Any, 5) => Some(Array),
            (Any, 6) => Some(KvList),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    records: usize,
    values: usize,
}

/// Walks an OTLP/protobuf request of `signal` without decoding it, refusing it at the
/// first limit passed.
pub fn check_protobuf(body: &[u8], signal: Signal, limits: Limits) -> Result<(), Scan> {
    let root = match signal {
        Signal::Logs => Message::LogsRequest,
        Signal::Traces => Message::TracesRequest,
    };
    walk(body, root, 0, &mut Counts::default(), limits)
}

/// Walks one `msg` in `buf`, counting records and attributes/values; `depth` counts the
/// array and key-value-list values around it.
fn walk(mut buf: &[u8], msg: Message, depth: usize, counts: &mut Counts, limits: Limits) -> Result<(), Scan> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    match msg {
        Message::LogRecord | Message::Span => counts.records += 1,
        Message::KeyValue | Message::Any | Message::Event | Message::Link => counts.values += 1,
        _ => {}
    }
    if counts.records > limits.records {
        return Err(Scan::TooManyRecords);
    }
    if counts.values > limits.values {
        return Err(Scan::TooManyValues);
    }
    let depth = depth + usize::from(matches!(msg, Message::Array | Message::KvList));
    if depth > limits.depth {
        return Err(Scan::TooDeep);
    }
    let malformed = |e: prost::DecodeError| Scan::Malformed(e.to_string());
    let past_end = || Scan::Malformed("a field runs past the end of the body".into());
    while !buf.is_empty() {
        let (number, wire) = decode_key(&mut buf).map_err(malformed)?;
        let skip = match wire {
            WireType::Varint => {
                decode_varint(&mut buf).map_err(malformed)?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).map_err(malformed)?).unwrap_or(usize::MAX);
                if len > buf.len() {
                    return Err(past_end());
                }
                if let Some(child) = msg.child(number) {
                    walk(&buf[..len], child, depth, counts, limits)?;
                }
                len
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(Scan::Malformed("protobuf groups are not used by OTLP".into()));
            }
        };
        if skip > buf.len() {
            return Err(past_end());
        }
        buf = &buf[skip..];
    }
    Ok(())
}

/// The `{` of a JSON text that are not inside strings, and the deepest nesting of `{`/`[`.
pub fn json_objects(body: &[u8]) -> (usize, usize) {
    let (mut objects, mut in_string, mut escaped) = (0usize, false, false);
    let (mut depth, mut deepest) = (0usize, 0usize);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    objects += usize::from(b == b'{');
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    (objects, deepest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
    use prost::Message as _;

    const WIDE: Limits = Limits { records: 1000, values: 1000, depth: 32 };

    fn attrs(n: usize) -> Vec<KeyValue> {
        (0..n).map(|i| KeyValue { key: format!("k{i}"), ..Default::default() }).collect()
    }

    #[test]
    fn logs_records_and_values_are_counted_and_a_cut_body_refused() {
        let record = |n| LogRecord { attributes: attrs(n), ..Default::default() };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record(2), record(0), record(3)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let body = request.encode_to_vec();
        assert_eq!(check_protobuf(&body, Signal::Logs, WIDE), Ok(()));
        let tight = Limits { records: 2, ..WIDE };
        assert_eq!(check_protobuf(&body, Signal::Logs, tight), Err(Scan::TooManyRecords));
        let tight = Limits { values: 4, ..WIDE };
        assert_eq!(check_protobuf(&body, Signal::Logs, tight), Err(Scan::TooManyValues));
        assert!(matches!(check_protobuf(&body[..body.len() - 1], Signal::Logs, WIDE), Err(Scan::Malformed(_))));
    }

    #[test]
    fn spans_their_attributes_events_and_links_are_counted() {
        let span = |n| Span {
            attributes: attrs(n),
            events: vec![span::Event { attributes: attrs(1), ..Default::default() }],
            links: vec![span::Link::default()],
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans { spans: vec![span(2), span(1)], ..Default::default() }],
                ..Default::default()
            }],
        };
        let body = request.encode_to_vec();
        assert_eq!(check_protobuf(&body, Signal::Traces, WIDE), Ok(()));
        // Two spans; values: 3 attributes + 2 events + 2 event attributes + 2 links = 9.
        assert_eq!(check_protobuf(&body, Signal::Traces, Limits { records: 1, ..WIDE }), Err(Scan::TooManyRecords));
        assert_eq!(check_protobuf(&body, Signal::Traces, Limits { values: 8, ..WIDE }), Err(Scan::TooManyValues));
        assert_eq!(check_protobuf(&body, Signal::Traces, Limits { values: 9, ..WIDE }), Ok(()));
    }

    #[test]
    fn json_objects_are_counted_outside_strings() {
        assert_eq!(json_objects(br#"{"a":[{"b":"{{{"},{}]}"#), (3, 3));
        assert_eq!(json_objects(br#"{"a":"\"{"}"#), (1, 1));
    }
}
