//! Spans around the calls a service makes, as OpenTelemetry's conventions name them:
//!
//! - [`send`]: an HTTP client span, `{method}`, kind client, `http.request.method`,
//!   `server.address`, `server.port`, `url.full` (without its query, which may carry what
//!   should not be stored), `http.response.status_code`; error status on a 4xx or 5xx
//!   answer (for a client both are failures) or a transport error (`error.type`). The
//!   request carries the client span's `traceparent`, so the callee's server span is its
//!   child.
//! - [`db_span`]: a database client span, `{db.operation.name} {db.collection.name}`,
//!   with `db.system.name`: wrap the future that runs the statement.

use tracing::Instrument;
use tracing::field::Empty;

/// Sends `request` inside a client span, with the span's trace context in its headers.
pub async fn send(request: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
    call(request, false).await
}

/// [`send`] for a long-poll: the span is marked as waiting on purpose, never kept for
/// being slow.
pub async fn send_long_poll(request: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
    call(request, true).await
}

async fn call(request: reqwest::RequestBuilder, long_poll: bool) -> reqwest::Result<reqwest::Response> {
    let (client, request) = request.build_split();
    let mut request = request?;
    if crate::in_unsampled_request() && tracing::Span::current().is_none() {
        // No span inside an unsampled request; the next hop still continues its trace.
        crate::inject(request.headers_mut());
        return client.execute(request).await;
    }
    let span = client_span(&request);
    async move {
        if long_poll {
            crate::mark_long_poll();
        }
        crate::inject(request.headers_mut());
        let result = client.execute(request).await;
        let span = tracing::Span::current();
        match &result {
            Ok(response) => {
                let status = response.status().as_u16();
                span.record("http.response.status_code", status);
                if status >= 400 {
                    span.record("error.type", status);
                    span.record("otel.status_code", "ERROR");
                }
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect_error"
                } else {
                    "transport_error"
                };
                span.record("error.type", kind);
                span.record("otel.status_code", "ERROR");
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// The client span of `request`, before it is sent.
fn client_span(request: &reqwest::Request) -> tracing::Span {
    let url = request.url();
    let method = request.method().as_str();
    tracing::info_span!(
        "http client",
        otel.name = %method,
        otel.kind = "client",
        http.request.method = %method,
        server.address = url.host_str().unwrap_or_default(),
        server.port = url.port_or_known_default().unwrap_or_default(),
        url.full = %format_args!("{}://{}{}", url.scheme(), url.authority(), url.path()),
        http.response.status_code = Empty,
        "error.type" = Empty,
        otel.status_code = Empty,
    )
}

/// A database client span: `db_span("sqlite", "INSERT", "reservations")`; none inside
/// an unsampled request.
pub fn db_span(system: &'static str, operation: &'static str, collection: &'static str) -> tracing::Span {
    if crate::in_unsampled_request() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "db",
        otel.name = %format_args!("{operation} {collection}"),
        otel.kind = "client",
        db.system.name = system,
        db.operation.name = operation,
        db.collection.name = collection,
    )
}

/// The span `make` makes, inside the current trace; none inside an unsampled request
/// (where it would start a trace of its own).
pub fn child_span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if crate::in_unsampled_request() { tracing::Span::none() } else { make() }
}
