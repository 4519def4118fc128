//! Carrying actions out: each action kind as calls to its service's executor (or the
//! failover protocol, the policy's own command or webhook), the side effects silenced,
//! scale-ins planned once a scale-out has been quiet.

use super::*;

impl Healer {
    /// Runs an action, then verifies it.
    pub(super) async fn execute(self: Arc<Self>, id: String) {
        let _mine = Handling::new(&self, &id);
        let Some(action) = self.store.read(|s| s.actions.iter().find(|a| a.id == id).cloned()) else { return };
        let Some(policy) = self.policies.policies.iter().find(|p| p.name == action.policy).cloned() else { return };
        let base = json!({"action_id": id, "policy": action.policy, "action": action.kind, "target": action.target});
        let silences = self.silence_side_effects(&action, &policy).await;
        self.audit("acting", base.clone());
        let call = tracing::info_span!(
            "executor call",
            otel.name = %format!("{} {}", action.kind.as_str(), action.target.key()),
            otel.kind = "client",
            hale.action = action.kind.as_str(),
            otel.status_code = Empty,
        );
        let result = async {
            match action.kind {
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
            }
        }
        .instrument(call.clone())
        .await;
        if let Err(e) = result {
            call.record("otel.status_code", "ERROR");
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
    pub(super) async fn failover(&self, action: &Action) -> Result<(), ActionError> {
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
        let members = self.members_of(&service).await?;
        let mut statuses = self.protocol.statuses(members).await;
        // The replica the alert names is the one failing, whatever it says of itself —
        // unless it is the primary saying its writes wait on its standby: then the standby
        // is what fails.
        for (m, status) in
            statuses.iter_mut().filter(|(m, _)| action.target.instance.as_deref() == Some(m.instance.as_str()))
        {
            if !status.is_some_and(|s| s.role == hale_core::Role::Primary && s.sync_blocked) {
                m.ready = Some(false);
                m.listed_primary = true;
            }
        }
        let released = self.store.read(|s| s.released.get(&service).copied());
        let (candidate, old_primary, epoch) = match crate::failover::plan(&statuses, released) {
            crate::failover::Plan::Release { primary, stamp } => {
                return self.release(action, &service, &statuses[primary].0, stamp).await;
            }
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

    /// Releases the standby of `primary`'s sync set `stamp`, so writes are acknowledged
    /// alone. The release is recorded first (durably, and in etcd for the next leader):
    /// from then on no standby of that set is promoted, even if the call's answer is lost.
    async fn release(
        &self,
        action: &Action,
        service: &str,
        primary: &crate::failover::Member,
        stamp: hale_core::api::SyncStamp,
    ) -> Result<(), ActionError> {
        let next = hale_core::api::SyncStamp { generation: stamp.generation + 1, ..stamp };
        let key = service.to_string();
        self.store
            .update(move |s| {
                let kept = s.released.entry(key.clone()).or_default();
                *kept = (*kept).max(next);
            })
            .await
            .map_err(|e| format!("recording the release: {e}"))?;
        self.protocol.release(primary, stamp).await?;
        let detail = format!(
            "released {}'s standby from its sync set (epoch {}, set {} -> {}): writes are acknowledged by the primary \
             alone, and the standby is not promoted until it has caught up and joined the new set",
            primary.instance, stamp.epoch, stamp.generation, next.generation
        );
        self.set_status(&action.id, Status::Running, &detail).await;
        Ok(())
    }

    /// The replicas of a primary/standby service: its gateway pool's members (with their
    /// readiness), else the inventory's `members`.
    pub(super) async fn members_of(&self, service: &str) -> Result<Vec<crate::failover::Member>, ActionError> {
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
    pub(super) async fn rejoin(&self, action: &Action) -> Result<(), ActionError> {
        let service = action.target.service.clone().ok_or("the alert names no service")?;
        let instance = action.target.instance.as_deref().ok_or("the alert names no replica to rejoin")?;
        if self.executors.get(&service).is_some_and(|e| e.can(Capability::Rejoin)) {
            return self.act(action, Capability::Rejoin, None).await;
        }
        let statuses = self.protocol.statuses(self.members_of(&service).await?).await;
        let released = self.store.read(|s| s.released.get(&service).copied());
        let primary = match crate::failover::plan(&statuses, released) {
            crate::failover::Plan::NotNeeded { primary } | crate::failover::Plan::Release { primary, .. } => {
                &statuses[primary]
            }
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
        let detail = format!(
            "{instance} rejoined as the standby of {} under epoch {epoch}: kept its log through change {}, set aside {} change(s) the new primary never had",
            primary.instance, reply.kept_through_seq, reply.set_aside
        );
        self.set_status(&action.id, Status::Running, &detail).await;
        Ok(())
    }

    /// Starts the instances a lost node ran on the healthy nodes, least loaded first, and
    /// registers them with their load balancer: every service of the inventory that can
    /// start another instance. The rest (primary/standby services, which are not started
    /// blank elsewhere, and services the inventory does not list) are left to failover and
    /// humans, and the detail says so.
    pub(super) async fn reschedule(&self, action: &Action) -> Result<(), ActionError> {
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
        let mut by_kubernetes = Vec::new();
        for (i, (labels, _)) in lost.iter().enumerate() {
            let (Some(service), Some(instance)) = (labels.get("service"), labels.get("instance")) else { continue };
            let Ok(executor) = self.executor(service, Capability::StartAnother) else {
                skipped.push(instance.clone());
                continue;
            };
            // A Kubernetes workload is moved by its controller, once the node is cordoned
            // and its pods there evicted: one call per service, whatever its pods.
            if executor.kind() == crate::inventory::ExecutorKind::Kubernetes {
                if !started.iter().any(|(s, _): &(String, String)| s == service) {
                    let request = Request { node: Some(node.clone()), ..self.request(action, service) };
                    let detail = match executor.act(Capability::StartAnother, &request).await? {
                        Acted::Done(detail) | Acted::Started { instance: detail, .. } => detail,
                    };
                    by_kubernetes.push(detail);
                    started.push((service.clone(), format!("{service} pods of {node}")));
                }
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
        let detail = std::iter::once(detail).chain(by_kubernetes).collect::<Vec<_>>().join("; ");
        self.record_started(&action.id, started, &detail).await;
        Ok(())
    }

    /// Nodes reporting fresh host metrics, least loaded first, but `exclude`.
    pub(super) async fn healthy_nodes(&self, exclude: &str) -> Result<Vec<(String, f64)>, ActionError> {
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
    pub(super) async fn scale_out(&self, action: &Action) -> Result<(), ActionError> {
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
    pub(super) async fn start_another(
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
    pub(super) async fn scale_in(&self, action: &Action) -> Result<(), ActionError> {
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
    pub(super) fn request(&self, action: &Action, service: &str) -> Request {
        Request {
            action_id: action.id.clone(),
            service: service.to_string(),
            instance: action.target.instance.clone(),
            node: action.target.node.clone(),
            url: None,
            labels: action.alert.labels.clone(),
            grace: None,
            kind: action.kind,
        }
    }

    /// `capability` on the action's target through its service's executor; the
    /// executor's account of it becomes the action's detail.
    pub(super) async fn act(
        &self,
        action: &Action,
        capability: Capability,
        grace: Option<Duration>,
    ) -> Result<(), ActionError> {
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
    pub(super) fn load_balancer_of(&self, service: &str) -> Option<&LoadBalancerClient> {
        self.load_balancers.get(self.inventory.service(service)?.load_balancer.as_ref()?)
    }

    /// Scale-outs whose service has been quiet for their stabilization window get a
    /// scale-in (an action of its own, audited and verified like any other).
    pub(super) async fn scale_in_due(self: &Arc<Self>) {
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
            // A scale-in is a repair of its own: its own trace.
            let span = super::repair_span(&format!("heal scale-in {}", out.target.key()), &out.alert);
            let (trace_id, traceparent) =
                span.in_scope(|| (hale_trace::trace_ids().map(|ids| ids.trace_id), hale_trace::traceparent()));
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
                trace_id,
                traceparent,
            };
            super::describe(&span, &action);
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
                span.in_scope(|| self.audit("planned", json!({"action_id": id, "policy": out.policy, "action": ActionKind::ScaleIn, "target": out.target, "after": out.id, "reason": format!("quiet for {}", humantime::format_duration(stabilization))})));
                tokio::spawn(self.clone().execute(id).instrument(span));
            }
        }
    }

    /// Runs the policy's command (no shell: program and arguments split at whitespace)
    /// with the alert as JSON on stdin; exit status 0 within the timeout is success.
    pub(super) async fn exec(&self, policy: &Policy, action: &Action) -> Result<(), ActionError> {
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
        let mut command = tokio::process::Command::new(program);
        // The healer's tokens and webhook secret are not the command's.
        for key in hale_core::withheld_from_children(|_| false) {
            command.env_remove(key);
        }
        let mut child = command
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
    pub(super) async fn notify_automation(&self, policy: &Policy, action: &Action) -> Result<(), ActionError> {
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
    pub(super) async fn silence_side_effects(&self, action: &Action, policy: &Policy) -> Vec<String> {
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
}
