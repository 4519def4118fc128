//! W3C trace context on HTTP hops: [`inject`] writes the current span's `traceparent`
//! (and `tracestate`) into an outgoing request's headers; [`extract`] reads them from an
//! incoming one.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Inject<'a>(&'a mut HeaderMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

struct Extract<'a>(&'a HeaderMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Adds the current span's context to `headers`, or the unsampled request's this task
/// serves (nothing outside either).
pub fn inject(headers: &mut HeaderMap) {
    let cx = current_context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Inject(headers)));
}

/// The current span's context if it is traced, else the unsampled request's.
fn current_context() -> opentelemetry::Context {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        return cx;
    }
    unsampled_context().unwrap_or(cx)
}

/// The context of the unsampled request this task serves, if any.
fn unsampled_context() -> Option<opentelemetry::Context> {
    crate::unsampled::context().map(|sc| opentelemetry::Context::new().with_remote_span_context(sc))
}

/// The context `headers` carry (an empty one without `traceparent`).
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&Extract(headers)))
}

/// The current span's W3C `traceparent`, to hand a trace on through something other
/// than an HTTP request's headers (a change the standby pulls later).
pub fn traceparent() -> Option<String> {
    let mut headers = HeaderMap::new();
    inject(&mut headers);
    headers.get("traceparent")?.to_str().ok().map(str::to_owned)
}

/// The context a `traceparent` value names (an empty one if it is not valid).
pub fn context_of(traceparent: &str) -> opentelemetry::Context {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(traceparent) {
        headers.insert("traceparent", value);
    }
    extract(&headers)
}

/// Makes `span` (not yet entered) a child of the span `traceparent` names.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let _ = span.set_parent(context_of(traceparent));
}

/// The attribute that marks a request that waits on purpose (a long-poll).
pub const LONG_POLL: &str = "hale.long_poll";

/// Marks the current span as a long-poll: its duration is the wait it asked for, so it is
/// never kept for being slow.
pub fn mark_long_poll() {
    tracing::Span::current().set_attribute(LONG_POLL, true);
    crate::unsampled::mark_long_poll();
}

/// A span's identity in hex, as log lines and exemplars carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: String,
    pub span_id: String,
    /// The trace was sampled at its start, so the span is exported (an exemplar should
    /// point only at such a trace: an unsampled one may never be stored).
    pub sampled: bool,
}

pub(crate) fn ids_of(cx: &opentelemetry::Context) -> Option<TraceIds> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| TraceIds {
        trace_id: sc.trace_id().to_string(),
        span_id: sc.span_id().to_string(),
        sampled: sc.is_sampled(),
    })
}

/// The current `tracing` span's ids if it is traced, else those of the unsampled request
/// this task serves.
pub fn trace_ids() -> Option<TraceIds> {
    ids_of(&current_context())
}

/// The ids of the unsampled request this task serves (which has no span), for a log line.
pub fn request_ids() -> Option<TraceIds> {
    ids_of(&unsampled_context()?)
}

/// `span`'s ids, if it is traced.
pub fn trace_ids_of(span: &tracing::Span) -> Option<TraceIds> {
    ids_of(&span.context())
}

/// The ids of span `id`, for a `tracing` layer (which cannot reach the dispatcher again
/// through `Span::current()`): `dispatch` is the one the layer was registered with
/// (`Layer::on_register_dispatch`), `id` the span an event happened in.
///
/// Spans do not activate an OpenTelemetry context when entered (each poll would pay for
/// it), so `opentelemetry::Context::current()` does not name them; this asks the layer.
pub fn ids_in(dispatch: &tracing::dispatcher::WeakDispatch, id: &tracing::span::Id) -> Option<TraceIds> {
    let dispatch = dispatch.upgrade()?;
    ids_of(&tracing_opentelemetry::get_otel_context(id, &dispatch)?)
}
