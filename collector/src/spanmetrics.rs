//! Span-derived RED metrics, as the OpenTelemetry Collector's `spanmetrics` connector
//! makes them, so rate, errors and duration per service and operation are PromQL away
//! even for services that expose no metrics of their own:
//!
//! - `traces_span_metrics_calls_total{service_name, span_name, span_kind, status_code}`
//! - `traces_span_metrics_duration_seconds_bucket{…, le}`, `_sum`, `_count`
//!
//! (`span_kind` as `SPAN_KIND_SERVER`…, `status_code` as `STATUS_CODE_ERROR`…, the
//! connector's own values). Every stored span counts once (a resend never), weighted by
//! its `sampling.adjusted_count` so that sampled traffic estimates all of it. Counters
//! are cumulative from the collector's start and exposed on its `/metrics`, as the
//! connector feeding a Prometheus exporter does: whatever scrapes the collector (in
//! `hale up`, the control node's agent, into the collector itself; or a Prometheus)
//! stores them, and `rate()` and `histogram_quantile()` work as on any scraped metric.
//! Label sets are bounded: past [`MAX_SERIES`], new operations are counted under
//! `otel_metric_overflow="true"` per service, so a high-cardinality span name cannot
//! flood the store.

use std::collections::HashMap;
use std::sync::Mutex;

use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, span::SpanKind, status::StatusCode};

/// The connector's default histogram boundaries, in seconds.
pub const BUCKETS_SECS: [f64; 16] =
    [0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0];
/// Operations (label sets) kept apart; more are folded into one overflow set a service.
pub const MAX_SERIES: usize = 2000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    service: String,
    /// Empty for a service's overflow set.
    name: String,
    kind: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Default)]
struct Counts {
    calls: f64,
    sum_secs: f64,
    /// Cumulative per boundary, `+Inf` last.
    buckets: [f64; BUCKETS_SECS.len() + 1],
}

#[derive(Default)]
pub struct SpanMetrics {
    series: Mutex<HashMap<Key, Counts>>,
}

fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind).unwrap_or(SpanKind::Unspecified) {
        SpanKind::Internal => "SPAN_KIND_INTERNAL",
        SpanKind::Server => "SPAN_KIND_SERVER",
        SpanKind::Client => "SPAN_KIND_CLIENT",
        SpanKind::Producer => "SPAN_KIND_PRODUCER",
        SpanKind::Consumer => "SPAN_KIND_CONSUMER",
        SpanKind::Unspecified => "SPAN_KIND_UNSPECIFIED",
    }
}

fn status_name(code: Option<i32>) -> &'static str {
    match code.and_then(|c| StatusCode::try_from(c).ok()) {
        Some(StatusCode::Error) => "STATUS_CODE_ERROR",
        Some(StatusCode::Ok) => "STATUS_CODE_OK",
        _ => "STATUS_CODE_UNSET",
    }
}

impl SpanMetrics {
    /// Counts the spans of a stored record (`service` its resource's).
    pub fn observe(&self, service: &str, rs: &ResourceSpans) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            let weight = span
                .attributes
                .iter()
                .find(|kv| kv.key == hale_trace::ADJUSTED_COUNT)
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::DoubleValue(d) => Some(*d),
                    any_value::Value::IntValue(i) => Some(*i as f64),
                    _ => None,
                })
                .filter(|w| w.is_finite() && *w > 0.0)
                .unwrap_or(1.0);
            let secs = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) as f64 / 1e9;
            let mut key = Key {
                service: service.to_string(),
                name: span.name.clone(),
                kind: kind_name(span.kind),
                status: status_name(span.status.as_ref().map(|s| s.code)),
            };
            if !series.contains_key(&key) && series.len() >= MAX_SERIES {
                key = Key { service: service.to_string(), name: String::new(), kind: "", status: "" };
            }
            let counts = series.entry(key).or_default();
            counts.calls += weight;
            counts.sum_secs += secs * weight;
            for (i, bound) in BUCKETS_SECS.iter().enumerate() {
                if secs <= *bound {
                    counts.buckets[i] += weight;
                }
            }
            counts.buckets[BUCKETS_SECS.len()] += weight;
        }
    }

    /// What `/metrics` shows now: the counters of every operation.
    pub fn exposition(&self) -> Exposition {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<(Vec<(String, String)>, Counts)> = series
            .iter()
            .map(|(key, counts)| {
                let labels = if key.name.is_empty() {
                    vec![("service_name".into(), key.service.clone()), ("otel_metric_overflow".into(), "true".into())]
                } else {
                    vec![
                        ("service_name".into(), key.service.clone()),
                        ("span_name".into(), key.name.clone()),
                        ("span_kind".into(), key.kind.into()),
                        ("status_code".into(), key.status.into()),
                    ]
                };
                (labels, counts.clone())
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Exposition(rows)
    }
}

/// The span metrics as a `prometheus-client` collector, for the collector's `/metrics`.
/// Weighted counts are whole numbers in the histogram (rounded), as the format wants;
/// the calls counter keeps its fraction.
#[derive(Debug)]
pub struct Exposition(Vec<(Vec<(String, String)>, Counts)>);

impl prometheus_client::collector::Collector for Exposition {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use prometheus_client::encoding::NoLabelSet;
        use prometheus_client::metrics::MetricType;
        {
            let mut calls = encoder.encode_descriptor(
                "traces_span_metrics_calls",
                "Spans stored by service, operation, kind and status (weighted by their sampling.adjusted_count)",
                None,
                MetricType::Counter,
            )?;
            for (labels, counts) in &self.0 {
                calls.encode_family(labels)?.encode_counter::<NoLabelSet, _, f64>(&counts.calls, None)?;
            }
        }
        let unit = prometheus_client::registry::Unit::Seconds;
        let mut duration = encoder.encode_descriptor(
            "traces_span_metrics_duration",
            "Duration of the spans stored, by service, operation, kind and status",
            Some(&unit),
            MetricType::Histogram,
        )?;
        for (labels, counts) in &self.0 {
            let buckets: Vec<(f64, u64)> = BUCKETS_SECS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(counts.buckets.iter().map(|c| c.round() as u64))
                .collect();
            // prometheus-client writes cumulative buckets from per-bucket counts.
            let per_bucket: Vec<(f64, u64)> = buckets
                .iter()
                .enumerate()
                .map(|(i, (le, c))| (*le, c - if i == 0 { 0 } else { buckets[i - 1].1.min(*c) }))
                .collect();
            duration.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                counts.sum_secs,
                counts.calls.round() as u64,
                &per_bucket,
                None,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hale_core::exposition::{Format, parse};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span, Status};

    fn span(name: &str, ms: u64, error: bool, adjusted: Option<f64>) -> Span {
        Span {
            name: name.into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
            status: error.then(|| Status { code: StatusCode::Error as i32, message: String::new() }),
            attributes: adjusted
                .map(|d| KeyValue {
                    key: hale_trace::ADJUSTED_COUNT.into(),
                    value: Some(AnyValue { value: Some(any_value::Value::DoubleValue(d)) }),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    fn record(spans: Vec<Span>) -> ResourceSpans {
        ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }
    }

    /// A scraped sample: series name, labels, value.
    type Scraped = (String, Vec<(String, String)>, f64);

    /// The exposition as a scraper reads it.
    fn scraped(m: &SpanMetrics) -> Vec<Scraped> {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(m.exposition()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        let families = parse(&text, Format::OpenMetrics).unwrap_or_else(|e| panic!("{e}: {text}"));
        families.into_iter().flat_map(|f| f.samples).map(|s| (s.name, s.labels, s.value)).collect()
    }

    fn value(series: &[Scraped], name: &str, want: &[(&str, &str)]) -> Option<f64> {
        series
            .iter()
            .find(|(n, labels, _)| {
                n == name && want.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
    }

    #[test]
    fn calls_errors_and_durations_are_counted_by_their_weight() {
        let m = SpanMetrics::default();
        m.observe(
            "orders",
            &record(vec![
                span("POST /api/orders", 30, false, Some(10.0)),
                span("POST /api/orders", 700, false, Some(1.0)),
                span("POST /api/orders", 5, true, None),
            ]),
        );
        let s = scraped(&m);
        let ok = [("service_name", "orders"), ("span_name", "POST /api/orders"), ("status_code", "STATUS_CODE_UNSET")];
        assert_eq!(value(&s, "traces_span_metrics_calls_total", &ok), Some(11.0), "10 + 1");
        let err = [
            ("span_name", "POST /api/orders"),
            ("status_code", "STATUS_CODE_ERROR"),
            ("span_kind", "SPAN_KIND_SERVER"),
        ];
        assert_eq!(value(&s, "traces_span_metrics_calls_total", &err), Some(1.0));
        let le = |b: &'static str| [ok[0], ok[1], ok[2], ("le", b)];
        assert_eq!(value(&s, "traces_span_metrics_duration_seconds_bucket", &le("0.006")), Some(0.0));
        assert_eq!(value(&s, "traces_span_metrics_duration_seconds_bucket", &le("0.05")), Some(10.0));
        assert_eq!(value(&s, "traces_span_metrics_duration_seconds_bucket", &le("0.8")), Some(11.0));
        assert_eq!(value(&s, "traces_span_metrics_duration_seconds_bucket", &le("+Inf")), Some(11.0));
        assert_eq!(value(&s, "traces_span_metrics_duration_seconds_count", &ok), Some(11.0));
        let sum = value(&s, "traces_span_metrics_duration_seconds_sum", &ok).expect("sum");
        assert!((sum - 1.0).abs() < 1e-9, "0.03 × 10 + 0.7 × 1: {sum}");
    }

    #[test]
    fn operations_past_the_bound_fold_into_one_overflow_set() {
        let m = SpanMetrics::default();
        let spans = (0..MAX_SERIES + 50).map(|i| span(&format!("GET /item/{i}"), 1, false, None)).collect();
        m.observe("search", &record(spans));
        let s = scraped(&m);
        let calls = s.iter().filter(|(n, _, _)| n == "traces_span_metrics_calls_total");
        assert_eq!(calls.count(), MAX_SERIES + 1);
        let overflow = [("otel_metric_overflow", "true"), ("service_name", "search")];
        assert_eq!(value(&s, "traces_span_metrics_calls_total", &overflow), Some(50.0));
    }
}
