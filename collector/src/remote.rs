//! Remote evaluation (`--query-url`): for a fleet whose data lives in a scalable backend
//! (VictoriaMetrics, Mimir, Thanos Query, Prometheus), the collector's rules and SLOs
//! evaluate through that backend's Prometheus query API instead of the local head, and
//! the collector's own `/api/v1/query` and `/api/v1/query_range` answer from it (so the
//! healer's verification queries, the dashboard's charts and Grafana see the backend's
//! long history). Alert state, `for`, notifications and the recorded series stay the
//! collector's: recorded series are written locally as always, and reach the backend
//! through forwarding (`--forward`), where later rules read them.
//!
//! What stays local is what needs the latest samples themselves: the cluster view (each
//! replica's freshness from its own sample spacing), scrape targets, silent senders'
//! staleness markers, and the SLO page's numbers (read from the recorded series). The
//! local head may therefore keep a short window (`--retention 1h`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::query::{Labels, Sample, Series, SharedStr, Value};

/// A Prometheus-compatible query API.
#[derive(Clone)]
pub struct RemoteQuery {
    /// Its base URL (`http://victoria:8428`, `http://mimir/prometheus`).
    pub base: String,
    pub client: reqwest::Client,
    /// A bearer token from a file, read at each query.
    pub bearer_token_file: Option<PathBuf>,
}

impl std::fmt::Debug for RemoteQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteQuery").field("base", &self.base).finish_non_exhaustive()
    }
}

/// How long one remote query may take.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// A Prometheus API error, as the backend said it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteError {
    /// The query is wrong (the backend's `bad_data`).
    #[error("{0}")]
    BadData(String),
    /// The backend could not answer, or answered what is not the API.
    #[error("the query backend {base}: {message}")]
    Backend { base: String, message: String },
}

fn labels(metric: &serde_json::Value) -> Labels {
    let mut out: Labels = metric
        .as_object()
        .map(|m| {
            m.iter().map(|(n, v)| (SharedStr::from(n.as_str()), SharedStr::from(v.as_str().unwrap_or("")))).collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `[unix seconds, "value"]` as (ms, value).
fn point(pair: &serde_json::Value) -> Option<(i64, f64)> {
    let t = pair.get(0)?.as_f64()?;
    let v = pair.get(1)?.as_str()?;
    let value = match v {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(((t * 1000.0).round() as i64, value))
}

/// The `data` of a Prometheus API answer as a query value.
fn value(data: Data) -> Result<Value, String> {
    let bad = |what: &str| format!("its {what} result is not the Prometheus API's");
    match data.result_type.as_str() {
        "vector" => {
            let items = data.result.as_array().ok_or_else(|| bad("vector"))?;
            items
                .iter()
                .map(|s| {
                    let (_, v) = point(&s["value"]).ok_or_else(|| bad("vector"))?;
                    Ok(Sample { labels: labels(&s["metric"]), value: v })
                })
                .collect::<Result<Vec<_>, String>>()
                .map(Value::Vector)
        }
        "matrix" => {
            let items = data.result.as_array().ok_or_else(|| bad("matrix"))?;
            items
                .iter()
                .map(|s| {
                    let points = s["values"]
                        .as_array()
                        .ok_or_else(|| bad("matrix"))?
                        .iter()
                        .map(|p| point(p).ok_or_else(|| bad("matrix")))
                        .collect::<Result<Vec<_>, String>>()?;
                    Ok(Series { labels: labels(&s["metric"]), points })
                })
                .collect::<Result<Vec<_>, String>>()
                .map(Value::Matrix)
        }
        "scalar" => point(&data.result).map(|(_, v)| Value::Scalar(v)).ok_or_else(|| bad("scalar")),
        "string" => Ok(Value::String(data.result.get(1).and_then(|s| s.as_str()).unwrap_or_default().to_string())),
        other => Err(format!("it answered a {other:?} result")),
    }
}

fn seconds(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

impl RemoteQuery {
    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value, RemoteError> {
        let backend = |message: String| RemoteError::Backend { base: self.base.clone(), message };
        let mut request =
            self.client.get(format!("{}{path}", self.base.trim_end_matches('/'))).query(params).timeout(TIMEOUT);
        if let Some(path) = &self.bearer_token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| backend(format!("reading its token file {}: {e}", path.display())))?;
            request = request.bearer_auth(token.trim());
        }
        let response = request.send().await.map_err(|e| backend(e.without_url().to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| backend(e.without_url().to_string()))?;
        let envelope: Envelope = serde_json::from_str(&text).map_err(|_| {
            backend(format!(
                "answered {status} with what is not the Prometheus API: {}",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        if envelope.status != "success" {
            let message = envelope.error.unwrap_or_else(|| format!("status {status}"));
            return Err(match envelope.error_type.as_deref() {
                Some("bad_data") => RemoteError::BadData(message),
                _ => backend(message),
            });
        }
        value(envelope.data.ok_or_else(|| backend("a success without data".into()))?).map_err(backend)
    }

    /// `query` at `t` (ms).
    pub async fn instant(&self, query: &str, t: i64) -> Result<Value, RemoteError> {
        self.get("/api/v1/query", &[("query", query.to_string()), ("time", seconds(t))]).await
    }

    /// `query` from `start` to `end` every `step` (ms).
    pub async fn range(&self, query: &str, start: i64, end: i64, step: i64) -> Result<Value, RemoteError> {
        let params =
            [("query", query.to_string()), ("start", seconds(start)), ("end", seconds(end)), ("step", seconds(step))];
        self.get("/api/v1/query_range", &params).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: serde_json::Value) -> Data {
        serde_json::from_value(json).expect("data")
    }

    #[test]
    fn reads_every_result_type_of_the_prometheus_api() {
        let v = value(data(serde_json::json!({"resultType": "vector", "result": [
            {"metric": {"job": "a", "__name__": "up"}, "value": [1700000000.5, "1"]},
            {"metric": {}, "value": [1700000000.5, "NaN"]}]})))
        .expect("vector");
        let Value::Vector(samples) = v else { panic!("{v:?}") };
        assert_eq!(samples[0].labels[0].0.as_str(), "__name__", "sorted");
        assert_eq!(samples[0].value, 1.0);
        assert!(samples[1].value.is_nan());
        let v = value(data(serde_json::json!({"resultType": "matrix", "result": [
            {"metric": {"a": "b"}, "values": [[1.0, "1"], [2.0, "+Inf"]]}]})))
        .expect("matrix");
        let Value::Matrix(series) = v else { panic!("{v:?}") };
        assert_eq!(series[0].points, [(1000, 1.0), (2000, f64::INFINITY)]);
        assert_eq!(
            value(data(serde_json::json!({"resultType": "scalar", "result": [1.0, "42"]}))),
            Ok(Value::Scalar(42.0))
        );
        assert!(value(data(serde_json::json!({"resultType": "vector", "result": {"no": "array"}}))).is_err());
    }
}
