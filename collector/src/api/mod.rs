//! The collector's HTTP API, one module per endpoint family: `write` (remote_write
//! ingest), `logs` (OTLP ingest, the log query and the live tail), `prom` (the Prometheus
//! query API and federation), `alerting` (rules, alerts, SLOs), `silences`, `status`
//! (build info, the cluster view, health) and `metrics` (the collector's own `/metrics`).
//!
//! This module holds what they share: the router, the error in Prometheus's JSON shape
//! (`{"status":"error","errorType","error"}`), the parameter helpers and the ingest
//! endpoints' extractor (the token first, then the body within its limit). Handlers read
//! the shared [`Collector`] state; none of it knows about routes.

mod alerting;
mod alertmanager;
mod logs;
mod loki;
mod metrics;
mod prom;
mod silences;
mod status;
mod traces;
mod write;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hale_core::api::{Envelope, Status};
use hale_core::remote_write::BATCH_HEADER;
use serde::Serialize;

use crate::state::Collector;

pub use logs::MAX_LOG_BYTES;
pub use silences::SilencesApi;
pub use write::{MAX_AHEAD_MS, MAX_WRITE_BYTES};

pub fn router(collector: Arc<Collector>) -> Router {
    Router::new()
        .merge(write::routes())
        .merge(logs::routes())
        .merge(traces::routes())
        .merge(loki::routes())
        .merge(prom::routes())
        .merge(alerting::routes())
        .merge(silences::routes())
        .merge(alertmanager::routes())
        .merge(status::routes())
        .merge(metrics::routes())
        .with_state(collector)
}

/// An error in Prometheus's API shape: the status, its `errorType` and the message.
#[derive(Debug)]
pub struct PromError(StatusCode, &'static str, String);

impl PromError {
    /// Something failed on the collector's side, not in the request.
    fn internal(e: impl std::fmt::Display) -> PromError {
        PromError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }

    /// 507: nothing was stored, come back later (the response says when).
    fn disk_full(e: impl std::fmt::Display) -> PromError {
        PromError(StatusCode::INSUFFICIENT_STORAGE, "disk_full", e.to_string())
    }

    /// A store write failed: 507 if the disk was full (the sender retries), else 500.
    fn storing(c: &Collector, what: &str, e: impl std::fmt::Display, no_space: bool) -> PromError {
        if no_space {
            c.disk.ran_out();
            return PromError::disk_full(format!(
                "{what}: the disk is full ({e}); nothing was stored — free space under the data dir"
            ));
        }
        PromError(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{what}: {e}"))
    }
}

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        let PromError(status, kind, message) = self;
        let body: Envelope<()> =
            Envelope { status: Status::Error, data: None, error_type: Some(kind.into()), error: Some(message) };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::INSUFFICIENT_STORAGE {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, crate::disk::RETRY_AFTER_SECS.into());
        }
        response
    }
}

fn bad_data(message: impl Into<String>) -> PromError {
    PromError(StatusCode::BAD_REQUEST, "bad_data", message.into())
}

/// `{"status": "success", "data": data}`.
fn success<T: Serialize>(data: T) -> Response {
    axum::Json(Envelope::success(data)).into_response()
}

/// Runs `f` on the blocking pool: queries, scans and file writes hold locks or the disk
/// for a while, and must not stall the runtime's workers.
async fn blocking<T: Send + 'static>(
    c: &Arc<Collector>,
    f: impl FnOnce(&Collector) -> T + Send + 'static,
) -> Result<T, PromError> {
    let c = c.clone();
    tokio::task::spawn_blocking(move || f(&c)).await.map_err(PromError::internal)
}

/// Decodes `a=b&c=d` (percent and `+` escapes).
fn form_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

/// A request's parameters: its query string and, for a form POST, its body, as one.
fn params(query: Option<String>, body: &Bytes) -> String {
    [query.unwrap_or_default(), String::from_utf8_lossy(body).into_owned()].join("&")
}

/// The most a form body of query parameters may be.
const MAX_PARAMS_BYTES: usize = 1 << 20;

/// A request's parameters as one form string (see [`params`]): Prometheus's and Loki's
/// query APIs take them in the query string or a form POST alike.
struct Params(String);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Params {
    type Rejection = PromError;

    async fn from_request(request: axum::extract::Request, _: &S) -> Result<Self, PromError> {
        let query = request.uri().query().map(str::to_string);
        let body = axum::body::to_bytes(request.into_body(), MAX_PARAMS_BYTES)
            .await
            .map_err(|_| bad_data(format!("the form body could not be read or is over {MAX_PARAMS_BYTES} bytes")))?;
        Ok(Params(params(query, &body)))
    }
}

/// The first value of `key`.
fn param(all: &str, key: &str) -> Option<String> {
    form_pairs(all).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The time parameter `key` in ms, `default_ms` when absent.
fn time_param(all: &str, key: &str, default_ms: i64) -> Result<i64, PromError> {
    param(all, key).map_or(Ok(default_ms), |v| parse_time(key, &v))
}

/// A time as Prometheus takes it: Unix seconds (with a fraction) or RFC 3339; in ms.
fn parse_time(key: &str, v: &str) -> Result<i64, PromError> {
    if let Ok(secs) = v.parse::<f64>() {
        return Ok((secs * 1000.0).round() as i64);
    }
    hale_core::time::parse_rfc3339(v)
        .ok_or_else(|| bad_data(format!("invalid {key} {v:?}: use unix seconds or RFC 3339")))
}

/// An ingest request (remote_write, OTLP logs): its headers and its body of at most
/// `LIMIT` bytes, read only once the sender has shown the ingest token, so a stranger
/// cannot make the collector buffer `LIMIT` bytes per connection. `SPANS`: the traces
/// token is taken too (`/v1/traces`).
struct Ingest<const LIMIT: usize, const SPANS: bool = false> {
    headers: HeaderMap,
    body: Bytes,
}

impl<const LIMIT: usize, const SPANS: bool> axum::extract::FromRequest<Arc<Collector>> for Ingest<LIMIT, SPANS> {
    type Rejection = PromError;

    async fn from_request(request: axum::extract::Request, c: &Arc<Collector>) -> Result<Self, PromError> {
        let (parts, body) = request.into_parts();
        if !authorized(c, &parts.headers, SPANS) {
            return Err(PromError(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token (--ingest-token)".into(),
            ));
        }
        c.disk.check().map_err(PromError::disk_full)?;
        let body = axum::body::to_bytes(body, LIMIT).await.map_err(|e| {
            if e.into_inner().is::<http_body_util::LengthLimitError>() {
                PromError(StatusCode::PAYLOAD_TOO_LARGE, "bad_data", format!("body over {LIMIT} bytes"))
            } else {
                bad_data("the request body could not be read")
            }
        })?;
        Ok(Ingest { headers: parts.headers, body })
    }
}

fn authorized(collector: &Collector, headers: &HeaderMap, spans: bool) -> bool {
    let Some(expected) = &collector.ingest_token else { return true };
    let bearer = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    expected.accepts_bearer(bearer)
        || (spans && collector.traces_token.as_ref().is_some_and(|t| t.accepts_bearer(bearer)))
}

/// `X-Hale-Batch: <source>/<seq>`, if the sender numbered its batch.
fn batch_id(headers: &HeaderMap) -> Option<(String, u64)> {
    let (source, seq) = headers.get(BATCH_HEADER)?.to_str().ok()?.rsplit_once('/')?;
    Some((source.to_string(), seq.parse().ok()?))
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A collector on a temporary directory, called through its router (no socket).

    use std::sync::Arc;
    use std::time::Instant;

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::http::{Request, StatusCode};
    use hale_core::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};
    use serde_json::Value;
    use tower::ServiceExt;

    use crate::rules::RulesView;
    use crate::state::Collector;
    use crate::store::Store;

    /// The router of a fresh collector in a temporary directory (gone when dropped);
    /// silences take the token `admin-secret`.
    pub fn app(ingest_token: Option<&str>) -> (tempfile::TempDir, Router) {
        app_with(ingest_token, RulesView::default())
    }

    /// The same, showing the rule groups of `rules`.
    pub fn app_with(ingest_token: Option<&str>, rules: RulesView) -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().expect("tmp");
        let dir_path = dir.path();
        let (store, _) = Store::open(dir_path).expect("store");
        let logs = crate::logs::LogStore::open(&dir_path.join("logs")).expect("logs");
        let traces = crate::traces::TraceStore::open(&dir_path.join("traces")).expect("traces");
        let silences = Arc::new(crate::notify::silence::Silences::open(&dir_path.join("silences.json")));
        let router = super::router(Arc::new(Collector {
            store,
            logs,
            traces,
            exemplars: crate::exemplars::ExemplarStore::new(1000),
            disk: crate::disk::DiskGuard::new(dir_path, 0),
            ingest_token: ingest_token.map(hale_core::token::Token::fixed),
            traces_token: Some(hale_core::token::Token::fixed("traces-only")),
            started: Instant::now(),
            telemetry: Default::default(),
            rules,
            admin_token: Some(hale_core::token::Token::fixed("admin-secret")),
            silences,
            outbox: None,
            slos: Vec::new(),
            slo_min_events: 0,
            query_max_samples: crate::query::MAX_SAMPLES,
            group_by: vec!["alertname".into()],
            sources: Default::default(),
            metadata: Default::default(),
            server: Default::default(),
            forwarding: Default::default(),
            remote: None,
        }));
        (dir, router)
    }

    /// The status and body of one request.
    pub async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Bytes) {
        let response = app.clone().oneshot(req).await.expect("call");
        let status = response.status();
        (status, axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body"))
    }

    /// The status and text of `GET uri`.
    pub async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
        let (status, body) = call(app, Request::get(uri).body(Body::empty()).expect("req")).await;
        (status, String::from_utf8(body.to_vec()).expect("utf8"))
    }

    /// The JSON answer of `GET uri`.
    pub async fn get_json(app: &Router, uri: &str) -> Value {
        serde_json::from_str(&get(app, uri).await.1).expect("json")
    }

    pub fn label(n: &str, v: &str) -> Label {
        Label { name: n.into(), value: v.into() }
    }

    /// A remote_write body of one series with one sample.
    pub fn body(labels: Vec<Label>) -> Vec<u8> {
        remote_write::encode(&WriteRequest {
            timeseries: vec![TimeSeries::new(labels, vec![Sample { value: 1.0, timestamp: 1000 }])],
            metadata: Vec::new(),
        })
    }

    /// `POST /api/v1/write`: the status and the answer as JSON (`Null` when it is none).
    pub async fn post(app: &Router, body: Vec<u8>, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::post("/api/v1/write");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let (status, bytes) = call(app, req.body(Body::from(body)).expect("req")).await;
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// A snappy block, as remote_write bodies are framed.
    pub fn snappy(raw: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(raw).expect("compress")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::app;
    use axum::http::StatusCode;
    use tower::ServiceExt;

    /// A stranger cannot make the collector wait for (and buffer) a body: the token is
    /// checked on the headers, before a byte of the body is read.
    #[tokio::test]
    async fn the_ingest_token_is_checked_before_the_body_is_read() {
        let (_dir, app) = app(Some("tok"));
        for uri in ["/api/v1/write", "/v1/logs"] {
            let never_ends = futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
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
}
