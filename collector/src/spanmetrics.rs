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
//! are cumulative from the collector's start and written into the store every
//! [`FLUSH_EVERY`] like any sample, so `rate()` and `histogram_quantile()` work as on
//! scraped ones; a restart is a counter reset. Label sets are bounded: past
//! [`MAX_SERIES`], new operations are counted under `otel_metric_overflow="true"` per
//! service, so a high-cardinality span name cannot flood the store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, span::SpanKind, status::StatusCode};

use crate::store::IncomingSeries;

/// The connector's default histogram boundaries, in seconds.
pub const BUCKETS_SECS: [f64; 16] =
    [0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0];
/// Operations (label sets) kept apart; more are folded into one overflow set a service.
pub const MAX_SERIES: usize = 2000;
/// How often the counters are written into the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);

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

    /// The counters as series with one sample at `at_ms` each, labels sorted by name.
    pub fn snapshot(&self, at_ms: i64) -> Vec<IncomingSeries> {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(series.len() * (BUCKETS_SECS.len() + 4));
        for (key, counts) in series.iter() {
            let base: Vec<(String, String)> = if key.name.is_empty() {
                vec![("otel_metric_overflow".into(), "true".into()), ("service_name".into(), key.service.clone())]
            } else {
                vec![
                    ("service_name".into(), key.service.clone()),
                    ("span_kind".into(), key.kind.into()),
                    ("span_name".into(), key.name.clone()),
                    ("status_code".into(), key.status.into()),
                ]
            };
            let mut push = |name: &str, extra: Option<(&str, String)>, value: f64| {
                let mut labels = base.clone();
                labels.push(("__name__".into(), name.into()));
                labels.extend(extra.map(|(k, v)| (k.to_string(), v)));
                labels.sort();
                out.push((labels, vec![(at_ms, value)]));
            };
            push("traces_span_metrics_calls_total", None, counts.calls);
            push("traces_span_metrics_duration_seconds_count", None, counts.calls);
            push("traces_span_metrics_duration_seconds_sum", None, counts.sum_secs);
            for (i, bound) in BUCKETS_SECS.iter().enumerate() {
                push("traces_span_metrics_duration_seconds_bucket", Some(("le", bound.to_string())), counts.buckets[i]);
            }
            push(
                "traces_span_metrics_duration_seconds_bucket",
                Some(("le", "+Inf".into())),
                counts.buckets[BUCKETS_SECS.len()],
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn value(series: &[IncomingSeries], name: &str, want: &[(&str, &str)]) -> Option<f64> {
        series
            .iter()
            .find(|(labels, _)| {
                labels.iter().any(|(k, v)| k == "__name__" && v == name)
                    && want.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, samples)| samples[0].1)
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
        let s = m.snapshot(42);
        let ok = [("service_name", "orders"), ("span_name", "POST /api/orders"), ("status_code", "STATUS_CODE_UNSET")];
        assert_eq!(value(&s, "traces_span_metrics_calls_total", &ok), Some(11.0), "10 + 1");
        let err = [
            ("span_name", "POST /api/orders"),
            ("status_code", "STATUS_CODE_ERROR"),
            ("span_kind", "SPAN_KIND_SERVER"),
        ];
        assert_eq!(value(&s, "traces_span_metrics_calls_total", &err), Some(1.0));
        let le = |b: &'static str| [ok[0], ok[1], ok[2], ("le", b)];
        assert_eq!(value(&s, "traces_span_metrics_duration_seconds_bucket", &le("0.05")), Some(10.0));
        assert_eq!(value(&s, "traces_span_metrics_duration_seconds_bucket", &le("0.8")), Some(11.0));
        assert_eq!(value(&s, "traces_span_metrics_duration_seconds_bucket", &le("+Inf")), Some(11.0));
        let sum = value(&s, "traces_span_metrics_duration_seconds_sum", &ok).expect("sum");
        assert!((sum - 1.0).abs() < 1e-9, "0.03 × 10 + 0.7 × 1: {sum}");
        for (labels, samples) in &s {
            assert!(labels.windows(2).all(|w| w[0].0 < w[1].0), "sorted, unique: {labels:?}");
            assert_eq!(samples, &[(42, samples[0].1)]);
        }
    }

    #[test]
    fn operations_past_the_bound_fold_into_one_overflow_set() {
        let m = SpanMetrics::default();
        let spans = (0..MAX_SERIES + 50).map(|i| span(&format!("GET /item/{i}"), 1, false, None)).collect();
        m.observe("search", &record(spans));
        let s = m.snapshot(1);
        let calls =
            s.iter().filter(|(l, _)| l.iter().any(|(k, v)| k == "__name__" && v == "traces_span_metrics_calls_total"));
        assert_eq!(calls.count(), MAX_SERIES + 1);
        let overflow = [("otel_metric_overflow", "true"), ("service_name", "search")];
        assert_eq!(value(&s, "traces_span_metrics_calls_total", &overflow), Some(50.0));
    }
}
