//! The cluster view (`GET /api/v1/cluster`): the fleet at a glance, read from the stored
//! series: nodes with their agent's state and resources, services with their replicas'
//! probes, scrapes, restarts and last logged error. Missing data is reported as `null`,
//! never as healthy.
//!
//! Every judgement goes by the age of the sample it rests on (`hale_core::cluster`'s
//! freshness rule): a value older than a few of its series' own intervals, inferred from
//! the spacing of its latest samples, is stale. A frozen node's last `probe_success` of 1
//! makes its replicas `stale`, not ready, and its agent `stale` then `down`, within a few
//! of the agent's intervals, whatever PromQL's five-minute lookback would still return.
//!
//! A node's agent state goes by the age of its host report (`node_load1`) against that
//! series' own interval (the median of its latest five spacings, so one gap does not
//! stretch it); CPU, memory and disk use are shown only while the agent is up. A replica
//! is judged by its readiness and liveness probes and its scrape: without a fresh
//! readiness probe it is `stale`, never ready, and not counted in `ready_replicas`.
//! The view looks back an hour, as `NodeDown` does, so a silent node stays listed as
//! down instead of leaving the view. A replica whose series its live agent ended with
//! markers (stopped, scaled in) has left and is not listed.

use std::collections::BTreeMap;

pub use hale_core::cluster::{AgentState, ClusterView, LastError, NodeView, ReplicaState, ReplicaView, ServiceView};
use hale_core::cluster::{DEFAULT_INTERVAL_MS, is_fresh};

use crate::logs::LogStore;
use crate::query::{self, Value, is_stale};
use crate::store::Store;
use crate::store::head::Matcher;

/// How far back the view looks for nodes and replicas: as far as the `NodeDown` and
/// `TelemetryStale` alerts do, so a node that went silent stays listed (as down) instead
/// of quietly leaving the view, and the fleet never looks healthier by forgetting.
const VIEW_WINDOW_MS: i64 = 60 * 60 * 1000;

/// Spacings looked at to infer a series' interval: their median, so one gap (a node that
/// was frozen and is back) does not stretch the bound.
const SPACINGS: usize = 5;

/// The newest real sample of one series and how it ends.
#[derive(Debug, Clone, PartialEq)]
struct Latest {
    labels: crate::query::Labels,
    t: i64,
    value: f64,
    /// The median spacing of its latest samples; `None` with a single sample.
    interval_ms: Option<i64>,
    /// A staleness marker follows the newest real sample: its source said it is gone (the
    /// agent dropped the target, or the collector saw the agent go silent).
    ended: bool,
}

impl Latest {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn age_ms(&self, now_ms: i64) -> i64 {
        (now_ms - self.t).max(0)
    }

    fn interval(&self) -> i64 {
        self.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS)
    }

    /// Fresh: not ended by a marker and no older than its interval allows.
    fn fresh(&self, now_ms: i64) -> bool {
        !self.ended && is_fresh(self.age_ms(now_ms), self.interval())
    }
}

/// The newest real sample of every series matching `matchers` in the view's window. A
/// series too young to show its own interval (one sample: a replica started a moment
/// ago) takes the one its siblings on the same node show — one agent probes and scrapes
/// them all on one clock — rather than a generous default that would keep a vanished
/// replica "fresh" for many of the agent's intervals.
fn latest(store: &Store, matchers: &[Matcher], now_ms: i64) -> Vec<Latest> {
    let mut all = latest_own(store, matchers, now_ms);
    let mut by_node: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for l in &all {
        if let Some(interval) = l.interval_ms {
            by_node.entry(l.label("node").unwrap_or_default().to_string()).or_default().push(interval);
        }
    }
    let median = |mut v: Vec<i64>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    };
    let by_node: BTreeMap<String, i64> = by_node.into_iter().filter_map(|(n, v)| Some((n, median(v)?))).collect();
    for l in all.iter_mut().filter(|l| l.interval_ms.is_none()) {
        l.interval_ms = by_node.get(l.label("node").unwrap_or_default()).copied();
    }
    all
}

fn latest_own(store: &Store, matchers: &[Matcher], now_ms: i64) -> Vec<Latest> {
    store
        .select(matchers, now_ms - VIEW_WINDOW_MS, now_ms)
        .into_iter()
        .filter_map(|s| {
            let ended = s.samples.last().is_some_and(|(_, v)| is_stale(*v));
            let real: Vec<(i64, f64)> =
                s.samples.iter().rev().filter(|(_, v)| !is_stale(*v)).take(SPACINGS + 1).copied().collect();
            let (t, value) = *real.first()?;
            let mut spacings: Vec<i64> = real.windows(2).map(|w| w[0].0 - w[1].0).filter(|d| *d > 0).collect();
            spacings.sort_unstable();
            let interval_ms = spacings.get(spacings.len() / 2).copied();
            Some(Latest { labels: s.labels, t, value, interval_ms, ended })
        })
        .collect()
}

fn name(metric: &str) -> Matcher {
    Matcher::Eq("__name__".into(), metric.into())
}

/// `label → value` of a vector query at `t`.
fn by_label(store: &Store, expr: &str, t: i64, label: &str) -> BTreeMap<String, f64> {
    match query::instant_query(store, expr, t) {
        Ok(Value::Vector(samples)) => samples
            .into_iter()
            .filter_map(|s| Some((s.labels.iter().find(|(n, _)| n == label)?.1.to_string(), s.value)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `(service, instance) → newest sample`, the freshest series winning.
fn by_instance(series: Vec<Latest>) -> BTreeMap<(String, String), Latest> {
    let mut out: BTreeMap<(String, String), Latest> = BTreeMap::new();
    for l in series {
        let (Some(service), Some(instance)) = (l.label("service"), l.label("instance")) else { continue };
        let key = (service.to_string(), instance.to_string());
        if out.get(&key).is_none_or(|o| o.t < l.t) {
            out.insert(key, l);
        }
    }
    out
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// Prometheus's `/api/v1/targets`, from what the agents report of their scrapes: every
/// `up` series seen within the view's window is a target; its health is its last `up`
/// while that is fresh, and `unknown` once it is not (missing is never healthy). The
/// agents do not report the URL they scrape, so `scrapeUrl` stays empty.
pub fn targets(store: &Store, now_ms: i64) -> hale_core::api::Targets {
    use hale_core::api::{Labels, ScrapeTarget, Targets};
    let rfc3339 = |t: i64| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.max(0) as u64);
        humantime::format_rfc3339_millis(at).to_string()
    };
    let durations: BTreeMap<crate::query::Labels, f64> = latest(store, &[name("scrape_duration_seconds")], now_ms)
        .into_iter()
        .map(|l| (without_name(l.labels), l.value))
        .collect();
    let mut active: Vec<ScrapeTarget> = latest(store, &[name("up")], now_ms)
        .into_iter()
        .map(|l| {
            let fresh = l.fresh(now_ms);
            let labels = without_name(l.labels.clone());
            let (health, last_error) = match (fresh, l.value) {
                (true, 1.0) => ("up", String::new()),
                (true, _) => ("down", "the last scrape failed".to_string()),
                (false, _) => ("unknown", format!("no scrape reported for {} s", l.age_ms(now_ms) / 1000)),
            };
            let as_map: Labels = labels.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            let pool = as_map.get("job").or_else(|| as_map.get("service")).cloned().unwrap_or_default();
            ScrapeTarget {
                discovered_labels: Labels::new(),
                scrape_pool: pool,
                scrape_url: String::new(),
                global_url: String::new(),
                last_error,
                last_scrape: rfc3339(l.t),
                last_scrape_duration: durations.get(&labels).copied().unwrap_or(0.0),
                health: health.into(),
                scrape_interval: format!("{}s", l.interval() as f64 / 1000.0),
                scrape_timeout: String::new(),
                labels: as_map,
            }
        })
        .collect();
    active.sort_by(|a, b| (&a.scrape_pool, &a.labels).cmp(&(&b.scrape_pool, &b.labels)));
    Targets { active_targets: active, dropped_targets: Vec::new() }
}

fn without_name(mut labels: crate::query::Labels) -> crate::query::Labels {
    labels.retain(|(n, _)| n != "__name__");
    labels
}

pub fn view(store: &Store, logs: &LogStore, now_ms: i64) -> ClusterView {
    // An agent's host report: `node_load1`, one series per node.
    let mut agents: BTreeMap<String, Latest> = BTreeMap::new();
    for l in latest(store, &[name("node_load1")], now_ms) {
        let Some(node) = l.label("node").map(str::to_string) else { continue };
        if agents.get(&node).is_none_or(|o| o.t < l.t) {
            agents.insert(node, l);
        }
    }
    let cpu = by_label(store, "1 - avg by (node) (rate(node_cpu_seconds_total{mode=\"idle\"}[1m]))", now_ms, "node");
    let mem = by_label(store, "1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", now_ms, "node");
    let disk =
        by_label(store, "max by (node) (1 - node_filesystem_avail_bytes / node_filesystem_size_bytes)", now_ms, "node");
    let agent_state: BTreeMap<&str, AgentState> = agents
        .iter()
        .map(|(node, l)| {
            let state = match AgentState::of(l.age_ms(now_ms), l.interval()) {
                // The agent said its host report ended: it stopped (or was found silent).
                AgentState::Up if l.ended => AgentState::Stale,
                s => s,
            };
            (node.as_str(), state)
        })
        .collect();
    let nodes = agents
        .iter()
        .map(|(node, l)| {
            let state = agent_state.get(node.as_str()).copied().unwrap_or(AgentState::Down);
            let up = state == AgentState::Up;
            // Resource numbers of a silent agent are yesterday's news: not shown.
            let resource = |m: &BTreeMap<String, f64>| m.get(node).copied().filter(|v| up && v.is_finite());
            NodeView {
                node: node.clone(),
                agent: state,
                agent_up: up,
                last_seen_secs_ago: Some(secs(l.age_ms(now_ms))),
                interval_secs: l.interval_ms.map(secs),
                cpu_used_ratio: resource(&cpu),
                memory_used_ratio: resource(&mem),
                disk_used_ratio: resource(&disk),
            }
        })
        .collect();

    let probe = |p: &str| [name("probe_success"), Matcher::Eq("probe".into(), p.into())];
    let ready = by_instance(latest(store, &probe("readyz"), now_ms));
    let alive = by_instance(latest(store, &probe("healthz"), now_ms));
    let up = by_instance(latest(store, &[name("up")], now_ms));
    let restarts: BTreeMap<(String, String), f64> =
        match query::instant_query(store, "hale_process_restarts_total", now_ms) {
            Ok(Value::Vector(samples)) => samples
                .into_iter()
                .filter_map(|s| {
                    let get = |k: &str| s.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_string());
                    Some(((get("service")?, get("instance")?), s.value))
                })
                .collect(),
            _ => BTreeMap::new(),
        };
    // The replicas are what the agents probe, and the targets of scrape jobs (`up` with
    // a `job`: a fleet Hale did not start, judged by its scrapes when nothing probes its
    // readiness). A target an agent only scrapes for itself (the collector and healer
    // through `[[scrape]]`, no `job`) is no replica of a service.
    let jobs = up.iter().filter(|(_, l)| l.label("job").is_some()).map(|(k, _)| k);
    let mut keys: Vec<&(String, String)> = ready.keys().chain(alive.keys()).chain(jobs).collect();
    keys.sort();
    keys.dedup();
    let mut services: BTreeMap<String, Vec<ReplicaView>> = BTreeMap::new();
    for key in keys {
        let (service, instance) = key;
        let series = [ready.get(key), alive.get(key), up.get(key)];
        let node = series.iter().flatten().find_map(|l| l.label("node")).map(str::to_string);
        let node_up = node.as_deref().and_then(|n| agent_state.get(n)) == Some(&AgentState::Up);
        // Every series ended by a marker while its node's agent reports: the agent
        // dropped the replica on purpose (stopped, scaled in). It left; it is not stale.
        if node_up && series.iter().flatten().all(|l| l.ended) {
            continue;
        }
        let fresh = |l: Option<&Latest>| l.filter(|l| l.fresh(now_ms)).map(|l| l.value == 1.0);
        let (is_ready, is_alive, is_up) = (fresh(ready.get(key)), fresh(alive.get(key)), fresh(up.get(key)));
        // Without readiness or liveness probes, the scrape is the health signal there is.
        let scraped_only = !ready.contains_key(key) && !alive.contains_key(key);
        let state = match (is_ready, is_alive) {
            (Some(true), _) => ReplicaState::Ready,
            (Some(false), Some(true)) => ReplicaState::NotReady,
            (Some(false), _) => ReplicaState::Down,
            (None, _) if scraped_only => match is_up {
                Some(true) => ReplicaState::Ready,
                Some(false) => ReplicaState::Down,
                None => ReplicaState::Stale,
            },
            (None, _) => ReplicaState::Stale,
        };
        let probed = if scraped_only { up.get(key) } else { ready.get(key) };
        services.entry(service.clone()).or_default().push(ReplicaView {
            instance: instance.clone(),
            node,
            state,
            ready: is_ready,
            alive: is_alive,
            up: is_up,
            age_secs: probed.map(|l| secs(l.age_ms(now_ms))),
            interval_secs: probed.and_then(|l| l.interval_ms).map(secs),
            restarts: restarts.get(key).copied(),
            last_error: logs
                .last_error(service, instance)
                .map(|l| LastError { time_unix_nano: l.time_unix_nano, message: l.message }),
        });
    }
    let services = services
        .into_iter()
        .map(|(service, replicas)| ServiceView {
            ready_replicas: replicas.iter().filter(|r| r.state == ReplicaState::Ready).count(),
            service,
            replicas,
        })
        .collect();
    ClusterView { nodes, services, ingest_refused: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: u64 = crate::query::STALE_NAN;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut l: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        l.sort();
        l
    }

    /// Samples every `every_ms` from `from` to `to` (inclusive), of `value`.
    fn points(from: i64, to: i64, every_ms: i64, value: f64) -> Vec<(i64, f64)> {
        (0..).map(|i| from + i * every_ms).take_while(|t| *t <= to).map(|t| (t, value)).collect()
    }

    async fn store_with(series: Vec<crate::store::IncomingSeries>) -> (tempfile::TempDir, Store, LogStore) {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = Store::open(&dir.path().join("wal")).expect("store");
        store.ingest(series, None).await.expect("ingest");
        let logs = LogStore::open(&dir.path().join("logs")).expect("logs");
        (dir, store, logs)
    }

    fn replica(node: &str, instance: &str, last_ms: i64, value: f64) -> Vec<crate::store::IncomingSeries> {
        let base = [("service", "search"), ("instance", instance), ("node", node)];
        let with = |name: &str, extra: &[(&str, &str)]| {
            let mut l = vec![("__name__", name)];
            l.extend(base);
            l.extend(extra);
            labels(&l)
        };
        vec![
            (with("probe_success", &[("probe", "readyz")]), points(last_ms - 10_000, last_ms, 500, value)),
            (with("probe_success", &[("probe", "healthz")]), points(last_ms - 10_000, last_ms, 500, 1.0)),
            (with("up", &[]), points(last_ms - 10_000, last_ms, 1000, 1.0)),
        ]
    }

    fn host(node: &str, last_ms: i64) -> crate::store::IncomingSeries {
        (labels(&[("__name__", "node_load1"), ("node", node)]), points(last_ms - 10_000, last_ms, 1000, 0.5))
    }

    /// A target an agent only scrapes (the collector and healer, as `[[scrape]]`) has an
    /// `up` but no probes: it is no replica, so it cannot make a service look down.
    #[tokio::test]
    async fn a_scraped_only_target_is_no_replica() {
        let now = 1_000_000_000;
        let mut series = vec![host("node-1", now - 200)];
        series.extend(replica("node-1", "search-1", now - 300, 1.0));
        let up = [("__name__", "up"), ("service", "collector"), ("instance", "collector"), ("node", "node-1")];
        series.push((labels(&up), points(now - 10_000, now - 300, 1000, 1.0)));
        let (_dir, store, logs) = store_with(series).await;
        let v = view(&store, &logs, now);
        let services: Vec<&str> = v.services.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(services, ["search"]);
        let targets = targets(&store, now);
        assert!(
            targets.active_targets.iter().any(|t| t.labels["instance"] == "collector" && t.health == "up"),
            "still a target"
        );
    }

    /// A scrape job's target (a service Hale did not start, no probes) is a replica judged
    /// by its scrape: up is ready, a failed scrape is down, silence is stale.
    #[tokio::test]
    async fn a_scrape_jobs_target_is_a_replica_judged_by_its_scrape() {
        let now = 1_000_000_000;
        let mut series = vec![host("node-1", now - 200)];
        for (instance, last, value) in
            [("web-1", now - 300, 1.0), ("web-2", now - 300, 0.0), ("web-3", now - 60_000, 1.0)]
        {
            let up =
                [("__name__", "up"), ("service", "web"), ("instance", instance), ("node", "node-1"), ("job", "web")];
            series.push((labels(&up), points(last - 10_000, last, 1000, value)));
        }
        let (_dir, store, logs) = store_with(series).await;
        let v = view(&store, &logs, now);
        let web = v.services.iter().find(|s| s.service == "web").expect("the foreign service is listed");
        let states: Vec<(&str, ReplicaState)> = web.replicas.iter().map(|r| (r.instance.as_str(), r.state)).collect();
        assert_eq!(
            states,
            [("web-1", ReplicaState::Ready), ("web-2", ReplicaState::Down), ("web-3", ReplicaState::Stale)]
        );
        assert_eq!(web.ready_replicas, 1);
        assert!(web.replicas[0].age_secs.is_some_and(|a| a < 1.0), "its age is its scrape's");
    }

    /// Issue #12, finding 12: a frozen node's last probes said "ready"; seconds later they
    /// are stale, its agent is not up, and no service counts them.
    #[tokio::test]
    async fn issue_12_old_samples_are_stale_never_ready() {
        let now = 1_000_000_000;
        let mut series = vec![host("node-1", now - 200), host("node-3", now - 5_000)];
        series.extend(replica("node-1", "search-2", now - 300, 1.0));
        series.extend(replica("node-3", "search-1", now - 5_000, 1.0));
        let (_dir, store, logs) = store_with(series).await;
        let v = view(&store, &logs, now);
        let node = |n: &str| v.nodes.iter().find(|x| x.node == n).expect("node");
        assert_eq!(node("node-1").agent, AgentState::Up);
        assert!(node("node-1").agent_up);
        assert_eq!(node("node-3").agent, AgentState::Stale);
        assert!(!node("node-3").agent_up);
        assert_eq!(node("node-3").interval_secs, Some(1.0));
        assert_eq!(node("node-3").last_seen_secs_ago, Some(5.0));
        let search = &v.services[0];
        let r = |i: &str| search.replicas.iter().find(|r| r.instance == i).expect("replica");
        assert_eq!(r("search-2").state, ReplicaState::Ready);
        assert_eq!(r("search-1").state, ReplicaState::Stale);
        assert_eq!((r("search-1").ready, r("search-1").alive, r("search-1").up), (None, None, None));
        assert_eq!(r("search-1").age_secs, Some(5.0));
        assert_eq!(r("search-1").interval_secs, Some(0.5));
        assert_eq!(search.ready_replicas, 1, "the stale replica is not counted");

        // Twenty seconds on, the silent agent is down; a minute on, still listed.
        assert_eq!(view(&store, &logs, now + 15_000).nodes[1].agent, AgentState::Down);
        let later = view(&store, &logs, now + 60_000);
        assert_eq!(later.nodes.len(), 2, "a silent node stays in the view");
        assert!(later.services[0].replicas.iter().all(|r| r.state == ReplicaState::Stale));
        assert_eq!(later.services[0].ready_replicas, 0);
    }

    /// Issue #12, finding 13: a replica that lived for one probe (started by the healer in
    /// a run that has since ended) is judged by its node's probe interval, not a generous
    /// default: seconds after its last sample it is stale, never ready.
    #[tokio::test]
    async fn issue_12_a_replica_seen_once_is_judged_by_its_siblings_interval() {
        let now = 1_000_000_000;
        let mut series = vec![host("node-1", now - 200)];
        series.extend(replica("node-1", "search-2", now - 200, 1.0));
        let once = |s: Vec<crate::store::IncomingSeries>| {
            s.into_iter().map(|(l, p)| (l, p.last().copied().into_iter().collect())).collect::<Vec<_>>()
        };
        series.extend(once(replica("node-1", "search-extra", now - 4_000, 1.0)));
        let (_dir, store, logs) = store_with(series).await;
        let v = view(&store, &logs, now);
        let r = |i: &str| v.services[0].replicas.iter().find(|r| r.instance == i).expect("replica").clone();
        assert_eq!(r("search-2").state, ReplicaState::Ready);
        assert_eq!(r("search-extra").state, ReplicaState::Stale, "{:?}", r("search-extra"));
        assert_eq!(r("search-extra").interval_secs, Some(0.5), "the node's probe interval");
        assert_eq!(v.services[0].ready_replicas, 1);
    }

    /// A node whose clock runs minutes ahead (ingest takes samples up to 10 minutes ahead)
    /// is never taken as fresh on the strength of its future samples: the view reads up to
    /// now only, so it shows the node as not up (or not at all), its replicas not ready.
    #[tokio::test]
    async fn samples_from_the_future_are_not_fresh() {
        let now = 1_000_000_000;
        let mut series = vec![host("node-1", now - 200), host("node-2", now + 540_000)];
        series.extend(replica("node-1", "search-1", now - 200, 1.0));
        series.extend(replica("node-2", "search-2", now + 540_000, 1.0));
        let (_dir, store, logs) = store_with(series).await;
        let v = view(&store, &logs, now);
        let node = |n: &str| v.nodes.iter().find(|x| x.node == n).map(|x| x.agent);
        assert_eq!(node("node-1"), Some(AgentState::Up));
        assert_ne!(node("node-2"), Some(AgentState::Up));
        let r = |i: &str| v.services[0].replicas.iter().find(|r| r.instance == i).map(|r| r.state);
        assert_eq!(r("search-1"), Some(ReplicaState::Ready));
        assert_ne!(r("search-2"), Some(ReplicaState::Ready));
        assert_eq!(v.services[0].ready_replicas, 1);
    }

    #[tokio::test]
    async fn a_replica_its_live_agent_dropped_leaves_the_view_and_one_on_a_silent_node_stays_stale() {
        let now = 1_000_000_000;
        let mut series = vec![host("node-1", now - 200), host("node-3", now - 5_000)];
        let ended = |mut s: Vec<crate::store::IncomingSeries>, at: i64| {
            for (_, p) in &mut s {
                p.push((at, f64::from_bits(STALE)));
            }
            s
        };
        series.extend(ended(replica("node-1", "search-2", now - 3_000, 1.0), now - 2_500));
        series.extend(ended(replica("node-3", "search-1", now - 5_000, 1.0), now - 1_000));
        let (_dir, store, logs) = store_with(series).await;
        let v = view(&store, &logs, now);
        let names: Vec<&str> = v.services[0].replicas.iter().map(|r| r.instance.as_str()).collect();
        assert_eq!(names, ["search-1"]);
        assert_eq!(v.services[0].replicas[0].state, ReplicaState::Stale);
    }

    #[tokio::test]
    async fn fresh_probes_judge_ready_not_ready_and_down() {
        let now = 1_000_000_000;
        let mut series = vec![host("node-1", now - 100)];
        series.extend(replica("node-1", "search-1", now - 100, 0.0));
        let (_dir, store, logs) = store_with(series).await;
        let v = view(&store, &logs, now);
        assert_eq!(v.services[0].replicas[0].state, ReplicaState::NotReady);
        assert_eq!(v.services[0].replicas[0].ready, Some(false));
        assert_eq!(v.services[0].ready_replicas, 0);
    }
}
