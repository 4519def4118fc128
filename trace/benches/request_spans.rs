//! What tracing costs one request in a service, on the CPU of the request's own thread:
//! the spans the gateway makes for `GET /api/products/{id}` — its server span (parent
//! from the caller's `traceparent`), a client span whose context goes into the outgoing
//! headers, a database span, a log event inside — entered and left as an async request
//! polls them, then the ids the access log and the exemplar read.
//!
//! Three subscribers: the registry alone (a shop with tracing off still makes its spans),
//! the production layer with the trace not sampled (the server span recorded, then dropped
//! unless it failed or was slow), and sampled (queued for export to a receiver on another
//! thread, which answers at once).
//!
//! `cargo bench -p hale-trace --bench request_spans`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use reqwest::header::{HeaderMap, HeaderValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// The caller's `traceparent`: sampled or not.
fn incoming(sampled: bool) -> HeaderMap {
    let flags = if sampled { "01" } else { "00" };
    let mut headers = HeaderMap::new();
    let value = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
    headers.insert("traceparent", HeaderValue::from_str(&value).expect("valid header"));
    headers
}

fn one_request(incoming: &HeaderMap, outgoing: &reqwest::Request) -> Option<hale_trace::TraceIds> {
    let server = hale_trace::request_span("GET", "/api/products/{id}", "/api/products/42");
    let _ = server.set_parent(hale_trace::extract(incoming));
    // Polls of the handler: enter, call the catalog, come back for its answer.
    server.in_scope(|| {
        let client = hale_trace::client_span(outgoing);
        let mut headers = HeaderMap::new();
        client.in_scope(|| hale_trace::inject(&mut headers));
        black_box(&headers);
        client.in_scope(|| {});
        client.record("http.response.status_code", 200u16);
    });
    server.in_scope(|| {
        let db = hale_trace::db_span("sqlite", "SELECT", "products");
        db.in_scope(|| {});
        tracing::info!(product = 42, "product served");
    });
    server.in_scope(|| {});
    let ids = hale_trace::trace_ids_of(&server);
    server.record("http.response.status_code", 200u16);
    ids
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let _guard = runtime.enter();
    let receiver = runtime.block_on(async {
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(|| async { "" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/v1/traces")
    });
    let outgoing = reqwest::Client::new().get("http://127.0.1.2:11083/api/products/42").build().expect("a request");
    // Another dispatcher alive, so callsite interest is not decided for one subscriber only.
    let _other = tracing::Dispatch::new(tracing_subscriber::registry());

    let mut group = c.benchmark_group("request spans");
    let off = tracing_subscriber::registry();
    tracing::subscriber::with_default(off, || {
        let headers = incoming(true);
        group.bench_function("tracing off", |b| b.iter(|| black_box(one_request(&headers, &outgoing))));
    });
    for sampled in [false, true] {
        let mut config = hale_trace::Config::new("gateway", "gateway-1", &receiver);
        config.ratio = 0.1;
        let pipeline = hale_trace::Tracing::start(config);
        let subscriber = tracing_subscriber::registry().with(pipeline.layer());
        let headers = incoming(sampled);
        let name = if sampled { "sampled" } else { "not sampled" };
        tracing::subscriber::with_default(subscriber, || {
            group.bench_function(name, |b| b.iter(|| black_box(one_request(&headers, &outgoing))));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
