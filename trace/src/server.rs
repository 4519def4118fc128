//! The server span of each HTTP request, as OpenTelemetry's HTTP semantic conventions
//! name it: `{method} {route}` (the matched route, never the raw path), kind server,
//! `http.request.method`, `http.route`, `url.path`, `http.response.status_code`, status
//! error on a 5xx (a 4xx is the client's). Its parent is the caller's `traceparent`.
//!
//! The response carries the span's [`crate::TraceIds`] as an extension, for the layers
//! outside it (the access log line, the latency histogram's exemplar).
//!
//! Add with `Router::route_layer(axum::middleware::from_fn(hale_trace::server_span))`:
//! as a route layer it runs after routing, when the matched route is known.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub async fn server_span(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let span = request_span(request.method().as_str(), &route, request.uri().path());
    // Before the span is first entered, so the OpenTelemetry span starts with its parent.
    let _ = span.set_parent(crate::extract(request.headers()));
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    // For the layers outside the span: the access log line and the latency exemplar.
    if let Some(ids) = crate::trace_ids_of(&span) {
        response.extensions_mut().insert(ids);
    }
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// The server span of a request to `route` (empty when no route matched), before its
/// parent is set and before it is entered.
pub fn request_span(method: &str, route: &str, path: &str) -> tracing::Span {
    let name = if route.is_empty() { method.to_owned() } else { format!("{method} {route}") };
    tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %path,
        http.response.status_code = Empty,
        otel.status_code = Empty,
    )
}
