//! Traces: OTLP/HTTP ingest (`POST /v1/traces`, protobuf or JSON) and the subset of
//! Grafana Tempo's HTTP API its datasource calls: a trace by id (`/api/traces/<id>`,
//! `/api/v2/traces/<id>`; protobuf when asked for, else OTLP/JSON), search
//! (`/api/search` with `tags` or a TraceQL `q` of the form the search builder writes),
//! tag names and values (v1 and v2), and `/api/echo`.
//!
//! Ingest takes the ingest token and, like `/v1/logs`, at most 8 MiB (also once
//! decompressed), pre-scanned before decoding: over 100,000 spans, 1,000,000 attributes,
//! values, events and links, or values nested over 32 levels are refused with 400. It
//! answers once the spans are fsynced; spans already stored are counted, not stored twice.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;

use super::{Ingest, PromError, bad_data, blocking};
use crate::state::Collector;
use crate::traces::Search;

/// Largest OTLP traces body accepted (compressed or not, and once decompressed).
pub const MAX_TRACE_BYTES: usize = super::logs::MAX_LOG_BYTES;
/// Traces one search returns at most.
const MAX_LIMIT: usize = 1000;

pub(super) fn routes() -> Router<Arc<Collector>> {
    Router::new()
        .route("/v1/traces", post(ingest))
        .route("/api/traces/{id}", get(trace_v1))
        .route("/api/v2/traces/{id}", get(trace_v2))
        .route("/api/search", get(search))
        .route("/api/search/tags", get(tags_v1))
        .route("/api/v2/search/tags", get(tags_v2))
        .route("/api/search/tag/{name}/values", get(values_v1))
        .route("/api/v2/search/tag/{name}/values", get(values_v2))
        .route("/api/echo", get(|| async { "echo" }))
}

fn is_json(headers: &HeaderMap, header: &str) -> bool {
    headers.get(header).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"))
}

async fn ingest(
    State(c): State<Arc<Collector>>,
    Ingest { headers, body }: Ingest<MAX_TRACE_BYTES, true>,
) -> Result<Response, PromError> {
    let json = is_json(&headers, "content-type");
    let encoding = headers.get("content-encoding").map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let stored = blocking(&c, move |c| {
        let body = super::logs::decompressed(encoding.as_deref(), &body)?;
        let request = crate::traces::decode_request(&body, json).map_err(bad_data)?;
        c.traces.append(request).map_err(PromError::internal)
    })
    .await??;
    let partial_success = (stored.rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: stored.rejected as i64,
        error_message: format!("{} spans without a valid trace id (16 bytes) or span id (8 bytes)", stored.rejected),
    });
    let response = ExportTraceServiceResponse { partial_success };
    Ok(if json {
        axum::Json(response).into_response()
    } else {
        (StatusCode::OK, [("content-type", "application/x-protobuf")], response.encode_to_vec()).into_response()
    })
}

/// A trace id in hex (Tempo and Grafana send 32 digits; shorter ones are zero-padded).
fn parse_id(text: &str) -> Result<crate::traces::TraceId, PromError> {
    let bad = || bad_data(format!("invalid trace id {text:?}: up to 32 hex digits"));
    if text.is_empty() || text.len() > 32 {
        return Err(bad());
    }
    let padded = format!("{text:0>32}");
    let bytes = hex::decode(padded).map_err(|_| bad())?;
    crate::traces::trace_id(&bytes).ok_or_else(bad)
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/protobuf"))
}

async fn find(c: &Arc<Collector>, id: &str) -> Result<TracesData, Response> {
    let id = parse_id(id).map_err(IntoResponse::into_response)?;
    blocking(c, move |c| c.traces.trace(&id))
        .await
        .map_err(IntoResponse::into_response)?
        .ok_or_else(|| (StatusCode::NOT_FOUND, "trace not found\n").into_response())
}

/// Tempo's v1: `tempopb.Trace` (the same bytes as OTLP `TracesData`), or as JSON
/// `{"batches": [ResourceSpans…]}` (OTLP/JSON: hex ids).
async fn trace_v1(State(c): State<Arc<Collector>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let trace = match find(&c, &id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if wants_protobuf(&headers) {
        return ([("content-type", "application/protobuf")], trace.encode_to_vec()).into_response();
    }
    axum::Json(serde_json::json!({ "batches": trace.resource_spans })).into_response()
}

/// Tempo's `TraceByIDResponse`: the trace as field 1.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
}

async fn trace_v2(State(c): State<Arc<Collector>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let trace = match find(&c, &id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if wants_protobuf(&headers) {
        let body = TraceByIdResponse { trace: Some(trace) }.encode_to_vec();
        return ([("content-type", "application/protobuf")], body).into_response();
    }
    axum::Json(serde_json::json!({ "trace": trace })).into_response()
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SearchParams {
    tags: Option<String>,
    q: Option<String>,
    min_duration: Option<String>,
    max_duration: Option<String>,
    limit: Option<usize>,
    start: Option<u64>,
    end: Option<u64>,
}

fn duration_ns(key: &str, text: &str) -> Result<u64, PromError> {
    humantime::parse_duration(text.trim())
        .map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
        .map_err(|_| bad_data(format!("invalid {key} {text:?}: a duration such as 100ms, 2s or 1m")))
}

/// `k=v k2="v w"` (logfmt, as Tempo's `tags` parameter takes it).
fn logfmt(text: &str) -> Result<Vec<(String, String)>, PromError> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or_else(|| bad_data(format!("tags: {rest:?} is not key=value")))?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').ok_or_else(|| bad_data("tags: an unclosed quote"))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(' ').unwrap_or((after, ""))
        };
        out.push((key.trim().to_string(), value.to_string()));
        rest = next.trim_start();
    }
    Ok(out)
}

/// The TraceQL Grafana's search builder writes: `{ cond && cond … }`, each condition an
/// attribute (`resource.x`, `span.x`, `.x`) or `name`, `status`, `rootServiceName`,
/// `rootName` compared with `=`, or `duration` / `traceDuration` with `>`, `>=`, `<`,
/// `<=`. Anything else is refused with what is understood.
fn traceql(q: &str, search: &mut Search) -> Result<(), PromError> {
    let unsupported = |what: &str| {
        bad_data(format!(
            "TraceQL {what:?} is not supported here: use {{ a = \"v\" && duration > 100ms }} with attributes (resource.x, span.x, .x), name, status, rootServiceName, rootName, duration or traceDuration"
        ))
    };
    let inner = q.trim().strip_prefix('{').and_then(|s| s.strip_suffix('}')).ok_or_else(|| unsupported(q))?;
    for cond in inner.split("&&").map(str::trim).filter(|c| !c.is_empty()) {
        let op = [">=", "<=", "!=", "=~", "=", ">", "<"]
            .into_iter()
            .find(|op| cond.contains(op))
            .ok_or_else(|| unsupported(cond))?;
        let (lhs, rhs) = cond.split_once(op).ok_or_else(|| unsupported(cond))?;
        let (lhs, rhs) = (lhs.trim(), rhs.trim().trim_matches('"'));
        match (lhs, op) {
            ("duration", _) | ("traceDuration", _) => {
                let ns = duration_ns(lhs, rhs)?;
                let (min, max) = if lhs == "duration" {
                    (&mut search.span_min_duration_ns, &mut search.span_max_duration_ns)
                } else {
                    (&mut search.min_duration_ns, &mut search.max_duration_ns)
                };
                match op {
                    ">" => *min = Some(ns.saturating_add(1)),
                    ">=" => *min = Some(ns),
                    "<" => *max = Some(ns.saturating_sub(1)),
                    "<=" => *max = Some(ns),
                    _ => return Err(unsupported(cond)),
                }
            }
            (_, "=") => {
                let key = lhs
                    .strip_prefix("resource.")
                    .or_else(|| lhs.strip_prefix("span."))
                    .or_else(|| lhs.strip_prefix('.'))
                    .unwrap_or(lhs);
                if !lhs.contains('.') && !matches!(key, "name" | "status" | "rootServiceName" | "rootName") {
                    return Err(unsupported(cond));
                }
                search.tags.push((key.to_string(), rhs.to_string()));
            }
            _ => return Err(unsupported(cond)),
        }
    }
    Ok(())
}

async fn search(State(c): State<Arc<Collector>>, Query(p): Query<SearchParams>) -> Result<Response, PromError> {
    let mut search = Search { limit: p.limit.unwrap_or(20).clamp(1, MAX_LIMIT), ..Default::default() };
    if let Some(tags) = &p.tags {
        search.tags = logfmt(tags)?;
    }
    if let Some(q) = &p.q {
        traceql(q, &mut search)?;
    }
    if let Some(d) = &p.min_duration {
        search.min_duration_ns = Some(duration_ns("minDuration", d)?);
    }
    if let Some(d) = &p.max_duration {
        search.max_duration_ns = Some(duration_ns("maxDuration", d)?);
    }
    search.start_ns = p.start.map(|s| s.saturating_mul(1_000_000_000));
    search.end_ns = p.end.map(|s| s.saturating_mul(1_000_000_000).saturating_add(999_999_999));
    let found = blocking(&c, move |c| c.traces.search(&search)).await?;
    Ok(axum::Json(found).into_response())
}

/// The intrinsics search understands, as Tempo lists them.
const INTRINSICS: [&str; 6] = ["duration", "name", "rootName", "rootServiceName", "status", "traceDuration"];

async fn tags_v1(State(c): State<Arc<Collector>>) -> Result<Response, PromError> {
    let names = blocking(&c, |c| c.traces.tag_names()).await?;
    let mut tag_names: Vec<String> = names.into_iter().flat_map(|(_, n)| n).collect();
    tag_names.extend(["name", "status"].map(String::from));
    tag_names.sort();
    tag_names.dedup();
    Ok(axum::Json(hale_core::api::TagNames { tag_names }).into_response())
}

async fn tags_v2(State(c): State<Arc<Collector>>) -> Result<Response, PromError> {
    let names = blocking(&c, |c| c.traces.tag_names()).await?;
    let mut scopes: Vec<hale_core::api::TagScope> =
        names.into_iter().map(|(scope, tags)| hale_core::api::TagScope { name: scope.as_str().into(), tags }).collect();
    scopes.push(hale_core::api::TagScope { name: "intrinsic".into(), tags: INTRINSICS.map(String::from).to_vec() });
    Ok(axum::Json(hale_core::api::TagScopes { scopes }).into_response())
}

async fn values_v1(State(c): State<Arc<Collector>>, Path(name): Path<String>) -> Result<Response, PromError> {
    let tag_values = blocking(&c, move |c| c.traces.tag_values(&name)).await?;
    Ok(axum::Json(hale_core::api::TagValues { tag_values }).into_response())
}

/// v2 names are TraceQL identifiers: `resource.service.name`, `span.http.route`, `.x`.
async fn values_v2(State(c): State<Arc<Collector>>, Path(name): Path<String>) -> Result<Response, PromError> {
    let key = name
        .strip_prefix("resource.")
        .or_else(|| name.strip_prefix("span."))
        .or_else(|| name.strip_prefix('.'))
        .unwrap_or(&name)
        .to_string();
    let values = blocking(&c, move |c| c.traces.tag_values(&key)).await?;
    let kind = if name == "status" { "keyword" } else { "string" };
    let tag_values = values.into_iter().map(|value| hale_core::api::TypedValue { kind: kind.into(), value }).collect();
    Ok(axum::Json(hale_core::api::TypedTagValues { tag_values }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::{app, call};
    use axum::body::Body;
    use axum::http::Request;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    async fn post(app: &Router, body: Vec<u8>, json: bool, token: &str) -> (StatusCode, String) {
        let req = Request::post("/v1/traces")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", if json { "application/json" } else { "application/x-protobuf" })
            .body(Body::from(body))
            .expect("req");
        let (status, bytes) = call(app, req).await;
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn get(app: &Router, uri: &str, accept: &str) -> (StatusCode, axum::body::Bytes) {
        call(app, Request::get(uri).header("accept", accept).body(Body::empty()).expect("req")).await
    }

    /// OTLP/JSON of one span (hex ids, as OTLP/JSON writes them).
    fn json_span(trace: &str, span: &str, parent: &str, service: &str, name: &str, start: u64, ms: u64) -> Vec<u8> {
        format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"{service}"}}}}]}},
            "scopeSpans":[{{"spans":[{{"traceId":"{trace}","spanId":"{span}","parentSpanId":"{parent}","name":"{name}","kind":2,
            "startTimeUnixNano":"{start}","endTimeUnixNano":"{}",
            "attributes":[{{"key":"http.route","value":{{"stringValue":"/buy"}}}}]}}]}}]}}]}}"#,
            start + ms * 1_000_000
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn spans_go_in_over_otlp_and_come_out_as_tempo_serves_them() {
        let (_dir, app) = app(Some("tok"));
        let trace = "0af7651916cd43dd8448eb211c80319c";
        let t0 = 1_700_000_000_000_000_000u64;
        let (status, text) =
            post(&app, json_span(trace, "b7ad6b7169203331", "", "gateway", "POST /buy", t0, 150), true, "tok").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        // The child over protobuf.
        let child: ExportTraceServiceRequest = serde_json::from_slice(&json_span(
            trace,
            "00f067aa0ba902b7",
            "b7ad6b7169203331",
            "orders",
            "INSERT orders",
            t0 + 1_000,
            40,
        ))
        .expect("json");
        let (status, text) = post(&app, child.encode_to_vec(), false, "tok").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(post(&app, Vec::new(), false, "wrong").await.0, StatusCode::UNAUTHORIZED);
        // The traces-only token writes spans, and nothing else.
        let (status, text) = post(&app, child.encode_to_vec(), false, "traces-only").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let write = Request::post("/api/v1/write").header("authorization", "Bearer traces-only").body(Body::empty());
        assert_eq!(call(&app, write.expect("req")).await.0, StatusCode::UNAUTHORIZED);

        // By id: protobuf (Grafana), v1 and v2, and JSON.
        let (status, body) = get(&app, &format!("/api/traces/{trace}"), "application/protobuf").await;
        assert_eq!(status, StatusCode::OK);
        let data = TracesData::decode(&body[..]).expect("TracesData");
        assert_eq!(data.resource_spans.iter().map(|r| r.scope_spans[0].spans.len()).sum::<usize>(), 2);
        let (status, body) = get(&app, &format!("/api/v2/traces/{trace}"), "application/protobuf").await;
        assert_eq!(status, StatusCode::OK);
        let v2 = TraceByIdResponse::decode(&body[..]).expect("TraceByIDResponse");
        assert_eq!(v2.trace.expect("trace").resource_spans.len(), 2);
        let (_, body) = get(&app, &format!("/api/traces/{trace}"), "application/json").await;
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["batches"][0]["scopeSpans"][0]["spans"][0]["traceId"], trace, "OTLP/JSON: hex ids");
        assert_eq!(get(&app, "/api/traces/0af7651916cd43dd8448eb211c80319d", "").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(&app, "/api/traces/not-hex", "").await.0, StatusCode::BAD_REQUEST);

        // Search as Grafana asks: TraceQL, and tags.
        for query in [
            "/api/search?q=%7B%20resource.service.name%20%3D%20%22orders%22%20%7D&limit=20",
            "/api/search?tags=service.name%3Dorders&minDuration=100ms",
            "/api/search?q=%7B%20duration%20%3E%20120ms%20%7D",
            "/api/search?q=%7B%20span.http.route%3D%22%2Fbuy%22%20%7D",
        ] {
            let (status, body) = get(&app, query, "application/json").await;
            assert_eq!(status, StatusCode::OK, "{query}");
            let found: hale_core::api::TraceSearch = serde_json::from_slice(&body).expect("search");
            assert_eq!(found.traces.len(), 1, "{query}");
            let t = &found.traces[0];
            assert_eq!(
                (t.trace_id.as_str(), t.root_service_name.as_str(), t.root_trace_name.as_str()),
                (trace, "gateway", "POST /buy")
            );
            assert_eq!(t.duration_ms, 150);
        }
        let (_, body) = get(&app, "/api/search?q=%7B%20duration%20%3E%201s%20%7D", "").await;
        assert_eq!(serde_json::from_slice::<hale_core::api::TraceSearch>(&body).expect("search").traces.len(), 0);
        let (status, body) = get(&app, "/api/search?q=%7B%20kind%20%3D%20server%20%7D", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&body));

        // Tags and values, v1 and v2, and the health check.
        let (_, body) = get(&app, "/api/v2/search/tags", "").await;
        let scopes: hale_core::api::TagScopes = serde_json::from_slice(&body).expect("tags");
        assert!(scopes.scopes.iter().any(|s| s.name == "resource" && s.tags == ["service.name"]));
        let (_, body) = get(&app, "/api/v2/search/tag/resource.service.name/values", "").await;
        let values: hale_core::api::TypedTagValues = serde_json::from_slice(&body).expect("values");
        assert_eq!(values.tag_values.iter().map(|v| v.value.as_str()).collect::<Vec<_>>(), ["gateway", "orders"]);
        let (_, body) = get(&app, "/api/search/tag/name/values", "").await;
        let values: hale_core::api::TagValues = serde_json::from_slice(&body).expect("values");
        assert_eq!(values.tag_values, ["INSERT orders", "POST /buy"]);
        let (status, body) = get(&app, "/api/echo", "").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"echo"[..]));
    }

    #[tokio::test]
    async fn hostile_and_broken_bodies_are_refused_before_they_expand() {
        let (_dir, app) = app(Some("tok"));
        // 200,000 empty spans: 2 bytes each on the wire.
        let mut scope = Vec::new();
        for _ in 0..200_000 {
            scope.extend_from_slice(&[0x12, 0x00]);
        }
        let mut resource = vec![0x12];
        prost::encoding::encode_varint(scope.len() as u64, &mut resource);
        resource.extend_from_slice(&scope);
        let mut body = vec![0x0a];
        prost::encoding::encode_varint(resource.len() as u64, &mut body);
        body.extend_from_slice(&resource);
        let (status, text) = post(&app, body, false, "tok").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains("spans in one request"), "{text}");
        let (status, text) = post(&app, b"{\"resourceSpans\": [".to_vec(), true, "tok").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        let (status, text) = post(&app, vec![0x0a, 0x7f, 1], false, "tok").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        // A span with a short id is refused in the partial success; the rest stand.
        let bad = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"01","spanId":"02","name":"x"}]}]}]}"#;
        let (status, text) = post(&app, bad.to_vec(), true, "tok").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains("rejectedSpans"), "{text}");
    }

    #[test]
    fn tags_and_traceql_read_as_the_search_builder_writes_them() {
        assert_eq!(
            logfmt(r#"service.name=orders http.route="/api/buy now""#).expect("logfmt"),
            [("service.name".into(), "orders".into()), ("http.route".into(), "/api/buy now".into())]
        );
        let mut s = Search::default();
        traceql(
            r#"{ resource.service.name = "orders" && span.http.route="/buy" && duration > 100ms && status = error }"#,
            &mut s,
        )
        .expect("traceql");
        assert_eq!(
            s.tags,
            [
                ("service.name".to_string(), "orders".to_string()),
                ("http.route".into(), "/buy".into()),
                ("status".into(), "error".into())
            ]
        );
        assert_eq!(s.span_min_duration_ns, Some(100_000_001));
        let mut all = Search::default();
        traceql("{}", &mut all).expect("everything");
        assert!(all.tags.is_empty());
        for bad in ["service.name = x", "{ kind = server }", "{ .a =~ \"x.*\" }"] {
            let e = traceql(bad, &mut Search::default()).expect_err(bad);
            assert!(e.2.contains("not supported"), "{bad}: {}", e.2);
        }
        assert_eq!(parse_id("1").expect("short ids are padded")[15], 1);
        assert!(parse_id("xyz").is_err() && parse_id(&"1".repeat(33)).is_err());
    }
}
