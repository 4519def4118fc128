//! What the dashboard shows, made from the collector's, the agents' and the healer's
//! answers (`hale_core::api`'s types, converted once here). Every part is optional: a part
//! that could not be read is `None` and is drawn as missing, never as healthy.

use std::collections::{BTreeMap, HashMap};

use hale_core::api::{self, AlertState, AlertsData, SilenceMatcher, SilenceState};
use hale_core::cluster::{ClusterView, NodeView};

/// One refresh of everything the views draw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// When it was read (ms since the epoch).
    pub at_ms: i64,
    /// As the collector judged them (`hale_core::cluster`).
    pub nodes: Option<Vec<NodeView>>,
    pub services: Option<Vec<Service>>,
    pub slos: Option<Vec<Slo>>,
    pub alerts: Option<Vec<Alert>>,
    pub healer: Option<Healer>,
    /// The fleet's latest log lines, oldest first.
    pub logs: Option<Vec<LogLine>>,
    /// Per node, CPU use over the last minutes (oldest first, 0..=1).
    pub cpu_history: BTreeMap<String, Vec<f64>>,
    /// The traffic of the service being looked at (the service view asks for it).
    pub focus: Option<ServiceSeries>,
    /// Per node, what its agent supervises; `None` for an agent that did not answer.
    pub processes: BTreeMap<String, Option<Vec<Process>>>,
    /// The labels the collector groups alerts by in its notifications.
    pub alert_group_by: Vec<String>,
    /// The collector's silences that are active or still to come.
    pub silences: Option<Vec<Silence>>,
    /// The focused service's slowest and failed traces of the last minutes.
    pub traces: Option<ServiceTraces>,
    /// The trace being looked at, with its log lines.
    pub trace: Option<TraceView>,
    /// Why the collector refuses telemetry now (a full disk), if it does.
    pub ingest_refused: Option<String>,
}

/// One trace found by a search.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    pub id: String,
    /// `service: operation` of its root span.
    pub root: String,
    pub start_ms: i64,
    pub duration_ms: u32,
    /// Found among the failed ones.
    pub failed: bool,
}

/// A service's traces worth a look: the slowest, then the failed, of the last minutes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceTraces {
    pub slowest: Vec<TraceRow>,
    pub failed: Vec<TraceRow>,
}

impl ServiceTraces {
    /// The rows the service view lists, failed first (each trace once).
    pub fn rows(&self) -> Vec<&TraceRow> {
        let mut out: Vec<&TraceRow> = self.failed.iter().collect();
        out.extend(self.slowest.iter().filter(|t| !self.failed.iter().any(|f| f.id == t.id)));
        out
    }
}

/// The rows of a search answer; the slowest first when `by_duration`.
pub fn trace_rows(found: api::TraceSearch, failed: bool, by_duration: bool, keep: usize) -> Vec<TraceRow> {
    let mut rows: Vec<TraceRow> = found
        .traces
        .into_iter()
        .map(|t| TraceRow {
            root: format!("{}: {}", t.root_service_name, t.root_trace_name),
            start_ms: t.start_time_unix_nano.parse::<i64>().map_or(0, |ns| ns / 1_000_000),
            duration_ms: t.duration_ms,
            id: t.trace_id,
            failed,
        })
        .collect();
    if by_duration {
        rows.sort_by_key(|t| std::cmp::Reverse(t.duration_ms));
    }
    rows.truncate(keep);
    rows
}

/// One span of an opened trace, in waterfall order (a parent before its children).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRow {
    pub depth: usize,
    pub service: String,
    pub instance: String,
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub error: bool,
    pub attributes: Vec<(String, String)>,
}

/// A trace as the dashboard shows it: its spans and the log lines written in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceView {
    pub id: String,
    pub spans: Vec<SpanRow>,
    pub logs: Vec<LogLine>,
}

impl TraceView {
    /// From the first span's start to the last one's end.
    pub fn bounds(&self) -> (u64, u64) {
        let start = self.spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let end = self.spans.iter().map(|s| s.end_ns).max().unwrap_or(start);
        (start, end.max(start))
    }
}

/// A trace's OTLP/JSON (`/api/traces/<id>`) as waterfall rows: each span under its parent,
/// siblings by start time; a span whose parent is not in the trace is a root.
pub fn trace_view(id: &str, otlp: &serde_json::Value, logs: Vec<api::LogLine>) -> TraceView {
    use serde_json::Value;
    let text = |v: &Value| match v {
        Value::Object(m) => m.values().next().map_or(String::new(), |x| match x {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        _ => String::new(),
    };
    let attributes = |list: &Value| -> Vec<(String, String)> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv["key"].as_str()?.to_string(), text(&kv["value"]))))
            .collect()
    };
    let number = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok()).or_else(|| v.as_u64()).unwrap_or(0);
    // (span id, parent id, row)
    let mut found: Vec<(String, String, SpanRow)> = Vec::new();
    for batch in otlp["batches"].as_array().into_iter().flatten() {
        let resource = attributes(&batch["resource"]["attributes"]);
        let get = |k: &str| resource.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
        for span in batch["scopeSpans"].as_array().into_iter().flatten().flat_map(|s| s["spans"].as_array()).flatten() {
            found.push((
                span["spanId"].as_str().unwrap_or_default().to_string(),
                span["parentSpanId"].as_str().unwrap_or_default().to_string(),
                SpanRow {
                    depth: 0,
                    service: get("service.name"),
                    instance: get("service.instance.id"),
                    name: span["name"].as_str().unwrap_or_default().to_string(),
                    start_ns: number(&span["startTimeUnixNano"]),
                    end_ns: number(&span["endTimeUnixNano"]),
                    error: span["status"]["code"].as_u64() == Some(2)
                        || span["status"]["code"].as_str() == Some("STATUS_CODE_ERROR"),
                    attributes: attributes(&span["attributes"]),
                },
            ));
        }
    }
    found.sort_by_key(|(_, _, s)| s.start_ns);
    let index: HashMap<&str, usize> = found.iter().enumerate().map(|(i, (id, _, _))| (id.as_str(), i)).collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, (_, parent, _)) in found.iter().enumerate() {
        match index.get(parent.as_str()) {
            Some(&p) if p != i => children.entry(p).or_default().push(i),
            _ => roots.push(i),
        }
    }
    // Depth first from the roots, children by start time; iterative, so a deep trace
    // cannot exhaust the stack. What no root reaches (a cycle of parents from a broken
    // sender) is shown too, at depth 0.
    let mut spans = Vec::with_capacity(found.len());
    let mut placed = vec![false; found.len()];
    for start in roots.into_iter().chain(0..found.len()) {
        let mut stack = vec![(start, 0usize)];
        while let Some((at, depth)) = stack.pop() {
            if std::mem::replace(&mut placed[at], true) {
                continue;
            }
            let mut row = found[at].2.clone();
            row.depth = depth;
            spans.push(row);
            for &child in children.get(&at).into_iter().flatten().rev() {
                stack.push((child, depth + 1));
            }
        }
    }
    TraceView { id: id.to_string(), spans, logs: logs.into_iter().map(LogLine::from).collect() }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    pub id: String,
    /// `alertname="ReplicaDown", instance="search-1"`.
    pub matchers: String,
    /// `active` or `pending`.
    pub state: String,
    pub ends_at: String,
    pub comment: String,
    /// The matchers themselves, to tell which alerts the silence covers.
    pub matcher_list: Vec<Matcher>,
}

/// One of a silence's matchers (Alertmanager's v2 `matchers[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub name: String,
    pub value: String,
    /// `=` / `=~` rather than `!=` / `!~`.
    pub equal: bool,
    pub regex: bool,
}

impl Matcher {
    /// As the collector matches: a missing label is the empty string, a regex is
    /// anchored; a regex that does not compile matches nothing (the collector refuses it).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let have = labels.get(&self.name).map_or("", String::as_str);
        let hit = if self.regex {
            regex::Regex::new(&format!("^(?:{})$", self.value)).is_ok_and(|r| r.is_match(have))
        } else {
            have == self.value
        };
        hit == self.equal
    }
}

impl Silence {
    /// Whether this silence keeps `alert` from being notified now: it is active and every
    /// matcher matches.
    pub fn covers(&self, alert: &Alert) -> bool {
        self.state == "active"
            && !self.matcher_list.is_empty()
            && self.matcher_list.iter().all(|m| m.matches(&alert.labels))
    }
}

impl Snapshot {
    /// Whether an active silence covers `alert` (its notifications are held back).
    pub fn silenced(&self, alert: &Alert) -> bool {
        self.silences.iter().flatten().any(|s| s.covers(alert))
    }
}

/// A silence's matchers as written in Alertmanager's syntax (`name="value"`, `=~`, `!=`).
pub fn matchers_text(matchers: &[SilenceMatcher], separator: &str) -> String {
    matchers
        .iter()
        .map(|m| format!("{}{}{}", m.name, m.op(), serde_json::to_string(&m.value).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(separator)
}

/// `/api/v1/silences`, expired ones left out.
pub fn silences(list: Vec<api::Silence>) -> Vec<Silence> {
    list.into_iter().filter(|x| x.status.state != SilenceState::Expired).map(Silence::from).collect()
}

impl From<api::Silence> for Silence {
    fn from(x: api::Silence) -> Silence {
        Silence {
            matchers: matchers_text(&x.matchers, ", "),
            state: x.status.state.as_str().to_string(),
            matcher_list: x
                .matchers
                .into_iter()
                .map(|m| Matcher { name: m.name, value: m.value, equal: m.is_equal, regex: m.is_regex })
                .collect(),
            id: x.id,
            ends_at: x.ends_at,
            comment: x.comment,
        }
    }
}

impl Snapshot {
    /// Alerts in the collector's notification groups (by `alert_group_by`), each group's
    /// label text with its alerts, firing first; groups ordered by their labels.
    pub fn alert_groups(&self, keep: impl Fn(&Alert) -> bool) -> Vec<(String, Vec<&Alert>)> {
        let mut groups: BTreeMap<String, Vec<&Alert>> = BTreeMap::new();
        for a in self.alerts.iter().flatten().filter(|a| keep(a)) {
            let key: Vec<String> = if self.alert_group_by.iter().any(|g| g == "...") {
                a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect()
            } else {
                self.alert_group_by.iter().filter_map(|k| a.labels.get(k).map(|v| format!("{k}={v}"))).collect()
            };
            groups.entry(key.join(" ")).or_default().push(a);
        }
        groups.into_iter().collect()
    }
}

/// A process a node agent supervises, as its `/api/v1/processes` says.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    pub name: String,
    pub service: String,
    pub pid: Option<u32>,
    /// `running`, `starting`, `restarting`, `crash_loop`, `stopping`, `stopped`.
    pub state: String,
    pub restarts: u64,
    pub uptime_secs: Option<u64>,
    pub last_exit: Option<String>,
}

/// An agent's `/api/v1/processes`.
pub fn processes(list: api::ProcessList) -> Vec<Process> {
    list.processes.into_iter().map(Process::from).collect()
}

impl From<api::ProcessInfo> for Process {
    fn from(p: api::ProcessInfo) -> Process {
        Process {
            name: p.name,
            service: p.service,
            pid: p.pid,
            state: p.state.as_str().to_string(),
            restarts: p.restarts,
            uptime_secs: p.uptime_secs,
            last_exit: p.last_exit,
        }
    }
}

impl Snapshot {
    /// The agent's record of a replica, if its agent answered.
    pub fn process(&self, instance: &str) -> Option<&Process> {
        self.processes.values().flatten().flatten().find(|p| p.name == instance)
    }

    /// What the agents say about their processes, over what the probes said: see
    /// [`Snapshot::mark_restarting`] and [`Snapshot::mark_hung`].
    pub fn mark_processes(&mut self) {
        self.mark_restarting();
        self.mark_hung();
    }

    /// A replica that answers neither probe while its agent reports its process running
    /// (a pid, not restarting) is hung, not dead: alive but not ready (`◐`). A timed-out
    /// `/healthz` cannot tell the two apart; the process table can.
    pub fn mark_hung(&mut self) {
        let running: Vec<String> = self
            .processes
            .values()
            .flatten()
            .flatten()
            .filter(|p| p.state == "running" && p.pid.is_some())
            .map(|p| p.name.clone())
            .collect();
        for r in self.services.iter_mut().flatten().flat_map(|s| s.replicas.iter_mut()) {
            if r.state == ReplicaState::Down && running.contains(&r.instance) {
                r.state = ReplicaState::NotReady;
            }
        }
    }

    /// A replica whose agent is restarting it shows as restarting, whatever the last
    /// probe said.
    pub fn mark_restarting(&mut self) {
        let restarting: Vec<String> = self
            .processes
            .values()
            .flatten()
            .flatten()
            .filter(|p| matches!(p.state.as_str(), "starting" | "restarting" | "crash_loop"))
            .map(|p| p.name.clone())
            .collect();
        for r in self.services.iter_mut().flatten().flat_map(|s| s.replicas.iter_mut()) {
            if restarting.contains(&r.instance) && r.state != ReplicaState::Ready {
                r.state = ReplicaState::Restarting;
            }
        }
    }
}

/// One service's traffic over the last five minutes: `(unix seconds, value)` points.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceSeries {
    pub service: String,
    /// Requests per second.
    pub rate: Vec<(f64, f64)>,
    /// 5xx responses per second.
    pub errors: Vec<(f64, f64)>,
    /// Latency quantiles, seconds.
    pub p50: Vec<(f64, f64)>,
    pub p99: Vec<(f64, f64)>,
}

/// The points of a one-series `query_range` answer (an empty result, or one that is not
/// a matrix, is no points).
pub fn points(r: api::QueryResult) -> Vec<(f64, f64)> {
    let api::QueryResult::Matrix(series) = r else { return Vec::new() };
    let values = series.into_iter().next().map(|s| s.values).unwrap_or_default();
    values.iter().filter_map(|p| Some((p.0, p.value().filter(|x| x.is_finite())?))).collect()
}

/// An instant vector by one label: label value → sample value.
pub fn by_label(r: api::QueryResult, label: &str) -> BTreeMap<String, f64> {
    let api::QueryResult::Vector(samples) = r else { return BTreeMap::new() };
    samples
        .into_iter()
        .filter_map(|s| {
            let value = s.value.value().filter(|x| x.is_finite())?;
            Some((s.metric.get(label)?.clone(), value))
        })
        .collect()
}

/// A `query_range` matrix by one label: values oldest first.
pub fn history(r: api::QueryResult, label: &str) -> BTreeMap<String, Vec<f64>> {
    let api::QueryResult::Matrix(series) = r else { return BTreeMap::new() };
    series
        .into_iter()
        .filter_map(|s| {
            let values = s.values.iter().filter_map(|p| p.value()).filter(|x| x.is_finite()).collect();
            Some((s.metric.get(label)?.clone(), values))
        })
        .collect()
}

/// A replica's state as the agents' probes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    Ready,
    /// Alive but failing its readiness probe (hung, catching up, fenced).
    NotReady,
    /// Neither probe answers: stopped, crashed, restarting.
    Down,
    /// No fresh probe result: its node or agent is silent.
    Stale,
    /// Its agent is starting it again (after a crash, or in a crash loop).
    Restarting,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    pub instance: String,
    pub node: Option<String>,
    pub state: ReplicaState,
    pub restarts: Option<f64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub replicas: Vec<Replica>,
    /// Replica restarts in the last hour (all replicas).
    pub restarts_1h: Option<f64>,
}

impl Service {
    pub fn ready(&self) -> usize {
        self.replicas.iter().filter(|r| r.state == ReplicaState::Ready).count()
    }
}

/// An SLO's status as the collector reports it, with the word the views show for it.
pub use hale_core::api::SloStatus;

/// The word for `status` on screen and in `hale status`.
pub fn slo_label(status: SloStatus) -> &'static str {
    match status {
        SloStatus::Ok => "ok",
        SloStatus::Ticket => "burning",
        SloStatus::Page => "PAGE",
        SloStatus::InsufficientData => "too few events",
        SloStatus::NoData => "no data",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    pub service: String,
    pub name: String,
    /// Percent, e.g. 99.9.
    pub objective: f64,
    /// Share of good events over the period (0..=1); `None` without data.
    pub sli: Option<f64>,
    /// Share of the error budget left (may go below 0).
    pub budget_left: Option<f64>,
    pub burn_1h: Option<f64>,
    pub burn_6h: Option<f64>,
    pub status: SloStatus,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub firing: bool,
    pub active_at: String,
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub id: String,
    pub kind: String,
    pub policy: String,
    pub target: String,
    pub status: String,
    pub alert: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub detail: String,
    /// The repair's trace, when the healer exports traces.
    pub trace_id: Option<String>,
}

impl Action {
    pub fn awaiting_approval(&self) -> bool {
        self.status == "awaiting_approval"
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Healer {
    pub paused: bool,
    pub dry_run: bool,
    /// Newest first.
    pub actions: Vec<Action>,
    /// Target key → why it waits for a human.
    pub needs_human: Vec<(String, String)>,
    /// Alerts the safety checks refused for now, kept to be decided again when the
    /// reason lifts (the healer's `deferred`), oldest first.
    pub refused: Vec<Refused>,
}

/// A firing alert the healer refused for now, why, and when it looks again.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub alert: String,
    pub action: String,
    pub target: String,
    /// The refusal's short name (`cooldown`, `paused`, `in_progress`, …).
    pub code: String,
    pub reason: String,
    pub first_refused_ms: i64,
    pub attempts: u32,
    pub retry: Retry,
}

/// When the healer decides a refused alert again.
#[derive(Debug, Clone, PartialEq)]
pub enum Retry {
    At(i64),
    WhenTargetFree,
    /// When an action on this service ends.
    WhenFreed(String),
    OnResume,
    /// A condition this dashboard does not know (a newer healer): shown by its name.
    Unknown(String),
}

impl From<&api::RetryWhen> for Retry {
    fn from(r: &api::RetryWhen) -> Retry {
        match r {
            api::RetryWhen::At { at_ms } => Retry::At(*at_ms),
            api::RetryWhen::TargetFree => Retry::WhenTargetFree,
            api::RetryWhen::ServiceFreer { service, .. } => Retry::WhenFreed(service.clone()),
            api::RetryWhen::Resumed => Retry::OnResume,
            api::RetryWhen::Other { when } => Retry::Unknown(when.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub time_ms: i64,
    pub service: String,
    pub instance: String,
    pub level: String,
    pub message: String,
    /// The line's attributes worth reading (`route=/api/search status=200`).
    pub detail: String,
}

/// A log filter as typed after `/`: `service:search level:error timeout` — `service:`,
/// `instance:` and `level:` match those fields exactly, every other word must appear
/// somewhere in the line (case does not matter).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFilter {
    pub service: Option<String>,
    pub instance: Option<String>,
    pub level: Option<String>,
    pub words: Vec<String>,
}

impl LogFilter {
    pub fn parse(text: &str) -> LogFilter {
        let mut f = LogFilter::default();
        for word in text.split_whitespace().map(str::to_lowercase) {
            match word.split_once(':') {
                Some(("service", v)) => f.service = Some(v.to_string()),
                Some(("instance", v)) => f.instance = Some(v.to_string()),
                Some(("level", v)) => f.level = Some(v.to_string()),
                _ => f.words.push(word),
            }
        }
        f
    }

    pub fn matches(&self, l: &LogLine) -> bool {
        let same = |want: &Option<String>, have: &str| want.as_ref().is_none_or(|w| have.eq_ignore_ascii_case(w));
        if !(same(&self.service, &l.service) && same(&self.instance, &l.instance) && same(&self.level, &l.level)) {
            return false;
        }
        let text = format!("{} {} {} {}", l.instance, l.level, l.message, l.detail).to_lowercase();
        self.words.iter().all(|w| text.contains(w.as_str()))
    }
}

/// Attributes every line has, or that only tooling reads.
const QUIET_ATTRIBUTES: [&str; 4] = ["request_id", "target", "service", "instance"];

/// `/api/v1/logs`, oldest first.
pub fn logs(lines: Vec<api::LogLine>) -> Vec<LogLine> {
    let mut lines: Vec<LogLine> = lines.into_iter().map(LogLine::from).collect();
    lines.sort_by_key(|l| l.time_ms);
    lines
}

impl From<api::LogLine> for LogLine {
    fn from(l: api::LogLine) -> LogLine {
        let detail = l
            .attributes
            .iter()
            .filter(|(k, _)| !QUIET_ATTRIBUTES.contains(&k.as_str()))
            .map(|(k, v)| match v {
                api::AttributeValue::String(text) => format!("{k}={text}"),
                v => format!("{k}={}", serde_json::to_string(v).unwrap_or_default()),
            })
            .collect::<Vec<_>>()
            .join(" ");
        LogLine {
            time_ms: (l.time_unix_nano / 1_000_000) as i64,
            service: l.service,
            instance: l.instance,
            level: l.level,
            message: l.message,
            detail,
        }
    }
}

/// `/api/v1/cluster` → nodes and services. The collector has already judged freshness: a
/// replica without a fresh probe is `stale` and an agent that is not `up` is drawn down.
pub fn cluster(view: ClusterView) -> (Vec<NodeView>, Vec<Service>) {
    use hale_core::cluster::ReplicaState as Wire;
    let nodes = view.nodes;
    let services = view
        .services
        .into_iter()
        .map(|svc| Service {
            restarts_1h: None,
            name: svc.service,
            replicas: svc
                .replicas
                .into_iter()
                .map(|r| Replica {
                    state: match r.state {
                        Wire::Ready => ReplicaState::Ready,
                        Wire::NotReady => ReplicaState::NotReady,
                        Wire::Down => ReplicaState::Down,
                        Wire::Stale => ReplicaState::Stale,
                    },
                    instance: r.instance,
                    node: r.node,
                    restarts: r.restarts.filter(|x| x.is_finite()),
                    last_error: r.last_error.map(|e| e.message),
                })
                .collect(),
        })
        .collect();
    (nodes, services)
}

impl From<api::SloState> for Slo {
    fn from(o: api::SloState) -> Slo {
        let finite = |x: Option<f64>| x.filter(|x| x.is_finite());
        let burn = |w: &str| finite(o.windows.iter().find(|x| x.window == w).and_then(|x| x.burn_rate));
        Slo {
            burn_1h: burn("1h"),
            burn_6h: burn("6h"),
            // The API gives a ratio (0.999); people read percent.
            objective: finite(Some(o.objective)).map_or(0.0, |r| if r <= 1.0 { r * 100.0 } else { r }),
            sli: finite(o.period_error_ratio).map(|r| 1.0 - r),
            budget_left: finite(o.error_budget_remaining),
            status: o.status,
            service: o.service,
            name: o.slo,
        }
    }
}

/// `/api/v1/alerts`'s alerts (its `groupBy` aside), firing first, then by name.
pub fn alerts(data: AlertsData) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = data
        .alerts
        .into_iter()
        .map(|a| Alert {
            name: a.labels.get("alertname").cloned().unwrap_or_default(),
            firing: a.state == AlertState::Firing,
            summary: a.annotations.get("summary").cloned().unwrap_or_default(),
            active_at: a.active_at,
            labels: a.labels,
        })
        .collect();
    alerts.sort_by(|a, b| b.firing.cmp(&a.firing).then(a.name.cmp(&b.name)).then(a.labels.cmp(&b.labels)));
    alerts
}

/// A healer target in words: its instance, else its node, else its service.
fn target_text(t: &api::Target) -> String {
    [("instance", &t.instance), ("node", &t.node), ("service", &t.service)]
        .into_iter()
        .find_map(|(k, v)| v.as_ref().map(|v| format!("{k}/{v}")))
        .unwrap_or_else(|| "-".into())
}

impl From<api::Action> for Action {
    fn from(a: api::Action) -> Action {
        Action {
            kind: a.kind.as_str().to_string(),
            target: target_text(&a.target),
            status: a.status.as_str().to_string(),
            alert: a.alert.name().to_string(),
            id: a.id,
            policy: a.policy,
            created_ms: a.created_ms,
            updated_ms: a.updated_ms,
            detail: a.detail,
            trace_id: a.trace_id,
        }
    }
}

impl From<api::Deferred> for Refused {
    fn from(d: api::Deferred) -> Refused {
        Refused {
            alert: d.alert.name().to_string(),
            action: d.action.as_str().to_string(),
            target: target_text(&d.target),
            code: d.code,
            reason: d.reason,
            first_refused_ms: d.first_refused_ms,
            attempts: d.attempts,
            retry: Retry::from(&d.retry),
        }
    }
}

/// The healer's `/api/v1/actions` and `/api/v1/state` (its `deferred`: the refusals kept
/// for a retry).
pub fn healer(actions: api::ActionList, state: api::HealerState) -> Healer {
    let needs_human = state.targets.into_iter().filter_map(|(k, t)| t.needs_human.map(|why| (k, why))).collect();
    Healer {
        paused: state.paused,
        dry_run: state.dry_run,
        actions: actions.actions.into_iter().map(Action::from).collect(),
        needs_human,
        refused: state.deferred.into_iter().map(Refused::from).collect(),
    }
}

/// The one-line verdict `hale status` prints and exits on.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Health {
    /// Nothing pages, every node's agent is up and every service has a fresh ready
    /// replica.
    pub healthy: bool,
    pub problems: Vec<String>,
}

impl Snapshot {
    pub fn health(&self) -> Health {
        let mut problems = Vec::new();
        // A node whose agent is not up is a problem even while its services have ready
        // replicas elsewhere: nobody watches or repairs what runs there.
        match &self.nodes {
            None => problems.push("nodes: no data from the collector".to_string()),
            Some(nodes) => {
                for n in nodes.iter().filter(|n| !n.agent_up) {
                    let seen = n.last_seen_secs_ago.map_or(String::new(), |s| format!(", last report {s:.0}s ago"));
                    problems.push(format!("{}: agent not up (stale or down{seen})", n.node));
                }
            }
        }
        match &self.services {
            None => problems.push("services: no data from the collector".to_string()),
            Some(services) => {
                for svc in services.iter().filter(|s| s.ready() == 0) {
                    problems.push(format!("{}: no ready replica", svc.name));
                }
            }
        }
        match &self.slos {
            None => problems.push("SLOs: no data from the collector".to_string()),
            Some(slos) => {
                for slo in slos.iter().filter(|s| s.status == SloStatus::Page) {
                    problems.push(format!("SLO {} {} pages", slo.service, slo.name));
                }
            }
        }
        Health { healthy: problems.is_empty(), problems }
    }
}

#[cfg(test)]
mod tests {
    use hale_core::api::Envelope;
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn a_traces_spans_are_laid_out_parent_before_children() {
        let span = |id: &str, parent: &str, name: &str, start: u64, end: u64, code: u64| {
            serde_json::json!({"spanId": id, "parentSpanId": parent, "name": name,
                "startTimeUnixNano": start.to_string(), "endTimeUnixNano": end.to_string(),
                "status": {"code": code}, "attributes": [{"key": "http.route", "value": {"stringValue": "/x"}}]})
        };
        let resource = |service: &str| {
            serde_json::json!({"attributes": [
                {"key": "service.name", "value": {"stringValue": service}},
                {"key": "service.instance.id", "value": {"stringValue": format!("{service}-1")}}]})
        };
        let otlp = serde_json::json!({"batches": [
            {"resource": resource("orders"), "scopeSpans": [{"spans": [
                span("b", "a", "POST /api/orders", 20, 90, 0),
                span("d", "b", "INSERT orders", 80, 85, 0)]}]},
            {"resource": resource("gateway"), "scopeSpans": [{"spans": [
                span("a", "client", "POST /api/orders", 10, 100, 0),
                span("c", "a", "GET", 91, 99, 2)]}]}
        ]});
        let view = trace_view("t", &otlp, Vec::new());
        let laid: Vec<(usize, &str, &str)> =
            view.spans.iter().map(|s| (s.depth, s.instance.as_str(), s.name.as_str())).collect();
        assert_eq!(
            laid,
            [
                (0, "gateway-1", "POST /api/orders"),
                (1, "orders-1", "POST /api/orders"),
                (2, "orders-1", "INSERT orders"),
                (1, "gateway-1", "GET"),
            ],
            "the root's parent (the caller's span) is not in the trace"
        );
        assert!(view.spans[3].error && !view.spans[0].error);
        assert_eq!(view.spans[0].attributes, [("http.route".to_string(), "/x".to_string())]);
        assert_eq!(view.bounds(), (10, 100));
    }
    use crate::fixture::refused_restart;

    /// What the dashboard makes of the healer's answers, as the healer served them.
    fn read_healer(actions: Value, state: Value) -> Healer {
        healer(serde_json::from_value(actions).expect("actions"), serde_json::from_value(state).expect("state"))
    }

    /// The shape `hale healer` serves on `/api/v1/state` (`state::Deferred`).
    fn state() -> Value {
        json!({
            "paused": true,
            "dry_run": false,
            "targets": {"instance/orders-2": {"actions": [1], "needs_human": "act-0 failed"}},
            "deferred": [
                {
                    "alert": {"labels": {"alertname": "ReplicaDown", "instance": "search-2"}, "annotations": {}, "starts_at": "2026-01-01T00:00:00Z", "fingerprint": "f", "received_ms": 1},
                    "policy": "restart-hung", "action": "restart",
                    "target": {"service": "search", "instance": "search-2", "node": "node-2"},
                    "code": "service_share", "reason": "1 of 3 search replicas are being acted on; at most 1 at once",
                    "first_refused_ms": 1000, "refused_ms": 2000, "attempts": 2,
                    "retry": {"when": "service_freer", "service": "search", "busy": 1}
                },
                {
                    "alert": {"labels": {"alertname": "ReplicaDown", "instance": "auth-1"}, "annotations": {}, "starts_at": "x", "fingerprint": "g", "received_ms": 1},
                    "policy": "restart-hung", "action": "restart",
                    "target": {"service": "auth", "instance": "auth-1", "node": null},
                    "code": "cooldown", "reason": "cooldown: instance/auth-1 was acted on 10 s ago",
                    "first_refused_ms": 3000, "refused_ms": 3000, "attempts": 1,
                    "retry": {"when": "at", "at_ms": 23000}
                }
            ]
        })
    }

    #[test]
    fn the_healers_refusals_are_read_with_why_and_when() {
        let h = read_healer(json!({"actions": []}), state());
        assert!(h.paused);
        assert_eq!(h.needs_human, [("instance/orders-2".to_string(), "act-0 failed".to_string())]);
        assert_eq!(
            h.refused,
            [
                refused_restart(
                    "ReplicaDown",
                    "instance/search-2",
                    ("service_share", "1 of 3 search replicas are being acted on; at most 1 at once"),
                    1000,
                    2,
                    Retry::WhenFreed("search".into()),
                ),
                refused_restart(
                    "ReplicaDown",
                    "instance/auth-1",
                    ("cooldown", "cooldown: instance/auth-1 was acted on 10 s ago"),
                    3000,
                    1,
                    Retry::At(23000),
                ),
            ]
        );
        // An older healer without the list: none shown, nothing invented.
        let old = read_healer(json!({"actions": []}), json!({"paused": false}));
        assert!(old.refused.is_empty());
    }

    /// Issue #12, finding 12: a frozen node's replicas are stale, never ready, and
    /// `hale status` is unhealthy while its agent is not up.
    #[test]
    fn issue_12_a_stale_replica_is_never_ready_and_a_silent_node_is_unhealthy() {
        let node = |name: &str, agent: &str| {
            json!({"node": name, "agent": agent, "agent_up": agent == "up", "last_seen_secs_ago": 4.0,
                   "interval_secs": 1.0, "cpu_used_ratio": null, "memory_used_ratio": null, "disk_used_ratio": null})
        };
        let replica = |instance: &str, node: &str, state: &str| {
            json!({"instance": instance, "node": node, "state": state, "ready": null, "alive": null, "up": null,
                   "age_secs": 4.0, "interval_secs": 0.5, "restarts": 0.0, "last_error": null})
        };
        let served = json!({"status": "success", "data": {
        "nodes": [node("node-1", "up"), node("node-3", "stale")],
        "services": [
            {"service": "search", "ready_replicas": 1,
             "replicas": [replica("search-1", "node-3", "stale"), replica("search-2", "node-1", "ready")]},
            {"service": "catalog", "ready_replicas": 0, "replicas": [replica("catalog-2", "node-3", "stale")]}
        ]}});
        let view = serde_json::from_value::<Envelope<ClusterView>>(served).expect("cluster").into_data();
        let (nodes, services) = cluster(view.expect("data"));
        assert!(nodes[0].agent_up && !nodes[1].agent_up);
        assert_eq!(services[0].replicas[0].state, ReplicaState::Stale);
        assert_eq!(services[0].ready(), 1);
        assert_eq!(services[1].ready(), 0);
        let snapshot =
            Snapshot { nodes: Some(nodes), services: Some(services), slos: Some(Vec::new()), ..Default::default() };
        let health = snapshot.health();
        assert!(!health.healthy);
        assert_eq!(
            health.problems,
            ["node-3: agent not up (stale or down, last report 4s ago)", "catalog: no ready replica"]
        );
        // Without the judgement (an older collector), nothing is assumed healthy.
        let older = json!({"nodes": [{"node": "n", "agent_up": true}], "services": []});
        assert!(serde_json::from_value::<ClusterView>(older).is_err());
    }

    #[test]
    fn retries_read_every_condition_and_keep_unknown_ones() {
        // A retry that does not read is an unknown one.
        let r = |v: Value| {
            serde_json::from_value::<api::RetryWhen>(v).map_or(Retry::Unknown(String::new()), |r| Retry::from(&r))
        };
        assert_eq!(r(json!({"when": "resumed"})), Retry::OnResume);
        assert_eq!(r(json!({"when": "target_free"})), Retry::WhenTargetFree);
        assert_eq!(r(json!({"when": "at", "at_ms": 5})), Retry::At(5));
        assert_eq!(r(json!({"when": "next_full_moon"})), Retry::Unknown("next_full_moon".into()));
        assert_eq!(r(Value::Null), Retry::Unknown(String::new()));
    }
}
