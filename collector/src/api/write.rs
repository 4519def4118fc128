//! `POST /api/v1/write`: Prometheus remote_write 1.0 into the store. Every series is
//! checked before anything is stored (labels sorted, unique, named, within limits, a valid
//! metric name); samples too far ahead of the clock are refused and counted, the rest of
//! the request stored.
//!
//! Ingest needs the bearer `--ingest-token` when one is set. Limits: a body of
//! [`MAX_WRITE_BYTES`] (32 MiB compressed, 256 MiB decompressed), 2 M samples a request,
//! 64 labels and 16 KiB of label text a series, no empty label values. Names are checked
//! with core's `valid_label_name`/`valid_metric_name`, the one check every reader uses.
//! A sample more than [`MAX_AHEAD_MS`] (10 minutes) ahead of the clock would become its
//! series' newest and freeze it, every later honest sample dropped as out of order: it is
//! refused with 400 while the rest of the request is stored, and since a 4xx is not
//! retried nothing accepted is sent twice. Every dropped sample is counted by reason (too
//! old, duplicate, too far ahead). A request is acknowledged (204) only after the WAL
//! fsync, and its `X-Hale-Batch` tells [`crate::sources`] who is writing.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hale_core::exposition::{valid_label_name, valid_metric_name};
use hale_core::remote_write;
use hale_core::time::now_ms;

use super::{Ingest, PromError, bad_data, batch_id};
use crate::state::Collector;
use crate::store::IncomingSeries;
use crate::telemetry::DropReason;

/// Largest remote_write body accepted (compressed).
pub const MAX_WRITE_BYTES: usize = 32 << 20;
/// Limits on one series, so one bad sender cannot blow up the index.
const MAX_LABELS: usize = 64;
const MAX_LABEL_BYTES: usize = 16 * 1024;
/// Samples one request may carry.
const MAX_SAMPLES_PER_REQUEST: usize = 2_000_000;

/// How far ahead of the collector's clock a sample may be. A sample far in the future
/// would become its series' newest and turn every later, honest sample into an
/// out-of-order one, silently dropped: refused instead (Prometheus allows the same 10
/// minutes ahead of its head).
pub const MAX_AHEAD_MS: i64 = 10 * 60 * 1000;

pub(super) fn routes() -> Router<Arc<Collector>> {
    // Ingest<MAX_WRITE_BYTES> reads the body after the token, within the limit.
    // Ingest is traced (the collector's own spans go to its `/v1/traces`, which is not:
    // storing spans must not make spans).
    Router::new().route("/api/v1/write", post(write).route_layer(axum::middleware::from_fn(hale_trace::server_span)))
}

/// What a valid request holds: its series, less the samples too far ahead (counted).
struct Validated {
    series: Vec<IncomingSeries>,
    too_far_ahead: usize,
    /// Series that carry exemplars, with them (kept once the samples are stored).
    exemplars: Vec<(Vec<remote_write::Label>, Vec<remote_write::Exemplar>)>,
}

/// An exemplar's labels are capped as OpenMetrics caps them; a longer one is dropped.
fn exemplar_fits(e: &remote_write::Exemplar) -> bool {
    let chars: usize = e.labels.iter().map(|l| l.name.chars().count() + l.value.chars().count()).sum();
    chars <= hale_core::exposition::MAX_EXEMPLAR_LABEL_CHARS && e.labels.iter().all(|l| valid_label_name(&l.name))
}

/// Checks a remote_write request and turns it into series for the store.
fn validate(request: remote_write::WriteRequest, now_ms: i64) -> Result<Validated, PromError> {
    let samples: usize = request.timeseries.iter().map(|t| t.samples.len()).sum();
    if samples > MAX_SAMPLES_PER_REQUEST {
        return Err(bad_data(format!("{samples} samples in one request; send at most {MAX_SAMPLES_PER_REQUEST}")));
    }
    let mut out = Vec::with_capacity(request.timeseries.len());
    let mut too_far_ahead = 0;
    let mut exemplars = Vec::new();
    for (i, mut ts) in request.timeseries.into_iter().enumerate() {
        check_labels(&ts.labels).map_err(|e| bad_data(format!("series {i}: {e}")))?;
        ts.exemplars.retain(exemplar_fits);
        if !ts.exemplars.is_empty() {
            exemplars.push((ts.labels.clone(), std::mem::take(&mut ts.exemplars)));
        }
        let labels = ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
        let before = ts.samples.len();
        let samples: Vec<_> = ts
            .samples
            .into_iter()
            .filter(|s| s.timestamp <= now_ms.saturating_add(MAX_AHEAD_MS))
            .map(|s| (s.timestamp, s.value))
            .collect();
        too_far_ahead += before - samples.len();
        if !samples.is_empty() {
            out.push((labels, samples));
        }
    }
    Ok(Validated { series: out, too_far_ahead, exemplars })
}

/// What is wrong with one series' labels, if anything.
fn check_labels(labels: &[remote_write::Label]) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("{} labels, at most {MAX_LABELS}", labels.len()));
    }
    let bytes: usize = labels.iter().map(|l| l.name.len() + l.value.len()).sum();
    if bytes > MAX_LABEL_BYTES {
        return Err(format!("labels take {bytes} bytes, at most {MAX_LABEL_BYTES}"));
    }
    let mut name_seen = false;
    for (j, l) in labels.iter().enumerate() {
        if !valid_label_name(&l.name) {
            return Err(format!("invalid label name {:?}", l.name));
        }
        if j > 0 && labels[j - 1].name >= l.name {
            return Err(format!(
                "labels must be sorted by name and unique ({:?} after {:?})",
                l.name,
                labels[j - 1].name
            ));
        }
        if l.value.is_empty() {
            return Err(format!("label {:?} has an empty value", l.name));
        }
        if l.name == "__name__" {
            if !valid_metric_name(&l.value) {
                return Err(format!(
                    "invalid metric name {:?} (a metric name matches [a-zA-Z_:][a-zA-Z0-9_:]*)",
                    l.value
                ));
            }
            name_seen = true;
        }
    }
    if name_seen { Ok(()) } else { Err("no __name__ label".into()) }
}

async fn write(
    State(c): State<Arc<Collector>>,
    Ingest { headers, body }: Ingest<MAX_WRITE_BYTES>,
) -> Result<Response, PromError> {
    let reject = |e: PromError| {
        c.telemetry.batch_rejected();
        e
    };
    let mut request = remote_write::decode(&body).map_err(|e| reject(bad_data(e.to_string())))?;
    let metadata = std::mem::take(&mut request.metadata);
    let Validated { series, too_far_ahead, exemplars } = validate(request, now_ms()).map_err(reject)?;
    let batch = batch_id(&headers);
    if let Some((source, _)) = &batch {
        c.sources.observe(source, &series, now_ms());
    }
    let outcome = c.store.ingest(series, batch).await.map_err(|e| {
        let no_space = matches!(e, crate::store::wal::WalError::NoSpace { .. });
        PromError::storing(&c, "could not store the samples durably", e, no_space)
    })?;
    c.metadata.observe(metadata);
    for (labels, list) in &exemplars {
        c.exemplars.add(labels, list);
    }
    c.telemetry.samples_dropped(DropReason::TooOld, outcome.samples_too_old);
    c.telemetry.samples_dropped(DropReason::Duplicate, outcome.samples_duplicate);
    c.telemetry.samples_dropped(DropReason::TooFarAhead, too_far_ahead);
    if outcome.samples_too_old > 0 || outcome.samples_duplicate > 0 {
        tracing::debug!(
            too_old = outcome.samples_too_old,
            duplicate = outcome.samples_duplicate,
            "some samples were not stored"
        );
    }
    if too_far_ahead > 0 {
        // The rest of the request is stored (and acknowledged by this answer): a 4xx is
        // not retried, so nothing accepted is sent twice and nothing refused comes back.
        return Err(bad_data(format!(
            "{too_far_ahead} samples more than {} minutes ahead of the collector's clock were refused; the others were stored. Check the sender's clock",
            MAX_AHEAD_MS / 60_000
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::{app, body, get, label, post, snappy};
    use hale_core::api::{Envelope, QueryResult};
    use hale_core::remote_write::{Label, Sample, TimeSeries, WriteRequest};

    #[tokio::test]
    async fn exemplars_are_kept_and_answered_for_the_series_a_query_reads() {
        let (_dir, app) = app(None);
        let now = now_ms();
        let exemplar = |trace: &str, t: i64| remote_write::Exemplar {
            labels: vec![label("trace_id", trace)],
            value: 0.31,
            timestamp: t,
        };
        let bucket = |route: &str, exemplars| TimeSeries {
            labels: vec![label("__name__", "d_bucket"), label("le", "0.5"), label("route", route)],
            samples: vec![Sample { value: 3.0, timestamp: now }],
            exemplars,
        };
        let request = WriteRequest::of(vec![
            bucket("/buy", vec![exemplar("4bf92f3577b34da6a3ce929d0e0e4736", now)]),
            // Labels past OpenMetrics' 128 characters: the exemplar goes, the sample stays.
            bucket("/list", vec![exemplar(&"x".repeat(130), now)]),
        ]);
        assert_eq!(post(&app, remote_write::encode(&request), None).await.0, StatusCode::NO_CONTENT);
        let q =
            |expr: &str| format!("/api/v1/query_exemplars?query={}&start=0&end={}", urlencoding(expr), now / 1000 + 1);
        let got = crate::api::test_support::get_json(&app, &q("histogram_quantile(0.99, rate(d_bucket[5m]))")).await;
        assert_eq!(got["status"], "success");
        let series = got["data"].as_array().expect("series");
        assert_eq!(series.len(), 1, "{got}");
        assert_eq!(series[0]["seriesLabels"]["route"], "/buy");
        assert_eq!(series[0]["exemplars"][0]["labels"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(series[0]["exemplars"][0]["value"], "0.31");
        let none = crate::api::test_support::get_json(&app, &q("other_metric")).await;
        assert_eq!(none["data"], serde_json::json!([]));
        let (status, _) = get(&app, "/api/v1/query_exemplars?query=rate(").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let instant =
            crate::api::test_support::get_json(&app, &format!("/api/v1/query?query=d_bucket&time={}", now / 1000 + 1))
                .await;
        assert_eq!(instant["data"]["result"].as_array().map(Vec::len), Some(2), "both samples stored");
    }

    fn urlencoding(text: &str) -> String {
        form_urlencoded::byte_serialize(text.as_bytes()).collect()
    }

    #[tokio::test]
    async fn bad_input_is_a_4xx_never_a_panic() {
        let (_dir, app) = app(Some("tok"));
        assert_eq!(post(&app, body(vec![label("__name__", "up")]), None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(post(&app, b"not snappy at all".to_vec(), Some("tok")).await.0, StatusCode::BAD_REQUEST);
        let mut truncated = body(vec![label("__name__", "up"), label("job", "x")]);
        truncated.truncate(truncated.len() / 2);
        assert_eq!(post(&app, truncated, Some("tok")).await.0, StatusCode::BAD_REQUEST);
        let raw_bad_utf8 = {
            // A protobuf label value with invalid UTF-8, snappy-compressed.
            let mut ts = Vec::new();
            let lbl = [0x0a, 0x08, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_', 0x12, 0x02, 0xff, 0xfe];
            ts.push(0x0a);
            ts.push((lbl.len()) as u8);
            ts.extend_from_slice(&lbl);
            let mut req = vec![0x0a, ts.len() as u8];
            req.extend_from_slice(&ts);
            snappy(&req)
        };
        assert_eq!(post(&app, raw_bad_utf8, Some("tok")).await.0, StatusCode::BAD_REQUEST);
        let unsorted = body(vec![label("job", "x"), label("__name__", "up")]);
        let (status, err) = post(&app, unsorted, Some("tok")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(err["error"].as_str().expect("msg").contains("sorted"));
        let huge: Vec<Label> =
            std::iter::once(label("__name__", "x")).chain((0..100).map(|i| label(&format!("l{i:03}"), "v"))).collect();
        assert_eq!(post(&app, body(huge), Some("tok")).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(
            post(&app, body(vec![label("job", "x")]), Some("tok")).await.0,
            StatusCode::BAD_REQUEST,
            "no __name__"
        );
        for bad_name in ["0bad metric{}", "up-total", "a b", "up{}"] {
            let (status, err) = post(&app, body(vec![label("__name__", bad_name)]), Some("tok")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad_name}");
            assert!(err["error"].as_str().expect("msg").contains("metric name"), "{err}");
        }
        let (status, _) = post(&app, body(vec![label("__name__", "ns:good_name_total")]), Some("tok")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let too_big = vec![0u8; MAX_WRITE_BYTES + 1];
        assert_eq!(post(&app, too_big, Some("tok")).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        // A body that claims to decompress to gigabytes is refused before it is inflated.
        let mut bomb = Vec::new();
        let mut n: u64 = 4 << 30;
        while n >= 0x80 {
            bomb.push((n as u8) | 0x80);
            n >>= 7;
        }
        bomb.push(n as u8);
        bomb.extend_from_slice(&[0u8; 16]);
        assert_eq!(post(&app, bomb, Some("tok")).await.0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn samples_far_ahead_of_the_clock_are_refused_and_counted() {
        let (_dir, app) = app(None);
        let now = now_ms();
        let write = |samples: Vec<(i64, f64)>| {
            remote_write::encode(&WriteRequest {
                timeseries: vec![TimeSeries {
                    exemplars: Vec::new(),
                    labels: vec![label("__name__", "temp"), label("room", "a")],
                    samples: samples.into_iter().map(|(timestamp, value)| Sample { value, timestamp }).collect(),
                }],
                metadata: Vec::new(),
            })
        };
        // A sample at 2^62 would freeze the series: every later sample would be "too old".
        let (status, err) = post(&app, write(vec![(now - 1000, 1.0), (1 << 62, 9.0)]), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert!(err["error"].as_str().expect("msg").contains("ahead of the collector's clock"), "{err}");
        assert_eq!(post(&app, write(vec![(now, 2.0)]), None).await.0, StatusCode::NO_CONTENT);
        // Older than the out-of-order window: dropped, counted, and the request still acknowledged.
        assert_eq!(post(&app, write(vec![(now - 600_000, 0.5)]), None).await.0, StatusCode::NO_CONTENT);
        // What was accepted is there, the far-future sample is not, and the series goes on.
        let (start, end) = ((now - 1000 + 999) / 1000, (now + 999) / 1000);
        let q = get(&app, &format!("/api/v1/query_range?query=temp&start={start}&end={end}&step=1")).await.1;
        let parsed: Envelope<QueryResult> = serde_json::from_str(&q).expect("json");
        let Ok(QueryResult::Matrix(series)) = parsed.into_data() else { panic!("not a matrix: {q}") };
        let values: Vec<&str> = series[0].values.iter().map(|p| p.1.as_str()).collect();
        assert!(values.contains(&"1") && values.contains(&"2") && !values.contains(&"9"), "{q}");
        let metrics = get(&app, "/metrics").await.1;
        for (reason, n) in [("too_far_ahead", 1), ("too_old", 1)] {
            let line = format!("hale_collector_samples_dropped_total{{reason=\"{reason}\"}} {n}");
            assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
        }
    }
}
