//! Grouping alerts into notifications, with Alertmanager's timing: a new group waits
//! `group_wait` so alerts that start together go out together; after that a group is
//! looked at every `group_interval` and notified when it has a firing alert not yet
//! notified — an occurrence, labels and start: one that resolved and fired again between
//! two looks is new — or (with `send_resolved`) a notified alert that resolved; unchanged,
//! it is notified again every `repeat_interval` while anything fires.
//!
//! Pure state and explicit times: the caller feeds rule-group updates and asks what is due.
//! Silences are applied when a group is flushed, not when alerts arrive, so a silence
//! added during `group_wait` still holds. The state lives in memory only: after a restart
//! firing alerts are notified again (as Alertmanager does without its notification log),
//! and an alert that resolved while the collector was down is not notified as resolved.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use super::payload::{NotifyAlert, fingerprint};
use crate::rules::{AlertState, AlertsUpdate, LabelSet};

/// How alerts are grouped and how often groups are notified.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Labels that split alerts into groups; `["..."]` groups by every label (one alert
    /// a group); empty puts every alert in one group.
    pub group_by: Vec<String>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub send_resolved: bool,
}

impl Default for Route {
    fn default() -> Self {
        Route {
            group_by: vec!["alertname".into()],
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            send_resolved: true,
        }
    }
}

/// One notification: a group's labels and the alerts to tell about.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub group_labels: LabelSet,
    pub alerts: Vec<NotifyAlert>,
}

struct Group {
    labels: LabelSet,
    members: HashSet<u64>,
    next_flush: i64,
    last_sent: Option<i64>,
    /// Firing alerts the last notification told about, with the start of the occurrence
    /// it told: an alert that resolved and fired again since is a new occurrence.
    notified_firing: HashMap<u64, i64>,
}

pub struct Dispatcher {
    route: Route,
    alerts: HashMap<u64, NotifyAlert>,
    /// Fingerprints each rule group reported last time (`file/group`).
    by_rule_group: HashMap<String, HashSet<u64>>,
    groups: BTreeMap<String, Group>,
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

impl Dispatcher {
    pub fn new(route: Route) -> Self {
        Dispatcher { route, alerts: HashMap::new(), by_rule_group: HashMap::new(), groups: BTreeMap::new() }
    }

    fn group_labels(&self, labels: &LabelSet) -> LabelSet {
        if self.route.group_by.iter().any(|g| g == "...") {
            return labels.clone();
        }
        self.route.group_by.iter().filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone()))).collect()
    }

    /// Takes a rule group's alerts after an evaluation at `now`. Pending alerts are not
    /// notified; an alert that disappears from its rule group without resolving first
    /// (its rule was removed, or its resolved retention ended) counts as resolved now.
    pub fn update(&mut self, update: &AlertsUpdate, now: i64) {
        let key = format!("{}/{}", update.file, update.group);
        let mut seen = HashSet::new();
        for a in &update.alerts {
            let fp = fingerprint(&a.labels);
            let ends_at = match a.state {
                AlertState::Pending => continue,
                AlertState::Firing => None,
                AlertState::Inactive => Some(a.resolved_at.unwrap_or(now)),
            };
            seen.insert(fp);
            let known = self.alerts.contains_key(&fp);
            if !known && ends_at.is_some() {
                continue; // resolved before it was ever seen firing: nothing to tell
            }
            self.alerts.insert(
                fp,
                NotifyAlert {
                    labels: a.labels.clone(),
                    annotations: a.annotations.clone(),
                    starts_at: a.active_at,
                    ends_at,
                    fingerprint: fp,
                },
            );
            let labels = self.group_labels(&a.labels);
            let gkey = super::payload::group_key(&labels);
            let wait = ms(self.route.group_wait);
            let group = self.groups.entry(gkey).or_insert_with(|| Group {
                labels,
                members: HashSet::new(),
                next_flush: now + wait,
                last_sent: None,
                notified_firing: HashMap::new(),
            });
            group.members.insert(fp);
        }
        let gone: Vec<u64> =
            self.by_rule_group.get(&key).map(|old| old.difference(&seen).copied().collect()).unwrap_or_default();
        for fp in gone {
            if let Some(a) = self.alerts.get_mut(&fp) {
                a.ends_at.get_or_insert(now);
            }
        }
        self.by_rule_group.insert(key, seen);
    }

    /// The notifications due at `now`. `silenced` tells which alerts not to notify.
    pub fn due(&mut self, now: i64, silenced: &dyn Fn(&LabelSet) -> bool) -> Vec<Notification> {
        let mut out = Vec::new();
        let (interval, repeat, send_resolved) =
            (ms(self.route.group_interval), ms(self.route.repeat_interval), self.route.send_resolved);
        for group in self.groups.values_mut() {
            if group.next_flush > now {
                continue;
            }
            let members: Vec<&NotifyAlert> = group.members.iter().filter_map(|fp| self.alerts.get(fp)).collect();
            let firing: HashMap<u64, i64> = members
                .iter()
                .filter(|a| a.firing() && !silenced(&a.labels))
                .map(|a| (a.fingerprint, a.starts_at))
                .collect();
            let resolved: Vec<u64> = members
                .iter()
                .filter(|a| !a.firing() && group.notified_firing.contains_key(&a.fingerprint))
                .map(|a| a.fingerprint)
                .collect();
            let new_firing = firing.iter().any(|(fp, start)| group.notified_firing.get(fp) != Some(start));
            let newly_resolved = send_resolved && !resolved.is_empty();
            let repeat_due = !firing.is_empty() && group.last_sent.is_some_and(|t| now - t >= repeat);
            if new_firing || newly_resolved || repeat_due {
                let mut alerts: Vec<NotifyAlert> =
                    firing.keys().filter_map(|fp| self.alerts.get(fp).cloned()).collect();
                if send_resolved {
                    alerts.extend(resolved.iter().filter_map(|fp| self.alerts.get(fp).cloned()));
                }
                alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
                out.push(Notification { group_labels: group.labels.clone(), alerts });
                group.last_sent = Some(now);
                group.notified_firing = firing;
            } else if firing.is_empty() {
                // Nothing fires and nothing is left to say: the group has ended.
                group.notified_firing.clear();
            }
            // Resolved alerts have been told about (or need not be): they leave the group.
            let alerts = &self.alerts;
            group.members.retain(|fp| alerts.get(fp).is_some_and(NotifyAlert::firing));
            group.next_flush = now + interval;
        }
        self.groups.retain(|_, g| !g.members.is_empty());
        let live: HashSet<u64> = self.groups.values().flat_map(|g| g.members.iter().copied()).collect();
        self.alerts.retain(|fp, a| a.firing() || live.contains(fp));
        out
    }

    /// When `due` next has something to look at.
    pub fn next_deadline(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_flush).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Alert;

    const S: i64 = 1000;

    fn alert(name: &str, instance: &str, state: AlertState, resolved_at: Option<i64>) -> Alert {
        let labels: LabelSet =
            [("alertname", name), ("instance", instance)].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Alert {
            labels,
            annotations: LabelSet::new(),
            state,
            value: 1.0,
            active_at: 0,
            fired_at: Some(0),
            resolved_at,
            keep_firing_since: None,
            last_seen: 0,
        }
    }

    fn update(alerts: Vec<Alert>) -> AlertsUpdate {
        AlertsUpdate { group: "g".into(), file: "f".into(), alerts, at: 0, interval: Duration::from_secs(1) }
    }

    fn route() -> Route {
        Route {
            group_by: vec!["alertname".into()],
            group_wait: Duration::from_secs(10),
            group_interval: Duration::from_secs(60),
            repeat_interval: Duration::from_secs(600),
            send_resolved: true,
        }
    }

    fn none(_: &LabelSet) -> bool {
        false
    }

    fn instances(n: &Notification) -> Vec<(String, bool)> {
        n.alerts.iter().map(|a| (a.labels["instance"].clone(), a.firing())).collect()
    }

    #[test]
    fn waits_groups_and_repeats() {
        let mut d = Dispatcher::new(route());
        d.update(&update(vec![alert("Down", "a", AlertState::Firing, None)]), 0);
        assert!(d.due(5 * S, &none).is_empty(), "group_wait not over");
        // A second alert of the same name joins the group during the wait.
        d.update(
            &update(vec![alert("Down", "a", AlertState::Firing, None), alert("Down", "b", AlertState::Firing, None)]),
            6 * S,
        );
        let sent = d.due(10 * S, &none);
        assert_eq!(sent.len(), 1);
        assert_eq!(instances(&sent[0]), [("a".into(), true), ("b".into(), true)]);
        assert_eq!(sent[0].group_labels.get("alertname").map(String::as_str), Some("Down"));
        assert_eq!(d.next_deadline(), Some(70 * S));
        assert!(d.due(70 * S, &none).is_empty(), "nothing new at the next interval");
        assert!(d.due(550 * S, &none).is_empty(), "looked at every interval: 10 + 60k s; 540 s since the last");
        let again = d.due(610 * S, &none);
        assert_eq!(again.len(), 1, "repeat_interval passed");
        // A pending alert is never notified; another alert name is another group.
        d.update(
            &update(vec![
                alert("Down", "a", AlertState::Firing, None),
                alert("Down", "b", AlertState::Firing, None),
                alert("Slow", "a", AlertState::Pending, None),
            ]),
            611 * S,
        );
        assert!(d.due(700 * S, &none).is_empty());
    }

    #[test]
    fn a_resolved_alert_is_sent_once_then_forgotten() {
        let mut d = Dispatcher::new(route());
        d.update(
            &update(vec![alert("Down", "a", AlertState::Firing, None), alert("Down", "b", AlertState::Firing, None)]),
            0,
        );
        assert_eq!(d.due(10 * S, &none).len(), 1);
        d.update(
            &update(vec![
                alert("Down", "a", AlertState::Inactive, Some(20 * S)),
                alert("Down", "b", AlertState::Firing, None),
            ]),
            20 * S,
        );
        let sent = d.due(70 * S, &none);
        assert_eq!(instances(&sent[0]), [("a".into(), false), ("b".into(), true)]);
        assert_eq!(sent[0].alerts[0].ends_at, Some(20 * S));
        assert!(d.due(130 * S, &none).is_empty(), "told once");
        // b goes away from its rule group without resolving first: resolved now.
        d.update(&update(vec![]), 140 * S);
        let sent = d.due(190 * S, &none);
        assert_eq!(instances(&sent[0]), [("b".into(), false)]);
        assert_eq!(d.next_deadline(), None, "the group ended");
        // Firing again later starts a new group with a new wait.
        d.update(&update(vec![alert("Down", "a", AlertState::Firing, None)]), 300 * S);
        assert!(d.due(305 * S, &none).is_empty());
        assert_eq!(d.due(310 * S, &none).len(), 1);
    }

    /// Found by tests/fleet.rs: a replica restarted, its alert resolved and fired again
    /// (killed again) between two flushes of its group. Same labels, same fingerprint,
    /// but a new occurrence: the healer dedups on fingerprint and start, and must hear of
    /// it — as it would had the flushes fallen between the two.
    #[test]
    fn an_alert_that_resolves_and_fires_again_between_flushes_is_a_new_occurrence() {
        let mut d = Dispatcher::new(route());
        let mut first = alert("Down", "a", AlertState::Firing, None);
        first.active_at = 0;
        d.update(&update(vec![first.clone()]), 0);
        assert_eq!(d.due(10 * S, &none).len(), 1);
        d.update(&update(vec![alert("Down", "a", AlertState::Inactive, Some(20 * S))]), 20 * S);
        let mut again = alert("Down", "a", AlertState::Firing, None);
        again.active_at = 30 * S;
        d.update(&update(vec![again]), 30 * S);
        let sent = d.due(70 * S, &none);
        assert_eq!(sent.len(), 1, "the new occurrence is told");
        assert_eq!(sent[0].alerts.len(), 1);
        assert_eq!(sent[0].alerts[0].starts_at, 30 * S);
        assert!(sent[0].alerts[0].firing());
        assert!(d.due(130 * S, &none).is_empty(), "and only once");
        // The same occurrence seen again (no new start) stays quiet.
        let mut same = alert("Down", "a", AlertState::Firing, None);
        same.active_at = 30 * S;
        d.update(&update(vec![same]), 140 * S);
        assert!(d.due(190 * S, &none).is_empty());
    }

    #[test]
    fn without_send_resolved_only_new_firing_alerts_notify() {
        let mut d = Dispatcher::new(Route { send_resolved: false, ..route() });
        d.update(&update(vec![alert("Down", "a", AlertState::Firing, None)]), 0);
        assert_eq!(d.due(10 * S, &none).len(), 1);
        d.update(&update(vec![alert("Down", "a", AlertState::Inactive, Some(20 * S))]), 20 * S);
        assert!(d.due(70 * S, &none).is_empty());
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn silenced_alerts_are_left_out() {
        let mut d = Dispatcher::new(route());
        d.update(
            &update(vec![alert("Down", "a", AlertState::Firing, None), alert("Down", "b", AlertState::Firing, None)]),
            0,
        );
        let silence_a = |l: &LabelSet| l.get("instance").is_some_and(|i| i == "a");
        let sent = d.due(10 * S, &silence_a);
        assert_eq!(instances(&sent[0]), [("b".into(), true)]);
        // When the silence ends, a is new to the group: notified at the next interval.
        let sent = d.due(70 * S, &none);
        assert_eq!(instances(&sent[0]), [("a".into(), true), ("b".into(), true)]);
        // Everything silenced: nothing to send, and nothing resolved either.
        let all = |_: &LabelSet| true;
        assert!(d.due(130 * S, &all).is_empty());
    }

    #[test]
    fn grouping_by_everything_and_by_nothing() {
        let two = vec![alert("Down", "a", AlertState::Firing, None), alert("Slow", "b", AlertState::Firing, None)];
        let mut d = Dispatcher::new(Route { group_by: vec!["...".into()], ..route() });
        d.update(&update(two.clone()), 0);
        assert_eq!(d.due(10 * S, &none).len(), 2);
        let mut d = Dispatcher::new(Route { group_by: vec![], ..route() });
        d.update(&update(two), 0);
        let sent = d.due(10 * S, &none);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].alerts.len(), 2);
        assert!(sent[0].group_labels.is_empty());
    }
}
