//! The Prometheus HTTP API on the collector's own PromQL engine: `/api/v1/query`,
//! `/api/v1/query_range`, `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/<name>/values` (selectors parsed by promql-parser) and `/federate`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hale_core::api::{Labels, Point, with_value_text};
use hale_core::exposition::valid_label_name;
use hale_core::metrics::{Family, MetricKind};
use hale_core::time::now_ms;
use serde::ser::{Serialize, SerializeStruct, SerializeTuple, Serializer};

use super::{Params, PromError, bad_data, blocking, form_pairs, param, success, time_param};
use crate::query::{self, QueryError};
use crate::state::Collector;
use crate::store::Store;
use crate::store::head::Matcher;

pub(super) fn routes() -> Router<Arc<Collector>> {
    Router::new()
        .route("/api/v1/query", get(instant).post(instant))
        .route("/api/v1/query_range", get(range).post(range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/query_exemplars", get(exemplars).post(exemplars))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/federate", get(federate))
}

/// `match[]` selectors of a query string (none when it has none).
fn optional_selectors(all: &str) -> Result<Vec<Vec<Matcher>>, PromError> {
    form_pairs(all).into_iter().filter(|(key, _)| key == "match[]").map(|(_, value)| selector(&value)).collect()
}

/// `match[]` selectors of a query string, at least one.
fn selectors(all: &str) -> Result<Vec<Vec<Matcher>>, PromError> {
    let sets = optional_selectors(all)?;
    if sets.is_empty() {
        return Err(bad_data("no match[] parameter provided"));
    }
    Ok(sets)
}

/// The label sets of the series matching any of `sets` with samples in the request's
/// `[start, end]` (default: all time), each once.
fn matching(c: &Collector, sets: &[Vec<Matcher>], all: &str) -> Result<BTreeSet<query::Labels>, PromError> {
    let start = time_param(all, "start", i64::MIN)?;
    let end = time_param(all, "end", i64::MAX)?;
    Ok(sets.iter().flat_map(|matchers| c.store.series_labels(matchers, start, end)).collect())
}

/// One series selector as matchers.
fn selector(text: &str) -> Result<Vec<Matcher>, PromError> {
    use promql_parser::label::MatchOp;
    let expr = query::parse(text).map_err(|e| bad_data(format!("invalid match[] {text:?}: {e}")))?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(bad_data(format!("match[] {text:?} is not a series selector")));
    };
    if !vs.matchers.or_matchers.is_empty() {
        return Err(bad_data("`or` inside a selector is not supported"));
    }
    let name = vs.name.map(|name| Matcher::Eq("__name__".into(), name));
    Ok(name
        .into_iter()
        .chain(vs.matchers.matchers.into_iter().map(|m| match m.op {
            MatchOp::Equal => Matcher::Eq(m.name, m.value),
            MatchOp::NotEqual => Matcher::Ne(m.name, m.value),
            MatchOp::Re(re) => Matcher::Re(m.name, re),
            MatchOp::NotRe(re) => Matcher::Nre(m.name, re),
        }))
        .collect())
}

/// `/api/v1/series`: the label sets of every series matching a `match[]`, in order.
async fn series(State(c): State<Arc<Collector>>, Params(all): Params) -> Result<Response, PromError> {
    let seen = matching(&c, &selectors(&all)?, &all)?;
    let data: Vec<Labels> =
        seen.into_iter().map(|labels| labels.into_iter().map(|(n, v)| (n.into(), v.into())).collect()).collect();
    Ok(success(data))
}

/// An evaluated value as the API answers it (the JSON of [`QueryResult`]), serialized
/// straight from the evaluator's series: a range query's answer holds a point per series
/// per step, and building a `String` for each first cost more than evaluating it. `t` is
/// the instant of scalars, strings and vector samples.
struct Answer {
    value: query::Value,
    t: i64,
}

/// A label set as a JSON object, in name order.
struct Metric<'a>(&'a query::Labels);

impl Serialize for Metric<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_sorted_by(|a, b| a.0 < b.0) {
            s.collect_map(self.0.iter().map(|(n, v)| (n, v)))
        } else {
            let sorted: BTreeMap<&str, &str> = self.0.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            sorted.serialize(s)
        }
    }
}

/// `[unix seconds, "value"]`.
struct At(i64, f64);

impl Serialize for At {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut tuple = s.serialize_tuple(2)?;
        tuple.serialize_element(&(self.0 as f64 / 1000.0))?;
        with_value_text(self.1, |text| tuple.serialize_element(text))?;
        tuple.end()
    }
}

impl Serialize for Answer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use query::Value as V;
        #[derive(serde::Serialize)]
        struct Sample<'a> {
            metric: Metric<'a>,
            value: At,
        }
        #[derive(serde::Serialize)]
        struct Series<'a> {
            metric: Metric<'a>,
            values: Points<'a>,
        }
        struct Points<'a>(&'a [(i64, f64)]);
        impl Serialize for Points<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|&(t, v)| At(t, v)))
            }
        }
        let t = self.t;
        let mut out = s.serialize_struct("QueryResult", 2)?;
        match &self.value {
            V::Scalar(v) => {
                out.serialize_field("resultType", "scalar")?;
                out.serialize_field("result", &At(t, *v))?;
            }
            V::String(text) => {
                out.serialize_field("resultType", "string")?;
                out.serialize_field("result", &Point(t as f64 / 1000.0, text.clone()))?;
            }
            V::Vector(samples) => {
                out.serialize_field("resultType", "vector")?;
                let samples: Vec<Sample> =
                    samples.iter().map(|x| Sample { metric: Metric(&x.labels), value: At(t, x.value) }).collect();
                out.serialize_field("result", &samples)?;
            }
            V::Matrix(series) => {
                out.serialize_field("resultType", "matrix")?;
                let series: Vec<Series> =
                    series.iter().map(|x| Series { metric: Metric(&x.labels), values: Points(&x.points) }).collect();
                out.serialize_field("result", &series)?;
            }
        }
        out.end()
    }
}

fn query_error(e: QueryError) -> PromError {
    match e {
        QueryError::BadData(m) => PromError(StatusCode::BAD_REQUEST, "bad_data", m),
        QueryError::Execution(m) => PromError(StatusCode::UNPROCESSABLE_ENTITY, "execution", m),
        QueryError::Timeout(m) => PromError(StatusCode::SERVICE_UNAVAILABLE, "timeout", m),
    }
}

/// The `query` parameter.
fn expression(all: &str) -> Result<String, PromError> {
    param(all, "query").ok_or_else(|| bad_data("missing the query parameter"))
}

/// Evaluates on the blocking pool, timed for `hale_collector_query_duration_seconds`;
/// `t` is the instant scalars and strings are reported at.
async fn evaluate(
    c: &Arc<Collector>,
    t: i64,
    eval: impl FnOnce(&Store) -> Result<query::Value, QueryError> + Send + 'static,
) -> Result<Response, PromError> {
    let started = Instant::now();
    let value = blocking(c, move |c| eval(&c.store)).await?.map_err(query_error)?;
    c.telemetry.query_took(started.elapsed().as_secs_f64());
    Ok(success(Answer { value, t }))
}

/// How long a query may run unless its `timeout` asks for less (Prometheus's default).
pub const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What a query may spend: its `timeout` (seconds or a duration) from now, at most
/// [`QUERY_TIMEOUT`], and the collector's samples limit.
fn limits(c: &Collector, all: &str) -> Result<query::Limits, PromError> {
    Ok(query::Limits { deadline: Some(deadline(all)?), max_samples: c.query_max_samples })
}

/// When the query must be done: its `timeout` from now, at most [`QUERY_TIMEOUT`].
fn deadline(all: &str) -> Result<Instant, PromError> {
    let limit = match param(all, "timeout") {
        None => QUERY_TIMEOUT,
        Some(text) => match text.parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs.is_finite() => std::time::Duration::from_secs_f64(secs),
            Ok(_) => return Err(bad_data(format!("invalid timeout {text:?}: a positive duration"))),
            Err(_) => humantime::parse_duration(&text)
                .map_err(|_| bad_data(format!("invalid timeout {text:?}: seconds or a duration such as 30s")))?,
        }
        .min(QUERY_TIMEOUT),
    };
    Ok(Instant::now() + limit)
}

/// A query backend's error, as this API's.
fn remote_error(e: crate::remote::RemoteError) -> PromError {
    match e {
        crate::remote::RemoteError::BadData(m) => PromError(StatusCode::BAD_REQUEST, "bad_data", m),
        other => PromError(StatusCode::SERVICE_UNAVAILABLE, "unavailable", other.to_string()),
    }
}

/// Through the query backend (`--query-url`), when there is one.
async fn remotely(
    c: &Arc<Collector>,
    t: i64,
    ask: impl AsyncFnOnce(&crate::remote::RemoteQuery) -> Result<query::Value, crate::remote::RemoteError>,
) -> Option<Result<Response, PromError>> {
    let remote = c.remote.as_ref()?;
    let started = Instant::now();
    let answer = ask(remote).await.map_err(remote_error);
    c.telemetry.query_took(started.elapsed().as_secs_f64());
    Some(answer.map(|value| success(Answer { value, t })))
}

/// `/api/v1/query`: one instant, `time` or now.
async fn instant(State(c): State<Arc<Collector>>, Params(all): Params) -> Result<Response, PromError> {
    let expr = expression(&all)?;
    let t = time_param(&all, "time", now_ms())?;
    if let Some(answer) = remotely(&c, t, async |r| r.instant(&expr, t).await).await {
        return answer;
    }
    let limits = limits(&c, &all)?;
    evaluate(&c, t, move |store| query::instant_query_within(store, &expr, t, limits)).await
}

/// `/api/v1/query_range`: `start` to `end` every `step` (seconds or a duration).
async fn range(State(c): State<Arc<Collector>>, Params(all): Params) -> Result<Response, PromError> {
    let expr = expression(&all)?;
    let start = time_param(&all, "start", i64::MIN)?;
    let end = time_param(&all, "end", i64::MIN)?;
    if start == i64::MIN || end == i64::MIN {
        return Err(bad_data("start and end are required"));
    }
    let step_text = param(&all, "step").ok_or_else(|| bad_data("missing the step parameter"))?;
    let step = match step_text.parse::<f64>() {
        Ok(secs) => (secs * 1000.0).round() as i64,
        Err(_) => humantime::parse_duration(&step_text)
            .map(|d| d.as_millis() as i64)
            .map_err(|_| bad_data(format!("invalid step {step_text:?}")))?,
    };
    if let Some(answer) = remotely(&c, end, async |r| r.range(&expr, start, end, step).await).await {
        return answer;
    }
    let limits = limits(&c, &all)?;
    evaluate(&c, end, move |store| query::range_query_within(store, &expr, start, end, step, limits)).await
}

/// Prometheus federation: the newest sample of every matching series, with its
/// timestamp, in the text format.
async fn federate(State(c): State<Arc<Collector>>, RawQuery(q): RawQuery) -> Result<Response, PromError> {
    let sets = selectors(&q.unwrap_or_default())?;
    let now = now_ms();
    let mut by_name: BTreeMap<String, Family> = BTreeMap::new();
    let mut seen = HashSet::new();
    for matchers in sets {
        for s in c.store.select(&matchers, now - query::LOOKBACK_MS, now) {
            let Some(&(t, v)) = s.samples.last() else { continue };
            if query::is_stale(v) {
                continue;
            }
            let labels: Vec<(String, String)> = s.labels.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            if !seen.insert(labels.clone()) {
                continue;
            }
            let name = labels.iter().find(|(n, _)| n == "__name__").map(|(_, v)| v.clone()).unwrap_or_default();
            let family =
                by_name.entry(name.clone()).or_insert_with(|| Family::new(name.clone(), "", MetricKind::Untyped));
            family.samples.push(hale_core::metrics::Sample {
                name,
                labels: labels.into_iter().filter(|(n, _)| n != "__name__").collect(),
                value: v,
                timestamp_ms: Some(t),
                exemplar: None,
            });
        }
    }
    let families: Vec<Family> = by_name.into_values().collect();
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        hale_core::exposition::encode_text(&families),
    )
        .into_response())
}

/// `/api/v1/metadata`: what senders said of their metric families (`metric`, `limit`,
/// `limit_per_metric` as Prometheus takes them).
async fn metadata(State(c): State<Arc<Collector>>, Params(all): Params) -> Result<Response, PromError> {
    let count = |key: &str| -> Result<Option<usize>, PromError> {
        match param(&all, key) {
            None => Ok(None),
            // Prometheus: a negative or zero limit is no limit.
            Some(v) => v
                .parse::<i64>()
                .map(|n| usize::try_from(n).ok().filter(|n| *n > 0))
                .map_err(|_| bad_data(format!("{key} must be a number"))),
        }
    };
    let metric = param(&all, "metric").filter(|m| !m.is_empty());
    Ok(success(c.metadata.query(metric.as_deref(), count("limit")?, count("limit_per_metric")?)))
}

/// `/api/v1/query_exemplars`: the stored exemplars of the series every selector of
/// `query` picks, between `start` and `end` (Grafana asks whenever a panel shows
/// exemplars, and links each to its trace).
async fn exemplars(State(c): State<Arc<Collector>>, Params(all): Params) -> Result<Response, PromError> {
    let expr = param(&all, "query").ok_or_else(|| bad_data("query parameter is required"))?;
    let expr = query::parse(&expr).map_err(|e| bad_data(e.to_string()))?;
    let start = time_param(&all, "start", i64::MIN)?;
    let end = time_param(&all, "end", i64::MAX)?;
    if end < start {
        return Err(bad_data("end timestamp must not be before start time"));
    }
    Ok(success(c.exemplars.query(&query::selectors_of(&expr), start, end)))
}

/// `/api/v1/format_query`: the expression laid out as Prometheus's formatter does.
async fn format_query(Params(all): Params) -> Result<Response, PromError> {
    let expr = param(&all, "query").ok_or_else(|| bad_data("query parameter is required"))?;
    Ok(success(query::parse(&expr).map_err(|e| bad_data(e.to_string()))?.prettify()))
}

/// `/api/v1/labels`: label names, of the series matching `match[]` within `start`/`end`
/// when given (Grafana's chained variables ask so); without `match[]`, every name the
/// store holds (as Prometheus answers from its head block, whatever the range).
async fn labels(State(c): State<Arc<Collector>>, Params(all): Params) -> Result<Response, PromError> {
    let sets = optional_selectors(&all)?;
    if sets.is_empty() {
        time_param(&all, "start", 0)?;
        time_param(&all, "end", 0)?;
        return Ok(success(c.store.label_names()));
    }
    let names: BTreeSet<String> =
        matching(&c, &sets, &all)?.into_iter().flatten().map(|(name, _)| name.into()).collect();
    Ok(success(names))
}

/// `/api/v1/label/<name>/values`: as [`labels`], the values of one label.
async fn label_values(
    State(c): State<Arc<Collector>>,
    Path(name): Path<String>,
    Params(all): Params,
) -> Result<Response, PromError> {
    if !valid_label_name(&name) {
        return Err(bad_data(format!("invalid label name: {name:?}")));
    }
    let sets = optional_selectors(&all)?;
    if sets.is_empty() {
        time_param(&all, "start", 0)?;
        time_param(&all, "end", 0)?;
        return Ok(success(c.store.label_values(&name)));
    }
    let values: BTreeSet<String> = matching(&c, &sets, &all)?
        .into_iter()
        .filter_map(|labels| labels.into_iter().find(|(n, _)| *n == name).map(|(_, v)| v.into()))
        .collect();
    Ok(success(values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::{app, body, call, get_json, label, post};
    use serde_json::{Value, json};

    #[tokio::test]
    async fn write_then_list_series_labels_and_values() {
        let (_dir, app) = app(Some("tok"));
        let (status, _) = post(&app, body(vec![label("__name__", "up"), label("job", "api")]), Some("tok")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let series = get_json(&app, "/api/v1/series?match[]=up%7Bjob%3D~%22a.*%22%7D").await;
        assert_eq!(series["data"], json!([{"__name__": "up", "job": "api"}]));
        assert_eq!(get_json(&app, "/api/v1/labels").await["data"], json!(["__name__", "job"]));
        assert_eq!(get_json(&app, "/api/v1/label/job/values").await["data"], json!(["api"]));
        let bad = get_json(&app, "/api/v1/series?match[]=up%7B").await;
        assert_eq!((bad["status"].as_str(), bad["errorType"].as_str()), (Some("error"), Some("bad_data")));
    }

    /// The answer is written straight from the evaluator's value; it must still be the
    /// JSON of core's `QueryResult`, as every typed client reads it.
    #[test]
    fn answers_are_core_query_results() {
        use hale_core::api::{MatrixSeries, Point, QueryResult, VectorSample};
        let labels: query::Labels = vec![("__name__".into(), "up".into()), ("job".into(), "a\"pi".into())];
        let unsorted: query::Labels = vec![("z".into(), "1".into()), ("a".into(), "2".into())];
        let metric = |l: &query::Labels| l.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let cases = [
            (query::Value::Scalar(f64::NAN), QueryResult::Scalar(Point(1.5, "NaN".into()))),
            (query::Value::String("x".into()), QueryResult::String(Point(1.5, "x".into()))),
            (
                query::Value::Vector(vec![query::Sample { labels: unsorted.clone(), value: 1e21 }]),
                QueryResult::Vector(vec![VectorSample {
                    metric: metric(&unsorted),
                    value: Point(1.5, "1000000000000000000000".into()),
                }]),
            ),
            (
                query::Value::Matrix(vec![query::Series {
                    labels: labels.clone(),
                    points: vec![(1000, 0.25), (2500, f64::NEG_INFINITY)],
                }]),
                QueryResult::Matrix(vec![MatrixSeries {
                    metric: metric(&labels),
                    values: vec![Point(1.0, "0.25".into()), Point(2.5, "-Inf".into())],
                }]),
            ),
        ];
        for (value, want) in cases {
            let json = serde_json::to_string(&Answer { value, t: 1500 }).expect("json");
            let got: QueryResult = serde_json::from_str(&json).expect("a QueryResult");
            assert_eq!(serde_json::to_value(&got).ok(), serde_json::to_value(&want).ok(), "{json}");
        }
    }

    #[tokio::test]
    async fn a_query_past_its_timeout_is_a_503_timeout() {
        let (_dir, app) = app(None);
        let ask = async |timeout: &str| {
            let uri = format!(
                "/api/v1/query_range?query=max_over_time(vector(1)%5B1h%3A1s%5D)&start=0&end=3600&step=1&timeout={timeout}"
            );
            let (status, bytes) =
                call(&app, axum::http::Request::get(uri).body(axum::body::Body::empty()).expect("req")).await;
            (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
        };
        let (status, body) = ask("1ms").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["errorType"], "timeout");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("timed out")), "{body}");
        assert_eq!(ask("soon").await.0, StatusCode::BAD_REQUEST);
        assert_eq!(ask("-1").await.0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn hostile_queries_are_refused_not_obeyed() {
        let (_dir, app) = app(None);
        let ask = |q: &str| {
            let form = format!("query={}", form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>());
            let req = axum::http::Request::post("/api/v1/query")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(axum::body::Body::from(form))
                .expect("req");
            let app = app.clone();
            async move {
                let (status, bytes) = call(&app, req).await;
                (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
            }
        };
        for q in ["foo[1e20]", "max_over_time(up[30d:1ms])", "up{job=\"a\" or job=\"b\"}", "rate(", ""] {
            let (status, body) = ask(q).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
            assert_eq!(body["errorType"], "bad_data", "{q}");
        }
        // Nesting is bounded before parsing, whatever its shape; a deep but accepted
        // expression evaluates without exhausting the stack (the runtime's 2 MiB threads).
        let deep = query::MAX_DEPTH;
        for q in [
            format!("{}up{}", "abs(".repeat(1000), ")".repeat(1000)),
            format!("up{}", "+up".repeat(20_000)),
            format!("{}1", "-".repeat(60_000)),
            format!("{}1{}", "(".repeat(20_000), ")".repeat(20_000)),
            format!("sum({}up{})", "rate(".repeat(deep), "[5m])".repeat(deep)),
        ] {
            let (status, body) = ask(&q).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{}: {body}", &q[..40]);
            assert!(body["error"].as_str().is_some_and(|e| e.contains("nested")), "{body}");
        }
        for q in [
            format!("{}up{}", "abs(".repeat(deep - 1), ")".repeat(deep - 1)),
            format!("{}1", "- ".repeat(deep - 1)),
            format!("vector(1){}", " + vector(1)".repeat(deep - 2)),
            format!("{}vector(1){}", "sum(1 + ".repeat(deep / 3), ")".repeat(deep / 3)),
        ] {
            let (status, body) = ask(&q).await;
            assert_eq!(status, StatusCode::OK, "{}: {body}", &q[..40]);
        }
    }
}
