//! The healing loop of DESIGN.md: alert → policy → safety checks → action (or the reason
//! why not) → verification → resolved, or escalation to humans. Alerts are decided one at
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

use crate::audit::Audit;
use crate::clients::{ClientError, Collector};
use crate::executor::{Acted, Capability, Executor, LoadBalancerClient, Request};
use crate::metrics::Metrics;
use crate::policy::{ActionKind, Policy, PolicyFile, fill};
use crate::safety::{self, Facts, Live, Refusal, Retry, RetryWhen};
use crate::state::{Action, Alert, Deferred, Labels, SaveError, Status, Store, Target};
use hale_core::time::now_ms;

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

fn escalated_alert(a: &Alert) -> hale_core::api::EscalatedAlert {
    hale_core::api::EscalatedAlert {
        alertname: a.name().to_string(),
        fingerprint: a.fingerprint.clone(),
        starts_at: a.starts_at.clone(),
        labels: a.labels.clone(),
    }
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

impl Healer {
    fn audit(&self, event: &str, fields: Value) {
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
                self.audit("resumed", json!({"action_id": id, "reason": "the healer that ran this action stopped or lost the lead; verifying it, not repeating it"}));
                tokio::spawn(self.clone().verify_and_finish(id, Vec::new()));
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

    /// Policy, safety checks, then an action (or a recorded refusal).
    async fn decide(self: &Arc<Self>, alert: &Alert) {
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
            return;
        };
        let target = Target::from_labels(&alert.labels);
        if let Err(refusal) = self.check(&policy, &target).await {
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
        };
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
            }
            Status::AwaitingApproval => {
                self.metrics.decided("awaiting_approval");
                self.audit("awaiting_approval", fields);
            }
            _ => {
                self.metrics.decided("acted");
                self.audit("planned", fields);
                tokio::spawn(self.clone().execute(action.id.clone()));
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

    /// Runs an action, then verifies it.
    async fn execute(self: Arc<Self>, id: String) {
        let _mine = Handling::new(&self, &id);
        let Some(action) = self.store.read(|s| s.actions.iter().find(|a| a.id == id).cloned()) else { return };
        let Some(policy) = self.policies.policies.iter().find(|p| p.name == action.policy).cloned() else { return };
        let base = json!({"action_id": id, "policy": action.policy, "action": action.kind, "target": action.target});
        let silences = self.silence_side_effects(&action, &policy).await;
        self.audit("acting", base.clone());
        let result = match action.kind {
            ActionKind::Restart => {
                let grace = policy.params.get("grace").and_then(|g| humantime::parse_duration(g).ok());
                self.act(&action, Capability::Restart, grace).await
            }
            ActionKind::Failover => self.failover(&action).await,
            ActionKind::Rejoin => self.rejoin(&action).await,
            ActionKind::Reschedule => self.reschedule(&action).await,
            ActionKind::ScaleOut => self.scale_out(&action).await,
            ActionKind::ScaleIn => self.scale_in(&action).await,
            ActionKind::Exec => self.exec(&policy, &action).await,
            ActionKind::Webhook => self.notify_automation(&policy, &action).await,
        };
        if let Err(e) = result {
            self.finish(&id, Status::Failed, &e.to_string(), &silences).await;
            return;
        }
        let detail =
            self.store.read(|s| s.actions.iter().find(|a| a.id == id).map(|a| a.detail.clone())).unwrap_or_default();
        let mut acted = base;
        acted["detail"] = Value::from(detail);
        self.audit("acted", acted);
        self.verify_and_finish(id, silences).await;
    }

    /// Fails a primary/standby service over. By its executor's own `promote` (and
    /// `fence`) hooks when it has them; else by the failover protocol (`crate::failover`):
    /// every replica's status, the ready standby with the most of the log promoted under
    /// the next epoch, the old primary fenced (when it can still be reached: a primary
    /// that cannot learn the epoch now learns it from the others, whose writes carry it),
    /// and the load balancer pointed at the new primary.
    async fn failover(&self, action: &Action) -> Result<(), ActionError> {
        let service = action.target.service.clone().ok_or("the alert names no service to fail over")?;
        if let Some(executor) = self.executors.get(&service).filter(|e| e.can(Capability::Promote)) {
            let request = self.request(action, &service);
            let mut detail = match executor.act(Capability::Promote, &request).await? {
                Acted::Done(detail) | Acted::Started { instance: detail, .. } => detail,
            };
            if executor.can(Capability::Fence) {
                match executor.act(Capability::Fence, &request).await {
                    Ok(_) => detail.push_str("; the old primary fenced"),
                    Err(e) => detail.push_str(&format!("; fencing the old primary failed: {e}")),
                }
            }
            self.set_status(&action.id, Status::Running, &detail).await;
            return Ok(());
        }
        let mut members = self.members_of(&service).await?;
        // The replica the alert names is the one failing, whatever it says of itself.
        for m in members.iter_mut().filter(|m| action.target.instance.as_deref() == Some(m.instance.as_str())) {
            m.ready = Some(false);
            m.listed_primary = true;
        }
        let statuses = self.protocol.statuses(members).await;
        let (candidate, old_primary, epoch) = match crate::failover::plan(&statuses) {
            crate::failover::Plan::NotNeeded { primary } => {
                // A blip that passed before the healer got to it: nothing to repair,
                // nothing to escalate; verification still watches the alert clear.
                let detail =
                    format!("not needed: {} is the ready primary, nothing failed over", statuses[primary].0.instance);
                self.not_needed(action, &detail).await;
                return Ok(());
            }
            crate::failover::Plan::NoCandidate(why) => return Err(why.into()),
            crate::failover::Plan::Promote { candidate, old_primary, epoch } => (candidate, old_primary, epoch),
        };
        let new = &statuses[candidate].0;
        let epoch = self.protocol.promote(new, epoch).await?;
        if let Some(lb) = self.load_balancer_of(&service) {
            lb.set_primary(&service, &new.instance, &new.url, epoch).await?;
        }
        let fenced = match old_primary.map(|i| &statuses[i].0) {
            Some(old) => match self.protocol.fence(old, epoch).await {
                Ok(()) => format!("{} is fenced", old.instance),
                Err(e) => format!("{} could not be told ({e}); the new epoch fences it", old.instance),
            },
            None => "the old primary does not answer; the new epoch fences it".to_string(),
        };
        let detail = format!("promoted {} to primary under epoch {epoch}; {fenced}", new.instance);
        self.set_status(&action.id, Status::Running, &detail).await;
        Ok(())
    }

    /// The replicas of a primary/standby service: its gateway pool's members (with their
    /// readiness), else the inventory's `members`.
    async fn members_of(&self, service: &str) -> Result<Vec<crate::failover::Member>, ActionError> {
        if let Some(LoadBalancerClient::Gateway(gateway)) = self.load_balancer_of(service) {
            let pool = gateway.pool(service).await?;
            return Ok(pool
                .members
                .into_iter()
                .map(|m| crate::failover::Member {
                    listed_primary: pool.primary.as_deref() == Some(m.instance.as_str()),
                    instance: m.instance,
                    url: m.url,
                    ready: Some(m.ready),
                })
                .collect());
        }
        let listed = self.inventory.service(service).map(|s| s.members.clone()).unwrap_or_default();
        if listed.is_empty() {
            return Err(format!("{service} lists no members (healer.toml) and its load balancer none").into());
        }
        Ok(listed
            .into_iter()
            .map(|m| crate::failover::Member { instance: m.instance, url: m.url, ready: None, listed_primary: false })
            .collect())
    }

    /// Makes a fenced old primary a standby of the current primary (the failover
    /// protocol's rejoin): it keeps the log both share, sets aside what only it had, and
    /// catches up (verified by its readiness, which waits for that).
    async fn rejoin(&self, action: &Action) -> Result<(), ActionError> {
        let service = action.target.service.clone().ok_or("the alert names no service")?;
        let instance = action.target.instance.as_deref().ok_or("the alert names no replica to rejoin")?;
        if self.executors.get(&service).is_some_and(|e| e.can(Capability::Rejoin)) {
            return self.act(action, Capability::Rejoin, None).await;
        }
        let statuses = self.protocol.statuses(self.members_of(&service).await?).await;
        let primary = match crate::failover::plan(&statuses) {
            crate::failover::Plan::NotNeeded { primary } => &statuses[primary],
            _ => {
                return Err(format!(
                    "{service} has no ready primary of the newest epoch; a standby would follow nothing"
                )
                .into());
            }
        };
        let (primary, epoch) = (&primary.0, primary.1.map_or(0, |s| s.epoch));
        if primary.instance == instance {
            let detail = format!("not needed: {instance} is the primary, nothing to rejoin");
            self.not_needed(action, &detail).await;
            return Ok(());
        }
        let member = statuses
            .iter()
            .map(|(m, _)| m)
            .find(|m| m.instance == instance)
            .ok_or_else(|| format!("{instance} is not a member of {service}"))?;
        let reply = self.protocol.rejoin(member, primary, epoch).await?;
        let (kept, aside) = (reply["kept_through_seq"].as_u64(), reply["set_aside"].as_u64());
        let detail = match (kept, aside) {
            (Some(kept), Some(aside)) => format!(
                "{instance} rejoined as the standby of {} under epoch {epoch}: kept its log through change {kept}, set aside {aside} change(s) the new primary never had",
                primary.instance
            ),
            _ => format!("{instance} rejoined as the standby of {} under epoch {epoch}", primary.instance),
        };
        self.set_status(&action.id, Status::Running, &detail).await;
        Ok(())
    }

    /// Starts the instances a lost node ran on the healthy nodes, least loaded first, and
    /// registers them with their load balancer: every service of the inventory that can
    /// start another instance. The rest (primary/standby services, which are not started
    /// blank elsewhere, and services the inventory does not list) are left to failover and
    /// humans, and the detail says so.
    async fn reschedule(&self, action: &Action) -> Result<(), ActionError> {
        let node = action.target.node.clone().ok_or("the alert names no node")?;
        let lost = self
            .collector
            .query(&format!(
                "max by (service, instance) (last_over_time(probe_success{{probe=\"readyz\",node={}}}[1h]))",
                quote(&node)
            ))
            .await?;
        let mut started = Vec::new();
        let mut skipped = Vec::new();
        let mut placed_on = std::collections::BTreeSet::new();
        for (i, (labels, _)) in lost.iter().enumerate() {
            let (Some(service), Some(instance)) = (labels.get("service"), labels.get("instance")) else { continue };
            if self.executor(service, Capability::StartAnother).is_err() {
                skipped.push(instance.clone());
                continue;
            }
            let (name, on) = self.start_another(action, service, &node, i).await?;
            placed_on.extend(on);
            started.push((service.clone(), name));
        }
        let detail = format!(
            "started {}{}{}",
            if started.is_empty() {
                "nothing".to_string()
            } else {
                started.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>().join(", ")
            },
            if placed_on.is_empty() {
                String::new()
            } else {
                format!(" on {}", placed_on.into_iter().collect::<Vec<_>>().join(", "))
            },
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; left {} to failover and humans", skipped.join(", "))
            }
        );
        self.record_started(&action.id, started, &detail).await;
        Ok(())
    }

    /// Nodes reporting fresh host metrics, least loaded first, but `exclude`.
    async fn healthy_nodes(&self, exclude: &str) -> Result<Vec<(String, f64)>, ActionError> {
        let healthy = self
            .collector
            .query(&format!(
                "node_load1{{node!={}}} and on (node) (time() - timestamp(node_load1) < 15)",
                quote(exclude)
            ))
            .await?;
        let mut nodes: Vec<(String, f64)> =
            healthy.into_iter().filter_map(|(l, v)| l.get("node").map(|n| (n.clone(), v))).collect();
        nodes.sort_by(|a, b| a.1.total_cmp(&b.1));
        nodes.dedup_by(|a, b| a.0 == b.0);
        if nodes.is_empty() {
            return Err("no healthy node to start replicas on".into());
        }
        Ok(nodes)
    }

    /// One more instance of the alert's service, started by its executor (through an
    /// agent: on the least loaded healthy node the service may run on) and registered
    /// with its load balancer. Verified by its readiness; taken back by a scale-in once
    /// the service has been quiet for the policy's `stabilization` (params, default 10m).
    async fn scale_out(&self, action: &Action) -> Result<(), ActionError> {
        let service = action.target.service.clone().ok_or("the alert names no service")?;
        let (name, node) = self.start_another(action, &service, "", 0).await?;
        let started = vec![(service.clone(), name.clone())];
        let on = node.map(|n| format!(" on {n}")).unwrap_or_default();
        self.record_started(&action.id, started, &format!("started {name}{on}")).await;
        Ok(())
    }

    /// Starts one more instance of `service` through its executor — placed by the
    /// healer (the `nth` least loaded healthy node of those it may run on, never
    /// `exclude`) when the executor is the agents' — and registers it with the service's
    /// load balancer. Returns its name and node.
    async fn start_another(
        &self,
        action: &Action,
        service: &str,
        exclude: &str,
        nth: usize,
    ) -> Result<(String, Option<String>), ActionError> {
        let executor = self.executor(service, Capability::StartAnother)?;
        let node = if executor.kind() == crate::inventory::ExecutorKind::Agent {
            let allowed = self.inventory.service(service).map(|s| s.nodes.clone()).unwrap_or_default();
            let nodes: Vec<String> = self
                .healthy_nodes(exclude)
                .await?
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| allowed.contains(n))
                .collect();
            if nodes.is_empty() {
                return Err(format!("no healthy node of {} to start {service} on", allowed.join(", ")).into());
            }
            Some(nodes[nth % nodes.len()].clone())
        } else {
            None
        };
        let request = Request { node, ..self.request(action, service) };
        let (instance, node, url) = match executor.act(Capability::StartAnother, &request).await? {
            Acted::Started { instance, node, url } => (instance, node, url),
            Acted::Done(detail) => {
                return Err(format!("{service}'s executor started nothing it named: {detail}").into());
            }
        };
        if let Some(lb) = self.load_balancer_of(service) {
            let url = url.ok_or_else(|| format!("{instance} was started, but its URL is unknown: not registered"))?;
            lb.register(service, &instance, &url).await?;
        }
        Ok((instance, node))
    }

    /// Deregisters (then a pause for requests in flight) and stops the instances of the
    /// scale-out it follows, through the service's executor.
    async fn scale_in(&self, action: &Action) -> Result<(), ActionError> {
        let (service, name) = action.started.first().cloned().ok_or("nothing to scale in")?;
        let executor = self.executor(&service, Capability::Stop)?;
        let node = if executor.kind() == crate::inventory::ExecutorKind::Agent {
            let found = self
                .collector
                .query(&format!("max by (node) (last_over_time(probe_success{{instance={}}}[1h]))", quote(&name)))
                .await?;
            Some(
                found
                    .first()
                    .and_then(|(l, _)| l.get("node").cloned())
                    .ok_or_else(|| format!("no node is known for {name}"))?,
            )
        } else {
            None
        };
        if let Some(lb) = self.load_balancer_of(&service) {
            lb.deregister(&service, &name).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let request = Request { instance: Some(name.clone()), node: node.clone(), ..self.request(action, &service) };
        executor.act(Capability::Stop, &request).await?;
        let on = node.map(|n| format!(" on {n}")).unwrap_or_default();
        self.set_status(&action.id, Status::Running, &format!("drained and stopped {name}{on}")).await;
        Ok(())
    }

    /// What an action asks of an executor about `service`: its target and alert.
    fn request(&self, action: &Action, service: &str) -> Request {
        Request {
            action_id: action.id.clone(),
            service: service.to_string(),
            instance: action.target.instance.clone(),
            node: action.target.node.clone(),
            url: None,
            labels: action.alert.labels.clone(),
            grace: None,
        }
    }

    /// `capability` on the action's target through its service's executor; the
    /// executor's account of it becomes the action's detail.
    async fn act(&self, action: &Action, capability: Capability, grace: Option<Duration>) -> Result<(), ActionError> {
        let service = action.target.service.clone().ok_or("the alert names no service")?;
        let executor = self.executor(&service, capability)?;
        let request = Request { grace, ..self.request(action, &service) };
        let detail = match executor.act(capability, &request).await? {
            Acted::Done(detail) => detail,
            Acted::Started { instance, .. } => format!("started {instance}"),
        };
        self.set_status(&action.id, Status::Running, &detail).await;
        Ok(())
    }

    /// The executor of `service`, if it can do `capability`; else why not.
    pub fn executor(&self, service: &str, capability: Capability) -> Result<&dyn Executor, ActionError> {
        let entry = self
            .inventory
            .service(service)
            .ok_or_else(|| format!("service {service:?} is not in the healer's inventory (healer.toml)"))?;
        let executor = self.executors.get(service).ok_or_else(|| format!("service {service:?} has no executor"))?;
        if !executor.can(capability) || !entry.capabilities().contains(&capability) {
            return Err(format!(
                "the {} executor of {service:?} cannot {}",
                executor.kind().as_str(),
                capability.as_str()
            )
            .into());
        }
        Ok(executor.as_ref())
    }

    /// The load balancer `service`'s instances are registered with, if any.
    fn load_balancer_of(&self, service: &str) -> Option<&LoadBalancerClient> {
        self.load_balancers.get(self.inventory.service(service)?.load_balancer.as_ref()?)
    }

    /// Scale-outs whose service has been quiet for their stabilization window get a
    /// scale-in (an action of its own, audited and verified like any other).
    async fn scale_in_due(self: &Arc<Self>) {
        let now = now_ms();
        let due: Vec<Action> = self.store.read(|s| {
            s.actions
                .iter()
                .filter(|a| a.kind == ActionKind::ScaleOut && a.status == Status::Succeeded && a.followed_by.is_none())
                .cloned()
                .collect()
        });
        for out in due {
            let stabilization = self
                .policies
                .policies
                .iter()
                .find(|p| p.name == out.policy)
                .and_then(|p| p.params.get("stabilization"))
                .and_then(|t| humantime::parse_duration(t).ok())
                .unwrap_or(Duration::from_secs(600));
            if now - out.updated_ms < stabilization.as_millis() as i64 {
                continue;
            }
            // Quiet: the alert that asked for more capacity is not active.
            if !matches!(self.collector.alert_active(&watch_labels(&out.alert)).await, Ok(false)) {
                continue;
            }
            if self.store.read(|s| s.paused) {
                continue;
            }
            let id = new_id();
            let action = Action {
                id: id.clone(),
                policy: out.policy.clone(),
                kind: ActionKind::ScaleIn,
                target: out.target.clone(),
                alert: out.alert.clone(),
                status: Status::Running,
                created_ms: now,
                updated_ms: now,
                expires_ms: None,
                detail: String::new(),
                started: out.started.clone(),
                followed_by: None,
                burn_before: None,
                burn_after: None,
            };
            let saved = self
                .store
                .update(|s| {
                    if let Some(o) = s.actions.iter_mut().find(|a| a.id == out.id) {
                        o.followed_by = Some(id.clone());
                    }
                    s.actions.push(action.clone());
                })
                .await;
            if saved.is_ok() {
                self.audit("planned", json!({"action_id": id, "policy": out.policy, "action": ActionKind::ScaleIn, "target": out.target, "after": out.id, "reason": format!("quiet for {}", humantime::format_duration(stabilization))}));
                tokio::spawn(self.clone().execute(id));
            }
        }
    }

    /// Whether the instances are out of their load balancer and stopped (no fresh
    /// readiness saying otherwise).
    async fn started_gone(&self, started: &[(String, String)]) -> Result<bool, ActionError> {
        for (service, name) in started {
            if let Some(LoadBalancerClient::Gateway(gateway)) = self.load_balancer_of(service)
                && gateway.members(service).await?.iter().any(|m| &m.instance == name)
            {
                return Ok(false);
            }
            let q = format!("time() - timestamp(probe_success{{probe=\"readyz\",instance={}}}) < 3", quote(name));
            let fresh = self.collector.query(&q).await?;
            // Probes of a stopped replica stop arriving... or say it is not ready.
            let ready = self
                .collector
                .query(&format!("probe_success{{probe=\"readyz\",instance={}}} == 1", quote(name)))
                .await?;
            if !fresh.is_empty() && !ready.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether every instance an action started is ready: in the gateway's pool, or (any
    /// other load balancer, or none) by a fresh `probe_success` or `up` of 1 under its name.
    async fn started_ready(&self, started: &[(String, String)]) -> Result<bool, ActionError> {
        for (service, name) in started {
            let ready = match self.load_balancer_of(service) {
                Some(LoadBalancerClient::Gateway(gateway)) => {
                    gateway.members(service).await?.iter().any(|m| &m.instance == name && m.ready)
                }
                _ => {
                    let q = format!(
                        "(probe_success{{instance={n}}} or up{{instance={n}}}) == 1 and (time() - timestamp(probe_success{{instance={n}}} or up{{instance={n}}}) < 15)",
                        n = quote(name)
                    );
                    !self.collector.query(&q).await?.is_empty()
                }
            };
            if !ready {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs the policy's command (no shell: program and arguments split at whitespace)
    /// with the alert as JSON on stdin; exit status 0 within the timeout is success.
    async fn exec(&self, policy: &Policy, action: &Action) -> Result<(), ActionError> {
        let command = policy.params.get("command").cloned().unwrap_or_default();
        let mut words = command.split_whitespace();
        let program = words.next().ok_or("params.command is empty")?;
        let timeout = policy
            .params
            .get("timeout")
            .and_then(|t| humantime::parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(30));
        let input = hale_core::api::ExecInput {
            action_id: action.id.clone(),
            alert: action.alert.clone(),
            target: action.target.clone(),
        };
        let input = serde_json::to_vec(&input).unwrap_or_default();
        let mut child = tokio::process::Command::new(program)
            .args(words)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {program}: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(&input).await;
        }
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("{program} exited with {status}").into()),
            Ok(Err(e)) => Err(format!("waiting for {program}: {e}").into()),
            Err(_) => {
                let _ = child.kill().await;
                Err(format!("{program} did not finish within {}; killed", humantime::format_duration(timeout)).into())
            }
        }
    }

    /// Posts the alert to outside automation (signed like the collector's webhooks); a
    /// 2xx is success.
    async fn notify_automation(&self, policy: &Policy, action: &Action) -> Result<(), ActionError> {
        let url = policy.params.get("url").ok_or("params.url is missing")?;
        let body = hale_core::api::ActionWebhook {
            action_id: action.id.clone(),
            alert: action.alert.clone(),
            policy: action.policy.clone(),
            target: action.target.clone(),
            version: hale_core::api::ACTION_WEBHOOK_VERSION.into(),
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut req = self.client.post(url).timeout(Duration::from_secs(10)).header("content-type", "application/json");
        if let Some(secret) = &self.escalation.secret {
            req = req.header(
                hale_core::webhook::SIGNATURE_HEADER,
                hale_core::webhook::sign(secret, (now_ms() / 1000).max(0) as u64, &body),
            );
        }
        let r = req.body(body).send().await.map_err(|e| format!("posting to automation: {}", e.without_url()))?;
        if r.status().is_success() { Ok(()) } else { Err(format!("automation answered {}", r.status()).into()) }
    }

    /// The alerts an action itself causes on its target, silenced for the verification
    /// time and linked to the action.
    async fn silence_side_effects(&self, action: &Action, policy: &Policy) -> Vec<String> {
        // A restart makes its replica briefly unready and counts a restart; a scale-in ends
        // a replica for good, so its telemetry stops (TelemetryStale looks back an hour).
        let (caused, lasting): (&[&str], bool) = match action.kind {
            ActionKind::Restart => (&["ReplicaNeverReady", "CrashLooping", "TelemetryStale"], false),
            ActionKind::ScaleIn => (&["TelemetryStale", "ReplicaDown", "ReplicaNeverReady"], true),
            // Not ready while it catches up.
            ActionKind::Rejoin => (&["ReplicaDown", "ReplicaNeverReady"], false),
            ActionKind::Failover
            | ActionKind::Reschedule
            | ActionKind::ScaleOut
            | ActionKind::Exec
            | ActionKind::Webhook => (&[], false),
        };
        let instances: Vec<String> = match action.kind {
            ActionKind::ScaleIn => action.started.iter().map(|(_, n)| n.clone()).collect(),
            ActionKind::Restart
            | ActionKind::Failover
            | ActionKind::Rejoin
            | ActionKind::Reschedule
            | ActionKind::ScaleOut
            | ActionKind::Exec
            | ActionKind::Webhook => action.target.instance.iter().cloned().collect(),
        };
        let until = if lasting {
            now_ms() + 65 * 60_000
        } else {
            now_ms() + policy.verify.timeout.0.as_millis() as i64 + 60_000
        };
        let mut ids = Vec::new();
        for instance in &instances {
            for name in caused {
                let matchers: BTreeMap<String, String> =
                    [("alertname".to_string(), name.to_string()), ("instance".to_string(), instance.clone())]
                        .into_iter()
                        .collect();
                match self.collector.silence(&matchers, until, &format!("hale-healer action {}", action.id)).await {
                    // Silences of a replica that is gone for good outlive the action.
                    Ok(id) if !lasting => ids.push(id),
                    Ok(_) => {}
                    Err(e) => self.audit(
                        "silence_failed",
                        json!({"action_id": action.id, "alertname": name, "reason": e.to_string()}),
                    ),
                }
            }
        }
        ids
    }

    /// Watches the condition until it clears or the policy's timeout passes.
    async fn verify_and_finish(self: Arc<Self>, id: String, silences: Vec<String>) {
        let _mine = Handling::new(&self, &id);
        let Some(action) = self.store.read(|s| s.actions.iter().find(|a| a.id == id).cloned()) else { return };
        let policy = self.policies.policies.iter().find(|p| p.name == action.policy).cloned();
        let verify = policy.map(|p| p.verify).unwrap_or_default();
        self.set_status(&id, Status::Verifying, "").await;
        let deadline = tokio::time::Instant::now() + verify.timeout.0;
        let watched = watch_labels(&action.alert);
        loop {
            if !self.store.is_leader() {
                return; // the new leader verifies it
            }
            let current = self
                .store
                .read(|s| s.actions.iter().find(|a| a.id == id).map(|a| a.started.clone()))
                .unwrap_or_default();
            let cleared = match (&verify.query, action.kind) {
                (Some(q), _) => self
                    .collector
                    .query(&fill(q, &action.alert.labels))
                    .await
                    .map(|r| r.is_empty())
                    .map_err(ActionError::from),
                // A lost node stays lost: what is proven is that its replicas run elsewhere.
                (None, ActionKind::Reschedule | ActionKind::ScaleOut) => self.started_ready(&current).await,
                (None, ActionKind::ScaleIn) => self.started_gone(&current).await,
                (None, _) => {
                    self.collector.alert_active(&watched).await.map(|active| !active).map_err(ActionError::from)
                }
            };
            // The condition cleared; where the service has an SLO, its burn over the
            // shortest page window must be back under the page threshold too.
            let burn = if matches!(cleared, Ok(true)) { self.burn_of(&action.alert).await } else { None };
            let burning = burn.filter(|b| *b >= PAGE_BURN);
            if matches!(cleared, Ok(true)) && burning.is_none() {
                let seconds = hale_core::time::parse_rfc3339(&action.alert.starts_at)
                    .map(|t| (now_ms() - t) as f64 / 1000.0)
                    .filter(|s| *s >= 0.0);
                if let Some(s) = seconds {
                    self.metrics.mttr(s);
                }
                let detail = match burn {
                    Some(b) => format!("the condition cleared and the SLO burns at {b:.2} (page above {PAGE_BURN})"),
                    None => "the condition cleared".to_string(),
                };
                self.record_burn_after(&id, burn).await;
                self.finish(&id, Status::Succeeded, &detail, &silences).await;
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let within = humantime::format_duration(verify.timeout.0);
                let why = match (cleared, burning) {
                    (Err(e), _) => format!("could not verify: {e}"),
                    (Ok(true), Some(b)) => format!(
                        "the condition cleared, but the SLO still burns at {b:.2} (page above {PAGE_BURN}) after {within}"
                    ),
                    (Ok(_), _) => format!("the condition did not clear within {within}"),
                };
                let after = match burning {
                    Some(b) => Some(b),
                    None => self.burn_of(&action.alert).await,
                };
                self.record_burn_after(&id, after).await;
                self.finish(&id, Status::Failed, &why, &silences).await;
                return;
            }
            tokio::time::sleep(VERIFY_EVERY).await;
        }
    }

    /// An action that found nothing to repair: said so, and not counted against the
    /// target's cooldown and rate limits (nothing was done to it).
    async fn not_needed(&self, action: &Action, detail: &str) {
        let (key, at) = (action.target.key(), action.created_ms);
        let _ = self
            .store
            .update(|s| {
                if let Some(t) = s.targets.get_mut(&key)
                    && let Some(i) = t.actions.iter().position(|x| *x == at)
                {
                    t.actions.remove(i);
                }
            })
            .await;
        self.set_status(&action.id, Status::Running, detail).await;
    }

    /// The replicas an action started (what its verification and a later scale-in look at).
    async fn record_started(&self, id: &str, started: Vec<(String, String)>, detail: &str) {
        let _ = self
            .store
            .update(|s| {
                if let Some(a) = s.actions.iter_mut().find(|a| a.id == id) {
                    a.started = started.clone();
                }
            })
            .await;
        self.set_status(id, Status::Running, detail).await;
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

    async fn finish(&self, id: &str, status: Status, detail: &str, silences: &[String]) {
        for s in silences {
            let _ = self.collector.expire_silence(s).await;
        }
        let Some(action) = self.set_status(id, status, detail).await else { return };
        // Alerts refused while this action was in flight may go ahead now.
        self.wake.notify_one();
        let base = json!({"action_id": id, "policy": action.policy, "action": action.kind, "target": action.target, "detail": detail, "burn_before": action.burn_before, "burn_after": action.burn_after});
        if status == Status::Succeeded {
            self.metrics.result(action.kind, "succeeded");
            self.audit("verified", base);
            return;
        }
        self.metrics.result(action.kind, "failed");
        self.audit("failed", base);
        self.escalate(&action, detail).await;
    }

    /// Keeps the SLO burn rate a verification ended with on the action.
    async fn record_burn_after(&self, id: &str, burn: Option<f64>) {
        let saved = self
            .store
            .update(|s| {
                if let Some(a) = s.actions.iter_mut().find(|a| a.id == id) {
                    a.burn_after = burn;
                }
            })
            .await;
        if let Err(e) = saved {
            tracing::error!(error = %e, "could not save an action's burn rate after");
        }
    }

    /// The current burn rate of the alert's SLO, or the worst of its service's SLOs;
    /// `None` without an SLO or without data.
    async fn burn_of(&self, alert: &Alert) -> Option<f64> {
        let q = match (alert.labels.get("sloth_id"), alert.labels.get("service")) {
            (Some(slo), _) => format!("slo:current_burn_rate:ratio{{sloth_id={}}}", quote(slo)),
            (None, Some(service)) => format!("max(slo:current_burn_rate:ratio{{sloth_service={}}})", quote(service)),
            _ => return None,
        };
        self.collector.query(&q).await.ok().and_then(|r| r.first().map(|(_, v)| *v)).filter(|v| v.is_finite())
    }

    /// A failed repair: the target needs a human, and the escalation receivers hear what
    /// was tried.
    async fn escalate(&self, action: &Action, why: &str) {
        let key = action.target.key();
        let _ = self
            .store
            .update(|s| {
                s.targets.entry(key.clone()).or_default().needs_human = Some(format!("{} failed: {why}", action.id));
            })
            .await;
        self.metrics.escalated();
        let tried: Vec<hale_core::api::TriedAction> = self.store.read(|s| {
            s.actions
                .iter()
                .filter(|a| a.target.key() == key)
                .map(|a| hale_core::api::TriedAction {
                    action_id: a.id.clone(),
                    action: a.kind,
                    status: a.status,
                    detail: a.detail.clone(),
                })
                .collect()
        });
        let burn = match action.burn_after {
            Some(b) => Some(b),
            None => self.burn_of(&action.alert).await,
        };
        let body = hale_core::api::Escalation {
            version: hale_core::api::ESCALATION_VERSION.into(),
            action_id: action.id.clone(),
            policy: action.policy.clone(),
            action: action.kind,
            target: action.target.clone(),
            alert: escalated_alert(&action.alert),
            why: why.to_string(),
            tried,
            burn_rate_before: action.burn_before,
            burn_rate_after: burn,
            next: format!("no automatic action on {key} until a human resets it: POST /api/v1/targets/{key}/reset"),
        };
        // Stored durably before anything is sent: a healer killed now sends it on restart.
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let generator = format!("{}/api/v1/actions/{}", self.escalation.external_url, action.id);
        let payload = serde_json::to_value(body.to_webhook(&now, &generator)).unwrap_or_default();
        let until = humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs(86_400));
        let postable =
            serde_json::to_value([body.to_postable(&now, &until.to_string(), &generator)]).unwrap_or_default();
        let created_ms = now_ms();
        let entries = self
            .escalation
            .urls
            .iter()
            .map(|url| hale_outbox::Entry { url: url.clone(), created_ms, body: payload.clone() })
            .chain(self.escalation.alertmanagers.iter().map(|am| hale_outbox::Entry {
                url: format!("{}/api/v2/alerts", am.trim_end_matches('/')),
                created_ms,
                body: postable.clone(),
            }));
        let mut stored = 0;
        for entry in entries {
            match self.escalation.outbox.put(&entry) {
                Ok(()) => stored += 1,
                Err(e) => {
                    tracing::error!(error = %e, receiver = %hale_outbox::redact_url(&entry.url), action_id = %action.id, "could not store an escalation; it is in the audit log")
                }
            }
        }
        self.audit(
            "escalated",
            json!({"action_id": action.id, "target": action.target, "why": why, "receivers": stored}),
        );
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
        self.audit(if approve { "approved" } else { "rejected" }, json!({"action_id": id}));
        if approve {
            tokio::spawn(self.clone().execute(id.to_string()));
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
