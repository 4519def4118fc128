//! Reading the collector, the agents and the healer through their clients, and the state
//! of each connection: the dashboard never fails on a lost API, it says so in a banner and
//! tries again with backoff.

use std::time::Duration;

use hale_client::{Agent, ClientError, Collector, Healer, Pool};
use hale_core::api::LogQuery;

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

/// Reads the APIs into snapshots, keeping the last good parts while an API is away.
pub struct Source {
    pub endpoints: Endpoints,
    /// The service whose traffic and traces to read as well (the service view's).
    pub focus: Option<String>,
    /// The trace to read, with its log lines (the trace view's).
    pub trace: Option<String>,
    /// The clients, or why an address cannot be one.
    collector_api: Result<Collector, String>,
    healer_api: Result<Healer, String>,
    /// Per node, its agent's client (`None`: its address is not a URL).
    agents: Vec<(String, Option<Agent>)>,
    pub collector: Link,
    pub healer: Link,
    last: Snapshot,
}

/// How long one read may take: the screen refreshes every second or so.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Each node's CPU use.
const CPU_QUERY: &str = "1 - avg by (node) (rate(node_cpu_seconds_total{mode=\"idle\"}[30s]))";
/// Each service's replica restarts in the last hour.
const RESTARTS_QUERY: &str = "sum by (service) (increase(hale_process_restarts_total[1h]))";
/// The fleet's latest log lines.
const LOG_LINES: usize = 500;

impl Source {
    pub fn new(endpoints: Endpoints) -> Source {
        let http = hale_client::tls::builder()
            .connect_timeout(Duration::from_millis(500))
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap_or_default();
        let collector_api = Collector::with_client(&endpoints.collector, None, &Pool::of(&http, CALL_TIMEOUT))
            .map_err(|e| e.to_string());
        let healer_api =
            Healer::with_client(&endpoints.healer, None, &Pool::of(&http, CALL_TIMEOUT)).map_err(|e| e.to_string());
        let agents = endpoints
            .agents
            .iter()
            .map(|(node, url)| (node.clone(), Agent::with_client(url, &Pool::of(&http, CALL_TIMEOUT)).ok()))
            .collect();
        Source {
            endpoints,
            focus: None,
            trace: None,
            collector_api,
            healer_api,
            agents,
            collector: Link::Connecting,
            healer: Link::Connecting,
            last: Snapshot::default(),
        }
    }

    /// Reads what is due; parts of an API that is away stay as last read (the links say
    /// they are old), parts never read stay missing.
    pub async fn refresh(&mut self, now_ms: i64) -> Snapshot {
        if self.collector.due(now_ms) {
            match &self.collector_api {
                Ok(api) => {
                    let focus = (self.focus.clone(), self.trace.clone());
                    read_collector(api, &mut self.collector, &mut self.last, focus, now_ms).await
                }
                Err(e) => self.collector.failed(now_ms, e.clone()),
            }
        }
        // The agents: what each supervises (pid, state, uptime); one that does not answer
        // is shown as missing.
        let answers = futures::future::join_all(self.agents.iter().map(|(_, agent)| async move {
            match agent {
                Some(agent) => agent.processes().await.ok().map(model::processes),
                None => None,
            }
        }))
        .await;
        self.last.processes = self.agents.iter().map(|(node, _)| node.clone()).zip(answers).collect();
        self.last.mark_processes();
        if self.healer.due(now_ms) {
            match &self.healer_api {
                Ok(api) => {
                    let (actions, state) = futures::join!(api.actions(), api.state());
                    match (part(actions), part(state)) {
                        (Ok(actions), Ok(state)) => {
                            self.healer.succeeded();
                            // A state that does not read is shown as empty, as an older
                            // healer's would be.
                            self.last.healer = actions.map(|a| model::healer(a, state.unwrap_or_default()));
                        }
                        (a, b) => self.healer.failed(now_ms, a.err().or(b.err()).unwrap_or_default()),
                    }
                }
                Err(e) => self.healer.failed(now_ms, e.clone()),
            }
        }
        self.last.at_ms = now_ms;
        self.last.clone()
    }
}

/// Reads the collector into `last`: the cluster, SLOs and alerts decide whether it is up;
/// the rest (CPU history, restarts, logs, silences, the focused service's traffic) is
/// missing when it cannot be read.
async fn read_collector(
    api: &Collector,
    link: &mut Link,
    last: &mut Snapshot,
    (focus, trace): (Option<String>, Option<String>),
    now_ms: i64,
) {
    let (start, end) = (now_ms / 1000 - 300, now_ms / 1000);
    let logs = LogQuery { limit: Some(LOG_LINES), ..LogQuery::default() };
    let (cluster, slos, alerts, cpu, logs, restarts, silences) = futures::join!(
        api.cluster(),
        api.slos(),
        api.alerts(),
        api.query_range(CPU_QUERY, start, end, 10.0),
        api.logs(&logs),
        api.query(RESTARTS_QUERY),
        api.silences(),
    );
    let (cluster, slos, mut alerts) = match (part(cluster), part(slos), part(alerts)) {
        (Ok(cluster), Ok(slos), Ok(alerts)) => (cluster, slos, alerts),
        (a, b, c) => {
            link.failed(now_ms, a.err().or(b.err()).or(c.err()).unwrap_or_default());
            return;
        }
    };
    link.succeeded();
    let mut cluster = cluster;
    last.ingest_refused = cluster.as_mut().and_then(|c| c.ingest_refused.take());
    let (nodes, services) = cluster.map(model::cluster).unzip();
    last.nodes = nodes;
    last.services = services;
    let by_service = restarts.map(|r| model::by_label(r, "service")).unwrap_or_default();
    for svc in last.services.iter_mut().flatten() {
        svc.restarts_1h = by_service.get(&svc.name).copied();
    }
    last.slos = slos.map(|list| list.into_iter().map(model::Slo::from).collect());
    last.alert_group_by = alerts.as_mut().map(|a| std::mem::take(&mut a.group_by)).unwrap_or_default();
    last.alerts = alerts.map(model::alerts);
    last.silences = silences.ok().map(model::silences);
    last.cpu_history = cpu.map(|r| model::history(r, "node")).unwrap_or_default();
    last.logs = logs.ok().map(model::logs);
    (last.focus, last.traces) = match focus {
        Some(service) => {
            let (series, traces) =
                futures::join!(service_series(api, service.clone(), now_ms), service_traces(api, &service, now_ms));
            (Some(series), traces)
        }
        None => (None, None),
    };
    last.trace = match trace {
        Some(id) => {
            let logs = LogQuery { trace_id: Some(id.clone()), limit: Some(200), ..LogQuery::default() };
            let (spans, logs) = futures::join!(api.trace(&id), api.logs(&logs));
            // A trace not (yet) stored is an empty one, not a failure of the collector.
            Some(model::trace_view(&id, &spans.unwrap_or_default(), logs.unwrap_or_default()))
        }
        None => None,
    };
}

/// Requests, errors and latency of one service over the last five minutes.
async fn service_series(api: &Collector, service: String, now_ms: i64) -> model::ServiceSeries {
    let sel = format!("service={}", serde_json::to_string(&service).unwrap_or_default());
    let count = format!("http_server_request_duration_seconds_count{{{sel}}}");
    let quantile = |q: &str| {
        format!(
            "histogram_quantile({q}, sum by (le) (rate(http_server_request_duration_seconds_bucket{{{sel}}}[30s])))"
        )
    };
    let rate = format!("sum(rate({count}[30s]))");
    let errors = format!(
        "sum(rate(http_server_request_duration_seconds_count{{{sel},http_response_status_code=~\"5..\"}}[30s])) or vector(0)"
    );
    let (p50, p99) = (quantile("0.5"), quantile("0.99"));
    let (start, end) = (now_ms / 1000 - 300, now_ms / 1000);
    let series =
        |q: String| async move { api.query_range(&q, start, end, 5.0).await.map(model::points).unwrap_or_default() };
    let (rate, errors, p50, p99) = futures::join!(series(rate), series(errors), series(p50), series(p99));
    model::ServiceSeries { service, rate, errors, p50, p99 }
}

/// Traces of the last minutes shown in a service's view.
const TRACE_WINDOW_SECS: i64 = 600;
const TRACES_SHOWN: usize = 5;

/// A service's slowest and failed traces of the last minutes; `None` when the collector
/// keeps no traces (or does not answer the search).
async fn service_traces(api: &Collector, service: &str, now_ms: i64) -> Option<model::ServiceTraces> {
    let name = serde_json::to_string(service).unwrap_or_default();
    let (start, end) = (now_ms / 1000 - TRACE_WINDOW_SECS, now_ms / 1000 + 1);
    let all = format!("{{ resource.service.name = {name} }}");
    let failed = format!("{{ resource.service.name = {name} && status = error }}");
    let (all, failed) =
        futures::join!(api.search_traces(&all, start, end, 500), api.search_traces(&failed, start, end, TRACES_SHOWN));
    Some(model::ServiceTraces {
        slowest: model::trace_rows(all.ok()?, false, true, TRACES_SHOWN),
        failed: model::trace_rows(failed.ok()?, true, false, TRACES_SHOWN),
    })
}

/// An answer as a part of the snapshot: what was read; `None` for an answer that is not
/// the contract (the part is drawn as missing, the API is still up); or, when the API
/// could not be read, why, in a few words.
fn part<T>(answer: Result<T, ClientError>) -> Result<Option<T>, String> {
    match answer {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::Decode { .. }) => Ok(None),
        Err(e) => Err(said(&e)),
    }
}

/// What went wrong with a call, in a few words for the banner and the status line: the
/// server's own message when it gave one.
pub(crate) fn said(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { source, .. } if source.is_connect() => "connection refused".into(),
        ClientError::Unreachable { source, .. } => source.to_string(),
        ClientError::Unauthorized { message, .. } => format!("HTTP 401: {message}"),
        ClientError::Status { status, message, .. } => format!("HTTP {status}: {message}"),
        ClientError::Decode { .. } | ClientError::BadUrl { .. } => e.to_string(),
    }
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
