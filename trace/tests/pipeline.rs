//! The pipeline end to end on loopback: a request through a traced client and a traced
//! server reaches an OTLP receiver as two spans of one trace, correctly parented and
//! named; an unsampled trace is dropped unless its span fails. On a current-thread
//! runtime, so the thread-local subscriber sees the server's spans too; flushes wait on the
//! blocking pool while the runtime runs the export.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tracing_subscriber::layer::SubscriberExt;

type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP receiver on a free port: the spans it got, with their service.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let store = got.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| async move {
            let request = ExportTraceServiceRequest::decode(&body[..]).expect("OTLP protobuf");
            for rs in request.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref())
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                    store.lock().expect("lock").push((service.clone(), span));
                }
            }
            ""
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1/traces"), got)
}

/// The ids each answered request carried out of its server span (what the access log
/// line and the exemplar read).
type Seen = Arc<Mutex<Vec<hale_trace::TraceIds>>>;

async fn capture(
    axum::extract::State(seen): axum::extract::State<Seen>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let response = next.run(request).await;
    if let Some(ids) = response.extensions().get::<hale_trace::TraceIds>() {
        seen.lock().expect("lock").push(ids.clone());
    }
    response
}

/// Serves `app` behind the server span and the capture on a free port.
async fn serve(app: Router, seen: &Seen) -> String {
    let app = app
        .route_layer(axum::middleware::from_fn(hale_trace::server_span))
        .layer(axum::middleware::from_fn_with_state(seen.clone(), capture));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A traced server that answers `/items/{id}` (500 for id 0), and the ids of its requests.
async fn items_server() -> (String, Seen) {
    let app = Router::new().route(
        "/items/{id}",
        get(|axum::extract::Path(id): axum::extract::Path<u32>| async move {
            if id == 0 { axum::http::StatusCode::INTERNAL_SERVER_ERROR } else { axum::http::StatusCode::OK }
        }),
    );
    let seen = Seen::default();
    (serve(app, &seen).await, seen)
}

async fn server() -> String {
    items_server().await.0
}

async fn call(base: &str, id: u32) {
    let mut headers = reqwest::header::HeaderMap::new();
    hale_trace::inject(&mut headers);
    reqwest::Client::new().get(format!("{base}/items/{id}")).headers(headers).send().await.expect("call");
}

/// A pipeline exporting to a fresh receiver, at `ratio`, slow from `slow`, as this
/// thread's subscriber while the guard lives.
async fn pipeline(
    ratio: f64,
    slow: Duration,
) -> (Received, Arc<hale_trace::Tracing>, tracing::subscriber::DefaultGuard) {
    let (endpoint, got) = receiver().await;
    let mut config = hale_trace::Config::new("shop-test", "shop-test-1", &endpoint);
    config.ratio = ratio;
    config.slow = slow;
    let tracing = Arc::new(hale_trace::Tracing::start(config));
    let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(tracing.layer()));
    (got, tracing, guard)
}

async fn flush(tracing: &Arc<hale_trace::Tracing>) {
    let t = tracing.clone();
    tokio::task::spawn_blocking(move || t.flush()).await.expect("flush");
}

#[tokio::test]
async fn a_request_is_one_trace_of_a_client_and_a_server_span() {
    let base = server().await;
    let (got, tracing, _guard) = pipeline(1.0, Duration::from_secs(60)).await;

    let outer = tracing::info_span!("checkout", otel.kind = "client");
    {
        use tracing::Instrument;
        call(&base, 7).instrument(outer.clone()).await;
    }
    let ids = {
        let _e = outer.enter();
        hale_trace::trace_ids().expect("a traced span")
    };
    drop(outer);
    flush(&tracing).await;
    let spans = got.lock().expect("lock").clone();
    let client = spans.iter().find(|(_, s)| s.name == "checkout").expect("the client span");
    let server = spans.iter().find(|(_, s)| s.name == "GET /items/{id}").expect("the server span, named by route");
    assert_eq!(hex(&client.1.trace_id), ids.trace_id);
    assert!(ids.sampled, "ratio 1 samples every trace");
    assert_eq!(server.1.trace_id, client.1.trace_id, "one trace");
    assert_eq!(server.1.parent_span_id, client.1.span_id, "the server span's parent is the caller's");
    let attr = |s: &Span, k: &str| s.attributes.iter().find(|kv| kv.key == k).map(|kv| format!("{:?}", kv.value));
    assert!(attr(&server.1, "http.route").is_some_and(|v| v.contains("/items/{id}")));
    assert!(attr(&server.1, "http.response.status_code").is_some_and(|v| v.contains("200")));
    assert!(server.0.contains("shop-test"));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn unsampled_traces_are_dropped_unless_they_fail() {
    let base = server().await;
    let (got, tracing, _guard) = pipeline(0.0, Duration::from_secs(60)).await;
    call(&base, 1).await;
    call(&base, 0).await;
    flush(&tracing).await;
    let spans = got.lock().expect("lock").clone();
    let statuses: Vec<String> = spans
        .iter()
        .filter(|(_, s)| s.name == "GET /items/{id}")
        .map(|(_, s)| format!("{:?}", s.attributes.iter().find(|kv| kv.key == "http.response.status_code")))
        .collect();
    assert_eq!(statuses.len(), 1, "only the failed request: {statuses:?}");
    assert!(statuses[0].contains("500"), "{statuses:?}");
}

#[tokio::test]
async fn slow_requests_are_kept_but_long_polls_are_not() {
    let app = Router::new()
        .route("/slow", get(|| async { tokio::time::sleep(Duration::from_millis(120)).await }))
        .route(
            "/wait",
            get(|| async {
                hale_trace::mark_long_poll();
                tokio::time::sleep(Duration::from_millis(120)).await
            }),
        )
        .route_layer(axum::middleware::from_fn(hale_trace::server_span));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (got, tracing, _guard) = pipeline(0.0, Duration::from_millis(50)).await;
    for path in ["/slow", "/wait"] {
        reqwest::Client::new().get(format!("{base}{path}")).send().await.expect("call");
    }
    flush(&tracing).await;
    let names: Vec<String> = got.lock().expect("lock").iter().map(|(_, s)| s.name.clone()).collect();
    assert_eq!(names, ["GET /slow"], "the slow request kept, the long-poll not");
}

#[tokio::test]
async fn client_and_database_spans_follow_the_conventions_and_a_failed_call_is_an_error() {
    let base = server().await;
    let (got, tracing, _guard) = pipeline(1.0, Duration::from_secs(60)).await;
    {
        use tracing::Instrument;
        let client = reqwest::Client::new();
        async {
            hale_trace::send(client.get(format!("{base}/items/0?secret=x"))).await.expect("answered");
            async {}.instrument(hale_trace::db_span("sqlite", "SELECT", "items")).await;
        }
        .instrument(tracing::info_span!("work"))
        .await;
    }
    flush(&tracing).await;
    let spans = got.lock().expect("lock").clone();
    let find = |name: &str| spans.iter().find(|(_, s)| s.name == name).map(|(_, s)| s.clone()).expect(name);
    let attr = |s: &Span, k: &str| s.attributes.iter().find(|kv| kv.key == k).map(|kv| format!("{:?}", kv.value));
    let (work, client, server, db) = (find("work"), find("GET"), find("GET /items/{id}"), find("SELECT items"));
    assert_eq!(client.parent_span_id, work.span_id);
    assert_eq!(server.parent_span_id, client.span_id, "the callee continues the client span");
    assert_eq!(client.kind, 3, "client");
    let url = attr(&client, "url.full").expect("url.full");
    assert!(url.contains("/items/0") && !url.contains("secret"), "no query in the stored URL: {url}");
    assert!(attr(&client, "http.response.status_code").is_some_and(|v| v.contains("500")));
    assert!(attr(&client, "error.type").is_some_and(|v| v.contains("500")));
    assert_eq!(client.status.as_ref().map(|s| s.code), Some(2), "error status");
    assert_eq!(db.parent_span_id, work.span_id);
    assert!(attr(&db, "db.system.name").is_some_and(|v| v.contains("sqlite")));
    assert!(attr(&db, "db.operation.name").is_some_and(|v| v.contains("SELECT")));
}

/// Each exported span says how many it stands for: a sampled ordinary one `1/ratio`, a
/// failed one (kept whatever the draw) itself.
#[tokio::test]
async fn exported_spans_carry_their_adjusted_count() {
    let base = server().await;
    let (got, tracing, _guard) = pipeline(0.5, Duration::from_secs(60)).await;
    for _ in 0..40 {
        call(&base, 1).await;
    }
    for _ in 0..5 {
        call(&base, 0).await;
    }
    flush(&tracing).await;
    let spans = got.lock().expect("lock").clone();
    let adjusted = |s: &Span| {
        s.attributes.iter().find(|kv| kv.key == hale_trace::ADJUSTED_COUNT).and_then(|kv| match &kv.value {
            Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::DoubleValue(d)),
            }) => Some(*d),
            _ => None,
        })
    };
    let status = |s: &Span| format!("{:?}", s.attributes.iter().find(|kv| kv.key == "http.response.status_code"));
    let (failed, ok): (Vec<&Span>, Vec<&Span>) = spans.iter().map(|(_, s)| s).partition(|s| status(s).contains("500"));
    assert_eq!(failed.len(), 5, "every failed request kept");
    assert!(failed.iter().all(|s| adjusted(s) == Some(1.0)));
    assert!((5..=35).contains(&ok.len()), "about half of 40 sampled: {}", ok.len());
    assert!(ok.iter().all(|s| adjusted(s) == Some(2.0)), "each stands for two");
}

/// A root request's sampling is one decision, drawn on the trace id it then has: every
/// request the server reports sampled is exported under that id, and no other.
#[tokio::test]
async fn a_root_request_is_sampled_once_on_its_own_trace_id() {
    let (base, seen) = items_server().await;
    let (got, tracing, _guard) = pipeline(0.5, Duration::from_secs(60)).await;
    for _ in 0..200 {
        call(&base, 1).await;
    }
    flush(&tracing).await;
    let seen = seen.lock().expect("lock").clone();
    let exported: std::collections::BTreeSet<String> =
        got.lock().expect("lock").iter().map(|(_, s)| hex(&s.trace_id)).collect();
    let sampled: std::collections::BTreeSet<String> =
        seen.iter().filter(|ids| ids.sampled).map(|ids| ids.trace_id.clone()).collect();
    assert_eq!(seen.len(), 200);
    // Half, not a quarter: a second draw (by the SDK, on an id of its own) would halve it.
    assert!((70..=130).contains(&sampled.len()), "about half of 200: {}", sampled.len());
    assert_eq!(exported, sampled, "exactly the requests drawn are exported, under their ids");
}

/// An unsampled request makes no spans, yet carries its trace on: the next hop continues
/// it, log lines inside name it, and when the request fails each failed hop's server span
/// is kept under the ids already handed on, so the kept spans form one parented trace.
#[tokio::test]
async fn a_failed_unsampled_request_keeps_each_failed_hop_under_the_ids_it_handed_on() {
    let (items, _) = items_server().await;
    let inside = Seen::default();
    let app = Router::new().route(
        "/front/{id}",
        get({
            let inside = inside.clone();
            move |axum::extract::Path(id): axum::extract::Path<u32>| async move {
                assert!(hale_trace::in_unsampled_request());
                assert!(hale_trace::db_span("sqlite", "SELECT", "items").is_none(), "no span inside");
                inside.lock().expect("lock").push(hale_trace::trace_ids().expect("the request's ids"));
                let answer = hale_trace::send(reqwest::Client::new().get(format!("{items}/items/{id}")))
                    .await
                    .expect("answered");
                answer.status()
            }
        }),
    );
    let seen = Seen::default();
    let front = serve(app, &seen).await;
    let (got, tracing, _guard) = pipeline(0.0, Duration::from_secs(60)).await;
    reqwest::Client::new().get(format!("{front}/front/1")).send().await.expect("call");
    reqwest::Client::new().get(format!("{front}/front/0")).send().await.expect("call");
    flush(&tracing).await;
    let spans = got.lock().expect("lock").clone();
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    assert_eq!(spans.len(), 2, "only the failed request's two server spans, no client span: {names:?}");
    let find = |name: &str| spans.iter().find(|(_, s)| s.name == name).map(|(_, s)| s.clone()).expect(name);
    let (front_span, items_span) = (find("GET /front/{id}"), find("GET /items/{id}"));
    let (seen, inside) = (seen.lock().expect("lock").clone(), inside.lock().expect("lock").clone());
    let failed = &seen[1];
    assert!(!failed.sampled);
    assert_eq!(hex(&front_span.trace_id), failed.trace_id, "kept under the ids the request carried");
    assert_eq!(hex(&front_span.span_id), failed.span_id);
    assert_eq!(inside[1], *failed, "what a log line inside names");
    assert!(front_span.parent_span_id.is_empty(), "a root");
    assert_eq!(items_span.trace_id, front_span.trace_id, "the next hop continued the trace");
    assert_eq!(items_span.parent_span_id, front_span.span_id, "and names the front's span as its parent");
    assert_eq!(front_span.kind, 2, "server");
    let status = front_span.status.as_ref().map(|s| s.code);
    assert_eq!(status, Some(2), "error");
    let attr = |s: &Span, k: &str| s.attributes.iter().find(|kv| kv.key == k).map(|kv| format!("{:?}", kv.value));
    assert!(attr(&front_span, "http.route").is_some_and(|v| v.contains("/front/{id}")));
    assert!(attr(&front_span, "http.response.status_code").is_some_and(|v| v.contains("500")));
    assert!(front_span.end_time_unix_nano > front_span.start_time_unix_nano);
}
