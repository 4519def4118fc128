//! Log lines as the collector stores them and serves them: `/api/v1/logs` (in the
//! [`Envelope`](super::Envelope), newest lines that match, oldest first) and each event
//! of the live tail `/api/v1/logs/tail`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One log line: an OTLP log record flattened, with its resource's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Event time (falls back to the observed time), nanoseconds since the epoch.
    pub time_unix_nano: u64,
    pub service: String,
    pub instance: String,
    #[serde(default)]
    pub node: String,
    pub level: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: Attributes,
    /// The span the line was written in (W3C ids in hex), when the record says.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub span_id: String,
}

/// A record's attributes by key (in key order, as JSON objects are kept).
pub type Attributes = BTreeMap<String, AttributeValue>;

/// An OTLP attribute value as the JSON it is: arrays as arrays, key-value lists as
/// objects, bytes as their base64 text; a missing value, or a double JSON cannot carry
/// (NaN, ±∞), as `null`.
///
/// Read by a visitor of its own rather than `#[serde(untagged)]`, which buffers every
/// value and tries the variants in turn (reading a stored line took 6 µs that way).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AttributeValue {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    String(String),
    Array(Vec<AttributeValue>),
    Object(Attributes),
}

impl<'de> Deserialize<'de> for AttributeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = AttributeValue;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<AttributeValue, E> {
        Ok(AttributeValue::Null)
    }

    fn visit_none<E>(self) -> Result<AttributeValue, E> {
        Ok(AttributeValue::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<AttributeValue, E> {
        Ok(AttributeValue::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<AttributeValue, E> {
        Ok(AttributeValue::Int(v))
    }

    /// An integer past `i64` is kept as the double it is nearest (as the untagged form read it).
    fn visit_u64<E>(self, v: u64) -> Result<AttributeValue, E> {
        Ok(i64::try_from(v).map_or(AttributeValue::Double(v as f64), AttributeValue::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<AttributeValue, E> {
        Ok(AttributeValue::Double(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<AttributeValue, E> {
        Ok(AttributeValue::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<AttributeValue, E> {
        Ok(AttributeValue::String(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<AttributeValue, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(AttributeValue::Array(items))
    }

    /// Of equal keys the last is kept, as a map collected from them keeps it.
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<AttributeValue, A::Error> {
        let mut object = Attributes::new();
        while let Some((key, value)) = map.next_entry::<String, AttributeValue>()? {
            object.insert(key, value);
        }
        Ok(AttributeValue::Object(object))
    }
}

impl From<&str> for AttributeValue {
    fn from(s: &str) -> AttributeValue {
        AttributeValue::String(s.to_string())
    }
}

impl From<bool> for AttributeValue {
    fn from(b: bool) -> AttributeValue {
        AttributeValue::Bool(b)
    }
}

/// What a log query asks the collector for (`/api/v1/logs` and `/api/v1/logs/tail`): each
/// field as a query parameter; none set is every line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogQuery {
    pub service: Option<String>,
    pub instance: Option<String>,
    /// Case does not matter.
    pub level: Option<String>,
    /// Text the message contains.
    pub contains: Option<String>,
    /// Lines written in this trace (hex id, any case).
    pub trace_id: Option<String>,
    /// Unix seconds (or RFC 3339) bounds, inclusive.
    pub since: Option<String>,
    pub until: Option<String>,
    /// At most this many lines, the newest (100 unless asked, 5,000 at most).
    pub limit: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Envelope, test_support::round_trip};

    /// `/api/v1/logs` as the collector served it before these types (its `LogLine` with a
    /// `serde_json::Map` of attributes): a plain line, one without attributes, and one
    /// with every kind of value.
    const SERVED: &str = r#"{"status":"success","data":[
        {"time_unix_nano":1790000000000000000,"service":"search","instance":"search-1","node":"node-3",
         "level":"info","message":"request","attributes":{"latency_ms":1.9,"method":"GET","status":200}},
        {"time_unix_nano":5,"service":"unknown","instance":"unknown","node":"","level":"unknown","message":""},
        {"time_unix_nano":6,"service":"shop","instance":"shop","node":"","level":"warn","message":"{\"a\":1}",
         "attributes":{"ctx":{"list":["a","b"],"raw":"AQL/"},"gone":null,"hale.truncated":true,"n":-3,
         "ratio":3.0,"big":1e300}}]}"#;

    #[test]
    fn log_lines_parse_as_served_and_write_the_same_json() {
        let parsed: Envelope<Vec<LogLine>> = serde_json::from_str(SERVED).expect("valid");
        round_trip(&parsed);
        // Field for field and number for number: an integer stays one, 3.0 stays a double.
        let again = serde_json::to_value(&parsed).expect("json");
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(SERVED).expect("json"));
        let lines = parsed.into_data().expect("data");
        assert!(lines[1].attributes.is_empty());
        // A line of an older segment, written before lines had a node.
        let old = r#"{"time_unix_nano":5,"service":"s","instance":"s-1","level":"info","message":"m"}"#;
        assert_eq!(serde_json::from_str::<LogLine>(old).expect("old line").node, "");
        let a = &lines[2].attributes;
        assert_eq!(a["n"], AttributeValue::Int(-3));
        assert_eq!(a["ratio"], AttributeValue::Double(3.0));
        assert_eq!(a["gone"], AttributeValue::Null);
        assert_eq!(a["hale.truncated"], true.into());
        let AttributeValue::Object(ctx) = &a["ctx"] else { panic!("an object: {:?}", a["ctx"]) };
        assert_eq!(ctx["list"], AttributeValue::Array(vec!["a".into(), "b".into()]));
        assert_eq!(serde_json::to_string(&lines[0].attributes["latency_ms"]).expect("json"), "1.9");
    }

    #[test]
    fn a_log_query_is_its_parameters() {
        let q = LogQuery { service: Some("search".into()), limit: Some(500), ..LogQuery::default() };
        round_trip(&q);
        assert_eq!(serde_json::from_str::<LogQuery>("{}").expect("empty"), LogQuery::default());
        assert_eq!(serde_json::from_str::<LogQuery>(r#"{"limit":5}"#).expect("limit").limit, Some(5));
    }
}
