//! What every shop service has in common: probes, metrics, fault injection, request ids,
//! access logs, a timeout and a body limit around its own routes, and a graceful server.
//!
//! [`app`] adds `/healthz`, `/readyz`, `/metrics` and `/admin/chaos` to a service's router
//! and wraps it, outermost first: request id, duration histogram and access log
//! (`observe`); `Retry-After` on every 503 and 429, whoever made it (shed, timeout,
//! handler, proxied replica); error bodies in the one JSON shape; the capacity; an API
//! request's server span (`api_span`); injected faults, outside the timeout so a hang
//! really hangs; the 10 s timeout
//! ([`REQUEST_TIMEOUT`], 503); the 64 KiB body limit ([`BODY_LIMIT_BYTES`], 413).
//!
//! Capacity: a service with `max_in_flight` in cluster.toml (search has 4) serves that many
//! API requests at once. A request holds its slot for its whole life, injected latency
//! included, waits up to [`MAX_QUEUE_WAIT`] (2 s) for one, else gets 503 `overloaded`.
//! Probes, `/metrics` and `/admin/*` never wait. Servers keep the peer's address
//! (`ConnectInfo`) for per-client limits, and drain for at most 5 s on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hale_core::ServiceKind;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::chaos::{Chaos, ChaosRequest, Effect};
use super::error::{ApiJson, AppError};
use super::metrics::{HttpLabels, HttpMetrics, SharedRegistry, TraceExemplar};
use super::token::{Admin, AuthContext, TokenKeys};

/// Largest request body any shop endpoint accepts; larger ones get 413.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// A handler that takes longer than this answers 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown is asked for, in-flight requests get this long to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// A request waits at most this long for a free slot of a replica at capacity.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Whether the replica is ready to serve, with the details `/readyz` shows.
#[derive(Clone)]
pub struct Readiness(Arc<Mutex<Result<Value, String>>>);

impl Readiness {
    pub fn ready(detail: Value) -> Self {
        Readiness(Arc::new(Mutex::new(Ok(detail))))
    }
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Readiness(Arc::new(Mutex::new(Err(reason.into()))))
    }
    pub fn set(&self, state: Result<Value, String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
    pub fn get(&self) -> Result<Value, String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Identity and shared machinery of one running replica.
#[derive(Clone)]
pub struct Frame {
    pub service: ServiceKind,
    pub instance: String,
    pub http: HttpMetrics,
    pub chaos: Chaos,
    pub auth: AuthContext,
    pub readiness: Readiness,
    /// Slots for API requests when the replica has a capacity (`max_in_flight`).
    capacity: Option<Arc<tokio::sync::Semaphore>>,
    started: Instant,
}

impl Frame {
    /// Registers the HTTP metric in `registry`; the service registers its own next.
    pub fn new(
        service: ServiceKind,
        instance: &str,
        registry: &mut Registry,
        jwt_secret: &str,
        admin_token: &str,
    ) -> Self {
        Frame {
            service,
            instance: instance.to_string(),
            http: HttpMetrics::register(registry),
            chaos: Chaos::default(),
            auth: AuthContext { keys: Arc::new(TokenKeys::new(jwt_secret)), admin_token: Arc::from(admin_token) },
            readiness: Readiness::ready(json!({})),
            capacity: None,
            started: Instant::now(),
        }
    }

    /// Serves at most `slots` API requests at once; the rest wait for a slot, up to
    /// [`MAX_QUEUE_WAIT`], then get 503. Probes and admin calls never wait.
    pub fn with_capacity(mut self, slots: Option<usize>) -> Self {
        self.capacity = slots.map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
        self
    }
}

/// Wraps a service's API router with the common endpoints and layers.
pub fn app(frame: Frame, registry: SharedRegistry, api: Router) -> Router {
    let frame = Arc::new(frame);
    let common = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/chaos", get(chaos_get).post(chaos_post).delete(chaos_delete))
        .with_state((frame.clone(), registry));
    api.merge(common)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
        .layer(middleware::from_fn_with_state(frame.clone(), faults))
        .layer(middleware::from_fn(api_span))
        .layer(middleware::from_fn_with_state(frame.clone(), capacity))
        .layer(middleware::map_response(json_error_bodies))
        .layer(middleware::map_response(retry_after))
        .layer(middleware::from_fn_with_state(frame.clone(), observe))
        .layer(axum::Extension(frame.auth.clone()))
}

type CommonState = (Arc<Frame>, SharedRegistry);

async fn healthz(State((frame, _)): State<CommonState>) -> impl IntoResponse {
    axum::Json(json!({
        "status": "alive",
        "service": frame.service,
        "instance": frame.instance,
        "uptime_secs": frame.started.elapsed().as_secs(),
    }))
}

async fn readyz(State((frame, _)): State<CommonState>) -> Response {
    match frame.readiness.get() {
        Ok(mut detail) => {
            if let Value::Object(map) = &mut detail {
                map.insert("status".into(), "ready".into());
                map.insert("instance".into(), frame.instance.clone().into());
            }
            axum::Json(detail).into_response()
        }
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "instance": frame.instance, "reason": reason})),
        )
            .into_response(),
    }
}

async fn metrics(State((_, registry)): State<CommonState>) -> impl IntoResponse {
    hale_serve::metrics::exposition(&registry)
}

async fn chaos_get(_: Admin, State((frame, _)): State<CommonState>) -> impl IntoResponse {
    axum::Json(frame.chaos.snapshot())
}

async fn chaos_post(
    _: Admin,
    State((frame, _)): State<CommonState>,
    ApiJson(req): ApiJson<ChaosRequest>,
) -> Result<impl IntoResponse, AppError> {
    let crash = frame.chaos.apply(&req).map_err(AppError::BadRequest)?;
    tracing::warn!(fault = %serde_json::to_string(&req).unwrap_or_default(), "chaos fault injected");
    if crash {
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tracing::error!("chaos: crashing on request");
            std::process::exit(1);
        });
    }
    Ok((StatusCode::ACCEPTED, axum::Json(frame.chaos.snapshot())))
}

async fn chaos_delete(_: Admin, State((frame, _)): State<CommonState>) -> impl IntoResponse {
    frame.chaos.clear();
    tracing::info!("chaos faults cleared");
    axum::Json(frame.chaos.snapshot())
}

fn is_api(path: &str) -> bool {
    !(path == "/healthz" || path == "/readyz" || path == "/metrics" || path.starts_with("/admin/"))
}

/// The replica's capacity: an API request holds a slot for its whole life, injected
/// latency included (a slow dependency or a heavy query keeps a worker busy), so traffic
/// beyond what the slots can serve queues here and shows as latency, then as 503s.
async fn capacity(State(frame): State<Arc<Frame>>, req: Request, next: Next) -> Response {
    if !is_api(req.uri().path()) {
        return next.run(req).await;
    }
    let _slot = match &frame.capacity {
        None => None,
        Some(slots) => match tokio::time::timeout(MAX_QUEUE_WAIT, slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Some(slot),
            _ => {
                frame.http.shed.inc();
                let message = format!(
                    "{} is at capacity: no slot freed within {} s; retry shortly",
                    frame.instance,
                    MAX_QUEUE_WAIT.as_secs()
                );
                let body = json!({"error": {"code": "overloaded", "message": message}});
                let mut r = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
        },
    };
    frame.http.active.inc();
    let response = next.run(req).await;
    frame.http.active.dec();
    response
}

/// Injected faults. Runs outside the timeout so a hang really hangs.
async fn faults(State(frame): State<Arc<Frame>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/admin/chaos" {
        return next.run(req).await;
    }
    match frame.chaos.effect(is_api(path)) {
        Effect::None => next.run(req).await,
        Effect::Hang(until) => {
            tokio::time::sleep_until(until.into()).await;
            next.run(req).await
        }
        Effect::Delay(delay) => {
            tokio::time::sleep(delay).await;
            next.run(req).await
        }
        Effect::Fail => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"code": "chaos", "message": "failure injected by /admin/chaos"}})),
        )
            .into_response(),
    }
}

/// Errors made outside our handlers (a path that is not UTF-8, a wrong method, the
/// timeout) come as plain text or empty; give them the same JSON shape as ours.
async fn json_error_bodies(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let code = status.canonical_reason().unwrap_or("error").to_lowercase().replace([' ', '-'], "_");
    let mut response = (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}

/// Every 503 and 429 says when to come back, whoever made it (a shed request, the
/// timeout, a handler, a proxied replica): without `Retry-After` clients retry at once and
/// make an overload worse. A response that already says keeps its value.
async fn retry_after(mut response: Response) -> Response {
    let status = response.status();
    if (status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS)
        && !response.headers().contains_key(axum::http::header::RETRY_AFTER)
    {
        response.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The server span of an API request (probes and scrapes get none: they would drown the
/// traces that matter; nor does a path no route matched); a no-op without a tracing
/// pipeline. It wraps the injected faults, so a replica made slow is slow in its own spans.
async fn api_span(req: Request, next: Next) -> Response {
    if req.extensions().get::<MatchedPath>().is_some() && is_api(req.uri().path()) {
        hale_trace::server_span(req, next).await
    } else {
        next.run(req).await
    }
}

/// Request id, the duration histogram and one access-log line per request.
async fn observe(State(frame): State<Arc<Frame>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        req.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let method = req.method().to_string();
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let mut response = next.run(req).await;
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    let ids = response.extensions().get::<hale_trace::TraceIds>().cloned();
    // Only a sampled trace is surely exported: an exemplar must point at a stored trace.
    let exemplar = ids
        .as_ref()
        .filter(|ids| ids.sampled)
        .map(|ids| TraceExemplar { trace_id: ids.trace_id.clone(), span_id: ids.span_id.clone() });
    frame
        .http
        .duration
        .get_or_create(&HttpLabels {
            http_request_method: method.clone(),
            http_route: route.clone(),
            http_response_status_code: status,
        })
        .observe(elapsed.as_secs_f64(), exemplar, Some(std::time::SystemTime::now()));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let latency_ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    // The line is written outside the request's span: its ids come from the response.
    let (trace_id, span_id) = match ids {
        Some(ids) => (Some(ids.trace_id), Some(ids.span_id)),
        None => (None, None),
    };
    if route == "/healthz" || route == "/readyz" || route == "/metrics" {
        tracing::debug!(request_id, method, route, status, latency_ms, "request");
    } else if status >= 500 {
        tracing::error!(request_id, method, route, status, latency_ms, trace_id, span_id, "request failed");
    } else if status >= 400 {
        tracing::warn!(request_id, method, route, status, latency_ms, trace_id, span_id, "request refused");
    } else {
        tracing::info!(request_id, method, route, status, latency_ms, trace_id, span_id, "request");
    }
    response
}

/// Binds `listen` and serves `app` until `shutdown` resolves, then drains in-flight
/// requests for a bounded time.
pub async fn serve(
    listen: SocketAddr,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    serve_on(listener, app, hale_serve::Security::default(), shutdown).await
}

pub async fn serve_on(
    listener: tokio::net::TcpListener,
    app: Router,
    security: hale_serve::Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // With the peer's address (`ConnectInfo`), for per-client limits (`internal::ClientAddr`).
    let limits = hale_serve::Limits { drain_timeout: DRAIN_TIMEOUT, ..hale_serve::Limits::default() };
    hale_serve::serve_secure(listener, app, limits, security, shutdown).await
}
