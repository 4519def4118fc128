//! Proving a repair: the triggering condition (or the policy's query, or the started
//! instances' readiness) cleared, and the service's SLO burning slower than the page
//! threshold again; the outcome with the burn before and after.

use super::*;

impl Healer {
    /// Whether the instances are out of their load balancer and stopped (no fresh
    /// readiness saying otherwise).
    pub(super) async fn started_gone(&self, started: &[(String, String)]) -> Result<bool, ActionError> {
        for (service, name) in started.iter().filter(|(s, _)| !self.reads_its_state(s)) {
            if let Some(LoadBalancerClient::Gateway(gateway)) = self.load_balancer_of(service)
                && gateway.members(service).await?.iter().any(|m| &m.instance == name)
            {
                return Ok(false);
            }
            // Its readiness (a probe, or for a service nothing probes, its scrape) still
            // arriving and saying ready: not gone. A stopped one's stops, or says not ready.
            let n = quote(name);
            let signal = format!("(probe_success{{probe=\"readyz\",instance={n}}} or up{{instance={n},job!=\"\"}})");
            let q = format!("{signal} == 1 and (time() - timestamp({signal}) < 3)");
            if !self.collector.query(&q).await?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether every instance an action started is ready: in the gateway's pool, or (any
    /// other load balancer, or none) by a fresh `probe_success` or `up` of 1 under its name.
    pub(super) async fn started_ready(&self, started: &[(String, String)]) -> Result<bool, ActionError> {
        for (service, name) in started.iter().filter(|(s, _)| !self.reads_its_state(s)) {
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

    /// Whether `service`'s executor reads the service's state itself (a Kubernetes
    /// workload): then that reading, not the instances' probes, says what it started.
    fn reads_its_state(&self, service: &str) -> bool {
        self.executors.get(service).is_some_and(|e| e.settled().is_some())
    }

    /// Whether every service the action touched whose executor can read it (Kubernetes:
    /// rollout complete, ready replicas as asked) has settled.
    async fn executors_settled(&self, action: &Action, started: &[(String, String)]) -> Result<bool, ActionError> {
        let mut services: std::collections::BTreeSet<&String> = started.iter().map(|(s, _)| s).collect();
        services.extend(action.target.service.as_ref());
        for service in services {
            if let Some(settling) = self.executors.get(service).and_then(|e| e.settled())
                && !settling.await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Watches the condition until it clears or the policy's timeout passes, then records
    /// the outcome (in the repair's span, whose outcome it is).
    pub(super) async fn verify_and_finish(self: Arc<Self>, id: String, silences: Vec<String>) {
        let _mine = Handling::new(&self, &id);
        let Some(action) = self.store.read(|s| s.actions.iter().find(|a| a.id == id).cloned()) else { return };
        let span = tracing::info_span!("verify", otel.name = "verify repair", hale.verified = Empty);
        let Some((status, detail)) = self.verify(&id, &action).instrument(span.clone()).await else { return };
        span.record("hale.verified", status == Status::Succeeded);
        self.finish(&id, status, &detail, &silences).await;
    }

    /// The verification's outcome; `None` when this healer lost the lead (the new leader
    /// verifies).
    async fn verify(&self, id: &str, action: &Action) -> Option<(Status, String)> {
        let policy = self.policies.policies.iter().find(|p| p.name == action.policy).cloned();
        let verify = policy.map(|p| p.verify).unwrap_or_default();
        self.set_status(id, Status::Verifying, "").await;
        let deadline = tokio::time::Instant::now() + verify.timeout.0;
        let watched = watch_labels(&action.alert);
        loop {
            if !self.store.is_leader() {
                return None; // the new leader verifies it
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
                (
                    None,
                    ActionKind::Restart
                    | ActionKind::Failover
                    | ActionKind::Rejoin
                    | ActionKind::Exec
                    | ActionKind::Webhook,
                ) => self.collector.alert_active(&watched).await.map(|active| !active).map_err(ActionError::from),
            };
            // A workload its executor reads must have settled too.
            let cleared = match cleared {
                Ok(true) => self.executors_settled(action, &current).await,
                other => other,
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
                self.record_burn_after(id, burn).await;
                return Some((Status::Succeeded, detail));
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
                self.record_burn_after(id, after).await;
                return Some((Status::Failed, why));
            }
            tokio::time::sleep(VERIFY_EVERY).await;
        }
    }

    /// An action that found nothing to repair: said so, and not counted against the
    /// target's cooldown and rate limits (nothing was done to it).
    pub(super) async fn not_needed(&self, action: &Action, detail: &str) {
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
    pub(super) async fn record_started(&self, id: &str, started: Vec<(String, String)>, detail: &str) {
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

    pub(super) async fn finish(&self, id: &str, status: Status, detail: &str, silences: &[String]) {
        for s in silences {
            let _ = self.collector.expire_silence(s).await;
        }
        let Some(action) = self.set_status(id, status, detail).await else { return };
        super::trace_outcome(status.as_str(), status != Status::Succeeded);
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
    pub(super) async fn record_burn_after(&self, id: &str, burn: Option<f64>) {
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
    pub(super) async fn burn_of(&self, alert: &Alert) -> Option<f64> {
        let q = match (alert.labels.get("sloth_id"), alert.labels.get("service")) {
            (Some(slo), _) => format!("slo:current_burn_rate:ratio{{sloth_id={}}}", quote(slo)),
            (None, Some(service)) => format!("max(slo:current_burn_rate:ratio{{sloth_service={}}})", quote(service)),
            _ => return None,
        };
        self.collector.query(&q).await.ok().and_then(|r| r.first().map(|(_, v)| *v)).filter(|v| v.is_finite())
    }
}
