//! Logs: OTLP/HTTP ingest (`POST /v1/logs`, protobuf or JSON), the query
//! (`/api/v1/logs`) and the live tail (`/api/v1/logs/tail`, server-sent events).
//!
//! Ingest takes the same bearer token as remote_write and at most [`MAX_LOG_BYTES`]
//! (8 MiB), compressed (`Content-Encoding: gzip` or `zstd`) or not; decompressed, too, it
//! may not pass 8 MiB. Both forms expand when decoded, so before anything is decoded a pre-scan of
//! the raw bytes ([`crate::logs`]: the protobuf wire format walked by message type, or the
//! JSON's objects and nesting counted) refuses a body with over 100,000 records, over
//! 1,000,000 attributes and values (nested ones at every depth count), or values nested
//! over 32 levels deep. A batch with an `X-Hale-Batch` id is stored once, also after a
//! restart.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

use super::{Ingest, PromError, bad_data, batch_id, blocking, parse_time, success};
use crate::logs::{Filter, LogQuery};
use crate::state::Collector;

/// Largest OTLP logs body accepted. The agent's batches stay near 1 MiB of text; JSON and
/// protobuf bodies expand when decoded, so this is kept well under the metrics limit.
pub const MAX_LOG_BYTES: usize = 8 << 20;

pub(super) fn routes() -> Router<Arc<Collector>> {
    Router::new()
        // Ingest<MAX_LOG_BYTES> reads the body after the token, within the limit.
        .route("/v1/logs", post(ingest).route_layer(axum::middleware::from_fn(hale_trace::server_span)))
        .route("/api/v1/logs", get(query))
        .route("/api/v1/logs/tail", get(tail))
}

async fn ingest(
    State(c): State<Arc<Collector>>,
    Ingest { headers, body }: Ingest<MAX_LOG_BYTES>,
) -> Result<Response, PromError> {
    let json =
        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let encoding = headers.get("content-encoding").map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let batch = batch_id(&headers);
    // Decompressing, checking and reading the body is CPU work: off the async threads.
    let stored = blocking(&c, move |c| {
        let body = decompressed(encoding.as_deref(), &body)?;
        // Both forms expand when decoded: their size is checked on the raw bytes first.
        if json {
            crate::logs::check_json_size(&body).map_err(|e| bad_data(e.to_string()))?;
            let request: ExportLogsServiceRequest =
                serde_json::from_slice(&body).map_err(|e| bad_data(format!("not an OTLP/JSON logs request: {e}")))?;
            Ok::<_, PromError>(c.logs.append(crate::logs::lines_of(request), batch))
        } else {
            crate::logs::check_protobuf_size(&body).map_err(|e| bad_data(e.to_string()))?;
            // Read in place, not decoded into prost's types (`logs::wire`).
            Ok(c.logs.append_otlp(&body, batch))
        }
    })
    .await??;
    match stored {
        Ok(_) => {}
        Err(crate::logs::LogsError::BadRequest(e)) => return Err(bad_data(e)),
        // A retry racing its original: 503, which the agent retries, and then finds stored.
        Err(e @ crate::logs::LogsError::Busy) => {
            return Err(PromError(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()));
        }
        Err(crate::logs::LogsError::Io { path, source }) if crate::disk::is_no_space(&source) => {
            return Err(PromError::storing(&c, "could not store the log lines", path.display(), true));
        }
        Err(e) => return Err(PromError::internal(e)),
    }
    // OTLP/HTTP: an empty ExportLogsServiceResponse.
    Ok((StatusCode::OK, [("content-type", "application/x-protobuf")], Vec::<u8>::new()).into_response())
}

/// The body as its `Content-Encoding` says (none, `identity`, `gzip` or `zstd`), refused
/// with 413 once it would pass [`MAX_LOG_BYTES`] decompressed: it is never expanded past
/// that, however small it came.
pub(super) fn decompressed<'a>(
    encoding: Option<&str>,
    body: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, PromError> {
    use std::io::Read;
    let read = |reader: &mut dyn Read| -> Result<std::borrow::Cow<'a, [u8]>, PromError> {
        let mut out = Vec::with_capacity(body.len().saturating_mul(8).min(MAX_LOG_BYTES));
        reader
            .take(MAX_LOG_BYTES as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad_data(format!("the body is not valid {}: {e}", encoding.unwrap_or_default())))?;
        if out.len() > MAX_LOG_BYTES {
            return Err(PromError(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad_data",
                format!("the body decompresses to over {MAX_LOG_BYTES} bytes; send smaller batches"),
            ));
        }
        Ok(std::borrow::Cow::Owned(out))
    };
    match encoding {
        None | Some("identity") => Ok(std::borrow::Cow::Borrowed(body)),
        Some("gzip") => read(&mut flate2::read::MultiGzDecoder::new(body)),
        Some("zstd") => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|e| bad_data(format!("the body is not valid zstd: {e}")))?;
            read(&mut decoder)
        }
        Some(other) => Err(PromError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_data",
            format!("content-encoding {other:?} is not supported; send gzip, zstd or none"),
        )),
    }
}

fn filter(q: &LogQuery) -> Result<Filter, PromError> {
    // In ns, as log lines are stamped.
    let ns = |key: &str, v: &Option<String>, default: u64| -> Result<u64, PromError> {
        match v {
            None => Ok(default),
            Some(text) => Ok((parse_time(key, text)?.max(0) as u64).saturating_mul(1_000_000)),
        }
    };
    Ok(Filter {
        service: q.service.clone(),
        instance: q.instance.clone(),
        level: q.level.clone(),
        contains: q.contains.clone(),
        trace_id: q.trace_id.as_ref().map(|t| t.to_ascii_lowercase()),
        since_ns: ns("since", &q.since, 0)?,
        until_ns: ns("until", &q.until, u64::MAX)?,
    })
}

/// The newest lines that match, at most `limit` (100 unless asked, 5,000 at most).
async fn query(State(c): State<Arc<Collector>>, Query(q): Query<LogQuery>) -> Result<Response, PromError> {
    let filter = filter(&q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 5000);
    let lines = blocking(&c, move |c| c.logs.query(&filter, limit)).await?.map_err(PromError::internal)?;
    Ok(success(lines))
}

/// Server-sent events: every new line that matches, as JSON.
async fn tail(State(c): State<Arc<Collector>>, Query(q): Query<LogQuery>) -> Result<Response, PromError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let mut filter = filter(&q)?;
    filter.until_ns = u64::MAX;
    let rx = c.logs.subscribe();
    let stream = futures::stream::unfold((rx, filter), |(mut rx, filter)| async move {
        loop {
            match rx.recv().await {
                Ok(line) if filter.matches(&line) => {
                    let event = Event::default().json_data(&line).unwrap_or_default();
                    return Some((Ok::<_, std::convert::Infallible>(event), (rx, filter)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    return Some((Ok(Event::default().event("lagged").data(n.to_string())), (rx, filter)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::{app, call};

    /// POSTs `body` to `/v1/logs` with the token "tok"; the status and the answer's text.
    async fn post(app: &Router, body: Vec<u8>, json: bool, encoding: Option<&str>) -> (StatusCode, String) {
        let mut req = axum::http::Request::post("/v1/logs")
            .header("authorization", "Bearer tok")
            .header("content-type", if json { "application/json" } else { "application/x-protobuf" });
        if let Some(encoding) = encoding {
            req = req.header("content-encoding", encoding);
        }
        let (status, bytes) = call(app, req.body(axum::body::Body::from(body)).expect("req")).await;
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn a_records_trace_context_is_stored_and_found_by_trace_id() {
        let (_dir, app) = app(Some("tok"));
        let body =
            br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"orders"}}]},
            "scopeLogs":[{"logRecords":[
              {"timeUnixNano":"5","body":{"stringValue":"order placed"},
               "traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7"},
              {"timeUnixNano":"6","body":{"stringValue":"unrelated"}}]}]}]}"#;
        let (status, message) = post(&app, body.to_vec(), true, None).await;
        assert_eq!(status, StatusCode::OK, "{message}");
        let got =
            crate::api::test_support::get_json(&app, "/api/v1/logs?trace_id=4BF92F3577B34DA6A3CE929D0E0E4736").await;
        let lines = got["data"].as_array().expect("lines");
        assert_eq!(lines.len(), 1, "{got}");
        assert_eq!(lines[0]["message"], "order placed");
        assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(lines[0]["span_id"], "00f067aa0ba902b7");
        let all = crate::api::test_support::get_json(&app, "/api/v1/logs").await;
        assert!(all["data"][1].get("trace_id").is_none(), "no id, no field: {all}");
    }

    #[tokio::test]
    async fn compressed_bodies_are_read_and_bombs_refused_before_they_expand() {
        use std::io::Write;
        let (_dir, app) = app(Some("tok"));
        let send = |body: Vec<u8>, encoding: &'static str| post(&app, body, true, Some(encoding));
        let ok = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"5","body":{"stringValue":"hello"}}]}]}]}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(ok).expect("gzip");
        let (status, message) = send(gz.finish().expect("gzip"), "gzip").await;
        assert_eq!(status, StatusCode::OK, "{message}");
        let (status, message) = send(zstd::bulk::compress(ok, 1).expect("zstd"), "zstd").await;
        assert_eq!(status, StatusCode::OK, "{message}");
        // 64 MiB of spaces in a few KiB: refused at 8 MiB, not expanded to 64.
        let bomb = zstd::bulk::compress(&vec![b' '; 64 << 20], 19).expect("zstd");
        assert!(bomb.len() < 64 << 10);
        let (status, message) = send(bomb, "zstd").await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{message}");
        assert!(message.contains("send smaller batches"), "{message}");
        let (status, message) = send(ok.to_vec(), "br").await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{message}");
        let (status, message) = send(b"not gzip at all".to_vec(), "gzip").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
    }

    #[tokio::test]
    async fn oversized_or_expanding_log_bodies_are_refused() {
        let (_dir, app) = app(Some("tok"));
        let send = |body: Vec<u8>, json: bool| post(&app, body, json, None);
        assert_eq!(send(vec![0u8; MAX_LOG_BYTES + 1], false).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        // 150,000 empty records in 300 KB: refused before decoding.
        let (status, message) = send(crate::logs::empty_records(150_000), false).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        assert!(message.contains("log records in one request"), "{message}");
        let json =
            format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{}]}}]}}]}}"#, vec!["{}"; 2_200_001].join(","));
        assert_eq!(send(json.into_bytes(), true).await.0, StatusCode::BAD_REQUEST);
        // One attribute whose kvlist holds 4,000,000 empty key-values (8 MB): refused, not
        // expanded into gigabytes.
        let (status, message) = send(crate::logs::nested_attribute(4_000_000), false).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        // A sound request still goes through.
        let ok = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},"scopeLogs":[{"logRecords":[{"timeUnixNano":"5","severityText":"INFO","body":{"stringValue":"hello"}}]}]}]}"#;
        let (status, message) = send(ok.as_bytes().to_vec(), true).await;
        assert_eq!(status, StatusCode::OK, "{message}");
    }
}
