//! The collector's HTTP API: remote_write ingest and the Prometheus API endpoints that
//! need no PromQL evaluation (series, labels, label values, build info), plus its own
//! `/metrics`. Errors use Prometheus's JSON shape.

use hale_core::time::now_ms;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hale_core::auth::bearer_matches;
use hale_core::exposition::{valid_label_name, valid_metric_name};
use hale_core::metrics::{Family, MetricKind};
use hale_core::remote_write::{self, BATCH_HEADER};
use serde_json::{Value, json};
use std::collections::BTreeMap;

use crate::store::head::Matcher;
use crate::store::{IncomingSeries, Store};

/// Largest remote_write body accepted (compressed).
pub const MAX_WRITE_BYTES: usize = 32 << 20;
/// Largest OTLP logs body accepted. The agent's batches stay near 1 MiB of text; JSON and
/// protobuf bodies expand when decoded, so this is kept well under the metrics limit.
pub const MAX_LOG_BYTES: usize = 8 << 20;
/// Limits on one series, so one bad sender cannot blow up the index.
const MAX_LABELS: usize = 64;
const MAX_LABEL_BYTES: usize = 16 * 1024;

/// Query latency, as a histogram with fixed buckets.
#[derive(Default)]
pub struct QueryLatency {
    buckets: [std::sync::atomic::AtomicU64; QUERY_BUCKETS.len()],
    count: std::sync::atomic::AtomicU64,
    sum_micros: std::sync::atomic::AtomicU64,
}

const QUERY_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

impl QueryLatency {
    pub fn observe(&self, secs: f64) {
        use std::sync::atomic::Ordering::Relaxed;
        for (i, bound) in QUERY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((secs * 1e6) as u64, Relaxed);
    }

    fn family(&self) -> Family {
        use std::sync::atomic::Ordering::Relaxed;
        let name = "hale_collector_query_duration_seconds";
        let mut f = Family::new(name, "Time to evaluate PromQL queries.", MetricKind::Histogram);
        for (i, bound) in QUERY_BUCKETS.iter().enumerate() {
            let le = bound.to_string();
            f.samples.push(hale_core::metrics::Sample::new(
                format!("{name}_bucket"),
                &[("le", &le)],
                self.buckets[i].load(Relaxed) as f64,
            ));
        }
        let count = self.count.load(Relaxed) as f64;
        f.samples.push(hale_core::metrics::Sample::new(format!("{name}_bucket"), &[("le", "+Inf")], count));
        f.samples.push(hale_core::metrics::Sample::new(
            format!("{name}_sum"),
            &[],
            self.sum_micros.load(Relaxed) as f64 / 1e6,
        ));
        f.samples.push(hale_core::metrics::Sample::new(format!("{name}_count"), &[], count));
        f
    }
}

pub struct Collector {
    pub query_latency: QueryLatency,
    pub store: Store,
    pub logs: crate::logs::LogStore,
    pub ingest_token: Option<String>,
    pub started: Instant,
    pub rejected_batches: std::sync::atomic::AtomicU64,
    pub dropped_samples: DroppedSamples,
    /// What the rule groups found at their last evaluation.
    pub rules: crate::rules::RulesView,
    /// Bearer token for silences; `None` makes them read-only.
    pub admin_token: Option<String>,
    pub silences: Arc<crate::notify::silence::Silences>,
    /// The notification outbox, when notifications are configured.
    pub outbox: Option<Arc<crate::notify::outbox::Outbox>>,
    /// The SLOs of the loaded specs.
    pub slos: Vec<crate::slo::SloDef>,
    pub slo_min_events: u64,
    /// The labels notifications group alerts by (the route's `group_by`), so a reader of
    /// `/api/v1/alerts` can group them the same way.
    pub group_by: Vec<String>,
    /// The numbered senders and what they wrote, to end a silent one's series.
    pub sources: crate::sources::Sources,
}

impl AsRef<Store> for Collector {
    fn as_ref(&self) -> &Store {
        &self.store
    }
}

/// An error in Prometheus's API shape.
pub struct PromError(StatusCode, &'static str, String);

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"status": "error", "errorType": self.1, "error": self.2}))).into_response()
    }
}

fn bad_data(message: impl Into<String>) -> PromError {
    PromError(StatusCode::BAD_REQUEST, "bad_data", message.into())
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

pub fn router(collector: Arc<Collector>) -> Router {
    Router::new()
        // Both read their bodies themselves, after the token, within these limits.
        .route("/api/v1/write", post(write))
        .route("/v1/logs", post(ingest_logs))
        .route("/api/v1/logs", get(query_logs))
        .route("/api/v1/logs/tail", get(tail_logs))
        .route("/api/v1/cluster", get(cluster))
        .route("/federate", get(federate))
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .merge(crate::notify::api::routes())
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/slos", get(slos))
        .route("/api/v1/alerts", get(alerts))
        .route("/metrics", get(metrics))
        .route("/-/ready", get(|| async { "ready" }))
        .route("/healthz", get(|| async { axum::Json(json!({"status": "alive"})) }))
        .with_state(collector)
}

/// Checks a remote_write request and turns it into series for the store.
/// Samples one request may carry.
const MAX_SAMPLES_PER_REQUEST: usize = 2_000_000;

/// How far ahead of the collector's clock a sample may be. A sample far in the future
/// would become its series' newest and turn every later, honest sample into an
/// out-of-order one, silently dropped: refused instead (Prometheus allows the same 10
/// minutes ahead of its head).
pub const MAX_AHEAD_MS: i64 = 10 * 60 * 1000;

/// Samples dropped at ingest, by reason, for `hale_collector_samples_dropped_total`.
#[derive(Debug, Default)]
pub struct DroppedSamples {
    /// More than [`MAX_AHEAD_MS`] ahead of the clock (refused with a 400).
    pub too_far_ahead: std::sync::atomic::AtomicU64,
    /// Older than the series' newest sample by more than the out-of-order window.
    pub too_old: std::sync::atomic::AtomicU64,
    /// A second sample at a timestamp the series already has.
    pub duplicate: std::sync::atomic::AtomicU64,
}

impl DroppedSamples {
    fn family(&self) -> Family {
        use std::sync::atomic::Ordering::Relaxed;
        let mut f = Family::new(
            "hale_collector_samples_dropped_total",
            "Samples not stored at ingest, by reason (too_far_ahead is refused with a 400; too_old and duplicate are acknowledged and dropped, as Prometheus does).",
            MetricKind::Counter,
        );
        f.push(&[("reason", "too_far_ahead")], self.too_far_ahead.load(Relaxed) as f64);
        f.push(&[("reason", "too_old")], self.too_old.load(Relaxed) as f64);
        f.push(&[("reason", "duplicate")], self.duplicate.load(Relaxed) as f64);
        f
    }
}

/// What a valid request holds: its series, less the samples too far ahead (counted).
struct Validated {
    series: Vec<IncomingSeries>,
    too_far_ahead: usize,
}

fn validate(request: remote_write::WriteRequest, now_ms: i64) -> Result<Validated, PromError> {
    let samples: usize = request.timeseries.iter().map(|t| t.samples.len()).sum();
    if samples > MAX_SAMPLES_PER_REQUEST {
        return Err(bad_data(format!("{samples} samples in one request; send at most {MAX_SAMPLES_PER_REQUEST}")));
    }
    let mut out = Vec::with_capacity(request.timeseries.len());
    let mut too_far_ahead = 0;
    for (i, ts) in request.timeseries.into_iter().enumerate() {
        if ts.labels.len() > MAX_LABELS {
            return Err(bad_data(format!("series {i}: {} labels, at most {MAX_LABELS}", ts.labels.len())));
        }
        let bytes: usize = ts.labels.iter().map(|l| l.name.len() + l.value.len()).sum();
        if bytes > MAX_LABEL_BYTES {
            return Err(bad_data(format!("series {i}: labels take {bytes} bytes, at most {MAX_LABEL_BYTES}")));
        }
        let mut name_seen = false;
        for (j, l) in ts.labels.iter().enumerate() {
            if !valid_label_name(&l.name) {
                return Err(bad_data(format!("series {i}: invalid label name {:?}", l.name)));
            }
            if j > 0 && ts.labels[j - 1].name >= l.name {
                return Err(bad_data(format!(
                    "series {i}: labels must be sorted by name and unique ({:?} after {:?})",
                    l.name,
                    ts.labels[j - 1].name
                )));
            }
            if l.value.is_empty() {
                return Err(bad_data(format!("series {i}: label {:?} has an empty value", l.name)));
            }
            if l.name == "__name__" {
                if !valid_metric_name(&l.value) {
                    return Err(bad_data(format!(
                        "series {i}: invalid metric name {:?} (a metric name matches [a-zA-Z_:][a-zA-Z0-9_:]*)",
                        l.value
                    )));
                }
                name_seen = true;
            }
        }
        if !name_seen {
            return Err(bad_data(format!("series {i}: no __name__ label")));
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
    Ok(Validated { series: out, too_far_ahead })
}

/// The body of a write, read only once the sender has shown the ingest token: a stranger
/// must not make the collector buffer `limit` bytes per connection.
async fn ingest_body(
    c: &Collector,
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Bytes, PromError> {
    if !authorized(c, headers) {
        return Err(PromError(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (--ingest-token)".into(),
        ));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if e.into_inner().is::<http_body_util::LengthLimitError>() {
            PromError(StatusCode::PAYLOAD_TOO_LARGE, "bad_data", format!("body over {limit} bytes"))
        } else {
            PromError(StatusCode::BAD_REQUEST, "bad_data", "the request body could not be read".into())
        }
    })
}

/// `X-Hale-Batch: <source>/<seq>`, if the sender numbered its batch.
fn batch_id(headers: &HeaderMap) -> Option<(String, u64)> {
    let (source, seq) = headers.get(BATCH_HEADER)?.to_str().ok()?.rsplit_once('/')?;
    Some((source.to_string(), seq.parse().ok()?))
}

fn authorized(collector: &Collector, headers: &HeaderMap) -> bool {
    let Some(expected) = &collector.ingest_token else { return true };
    bearer_matches(headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()), expected)
}

async fn write(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, PromError> {
    let body = ingest_body(&c, &headers, body, MAX_WRITE_BYTES).await?;
    let reject = |e: PromError| {
        c.rejected_batches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        e
    };
    let request = remote_write::decode(&body).map_err(|e| reject(bad_data(e.to_string())))?;
    let Validated { series, too_far_ahead } = validate(request, now_ms()).map_err(reject)?;
    let batch = batch_id(&headers);
    if let Some((source, _)) = &batch {
        c.sources.observe(source, &series, now_ms());
    }
    let outcome = c.store.ingest(series, batch).await.map_err(|e| {
        PromError(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("could not store the samples durably: {e}"))
    })?;
    let dropped = &c.dropped_samples;
    dropped.too_old.fetch_add(outcome.samples_too_old as u64, std::sync::atomic::Ordering::Relaxed);
    dropped.duplicate.fetch_add(outcome.samples_duplicate as u64, std::sync::atomic::Ordering::Relaxed);
    dropped.too_far_ahead.fetch_add(too_far_ahead as u64, std::sync::atomic::Ordering::Relaxed);
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

/// `match[]` selectors of a query string, parsed by promql-parser.
fn selectors(query: Option<&str>) -> Result<Vec<Vec<Matcher>>, PromError> {
    let mut out = Vec::new();
    for (key, value) in form_pairs(query.unwrap_or("")) {
        if key != "match[]" {
            continue;
        }
        let expr = crate::query::parse(&value).map_err(|e| bad_data(format!("invalid match[] {value:?}: {e}")))?;
        let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
            return Err(bad_data(format!("match[] {value:?} is not a series selector")));
        };
        if !vs.matchers.or_matchers.is_empty() {
            return Err(bad_data("`or` inside a selector is not supported"));
        }
        let mut matchers: Vec<Matcher> = Vec::new();
        if let Some(name) = vs.name {
            matchers.push(Matcher::Eq("__name__".into(), name));
        }
        for m in vs.matchers.matchers {
            use promql_parser::label::MatchOp;
            matchers.push(match m.op {
                MatchOp::Equal => Matcher::Eq(m.name, m.value),
                MatchOp::NotEqual => Matcher::Ne(m.name, m.value),
                MatchOp::Re(re) => Matcher::Re(m.name, re),
                MatchOp::NotRe(re) => Matcher::Nre(m.name, re),
            });
        }
        out.push(matchers);
    }
    Ok(out)
}

/// Decodes `a=b&c=d` (percent and `+` escapes).
fn form_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

fn time_param(query: Option<&str>, key: &str, default_ms: i64) -> Result<i64, PromError> {
    match form_pairs(query.unwrap_or("")).into_iter().find(|(k, _)| k == key) {
        None => Ok(default_ms),
        Some((_, v)) => {
            if let Ok(secs) = v.parse::<f64>() {
                return Ok((secs * 1000.0).round() as i64);
            }
            humantime::parse_rfc3339_weak(&v)
                .map(|t| t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
                .map_err(|_| bad_data(format!("invalid {key} {v:?}: use unix seconds or RFC 3339")))
        }
    }
}

async fn series(
    State(c): State<Arc<Collector>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    // POST sends the same parameters form-encoded in the body.
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let query = [query.unwrap_or_default(), body_text].join("&");
    let sets = selectors(Some(&query))?;
    if sets.is_empty() {
        return Err(bad_data("no match[] parameter provided"));
    }
    let start = time_param(Some(&query), "start", i64::MIN)?;
    let end = time_param(Some(&query), "end", i64::MAX)?;
    let mut seen = std::collections::BTreeSet::new();
    for matchers in sets {
        for labels in c.store.series_labels(&matchers, start, end) {
            seen.insert(labels);
        }
    }
    let data: Vec<Value> = seen
        .into_iter()
        .map(|labels| Value::Object(labels.into_iter().map(|(n, v)| (n, Value::String(v))).collect()))
        .collect();
    Ok(success(Value::Array(data)))
}

/// Go's `FormatFloat(v, 'f', -1, 64)`, as Prometheus writes sample values.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn metric(labels: &crate::query::Labels) -> hale_core::api::Labels {
    labels.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
}

fn point(t: i64, v: f64) -> hale_core::api::Point {
    hale_core::api::Point(t as f64 / 1000.0, format_value(v))
}

fn query_result(value: crate::query::Value, t: i64) -> hale_core::api::QueryResult {
    use crate::query::Value as V;
    use hale_core::api::{MatrixSeries, Point, QueryResult, VectorSample};
    match value {
        V::Scalar(v) => QueryResult::Scalar(point(t, v)),
        V::String(s) => QueryResult::String(Point(t as f64 / 1000.0, s)),
        V::Vector(samples) => QueryResult::Vector(
            samples.iter().map(|s| VectorSample { metric: metric(&s.labels), value: point(t, s.value) }).collect(),
        ),
        V::Matrix(series) => QueryResult::Matrix(
            series
                .iter()
                .map(|s| MatrixSeries {
                    metric: metric(&s.labels),
                    values: s.points.iter().map(|(t, v)| point(*t, *v)).collect(),
                })
                .collect(),
        ),
    }
}

fn query_error(e: crate::query::QueryError) -> PromError {
    match e {
        crate::query::QueryError::BadData(m) => PromError(StatusCode::BAD_REQUEST, "bad_data", m),
        crate::query::QueryError::Execution(m) => PromError(StatusCode::UNPROCESSABLE_ENTITY, "execution", m),
    }
}

fn params(query: Option<String>, body: &Bytes) -> String {
    [query.unwrap_or_default(), String::from_utf8_lossy(body).into_owned()].join("&")
}

fn param(all: &str, key: &str) -> Option<String> {
    form_pairs(all).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

async fn query(State(c): State<Arc<Collector>>, RawQuery(q): RawQuery, body: Bytes) -> Result<Response, PromError> {
    let all = params(q, &body);
    let expr = param(&all, "query").ok_or_else(|| bad_data("missing the query parameter"))?;
    let t = time_param(Some(&all), "time", now_ms())?;
    let c2 = c.clone();
    let started = Instant::now();
    let value = tokio::task::spawn_blocking(move || crate::query::instant_query(&c2.store, &expr, t))
        .await
        .map_err(|e| PromError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(query_error)?;
    c.query_latency.observe(started.elapsed().as_secs_f64());
    Ok(axum::Json(hale_core::api::Envelope::success(query_result(value, t))).into_response())
}

async fn query_range(
    State(c): State<Arc<Collector>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let all = params(q, &body);
    let expr = param(&all, "query").ok_or_else(|| bad_data("missing the query parameter"))?;
    let start = time_param(Some(&all), "start", i64::MIN)?;
    let end = time_param(Some(&all), "end", i64::MIN)?;
    if start == i64::MIN || end == i64::MIN {
        return Err(bad_data("start and end are required"));
    }
    let step_text = param(&all, "step").ok_or_else(|| bad_data("missing the step parameter"))?;
    let step = match step_text.parse::<f64>() {
        Ok(secs) => (secs * 1000.0).round() as i64,
        Err(_) => humantime::parse_duration(&step_text)
            .map(|d| d.as_millis() as i64)
            .map_err(|_| bad_data(format!("invalid step {step_text:?}")))?,
    };
    let c2 = c.clone();
    let started = Instant::now();
    let value = tokio::task::spawn_blocking(move || crate::query::range_query(&c2.store, &expr, start, end, step))
        .await
        .map_err(|e| PromError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(query_error)?;
    c.query_latency.observe(started.elapsed().as_secs_f64());
    Ok(axum::Json(hale_core::api::Envelope::success(query_result(value, end))).into_response())
}

async fn ingest_logs(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, PromError> {
    use prost::Message;
    let body = ingest_body(&c, &headers, body, MAX_LOG_BYTES).await?;
    let json =
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let request: opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest = if json {
        crate::logs::check_json_size(&body).map_err(|e| bad_data(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| bad_data(format!("not an OTLP/JSON logs request: {e}")))?
    } else {
        crate::logs::check_protobuf_size(&body).map_err(|e| bad_data(e.to_string()))?;
        Message::decode(body.as_ref()).map_err(|e| bad_data(format!("not an OTLP/protobuf logs request: {e}")))?
    };
    let lines = crate::logs::lines_of(&request);
    let batch = batch_id(&headers);
    let c2 = c.clone();
    tokio::task::spawn_blocking(move || c2.logs.append(lines, batch))
        .await
        .map_err(|e| PromError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| PromError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    // OTLP/HTTP: an empty ExportLogsServiceResponse.
    Ok((StatusCode::OK, [("content-type", "application/x-protobuf")], Vec::<u8>::new()).into_response())
}

fn log_filter(q: &crate::logs::LogQuery) -> Result<crate::logs::Filter, PromError> {
    let ns = |key: &str, v: &Option<String>, default: u64| -> Result<u64, PromError> {
        match v {
            None => Ok(default),
            Some(text) => {
                let pairs = format!("{key}={}", form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>());
                Ok((time_param(Some(&pairs), key, 0)?.max(0) as u64).saturating_mul(1_000_000))
            }
        }
    };
    Ok(crate::logs::Filter {
        service: q.service.clone(),
        instance: q.instance.clone(),
        level: q.level.clone(),
        contains: q.contains.clone(),
        since_ns: ns("since", &q.since, 0)?,
        until_ns: ns("until", &q.until, u64::MAX)?,
    })
}

async fn query_logs(
    State(c): State<Arc<Collector>>,
    axum::extract::Query(q): axum::extract::Query<crate::logs::LogQuery>,
) -> Result<Response, PromError> {
    let filter = log_filter(&q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 5000);
    let c2 = c.clone();
    let lines = tokio::task::spawn_blocking(move || c2.logs.query(&filter, limit))
        .await
        .map_err(|e| PromError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| PromError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(success(json!(lines)))
}

/// Server-sent events: every new line that matches, as JSON.
async fn tail_logs(
    State(c): State<Arc<Collector>>,
    axum::extract::Query(q): axum::extract::Query<crate::logs::LogQuery>,
) -> Result<Response, PromError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let mut filter = log_filter(&q)?;
    filter.until_ns = u64::MAX;
    let rx = c.logs.subscribe();
    let stream = futures::stream::unfold((rx, filter), |(mut rx, filter)| async move {
        loop {
            match rx.recv().await {
                Ok(line) if filter.matches(&line) => {
                    let event = Event::default().json_data(&line).unwrap_or_default();
                    return Some((Ok::<_, std::convert::Infallible>(event), (rx, filter)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    return Some((Ok(Event::default().event("lagged").data(n.to_string())), (rx, filter)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

async fn cluster(State(c): State<Arc<Collector>>) -> Result<Response, PromError> {
    let c2 = c.clone();
    let view = tokio::task::spawn_blocking(move || crate::cluster::view(&c2.store, &c2.logs, now_ms()))
        .await
        .map_err(|e| PromError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(success(json!(view)))
}

/// Prometheus federation: the newest sample of every matching series, with its
/// timestamp, in the text format.
async fn federate(State(c): State<Arc<Collector>>, RawQuery(q): RawQuery) -> Result<Response, PromError> {
    let sets = selectors(q.as_deref())?;
    if sets.is_empty() {
        return Err(bad_data("no match[] parameter provided"));
    }
    let now = now_ms();
    let mut by_name: BTreeMap<String, Family> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for matchers in sets {
        for s in c.store.select(&matchers, now - crate::query::LOOKBACK_MS, now) {
            let Some(&(t, v)) = s.samples.last() else { continue };
            if crate::query::is_stale(v) {
                continue;
            }
            let labels: Vec<(String, String)> = s.labels.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            if !seen.insert(labels.clone()) {
                continue;
            }
            let name = labels.iter().find(|(n, _)| n == "__name__").map(|(_, v)| v.clone()).unwrap_or_default();
            let family =
                by_name.entry(name.clone()).or_insert_with(|| Family::new(name.clone(), "", MetricKind::Untyped));
            family.samples.push(hale_core::metrics::Sample {
                name,
                labels: labels.into_iter().filter(|(n, _)| n != "__name__").collect(),
                value: v,
                timestamp_ms: Some(t),
            });
        }
    }
    let families: Vec<Family> = by_name.into_values().collect();
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        hale_core::exposition::encode_text(&families),
    )
        .into_response())
}

async fn labels(State(c): State<Arc<Collector>>) -> Response {
    success(json!(c.store.label_names()))
}

async fn label_values(State(c): State<Arc<Collector>>, Path(name): Path<String>) -> Response {
    success(json!(c.store.label_values(&name)))
}

async fn buildinfo() -> Response {
    success(
        json!({"version": env!("CARGO_PKG_VERSION"), "revision": "", "branch": "", "buildUser": "", "buildDate": "", "goVersion": "n/a (Rust)"}),
    )
}

/// `/api/v1/rules` in Prometheus's shape; `type=alert` or `type=record` keeps one kind.
async fn rules(State(c): State<Arc<Collector>>, RawQuery(raw): RawQuery) -> Result<Response, PromError> {
    let kind = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "type")
        .map(|(_, v)| v.into_owned());
    match kind.as_deref() {
        None | Some("alert") | Some("record") => Ok(success(c.rules.rules_json(kind.as_deref()))),
        Some(other) => Err(bad_data(format!("unsupported type {other:?}: use type=alert or type=record"))),
    }
}

/// `/api/v1/slos`: every SLO's windows, budget and status, computed now.
async fn slos(State(c): State<Arc<Collector>>) -> Response {
    let now = hale_core::time::now_ms();
    let c2 = c.clone();
    let states =
        tokio::task::spawn_blocking(move || crate::slo::state::compute(&c2.store, &c2.slos, c2.slo_min_events, now))
            .await
            .unwrap_or_default();
    axum::Json(hale_core::api::Envelope::success(states)).into_response()
}

/// `/api/v1/alerts`: every pending and firing alert, and (beside Prometheus's shape)
/// `groupBy`, the labels notifications group them by.
async fn alerts(State(c): State<Arc<Collector>>) -> Response {
    let data = hale_core::api::AlertsData { alerts: c.rules.alerts(), group_by: c.group_by.clone() };
    axum::Json(hale_core::api::Envelope::success(data)).into_response()
}

async fn metrics(State(c): State<Arc<Collector>>) -> impl IntoResponse {
    use std::sync::atomic::Ordering::Relaxed;
    let outbox_stat = |pick: fn(&crate::notify::outbox::OutboxStats) -> &std::sync::atomic::AtomicU64| {
        c.outbox.as_ref().map_or(0.0, |o| pick(&o.stats).load(Relaxed) as f64)
    };
    let (series, samples, chunk_bytes) = c.store.stats();
    let wal = c.store.wal().stats();
    let families = vec![
        c.query_latency.family(),
        c.dropped_samples.family(),
        Family::single(
            "hale_collector_samples_ingested_total",
            "Samples stored since start (replay included).",
            MetricKind::Counter,
            samples as f64,
        ),
        Family::single("hale_collector_active_series", "Series in the head.", MetricKind::Gauge, series as f64),
        Family::single(
            "hale_collector_chunk_bytes",
            "Bytes of compressed samples in the head.",
            MetricKind::Gauge,
            chunk_bytes as f64,
        ),
        Family::single(
            "hale_collector_wal_written_bytes_total",
            "Bytes written to the WAL.",
            MetricKind::Counter,
            wal.bytes_written.load(Relaxed) as f64,
        ),
        Family::single(
            "hale_collector_wal_fsyncs_total",
            "WAL fsyncs (each commits a group of writes).",
            MetricKind::Counter,
            wal.fsyncs.load(Relaxed) as f64,
        ),
        Family::single(
            "hale_collector_wal_fsync_seconds_total",
            "Time spent in WAL fsyncs.",
            MetricKind::Counter,
            wal.fsync_micros.load(Relaxed) as f64 / 1e6,
        ),
        Family::single(
            "hale_collector_log_lines_stored_total",
            "Log lines stored since start.",
            MetricKind::Counter,
            c.logs.lines_stored.load(Relaxed) as f64,
        ),
        Family::single(
            "hale_collector_rejected_batches_total",
            "remote_write batches refused as malformed.",
            MetricKind::Counter,
            c.rejected_batches.load(Relaxed) as f64,
        ),
        Family::single(
            "hale_collector_notifications_sent_total",
            "Notifications delivered to a webhook receiver (2xx).",
            MetricKind::Counter,
            outbox_stat(|o| &o.sent),
        ),
        Family::single(
            "hale_collector_notification_attempts_failed_total",
            "Webhook deliveries that failed and will be retried (connection error, timeout, 5xx).",
            MetricKind::Counter,
            outbox_stat(|o| &o.failed_attempts),
        ),
        Family::single(
            "hale_collector_notifications_dropped_total",
            "Notifications given up (4xx, or undelivered for a day); kept in outbox/dead.",
            MetricKind::Counter,
            outbox_stat(|o| &o.dropped),
        ),
        Family::single(
            "hale_collector_notifications_pending",
            "Notifications stored in the outbox and not yet delivered.",
            MetricKind::Gauge,
            outbox_stat(|o| &o.pending),
        ),
        Family::single(
            "hale_collector_notification_last_delivery_seconds",
            "From storing the last delivered notification to its receiver's 2xx.",
            MetricKind::Gauge,
            outbox_stat(|o| &o.last_delivery_us) / 1e6,
        ),
        Family::single(
            "hale_collector_uptime_seconds",
            "Seconds since the collector started.",
            MetricKind::Gauge,
            c.started.elapsed().as_secs_f64(),
        ),
    ];
    let mut families = families;
    families.extend(c.rules.families());
    if !c.slos.is_empty() {
        let now = hale_core::time::now_ms();
        let c2 = c.clone();
        let states = tokio::task::spawn_blocking(move || {
            crate::slo::state::compute(&c2.store, &c2.slos, c2.slo_min_events, now)
        })
        .await
        .unwrap_or_default();
        families.extend(crate::slo::state::families(&states));
    }
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        hale_core::exposition::encode_text(&families),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hale_core::remote_write::{Label, Sample, TimeSeries, WriteRequest};
    use tower::ServiceExt;

    fn collector(dir: &std::path::Path, token: Option<&str>) -> Router {
        let (store, _) = Store::open(dir).expect("store");
        let logs = crate::logs::LogStore::open(&dir.join("logs")).expect("logs");
        router(Arc::new(Collector {
            query_latency: Default::default(),
            store,
            logs,
            ingest_token: token.map(str::to_string),
            started: Instant::now(),
            rejected_batches: Default::default(),
            dropped_samples: Default::default(),
            rules: Default::default(),
            admin_token: Some("admin-secret".into()),
            silences: Arc::new(crate::notify::silence::Silences::open(&dir.join("silences.json"))),
            outbox: None,
            slos: Vec::new(),
            slo_min_events: 0,
            group_by: vec!["alertname".into()],
            sources: Default::default(),
        }))
    }

    fn label(n: &str, v: &str) -> Label {
        Label { name: n.into(), value: v.into() }
    }

    fn body(labels: Vec<Label>) -> Vec<u8> {
        remote_write::encode(&WriteRequest {
            timeseries: vec![TimeSeries { labels, samples: vec![Sample { value: 1.0, timestamp: 1000 }] }],
        })
    }

    async fn post(app: &Router, body: Vec<u8>, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = axum::http::Request::post("/api/v1/write");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let response = app.clone().oneshot(req.body(axum::body::Body::from(body)).expect("req")).await.expect("call");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn write_then_list_series_labels_and_values() {
        let dir = tempfile::tempdir().expect("tmp");
        let app = collector(dir.path(), Some("tok"));
        let (status, _) = post(&app, body(vec![label("__name__", "up"), label("job", "api")]), Some("tok")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let get = |uri: &str| {
            let app = app.clone();
            let uri = uri.to_string();
            async move {
                let r = app
                    .oneshot(axum::http::Request::get(uri).body(axum::body::Body::empty()).expect("req"))
                    .await
                    .expect("call");
                let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
                serde_json::from_slice::<Value>(&bytes).expect("json")
            }
        };
        let series = get("/api/v1/series?match[]=up%7Bjob%3D~%22a.*%22%7D").await;
        assert_eq!(series["data"], json!([{"__name__": "up", "job": "api"}]));
        assert_eq!(get("/api/v1/labels").await["data"], json!(["__name__", "job"]));
        assert_eq!(get("/api/v1/label/job/values").await["data"], json!(["api"]));
        let bad = get("/api/v1/series?match[]=up%7B").await;
        assert_eq!((bad["status"].as_str(), bad["errorType"].as_str()), (Some("error"), Some("bad_data")));
    }

    #[tokio::test]
    async fn bad_input_is_a_4xx_never_a_panic() {
        let dir = tempfile::tempdir().expect("tmp");
        let app = collector(dir.path(), Some("tok"));
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
            snapish(&req)
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
    }

    /// A stranger cannot make the collector wait for (and buffer) a body: the token is
    /// checked on the headers, before a byte of the body is read.
    #[tokio::test]
    async fn the_ingest_token_is_checked_before_the_body_is_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let app = collector(dir.path(), Some("tok"));
        for uri in ["/api/v1/write", "/v1/logs"] {
            let never_ends = futures::stream::pending::<Result<Bytes, std::io::Error>>();
            let req = axum::http::Request::post(uri)
                .header("content-length", "30000000")
                .body(axum::body::Body::from_stream(never_ends))
                .expect("req");
            let answer = tokio::time::timeout(std::time::Duration::from_secs(10), app.clone().oneshot(req))
                .await
                .expect("answered without waiting for the body")
                .expect("call");
            assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{uri}");
        }
    }

    #[tokio::test]
    async fn samples_far_ahead_of_the_clock_are_refused_and_counted() {
        let dir = tempfile::tempdir().expect("tmp");
        let app = collector(dir.path(), None);
        let now = now_ms();
        let write = |samples: Vec<(i64, f64)>| {
            remote_write::encode(&WriteRequest {
                timeseries: vec![TimeSeries {
                    labels: vec![label("__name__", "temp"), label("room", "a")],
                    samples: samples.into_iter().map(|(timestamp, value)| Sample { value, timestamp }).collect(),
                }],
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
        let get = |uri: String| {
            let app = app.clone();
            async move {
                let r = app
                    .oneshot(axum::http::Request::get(uri).body(axum::body::Body::empty()).expect("req"))
                    .await
                    .expect("call");
                String::from_utf8(axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body").to_vec())
                    .expect("utf8")
            }
        };
        let (start, end) = ((now - 1000 + 999) / 1000, (now + 999) / 1000);
        let q = get(format!("/api/v1/query_range?query=temp&start={start}&end={end}&step=1")).await;
        let parsed: Value = serde_json::from_str(&q).expect("json");
        let values: Vec<&str> = parsed["data"]["result"][0]["values"]
            .as_array()
            .expect("values")
            .iter()
            .filter_map(|p| p[1].as_str())
            .collect();
        assert!(values.contains(&"1") && values.contains(&"2") && !values.contains(&"9"), "{q}");
        let metrics = get("/metrics".into()).await;
        for (reason, n) in [("too_far_ahead", 1), ("too_old", 1)] {
            let line = format!("hale_collector_samples_dropped_total{{reason=\"{reason}\"}} {n}");
            assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
        }
    }

    #[tokio::test]
    async fn oversized_or_expanding_log_bodies_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let app = collector(dir.path(), Some("tok"));
        let send = |body: Vec<u8>, json: bool| {
            let app = app.clone();
            async move {
                let req = axum::http::Request::post("/v1/logs")
                    .header("authorization", "Bearer tok")
                    .header("content-type", if json { "application/json" } else { "application/x-protobuf" })
                    .body(axum::body::Body::from(body))
                    .expect("req");
                let response = app.oneshot(req).await.expect("call");
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
                (status, String::from_utf8_lossy(&bytes).into_owned())
            }
        };
        assert_eq!(send(vec![0u8; MAX_LOG_BYTES + 1], false).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        // 150,000 empty records in 300 KB: refused before decoding.
        let (status, message) = send(crate::logs::empty_records(150_000), false).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        assert!(message.contains("log records in one request"), "{message}");
        let json =
            format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{}]}}]}}]}}"#, vec!["{}"; 2_200_001].join(","));
        assert_eq!(send(json.into_bytes(), true).await.0, StatusCode::BAD_REQUEST);
        // One attribute whose kvlist holds 4,000,000 empty key-values (8 MB): refused, not
        // expanded into gigabytes.
        let (status, message) = send(crate::logs::nested_attribute(4_000_000), false).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        // A sound request still goes through.
        let ok = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},"scopeLogs":[{"logRecords":[{"timeUnixNano":"5","severityText":"INFO","body":{"stringValue":"hello"}}]}]}]}"#;
        let (status, message) = send(ok.as_bytes().to_vec(), true).await;
        assert_eq!(status, StatusCode::OK, "{message}");
    }

    #[tokio::test]
    async fn hostile_queries_are_refused_not_obeyed() {
        let dir = tempfile::tempdir().expect("tmp");
        let app = collector(dir.path(), None);
        let ask = |q: &str| {
            let app = app.clone();
            let form = format!("query={}", form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>());
            async move {
                let req = axum::http::Request::post("/api/v1/query")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(axum::body::Body::from(form))
                    .expect("req");
                let r = app.oneshot(req).await.expect("call");
                let status = r.status();
                let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
                (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            }
        };
        for q in ["foo[1e20]", "max_over_time(up[30d:1ms])", "up{job=\"a\" or job=\"b\"}", "rate(", ""] {
            let (status, body) = ask(q).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
            assert_eq!(body["errorType"], "bad_data", "{q}");
        }
        // Nesting is bounded before parsing, whatever its shape; a deep but accepted
        // expression evaluates without exhausting the stack (the runtime's 2 MiB threads).
        let deep = crate::query::MAX_DEPTH;
        for q in [
            format!("{}up{}", "abs(".repeat(1000), ")".repeat(1000)),
            format!("up{}", "+up".repeat(20_000)),
            format!("{}1", "-".repeat(60_000)),
            format!("{}1{}", "(".repeat(20_000), ")".repeat(20_000)),
            format!("sum({}up{})", "rate(".repeat(deep), "[5m])".repeat(deep)),
        ] {
            let (status, body) = ask(&q).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{}: {body}", &q[..40]);
            assert!(body["error"].as_str().is_some_and(|e| e.contains("nested")), "{body}");
        }
        for q in [
            format!("{}up{}", "abs(".repeat(deep - 1), ")".repeat(deep - 1)),
            format!("{}1", "- ".repeat(deep - 1)),
            format!("vector(1){}", " + vector(1)".repeat(deep - 2)),
            format!("{}vector(1){}", "sum(1 + ".repeat(deep / 3), ")".repeat(deep / 3)),
        ] {
            let (status, body) = ask(&q).await;
            assert_eq!(status, StatusCode::OK, "{}: {body}", &q[..40]);
        }
        // JSON bodies nest no deeper than serde_json's limit: refused, not recursed into.
        for body in ["[".repeat(100_000), format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000))] {
            let req = axum::http::Request::post("/api/v1/silences")
                .header("authorization", "Bearer admin-secret")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .expect("req");
            let status = app.clone().oneshot(req).await.expect("call").status();
            assert!(status.is_client_error(), "{status}");
        }
        // A body that claims to decompress to gigabytes is refused before it is inflated.
        let mut bomb = Vec::new();
        let mut n: u64 = 4 << 30;
        while n >= 0x80 {
            bomb.push((n as u8) | 0x80);
            n >>= 7;
        }
        bomb.push(n as u8);
        bomb.extend_from_slice(&[0u8; 16]);
        assert_eq!(post(&app, bomb, None).await.0, StatusCode::BAD_REQUEST);
    }

    /// Issue #13: what the collector serves parses into core's wire types, the ones every
    /// client reads (alerts, silences and their POST answer, SLOs).
    #[tokio::test]
    async fn answers_parse_into_the_clients_types() {
        use hale_core::api::{AlertsData, Envelope, NewSilence, Silence, SilenceCreated, SilenceMatcher, SloState};
        let dir = tempfile::tempdir().expect("tmp");
        let app = collector(dir.path(), None);
        let call = |req: axum::http::Request<axum::body::Body>| {
            let app = app.clone();
            async move {
                let r = app.oneshot(req).await.expect("call");
                assert!(r.status().is_success(), "{}", r.status());
                axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body")
            }
        };
        let get = |uri: &str| axum::http::Request::get(uri).body(axum::body::Body::empty()).expect("req");
        let new = NewSilence {
            id: None,
            matchers: vec![SilenceMatcher::equal("alertname", "ReplicaDown")],
            starts_at: None,
            ends_at: "2099-01-01T00:00:00Z".into(),
            created_by: "test".into(),
            comment: "deploy".into(),
        };
        let post = axum::http::Request::post("/api/v1/silences")
            .header("authorization", "Bearer admin-secret")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(serde_json::to_vec(&new).expect("json")))
            .expect("req");
        let created: Envelope<SilenceCreated> = serde_json::from_slice(&call(post).await).expect("created");
        let id = created.into_data().expect("data").silence_id;
        let listed: Envelope<Vec<Silence>> =
            serde_json::from_slice(&call(get("/api/v1/silences")).await).expect("silences");
        let listed = listed.into_data().expect("data");
        assert_eq!((listed[0].id.as_str(), listed[0].comment.as_str()), (id.as_str(), "deploy"));
        assert_eq!(listed[0].matchers, new.matchers);
        let alerts: Envelope<AlertsData> = serde_json::from_slice(&call(get("/api/v1/alerts")).await).expect("alerts");
        assert_eq!(alerts.into_data().expect("data").group_by, ["alertname"]);
        let slos: Envelope<Vec<SloState>> = serde_json::from_slice(&call(get("/api/v1/slos")).await).expect("slos");
        assert!(slos.into_data().expect("data").is_empty());
    }

    fn snapish(raw: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(raw).expect("compress")
    }
}
