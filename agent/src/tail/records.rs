//! Lines as OTLP log records, written straight into the protobuf request body.
//!
//! A JSON line's `timestamp`, `level` and `message` become the record's own fields and its
//! other fields attributes, in key order (the last of equal keys counts); a plain line is
//! the message, its level the first level word in it. One OTLP resource per instance.
//!
//! Why not prost's generated types: building them parsed each line into a
//! `serde_json::Map` and allocated a `String` for every key and value twice over, 1.8 µs
//! a line, most of what the agent spent shipping a log line. Here a line's JSON is read
//! with its strings borrowed (serde_json, a visitor of our own) and the record is written
//! with prost's encoding primitives. The tests hold the bytes to what prost's types
//! encode for the same lines.

use std::borrow::Cow;
use std::collections::BTreeMap;

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

use super::{Line, LogFormat};

/// Severity of a level name, as OpenTelemetry numbers it.
pub(super) fn severity(level: &str) -> (i32, &'static str) {
    const NAMES: [(&str, i32, &str); 13] = [
        ("trace", 1, "trace"),
        ("debug", 5, "debug"),
        ("info", 9, "info"),
        ("notice", 9, "info"),
        ("warn", 13, "warn"),
        ("warning", 13, "warn"),
        ("error", 17, "error"),
        ("err", 17, "error"),
        ("fatal", 21, "fatal"),
        ("critical", 21, "fatal"),
        ("crit", 21, "fatal"),
        ("panic", 21, "fatal"),
        ("", 0, "unknown"),
    ];
    NAMES
        .iter()
        .find(|(name, ..)| name.eq_ignore_ascii_case(level))
        .map_or((0, "unknown"), |(_, number, name)| (*number, *name))
}

/// A plain-text line's level, by the first level word in it.
pub(super) fn plain_level(text: &str) -> &'static str {
    // The first eight words, not pieces: a leading timestamp splits into many empty ones.
    for word in text.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()).take(8) {
        let (n, name) = severity(word);
        if n > 0 && word.chars().all(|c| c.is_ascii_uppercase()) {
            return name;
        }
    }
    "unknown"
}

/// A field's value, as the record carries it.
#[derive(Debug, Clone, PartialEq)]
enum Field<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    /// An integer past `i64`: a double as an attribute, its digits as a message.
    Big(u64),
    Double(f64),
    /// `null`, an array or an object: kept as its compact JSON text.
    Json(String),
}

impl<'a> Field<'a> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The text a non-string value stands as where a string is wanted (a message).
    fn into_text(self) -> Cow<'a, str> {
        match self {
            Field::Str(s) => s,
            Field::Bool(b) => Cow::Owned(b.to_string()),
            Field::Int(i) => Cow::Owned(i.to_string()),
            Field::Big(u) => Cow::Owned(u.to_string()),
            Field::Double(d) => Cow::Owned(serde_json::Value::from(d).to_string()),
            Field::Json(j) => Cow::Owned(j),
        }
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Field<'de>, E> {
                Ok(Field::Str(Cow::Owned(v.to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Field<'de>, E> {
                Ok(Field::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Field<'de>, E> {
                Ok(Field::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Field<'de>, E> {
                Ok(i64::try_from(v).map_or(Field::Big(v), Field::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Field<'de>, E> {
                Ok(Field::Double(v))
            }
            fn visit_unit<E>(self) -> Result<Field<'de>, E> {
                Ok(Field::Json("null".into()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
                let v = serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Field::Json(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'de>, A::Error> {
                let v = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Field::Json(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON line's fields, in key order, the last of equal keys kept.
struct Object<'a>(Vec<(Cow<'a, str>, Field<'a>)>);

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
                let mut fields: Vec<(Cow<'de, str>, Field<'de>)> = Vec::with_capacity(16);
                // A JSON key is a string: read as a value, it is a `Field::Str`.
                while let Some(key) = map.next_key::<Field<'de>>()? {
                    let Field::Str(key) = key else { return Err(de::Error::custom("a key that is not a string")) };
                    fields.push((key, map.next_value()?));
                }
                Ok(Object::new(fields))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Object<'a> {
    /// Fields in key order, the last of equal keys kept.
    fn new(mut fields: Vec<(Cow<'a, str>, Field<'a>)>) -> Self {
        // Stable: of equal keys, the last stays last; `dedup_by` drops the later of two
        // equal neighbours, so the later value moves into the earlier's place.
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        fields.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        Object(fields)
    }

    /// A line's fields: the common shape (a flat object of plain strings, numbers and
    /// booleans) read by [`flat_object`], any other through serde_json.
    /// `scratch` lends its room (a batch reuses one list for all its lines).
    fn parse(text: &'a str, scratch: Vec<(Cow<'a, str>, Field<'a>)>) -> Option<Self> {
        match flat_object(text, scratch) {
            Some(fields) => Some(Object::new(fields)),
            None => serde_json::from_str(text).ok(),
        }
    }

    fn take(&mut self, key: &str) -> Option<Field<'a>> {
        let at = self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok()?;
        Some(self.0.remove(at).1)
    }

    /// A W3C id of `N` bytes written in hex under `key` (`trace_id`, `span_id`), taken
    /// out of the fields; anything else under that key stays an attribute.
    fn take_id<const N: usize>(&mut self, key: &str) -> Option<[u8; N]> {
        let at = self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok()?;
        let id = hex_id::<N>(self.0[at].1.as_str()?)?;
        self.0.remove(at);
        Some(id)
    }
}

/// The fields of `text` if it is one flat JSON object whose strings have no escapes and
/// whose values are strings, numbers or booleans — what services write, read four times
/// faster than through serde_json. Anything else (escapes, nesting, `null`, a number
/// serde_json would read otherwise, any doubt about validity) is `None`, and serde_json
/// decides: so this never answers differently, which a property test holds it to.
fn flat_object<'a>(
    text: &'a str,
    mut fields: Vec<(Cow<'a, str>, Field<'a>)>,
) -> Option<Vec<(Cow<'a, str>, Field<'a>)>> {
    let bytes = text.as_bytes();
    let mut at = 0;
    let skip_ws = |at: &mut usize| {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(*at) {
            *at += 1;
        }
    };
    // A string without escapes or control characters; `at` is on its opening quote.
    // (One pass over short strings beats memchr's setup.)
    let string = |at: &mut usize| -> Option<&'a str> {
        let start = *at + 1;
        let len = bytes.get(start..)?.iter().position(|b| matches!(b, b'"' | b'\\' | 0..0x20))?;
        if bytes[start + len] != b'"' {
            return None;
        }
        *at = start + len + 1;
        // Cut at ASCII quotes of valid UTF-8: still valid UTF-8.
        Some(&text[start..start + len])
    };
    skip_ws(&mut at);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    fields.clear();
    skip_ws(&mut at);
    if bytes.get(at) == Some(&b'}') {
        at += 1;
    } else {
        loop {
            skip_ws(&mut at);
            if bytes.get(at) != Some(&b'"') {
                return None;
            }
            let key = string(&mut at)?;
            skip_ws(&mut at);
            if bytes.get(at) != Some(&b':') {
                return None;
            }
            at += 1;
            skip_ws(&mut at);
            let value = match bytes.get(at)? {
                b'"' => Field::Str(Cow::Borrowed(string(&mut at)?)),
                b't' if bytes[at..].starts_with(b"true") => {
                    at += 4;
                    Field::Bool(true)
                }
                b'f' if bytes[at..].starts_with(b"false") => {
                    at += 5;
                    Field::Bool(false)
                }
                b'-' | b'0'..=b'9' => {
                    let start = at;
                    at += 1;
                    while let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = bytes.get(at) {
                        at += 1;
                    }
                    number(&text[start..at])?
                }
                _ => return None,
            };
            fields.push((Cow::Borrowed(key), value));
            skip_ws(&mut at);
            match bytes.get(at)? {
                b',' => at += 1,
                b'}' => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    skip_ws(&mut at);
    (at == bytes.len()).then_some(fields)
}

/// A JSON number as serde_json reads it: an integer that fits `i64` (or `u64`) as one,
/// any other through serde_json itself. `None` when it is not a JSON number.
fn number(text: &str) -> Option<Field<'_>> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let integer = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if integer && (digits == "0" || !digits.starts_with('0')) && text != "-0" {
        if let Ok(i) = text.parse::<i64>() {
            return Some(Field::Int(i));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Some(Field::Big(u));
        }
    }
    // Fractions, exponents, -0, integers past u64 and anything malformed: serde_json
    // decides (and refuses what is not a number).
    match serde_json::from_str::<Field>(text).ok()? {
        f @ (Field::Int(_) | Field::Big(_) | Field::Double(_)) => Some(f),
        _ => None,
    }
}

/// What one line becomes: the record's own fields and its attributes.
struct Parsed<'a> {
    time_unix_nano: u64,
    level: &'static str,
    message: Cow<'a, str>,
    attributes: Vec<(Cow<'a, str>, Field<'a>)>,
    /// The span the line was written in (its `trace_id`/`span_id` fields), as OTLP
    /// carries it: in the record's own fields, so a trace's lines can be found by its id.
    trace_id: Option<[u8; 16]>,
    span_id: Option<[u8; 8]>,
}

/// `N` bytes from `2N` hex digits; `None` for anything else or an all-zero id (W3C's
/// invalid one).
fn hex_id<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    (out != [0u8; N]).then_some(out)
}

fn parse<'a>(text: &'a str, scratch: Vec<(Cow<'a, str>, Field<'a>)>) -> Parsed<'a> {
    match Object::parse(text, scratch) {
        Some(mut fields) => {
            let level = fields.take("level");
            let time_unix_nano = fields
                .take("timestamp")
                .and_then(|ts| humantime::parse_rfc3339_weak(ts.as_str()?).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64);
            let message = fields.take("message").map_or(Cow::Borrowed(""), Field::into_text);
            let trace_id = fields.take_id::<16>("trace_id");
            let span_id = if trace_id.is_some() { fields.take_id::<8>("span_id") } else { None };
            Parsed {
                time_unix_nano,
                level: severity(level.as_ref().and_then(Field::as_str).unwrap_or("")).1,
                message,
                attributes: fields.0,
                trace_id,
                span_id,
            }
        }
        None => plain(text, Vec::new()),
    }
}

/// A plain-text line: all message, its level from its words.
fn plain<'a>(text: &'a str, attributes: Vec<(Cow<'a, str>, Field<'a>)>) -> Parsed<'a> {
    Parsed {
        time_unix_nano: 0,
        level: plain_level(text),
        message: Cow::Borrowed(text),
        attributes,
        trace_id: None,
        span_id: None,
    }
}

fn bytes_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn put_bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// The length of an `AnyValue` holding `field`.
fn any_len(field: &Field) -> usize {
    match field {
        Field::Str(s) => bytes_len(s.len()),
        Field::Json(s) => bytes_len(s.len()),
        Field::Bool(_) => 2,
        Field::Int(i) => 1 + encoded_len_varint(*i as u64),
        Field::Double(_) | Field::Big(_) => 9,
    }
}

fn put_any(field: &Field, out: &mut Vec<u8>) {
    match field {
        Field::Str(s) => put_bytes(1, s.as_bytes(), out),
        Field::Json(s) => put_bytes(1, s.as_bytes(), out),
        Field::Bool(b) => {
            encode_key(2, WireType::Varint, out);
            encode_varint(u64::from(*b), out);
        }
        Field::Int(i) => {
            encode_key(3, WireType::Varint, out);
            encode_varint(*i as u64, out);
        }
        Field::Double(d) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&d.to_le_bytes());
        }
        Field::Big(u) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&(*u as f64).to_le_bytes());
        }
    }
}

/// A `KeyValue` of `key` and an `AnyValue` of `value`.
fn put_key_value(tag: u32, key: &str, value: &Field, out: &mut Vec<u8>) {
    let any = any_len(value);
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint((bytes_len(key.len()) + 1 + encoded_len_varint(any as u64) + any) as u64, out);
    put_bytes(1, key.as_bytes(), out);
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(any as u64, out);
    put_any(value, out);
}

/// Writes one line's `LogRecord` (its fields in tag order, as prost writes them) and
/// returns its level; `scratch` is the batch's list of fields, handed back emptied.
fn put_record<'a>(line: &'a Line, out: &mut Vec<u8>, scratch: &mut Vec<(Cow<'a, str>, Field<'a>)>) -> &'static str {
    let parsed = match line.origin.format {
        LogFormat::Json => parse(&line.text, std::mem::take(scratch)),
        LogFormat::Plain => plain(&line.text, std::mem::take(scratch)),
    };
    if parsed.time_unix_nano != 0 {
        encode_key(1, WireType::SixtyFourBit, out);
        out.extend_from_slice(&parsed.time_unix_nano.to_le_bytes());
    }
    let (number, name) = severity(parsed.level);
    if number != 0 {
        encode_key(2, WireType::Varint, out);
        encode_varint(number as u64, out);
    }
    put_bytes(3, name.as_bytes(), out);
    let body = Field::Str(parsed.message);
    encode_key(5, WireType::LengthDelimited, out);
    encode_varint(any_len(&body) as u64, out);
    put_any(&body, out);
    // The source's labels, then the line's own fields (a field named as a label gives
    // way: the config says what the source is).
    let labels = &line.origin.labels;
    for (key, value) in labels {
        put_key_value(6, key, &Field::Str(Cow::Borrowed(value)), out);
    }
    for (key, value) in &parsed.attributes {
        if labels.is_empty() || !labels.iter().any(|(k, _)| k == key) {
            put_key_value(6, key, value, out);
        }
    }
    if let Some(id) = parsed.trace_id {
        put_bytes(9, &id, out);
    }
    if let Some(id) = parsed.span_id {
        put_bytes(10, &id, out);
    }
    if line.observed_unix_nano != 0 {
        encode_key(11, WireType::SixtyFourBit, out);
        out.extend_from_slice(&line.observed_unix_nano.to_le_bytes());
    }
    *scratch = parsed.attributes;
    scratch.clear();
    name
}

/// An OTLP export request for `lines`, one resource per instance; `count` is told how
/// many lines of each service and level it holds.
pub fn to_otlp(lines: &[Line], node: &str, mut count: impl FnMut(&str, &'static str, u64)) -> Vec<u8> {
    let mut by_instance: BTreeMap<(&str, &str), Vec<u8>> = BTreeMap::new();
    // A batch holds a few services and levels: a list beats a map.
    let mut levels: Vec<((&str, &'static str), u64)> = Vec::new();
    let mut record = Vec::with_capacity(1024);
    let mut scratch = Vec::with_capacity(16);
    let mut last: Option<(&str, &str)> = None;
    let mut records: Vec<u8> = Vec::new();
    for line in lines {
        let key = (line.origin.service.as_str(), line.origin.instance.as_str());
        if last != Some(key) {
            if let Some(last) = last {
                by_instance.entry(last).or_default().append(&mut records);
            }
            records = by_instance.remove(&key).unwrap_or_default();
            last = Some(key);
        }
        record.clear();
        let level = put_record(line, &mut record, &mut scratch);
        match levels.iter_mut().find(|(k, _)| *k == (key.0, level)) {
            Some((_, n)) => *n += 1,
            None => levels.push(((key.0, level), 1)),
        }
        put_bytes(2, &record, &mut records);
    }
    if let Some(last) = last {
        by_instance.entry(last).or_default().append(&mut records);
    }
    levels.sort_unstable();
    for ((service, level), n) in levels {
        count(service, level, n);
    }
    let mut out = Vec::with_capacity(by_instance.values().map(|r| r.len() + 256).sum());
    for ((service, instance), records) in by_instance {
        let mut resource = Vec::with_capacity(128);
        for (key, value) in [("service.name", service), ("service.instance.id", instance), ("host.name", node)] {
            put_key_value(1, key, &Field::Str(Cow::Borrowed(value)), &mut resource);
        }
        // InstrumentationScope { name: "hale-agent" }, then the records.
        let scope: &[u8] = b"\x0a\x0ahale-agent";
        let scope_logs = bytes_len(scope.len()) + records.len();
        let resource_logs = bytes_len(resource.len()) + bytes_len(scope_logs);
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(resource_logs as u64, &mut out);
        put_bytes(1, &resource, &mut out);
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(scope_logs as u64, &mut out);
        put_bytes(1, scope, &mut out);
        out.extend_from_slice(&records);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use proptest::prelude::*;
    use prost::Message;

    fn string(s: &str) -> AnyValue {
        AnyValue { value: Some(any_value::Value::StringValue(s.to_string())) }
    }

    fn kv(key: &str, value: AnyValue) -> KeyValue {
        KeyValue { key: key.to_string(), value: Some(value), ..Default::default() }
    }

    /// The record as prost's types made it before: the reference the encoder is held to.
    fn to_record(line: &Line) -> (LogRecord, &'static str) {
        fn any(value: &serde_json::Value) -> AnyValue {
            use serde_json::Value as J;
            let v = match value {
                J::String(s) => any_value::Value::StringValue(s.clone()),
                J::Bool(b) => any_value::Value::BoolValue(*b),
                J::Number(n) => match n.as_i64() {
                    Some(i) => any_value::Value::IntValue(i),
                    None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
                },
                other => any_value::Value::StringValue(other.to_string()),
            };
            AnyValue { value: Some(v) }
        }
        let mut record = LogRecord { observed_time_unix_nano: line.observed_unix_nano, ..Default::default() };
        let parsed = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line.text).ok();
        let level = match parsed {
            Some(mut fields) => {
                let level = fields.remove("level").and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                if let Some(ts) = fields.remove("timestamp").and_then(|v| v.as_str().map(str::to_string))
                    && let Ok(t) = humantime::parse_rfc3339_weak(&ts)
                {
                    record.time_unix_nano =
                        t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
                }
                let message = fields
                    .remove("message")
                    .map(|m| m.as_str().map(str::to_string).unwrap_or_else(|| m.to_string()))
                    .unwrap_or_default();
                record.body = Some(string(&message));
                let id = |fields: &mut serde_json::Map<String, serde_json::Value>, key: &str, len: usize| {
                    let bytes = hex::decode(fields.get(key)?.as_str()?).ok()?;
                    (bytes.len() == len && bytes.iter().any(|b| *b != 0)).then(|| {
                        fields.remove(key);
                        bytes
                    })
                };
                if let Some(trace) = id(&mut fields, "trace_id", 16) {
                    record.trace_id = trace;
                    record.span_id = id(&mut fields, "span_id", 8).unwrap_or_default();
                }
                record.attributes = fields.iter().map(|(k, v)| kv(k, any(v))).collect();
                severity(&level).1
            }
            None => {
                record.body = Some(string(&line.text));
                plain_level(&line.text)
            }
        };
        let (number, name) = severity(level);
        record.severity_number = number;
        record.severity_text = name.to_string();
        (record, name)
    }

    fn reference(lines: &[Line], node: &str) -> ExportLogsServiceRequest {
        let mut by_instance: BTreeMap<(&str, &str), Vec<LogRecord>> = BTreeMap::new();
        for line in lines {
            by_instance.entry((&line.origin.service, &line.origin.instance)).or_default().push(to_record(line).0);
        }
        let resource_logs = by_instance
            .into_iter()
            .map(|((service, instance), records)| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", string(service)),
                        kv("service.instance.id", string(instance)),
                        kv("host.name", string(node)),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope { name: "hale-agent".into(), ..Default::default() }),
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        ExportLogsServiceRequest { resource_logs }
    }

    fn line(instance: &str, text: &str) -> Line {
        let service = instance.split('-').next().unwrap_or(instance).to_string();
        Line { origin: super::super::Origin::new(&service, instance), text: text.into(), observed_unix_nano: 7 }
    }

    /// JSON lines with the fields services write, values of every kind, escapes,
    /// duplicated keys, and lines that are not JSON objects at all.
    fn text() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            "[a-z é\"\\\\\n😀]{0,8}".prop_map(|s| serde_json::Value::from(s).to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<u64>().prop_map(|i| i.to_string()),
            prop_oneof![Just("1.5"), Just("-0.0"), Just("1e300"), Just("3.0"), Just("2e-7")].prop_map(String::from),
            prop_oneof![Just("true"), Just("false"), Just("null"), Just("[1, {\"a\" : 2}]"), Just("{ }")]
                .prop_map(String::from),
            prop_oneof![
                Just("\"2026-12-06T12:00:00.123Z\""),
                Just("\"not a time\""),
                Just("\"WARNING\""),
                Just("\"err\"")
            ]
            .prop_map(String::from),
        ];
        let key = prop_oneof![
            Just("level"),
            Just("timestamp"),
            Just("message"),
            Just("route"),
            Just("a"),
            Just("Z"),
            Just("k\\\"ey"),
        ];
        prop_oneof![
            4 => proptest::collection::vec((key, value), 0..8).prop_map(|fields| format!(
                "{{{}}}",
                fields.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect::<Vec<_>>().join(",")
            )),
            1 => "[ -~]{0,30}",
            1 => Just("2026 ERROR disk full".to_string()),
        ]
    }

    /// Near-JSON: tokens that are valid, and ones a fast reader might wrongly accept.
    fn near_json() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("{"),
            Just("}"),
            Just("["),
            Just("]"),
            Just(":"),
            Just(","),
            Just(" "),
            Just("\t"),
            Just("\n"),
            Just("\u{a0}"),
            Just("\"a\""),
            Just("\"level\""),
            Just("\"b c\""),
            Just("\"é😀\""),
            Just("\"q\\\"x\""),
            Just("\"\u{1}\""),
            Just("\"\""),
            Just("0"),
            Just("01"),
            Just("-0"),
            Just("-"),
            Just("1."),
            Just(".5"),
            Just("12.5"),
            Just("1e5"),
            Just("1E-3"),
            Just("2e+2"),
            Just("1e400"),
            Just("-12"),
            Just("9223372036854775807"),
            Just("9223372036854775808"),
            Just("18446744073709551616"),
            Just("-9223372036854775809"),
            Just("true"),
            Just("tru"),
            Just("false"),
            Just("null"),
            Just("x"),
        ];
        let object = proptest::collection::vec(
            (prop_oneof![Just("\"a\""), Just("\"level\""), Just("\"k\"")], token.clone()),
            0..6,
        )
        .prop_map(|pairs| {
            format!("{{{}}}", pairs.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(","))
        });
        prop_oneof![object, proptest::collection::vec(token, 0..14).prop_map(|t| t.concat())]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whenever the fast reader answers, serde_json answers the same.
        #[test]
        fn the_flat_reader_agrees_with_serde_json(text in near_json()) {
            if let Some(fields) = flat_object(&text, Vec::new()) {
                let serde = serde_json::from_str::<Object>(&text).map(|o| o.0).map_err(|e| e.to_string());
                prop_assert_eq!(Ok(Object::new(fields).0), serde, "{}", text);
            }
        }

        #[test]
        fn encodes_what_prosts_types_encode(texts in proptest::collection::vec((0..3usize, text()), 0..12)) {
            let instances = ["search-1", "search-2", "orders-1"];
            let lines: Vec<Line> = texts.iter().map(|(i, t)| line(instances[*i], t)).collect();
            let body = to_otlp(&lines, "node-1", |_, _, _| {});
            prop_assert_eq!(&ExportLogsServiceRequest::decode(body.as_slice()).expect("decodes"), &reference(&lines, "node-1"));
            prop_assert_eq!(body, reference(&lines, "node-1").encode_to_vec(), "byte for byte");
        }
    }

    #[test]
    fn the_flat_reader_takes_the_common_line_and_leaves_the_rest_to_serde_json() {
        let common = r#" {"ts":"2026-12-06T12:00:00Z", "level":"info","status":200,"ms":12.5,"ok":true ,"big":18446744073709551615} "#;
        let fields = flat_object(common, Vec::new()).expect("read fast");
        assert_eq!(fields.len(), 6);
        assert_eq!(fields[3], (Cow::Borrowed("ms"), Field::Double(12.5)));
        assert_eq!(fields[5].1, Field::Big(u64::MAX));
        for text in [
            r#"{"a":"x\"y"}"#,
            r#"{"a":null}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":01}"#,
            r#"{"a":1} x"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            "plain text",
        ] {
            assert!(flat_object(text, Vec::new()).is_none(), "{text}");
        }
    }

    #[test]
    fn a_lines_trace_context_becomes_the_records_own() {
        let lines = [
            line(
                "orders-1",
                r#"{"level":"info","message":"order placed","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","order":7}"#,
            ),
            // Not ids: left as attributes.
            line("orders-1", r#"{"level":"info","message":"m","trace_id":"xyz","span_id":"00f067aa0ba902b7"}"#),
            line("orders-1", r#"{"message":"m","trace_id":"00000000000000000000000000000000"}"#),
        ];
        let body = to_otlp(&lines, "n", |_, _, _| {});
        assert_eq!(body, reference(&lines, "n").encode_to_vec(), "as prost's types encode it");
        let request = ExportLogsServiceRequest::decode(body.as_slice()).expect("decodes");
        let records = &request.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(hex::encode(&records[0].trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(&records[0].span_id), "00f067aa0ba902b7");
        let keys = |r: &LogRecord| r.attributes.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&records[0]), ["order"]);
        assert!(records[1].trace_id.is_empty() && records[2].trace_id.is_empty());
        assert_eq!(keys(&records[1]), ["span_id", "trace_id"]);
        assert_eq!(keys(&records[2]), ["trace_id"]);
    }

    #[test]
    fn a_plain_lines_level_is_found_after_its_timestamp() {
        assert_eq!(plain_level("2026-12-07T02:00:00.123Z ERROR warm-up failed"), "error");
        assert_eq!(plain_level("[2026-12-07 02:00:00,123] [pool-1] WARN slow"), "warn");
        assert_eq!(plain_level("2026-12-07 an error occurred"), "unknown", "only upper-case level words");
    }

    #[test]
    fn a_sources_labels_go_on_every_record_and_plain_sources_are_never_parsed() {
        let origin = std::sync::Arc::new(super::super::Origin {
            service: "web".into(),
            instance: "access".into(),
            labels: vec![("env".into(), "prod".into()), ("route".into(), "from-config".into())],
            format: LogFormat::Plain,
        });
        let json = r#"{"level":"error","message":"m","route":"/x"}"#;
        let plain = Line { origin: origin.clone(), text: json.into(), observed_unix_nano: 1 };
        let parsed = Line {
            origin: std::sync::Arc::new(super::super::Origin { format: LogFormat::Json, ..(*origin).clone() }),
            ..plain.clone()
        };
        let body = to_otlp(&[plain, parsed], "n", |_, _, _| {});
        let request = ExportLogsServiceRequest::decode(body.as_slice()).expect("decodes");
        let records = &request.resource_logs[0].scope_logs[0].log_records;
        let attrs =
            |r: &LogRecord| r.attributes.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect::<Vec<_>>();
        assert_eq!(records[0].body, Some(string(json)), "plain: the whole line is the message");
        assert_eq!(records[0].severity_text, "unknown");
        assert_eq!(
            attrs(&records[0]),
            [("env".into(), Some(string("prod"))), ("route".into(), Some(string("from-config")))]
        );
        assert_eq!(records[1].body, Some(string("m")));
        assert_eq!(records[1].severity_text, "error");
        assert_eq!(attrs(&records[1]), attrs(&records[0]), "the config's label wins over the line's field");
    }

    #[test]
    fn records_lift_json_fields_and_levels_and_count_them() {
        let lines = [
            line(
                "orders-1",
                r#"{"timestamp":"2026-11-26T06:38:54.606Z","level":"warn","message":"slow","route":"/api/orders","status":201,"latency_ms":12.5}"#,
            ),
            line("orders-1", "2026 ERROR disk full"),
            line("orders-1", "an error occurred"),
        ];
        let mut counted = Vec::new();
        let body = to_otlp(&lines, "n", |service, level, n| counted.push((service.to_string(), level, n)));
        let request = ExportLogsServiceRequest::decode(body.as_slice()).expect("decodes");
        let records = &request.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(records[0].severity_number, 13);
        assert!(records[0].time_unix_nano > 1_700_000_000_000_000_000);
        assert_eq!(records[0].body, Some(string("slow")));
        let keys: Vec<&str> = records[0].attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["latency_ms", "route", "status"]);
        assert_eq!(records[1].severity_text, "error");
        assert_eq!(records[2].severity_text, "unknown");
        assert_eq!(
            counted,
            [
                ("orders".to_string(), "error", 1),
                ("orders".to_string(), "unknown", 1),
                ("orders".to_string(), "warn", 1)
            ]
        );
    }
}
