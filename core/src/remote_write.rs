//! Prometheus remote_write 1.0: the protobuf messages (prometheus/prompb, the subset 1.0
//! uses) and the snappy block framing around them, the conversion of families into time
//! series (one per sample, labels sorted by name as receivers expect), and the
//! `X-Hale-Batch` header that numbers a batch so a receiver can drop a resend.
//! Decoding refuses a body that would decompress to more than [`MAX_DECOMPRESSED_BYTES`],
//! so one small request cannot claim gigabytes.

use prost::Message;

use crate::metrics::{Family, MetricKind};

/// Header naming the protocol version, required by receivers.
pub const VERSION_HEADER: (&str, &str) = ("X-Prometheus-Remote-Write-Version", "0.1.0");
/// Header that identifies a batch, `<agent-id>/<sequence>`, so a receiver can drop a
/// batch it has already stored (it is resent after a lost acknowledgement).
pub const BATCH_HEADER: &str = "X-Hale-Batch";

#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// What the exposition said of each metric family (type, help, unit): sent now and
    /// then, not with every batch, as Prometheus does.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

impl WriteRequest {
    /// A request of `timeseries` only.
    pub fn of(timeseries: Vec<TimeSeries>) -> WriteRequest {
        WriteRequest { timeseries, metadata: Vec::new() }
    }
}

/// prompb's `MetricMetadata`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct MetricMetadata {
    /// prompb's `MetricType`: see [`MetricMetadata::type_name`].
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

impl MetricMetadata {
    /// prompb's numbering of metric types.
    const TYPES: [&'static str; 8] =
        ["unknown", "counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset"];

    /// The metadata of `family`, under the name queries use: a counter's series name
    /// (`…_total`), any other family's own name.
    pub fn of(family: &Family) -> MetricMetadata {
        let kind = match family.kind {
            MetricKind::Counter => 1,
            MetricKind::Gauge => 2,
            MetricKind::Histogram => 3,
            MetricKind::Summary => 5,
            MetricKind::Untyped => 0,
        };
        let name = match (family.kind, family.samples.first()) {
            (MetricKind::Counter, Some(sample)) => sample.name.clone(),
            _ => family.name.clone(),
        };
        MetricMetadata { r#type: kind, metric_family_name: name, help: family.help.clone(), unit: String::new() }
    }

    /// `counter`, `gauge`, …; `unknown` for a number prompb does not define.
    pub fn type_name(&self) -> &'static str {
        usize::try_from(self.r#type).ok().and_then(|i| Self::TYPES.get(i)).copied().unwrap_or("unknown")
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Sorted by name, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// What the exposition's exemplars said (a trace id behind a latency bucket).
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
}

impl TimeSeries {
    /// A series of `samples` without exemplars.
    pub fn new(labels: Vec<Label>, samples: Vec<Sample>) -> TimeSeries {
        TimeSeries { labels, samples, exemplars: Vec::new() }
    }
}

/// prompb's `Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    /// Sorted by name, as a series' labels are.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, Eq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The most a request may decompress to: snappy expands up to about 21×, and a receiver
/// must not let one request claim gigabytes.
pub const MAX_DECOMPRESSED_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("body decompresses to {0} bytes, more than the {MAX_DECOMPRESSED_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("body is not snappy-compressed: {0}")]
    Snappy(#[from] snap::Error),
    #[error("body is not a remote_write WriteRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

/// Builds one series per sample of `families` (with its exemplar, stamped with the
/// sample's time when it has none of its own), with `extra` labels added (they override
/// labels of the same name) and `default_ts_ms` for samples without a timestamp. A label
/// with an empty value is the label's absence (Prometheus's rule, and receivers refuse
/// empty values): it is left out, so `node_os_info{variant=""}` travels without `variant`.
pub fn to_timeseries(families: &[Family], extra: &[(&str, &str)], default_ts_ms: i64) -> Vec<TimeSeries> {
    let mut out = Vec::new();
    for family in families {
        for sample in &family.samples {
            let mut labels: Vec<Label> = Vec::with_capacity(sample.labels.len() + extra.len() + 1);
            labels.push(Label { name: "__name__".into(), value: sample.name.clone() });
            for (name, value) in &sample.labels {
                if !value.is_empty() && !extra.iter().any(|(n, _)| n == name) {
                    labels.push(Label { name: name.clone(), value: value.clone() });
                }
            }
            for (name, value) in extra.iter().filter(|(_, v)| !v.is_empty()) {
                labels.push(Label { name: name.to_string(), value: value.to_string() });
            }
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            let timestamp = sample.timestamp_ms.unwrap_or(default_ts_ms);
            let exemplars = sample
                .exemplar
                .iter()
                .map(|e| {
                    let mut labels: Vec<Label> = e
                        .labels
                        .iter()
                        .map(|(name, value)| Label { name: name.clone(), value: value.clone() })
                        .collect();
                    labels.sort_by(|a, b| a.name.cmp(&b.name));
                    Exemplar { labels, value: e.value, timestamp: e.timestamp_ms.unwrap_or(timestamp) }
                })
                .collect();
            out.push(TimeSeries { labels, samples: vec![Sample { value: sample.value, timestamp }], exemplars });
        }
    }
    out
}

/// Protobuf-encodes and snappy-compresses (block format, as remote_write requires).
pub fn encode(request: &WriteRequest) -> Vec<u8> {
    let raw = request.encode_to_vec();
    // Compressing a byte slice that fits in memory cannot fail.
    snap::raw::Encoder::new().compress_vec(&raw).unwrap_or_default()
}

pub fn decode(body: &[u8]) -> Result<WriteRequest, DecodeError> {
    let len = snap::raw::decompress_len(body)?;
    if len > MAX_DECOMPRESSED_BYTES {
        return Err(DecodeError::TooLarge(len));
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    Ok(WriteRequest::decode(raw.as_slice())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeseries_are_labelled_sorted_and_round_trip() {
        let mut f = Family::new("up", "", MetricKind::Gauge);
        f.push(&[("instance", "scraped"), ("job", "x"), ("variant", "")], 1.0);
        let series = to_timeseries(std::slice::from_ref(&f), &[("node", "node-1"), ("instance", "search-1")], 42);
        let names: Vec<&str> = series[0].labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "instance", "job", "node"]);
        assert_eq!(series[0].labels[1].value, "search-1", "extra labels win");
        assert_eq!(series[0].samples[0].timestamp, 42);
        assert!(series[0].exemplars.is_empty());
        let req = WriteRequest { timeseries: series, metadata: vec![MetricMetadata::of(&f)] };
        assert_eq!(decode(&encode(&req)).expect("decode"), req);
        assert!(decode(b"not snappy").is_err());
    }

    #[test]
    fn exemplars_travel_with_their_series() {
        let body = "# TYPE d histogram\nd_bucket{le=\"0.5\"} 3 # {trace_id=\"4bf9\",span_id=\"00f0\"} 0.31\nd_count 3\n# EOF\n";
        let families = crate::exposition::parse(body, crate::exposition::Format::OpenMetrics).expect("parse");
        let series = to_timeseries(&families, &[("instance", "orders-1")], 42);
        let exemplar = &series[0].exemplars[0];
        let labels: Vec<(&str, &str)> = exemplar.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        assert_eq!(labels, [("span_id", "00f0"), ("trace_id", "4bf9")], "sorted by name");
        assert_eq!((exemplar.value, exemplar.timestamp), (0.31, 42), "the sample's time when it has none");
        assert!(series[1].exemplars.is_empty());
        let req = WriteRequest::of(series);
        assert_eq!(decode(&encode(&req)).expect("decode"), req);
    }

    #[test]
    fn metadata_is_named_as_queries_name_it() {
        let mut counter = Family::new("http_requests", "Requests.", MetricKind::Counter);
        counter.push(&[("code", "200")], 1.0);
        counter.samples[0].name = "http_requests_total".into();
        let m = MetricMetadata::of(&counter);
        assert_eq!(
            (m.metric_family_name.as_str(), m.type_name(), m.help.as_str()),
            ("http_requests_total", "counter", "Requests.")
        );
        let hist = Family::new("latency_seconds", "", MetricKind::Histogram);
        assert_eq!(
            (MetricMetadata::of(&hist).metric_family_name.as_str(), MetricMetadata::of(&hist).type_name()),
            ("latency_seconds", "histogram")
        );
        assert_eq!(MetricMetadata { r#type: 99, ..m }.type_name(), "unknown");
    }
}
