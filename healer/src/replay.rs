//! `hale healer replay`: what a policy set would have done with recorded alerts, decided
//! in the order they started, with the same matching, duplicate guard, per-target limits
//! and cooldowns the healer applies, in the alerts' own time. Checks that need the live
//! cluster (stale telemetry, blast radius, last ready replica) cannot be replayed and are
//! said to be skipped; every action is assumed to succeed.
//!
//! Input lines may be Alertmanager webhook payloads (`alerts[]`), single alerts
//! (`labels`, `startsAt`), or the healer's own audit records of received alerts.
//!
//! The error-budget gate (`require_burn`) is replayed with the engine's own check
//! against recorded burn rates: the healer's audit `burn` records (it writes one each
//! time it reads a gate's burn), or lines `{"burn": {"slo", "window", "value"}, "time"}`.
//! The newest value of the gate's SLO and window at most [`BURN_FRESH_MS`] before the
//! alert counts; without one the decision is `unknown`, and says the recording cannot
//! tell.

use std::collections::{BTreeMap, HashSet};

use hale_core::api::NotifyStatus;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::policy::{ActionKind, PolicyFile};
use crate::safety::{self, Facts};
use crate::state::{Labels, Target};

/// How old a recorded burn rate may be at an alert's time and still count.
pub const BURN_FRESH_MS: i64 = 5 * 60 * 1000;

/// One replayed alert and what would have happened to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub line: usize,
    pub alertname: String,
    pub target: String,
    pub starts_at: String,
    /// `act`, `dry_run`, `approval`, `refused`, `duplicate`, `no_policy`, or `unknown`
    /// (the recording cannot tell: a budget gate without recorded burn rates).
    pub outcome: &'static str,
    pub policy: Option<String>,
    pub action: Option<ActionKind>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ReplayError {
    pub line: usize,
    pub message: String,
}

/// An alert as every accepted line carries it: an Alertmanager alert
/// ([`hale_core::api::WebhookAlert`], `startsAt`) or the healer's own record of one
/// ([`hale_core::api::ReceivedAlert`], `starts_at`). Labels are required: an alert without
/// them names nothing to act on.
#[derive(Deserialize)]
struct RecordedAlert {
    /// Absent counts as firing; anything else but `firing` is not replayed.
    status: Option<NotifyStatus>,
    labels: Labels,
    #[serde(default, alias = "startsAt")]
    starts_at: String,
    fingerprint: Option<String>,
}

/// Which kind of line it is: a webhook payload has `alerts`, an audit record an `event`,
/// a recorded burn rate `burn`.
#[derive(Deserialize)]
struct Shape {
    alerts: Option<IgnoredAny>,
    event: Option<String>,
    burn: Option<IgnoredAny>,
}

/// A recorded burn rate of one SLO over one window.
#[derive(Deserialize)]
struct Burn {
    slo: String,
    window: String,
    value: f64,
}

/// An audit `burn` record, or a `{"burn": {...}, "time": ...}` line.
#[derive(Deserialize)]
struct BurnLine {
    #[serde(flatten)]
    inline: Option<BurnFields>,
    burn: Option<Burn>,
    time: String,
}

#[derive(Deserialize)]
struct BurnFields {
    slo: String,
    window: String,
    value: f64,
}

/// Recorded burn rates by (SLO, window): (time, value), in time order.
type Burns = BTreeMap<(String, String), Vec<(i64, f64)>>;

/// A webhook payload ([`hale_core::api::WebhookPayload`]), as far as replay reads it.
#[derive(Deserialize)]
struct Payload {
    alerts: Vec<RecordedAlert>,
}

/// The healer's audit record of a received alert.
#[derive(Deserialize)]
struct Received {
    alert: RecordedAlert,
}

struct Recorded {
    line: usize,
    labels: Labels,
    starts_at: String,
    at_ms: i64,
    fingerprint: String,
}

fn parse_time(text: &str) -> Option<i64> {
    hale_core::time::parse_rfc3339(text)
}

/// The firing alerts of one line; a recorded burn rate goes into `burns`.
fn alerts_of(line: usize, text: &str, burns: &mut Burns) -> Result<Vec<Recorded>, ReplayError> {
    let error = |message: String| ReplayError { line, message };
    let parse = |what: &str| {
        let what = what.to_string();
        move |e: serde_json::Error| error(format!("not {what}: {e}"))
    };
    let shape: Shape = serde_json::from_str(text).map_err(parse("a JSON object"))?;
    if shape.burn.is_some() || shape.event.as_deref() == Some("burn") {
        let b: BurnLine = serde_json::from_str(text).map_err(parse("a recorded burn rate"))?;
        let (slo, window, value) = match (b.burn, b.inline) {
            (Some(b), _) => (b.slo, b.window, b.value),
            (None, Some(f)) => (f.slo, f.window, f.value),
            (None, None) => return Err(error("a recorded burn rate needs slo, window and value".into())),
        };
        let at = parse_time(&b.time).ok_or_else(|| error(format!("time {:?} is not an RFC 3339 time", b.time)))?;
        burns.entry((slo, window)).or_default().push((at, value));
        return Ok(Vec::new());
    }
    let alerts = match (shape.alerts, shape.event.as_deref()) {
        (Some(_), _) => serde_json::from_str::<Payload>(text).map_err(parse("an Alertmanager webhook payload"))?.alerts,
        (None, Some("received")) => {
            vec![serde_json::from_str::<Received>(text).map_err(parse("an audit record of a received alert"))?.alert]
        }
        (None, Some(_)) => Vec::new(), // other audit records
        (None, None) => vec![serde_json::from_str::<RecordedAlert>(text).map_err(parse("an alert"))?],
    };
    let mut out = Vec::new();
    for a in alerts {
        if a.status.is_some_and(|s| s != NotifyStatus::Firing) {
            continue;
        }
        let at_ms = parse_time(&a.starts_at)
            .ok_or_else(|| error(format!("startsAt {:?} is not an RFC 3339 time", a.starts_at)))?;
        let fingerprint = a.fingerprint.unwrap_or_else(|| format!("{:?}", a.labels));
        out.push(Recorded { line, labels: a.labels, starts_at: a.starts_at, at_ms, fingerprint });
    }
    Ok(out)
}

/// Replays `text` (JSON lines) against `policies`.
pub fn replay(policies: &PolicyFile, text: &str) -> Result<Vec<Decision>, ReplayError> {
    let mut alerts = Vec::new();
    let mut burns = Burns::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        alerts.extend(alerts_of(i + 1, l, &mut burns)?);
    }
    for values in burns.values_mut() {
        values.sort_by_key(|(t, _)| *t);
    }
    alerts.sort_by_key(|a| (a.at_ms, a.line));
    let mut seen = HashSet::new();
    let mut history: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut by_service: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut out = Vec::new();
    for a in alerts {
        let target = Target::from_labels(&a.labels);
        let key = target.key();
        let mut d = Decision {
            line: a.line,
            alertname: a.labels.get("alertname").cloned().unwrap_or_default(),
            target: key.clone(),
            starts_at: a.starts_at.clone(),
            outcome: "no_policy",
            policy: None,
            action: None,
            reason: String::new(),
        };
        if !seen.insert(format!("{}@{}", a.fingerprint, a.starts_at)) {
            d.outcome = "duplicate";
            out.push(d);
            continue;
        }
        let Some(policy) = policies.matching(&a.labels) else {
            out.push(d);
            continue;
        };
        d.policy = Some(policy.name.clone());
        d.action = Some(policy.action);
        let limits = policies.effective(policy);
        // The state-held checks are the engine's own (`safety::check`); nothing is ever
        // in flight or paused here, since every action is assumed to end at once.
        let facts = Facts {
            target_actions: history.get(&key).cloned().unwrap_or_default(),
            service_actions: target.service.as_ref().and_then(|s| by_service.get(s).cloned()).unwrap_or_default(),
            ..Facts::default()
        };
        // The budget gate with the engine's own check, on the burn recorded then.
        let gate = policy.require_burn.as_ref().map(|g| {
            let recorded = burns.get(&(g.slo.clone(), g.window.clone())).and_then(|values| {
                values.iter().rev().find(|(t, _)| *t <= a.at_ms && a.at_ms - *t <= BURN_FRESH_MS).map(|(_, v)| *v)
            });
            (g, recorded)
        });
        if let Err(refusal) = safety::check(&facts, &target, &limits, a.at_ms) {
            d.outcome = "refused";
            d.reason = refusal.to_string();
        } else if let Some((g, None)) = gate {
            d.outcome = "unknown";
            d.reason = format!(
                "the budget gate ({} over {} above {}) cannot be replayed: the recording has no burn rate of it within 5m before the alert",
                g.slo, g.window, g.above
            );
        } else if let Some(Err(refusal)) = gate.map(|(g, burn)| safety::check_burn(g, burn)) {
            d.outcome = "refused";
            d.reason = refusal.to_string();
        } else if policy.dry_run {
            d.outcome = "dry_run";
        } else if policy.approval {
            d.outcome = "approval";
            d.reason = "waits for a human's approval".into();
        } else {
            d.outcome = "act";
            history.entry(key).or_default().push(a.at_ms);
            if let Some(service) = &target.service {
                by_service.entry(service.clone()).or_default().push(a.at_ms);
            }
        }
        if safety::touches_a_replica(policy.action) && d.reason.is_empty() {
            d.reason = "live checks (stale telemetry, blast radius, last ready replica) not replayed".into();
        }
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: &str = "defaults:\n  cooldown: 1m\n  max_actions: 2\n  window: 1h\npolicies:\n  - name: restart\n    match: { alertname: ReplicaDown }\n    action: restart\n";

    fn alert(name: &str, instance: &str, at: &str) -> String {
        serde_json::json!({"status": "firing", "labels": {"alertname": name, "instance": instance, "service": "search"}, "startsAt": at, "fingerprint": format!("{name}{instance}")}).to_string()
    }

    #[test]
    fn replays_limits_in_the_alerts_time() {
        let p = PolicyFile::parse(POLICIES).expect("policies");
        let lines = [
            alert("ReplicaDown", "s-1", "2026-01-01T00:00:00Z"),
            alert("ReplicaDown", "s-1", "2026-01-01T00:00:00Z"),
            alert("ReplicaDown", "s-1", "2026-01-01T00:00:30Z"),
            alert("ReplicaDown", "s-1", "2026-01-01T00:01:10Z"),
            alert("ReplicaDown", "s-1", "2026-01-01T00:05:00Z"),
            alert("ReplicaDown", "s-2", "2026-01-01T00:00:10Z"),
            alert("Other", "s-1", "2026-01-01T00:00:20Z"),
            // An audit record and a webhook payload are read too.
            serde_json::json!({"event": "received", "alert": {"labels": {"alertname": "ReplicaDown", "instance": "s-3"}, "starts_at": "2026-01-01T00:02:00Z", "fingerprint": "x"}}).to_string(),
            serde_json::json!({"version": "4", "alerts": [{"status": "resolved", "labels": {"alertname": "ReplicaDown", "instance": "s-4"}, "startsAt": "2026-01-01T00:03:00Z"}]}).to_string(),
        ];
        let d = replay(&p, &lines.join("\n")).expect("replay");
        let outcomes: Vec<(&str, &str)> = d.iter().map(|d| (d.target.as_str(), d.outcome)).collect();
        assert_eq!(
            outcomes,
            [
                ("instance/s-1", "act"),
                ("instance/s-1", "duplicate"),
                ("instance/s-2", "act"),
                ("instance/s-1", "no_policy"),
                ("instance/s-1", "refused"),
                ("instance/s-1", "act"),
                ("instance/s-3", "act"),
                ("instance/s-1", "refused"),
            ]
        );
        assert!(d[4].reason.starts_with("cooldown"), "{:?}", d[4]);
        assert!(d[7].reason.contains("2 actions"), "{:?}", d[7]);
        let e = replay(&p, "{\"labels\": {}, \"startsAt\": \"yesterday\"}").expect_err("bad time");
        assert_eq!(e.line, 1);
        assert!(replay(&p, "\nnot json").expect_err("not json").line == 2);
    }

    #[test]
    fn a_malformed_line_says_which_and_what_it_is_not() {
        let p = PolicyFile::parse(POLICIES).expect("policies");
        let cases = [
            (r#"{"startsAt": "2026-01-01T00:00:00Z"}"#, "not an alert: missing field `labels`"),
            (r#"{"alerts": [{"labels": {"instance": 3}}]}"#, "not an Alertmanager webhook payload: invalid type"),
            (r#"{"event": "received", "alert": {}}"#, "not an audit record of a received alert: missing field"),
            ("[1, 2]", "not a JSON object"),
        ];
        for (line, message) in cases {
            let e = replay(&p, &format!("{}\n{line}", alert("Other", "s-1", "2026-01-01T00:00:00Z"))).expect_err(line);
            assert_eq!(e.line, 2, "{e}");
            assert!(e.message.starts_with(message), "{line}: {e}");
        }
        // Other audit records and resolved alerts are no error: nothing to replay.
        let quiet = [r#"{"event": "verified", "action_id": "act-1"}"#, r#"{"status": "resolved", "labels": {}}"#];
        assert_eq!(replay(&p, &quiet.join("\n")).expect("replay"), []);
    }

    #[test]
    fn the_budget_gate_is_replayed_on_recorded_burn_and_says_when_it_cannot_be() {
        let p = PolicyFile::parse(&format!(
            "{POLICIES}    require_burn: {{ slo: checkout-availability, window: 5m, above: 14.4 }}\n"
        ))
        .expect("policies");
        let burn = |value: f64, time: &str| {
            serde_json::json!({"event": "burn", "slo": "checkout-availability", "window": "5m", "value": value, "time": time})
                .to_string()
        };
        let lines = [
            burn(20.0, "2026-01-01T00:00:00Z"),
            alert("ReplicaDown", "s-1", "2026-01-01T00:01:00Z"),
            serde_json::json!({"burn": {"slo": "checkout-availability", "window": "5m", "value": 2.0}, "time": "2026-01-01T00:02:00Z"}).to_string(),
            alert("ReplicaDown", "s-2", "2026-01-01T00:03:00Z"),
            // Ten minutes after the last recorded value: nothing says how fast it burned.
            alert("ReplicaDown", "s-3", "2026-01-01T00:12:00Z"),
        ];
        let d = replay(&p, &lines.join("\n")).expect("replay");
        let outcomes: Vec<&str> = d.iter().map(|d| d.outcome).collect();
        assert_eq!(outcomes, ["act", "refused", "unknown"], "{d:?}");
        assert!(d[1].reason.contains("burn"), "{:?}", d[1]);
        assert!(d[2].reason.contains("cannot be replayed"), "{:?}", d[2]);
    }

    #[test]
    fn a_fault_moving_across_a_service_is_not_chased_forever() {
        let p = PolicyFile::parse(&POLICIES.replace("window: 1h", "window: 1h\n  max_service_actions: 2"))
            .expect("policies");
        let lines = [
            alert("ReplicaDown", "s-1", "2026-01-01T00:00:00Z"),
            alert("ReplicaDown", "s-2", "2026-01-01T00:01:00Z"),
            alert("ReplicaDown", "s-3", "2026-01-01T00:02:00Z"),
            alert("ReplicaDown", "s-3", "2026-01-01T01:01:00Z"),
        ];
        let d = replay(&p, &lines.join("\n")).expect("replay");
        let outcomes: Vec<&str> = d.iter().map(|d| d.outcome).collect();
        assert_eq!(outcomes, ["act", "act", "refused", "act"], "{d:?}");
        assert!(d[2].reason.contains("2 actions on the search service"), "{:?}", d[2]);
    }
}
