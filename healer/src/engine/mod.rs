//! The healing loop of DESIGN.md: alert → policy → safety checks → action (or the reason
//! why not) → verification → resolved, or escalation to humans. Here: receiving and
//! deciding (the safety rules themselves are `crate::safety`'s, pure); `act` carries
//! actions out through executors, `verify` proves them, `escalate` hands failures to
//! humans. Alerts are decided one at
//! a time, in the order received; each action then runs (and is verified) in a task of its
//! own, so a slow verification holds up nothing else.
//!
//! - `receive` stores an alert durably (with the duplicate guard) before the intake
//!   answers 2xx; `run` waits to lead (at once when alone), reads the shared state afresh,
//!   verifies again — never repeats — the actions a crash or the previous leader left
//!   running, then decides queued alerts while it leads.
//! - `check` gathers [`crate::safety`]'s facts: the state first, then the collector only
//!   when the state allows the action (live checks: fresh telemetry, the share of the
//!   service in flight, the last ready replica, the error-budget gate).
//! - `refuse` writes one audit line with the reason, its code and when it will be looked
//!   at again; a retryable refusal is kept in the state's `deferred`, a permanent one is
//!   not. `retry_deferred` (every loop, and at once when an action ends or the healer
//!   resumes) decides a kept alert again with every check while it still fires, and drops
//!   it with a record once it does not; a new occurrence supersedes a kept one.
//! - `execute` silences the alerts the action itself causes (linked to its id), then acts:
//!   restart through the node's agent; failover (a ready standby promoted under a new
//!   epoch, which fences the old primary, and the gateway's writes pointed at it); rejoin
//!   (a fenced old primary made the new primary's standby); reschedule (a lost node's
//!   replicas started on the least loaded healthy nodes and added to the pools);
//!   scale-out, and the scale-in that follows once the alert has been quiet for the
//!   policy's `stabilization`; exec (no shell, the alert on stdin, a timeout); a signed
//!   webhook.
//! - `verify_and_finish` watches the triggering alert (or the policy's query) at the
//!   collector until it clears or times out; `escalate` marks the target as needing a human
//!   and sends a signed `hale-escalation/1` webhook with what was tried and the SLO burn
//!   before and after.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tracing::Instrument;
use tracing::field::Empty;

use crate::audit::Audit;
use crate::clients::{ClientError, Collector};
use crate::executor::{Acted, Capability, Executor, LoadBalancerClient, Request};
use crate::metrics::Metrics;
use crate::policy::{ActionKind, Policy, PolicyFile, fill};
use crate::safety::{self, Facts, Live, Refusal, Retry, RetryWhen};
use crate::state::{Action, Alert, Deferred, Labels, SaveError, Status, Store, Target};
use hale_core::time::now_ms;

mod act;
mod escalate;
mod verify;

use escalate::escalated_alert;

/// The page threshold of the shortest multi-window burn alert (5m and 1h over 14.4, as
/// Sloth and the SRE workbook page): a repair is verified only once its service's SLO
/// burns slower than this again.
const PAGE_BURN: f64 = 14.4;

/// How often a repair's condition is looked at while it is verified.
const VERIFY_EVERY: Duration = Duration::from_millis(250);

/// Why an action could not be carried out: a peer failed, or the healer's own reason
/// (no target, no healthy node, a command that failed). Its text is the action's `detail`.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Refused(String),
}

impl From<String> for ActionError {
    fn from(reason: String) -> Self {
        ActionError::Refused(reason)
    }
}

impl From<&str> for ActionError {
    fn from(reason: &str) -> Self {
        ActionError::Refused(reason.to_string())
    }
}

/// Why a human's answer to an action awaiting approval was not taken.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("no action {0}")]
    NotFound(String),
    /// Already answered, expired, or never needed an approval.
    #[error("action {id} is {status:?}, not awaiting approval")]
    NotAwaiting { id: String, status: Status },
    #[error("action {0} expired")]
    Expired(String),
    #[error(transparent)]
    Save(#[from] SaveError),
}

/// Where failed repairs are reported: webhook receivers (Alertmanager's v4 payload)
/// and Alertmanagers (`POST /api/v2/alerts`), through a durable outbox.
#[derive(Clone)]
pub struct Escalation {
    pub urls: Vec<String>,
    /// Alertmanager base URLs; the escalation is posted as an alert to each.
    pub alertmanagers: Vec<String>,
    pub secret: Option<Arc<[u8]>>,
    /// Where an escalation waits, fsynced, until each receiver has taken it (sent again
    /// after a crash; retried with backoff, as the collector's notifications are).
    pub outbox: Arc<hale_outbox::Outbox>,
    /// This healer's URL, for the alerts' `generatorURL`.
    pub external_url: String,
}

pub struct Healer {
    pub policies: PolicyFile,
    pub store: Store,
    pub audit: Audit,
    pub collector: Collector,
    /// The services the healer may act on, where, and through what (`healer.toml`).
    pub inventory: crate::inventory::Inventory,
    /// Each inventory service's executor, by service name.
    pub executors: BTreeMap<String, Box<dyn Executor>>,
    /// The inventory's load balancers, by name.
    pub load_balancers: BTreeMap<String, LoadBalancerClient>,
    /// The failover protocol's calls to primary/standby replicas.
    pub protocol: crate::failover::Protocol,
    pub escalation: Escalation,
    /// Shadow mode: every policy only records what it would do.
    pub dry_run: bool,
    pub metrics: Metrics,
    pub wake: tokio::sync::Notify,
    pub client: reqwest::Client,
    /// Actions this process is executing or verifying right now.
    pub handling: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn new_id() -> String {
    let b: [u8; 8] = rand::random();
    format!("act-{}", hex::encode(b))
}

/// The labels that identify the target's instance of the alert (to watch it clear).
fn watch_labels(alert: &Alert) -> Labels {
    alert
        .labels
        .iter()
        .filter(|(k, _)| {
            ["alertname", "service", "instance", "node", "sloth_id", "sloth_severity"].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Marks an action as this process's own while it executes or verifies it.
struct Handling {
    healer: Arc<Healer>,
    id: String,
}

impl Handling {
    fn new(healer: &Arc<Healer>, id: &str) -> Handling {
        healer.handling.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string());
        Handling { healer: healer.clone(), id: id.to_string() }
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.healer.handling.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The root span of a repair: one trace from the decision (policy, safety checks) through
/// the executor call and the verification to the outcome (`hale.outcome`; error status
/// when the repair failed). Its id goes on the action and on every audit record.
fn repair_span(name: &str, alert: &Alert) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "repair",
        otel.name = %name,
        hale.alert.name = alert.name(),
        hale.alert.fingerprint = %alert.fingerprint,
        hale.policy = Empty,
        hale.action = Empty,
        hale.action.id = Empty,
        hale.target = Empty,
        hale.outcome = Empty,
        otel.status_code = Empty,
    )
}

/// Names `action` on its repair span.
fn describe(span: &tracing::Span, action: &Action) {
    span.record("hale.action.id", action.id.as_str());
    span.record("hale.action", action.kind.as_str());
    span.record("hale.policy", action.policy.as_str());
    span.record("hale.target", action.target.key().as_str());
}

/// A span continuing `action`'s repair trace, for work on it that resumes later (after
/// an approval, or verification taken over by the next leader).
fn resumed_span(name: &str, action: &Action) -> tracing::Span {
    let span = repair_span(name, &action.alert);
    if let Some(parent) = &action.traceparent {
        hale_trace::continue_trace(&span, parent);
    }
    describe(&span, action);
    span
}

/// Records the repair's outcome on the current (repair) span.
fn trace_outcome(outcome: &str, failed: bool) {
    let span = tracing::Span::current();
    span.record("hale.outcome", outcome);
    if failed {
        span.record("otel.status_code", "ERROR");
    }
}

impl Healer {
    /// Writes an audit record; inside a repair's span it carries the trace's id.
    fn audit(&self, event: &str, mut fields: Value) {
        if let (Value::Object(map), Some(ids)) = (&mut fields, hale_trace::trace_ids()) {
            map.entry("trace_id").or_insert(Value::from(ids.trace_id));
        }
        if let Err(e) = self.audit.record(event, fields) {
            // The decision stands; losing its record is serious enough to shout about.
            tracing::error!(error = %e, path = %self.audit.path().display(), event, "could not write the audit log");
        }
    }

    /// Stores a received firing alert durably. `Ok(false)`: a duplicate, ignored.
    pub async fn receive(&self, alert: Alert) -> Result<bool, SaveError> {
        let key = alert.dedup_key();
        let now = now_ms();
        let fresh = self
            .store
            .take(|s| {
                if s.seen.contains_key(&key) {
                    return false;
                }
                s.seen.insert(key.clone(), now);
                s.queue.push_back(alert.clone());
                true
            })
            .await?;
        if fresh {
            self.metrics.received();
            self.audit("received", json!({"alert": escalated_alert(&alert)}));
            self.wake.notify_one();
        } else {
            self.metrics.duplicate();
        }
        Ok(fresh)
    }

    /// Decides queued alerts and expires approvals, until the process ends, while this
    /// healer leads (a lone healer always does). On taking the lead, actions that a crash
    /// or the previous leader left running are verified again, never repeated.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.store.lead().await;
            let ha = self.store.leadership().is_some();
            if ha {
                self.audit("leading", json!({"reason": "won the election; deciding from the shared state"}));
            }
            let interrupted: Vec<String> = self.store.read(|s| {
                s.actions
                    .iter()
                    .filter(|a| matches!(a.status, Status::Running | Status::Verifying))
                    .map(|a| a.id.clone())
                    .collect()
            });
            for id in interrupted {
                if self.handling.lock().unwrap_or_else(|p| p.into_inner()).contains(&id) {
                    continue; // still this process's own, from before it lost the lead
                }
                let Some(action) = self.store.read(|s| s.actions.iter().find(|a| a.id == id).cloned()) else {
                    continue;
                };
                let span = resumed_span("heal (resumed)", &action);
                span.in_scope(|| self.audit("resumed", json!({"action_id": id, "reason": "the healer that ran this action stopped or lost the lead; verifying it, not repeating it"})));
                tokio::spawn(self.clone().verify_and_finish(id, Vec::new()).instrument(span));
            }
            while self.store.is_leader() {
                self.expire_approvals().await;
                self.scale_in_due().await;
                self.retry_deferred().await;
                let next = self.store.read(|s| s.queue.front().cloned());
                let Some(alert) = next else {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = self.store.changed.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                };
                self.decide(&alert).await;
                let key = alert.dedup_key();
                if let Err(e) = self
                    .store
                    .update(|s| {
                        if s.queue.front().is_some_and(|a| a.dedup_key() == key) {
                            s.queue.pop_front();
                        }
                    })
                    .await
                {
                    tracing::error!(error = %e, "could not save the healer's state; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if ha {
                self.audit("following", json!({"reason": "lost the lead; another healer decides now"}));
            }
        }
    }

    /// Policy, safety checks, then an action (or a recorded refusal), as one repair trace.
    async fn decide(self: &Arc<Self>, alert: &Alert) {
        let span = repair_span(&format!("heal {}", alert.name()), alert);
        self.decide_traced(alert).instrument(span).await
    }

    async fn decide_traced(self: &Arc<Self>, alert: &Alert) {
        let key = alert.dedup_key();
        if self.store.read(|s| s.actions.iter().any(|a| a.alert.dedup_key() == key)) {
            // Decided before a restart.
            let _ = self.store.update(|s| s.deferred.retain(|d| d.alert.dedup_key() != key)).await;
            return;
        }
        // The same alert firing anew supersedes what was kept of its earlier occurrence.
        let superseded: Vec<Deferred> = self.store.read(|s| {
            s.deferred
                .iter()
                .filter(|d| d.alert.fingerprint == alert.fingerprint && d.alert.dedup_key() != key)
                .cloned()
                .collect()
        });
        for d in superseded {
            let fields = json!({"policy": d.policy, "action": d.action, "target": d.target, "alert": escalated_alert(&d.alert), "was_refused": d.reason});
            self.drop_deferred(&d.alert.dedup_key(), fields, "it fired again; the new occurrence is decided instead")
                .await;
        }
        let Some(policy) = self.policies.matching(&alert.labels).cloned() else {
            let _ = self.store.update(|s| s.deferred.retain(|d| d.alert.dedup_key() != key)).await;
            self.metrics.decided("ignored");
            self.audit("ignored", json!({"alert": escalated_alert(alert), "reason": "no policy matches"}));
            trace_outcome("ignored", false);
            return;
        };
        let target = Target::from_labels(&alert.labels);
        let span = tracing::Span::current();
        span.record("hale.policy", policy.name.as_str());
        span.record("hale.action", policy.action.as_str());
        span.record("hale.target", target.key().as_str());
        let checks = tracing::info_span!("safety checks", hale.refusal = Empty);
        if let Err(refusal) = self.check(&policy, &target).instrument(checks.clone()).await {
            checks.record("hale.refusal", refusal.code());
            trace_outcome(&format!("refused: {}", refusal.code()), false);
            self.refuse(alert, &policy, &target, &refusal).await;
            return;
        }
        let burn_before = self.burn_of(alert).await;
        let now = now_ms();
        let dry = self.dry_run || policy.dry_run;
        let status = if dry {
            Status::DryRun
        } else if policy.approval {
            Status::AwaitingApproval
        } else {
            Status::Running
        };
        let action = Action {
            id: new_id(),
            policy: policy.name.clone(),
            kind: policy.action,
            target: target.clone(),
            alert: alert.clone(),
            status,
            created_ms: now,
            updated_ms: now,
            expires_ms: policy.approval.then(|| now + policy.approval_timeout.0.as_millis() as i64),
            detail: String::new(),
            started: Vec::new(),
            followed_by: None,
            burn_before,
            burn_after: None,
            trace_id: hale_trace::trace_ids().map(|ids| ids.trace_id),
            traceparent: hale_trace::traceparent(),
        };
        describe(&span, &action);
        let saved = self
            .store
            .update(|s| {
                if status == Status::Running {
                    s.targets.entry(target.key()).or_default().actions.push(now);
                }
                s.actions.push(action.clone());
                s.deferred.retain(|d| d.alert.dedup_key() != key);
            })
            .await;
        if let Err(e) = saved {
            tracing::error!(error = %e, "could not record an action; not taking it");
            return;
        }
        let fields = json!({"action_id": action.id, "policy": policy.name, "action": policy.action, "target": target, "alert": escalated_alert(alert)});
        match status {
            Status::DryRun => {
                self.metrics.decided("dry_run");
                self.audit("dry_run", fields);
                trace_outcome("dry_run", false);
            }
            Status::AwaitingApproval => {
                self.metrics.decided("awaiting_approval");
                self.audit("awaiting_approval", fields);
                trace_outcome("awaiting_approval", false);
            }
            _ => {
                self.metrics.decided("acted");
                self.audit("planned", fields);
                // The repair's span stays open until the action's verification ends.
                tokio::spawn(self.clone().execute(action.id.clone()).instrument(span));
            }
        }
    }

    /// The safety checks, in order; the first that fails is the reason. The rules are
    /// `safety`'s pure functions (shared with `replay`); this gathers their facts, from
    /// the state first and from the collector only when the state allows the action.
    async fn check(&self, policy: &Policy, target: &Target) -> Result<(), Refusal> {
        let limits = self.policies.effective(policy);
        let facts = self.store.read(|s| Facts::of(s, target));
        safety::check(&facts, target, &limits, now_ms())?;
        if let Some(gate) = &policy.require_burn {
            let q = format!(
                "slo:sli_error:ratio_rate{w}{{sloth_slo={s}}} / on (sloth_id) group_left slo:error_budget:ratio{{sloth_slo={s}}}",
                w = gate.window,
                s = quote(&gate.slo)
            );
            let burn =
                self.collector.query(&q).await.map_err(|e| Refusal::Unknown(e.to_string()))?.first().map(|(_, v)| *v);
            // Recorded so `hale healer replay` can apply the same gate to this audit log.
            if let Some(value) = burn.filter(|b| b.is_finite()) {
                self.audit("burn", json!({"slo": gate.slo, "window": gate.window, "value": value}));
            }
            safety::check_burn(gate, burn)?;
        }
        if safety::touches_a_replica(policy.action) {
            let (service, instance) = safety::replica_of(target)?;
            // Stale-data guard: no action on a target whose telemetry is missing or old: its
            // readiness probe, else (a service nothing probes) its scrape.
            let q = format!(
                "max(time() - timestamp(probe_success{{probe=\"readyz\",instance={i}}})) or max(time() - timestamp(up{{instance={i},job!=\"\"}}))",
                i = quote(instance)
            );
            let age = self
                .collector
                .query(&q)
                .await
                .map_err(|e| Refusal::Unknown(e.to_string()))?
                .first()
                .map(|(_, v)| *v)
                .filter(|v| v.is_finite());
            // Blast radius: the service's replicas, which are ready, and how fresh that is,
            // as the collector's cluster view judges them (each replica's probe age against
            // the spacing of its own samples), so a frozen node's last "ready" never counts.
            let view = self.collector.cluster().await.map_err(|e| Refusal::Unknown(e.to_string()))?;
            let replicas = view
                .services
                .into_iter()
                .filter(|s| s.service == service)
                .flat_map(|s| s.replicas)
                .map(|r| safety::ReplicaFact {
                    ready: r.state == hale_core::cluster::ReplicaState::Ready,
                    age_secs: r.age_secs.filter(|a| a.is_finite()),
                    interval_secs: r.interval_secs.filter(|i| i.is_finite() && *i > 0.0),
                    instance: r.instance,
                })
                .collect();
            let live = Live { telemetry_age_secs: age, replicas };
            safety::check_live(&live, target, facts.service_busy, &limits)?;
        }
        Ok(())
    }

    /// Records a refusal: one audit line, and in the state either a deferral (the reason
    /// lifts by itself, so the alert is decided again then, if it still fires) or nothing
    /// (a refusal for good).
    async fn refuse(&self, alert: &Alert, policy: &Policy, target: &Target, refusal: &Refusal) {
        let now = now_ms();
        let key = alert.dedup_key();
        let attempts =
            self.store.read(|s| s.deferred.iter().find(|d| d.alert.dedup_key() == key).map_or(0, |d| d.attempts));
        let retry = refusal.retry(now, attempts);
        let saved = self
            .store
            .update(|s| {
                let old = s.deferred.iter().position(|d| d.alert.dedup_key() == key);
                match (&retry, old) {
                    (Some(r), Some(i)) => {
                        let d = &mut s.deferred[i];
                        d.code = refusal.code().into();
                        d.reason = refusal.to_string();
                        d.refused_ms = now;
                        d.attempts += 1;
                        d.retry = r.clone();
                    }
                    (Some(r), None) => s.deferred.push(Deferred {
                        alert: alert.clone(),
                        policy: policy.name.clone(),
                        action: policy.action,
                        target: target.clone(),
                        code: refusal.code().into(),
                        reason: refusal.to_string(),
                        first_refused_ms: now,
                        refused_ms: now,
                        attempts: 1,
                        retry: r.clone(),
                    }),
                    (None, Some(i)) => {
                        s.deferred.remove(i);
                    }
                    (None, None) => {}
                }
            })
            .await;
        if let Err(e) = saved {
            tracing::error!(error = %e, "could not record a refusal for another look");
        }
        self.metrics.decided("refused");
        self.audit(
            "refused",
            json!({
                "policy": policy.name,
                "action": policy.action,
                "target": target,
                "alert": escalated_alert(alert),
                "reason": refusal.to_string(),
                "code": refusal.code(),
                "attempt": attempts + 1,
                "retry": retry.as_ref().map_or_else(|| "never: it needs a human or names nothing to act on".to_string(), RetryWhen::describe),
            }),
        );
    }

    /// Refused alerts whose reason has lifted (a freed limit, a cooldown over, a resume,
    /// the time for another look at a live check) are decided again, with every check,
    /// if they still fire at the collector; those that stopped firing are dropped.
    async fn retry_deferred(self: &Arc<Self>) {
        let now = now_ms();
        let due: Vec<Deferred> =
            self.store.read(|s| s.deferred.iter().filter(|d| d.retry.lifted(s, &d.target, now)).cloned().collect());
        for d in due {
            if !self.store.is_leader() {
                return;
            }
            let key = d.alert.dedup_key();
            let fields = json!({"policy": d.policy, "action": d.action, "target": d.target, "alert": escalated_alert(&d.alert), "was_refused": d.reason});
            let Some(policy) = self.policies.policies.iter().find(|p| p.name == d.policy).cloned() else {
                self.drop_deferred(&key, fields, "its policy is no longer configured").await;
                continue;
            };
            match self.collector.alert_firing(&watch_labels(&d.alert)).await {
                Ok(true) => {
                    let mut f = fields;
                    f["reason"] =
                        Value::from(format!("no longer refused ({}); the alert still fires", d.retry.describe()));
                    self.audit("retrying", f);
                    self.decide(&d.alert).await;
                }
                Ok(false) => self.drop_deferred(&key, fields, "the alert no longer fires at the collector").await,
                Err(e) => {
                    let why = Refusal::Unknown(format!("cannot tell whether the alert still fires: {e}"));
                    self.refuse(&d.alert, &policy, &d.target, &why).await;
                }
            }
        }
    }

    /// Forgets a deferred alert, with an audit record saying why.
    async fn drop_deferred(&self, key: &str, mut fields: Value, reason: &str) {
        let saved = self.store.update(|s| s.deferred.retain(|d| d.alert.dedup_key() != key)).await;
        if let Err(e) = saved {
            tracing::error!(error = %e, "could not forget a deferred alert; it will be looked at again");
            return;
        }
        self.metrics.decided("dropped");
        fields["reason"] = Value::from(reason);
        self.audit("dropped", fields);
    }

    async fn set_status(&self, id: &str, status: Status, detail: &str) -> Option<Action> {
        let now = now_ms();
        self.store
            .update(|s| {
                let a = s.actions.iter_mut().find(|a| a.id == id)?;
                a.status = status;
                a.updated_ms = now;
                if !detail.is_empty() {
                    a.detail = if a.detail.is_empty() { detail.to_string() } else { format!("{}; {detail}", a.detail) };
                }
                Some(a.clone())
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "could not save an action's status");
                None
            })
    }

    async fn expire_approvals(&self) {
        let now = now_ms();
        let expired: Vec<String> = self.store.read(|s| {
            s.actions
                .iter()
                .filter(|a| a.status == Status::AwaitingApproval && a.expires_ms.is_some_and(|e| e <= now))
                .map(|a| a.id.clone())
                .collect()
        });
        for id in expired {
            self.set_status(&id, Status::Expired, "nobody approved it in time").await;
            self.audit("expired", json!({"action_id": id}));
        }
    }

    /// A human's answer to an action awaiting approval.
    pub async fn answer(self: &Arc<Self>, id: &str, approve: bool) -> Result<Action, AnswerError> {
        let now = now_ms();
        let action = self
            .store
            .update(|s| {
                let a = s.actions.iter_mut().find(|a| a.id == id).ok_or(AnswerError::NotFound(id.to_string()))?;
                if a.status != Status::AwaitingApproval {
                    return Err(AnswerError::NotAwaiting { id: id.to_string(), status: a.status });
                }
                if a.expires_ms.is_some_and(|e| e <= now) {
                    return Err(AnswerError::Expired(id.to_string()));
                }
                a.status = if approve { Status::Running } else { Status::Rejected };
                a.updated_ms = now;
                let a = a.clone();
                if approve {
                    s.targets.entry(a.target.key()).or_default().actions.push(now);
                }
                Ok(a)
            })
            .await??;
        let span = resumed_span(if approve { "heal (approved)" } else { "heal (rejected)" }, &action);
        span.in_scope(|| {
            self.audit(if approve { "approved" } else { "rejected" }, json!({"action_id": id}));
            if !approve {
                trace_outcome("rejected", false);
            }
        });
        if approve {
            tokio::spawn(self.clone().execute(id.to_string()).instrument(span));
        }
        Ok(action)
    }

    pub async fn set_paused(&self, paused: bool) -> Result<(), SaveError> {
        self.store.update(|s| s.paused = paused).await?;
        self.audit(if paused { "paused" } else { "resumed" }, json!({}));
        // Alerts refused while paused are looked at again at once.
        self.wake.notify_one();
        Ok(())
    }

    /// A human says the target is fine again: automatic actions may resume.
    pub async fn reset(&self, key: &str) -> Result<bool, SaveError> {
        let had = self.store.update(|s| s.targets.get_mut(key).and_then(|t| t.needs_human.take()).is_some()).await?;
        self.audit("reset", json!({"target": key, "was_blocked": had}));
        Ok(had)
    }
}
