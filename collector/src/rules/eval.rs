//! Evaluating a rule group at one instant, with Prometheus's semantics.
//!
//! A recording rule writes its result back as series named by `record`, with stale markers
//! for series it wrote last time and not this time. An alerting rule keeps one alert per
//! label set: pending when its expression first returns it, firing once it has been
//! returned for `for`, resolved when it is no longer returned (after `keep_firing_for`, if
//! it was firing), and kept 15 minutes after resolving so notifiers can say so. Every
//! evaluation writes `ALERTS{alertstate}` and `ALERTS_FOR_STATE` (the active-since time)
//! for the alerts pending or firing. Rules of a group run in order and each sees what the
//! ones before it wrote at the same instant.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use promql_parser::parser::Expr;

use super::file::{Group, RuleDef, TemplateText};
use super::template::Data;
use crate::query::{self, STALE_NAN, Value};
use crate::store::{IncomingSeries, Store};

/// How long a resolved alert stays in the list (and is sent as resolved).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

pub type LabelSet = BTreeMap<String, String>;

/// An alert's state; core's, as the API reports it.
pub use hale_core::api::AlertState;

/// One alert of an alerting rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The rule's output labels plus `alertname`.
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub state: AlertState,
    pub value: f64,
    /// When the expression first returned this label set (ms).
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    /// Since when a firing alert has no longer been returned (for `keep_firing_for`).
    pub(crate) keep_firing_since: Option<i64>,
    /// Last evaluation that returned it.
    pub last_seen: i64,
}

/// Whether a rule's last evaluation succeeded, as `/api/v1/rules` reports it.
pub use hale_core::api::RuleHealth as Health;

/// What is common to both kinds of rule: its outcome last time.
#[derive(Debug, Clone)]
pub struct RuleStatus {
    pub health: Health,
    pub last_error: Option<String>,
    pub last_evaluation: Option<i64>,
    pub evaluation_seconds: f64,
}

impl Default for RuleStatus {
    fn default() -> Self {
        RuleStatus { health: Health::Unknown, last_error: None, last_evaluation: None, evaluation_seconds: 0.0 }
    }
}

pub enum RuleKind {
    Recording,
    Alerting {
        hold: Duration,
        keep_firing_for: Duration,
        annotations: Vec<(String, TemplateText)>,
        active: HashMap<LabelSet, Alert>,
        /// Alert state is restored from `ALERTS_FOR_STATE` on the first evaluation.
        restored: bool,
    },
}

pub struct Rule {
    pub name: String,
    pub query: String,
    expr: Expr,
    pub labels: Vec<(String, TemplateText)>,
    pub kind: RuleKind,
    pub status: RuleStatus,
    /// Series this rule wrote last evaluation, to mark stale when they go away.
    written: HashSet<LabelSet>,
}

impl Rule {
    pub fn new(def: &RuleDef) -> Rule {
        let labels = def.labels.iter().map(|(k, v)| (k.0.clone(), v.clone())).collect();
        let (name, kind) = match (&def.record, &def.alert) {
            (Some(record), _) => (record.0.clone(), RuleKind::Recording),
            (None, alert) => (
                alert.as_ref().map(|a| a.0.clone()).unwrap_or_default(),
                RuleKind::Alerting {
                    hold: def.for_.map_or(Duration::ZERO, |d| d.0),
                    keep_firing_for: def.keep_firing_for.map_or(Duration::ZERO, |d| d.0),
                    annotations: def.annotations.iter().map(|(k, v)| (k.0.clone(), v.clone())).collect(),
                    active: HashMap::new(),
                    restored: false,
                },
            ),
        };
        Rule {
            name,
            query: def.expr.text.clone(),
            expr: def.expr.parsed.clone(),
            labels,
            kind,
            status: RuleStatus::default(),
            written: HashSet::new(),
        }
    }

    /// Alerts pending, firing, or resolved within the retention, sorted by labels.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut out: Vec<Alert> = match &self.kind {
            RuleKind::Alerting { active, .. } => active.values().cloned().collect(),
            RuleKind::Recording => Vec::new(),
        };
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}

/// A group as it runs: its rules and their state.
pub struct GroupRunner {
    pub name: String,
    pub file: String,
    pub interval: Duration,
    pub limit: usize,
    pub rules: Vec<Rule>,
    pub last_evaluation: Option<i64>,
    pub evaluation_seconds: f64,
    external_labels: Arc<LabelSet>,
}

fn stale() -> f64 {
    f64::from_bits(STALE_NAN)
}

fn to_set(labels: query::Labels) -> LabelSet {
    labels.into_iter().map(|(n, v)| (n.into(), v.into())).collect()
}

fn incoming(labels: &LabelSet, t: i64, v: f64) -> IncomingSeries {
    (labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(), vec![(t, v)])
}

impl GroupRunner {
    pub fn new(group: &Group, file: &str, default_interval: Duration, external_labels: Arc<LabelSet>) -> Self {
        GroupRunner {
            name: group.name.clone(),
            file: file.to_string(),
            interval: group.interval.map_or(default_interval, |d| d.0),
            limit: group.limit,
            rules: group.rules.iter().map(Rule::new).collect(),
            last_evaluation: None,
            evaluation_seconds: 0.0,
            external_labels,
        }
    }

    /// Evaluates every rule at `t` (ms), writing their output to `store`; the
    /// expressions through `remote` when given (`--query-url`), else over `store`.
    pub async fn eval_at(&mut self, store: &Store, t: i64, remote: Option<&crate::remote::RemoteQuery>) {
        let started = std::time::Instant::now();
        for i in 0..self.rules.len() {
            let rule_started = std::time::Instant::now();
            let value = match remote {
                Some(remote) => remote.instant(&self.rules[i].query, t).await.map_err(|e| e.to_string()),
                None => query::eval_instant(store, &self.rules[i].expr, t).map_err(|e| e.to_string()),
            };
            let result = self.eval_rule(i, store, t, value);
            let rule = &mut self.rules[i];
            let (out, error) = match result {
                Ok(series) => {
                    // Stale markers for what this rule wrote last time and not now.
                    let now: HashSet<LabelSet> = series.iter().map(|(l, _)| l.iter().cloned().collect()).collect();
                    let mut out = series;
                    out.extend(rule.written.difference(&now).map(|l| incoming(l, t, stale())));
                    rule.written = now;
                    (out, None)
                }
                // A failed evaluation says nothing about the series: they are not marked
                // stale (an alert's ALERTS would vanish while it still fires), as in
                // Prometheus.
                Err(e) => (Vec::new(), Some(e)),
            };
            let write_error = if out.is_empty() {
                None
            } else {
                store.ingest(out, None).await.err().map(|e| format!("writing the rule's output: {e}"))
            };
            let error = error.or(write_error);
            rule.status = RuleStatus {
                health: if error.is_some() { Health::Err } else { Health::Ok },
                last_error: error,
                last_evaluation: Some(t),
                evaluation_seconds: rule_started.elapsed().as_secs_f64(),
            };
        }
        self.last_evaluation = Some(t);
        self.evaluation_seconds = started.elapsed().as_secs_f64();
    }

    /// One rule's output at `t`: the series to write (not yet the stale markers).
    fn eval_rule(
        &mut self,
        i: usize,
        store: &Store,
        t: i64,
        result: Result<Value, String>,
    ) -> Result<Vec<IncomingSeries>, String> {
        let limit = self.limit;
        let external = self.external_labels.clone();
        let rule = &mut self.rules[i];
        let samples: Vec<(LabelSet, f64)> = match result {
            Ok(Value::Vector(v)) => v.into_iter().map(|s| (to_set(s.labels), s.value)).collect(),
            Ok(Value::Scalar(v)) => vec![(LabelSet::new(), v)],
            Ok(_) => return Err("the expression gives neither an instant vector nor a scalar".into()),
            // Alerts stay as they were when the query fails, as in Prometheus.
            Err(e) => return Err(format!("evaluating the expression: {e}")),
        };
        match &mut rule.kind {
            RuleKind::Recording => {
                let mut out = Vec::with_capacity(samples.len());
                let mut seen = HashSet::new();
                for (mut labels, v) in samples {
                    labels.insert("__name__".into(), rule.name.clone());
                    for (k, tmpl) in &rule.labels {
                        labels.insert(k.clone(), tmpl.text.clone());
                    }
                    if !seen.insert(labels.clone()) {
                        return Err(
                            "the result has two series with the same labels once the rule's labels are applied".into(),
                        );
                    }
                    out.push(incoming(&labels, t, v));
                }
                if limit > 0 && out.len() > limit {
                    return Err(format!("{} series, more than the group's limit of {limit}", out.len()));
                }
                Ok(out)
            }
            RuleKind::Alerting { hold, keep_firing_for, annotations, active, restored } => {
                let mut returned: HashMap<LabelSet, (f64, LabelSet)> = HashMap::new();
                for (source, v) in samples {
                    let data = Data { labels: &source, external_labels: &external, value: v };
                    let mut labels = source.clone();
                    labels.remove("__name__");
                    for (k, tmpl) in &rule.labels {
                        labels.insert(k.clone(), tmpl.parsed.render(&data));
                    }
                    labels.insert("alertname".into(), rule.name.clone());
                    let notes: LabelSet =
                        annotations.iter().map(|(k, tmpl)| (k.clone(), tmpl.parsed.render(&data))).collect();
                    if returned.insert(labels, (v, notes)).is_some() {
                        return Err(
                            "the result has two series with the same labels once the rule's labels are applied".into(),
                        );
                    }
                }
                if limit > 0 && returned.len() > limit {
                    active.clear();
                    return Err(format!("{} alerts, more than the group's limit of {limit}", returned.len()));
                }
                let first = !*restored;
                *restored = true;
                for (labels, (value, notes)) in returned.iter() {
                    match active.get_mut(labels) {
                        Some(a) if a.state != AlertState::Inactive => {
                            a.value = *value;
                            a.annotations = notes.clone();
                            a.last_seen = t;
                        }
                        _ => {
                            let active_at = if first { restore_active_at(store, labels, t) } else { None };
                            active.insert(
                                labels.clone(),
                                Alert {
                                    labels: labels.clone(),
                                    annotations: notes.clone(),
                                    state: AlertState::Pending,
                                    value: *value,
                                    active_at: active_at.unwrap_or(t),
                                    fired_at: None,
                                    resolved_at: None,
                                    keep_firing_since: None,
                                    last_seen: t,
                                },
                            );
                        }
                    }
                }
                let hold_ms = hold.as_millis() as i64;
                let keep_ms = keep_firing_for.as_millis() as i64;
                let mut out = Vec::new();
                active.retain(|labels, a| {
                    if returned.contains_key(labels) {
                        a.keep_firing_since = None;
                    } else {
                        let mut keep = false;
                        if a.state == AlertState::Firing && keep_ms > 0 {
                            let since = *a.keep_firing_since.get_or_insert(t);
                            keep = t - since < keep_ms;
                        }
                        if a.state == AlertState::Pending {
                            return false;
                        }
                        if a.resolved_at.is_some_and(|r| t - r > RESOLVED_RETENTION_MS) {
                            return false;
                        }
                        if !keep {
                            if a.state != AlertState::Inactive {
                                a.state = AlertState::Inactive;
                                a.resolved_at = Some(t);
                            }
                            return true;
                        }
                    }
                    if a.state == AlertState::Pending && t.saturating_sub(a.active_at) >= hold_ms {
                        a.state = AlertState::Firing;
                        a.fired_at = Some(t);
                    }
                    let mut alerts = a.labels.clone();
                    alerts.insert("__name__".into(), "ALERTS".into());
                    alerts.insert(
                        "alertstate".into(),
                        if a.state == AlertState::Firing { "firing" } else { "pending" }.into(),
                    );
                    out.push(incoming(&alerts, t, 1.0));
                    let mut for_state = a.labels.clone();
                    for_state.insert("__name__".into(), "ALERTS_FOR_STATE".into());
                    out.push(incoming(&for_state, t, a.active_at as f64 / 1000.0));
                    true
                });
                Ok(out)
            }
        }
    }
}

/// After a restart, when an alert was active before it: the time it became active, from
/// the newest `ALERTS_FOR_STATE` of the last hour. Without this every alert with a `for`
/// would go back to pending whenever the collector restarts. Only a time within that hour
/// is believed: the series can be written by anyone who may write samples.
fn restore_active_at(store: &Store, labels: &LabelSet, t: i64) -> Option<i64> {
    use crate::store::head::Matcher;
    let mut matchers = vec![Matcher::Eq("__name__".into(), "ALERTS_FOR_STATE".into())];
    matchers.extend(labels.iter().map(|(k, v)| Matcher::Eq(k.clone(), v.clone())));
    let series = store.select(&matchers, t - 3_600_000, t - 1);
    let exact = series.into_iter().find(|s| s.labels.len() == labels.len() + 1)?;
    let (_, v) = exact.samples.last().filter(|(_, v)| !query::is_stale(*v))?;
    let at = *v * 1000.0;
    (at.is_finite() && at >= (t - 3_600_000) as f64 && at <= t as f64).then_some(at as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::file::RuleFile;

    const MIN: i64 = 60_000;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open(dir.path()).expect("open");
        (dir, store)
    }

    async fn put(store: &Store, name: &str, instance: &str, t: i64, v: f64) {
        let labels = vec![("__name__".into(), name.into()), ("instance".into(), instance.into())];
        store.ingest(vec![(labels, vec![(t, v)])], None).await.expect("ingest");
    }

    /// `up{instance=…}` with one value a minute from minute 0.
    async fn up_every_minute(store: &Store, instance: &str, values: &[f64]) {
        for (m, v) in (0..).zip(values) {
            put(store, "up", instance, m * MIN, *v).await;
        }
    }

    fn group(yaml: &str) -> GroupRunner {
        let file = RuleFile::parse(yaml).expect("rules");
        GroupRunner::new(&file.groups[0], "test.yml", Duration::from_secs(60), Arc::new(LabelSet::new()))
    }

    fn value_at(store: &Store, q: &str, t: i64) -> Vec<(Vec<(String, String)>, f64)> {
        match query::instant_query(store, q, t).expect("query") {
            Value::Vector(v) => v
                .into_iter()
                .map(|s| (s.labels.into_iter().map(|(n, v)| (n.into(), v.into())).collect(), s.value))
                .collect(),
            other => panic!("not a vector: {other:?}"),
        }
    }

    fn states(g: &GroupRunner) -> Vec<(String, AlertState)> {
        g.rules.iter().flat_map(Rule::alerts).map(|a| (a.labels["instance"].clone(), a.state)).collect()
    }

    #[tokio::test]
    async fn pending_then_firing_then_resolved() {
        let (_dir, store) = store().await;
        let mut g = group(
            "groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 2m\n    labels:\n      severity: page\n    annotations:\n      summary: '{{ $labels.instance }} down, value {{ $value }}'\n",
        );
        // up is 0 for a at minutes 0..=3, then 1; b is always 1.
        up_every_minute(&store, "a", &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]).await;
        up_every_minute(&store, "b", &[1.0; 7]).await;
        g.eval_at(&store, 0, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Pending)]);
        let a = &g.rules[0].alerts()[0];
        assert_eq!(a.labels.get("severity").map(String::as_str), Some("page"));
        assert_eq!(a.labels.get("alertname").map(String::as_str), Some("Down"));
        assert_eq!(a.annotations["summary"], "a down, value 0");
        assert_eq!(a.active_at, 0);
        g.eval_at(&store, MIN, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Pending)], "1m of 2m");
        g.eval_at(&store, 2 * MIN, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Firing)], "held for 2m");
        assert_eq!(g.rules[0].alerts()[0].fired_at, Some(2 * MIN));
        // ALERTS and ALERTS_FOR_STATE were written at each evaluation.
        let alerts = value_at(&store, "ALERTS", 2 * MIN);
        assert_eq!(alerts.len(), 1);
        assert!(alerts[0].0.contains(&("alertstate".into(), "firing".into())));
        assert_eq!(value_at(&store, "ALERTS{alertstate=\"pending\"}", MIN).len(), 1);
        assert_eq!(value_at(&store, "ALERTS_FOR_STATE", 2 * MIN)[0].1, 0.0);
        g.eval_at(&store, 3 * MIN, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Firing)]);
        g.eval_at(&store, 4 * MIN, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Inactive)], "resolved when no longer returned");
        assert_eq!(g.rules[0].alerts()[0].resolved_at, Some(4 * MIN));
        assert!(value_at(&store, "ALERTS", 4 * MIN).is_empty(), "a stale marker ends the ALERTS series");
        // Kept as resolved for 15 minutes, then dropped.
        g.eval_at(&store, 4 * MIN + RESOLVED_RETENTION_MS, None).await;
        assert_eq!(states(&g).len(), 1);
        g.eval_at(&store, 5 * MIN + RESOLVED_RETENTION_MS, None).await;
        assert!(states(&g).is_empty());
        assert_eq!(g.rules[0].status.health, Health::Ok);
    }

    #[tokio::test]
    async fn pending_alert_that_goes_away_is_dropped_and_starts_over() {
        let (_dir, store) = store().await;
        let mut g = group("groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 2m\n");
        up_every_minute(&store, "a", &[0.0, 1.0, 0.0, 0.0, 0.0]).await;
        g.eval_at(&store, 0, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Pending)]);
        g.eval_at(&store, MIN, None).await;
        assert!(states(&g).is_empty(), "a pending alert is forgotten, never resolved");
        g.eval_at(&store, 2 * MIN, None).await;
        g.eval_at(&store, 3 * MIN, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Pending)], "active since 2m, not since 0");
        g.eval_at(&store, 4 * MIN, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Firing)]);
    }

    #[tokio::test]
    async fn keep_firing_for_holds_a_flapping_alert() {
        let (_dir, store) = store().await;
        let mut g =
            group("groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    keep_firing_for: 2m\n");
        up_every_minute(&store, "a", &[0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]).await;
        g.eval_at(&store, 0, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Firing)], "no `for`: fires at once");
        g.eval_at(&store, MIN, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Firing)], "kept firing: 0 of 2m");
        g.eval_at(&store, 2 * MIN, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Firing)], "kept firing: 1m of 2m");
        assert_eq!(value_at(&store, "ALERTS", 2 * MIN).len(), 1, "ALERTS still written while kept");
        g.eval_at(&store, 3 * MIN, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Firing)], "returned again: the hold restarts");
        g.eval_at(&store, 4 * MIN, None).await;
        g.eval_at(&store, 5 * MIN, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Firing)]);
        g.eval_at(&store, 6 * MIN, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Inactive)], "2m without it: resolved");
    }

    #[tokio::test]
    async fn recording_rules_write_back_and_mark_stale() {
        let (_dir, store) = store().await;
        let mut g = group(
            "groups:\n- name: g\n  rules:\n  - record: instance:up:double\n    expr: up * 2\n    labels:\n      team: shop\n  - record: total:up:double\n    expr: sum(instance:up:double)\n",
        );
        up_every_minute(&store, "a", &[1.0; 7]).await;
        put(&store, "up", "b", 0, 1.0).await;
        g.eval_at(&store, 0, None).await;
        let mut rows = value_at(&store, "instance:up:double", 0);
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].0,
            vec![
                ("__name__".to_string(), "instance:up:double".to_string()),
                ("instance".into(), "a".into()),
                ("team".into(), "shop".into())
            ]
        );
        assert_eq!(rows[0].1, 2.0);
        // The second rule saw what the first wrote at the same instant.
        assert_eq!(value_at(&store, "total:up:double", 0)[0].1, 4.0);
        // At 6 min, b's only sample is out of the 5-minute lookback: its recorded series
        // gets a stale marker, while a's goes on.
        g.eval_at(&store, 6 * MIN, None).await;
        assert!(value_at(&store, "instance:up:double{instance=\"b\"}", 6 * MIN).is_empty());
        assert_eq!(value_at(&store, "instance:up:double", 6 * MIN).len(), 1);
        assert_eq!(value_at(&store, "total:up:double", 6 * MIN)[0].1, 2.0);
        assert_eq!(
            value_at(&store, "instance:up:double{instance=\"b\"}", 5 * MIN).len(),
            1,
            "before the marker it was there"
        );
    }

    #[tokio::test]
    async fn scalar_results_limits_and_errors() {
        let (_dir, store) = store().await;
        let mut g = group(
            "groups:\n- name: g\n  limit: 1\n  rules:\n  - record: answer\n    expr: '42'\n  - record: many\n    expr: up\n  - alert: Fails\n    expr: 'label_replace(up, \"instance\", \"x\", \"instance\", \".*\")'\n",
        );
        put(&store, "up", "a", 0, 1.0).await;
        put(&store, "up", "b", 0, 1.0).await;
        g.eval_at(&store, 0, None).await;
        assert_eq!(value_at(&store, "answer", 0)[0].1, 42.0);
        assert_eq!(g.rules[0].status.health, Health::Ok);
        assert_eq!(g.rules[1].status.health, Health::Err);
        assert!(
            g.rules[1].status.last_error.as_deref().is_some_and(|e| e.contains("limit of 1")),
            "{:?}",
            g.rules[1].status
        );
        assert!(value_at(&store, "many", 0).is_empty(), "nothing written over the limit");
        assert_eq!(g.rules[2].status.health, Health::Err);
        assert!(
            g.rules[2].status.last_error.as_deref().is_some_and(|e| e.contains("same labelset")),
            "{:?}",
            g.rules[2].status
        );
    }

    #[tokio::test]
    async fn firing_state_survives_a_restart() {
        let (_dir, store) = store().await;
        let yaml = "groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 3m\n";
        up_every_minute(&store, "a", &[0.0; 6]).await;
        let mut g = group(yaml);
        g.eval_at(&store, 0, None).await;
        g.eval_at(&store, MIN, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Pending)]);
        // A new runner (the collector restarted) finds the alert active since 0.
        let mut g = group(yaml);
        g.eval_at(&store, 3 * MIN, None).await;
        assert_eq!(states(&g), [("a".into(), AlertState::Firing)]);
        assert_eq!(g.rules[0].alerts()[0].active_at, 0);
    }

    #[tokio::test]
    async fn a_failed_evaluation_leaves_alerts_as_they_were() {
        let (_dir, store) = store().await;
        let mut g = group(
            "groups:\n- name: g\n  rules:\n  - alert: Dup\n    expr: 'label_replace(up, \"instance\", \"x\", \"instance\", \".*\")'\n",
        );
        put(&store, "up", "a", 0, 1.0).await;
        g.eval_at(&store, 0, None).await;
        assert_eq!(g.rules[0].alerts()[0].state, AlertState::Firing);
        // A second series makes the result ambiguous: the evaluation fails.
        put(&store, "up", "b", MIN, 1.0).await;
        g.eval_at(&store, MIN, None).await;
        assert_eq!(g.rules[0].status.health, Health::Err);
        assert_eq!(g.rules[0].alerts()[0].state, AlertState::Firing, "kept as it was");
        assert_eq!(value_at(&store, "ALERTS", MIN).len(), 1, "no stale marker for a rule that failed");
    }

    #[tokio::test]
    async fn a_forged_active_since_is_not_restored() {
        let (_dir, store) = store().await;
        let yaml = "groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 3m\n";
        put(&store, "up", "a", 100 * MIN, 0.0).await;
        for (i, forged) in [-1e300, 0.0, f64::INFINITY].into_iter().enumerate() {
            let labels = vec![
                ("__name__".to_string(), "ALERTS_FOR_STATE".to_string()),
                ("alertname".into(), "Down".into()),
                ("instance".into(), "a".into()),
            ];
            let outcome = store.ingest(vec![(labels, vec![(100 * MIN - 10 + i as i64, forged)])], None).await;
            assert_eq!(outcome.map(|o| o.samples_stored).ok(), Some(1));
            let mut g = group(yaml);
            g.eval_at(&store, 100 * MIN, None).await;
            assert_eq!(states(&g), [("a".into(), AlertState::Pending)], "{forged}");
            assert_eq!(g.rules[0].alerts()[0].active_at, 100 * MIN);
        }
    }
}
