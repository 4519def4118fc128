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

use tracing::Instrument;

use std::sync::atomic::AtomicU64;

use hale_core::api::{
    ActiveAlert, AlertingRule, NEVER_EVALUATED, Rule as ApiRule, RuleGroup, RuleKind as ApiRuleKind, RulesData,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::eval::{Alert, AlertState, GroupRunner, Health, LabelSet, Rule, RuleKind};
use super::file::{RuleFile, TemplateText};
use crate::store::Store;
use hale_core::ConfigError;

/// The files the collector reads rules from: rule files, and SLO specs (which become rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Rule,
    Slo,
}

impl FileKind {
    /// The `hale … check` command that checks such a file.
    fn command(self) -> &'static str {
        match self {
            FileKind::Rule => "rules",
            FileKind::Slo => "slo",
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::Rule => "rule",
            FileKind::Slo => "SLO",
        })
    }
}

/// A rule file or SLO spec that could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    // The causes are part of the message (not `source`), so they are printed once.
    #[error("reading {kind} file {path}: {error}")]
    Read { kind: FileKind, path: PathBuf, error: std::io::Error },
    #[error("{kind} file {path}: {error}; check it with `hale {command} check {path}`", command = kind.command())]
    Invalid { kind: FileKind, path: PathBuf, error: ConfigError },
}

impl LoadError {
    /// The file's text, or the error that says which file could not be read.
    pub fn read(kind: FileKind, path: &Path) -> Result<String, LoadError> {
        std::fs::read_to_string(path).map_err(|error| LoadError::Read { kind, path: path.to_path_buf(), error })
    }
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
        let source = LoadError::read(FileKind::Rule, path)?;
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
    let file = RuleFile::parse(source).map_err(|error| LoadError::Invalid {
        kind: FileKind::Rule,
        path: path.to_path_buf(),
        error,
    })?;
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

/// The latest snapshot of every group, in file order, as the API shows it.
#[derive(Clone, Default)]
pub struct RulesView {
    /// `None` for a group that has published nothing yet.
    groups: Arc<RwLock<Vec<Option<RuleGroup>>>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
    file: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

impl RulesView {
    fn publish(&self, index: usize, group: RuleGroup) {
        let mut groups = self.groups.write().unwrap_or_else(|p| p.into_inner());
        if groups.len() <= index {
            groups.resize_with(index + 1, || None);
        }
        groups[index] = Some(group);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<RuleGroup>>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner())
    }

    /// `/api/v1/rules` data, with the rules `keep` keeps.
    pub fn rules(&self, keep: impl Fn(&ApiRule) -> bool) -> RulesData {
        let groups = self.read();
        let groups = groups
            .iter()
            .flatten()
            .map(|g| RuleGroup { rules: g.rules.iter().filter(|r| keep(r)).cloned().collect(), ..g.clone() })
            .collect();
        RulesData { groups }
    }

    /// Every pending and firing alert, for `/api/v1/alerts`.
    pub fn alerts(&self) -> Vec<ActiveAlert> {
        self.read().iter().flatten().flat_map(group_alerts).cloned().collect()
    }

    /// Rule evaluation on `/metrics` (`registry` is the collector's): per group its last
    /// duration and failing rules, and the alerts pending and firing.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let duration = Family::<GroupLabels, Gauge<f64, AtomicU64>>::default();
        let failing = Family::<GroupLabels, Gauge>::default();
        let alerts = Family::<StateLabels, Gauge>::default();
        let (mut pending, mut firing) = (0, 0);
        for group in self.read().iter().flatten() {
            let labels = GroupLabels { group: group.name.clone(), file: group.file.clone() };
            duration.get_or_create(&labels).set(group.evaluation_time);
            let bad = group.rules.iter().filter(|r| r.health == Health::Err).count();
            failing.get_or_create(&labels).set(bad as i64);
            for alert in group_alerts(group) {
                match alert.state {
                    AlertState::Pending => pending += 1,
                    AlertState::Firing => firing += 1,
                    AlertState::Inactive => {}
                }
            }
        }
        alerts.get_or_create(&StateLabels { state: "pending" }).set(pending);
        alerts.get_or_create(&StateLabels { state: "firing" }).set(firing);
        registry.register_with_unit(
            "rule_group_last_duration",
            "How long the group's last evaluation took",
            Unit::Seconds,
            duration,
        );
        registry.register(
            "rule_group_rules_failing",
            "Rules of the group whose last evaluation failed (see /api/v1/rules for why)",
            failing,
        );
        registry.register("alerts", "Alerts by state", alerts);
    }

    /// Snapshots published by a group before it first evaluates, so the API lists it.
    pub fn register(&self, groups: &[GroupRunner]) {
        for (i, g) in groups.iter().enumerate() {
            self.publish(i, api_group(g));
        }
    }
}

/// The pending and firing alerts of a group's alerting rules.
fn group_alerts(group: &RuleGroup) -> impl Iterator<Item = &ActiveAlert> {
    group.rules.iter().flat_map(|r| match &r.kind {
        ApiRuleKind::Alerting(a) => a.alerts.as_slice(),
        ApiRuleKind::Recording => &[],
    })
}

/// Runs every group until the process stops: one task each, first evaluation at once.
pub fn spawn<S: AsRef<Store> + Send + Sync + 'static>(
    groups: Vec<GroupRunner>,
    store: Arc<S>,
    view: RulesView,
    updates: Option<tokio::sync::mpsc::Sender<AlertsUpdate>>,
    remote: Option<crate::remote::RemoteQuery>,
) -> Vec<tokio::task::JoinHandle<()>> {
    view.register(&groups);
    groups
        .into_iter()
        .enumerate()
        .map(|(index, mut group)| {
            let (store, view, updates, remote) = (store.clone(), view.clone(), updates.clone(), remote.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(group.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    let now = now_ms();
                    // Each evaluation is a trace of its own.
                    let span = tracing::info_span!(
                        parent: None,
                        "rule group",
                        otel.name = %format_args!("evaluate {}", group.name),
                        hale.rule_group = %group.name,
                        hale.rules = group.rules.len(),
                        hale.alerts_firing = tracing::field::Empty,
                    );
                    group.eval_at((*store).as_ref(), now, remote.as_ref()).instrument(span.clone()).await;
                    let firing = group.rules.iter().flat_map(Rule::alerts).filter(|a| a.state == AlertState::Firing);
                    span.record("hale.alerts_firing", firing.count());
                    view.publish(index, api_group(&group));
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
        state: a.state,
        active_at: rfc3339(a.active_at),
        value: format_e(a.value),
    }
}

/// When it last ran, as the API says it.
fn last_evaluation(at: Option<i64>) -> String {
    at.map_or_else(|| NEVER_EVALUATED.to_string(), rfc3339)
}

fn api_rule(r: &Rule) -> ApiRule {
    let texts = |m: &[(String, TemplateText)]| m.iter().map(|(k, v)| (k.clone(), v.text.clone())).collect();
    let kind = match &r.kind {
        RuleKind::Recording => ApiRuleKind::Recording,
        RuleKind::Alerting { hold, keep_firing_for, annotations, .. } => {
            let alerts: Vec<Alert> = r.alerts().into_iter().filter(|a| a.state != AlertState::Inactive).collect();
            let state = if alerts.iter().any(|a| a.state == AlertState::Firing) {
                AlertState::Firing
            } else if alerts.is_empty() {
                AlertState::Inactive
            } else {
                AlertState::Pending
            };
            ApiRuleKind::Alerting(AlertingRule {
                state,
                duration: hold.as_secs_f64(),
                keep_firing_for: keep_firing_for.as_secs_f64(),
                annotations: texts(annotations),
                alerts: alerts.iter().map(active_alert).collect(),
            })
        }
    };
    ApiRule {
        name: r.name.clone(),
        query: r.query.clone(),
        labels: texts(&r.labels),
        kind,
        health: r.status.health,
        last_error: r.status.last_error.clone().unwrap_or_default(),
        evaluation_time: r.status.evaluation_seconds,
        last_evaluation: last_evaluation(r.status.last_evaluation),
    }
}

fn api_group(g: &GroupRunner) -> RuleGroup {
    RuleGroup {
        name: g.name.clone(),
        file: g.file.clone(),
        rules: g.rules.iter().map(api_rule).collect(),
        interval: g.interval.as_secs_f64(),
        limit: g.limit as u64,
        evaluation_time: g.evaluation_seconds,
        last_evaluation: last_evaluation(g.last_evaluation),
    }
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
