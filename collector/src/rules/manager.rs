//! Running rule groups on their intervals and publishing what they found: to the API
//! (`/api/v1/rules`, `/api/v1/alerts`) and to whoever notifies.
//!
//! Each group runs in its own task and owns its state; after every evaluation it replaces
//! its snapshot in a shared [`RulesView`] and sends its alerts on a channel. Nothing reads
//! a group's state while it evaluates.

use hale_core::time::now_ms;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hale_core::api::{ActiveAlert, AlertState as ApiAlertState};
use serde_json::{Value, json};

use super::eval::{Alert, AlertState, GroupRunner, Health, LabelSet, Rule, RuleKind, RuleStatus};
use super::file::RuleFile;
use crate::store::Store;
use hale_core::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    // The causes are part of the message (not `source`), so they are printed once.
    #[error("reading rule file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("rule file {path}: {error}; check it with `hale rules check {path}`")]
    Invalid { path: PathBuf, error: ConfigError },
}

/// Reads rule files into runnable groups.
pub fn load(
    paths: &[PathBuf],
    default_interval: Duration,
    external_labels: &LabelSet,
) -> Result<Vec<GroupRunner>, LoadError> {
    let external = Arc::new(external_labels.clone());
    let mut groups = Vec::new();
    for path in paths {
        let source = std::fs::read_to_string(path).map_err(|error| LoadError::Read { path: path.clone(), error })?;
        groups.extend(parse_groups(&source, path, default_interval, &external)?);
    }
    Ok(groups)
}

/// Groups of one file's text (`path` names it in errors and in the API).
pub fn parse_groups(
    source: &str,
    path: &Path,
    default_interval: Duration,
    external: &Arc<LabelSet>,
) -> Result<Vec<GroupRunner>, LoadError> {
    let file = RuleFile::parse(source).map_err(|error| LoadError::Invalid { path: path.to_path_buf(), error })?;
    let name = path.display().to_string();
    Ok(file.groups.iter().map(|g| GroupRunner::new(g, &name, default_interval, external.clone())).collect())
}

/// One group's alerts after an evaluation, for notifiers.
#[derive(Debug, Clone)]
pub struct AlertsUpdate {
    pub group: String,
    pub file: String,
    pub alerts: Vec<Alert>,
    /// When the group evaluated (ms).
    pub at: i64,
    /// The group's interval: notifiers derive how long an alert stays valid from it.
    pub interval: Duration,
}

/// One group as the API shows it: (name, its `/api/v1/rules` entry, its active alerts).
type GroupSnapshot = (String, Value, Vec<ActiveAlert>);

/// The latest snapshot of every group, in file order, as the API shows it.
#[derive(Clone, Default)]
pub struct RulesView {
    groups: Arc<RwLock<Vec<GroupSnapshot>>>,
}

impl RulesView {
    fn publish(&self, index: usize, key: String, group: Value, alerts: Vec<ActiveAlert>) {
        let mut groups = self.groups.write().unwrap_or_else(|p| p.into_inner());
        if groups.len() <= index {
            groups.resize_with(index + 1, || (String::new(), Value::Null, Vec::new()));
        }
        groups[index] = (key, group, alerts);
    }

    /// `/api/v1/rules` data; `kind` "alert" or "record" keeps that type only.
    pub fn rules_json(&self, kind: Option<&str>) -> Value {
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        let list: Vec<Value> = groups
            .iter()
            .filter(|g| !g.1.is_null())
            .map(|(_, g, _)| {
                let mut g = g.clone();
                if let (Some(kind), Some(rules)) = (kind, g.get_mut("rules").and_then(Value::as_array_mut)) {
                    let want = if kind == "alert" { "alerting" } else { "recording" };
                    rules.retain(|r| r["type"] == want);
                }
                g
            })
            .collect();
        json!({ "groups": list })
    }

    /// Every pending and firing alert, for `/api/v1/alerts`.
    pub fn alerts(&self) -> Vec<ActiveAlert> {
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        groups.iter().flat_map(|g| g.2.iter().cloned()).collect()
    }

    /// Rule evaluation on `/metrics`: per group its last duration and failing rules, and
    /// the alerts pending and firing.
    pub fn families(&self) -> Vec<hale_core::metrics::Family> {
        use hale_core::metrics::{Family, MetricKind};
        let mut duration = Family::new(
            "hale_collector_rule_group_last_duration_seconds",
            "How long the group's last evaluation took.",
            MetricKind::Gauge,
        );
        let mut failing = Family::new(
            "hale_collector_rule_group_rules_failing",
            "Rules of the group whose last evaluation failed (see /api/v1/rules for why).",
            MetricKind::Gauge,
        );
        let mut alerts = Family::new("hale_collector_alerts", "Alerts by state.", MetricKind::Gauge);
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        let (mut pending, mut firing) = (0, 0);
        for (name, group, active) in groups.iter() {
            if group.is_null() {
                continue;
            }
            let labels = [("group", name.as_str()), ("file", group["file"].as_str().unwrap_or(""))];
            duration.push(&labels, group["evaluationTime"].as_f64().unwrap_or(0.0));
            let bad = group["rules"].as_array().map_or(0, |r| r.iter().filter(|r| r["health"] == "err").count());
            failing.push(&labels, bad as f64);
            pending += active.iter().filter(|a| a.state == ApiAlertState::Pending).count();
            firing += active.iter().filter(|a| a.state == ApiAlertState::Firing).count();
        }
        alerts.push(&[("state", "pending")], pending as f64);
        alerts.push(&[("state", "firing")], firing as f64);
        vec![duration, failing, alerts]
    }

    /// Snapshots published by a group before it first evaluates, so the API lists it.
    pub fn register(&self, groups: &[GroupRunner]) {
        for (i, g) in groups.iter().enumerate() {
            self.publish(i, g.name.clone(), group_json(g), Vec::new());
        }
    }
}

/// Runs every group until the process stops: one task each, first evaluation at once.
pub fn spawn<S: AsRef<Store> + Send + Sync + 'static>(
    groups: Vec<GroupRunner>,
    store: Arc<S>,
    view: RulesView,
    updates: Option<tokio::sync::mpsc::Sender<AlertsUpdate>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    view.register(&groups);
    groups
        .into_iter()
        .enumerate()
        .map(|(index, mut group)| {
            let (store, view, updates) = (store.clone(), view.clone(), updates.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(group.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    let now = now_ms();
                    group.eval_at((*store).as_ref(), now).await;
                    let alerts = active_alerts(&group);
                    view.publish(index, group.name.clone(), group_json(&group), alerts);
                    if let Some(tx) = &updates {
                        let update = AlertsUpdate {
                            group: group.name.clone(),
                            file: group.file.clone(),
                            alerts: group.rules.iter().flat_map(Rule::alerts).collect(),
                            at: now,
                            interval: group.interval,
                        };
                        if tx.send(update).await.is_err() {
                            tracing::warn!(group = %group.name, "the notifier has stopped; alerts are not sent");
                        }
                    }
                }
            })
        })
        .collect()
}

/// RFC 3339 with nanoseconds, as Prometheus writes times in its API.
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`: the shortest exponent form (`1e+00`).
pub fn format_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let s = format!("{v:e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

fn active_alert(a: &Alert) -> ActiveAlert {
    ActiveAlert {
        labels: a.labels.clone(),
        annotations: a.annotations.clone(),
        state: match a.state {
            AlertState::Inactive => ApiAlertState::Inactive,
            AlertState::Pending => ApiAlertState::Pending,
            AlertState::Firing => ApiAlertState::Firing,
        },
        active_at: rfc3339(a.active_at),
        value: format_e(a.value),
    }
}

fn active_alerts(g: &GroupRunner) -> Vec<ActiveAlert> {
    g.rules
        .iter()
        .flat_map(Rule::alerts)
        .filter(|a| a.state != AlertState::Inactive)
        .map(|a| active_alert(&a))
        .collect()
}

fn status_json(s: &RuleStatus) -> Value {
    json!({
        "health": s.health,
        "lastError": s.last_error.clone().unwrap_or_default(),
        "evaluationTime": s.evaluation_seconds,
        "lastEvaluation": s.last_evaluation.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339),
    })
}

fn rule_json(r: &Rule) -> Value {
    let labels: LabelSet = r.labels.iter().map(|(k, v)| (k.clone(), v.text.clone())).collect();
    let mut out = match &r.kind {
        RuleKind::Recording => json!({ "name": r.name, "query": r.query, "labels": labels, "type": "recording" }),
        RuleKind::Alerting { hold, keep_firing_for, annotations, .. } => {
            let alerts: Vec<Alert> = r.alerts().into_iter().filter(|a| a.state != AlertState::Inactive).collect();
            let state = if alerts.iter().any(|a| a.state == AlertState::Firing) {
                "firing"
            } else if alerts.is_empty() {
                "inactive"
            } else {
                "pending"
            };
            let notes: LabelSet = annotations.iter().map(|(k, v)| (k.clone(), v.text.clone())).collect();
            json!({
                "state": state,
                "name": r.name,
                "query": r.query,
                "duration": hold.as_secs_f64(),
                "keepFiringFor": keep_firing_for.as_secs_f64(),
                "labels": labels,
                "annotations": notes,
                "alerts": alerts.iter().map(active_alert).collect::<Vec<_>>(),
                "type": "alerting",
            })
        }
    };
    if let (Some(o), Value::Object(s)) = (out.as_object_mut(), status_json(&r.status)) {
        o.extend(s);
    }
    out
}

fn group_json(g: &GroupRunner) -> Value {
    json!({
        "name": g.name,
        "file": g.file,
        "rules": g.rules.iter().map(rule_json).collect::<Vec<_>>(),
        "interval": g.interval.as_secs_f64(),
        "limit": g.limit,
        "evaluationTime": g.evaluation_seconds,
        "lastEvaluation": g.last_evaluation.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339),
    })
}

/// Whether every rule of every group is healthy (for `/-/ready`-style checks and tests).
pub fn all_healthy(groups: &[GroupRunner]) -> bool {
    groups.iter().all(|g| g.rules.iter().all(|r| r.status.health != Health::Err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_values_and_times_as_prometheus() {
        assert_eq!(format_e(1.0), "1e+00");
        assert_eq!(format_e(0.5), "5e-01");
        assert_eq!(format_e(123.0), "1.23e+02");
        assert_eq!(format_e(-2.5e-7), "-2.5e-07");
        assert_eq!(format_e(f64::INFINITY), "+Inf");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.500000000Z");
    }
}
