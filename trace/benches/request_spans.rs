//! What tracing costs one request in a service, on the request's own thread: a request
//! through an axum router behind [`hale_trace::server_span`], whose handler runs a
//! database query span, hands its trace on in an outgoing request's headers and logs a
//! line — what a shop service does — with the caller's `traceparent` sampled or not.
//!
//! Three subscribers: the registry alone (no pipeline: the request runs as it is), the
//! production pipeline with the trace not sampled (no span is made: ids only), and
//! sampled (spans recorded and queued for export to a receiver on another thread, which
//! answers at once; at these rates the batch thread wakes often, so the sampled figure
//! is an upper bound).
//!
//! `cargo bench -p hale-trace --bench request_spans`

use std::hint::black_box;

use axum::Router;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use reqwest::header::HeaderMap;
use tower::ServiceExt;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

fn app() -> Router {
    Router::new()
        .route(
            "/api/products/{id}",
            get(|| async {
                async {}.instrument(hale_trace::db_span("sqlite", "SELECT", "products")).await;
                let mut headers = HeaderMap::new();
                hale_trace::inject(&mut headers);
                tracing::info!(product = 42, "product served");
                black_box(headers);
                "{}"
            }),
        )
        .route_layer(axum::middleware::from_fn(hale_trace::server_span))
}

/// A request with the caller's `traceparent`: sampled or not.
fn request(sampled: bool) -> axum::extract::Request {
    let flags = if sampled { "01" } else { "00" };
    axum::extract::Request::builder()
        .uri("/api/products/42")
        .header("traceparent", format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"))
        .body(axum::body::Body::empty())
        .expect("a request")
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let export = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let receiver = export.block_on(async {
        let app = Router::new().route("/v1/traces", axum::routing::post(|| async { "" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/v1/traces")
    });
    // Another dispatcher alive, so callsite interest is not decided for one subscriber only.
    let _other = tracing::Dispatch::new(tracing_subscriber::registry());
    let app = app();
    let one = |sampled: bool| {
        let response = runtime.block_on(app.clone().oneshot(request(sampled))).expect("answered");
        black_box(response.extensions().get::<hale_trace::TraceIds>().cloned())
    };

    let mut group = c.benchmark_group("request spans");
    tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        group.bench_function("no pipeline", |b| b.iter(|| one(true)));
    });
    for sampled in [false, true] {
        let _in_export = export.enter();
        let mut config = hale_trace::Config::new("catalog", "catalog-1", &receiver);
        config.ratio = 0.1;
        let pipeline = hale_trace::Tracing::start(config);
        let subscriber = tracing_subscriber::registry().with(pipeline.layer());
        let name = if sampled { "sampled" } else { "not sampled" };
        tracing::subscriber::with_default(subscriber, || {
            group.bench_function(name, |b| b.iter(|| one(sampled)));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
