//! The server span of each HTTP request, as OpenTelemetry's HTTP semantic conventions
//! name it: `{method} {route}` (the matched route, never the raw path), kind server,
//! `http.request.method`, `http.route`, `url.path`, `http.response.status_code`, status
//! error on a 5xx (a 4xx is the client's). Its parent is the caller's `traceparent`.
//!
//! Sampling is decided here, before any span: the caller's decision if it sent a
//! `traceparent`, else a draw on a new trace id (the one the span then gets). A sampled
//! request runs in its `tracing` span; an unsampled one in no span at all (see
//! `unsampled.rs`), and if it fails or is slow its span is made once it is answered.
//! Without a pipeline the request runs as it is.
//!
//! The response carries the request's [`crate::TraceIds`] as an extension, for the
//! layers outside it (the access log line, the latency histogram's exemplar).
//!
//! Add with `Router::route_layer(axum::middleware::from_fn(hale_trace::server_span))`:
//! as a route layer it runs after routing, when the matched route is known.

use std::time::{Instant, SystemTime};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, Tracer};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::unsampled;

pub async fn server_span(request: Request, next: Next) -> Response {
    let Some(settings) = crate::settings() else {
        return next.run(request).await;
    };
    let parent = crate::extract(request.headers());
    let caller = Some(parent.span().span_context().clone()).filter(SpanContext::is_valid);
    let (trace_id, span_id) = unsampled::random_ids();
    let trace_id = caller.as_ref().map_or(trace_id, SpanContext::trace_id);
    let sampled = match &caller {
        Some(sc) => sc.is_sampled(),
        None => crate::sampling::drawn(trace_id, settings.ratio),
    };
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let method = request.method().as_str().to_owned();
    if sampled {
        let span = request_span(&method, &route, request.uri().path());
        // Before the span is first entered, so the OpenTelemetry span starts with its
        // parent; a root gets the trace id its sampling was drawn on.
        let _ = span.set_parent(parent);
        let ids = unsampled::with_ids(Some(trace_id), None, || crate::trace_ids_of(&span));
        let mut response = next.run(request).instrument(span.clone()).await;
        let status = response.status().as_u16();
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
        // For the layers outside the span: the access log line and the latency exemplar.
        if let Some(ids) = ids {
            response.extensions_mut().insert(ids);
        }
        return response;
    }
    let path = request.uri().path().to_owned();
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::default(),
        false,
        caller.map(|c| c.trace_state().clone()).unwrap_or_default(),
    );
    let (start, started) = (SystemTime::now(), Instant::now());
    let (mut response, long_poll) = unsampled::run(context, next.run(request)).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let failed = status >= 500;
    if failed || (!long_poll && elapsed >= settings.slow) {
        let name = span_name(&method, &route);
        let mut attributes = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", path),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ];
        if !route.is_empty() {
            attributes.push(KeyValue::new("http.route", route));
        }
        let builder = settings
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes(attributes);
        let mut span =
            unsampled::with_ids(Some(trace_id), Some(span_id), || settings.tracer.build_with_context(builder, &parent));
        if failed {
            span.set_status(Status::error(""));
        }
        span.end_with_timestamp(start + elapsed);
    }
    response.extensions_mut().insert(crate::TraceIds {
        trace_id: trace_id.to_string(),
        span_id: span_id.to_string(),
        sampled: false,
    });
    response
}

/// The server span of a request to `route` (empty when no route matched), before its
/// parent is set and before it is entered.
fn request_span(method: &str, route: &str, path: &str) -> tracing::Span {
    let name = span_name(method, route);
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

/// `{method} {route}`, or the method alone when no route matched.
fn span_name(method: &str, route: &str) -> String {
    if route.is_empty() { method.to_owned() } else { format!("{method} {route}") }
}
