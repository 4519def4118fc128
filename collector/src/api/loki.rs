//! Loki's read API over the collector's log store, so Grafana's Loki datasource shows
//! Hale's logs next to its metrics: `query_range` and `query` (log queries answer
//! streams, metric queries a matrix or a vector), `labels`, `label/<name>/values`,
//! `series`, and `tail` (a WebSocket of new lines). Queries are [`crate::logql`]'s subset.
//!
//! Reads are bounded: a query looks at most [`MAX_SCAN`] lines of its window (narrowed
//! first by the selector's `service`, `instance` and `level`); a metric query whose window
//! holds more is refused with what to narrow, rather than answered from part of it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hale_core::api::{
    Envelope, LogLine, LokiData, LokiResult, LokiResultType, LokiStats, LokiStream, LokiTail, MatrixSeries, Point,
    VectorSample,
};
use hale_core::time::now_ms;

use super::{Params, blocking, param, params};
use crate::logql::{self, LogQuery, Query};
use crate::logs::Filter;
use crate::state::Collector;

/// The most lines one query reads.
pub const MAX_SCAN: usize = 100_000;
/// Lines a log query answers unless asked (Loki's default), and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 5_000;
/// Steps of a metric range query at most (Prometheus's bound).
const MAX_STEPS: u64 = 11_000;

pub(super) fn routes() -> Router<Arc<Collector>> {
    Router::new()
        .route("/loki/api/v1/query_range", get(query_range).post(query_range))
        .route("/loki/api/v1/query", get(query).post(query))
        .route("/loki/api/v1/labels", get(labels))
        .route("/loki/api/v1/label/{name}/values", get(label_values))
        .route("/loki/api/v1/series", get(series).post(series))
        .route("/loki/api/v1/tail", get(tail))
}

/// Loki answers errors as text with a 4xx or 5xx.
struct LokiError(StatusCode, String);

impl IntoResponse for LokiError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn bad(message: impl Into<String>) -> LokiError {
    LokiError(StatusCode::BAD_REQUEST, message.into())
}

impl From<logql::LogqlError> for LokiError {
    fn from(e: logql::LogqlError) -> LokiError {
        bad(format!("parse error: {e}"))
    }
}

impl From<super::PromError> for LokiError {
    fn from(e: super::PromError) -> LokiError {
        LokiError(e.0, e.2)
    }
}

/// A time as Loki takes it, in ns: an integer of up to ten digits is seconds, a longer
/// one nanoseconds; a decimal is seconds; otherwise RFC 3339.
fn parse_time(key: &str, text: &str) -> Result<u64, LokiError> {
    let text = text.trim();
    let bad_time = || bad(format!("invalid {key} {text:?}: use nanoseconds, seconds or RFC 3339"));
    if let Ok(n) = text.parse::<u64>() {
        return Ok(if text.len() <= 10 { n.saturating_mul(1_000_000_000) } else { n });
    }
    if let Ok(secs) = text.parse::<f64>() {
        return if secs >= 0.0 { Ok((secs * 1e9) as u64) } else { Err(bad_time()) };
    }
    hale_core::time::parse_rfc3339(text).map(|ms| (ms.max(0) as u64).saturating_mul(1_000_000)).ok_or_else(bad_time)
}

fn time_or(all: &str, key: &str, default_ns: u64) -> Result<u64, LokiError> {
    param(all, key).map_or(Ok(default_ns), |v| parse_time(key, &v))
}

fn now_ns() -> u64 {
    (now_ms().max(0) as u64).saturating_mul(1_000_000)
}

/// The query's lines in `[since, until]`, narrowed by its selector: at most [`MAX_SCAN`],
/// and whether there were more.
async fn read_lines(
    c: &Arc<Collector>,
    q: &LogQuery,
    since_ns: u64,
    until_ns: u64,
) -> Result<(Vec<LogLine>, bool), LokiError> {
    let (service, instance, level) = q.pushdown();
    let filter = Filter { service, instance, level, contains: None, trace_id: None, since_ns, until_ns };
    let lines = blocking(c, move |c| c.logs.query(&filter, MAX_SCAN + 1))
        .await?
        .map_err(|e| LokiError(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the log store: {e}")))?;
    let more = lines.len() > MAX_SCAN;
    Ok((lines, more))
}

/// The lines a log query keeps, newest first (`backward`, Loki's default) or oldest first,
/// at most `limit`, as streams.
fn streams(q: &LogQuery, lines: &[LogLine], limit: usize, forward: bool) -> Vec<LokiStream> {
    let mut picked: Vec<(logql::Labels, &LogLine)> = Vec::new();
    let ordered: Box<dyn Iterator<Item = &LogLine>> =
        if forward { Box::new(lines.iter()) } else { Box::new(lines.iter().rev()) };
    for line in ordered {
        if picked.len() >= limit {
            break;
        }
        if let Some(mut labels) = q.process(line) {
            // A record's trace context is structured metadata: Loki answers it among the
            // line's labels (so Grafana links a line to its trace).
            for (name, id) in [("trace_id", &line.trace_id), ("span_id", &line.span_id)] {
                if !id.is_empty() {
                    labels.insert(name.into(), id.clone());
                }
            }
            picked.push((labels, line));
        }
    }
    let mut by_stream: BTreeMap<logql::Labels, Vec<[String; 2]>> = BTreeMap::new();
    for (labels, line) in picked {
        by_stream.entry(labels).or_default().push([line.time_unix_nano.to_string(), line.message.clone()]);
    }
    by_stream.into_iter().map(|(stream, values)| LokiStream { stream, values }).collect()
}

fn limit_and_direction(all: &str) -> Result<(usize, bool), LokiError> {
    let limit = match param(all, "limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v.parse::<usize>().map_err(|_| bad(format!("invalid limit {v:?}")))?.clamp(1, MAX_LIMIT),
    };
    let forward = match param(all, "direction").as_deref() {
        None | Some("backward") | Some("BACKWARD") => false,
        Some("forward") | Some("FORWARD") => true,
        Some(other) => return Err(bad(format!("invalid direction {other:?}: forward or backward"))),
    };
    Ok((limit, forward))
}

fn answer(result_type: LokiResultType, result: LokiResult) -> Response {
    axum::Json(Envelope::success(LokiData { result_type, result, stats: LokiStats::default() })).into_response()
}

fn too_many() -> LokiError {
    bad(format!(
        "the window holds more than {MAX_SCAN} lines: narrow the selector (service, instance, level) or the time range"
    ))
}

async fn query_range(State(c): State<Arc<Collector>>, Params(all): Params) -> Result<Response, LokiError> {
    let text = param(&all, "query").ok_or_else(|| bad("query parameter is required"))?;
    let parsed = logql::parse(&text)?;
    let end = time_or(&all, "end", now_ns())?;
    let start = time_or(&all, "start", end.saturating_sub(3_600_000_000_000))?;
    if end < start {
        return Err(bad("end must not be before start"));
    }
    match parsed {
        Query::Log(lq) => {
            let (limit, forward) = limit_and_direction(&all)?;
            let (lines, _) = read_lines(&c, &lq, start, end).await?;
            Ok(answer(LokiResultType::Streams, LokiResult::Streams(streams(&lq, &lines, limit, forward))))
        }
        Query::Metric(m) => {
            let step_ns = match param(&all, "step") {
                Some(v) => step(&v)?,
                // Loki's default: about 250 points over the range, at least a second.
                None => ((end - start) / 250).max(1_000_000_000),
            };
            if (end - start) / step_ns > MAX_STEPS {
                return Err(bad(format!("more than {MAX_STEPS} steps: use a larger step or a shorter range")));
            }
            let steps: Vec<u64> = (0..).map(|i| start + i * step_ns).take_while(|t| *t <= end).collect();
            let from = start.saturating_sub(m.range().as_nanos() as u64);
            let (lines, more) = read_lines(&c, m.log_query(), from, end).await?;
            if more {
                return Err(too_many());
            }
            let series = m.evaluate(&lines, &steps);
            let matrix = series
                .into_iter()
                .map(|(labels, values)| MatrixSeries {
                    metric: labels,
                    values: steps
                        .iter()
                        .zip(values)
                        .filter_map(|(t, v)| Some(Point(*t as f64 / 1e9, hale_core::api::value_text(v?))))
                        .collect(),
                })
                .collect();
            Ok(answer(LokiResultType::Matrix, LokiResult::Matrix(matrix)))
        }
    }
}

/// A step as Loki takes it: a duration (`15s`) or seconds (`15`, `0.5`); in ns.
fn step(text: &str) -> Result<u64, LokiError> {
    let ns = match text.parse::<f64>() {
        Ok(secs) => (secs * 1e9) as u64,
        Err(_) => humantime::parse_duration(text).map(|d| d.as_nanos() as u64).unwrap_or(0),
    };
    if ns == 0 {
        return Err(bad(format!("invalid step {text:?}: a positive duration such as 15s")));
    }
    Ok(ns)
}

async fn query(State(c): State<Arc<Collector>>, Params(all): Params) -> Result<Response, LokiError> {
    let text = param(&all, "query").ok_or_else(|| bad("query parameter is required"))?;
    let parsed = logql::parse(&text)?;
    let at = time_or(&all, "time", now_ns())?;
    match parsed {
        Query::Log(lq) => {
            // An instant log query: the lines up to `time` (within the last hour).
            let (limit, forward) = limit_and_direction(&all)?;
            let (lines, _) = read_lines(&c, &lq, at.saturating_sub(3_600_000_000_000), at).await?;
            Ok(answer(LokiResultType::Streams, LokiResult::Streams(streams(&lq, &lines, limit, forward))))
        }
        Query::Metric(m) => {
            let from = at.saturating_sub(m.range().as_nanos() as u64);
            let (lines, more) = read_lines(&c, m.log_query(), from, at).await?;
            if more {
                return Err(too_many());
            }
            let vector = m
                .evaluate(&lines, &[at])
                .into_iter()
                .filter_map(|(labels, values)| {
                    Some(VectorSample {
                        metric: labels,
                        value: Point(at as f64 / 1e9, hale_core::api::value_text(values.first().copied()??)),
                    })
                })
                .collect();
            Ok(answer(LokiResultType::Vector, LokiResult::Vector(vector)))
        }
    }
}

/// Stream label sets of the lines in the request's window (the last hour by default),
/// those matching a `match[]` selector when given.
async fn stream_sets(c: &Arc<Collector>, all: &str) -> Result<Vec<logql::Labels>, LokiError> {
    let end = time_or(all, "end", now_ns())?;
    let start = time_or(all, "start", end.saturating_sub(3_600_000_000_000))?;
    let selectors: Vec<LogQuery> = super::form_pairs(all)
        .into_iter()
        .filter(|(k, _)| k == "match[]" || k == "query")
        .map(|(_, v)| match logql::parse(&v)? {
            Query::Log(q) => Ok(q),
            Query::Metric(_) => Err(logql::LogqlError("match[] must be a stream selector".into())),
        })
        .collect::<Result<_, _>>()?;
    let everything = LogQuery { selector: Vec::new(), pipeline: Vec::new() };
    let queries = if selectors.is_empty() { vec![everything] } else { selectors };
    let mut sets = std::collections::BTreeSet::new();
    for q in &queries {
        let (lines, _) = read_lines(c, q, start, end).await?;
        sets.extend(lines.iter().filter(|l| q.selector.is_empty() || q.process(l).is_some()).map(logql::stream_labels));
    }
    Ok(sets.into_iter().collect())
}

async fn labels(State(c): State<Arc<Collector>>, Params(all): Params) -> Result<Response, LokiError> {
    let names: std::collections::BTreeSet<String> =
        stream_sets(&c, &all).await?.into_iter().flat_map(|l| l.into_keys()).collect();
    Ok(axum::Json(Envelope::success(names)).into_response())
}

async fn label_values(
    State(c): State<Arc<Collector>>,
    Path(name): Path<String>,
    Params(all): Params,
) -> Result<Response, LokiError> {
    let values: std::collections::BTreeSet<String> =
        stream_sets(&c, &all).await?.into_iter().filter_map(|mut l| l.remove(&name)).collect();
    Ok(axum::Json(Envelope::success(values)).into_response())
}

async fn series(State(c): State<Arc<Collector>>, Params(all): Params) -> Result<Response, LokiError> {
    Ok(axum::Json(Envelope::success(stream_sets(&c, &all).await?)).into_response())
}

/// `/loki/api/v1/tail`: a WebSocket that first sends the `limit` newest lines since
/// `start` (an hour back by default), then every new line the query keeps, as
/// [`LokiTail`] messages. A reader too slow for the log rate is told how many lines it
/// missed in `dropped_entries`.
async fn tail(
    State(c): State<Arc<Collector>>,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, LokiError> {
    let all = params(q, &Bytes::new());
    let text = param(&all, "query").ok_or_else(|| bad("query parameter is required"))?;
    let Query::Log(lq) = logql::parse(&text)? else {
        return Err(bad("tail takes a log query, not a metric query"));
    };
    let (limit, _) = limit_and_direction(&all)?;
    let start = time_or(&all, "start", now_ns().saturating_sub(3_600_000_000_000))?;
    let (backlog, _) = read_lines(&c, &lq, start, u64::MAX).await?;
    let first = streams(&lq, &backlog, limit, false);
    let live = c.logs.subscribe();
    Ok(ws.on_upgrade(move |socket| follow(socket, lq, first, live)))
}

async fn follow(
    mut socket: WebSocket,
    q: LogQuery,
    first: Vec<LokiStream>,
    mut live: tokio::sync::broadcast::Receiver<LogLine>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let send = |streams: Vec<LokiStream>, dropped: usize| {
        let dropped_entries = (0..dropped.min(1))
            .map(|_| hale_core::api::LokiDropped { labels: Default::default(), timestamp: now_ns().to_string() })
            .collect();
        serde_json::to_string(&LokiTail { streams, dropped_entries }).unwrap_or_default()
    };
    if !first.is_empty() && socket.send(Message::Text(send(first, 0).into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            line = live.recv() => match line {
                Ok(line) => {
                    let Some(labels) = q.process(&line) else { continue };
                    let stream = LokiStream { stream: labels, values: vec![[line.time_unix_nano.to_string(), line.message]] };
                    if socket.send(Message::Text(send(vec![stream], 0).into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    if socket.send(Message::Text(send(Vec::new(), n as usize).into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // The reader closed, or the connection broke.
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_steps_read_as_loki_reads_them() {
        assert_eq!(parse_time("start", "1700000000").ok(), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("start", "1700000000000000000").ok(), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("start", "1700000000.5").ok(), Some(1_700_000_000_500_000_000));
        assert_eq!(parse_time("start", "2023-11-14T22:13:20Z").ok(), Some(1_700_000_000_000_000_000));
        assert!(parse_time("start", "yesterday").is_err());
        assert_eq!(step("15s").ok(), Some(15_000_000_000));
        assert_eq!(step("0.5").ok(), Some(500_000_000));
        assert!(step("0").is_err());
    }
}
