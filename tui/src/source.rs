//! Reading the collector and the healer, and the state of each connection: the dashboard
//! never fails on a lost API, it says so in a banner and tries again with backoff.

use std::time::Duration;

use serde_json::Value;

use crate::model::{self, Snapshot};

/// Where the APIs are.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub collector: String,
    pub healer: String,
    /// Each node's agent: (node, URL); empty when unknown.
    pub agents: Vec<(String, String)>,
}

/// One API's connection, as a small state machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// Not answered yet.
    Connecting,
    Connected,
    /// `attempt` failures in a row; the next try is not before `next_ms`.
    Reconnecting {
        attempt: u32,
        next_ms: i64,
        error: String,
    },
}

/// Backoff after the first failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

impl Link {
    /// Whether to try now.
    pub fn due(&self, now_ms: i64) -> bool {
        match self {
            Link::Reconnecting { next_ms, .. } => now_ms >= *next_ms,
            _ => true,
        }
    }

    pub fn succeeded(&mut self) {
        *self = Link::Connected;
    }

    pub fn failed(&mut self, now_ms: i64, error: String) {
        let attempt = match self {
            Link::Reconnecting { attempt, .. } => *attempt + 1,
            _ => 1,
        };
        let backoff = (FIRST_BACKOFF * 2u32.saturating_pow(attempt - 1)).min(MAX_BACKOFF);
        *self = Link::Reconnecting { attempt, next_ms: now_ms + backoff.as_millis() as i64, error };
    }

    pub fn is_up(&self) -> bool {
        *self == Link::Connected
    }
}

/// Reads both APIs into snapshots, keeping the last good parts while an API is away.
pub struct Source {
    pub endpoints: Endpoints,
    /// The service whose traffic to read as well (the service view's).
    pub focus: Option<String>,
    client: reqwest::Client,
    pub collector: Link,
    pub healer: Link,
    last: Snapshot,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(2);

impl Source {
    pub fn new(endpoints: Endpoints) -> Source {
        let client = reqwest::Client::builder().connect_timeout(Duration::from_millis(500)).build().unwrap_or_default();
        Source {
            endpoints,
            focus: None,
            client,
            collector: Link::Connecting,
            healer: Link::Connecting,
            last: Snapshot::default(),
        }
    }

    async fn get(&self, base: &str, path: &str, query: &[(&str, String)]) -> Result<Value, String> {
        let r = self
            .client
            .get(format!("{}{path}", base.trim_end_matches('/')))
            .query(query)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| if e.is_connect() { "connection refused".to_string() } else { e.without_url().to_string() })?;
        if !r.status().is_success() {
            return Err(format!("{path}: HTTP {}", r.status().as_u16()));
        }
        r.json().await.map_err(|e| format!("{path}: {}", e.without_url()))
    }

    /// Reads what is due; parts of an API that is away stay as last read (the links say
    /// they are old), parts never read stay missing.
    pub async fn refresh(&mut self, now_ms: i64) -> Snapshot {
        let (c, h) = (self.endpoints.collector.clone(), self.endpoints.healer.clone());
        if self.collector.due(now_ms) {
            let since = ((now_ms / 1000) - 300).to_string();
            let cpu_q = "1 - avg by (node) (rate(node_cpu_seconds_total{mode=\"idle\"}[30s]))".to_string();
            let range =
                [("query", cpu_q), ("start", since), ("end", (now_ms / 1000).to_string()), ("step", "10".into())];
            let limit = [("limit", "500".to_string())];
            let restarts_q = [("query", "sum by (service) (increase(hale_process_restarts_total[1h]))".to_string())];
            let (cluster, slos, alerts, cpu, logs, restarts, silences) = futures::join!(
                self.get(&c, "/api/v1/cluster", &[]),
                self.get(&c, "/api/v1/slos", &[]),
                self.get(&c, "/api/v1/alerts", &[]),
                self.get(&c, "/api/v1/query_range", &range),
                self.get(&c, "/api/v1/logs", &limit),
                self.get(&c, "/api/v1/query", &restarts_q),
                self.get(&c, "/api/v1/silences", &[]),
            );
            match (cluster, slos, alerts) {
                (Ok(cluster), Ok(slos), Ok(alerts)) => {
                    self.collector.succeeded();
                    let parsed = model::parse_cluster(&cluster);
                    self.last.nodes = parsed.as_ref().map(|p| p.0.clone());
                    self.last.services = parsed.map(|p| p.1);
                    let by_service = restarts.map(|v| parse_by(&v, "service")).unwrap_or_default();
                    for svc in self.last.services.iter_mut().flatten() {
                        svc.restarts_1h = by_service.get(&svc.name).copied();
                    }
                    self.last.slos = model::parse_slos(&slos);
                    self.last.alerts = model::parse_alerts(&alerts);
                    self.last.alert_group_by = model::parse_group_by(&alerts);
                    self.last.silences = silences.ok().and_then(|v| model::parse_silences(&v));
                    self.last.cpu_history = cpu.map(|v| parse_history(&v)).unwrap_or_default();
                    self.last.logs = logs.ok().and_then(|v| model::parse_logs(&v));
                    self.last.focus = match self.focus.clone() {
                        Some(service) => self.service_series(&c, service, now_ms).await,
                        None => None,
                    };
                }
                (a, b, c) => {
                    let error = [a.err(), b.err(), c.err()].into_iter().flatten().next().unwrap_or_default();
                    self.collector.failed(now_ms, error);
                }
            }
        }
        // The agents: what each supervises (pid, state, uptime); one that does not answer
        // is shown as missing.
        let agents = self.endpoints.agents.clone();
        let answers =
            futures::future::join_all(agents.iter().map(|(_, url)| self.get(url, "/api/v1/processes", &[]))).await;
        self.last.processes = agents
            .into_iter()
            .zip(answers)
            .map(|((node, _), answer)| (node, answer.ok().and_then(|v| model::parse_processes(&v))))
            .collect();
        self.last.mark_processes();
        if self.healer.due(now_ms) {
            let (actions, state) =
                futures::join!(self.get(&h, "/api/v1/actions", &[]), self.get(&h, "/api/v1/state", &[]));
            match (actions, state) {
                (Ok(actions), Ok(state)) => {
                    self.healer.succeeded();
                    self.last.healer = model::parse_healer(&actions, &state);
                }
                (a, b) => {
                    let error = [a.err(), b.err()].into_iter().flatten().next().unwrap_or_default();
                    self.healer.failed(now_ms, error);
                }
            }
        }
        self.last.at_ms = now_ms;
        self.last.clone()
    }
}

impl Source {
    /// Requests, errors and latency of one service over the last five minutes.
    async fn service_series(&self, c: &str, service: String, now_ms: i64) -> Option<model::ServiceSeries> {
        let sel = format!("service={}", serde_json::to_string(&service).ok()?);
        let count = format!("http_server_request_duration_seconds_count{{{sel}}}");
        let quantile = |q: &str| {
            format!(
                "histogram_quantile({q}, sum by (le) (rate(http_server_request_duration_seconds_bucket{{{sel}}}[30s])))"
            )
        };
        let queries = [
            format!("sum(rate({count}[30s]))"),
            format!(
                "sum(rate(http_server_request_duration_seconds_count{{{sel},http_response_status_code=~\"5..\"}}[30s])) or vector(0)"
            ),
            quantile("0.5"),
            quantile("0.99"),
        ];
        let (start, end) = (((now_ms / 1000) - 300).to_string(), (now_ms / 1000).to_string());
        let params: Vec<[(&str, String); 4]> = queries
            .iter()
            .map(|q| [("query", q.clone()), ("start", start.clone()), ("end", end.clone()), ("step", "5".into())])
            .collect();
        let (rate, errors, p50, p99) = futures::join!(
            self.get(c, "/api/v1/query_range", &params[0]),
            self.get(c, "/api/v1/query_range", &params[1]),
            self.get(c, "/api/v1/query_range", &params[2]),
            self.get(c, "/api/v1/query_range", &params[3]),
        );
        let points =
            |r: Result<serde_json::Value, String>| r.ok().and_then(|v| model::parse_points(&v)).unwrap_or_default();
        Some(model::ServiceSeries {
            service,
            rate: points(rate),
            errors: points(errors),
            p50: points(p50),
            p99: points(p99),
        })
    }
}

/// An instant vector by one label: label value → sample value.
fn parse_by(v: &Value, label: &str) -> std::collections::BTreeMap<String, f64> {
    let Some(hale_core::api::QueryResult::Vector(samples)) = model::query_result(v) else { return Default::default() };
    samples
        .into_iter()
        .filter_map(|s| {
            let value = s.value.value().filter(|x| x.is_finite())?;
            Some((s.metric.get(label)?.clone(), value))
        })
        .collect()
}

/// A `query_range` matrix by its `node` label: values oldest first.
fn parse_history(v: &Value) -> std::collections::BTreeMap<String, Vec<f64>> {
    let Some(hale_core::api::QueryResult::Matrix(series)) = model::query_result(v) else { return Default::default() };
    series
        .into_iter()
        .filter_map(|s| {
            let values = s.values.iter().filter_map(|p| p.value()).filter(|x| x.is_finite()).collect();
            Some((s.metric.get("node")?.clone(), values))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_ceiling_and_resets_on_success() {
        let mut l = Link::Connecting;
        assert!(l.due(0));
        l.failed(1_000, "connection refused".into());
        assert_eq!(l, Link::Reconnecting { attempt: 1, next_ms: 1_500, error: "connection refused".into() });
        assert!(!l.due(1_499) && l.due(1_500));
        l.failed(1_500, "x".into());
        assert!(matches!(l, Link::Reconnecting { attempt: 2, next_ms: 2_500, .. }));
        for _ in 0..10 {
            l.failed(0, "x".into());
        }
        assert!(matches!(l, Link::Reconnecting { next_ms: 8_000, .. }), "capped: {l:?}");
        l.succeeded();
        assert!(l.is_up() && l.due(0));
    }
}
