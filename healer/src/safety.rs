//! The safety checks of the healing loop as pure functions: facts in, a verdict out, no
//! I/O and no clock. The engine gathers the facts (from its state and the collector) and
//! `replay` simulates them, so both apply the very same rules, and the rules are tested
//! here exhaustively instead of through a live cluster.
//!
//! A refusal says why and whether it is worth trying again: the pause, an action in
//! progress, a rate limit or a cooldown lift by themselves, so an alert refused for them
//! is kept and decided again when they do (`Refusal::retry`); a target that waits for a
//! human, or an alert that names nothing to act on, are refused for good.

use crate::policy::{ActionKind, BurnGate, Effective};
use crate::state::{State, Target};

/// First wait before a live check (telemetry, blast radius, burn rate, the collector's
/// answer) is tried again; it doubles per attempt up to `LIVE_RETRY_MAX_MS`.
pub const LIVE_RETRY_FIRST_MS: i64 = 15_000;
/// The longest wait between two looks at a live check that keeps refusing.
pub const LIVE_RETRY_MAX_MS: i64 = 300_000;

/// What the healer's state says about a target when an alert asks to act on it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub paused: bool,
    /// Why the target waits for a human, if it does.
    pub needs_human: Option<String>,
    /// An action on the target is awaiting approval, running or being verified.
    pub target_busy: bool,
    /// When actions on the target were taken (ms).
    pub target_actions: Vec<i64>,
    /// When actions on the target's service (any of its replicas) were taken (ms).
    pub service_actions: Vec<i64>,
    /// Actions on the target's service in flight.
    pub service_busy: usize,
}

impl Facts {
    /// The facts the durable state holds about `target`, as of `now`.
    pub fn of(state: &State, target: &Target) -> Facts {
        let key = target.key();
        let t = state.targets.get(&key).cloned().unwrap_or_default();
        let of_service = |a: &&crate::state::Action| a.target.service.is_some() && a.target.service == target.service;
        Facts {
            paused: state.paused,
            needs_human: t.needs_human,
            target_busy: state.actions.iter().any(|a| a.status.in_flight() && a.target.key() == key),
            target_actions: t.actions,
            service_actions: state
                .actions
                .iter()
                .filter(of_service)
                .filter(|a| a.status.acted())
                .map(|a| a.created_ms)
                .collect(),
            service_busy: state.actions.iter().filter(of_service).filter(|a| a.status.in_flight()).count(),
        }
    }
}

/// What the collector says about a replica a restart or scale-in would touch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Live {
    /// Seconds since the target's last readiness probe; `None`: no probe at all.
    pub telemetry_age_secs: Option<f64>,
    /// The service's replicas the collector knows, with their last readiness probe.
    pub replicas: Vec<ReplicaFact>,
}

/// One replica's last readiness probe, as the collector has it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaFact {
    pub instance: String,
    /// Its last `/readyz` probe succeeded.
    pub ready: bool,
    /// Seconds since that probe; `None` when unknown.
    pub age_secs: Option<f64>,
    /// How often it is probed (seconds), inferred from its samples; `None` when unknown.
    pub interval_secs: Option<f64>,
}

impl ReplicaFact {
    /// Ready, and fresh by `hale_core::cluster`'s rule (the collector's cluster view and
    /// the dashboard judge the same way): a frozen node's last "ready" is not a ready
    /// replica, so it never spares another replica the last-ready guard.
    pub fn counts_ready(&self) -> bool {
        let interval_ms =
            self.interval_secs.map_or(hale_core::cluster::DEFAULT_INTERVAL_MS, |s| (s * 1000.0).round() as i64);
        self.ready
            && self
                .age_secs
                .is_some_and(|a| a.is_finite() && hale_core::cluster::is_fresh((a * 1000.0) as i64, interval_ms))
    }
}

/// When a refused alert is worth deciding again: a wire type (`/api/v1/state` lists it).
pub use hale_core::api::RetryWhen;

/// What the healer does with a [`RetryWhen`].
pub trait Retry {
    /// Whether the condition that refused the alert has lifted (pure: state and clock in).
    fn lifted(&self, state: &State, target: &Target, now: i64) -> bool;
    /// In words, for the audit log and the dashboard.
    fn describe(&self) -> String;
}

impl Retry for RetryWhen {
    fn lifted(&self, state: &State, target: &Target, now: i64) -> bool {
        match self {
            RetryWhen::At { at_ms } => now >= *at_ms,
            RetryWhen::TargetFree => !Facts::of(state, target).target_busy,
            RetryWhen::ServiceFreer { service, busy } => {
                state
                    .actions
                    .iter()
                    .filter(|a| a.status.in_flight() && a.target.service.as_ref() == Some(service))
                    .count()
                    < *busy
            }
            RetryWhen::Resumed => !state.paused,
            // Not a condition this healer wrote: look again now.
            RetryWhen::Other { .. } => true,
        }
    }

    fn describe(&self) -> String {
        match self {
            RetryWhen::At { at_ms } => format!("at {}", rfc3339(*at_ms)),
            RetryWhen::TargetFree => "when the action in progress on the target ends".into(),
            RetryWhen::ServiceFreer { service, .. } => format!("when an action on the {service} service ends"),
            RetryWhen::Resumed => "when the healer is resumed".into(),
            RetryWhen::Other { when } => format!("when {when:?}"),
        }
    }
}

fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Why an action was not taken. The text is what the audit log and the API say.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the healer is paused")]
    Paused,
    #[error("{target} needs a human since a repair failed ({why}); reset it through the API")]
    NeedsHuman { target: String, why: String },
    #[error("an action on {target} is already in progress")]
    InProgress { target: String },
    #[error("{count} actions on {target} within {}; the limit is {max}", secs(*.window_ms))]
    TargetLimit { target: String, count: usize, window_ms: i64, max: u32, until_ms: i64 },
    #[error("{count} actions on the {service} service within {}; the limit is {max}", secs(*.window_ms))]
    ServiceLimit { service: String, count: usize, window_ms: i64, max: u32, until_ms: i64 },
    #[error("cooldown: {target} was acted on {} s ago; the next action may come after {} s", .since_ms / 1000, .wait_ms / 1000)]
    Cooldown { target: String, since_ms: i64, wait_ms: i64, until_ms: i64 },
    #[error("{slo} burns {burn:.1}× over {window}; the policy acts only above {above}×")]
    BurnLow { slo: String, window: String, burn: f64, above: f64 },
    #[error("no burn rate of {slo} over {window}; no data is no reason to act")]
    NoBurn { slo: String, window: String },
    #[error("the alert names no service and instance to act on")]
    NoTarget,
    #[error("telemetry of {instance} is {age_secs:.0} s old; no action on old data")]
    StaleTelemetry { instance: String, age_secs: f64 },
    #[error("no telemetry of {instance}; no data is no reason to act")]
    NoTelemetry { instance: String },
    #[error("{busy} of {replicas} {service} replicas are being acted on; at most {allowed} at once")]
    ServiceShare { service: String, busy: usize, replicas: usize, allowed: usize },
    #[error("{instance} is the last ready {service} replica")]
    LastReady { instance: String, service: String },
    /// A live check could not be made (the collector did not answer).
    #[error("{0}")]
    Unknown(String),
}

fn secs(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
}

impl Refusal {
    /// A short stable name for the reason (`cooldown`, `in_progress`, …), for the API.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Paused => "paused",
            Refusal::NeedsHuman { .. } => "needs_human",
            Refusal::InProgress { .. } => "in_progress",
            Refusal::TargetLimit { .. } => "target_limit",
            Refusal::ServiceLimit { .. } => "service_limit",
            Refusal::Cooldown { .. } => "cooldown",
            Refusal::BurnLow { .. } => "burn_low",
            Refusal::NoBurn { .. } => "no_burn",
            Refusal::NoTarget => "no_target",
            Refusal::StaleTelemetry { .. } => "stale_telemetry",
            Refusal::NoTelemetry { .. } => "no_telemetry",
            Refusal::ServiceShare { .. } => "service_share",
            Refusal::LastReady { .. } => "last_ready",
            Refusal::Unknown(_) => "unknown",
        }
    }

    /// When the refused alert is worth deciding again, or `None` when the refusal is for
    /// good (a human must act, or the alert names nothing to act on). Live checks are
    /// looked at again after a wait that doubles with each `attempts`.
    pub fn retry(&self, now: i64, attempts: u32) -> Option<RetryWhen> {
        let later = || RetryWhen::At { at_ms: now + (LIVE_RETRY_FIRST_MS << attempts.min(10)).min(LIVE_RETRY_MAX_MS) };
        match self {
            Refusal::NeedsHuman { .. } | Refusal::NoTarget => None,
            Refusal::Paused => Some(RetryWhen::Resumed),
            Refusal::InProgress { .. } => Some(RetryWhen::TargetFree),
            Refusal::ServiceShare { service, busy, .. } => {
                Some(RetryWhen::ServiceFreer { service: service.clone(), busy: *busy })
            }
            Refusal::TargetLimit { until_ms, .. }
            | Refusal::ServiceLimit { until_ms, .. }
            | Refusal::Cooldown { until_ms, .. } => Some(RetryWhen::At { at_ms: *until_ms }),
            Refusal::BurnLow { .. }
            | Refusal::NoBurn { .. }
            | Refusal::StaleTelemetry { .. }
            | Refusal::NoTelemetry { .. }
            | Refusal::LastReady { .. }
            | Refusal::Unknown(_) => Some(later()),
        }
    }
}

/// The checks the durable state answers, in order: paused, needs a human, an action in
/// progress, the per-target limit, the per-service limit, the cooldown (doubling per
/// recent action). The first that fails is the reason.
pub fn check(facts: &Facts, target: &Target, limits: &Effective, now: i64) -> Result<(), Refusal> {
    let key = target.key();
    let window = limits.window.as_millis() as i64;
    if facts.paused {
        return Err(Refusal::Paused);
    }
    if let Some(why) = &facts.needs_human {
        return Err(Refusal::NeedsHuman { target: key, why: why.clone() });
    }
    if facts.target_busy {
        return Err(Refusal::InProgress { target: key });
    }
    let mut recent: Vec<i64> = facts.target_actions.iter().copied().filter(|t| now - t < window).collect();
    recent.sort_unstable();
    if recent.len() as u32 >= limits.max_actions {
        // Free again once enough of them have left the window.
        let until_ms = recent[recent.len() - limits.max_actions.max(1) as usize] + window;
        return Err(Refusal::TargetLimit {
            target: key,
            count: recent.len(),
            window_ms: window,
            max: limits.max_actions,
            until_ms,
        });
    }
    if let Some(service) = &target.service {
        let mut of_service: Vec<i64> = facts.service_actions.iter().copied().filter(|t| now - t < window).collect();
        of_service.sort_unstable();
        if of_service.len() as u32 >= limits.max_service_actions {
            let until_ms = of_service[of_service.len() - limits.max_service_actions.max(1) as usize] + window;
            return Err(Refusal::ServiceLimit {
                service: service.clone(),
                count: of_service.len(),
                window_ms: window,
                max: limits.max_service_actions,
                until_ms,
            });
        }
    }
    if let Some(last) = recent.last() {
        // Each action within the window doubles the wait before the next.
        let wait_ms = limits.cooldown.as_millis() as i64 * (1i64 << (recent.len() as u32 - 1).min(20));
        if now - last < wait_ms {
            return Err(Refusal::Cooldown { target: key, since_ms: now - last, wait_ms, until_ms: last + wait_ms });
        }
    }
    Ok(())
}

/// The error-budget gate: act only while the SLO burns faster than the policy says.
pub fn check_burn(gate: &BurnGate, burn: Option<f64>) -> Result<(), Refusal> {
    match burn.filter(|b| b.is_finite()) {
        Some(b) if b > gate.above => Ok(()),
        Some(burn) => {
            Err(Refusal::BurnLow { slo: gate.slo.clone(), window: gate.window.clone(), burn, above: gate.above })
        }
        None => Err(Refusal::NoBurn { slo: gate.slo.clone(), window: gate.window.clone() }),
    }
}

/// Whether the action touches one replica, so the replica-level checks apply.
pub fn touches_a_replica(kind: ActionKind) -> bool {
    match kind {
        ActionKind::Restart | ActionKind::ScaleIn => true,
        ActionKind::Failover
        | ActionKind::Rejoin
        | ActionKind::Reschedule
        | ActionKind::ScaleOut
        | ActionKind::Exec
        | ActionKind::Webhook => false,
    }
}

/// The service and instance a replica-level action needs.
pub fn replica_of(target: &Target) -> Result<(&str, &str), Refusal> {
    match (&target.service, &target.instance) {
        (Some(s), Some(i)) => Ok((s, i)),
        _ => Err(Refusal::NoTarget),
    }
}

/// The checks the collector answers for a replica-level action, in order: fresh
/// telemetry of the target, the share of the service in flight, never its last ready
/// replica.
pub fn check_live(live: &Live, target: &Target, service_busy: usize, limits: &Effective) -> Result<(), Refusal> {
    let (service, instance) = replica_of(target)?;
    match live.telemetry_age_secs {
        Some(age) if age <= limits.max_staleness.as_secs_f64() => {}
        Some(age_secs) => return Err(Refusal::StaleTelemetry { instance: instance.into(), age_secs }),
        None => return Err(Refusal::NoTelemetry { instance: instance.into() }),
    }
    let replicas = live.replicas.len();
    let allowed = ((replicas as f64 * limits.max_service_share).floor() as usize).max(1);
    if service_busy + 1 > allowed {
        return Err(Refusal::ServiceShare { service: service.into(), busy: service_busy, replicas, allowed });
    }
    let ready: Vec<&str> = live.replicas.iter().filter(|r| r.counts_ready()).map(|r| r.instance.as_str()).collect();
    if ready == [instance] {
        return Err(Refusal::LastReady { instance: instance.into(), service: service.into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NOW: i64 = 10_000_000;

    fn limits() -> Effective {
        Effective {
            cooldown: Duration::from_secs(30),
            max_actions: 3,
            window: Duration::from_secs(600),
            max_service_actions: 4,
            max_service_share: 0.5,
            max_staleness: Duration::from_secs(15),
        }
    }

    fn replica(instance: &str) -> Target {
        Target { service: Some("search".into()), instance: Some(instance.into()), node: Some("node-1".into()) }
    }

    fn refused(facts: &Facts, target: &Target) -> Refusal {
        check(facts, target, &limits(), NOW).expect_err("refused")
    }

    #[test]
    fn nothing_in_the_way_allows_the_action() {
        assert_eq!(check(&Facts::default(), &replica("s-1"), &limits(), NOW), Ok(()));
        // Old actions (outside the window, past the cooldown) do not count.
        let old = NOW - 700_000;
        let facts = Facts { target_actions: vec![old; 5], service_actions: vec![old; 9], ..Facts::default() };
        assert_eq!(check(&facts, &replica("s-1"), &limits(), NOW), Ok(()));
        // One recent action, its cooldown over.
        let facts =
            Facts { target_actions: vec![NOW - 30_000], service_actions: vec![NOW - 30_000], ..Facts::default() };
        assert_eq!(check(&facts, &replica("s-1"), &limits(), NOW), Ok(()));
    }

    #[test]
    fn the_pause_refuses_first_and_lifts_on_resume() {
        let facts = Facts { paused: true, needs_human: Some("x".into()), target_busy: true, ..Facts::default() };
        let r = refused(&facts, &replica("s-1"));
        assert_eq!(r, Refusal::Paused);
        assert_eq!(r.to_string(), "the healer is paused");
        assert_eq!(r.retry(NOW, 0), Some(RetryWhen::Resumed));
    }

    #[test]
    fn a_target_that_needs_a_human_is_refused_for_good() {
        let facts = Facts { needs_human: Some("act-1 failed".into()), target_busy: true, ..Facts::default() };
        let r = refused(&facts, &replica("s-1"));
        assert_eq!(r, Refusal::NeedsHuman { target: "instance/s-1".into(), why: "act-1 failed".into() });
        assert_eq!(r.retry(NOW, 0), None, "only a human's reset lifts it");
        assert!(r.to_string().contains("reset it through the API"), "{r}");
    }

    #[test]
    fn one_action_at_a_time_per_target() {
        let facts = Facts { target_busy: true, target_actions: vec![NOW - 1], ..Facts::default() };
        let r = refused(&facts, &replica("s-1"));
        assert_eq!(r, Refusal::InProgress { target: "instance/s-1".into() });
        assert_eq!(r.retry(NOW, 0), Some(RetryWhen::TargetFree));
    }

    #[test]
    fn the_per_target_limit_frees_when_the_oldest_action_leaves_the_window() {
        let at = [NOW - 500_000, NOW - 300_000, NOW - 100_000];
        let facts = Facts { target_actions: at.to_vec(), ..Facts::default() };
        let r = refused(&facts, &replica("s-1"));
        assert_eq!(
            r,
            Refusal::TargetLimit {
                target: "instance/s-1".into(),
                count: 3,
                window_ms: 600_000,
                max: 3,
                until_ms: NOW - 500_000 + 600_000
            }
        );
        assert_eq!(r.to_string(), "3 actions on instance/s-1 within 10m; the limit is 3");
        assert_eq!(r.retry(NOW, 0), Some(RetryWhen::At { at_ms: NOW + 100_000 }));
        // Just before that the limit still holds; at it, the cooldown is what is left.
        assert!(matches!(check(&facts, &replica("s-1"), &limits(), NOW + 99_999), Err(Refusal::TargetLimit { .. })));
        assert!(check(&facts, &replica("s-1"), &limits(), NOW + 100_000).is_ok());
    }

    #[test]
    fn the_per_service_limit_counts_every_replica_of_the_service() {
        let facts = Facts {
            service_actions: vec![NOW - 400_000, NOW - 300_000, NOW - 200_000, NOW - 100_000],
            ..Facts::default()
        };
        let r = refused(&facts, &replica("s-9"));
        assert_eq!(
            r,
            Refusal::ServiceLimit {
                service: "search".into(),
                count: 4,
                window_ms: 600_000,
                max: 4,
                until_ms: NOW + 200_000
            }
        );
        assert_eq!(r.to_string(), "4 actions on the search service within 10m; the limit is 4");
        assert_eq!(r.retry(NOW, 3), Some(RetryWhen::At { at_ms: NOW + 200_000 }));
        // A target without a service has no service limit.
        let node = Target { service: None, instance: None, node: Some("node-1".into()) };
        assert_eq!(check(&facts, &node, &limits(), NOW), Ok(()));
    }

    #[test]
    fn the_cooldown_doubles_with_each_recent_action() {
        let one = Facts { target_actions: vec![NOW - 10_000], ..Facts::default() };
        let r = refused(&one, &replica("s-1"));
        assert_eq!(
            r,
            Refusal::Cooldown {
                target: "instance/s-1".into(),
                since_ms: 10_000,
                wait_ms: 30_000,
                until_ms: NOW + 20_000
            }
        );
        assert_eq!(r.to_string(), "cooldown: instance/s-1 was acted on 10 s ago; the next action may come after 30 s");
        assert_eq!(r.retry(NOW, 0), Some(RetryWhen::At { at_ms: NOW + 20_000 }));
        // Two recent actions: 60 s after the last.
        let two = Facts { target_actions: vec![NOW - 200_000, NOW - 45_000], ..Facts::default() };
        assert!(
            matches!(refused(&two, &replica("s-1")), Refusal::Cooldown { wait_ms: 60_000, until_ms, .. } if until_ms == NOW + 15_000)
        );
        assert!(check(&two, &replica("s-1"), &limits(), NOW + 15_000).is_ok());
    }

    #[test]
    fn the_order_of_the_checks_names_the_first_that_fails() {
        let all = Facts {
            paused: false,
            needs_human: None,
            target_busy: true,
            target_actions: vec![NOW - 3, NOW - 2, NOW - 1],
            service_actions: vec![NOW - 1; 4],
            service_busy: 3,
        };
        assert_eq!(refused(&all, &replica("s-1")).code(), "in_progress");
        let f = Facts { target_busy: false, ..all.clone() };
        assert_eq!(refused(&f, &replica("s-1")).code(), "target_limit");
        let f = Facts { target_busy: false, target_actions: vec![NOW - 1], ..all };
        assert_eq!(refused(&f, &replica("s-1")).code(), "service_limit");
    }

    fn gate() -> BurnGate {
        BurnGate { slo: "checkout".into(), window: "1h".into(), above: 14.4 }
    }

    #[test]
    fn the_budget_gate_acts_only_above_its_burn_rate() {
        assert_eq!(check_burn(&gate(), Some(20.0)), Ok(()));
        let low = check_burn(&gate(), Some(14.4)).expect_err("at the limit is not above it");
        assert_eq!(low.to_string(), "checkout burns 14.4× over 1h; the policy acts only above 14.4×");
        assert!(matches!(low.retry(NOW, 0), Some(RetryWhen::At { at_ms }) if at_ms == NOW + LIVE_RETRY_FIRST_MS));
        for none in [None, Some(f64::NAN), Some(f64::INFINITY)] {
            let r = check_burn(&gate(), none).expect_err("no data");
            assert_eq!(r, Refusal::NoBurn { slo: "checkout".into(), window: "1h".into() });
        }
    }

    fn live(age: Option<f64>, replicas: &[(&str, bool)]) -> Live {
        let fact = |(i, r): &(&str, bool)| ReplicaFact {
            instance: i.to_string(),
            ready: *r,
            age_secs: Some(0.2),
            interval_secs: Some(0.5),
        };
        Live { telemetry_age_secs: age, replicas: replicas.iter().map(fact).collect() }
    }

    /// Issue #12, finding 12: a replica whose last probe said "ready" long ago (its node
    /// froze) is not a ready peer: restarting the only fresh ready one is refused.
    #[test]
    fn issue_12_a_stale_ready_replica_does_not_count_as_ready() {
        let mut l = live(Some(1.0), &[("s-1", true), ("s-2", true)]);
        l.replicas[1].age_secs = Some(20.0);
        let r = check_live(&l, &replica("s-1"), 0, &limits()).expect_err("s-2 is stale");
        assert_eq!(r, Refusal::LastReady { instance: "s-1".into(), service: "search".into() });
        // Within a few of its intervals it counts; an unknown age never does.
        l.replicas[1].age_secs = Some(1.5);
        assert!(check_live(&l, &replica("s-1"), 0, &limits()).is_ok());
        l.replicas[1].age_secs = None;
        assert!(check_live(&l, &replica("s-1"), 0, &limits()).is_err());
        // Probed every 15 s: 20 s is one late probe, still fresh.
        l.replicas[1] = ReplicaFact { age_secs: Some(20.0), interval_secs: Some(15.0), ..l.replicas[1].clone() };
        assert!(check_live(&l, &replica("s-1"), 0, &limits()).is_ok());
    }

    const FOUR: [(&str, bool); 4] = [("s-1", false), ("s-2", true), ("s-3", true), ("s-4", false)];

    #[test]
    fn live_checks_pass_for_a_fresh_replica_with_ready_peers() {
        assert_eq!(check_live(&live(Some(2.0), &FOUR), &replica("s-1"), 1, &limits()), Ok(()));
        assert_eq!(
            check_live(&live(Some(15.0), &FOUR), &replica("s-1"), 0, &limits()),
            Ok(()),
            "at the limit is fresh"
        );
    }

    #[test]
    fn live_checks_need_a_service_and_an_instance() {
        for t in [
            Target { service: Some("search".into()), instance: None, node: None },
            Target { service: None, instance: Some("s-1".into()), node: None },
            Target { service: None, instance: None, node: Some("node-1".into()) },
        ] {
            let r = check_live(&live(Some(1.0), &FOUR), &t, 0, &limits()).expect_err("no replica");
            assert_eq!(r, Refusal::NoTarget);
            assert_eq!(r.retry(NOW, 0), None, "an alert naming nothing never will");
        }
    }

    #[test]
    fn stale_or_missing_telemetry_refuses_and_looks_again_later() {
        let r = check_live(&live(Some(15.5), &FOUR), &replica("s-1"), 0, &limits()).expect_err("stale");
        assert_eq!(r.to_string(), "telemetry of s-1 is 16 s old; no action on old data");
        assert_eq!(r.code(), "stale_telemetry");
        let r = check_live(&live(None, &FOUR), &replica("s-1"), 0, &limits()).expect_err("missing");
        assert_eq!(r, Refusal::NoTelemetry { instance: "s-1".into() });
        // Each look doubles the wait, up to the cap.
        assert_eq!(r.retry(NOW, 0), Some(RetryWhen::At { at_ms: NOW + 15_000 }));
        assert_eq!(r.retry(NOW, 2), Some(RetryWhen::At { at_ms: NOW + 60_000 }));
        assert_eq!(r.retry(NOW, 30), Some(RetryWhen::At { at_ms: NOW + LIVE_RETRY_MAX_MS }));
    }

    #[test]
    fn never_more_than_a_share_of_the_service_at_once() {
        // 4 replicas × 0.5: two at once.
        let r = check_live(&live(Some(1.0), &FOUR), &replica("s-1"), 2, &limits()).expect_err("share");
        assert_eq!(r, Refusal::ServiceShare { service: "search".into(), busy: 2, replicas: 4, allowed: 2 });
        assert_eq!(r.to_string(), "2 of 4 search replicas are being acted on; at most 2 at once");
        assert_eq!(r.retry(NOW, 0), Some(RetryWhen::ServiceFreer { service: "search".into(), busy: 2 }));
        // Always at least one, even for a service of one replica.
        let one = [("s-1", false), ("s-2", true)];
        assert_eq!(check_live(&live(Some(1.0), &one), &replica("s-1"), 0, &limits()), Ok(()));
        assert!(matches!(
            check_live(&live(Some(1.0), &one), &replica("s-1"), 1, &limits()),
            Err(Refusal::ServiceShare { allowed: 1, .. })
        ));
    }

    #[test]
    fn never_the_last_ready_replica() {
        let r = check_live(&live(Some(1.0), &[("s-1", true), ("s-2", false)]), &replica("s-1"), 0, &limits())
            .expect_err("last ready");
        assert_eq!(r, Refusal::LastReady { instance: "s-1".into(), service: "search".into() });
        assert!(r.retry(NOW, 0).is_some(), "another replica may become ready");
        // Another ready replica, or the target not ready itself: allowed.
        assert!(check_live(&live(Some(1.0), &[("s-1", true), ("s-2", true)]), &replica("s-1"), 0, &limits()).is_ok());
        assert!(check_live(&live(Some(1.0), &[("s-1", false), ("s-2", false)]), &replica("s-1"), 0, &limits()).is_ok());
    }

    fn action(target: Target, status: crate::state::Status, at: i64) -> crate::state::Action {
        crate::state::Action {
            id: format!("act-{at}"),
            policy: "p".into(),
            kind: ActionKind::Restart,
            target,
            alert: crate::state::Alert {
                labels: Default::default(),
                annotations: Default::default(),
                starts_at: String::new(),
                fingerprint: String::new(),
                received_ms: at,
            },
            status,
            created_ms: at,
            updated_ms: at,
            expires_ms: None,
            detail: String::new(),
            started: Vec::new(),
            followed_by: None,
            burn_before: None,
            burn_after: None,
            trace_id: None,
            traceparent: None,
        }
    }

    #[test]
    fn facts_come_from_the_state() {
        use crate::state::Status;
        let mut s = State::default();
        s.targets.entry("instance/s-1".into()).or_default().actions = vec![NOW - 5];
        s.actions = vec![
            action(replica("s-1"), Status::Verifying, NOW - 5),
            action(replica("s-2"), Status::Succeeded, NOW - 9),
            action(replica("s-3"), Status::Rejected, NOW - 3),
            action(
                Target { service: Some("auth".into()), instance: Some("a-1".into()), node: None },
                Status::Running,
                NOW,
            ),
        ];
        let f = Facts::of(&s, &replica("s-1"));
        assert!(f.target_busy && !f.paused && f.needs_human.is_none());
        assert_eq!(f.target_actions, [NOW - 5]);
        assert_eq!(f.service_actions, [NOW - 5, NOW - 9], "only actions taken count, only this service's");
        assert_eq!(f.service_busy, 1);
        assert!(!Facts::of(&s, &replica("s-2")).target_busy);
    }

    #[test]
    fn retry_conditions_lift_with_the_state() {
        use crate::state::Status;
        let mut s = State { paused: true, ..State::default() };
        s.actions = vec![action(replica("s-1"), Status::Running, NOW), action(replica("s-2"), Status::Verifying, NOW)];
        let t = replica("s-1");
        assert!(!RetryWhen::Resumed.lifted(&s, &t, NOW));
        assert!(!RetryWhen::TargetFree.lifted(&s, &t, NOW));
        let freer = RetryWhen::ServiceFreer { service: "search".into(), busy: 2 };
        assert!(!freer.lifted(&s, &t, NOW));
        assert!(!RetryWhen::At { at_ms: NOW + 1 }.lifted(&s, &t, NOW));
        s.paused = false;
        s.actions[0].status = Status::Succeeded;
        assert!(RetryWhen::Resumed.lifted(&s, &t, NOW));
        assert!(RetryWhen::TargetFree.lifted(&s, &t, NOW));
        assert!(freer.lifted(&s, &t, NOW));
        assert!(RetryWhen::At { at_ms: NOW + 1 }.lifted(&s, &t, NOW + 1));
        // The wire shape of a retry, as the API shows it.
        assert_eq!(
            serde_json::to_value(&freer).expect("json"),
            serde_json::json!({"when": "service_freer", "service": "search", "busy": 2})
        );
        assert_eq!(
            serde_json::to_value(RetryWhen::At { at_ms: 5 }).expect("json"),
            serde_json::json!({"when": "at", "at_ms": 5})
        );
    }
}
