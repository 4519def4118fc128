//! OTLP/protobuf log requests read in place, straight into the lines the store writes.
//!
//! Why not prost's generated types: decoding a request with them allocates a `String` for
//! every attribute key and value of every record, and flattening them into
//! [`LogLine`](super::LogLine)s allocates as much again — 1.3 µs a line, half of what the
//! collector spent storing a log line. Here each record is read as slices of the request
//! body (strings are checked to be UTF-8, as prost checks them) and written out as the
//! stored JSON line directly. The answer is the one prost's types give, message for
//! message: a test holds the two paths to the same bytes for arbitrary requests, and to
//! the same refusals for damaged ones.
//!
//! Protobuf semantics kept: fields in any order; unknown fields skipped; a known field
//! with the wrong wire type refused; a singular message field seen twice merged (its
//! repeated fields appended, its scalars replaced), as if its occurrences were one.
//!
//! The body was pre-scanned ([`super::check_protobuf_size`]): record, value and depth
//! counts are bounded before anything here runs.

use std::borrow::Cow;

use prost::encoding::{WireType, decode_varint};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};

/// Why a body is not an OTLP/protobuf logs request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn malformed(e: prost::DecodeError) -> Malformed {
    Malformed(e.to_string())
}

/// An OTLP `AnyValue`, borrowing its strings and bytes from the request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// No value set.
    Empty,
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Array(Vec<Value<'a>>),
    KvList(Vec<(&'a str, Value<'a>)>),
    /// An index into a dictionary that only profiles carry.
    Strindex(i32),
}

/// A log record, borrowing from the request body.
#[derive(Debug, Default)]
pub struct Record<'a> {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_text: &'a str,
    pub body: Option<Value<'a>>,
    pub attributes: Vec<(&'a str, Value<'a>)>,
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    /// Bytes the record took on the wire.
    pub wire_len: usize,
}

/// The names a resource gives its records.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Resource<'a> {
    pub service: &'a str,
    pub instance: &'a str,
    pub node: &'a str,
}

/// One field of a message: its number and what it holds.
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32,
    Bytes(&'a [u8]),
}

impl<'a> Field<'a> {
    fn bytes(self, what: &str) -> Result<&'a [u8], Malformed> {
        match self {
            Field::Bytes(b) => Ok(b),
            _ => Err(Malformed(format!("invalid wire type for {what}"))),
        }
    }

    fn str(self, what: &str) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| {
            Malformed(format!(
                "failed to decode Protobuf message: {what}: invalid string value: data is not UTF-8 encoded"
            ))
        })
    }

    fn varint(self, what: &str) -> Result<u64, Malformed> {
        match self {
            Field::Varint(v) => Ok(v),
            _ => Err(Malformed(format!("invalid wire type for {what}"))),
        }
    }

    fn fixed64(self, what: &str) -> Result<[u8; 8], Malformed> {
        match self {
            Field::Fixed64(v) => Ok(v),
            _ => Err(Malformed(format!("invalid wire type for {what}"))),
        }
    }
}

/// A varint, with a fast path for the one- and two-byte ones (tags, short lengths).
#[inline(always)]
fn varint(buf: &mut &[u8]) -> Result<u64, Malformed> {
    match *buf {
        [b, rest @ ..] if *b < 0x80 => {
            *buf = rest;
            Ok(u64::from(*b))
        }
        [b0, b1, rest @ ..] if *b1 < 0x80 => {
            *buf = rest;
            Ok(u64::from(*b0 & 0x7f) | (u64::from(*b1) << 7))
        }
        _ => decode_varint(buf).map_err(malformed),
    }
}

/// Calls `f` with each field of the message in `buf`, in wire order.
#[inline(always)]
fn fields<'a>(mut buf: &'a [u8], mut f: impl FnMut(u32, Field<'a>) -> Result<(), Malformed>) -> Result<(), Malformed> {
    let past_end = || Malformed("a field runs past the end of the body".into());
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        if key > u64::from(u32::MAX) {
            return Err(Malformed(format!("invalid key value: {key}")));
        }
        let number = (key >> 3) as u32;
        if number == 0 {
            return Err(Malformed("invalid tag value: 0".into()));
        }
        let wire = WireType::try_from(key & 7).map_err(malformed)?;
        let field = match wire {
            WireType::Varint => Field::Varint(varint(&mut buf)?),
            WireType::SixtyFourBit => {
                let (head, rest) = buf.split_first_chunk::<8>().ok_or_else(past_end)?;
                buf = rest;
                Field::Fixed64(*head)
            }
            WireType::ThirtyTwoBit => {
                buf = buf.get(4..).ok_or_else(past_end)?;
                Field::Fixed32
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(varint(&mut buf)?).unwrap_or(usize::MAX);
                if len > buf.len() {
                    return Err(past_end());
                }
                let (head, rest) = buf.split_at(len);
                buf = rest;
                Field::Bytes(head)
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(Malformed("protobuf groups are not used by OTLP".into()));
            }
        };
        f(number, field)?;
    }
    Ok(())
}

/// Merges one occurrence of an `AnyValue` message into `value`: a scalar replaces what
/// was there, an array or key-value list extends one of its kind.
fn merge_value<'a>(buf: &'a [u8], value: &mut Value<'a>) -> Result<(), Malformed> {
    fields(buf, |number, field| {
        match number {
            1 => *value = Value::Str(field.str("AnyValue.string_value")?),
            2 => *value = Value::Bool(field.varint("AnyValue.bool_value")? != 0),
            3 => *value = Value::Int(field.varint("AnyValue.int_value")? as i64),
            4 => *value = Value::Double(f64::from_le_bytes(field.fixed64("AnyValue.double_value")?)),
            5 => {
                let bytes = field.bytes("AnyValue.array_value")?;
                if !matches!(value, Value::Array(_)) {
                    *value = Value::Array(Vec::new());
                }
                let Value::Array(items) = value else { unreachable!("just made an array") };
                fields(bytes, |number, field| {
                    if number == 1 {
                        let mut item = Value::Empty;
                        merge_value(field.bytes("ArrayValue.values")?, &mut item)?;
                        items.push(item);
                    }
                    Ok(())
                })?;
            }
            6 => {
                let bytes = field.bytes("AnyValue.kvlist_value")?;
                if !matches!(value, Value::KvList(_)) {
                    *value = Value::KvList(Vec::new());
                }
                let Value::KvList(pairs) = value else { unreachable!("just made a list") };
                fields(bytes, |number, field| {
                    if number == 1 {
                        pairs.push(key_value(field.bytes("KeyValueList.values")?)?);
                    }
                    Ok(())
                })?;
            }
            7 => *value = Value::Bytes(field.bytes("AnyValue.bytes_value")?),
            8 => *value = Value::Strindex(field.varint("AnyValue.string_value_strindex")? as i32),
            _ => {}
        }
        Ok(())
    })
}

/// A `KeyValue`; a missing value is [`Value::Empty`].
fn key_value(buf: &[u8]) -> Result<(&str, Value<'_>), Malformed> {
    let (mut key, mut value) = ("", Value::Empty);
    fields(buf, |number, field| {
        match number {
            1 => key = field.str("KeyValue.key")?,
            2 => merge_value(field.bytes("KeyValue.value")?, &mut value)?,
            3 => {
                field.varint("KeyValue.key_strindex")?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok((key, value))
}

/// Reads one `LogRecord` into `record` (cleared first; its attribute list is reused).
fn record<'a>(buf: &'a [u8], record: &mut Record<'a>) -> Result<(), Malformed> {
    record.time_unix_nano = 0;
    record.observed_time_unix_nano = 0;
    record.severity_text = "";
    record.body = None;
    record.attributes.clear();
    record.trace_id = &[];
    record.span_id = &[];
    record.wire_len = buf.len();
    fields(buf, |number, field| {
        match number {
            1 => record.time_unix_nano = u64::from_le_bytes(field.fixed64("LogRecord.time_unix_nano")?),
            11 => {
                record.observed_time_unix_nano = u64::from_le_bytes(field.fixed64("LogRecord.observed_time_unix_nano")?)
            }
            2 | 7 => {
                field.varint("LogRecord")?;
            }
            3 => record.severity_text = field.str("LogRecord.severity_text")?,
            5 => merge_value(field.bytes("LogRecord.body")?, record.body.get_or_insert(Value::Empty))?,
            6 => record.attributes.push(key_value(field.bytes("LogRecord.attributes")?)?),
            8 if !matches!(field, Field::Fixed32) => {
                return Err(Malformed("invalid wire type for LogRecord.flags".into()));
            }
            9 => record.trace_id = field.bytes("LogRecord.trace_id")?,
            10 => record.span_id = field.bytes("LogRecord.span_id")?,
            12 => {
                field.str("LogRecord.event_name")?;
            }
            _ => {}
        }
        Ok(())
    })
}

/// Checks an `InstrumentationScope` (its contents are not kept, but a damaged one refuses
/// the request, as decoding it would).
fn scope(buf: &[u8]) -> Result<(), Malformed> {
    fields(buf, |number, field| {
        match number {
            1 | 2 => {
                field.str("InstrumentationScope")?;
            }
            3 => {
                key_value(field.bytes("InstrumentationScope.attributes")?)?;
            }
            4 => {
                field.varint("InstrumentationScope.dropped_attributes_count")?;
            }
            _ => {}
        }
        Ok(())
    })
}

/// Checks a resource's `EntityRef` (not kept either).
fn entity_ref(buf: &[u8]) -> Result<(), Malformed> {
    fields(buf, |number, field| {
        if (1..=4).contains(&number) {
            field.str("EntityRef")?;
        }
        Ok(())
    })
}

/// The first value of `key` among a resource's attributes, if it is a string.
fn resource_name<'a>(attributes: &[(&'a str, Value<'a>)], key: &str) -> Option<&'a str> {
    match attributes.iter().find(|(k, _)| *k == key)?.1 {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

/// Calls `f` with every record of an OTLP/protobuf logs request, and its resource's names
/// (`service.name`, else "unknown"; `service.instance.id`, else the service;
/// `host.name`, else empty).
pub fn for_each_record<'a>(
    body: &'a [u8],
    mut f: impl FnMut(&Resource<'a>, &Record<'a>) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    let mut current = Record::default();
    let mut resource_attributes = Vec::new();
    let mut scopes: Vec<&'a [u8]> = Vec::new();
    fields(body, |number, field| {
        if number != 1 {
            return Ok(());
        }
        // One ResourceLogs: its resource may come after its records on the wire.
        resource_attributes.clear();
        scopes.clear();
        fields(field.bytes("ExportLogsServiceRequest.resource_logs")?, |number, field| {
            match number {
                1 => fields(field.bytes("ResourceLogs.resource")?, |number, field| {
                    match number {
                        1 => resource_attributes.push(key_value(field.bytes("Resource.attributes")?)?),
                        2 => {
                            field.varint("Resource.dropped_attributes_count")?;
                        }
                        3 => entity_ref(field.bytes("Resource.entity_refs")?)?,
                        _ => {}
                    }
                    Ok(())
                })?,
                2 => scopes.push(field.bytes("ResourceLogs.scope_logs")?),
                3 => {
                    field.str("ResourceLogs.schema_url")?;
                }
                _ => {}
            }
            Ok(())
        })?;
        let service = resource_name(&resource_attributes, "service.name").unwrap_or("unknown");
        let resource = Resource {
            service,
            instance: resource_name(&resource_attributes, "service.instance.id").unwrap_or(service),
            node: resource_name(&resource_attributes, "host.name").unwrap_or(""),
        };
        for scope_logs in &scopes {
            fields(scope_logs, |number, field| {
                match number {
                    1 => scope(field.bytes("ScopeLogs.scope")?)?,
                    2 => {
                        record(field.bytes("ScopeLogs.log_records")?, &mut current)?;
                        f(&resource, &current)?;
                    }
                    3 => {
                        field.str("ScopeLogs.schema_url")?;
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(())
    })
}

/// Key-value pairs as a JSON object, as [`super::Attributes`] (a `BTreeMap`) writes them:
/// in key order, the last of equal keys kept.
struct Object<'r, 'a>(&'r [(&'a str, Value<'a>)]);

impl Serialize for Object<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut order: Vec<usize> = (0..self.0.len()).collect();
        order.sort_by_key(|&i| self.0[i].0); // stable: equal keys stay in wire order
        let mut map = s.serialize_map(None)?;
        for (n, &i) in order.iter().enumerate() {
            if order.get(n + 1).is_some_and(|&next| self.0[next].0 == self.0[i].0) {
                continue;
            }
            map.serialize_entry(self.0[i].0, &self.0[i].1)?;
        }
        map.end()
    }
}

impl Serialize for Value<'_> {
    /// As [`super::AttributeValue`] writes the value `any_to_json` makes of it.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        match self {
            Value::Empty => s.serialize_unit(),
            Value::Str(v) => s.serialize_str(v),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::Int(v) => s.serialize_i64(*v),
            Value::Double(v) if v.is_finite() => s.serialize_f64(*v),
            Value::Double(_) => s.serialize_unit(),
            Value::Bytes(v) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v)),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::KvList(pairs) => Object(pairs).serialize(s),
            Value::Strindex(i) => s.serialize_i64(i64::from(*i)),
        }
    }
}

/// A record as the stored line's JSON: the fields of [`super::LogLine`], in its order.
#[derive(Serialize)]
pub struct StoredLine<'r, 'a> {
    pub time_unix_nano: u64,
    pub service: &'a str,
    pub instance: &'a str,
    pub node: &'a str,
    pub level: Cow<'a, str>,
    pub message: Cow<'a, str>,
    #[serde(skip_serializing_if = "attributes_empty")]
    attributes: Object<'r, 'a>,
    #[serde(skip_serializing_if = "String::is_empty")]
    trace_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    span_id: String,
}

/// A W3C id of `len` bytes as lowercase hex; empty for anything else (no id, a wrong
/// length, all zeros: OTLP's "no span").
pub fn hex_id(bytes: &[u8], len: usize) -> String {
    if bytes.len() != len || bytes.iter().all(|b| *b == 0) {
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes_empty(a: &Object<'_, '_>) -> bool {
    a.0.is_empty()
}

impl<'r, 'a> StoredLine<'r, 'a> {
    /// The line a record makes, as [`super::lines_of`] makes it.
    pub fn new(resource: &Resource<'a>, record: &'r Record<'a>) -> Self {
        let level = match record.severity_text {
            "" => Cow::Borrowed("unknown"),
            text if text.bytes().any(|b| b.is_ascii_uppercase()) || !text.is_ascii() => Cow::Owned(text.to_lowercase()),
            text => Cow::Borrowed(text),
        };
        let message = match &record.body {
            None => Cow::Borrowed(""),
            Some(Value::Str(s)) => Cow::Borrowed(*s),
            // Bytes are their base64 text, a string like any other.
            Some(Value::Bytes(b)) => Cow::Owned(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b)),
            Some(other) => Cow::Owned(serde_json::to_string(other).unwrap_or_default()),
        };
        StoredLine {
            time_unix_nano: if record.time_unix_nano > 0 {
                record.time_unix_nano
            } else {
                record.observed_time_unix_nano
            },
            service: resource.service,
            instance: resource.instance,
            node: resource.node,
            level,
            message,
            attributes: Object(&record.attributes),
            trace_id: hex_id(record.trace_id, 16),
            span_id: hex_id(record.span_id, 8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
    use proptest::prelude::*;
    use prost::Message;

    fn any_value() -> impl Strategy<Value = Option<any_value::Value>> {
        use any_value::Value as V;
        let leaf = prop_oneof![
            Just(None),
            "[a-zA-Z0-9 \"\\\\\n\t\u{1}é€😀]{0,12}".prop_map(|s| Some(V::StringValue(s))),
            any::<bool>().prop_map(|b| Some(V::BoolValue(b))),
            any::<i64>().prop_map(|i| Some(V::IntValue(i))),
            prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(3.0), Just(-0.0)]
                .prop_map(|d| Some(V::DoubleValue(d))),
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(|b| Some(V::BytesValue(b))),
            any::<i32>().prop_map(|i| Some(V::StringValueStrindex(i))),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(|values| Some(any_value::Value::ArrayValue(
                    ArrayValue { values: values.into_iter().map(|value| AnyValue { value }).collect() }
                ))),
                proptest::collection::vec((key(), inner), 0..4).prop_map(|pairs| Some(any_value::Value::KvlistValue(
                    KeyValueList { values: pairs.into_iter().map(kv).collect() }
                ))),
            ]
        })
    }

    /// Keys from a small set, so that records repeat them.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("Z".to_string()),
            Just("é".to_string()),
            Just(String::new()),
            Just("service.name".to_string()),
            Just("host.name".to_string()),
            Just("service.instance.id".to_string()),
        ]
    }

    fn kv((key, value): (String, Option<any_value::Value>)) -> KeyValue {
        KeyValue { key, value: value.map(|value| AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn record() -> impl Strategy<Value = LogRecord> {
        (
            prop_oneof![Just(0u64), any::<u64>()],
            any::<u64>(),
            prop_oneof![Just(""), Just("INFO"), Just("warn"), Just("ÉRREUR"), Just("Error")],
            proptest::option::of(any_value()),
            proptest::collection::vec((key(), any_value()), 0..6),
        )
            .prop_map(|(time, observed, severity, body, attributes)| LogRecord {
                time_unix_nano: time,
                observed_time_unix_nano: observed,
                severity_text: severity.to_string(),
                body: body.map(|value| AnyValue { value }),
                attributes: attributes.into_iter().map(kv).collect(),
                ..Default::default()
            })
    }

    fn request() -> impl Strategy<Value = ExportLogsServiceRequest> {
        let resource = (
            proptest::option::of(proptest::collection::vec((key(), any_value()), 0..5)),
            proptest::collection::vec(proptest::collection::vec(record(), 0..4), 0..3),
        )
            .prop_map(|(attributes, scopes)| ResourceLogs {
                resource: attributes
                    .map(|a| OtlpResource { attributes: a.into_iter().map(kv).collect(), ..Default::default() }),
                scope_logs: scopes
                    .into_iter()
                    .map(|log_records| ScopeLogs { log_records, ..Default::default() })
                    .collect(),
                ..Default::default()
            });
        proptest::collection::vec(resource, 0..4).prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
    }

    /// The stored JSON lines prost's types and `lines_of` make of a body.
    fn through_prost(body: &[u8]) -> Result<Vec<String>, String> {
        let request = ExportLogsServiceRequest::decode(body).map_err(|e| e.to_string())?;
        Ok(super::super::lines_of(request).iter().map(|l| serde_json::to_string(l).expect("json")).collect())
    }

    /// The stored JSON lines read in place.
    fn in_place(body: &[u8]) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for_each_record(body, |resource, record| {
            out.push(serde_json::to_string(&StoredLine::new(resource, record)).expect("json"));
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        Ok(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn reads_every_request_as_prost_does(request in request()) {
            let body = request.encode_to_vec();
            prop_assert_eq!(in_place(&body), through_prost(&body));
        }

        /// Damaged bodies: both readers refuse them, or both read the same lines.
        #[test]
        fn refuses_what_prost_refuses(request in request(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
            let mut body = request.encode_to_vec();
            if body.is_empty() {
                return Ok(());
            }
            let i = at.index(body.len());
            if cut { body.truncate(i) } else { body[i] = byte }
            if super::super::check_protobuf_size(&body).is_err() {
                return Ok(());
            }
            match (in_place(&body), through_prost(&body)) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "in place {:?}, prost {:?}", a, b),
            }
        }
    }

    #[test]
    fn a_field_seen_twice_is_merged_as_protobuf_merges_it() {
        // A body sent in two halves (an array value, then more of it) and a resource in two
        // parts: protobuf reads each as one.
        let record = LogRecord {
            body: Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue { value: Some(any_value::Value::IntValue(1)) }],
                })),
            }),
            ..Default::default()
        };
        let mut record_bytes = record.encode_to_vec();
        record_bytes.extend(record.encode_to_vec());
        let resource = |k: &str, v: &str| OtlpResource {
            attributes: vec![kv((k.into(), Some(any_value::Value::StringValue(v.into()))))],
            ..Default::default()
        };
        let mut resource_logs = Vec::new();
        prost::encoding::message::encode(1, &resource("host.name", "n1"), &mut resource_logs);
        prost::encoding::encode_key(2, prost::encoding::WireType::LengthDelimited, &mut resource_logs);
        let mut scope = Vec::new();
        prost::encoding::bytes::encode(2, &record_bytes, &mut scope);
        prost::encoding::bytes::encode(2, &scope, &mut Vec::new());
        prost::encoding::encode_varint(scope.len() as u64, &mut resource_logs);
        resource_logs.extend(&scope);
        prost::encoding::message::encode(1, &resource("service.name", "s"), &mut resource_logs);
        let mut body = Vec::new();
        prost::encoding::bytes::encode(1, &resource_logs, &mut body);
        let lines = in_place(&body).expect("read");
        assert_eq!(lines, through_prost(&body).expect("decoded"));
        assert!(lines[0].contains(r#""service":"s","instance":"s","node":"n1""#), "{lines:?}");
        assert!(lines[0].contains(r#""message":"[1,1]""#), "{lines:?}");
    }
}
