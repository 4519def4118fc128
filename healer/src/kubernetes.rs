//! The `kubernetes` executor (kube-rs): repairs a service that is a Kubernetes workload
//! (a Deployment, StatefulSet or DaemonSet), through the API server as `kubectl` would.
//!
//! - restart: an alert naming a pod (`pod`, else `instance`) evicts that pod through the
//!   eviction API, so PodDisruptionBudgets hold (a blocked eviction is retried until the
//!   action's timeout, then fails — or deletes the pod, where the service says so); an
//!   alert naming no pod restarts the workload's rollout (the
//!   `kubectl.kubernetes.io/restartedAt` annotation, a strategic merge patch).
//! - start another / stop: one replica more or fewer through the `scale` subresource,
//!   written with the read `resourceVersion` (a 409 is read again and retried).
//! - reschedule (start another on a lost node): the node cordoned, the workload's pods on
//!   it evicted, so its controller starts them elsewhere.
//!
//! Safety: a pod must be the workload's own (its controller, through its ReplicaSet for a
//! Deployment) — an alert's labels never reach a pod of anything else; a ready pod is
//! evicted, and a replica scaled in, only while at least `min_available` ready pods stay.
//! Errors are a production operator's: 409 read again, 429 and 5xx retried with backoff
//! within the timeout, 404 "already gone" is done, 403 fails naming the verb and resource
//! the healer's service account lacks. Verification reads the workload: rollout complete
//! (kubectl's `rollout status` rules) and its ready replicas back to what is asked.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::engine::ActionError;
use crate::executor::{Acted, Acting, Capability, Executor, Request};
use crate::inventory::ExecutorKind;
use crate::policy::ActionKind;

/// The kind of workload a service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    fn resource(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
            WorkloadKind::DaemonSet => "daemonsets",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

fn one() -> u32 {
    1
}

/// `[services.kubernetes]` of healer.toml: the workload a service is, and the floor under it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub namespace: String,
    pub kind: WorkloadKind,
    /// The workload's name (default: the service's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Ready pods that must stay through any action: a ready pod is not evicted, nor a
    /// replica scaled in, below it.
    #[serde(default = "one")]
    pub min_available: u32,
    /// Delete a pod whose eviction a PodDisruptionBudget still blocks when the action's
    /// timeout is up (off: the action fails and is escalated).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_when_eviction_blocked: bool,
}

/// The API calls the executor makes, as RBAC rules (API group, resource, verbs): what
/// `deploy/kubernetes/rbac.yaml` grants the healer, exactly (a test compares them).
pub const RBAC: &[(&str, &str, &[&str])] = &[
    ("", "pods", &["get", "list", "delete"]),
    ("", "pods/eviction", &["create"]),
    ("", "nodes", &["patch"]),
    ("apps", "deployments", &["get", "patch"]),
    ("apps", "statefulsets", &["get", "patch"]),
    ("apps", "daemonsets", &["get", "patch"]),
    ("apps", "replicasets", &["get"]),
    ("apps", "deployments/scale", &["get", "update"]),
    ("apps", "statefulsets/scale", &["get", "update"]),
];

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The field manager of the healer's writes (server-side field ownership, audit logs).
const FIELD_MANAGER: &str = "hale-healer";
/// Backoff between retried calls: from this, doubling, to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(200);
const MAX_WAIT: Duration = Duration::from_secs(5);

/// One API call, for retries and for what an error says.
struct Call<'a> {
    doing: String,
    verb: &'a str,
    resource: &'a str,
}

/// What a failed call means for the action.
enum Failure {
    /// Worth another try (409, 429, 5xx, no answer): why, and the API's code if it answered.
    Retry(String, Option<u16>),
    /// The object is not there (404): a restart or stop of it is done.
    Gone,
    /// Trying again cannot help.
    Fatal(String),
}

/// A call that failed for good, or was still failing when the action's time was up
/// (then with the API's last code, if it answered).
#[derive(Debug)]
struct CallError {
    message: String,
    retried_code: Option<u16>,
}

impl From<CallError> for ActionError {
    fn from(e: CallError) -> ActionError {
        ActionError::Refused(e.message)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The executor for one service's workload.
pub struct KubernetesExecutor {
    pub client: kube::Client,
    /// The service's name (the workload's by default).
    pub service: String,
    pub workload: Workload,
    /// How long an action may take, retries included.
    pub timeout: Duration,
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The controller owner reference of an object, if it has one.
fn controller(
    refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
) -> Option<(String, String)> {
    refs?.iter().find(|r| r.controller == Some(true)).map(|r| (r.kind.clone(), r.name.clone()))
}

/// `matchLabels` as a label selector (`a=b,c=d`).
fn selector(labels: Option<&BTreeMap<String, String>>) -> Option<String> {
    let labels = labels?;
    (!labels.is_empty()).then(|| labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
}

/// A workload's desired and ready replicas, whether its rollout is complete, and its
/// pods' selector.
struct Observed {
    desired: i32,
    ready: i32,
    rolled_out: Result<bool, String>,
    selector: Option<String>,
    paused: bool,
}

/// kubectl's `rollout status` for a Deployment: the spec observed, every replica updated,
/// no old one left, the updated ones available; a rollout past its deadline is an error.
fn deployment_observed(d: &Deployment) -> Observed {
    let generation = d.metadata.generation.unwrap_or(0);
    let st = d.status.clone().unwrap_or_default();
    let spec = d.spec.as_ref();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let (updated, replicas, available) =
        (st.updated_replicas.unwrap_or(0), st.replicas.unwrap_or(0), st.available_replicas.unwrap_or(0));
    let deadline = st
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    let rolled_out = if deadline {
        Err("its rollout exceeded its progress deadline".to_string())
    } else {
        Ok(generation <= st.observed_generation.unwrap_or(0)
            && updated >= desired
            && replicas <= updated
            && available >= updated)
    };
    Observed {
        desired,
        ready: st.ready_replicas.unwrap_or(0),
        rolled_out,
        selector: selector(spec.and_then(|s| s.selector.match_labels.as_ref())),
        paused: spec.and_then(|s| s.paused).unwrap_or(false),
    }
}

fn statefulset_observed(s: &StatefulSet) -> Observed {
    let generation = s.metadata.generation.unwrap_or(0);
    let st = s.status.clone().unwrap_or_default();
    let spec = s.spec.as_ref();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let observed = st.observed_generation.unwrap_or(0);
    let revision_done = match (&st.update_revision, &st.current_revision) {
        (Some(update), Some(current)) => update == current,
        _ => st.updated_replicas.unwrap_or(0) >= desired,
    };
    Observed {
        desired,
        ready: st.ready_replicas.unwrap_or(0),
        rolled_out: Ok(observed != 0 && generation <= observed && revision_done),
        selector: selector(spec.and_then(|s| s.selector.match_labels.as_ref())),
        paused: false,
    }
}

fn daemonset_observed(d: &DaemonSet) -> Observed {
    let generation = d.metadata.generation.unwrap_or(0);
    let st = d.status.clone().unwrap_or_default();
    let desired = st.desired_number_scheduled;
    Observed {
        desired,
        ready: st.number_ready,
        rolled_out: Ok(generation <= st.observed_generation.unwrap_or(0)
            && st.updated_number_scheduled.unwrap_or(0) >= desired
            && st.number_available.unwrap_or(0) >= desired),
        selector: selector(d.spec.as_ref().and_then(|s| s.selector.match_labels.as_ref())),
        paused: false,
    }
}

impl KubernetesExecutor {
    fn name(&self) -> &str {
        self.workload.name.as_deref().unwrap_or(&self.service)
    }

    fn ns(&self) -> &str {
        &self.workload.namespace
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    fn describe(&self) -> String {
        format!("{} {}/{}", self.workload.kind.kind().to_lowercase(), self.ns(), self.name())
    }

    fn classify(&self, call: &Call<'_>, error: kube::Error) -> Failure {
        match error {
            kube::Error::Api(r) if r.code == 403 => Failure::Fatal(format!(
                "{}: forbidden: the healer's service account may not `{}` `{}` in namespace {} — grant it \
                 (deploy/kubernetes/rbac.yaml lists what the executor needs): {}",
                call.doing,
                call.verb,
                call.resource,
                self.ns(),
                r.message
            )),
            kube::Error::Api(r) if r.code == 404 => Failure::Gone,
            kube::Error::Api(r) if r.code == 409 || r.code == 429 || r.code >= 500 => {
                Failure::Retry(format!("{} ({}): {}", r.code, r.reason, r.message), Some(r.code))
            }
            kube::Error::Api(r) => Failure::Fatal(format!("{}: {} ({}): {}", call.doing, r.code, r.reason, r.message)),
            other => Failure::Retry(other.to_string(), None),
        }
    }

    /// `f` until it answers, the object is gone (`None`), or it fails for good; a 409, 429,
    /// 5xx or no answer is tried again with backoff until `deadline`.
    async fn call<T, F, Fut>(&self, deadline: Instant, call: Call<'_>, mut f: F) -> Result<Option<T>, CallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let mut wait = FIRST_WAIT;
        loop {
            match f().await {
                Ok(value) => return Ok(Some(value)),
                Err(e) => match self.classify(&call, e) {
                    Failure::Gone => return Ok(None),
                    Failure::Fatal(why) => return Err(CallError { message: why, retried_code: None }),
                    Failure::Retry(why, code) => {
                        if Instant::now() + wait > deadline {
                            let message = format!(
                                "{}: still failing after {}: {why}",
                                call.doing,
                                humantime::format_duration(self.timeout)
                            );
                            return Err(CallError { message, retried_code: code });
                        }
                        tracing::warn!(doing = %call.doing, reason = %why, "Kubernetes API call failed; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(MAX_WAIT);
                    }
                },
            }
        }
    }

    /// The workload as it is now.
    async fn observe(&self, deadline: Instant) -> Result<Observed, ActionError> {
        let (name, ns, client) = (self.name(), self.ns(), &self.client);
        let call = Call {
            doing: format!("reading {}", self.describe()),
            verb: "get",
            resource: self.workload.kind.resource(),
        };
        let observed = match self.workload.kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                self.call(deadline, call, || api.get(name)).await?.map(|d| deployment_observed(&d))
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
                self.call(deadline, call, || api.get(name)).await?.map(|s| statefulset_observed(&s))
            }
            WorkloadKind::DaemonSet => {
                let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
                self.call(deadline, call, || api.get(name)).await?.map(|d| daemonset_observed(&d))
            }
        };
        observed.ok_or_else(|| format!("{} does not exist", self.describe()).into())
    }

    /// The workload's pods (by its selector).
    async fn workload_pods(&self, deadline: Instant, selector: &str) -> Result<Vec<Pod>, ActionError> {
        let call = Call { doing: format!("listing the pods of {}", self.describe()), verb: "list", resource: "pods" };
        let params = ListParams::default().labels(selector);
        let pods = self.pods();
        Ok(self.call(deadline, call, || pods.list(&params)).await?.map(|l| l.items).unwrap_or_default())
    }

    /// Whether `pod` is the workload's own: its controller, or for a Deployment its
    /// ReplicaSet's controller.
    async fn owns(&self, deadline: Instant, pod: &Pod) -> Result<bool, ActionError> {
        let Some((kind, name)) = controller(pod.metadata.owner_references.as_ref()) else { return Ok(false) };
        match (self.workload.kind, kind.as_str()) {
            (WorkloadKind::Deployment, "ReplicaSet") => {
                let sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), self.ns());
                let call = Call { doing: format!("reading replicaset {name}"), verb: "get", resource: "replicasets" };
                let set = self.call(deadline, call, || sets.get(&name)).await?;
                Ok(set
                    .and_then(|s| controller(s.metadata.owner_references.as_ref()))
                    .is_some_and(|(k, n)| k == "Deployment" && n == self.name()))
            }
            (kind_of, kind) => Ok(kind == kind_of.kind() && name == self.name()),
        }
    }

    /// Evicts `pod` (a PodDisruptionBudget's refusal is retried until `deadline`, then
    /// the pod is deleted where the service allows it); `false` when it was already gone.
    async fn evict(&self, deadline: Instant, pod: &str) -> Result<bool, ActionError> {
        let pods = self.pods();
        let call =
            Call { doing: format!("evicting pod {}/{pod}", self.ns()), verb: "create", resource: "pods/eviction" };
        let evict = EvictParams::default();
        match self.call(deadline, call, || pods.evict(pod, &evict)).await {
            Ok(evicted) => Ok(evicted.is_some()),
            // Still refused by a disruption budget (429) at the timeout.
            Err(e) if self.workload.delete_when_eviction_blocked && e.retried_code == Some(429) => {
                tracing::warn!(pod, error = %e, "eviction still blocked at the timeout; deleting the pod as the service allows");
                let call =
                    Call { doing: format!("deleting pod {}/{pod}", self.ns()), verb: "delete", resource: "pods" };
                let far = Instant::now() + Duration::from_secs(10);
                let delete = DeleteParams::default();
                Ok(self.call(far, call, || pods.delete(pod, &delete)).await?.is_some())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Restarts one pod by evicting it, within the workload's floor.
    async fn restart_pod(&self, deadline: Instant, name: &str) -> Result<Acted, ActionError> {
        let pods = self.pods();
        let call = Call { doing: format!("reading pod {}/{name}", self.ns()), verb: "get", resource: "pods" };
        let Some(pod) = self.call(deadline, call, || pods.get(name)).await? else {
            return Ok(Acted::Done(format!("pod {}/{name} is already gone", self.ns())));
        };
        if !self.owns(deadline, &pod).await? {
            return Err(format!("pod {}/{name} is not one of {}'s: not touching it", self.ns(), self.describe()).into());
        }
        if is_ready(&pod) {
            let observed = self.observe(deadline).await?;
            let selector = observed.selector.ok_or_else(|| format!("{} has no pod selector", self.describe()))?;
            let ready = self.workload_pods(deadline, &selector).await?.iter().filter(|p| is_ready(p)).count();
            let min = self.workload.min_available as usize;
            if ready <= min {
                return Err(format!(
                    "evicting ready pod {name} would leave {} of {}'s pods ready, below its min_available {min}: not \
                     evicting",
                    ready.saturating_sub(1),
                    self.describe()
                )
                .into());
            }
        }
        let detail = if self.evict(deadline, name).await? {
            format!("evicted pod {}/{name} of {}; its controller starts another", self.ns(), self.describe())
        } else {
            format!("pod {}/{name} is already gone", self.ns())
        };
        Ok(Acted::Done(detail))
    }

    /// `kubectl rollout restart`: a new `restartedAt` on the pod template.
    async fn rollout_restart(&self, deadline: Instant) -> Result<Acted, ActionError> {
        let observed = self.observe(deadline).await?;
        if observed.paused {
            return Err(
                format!("{} is paused: resume its rollout first (kubectl rollout resume)", self.describe()).into()
            );
        }
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}});
        let patch = Patch::Strategic(&patch);
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        let (name, ns, client) = (self.name(), self.ns(), &self.client);
        let call = Call {
            doing: format!("restarting {}", self.describe()),
            verb: "patch",
            resource: self.workload.kind.resource(),
        };
        let patched = match self.workload.kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                self.call(deadline, call, || api.patch(name, &params, &patch)).await?.map(|_| ())
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
                self.call(deadline, call, || api.patch(name, &params, &patch)).await?.map(|_| ())
            }
            WorkloadKind::DaemonSet => {
                let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
                self.call(deadline, call, || api.patch(name, &params, &patch)).await?.map(|_| ())
            }
        };
        patched.ok_or_else(|| format!("{} does not exist", self.describe()))?;
        Ok(Acted::Done(format!("restarted the rollout of {} ({RESTARTED_AT} {at})", self.describe())))
    }

    /// One replica more (`by` 1) or fewer (-1), through the scale subresource with the
    /// read resourceVersion: a 409 (someone else scaled meanwhile) is read again.
    async fn scale(&self, deadline: Instant, by: i32) -> Result<(i32, i32), ActionError> {
        let (name, ns, client) = (self.name(), self.ns(), &self.client);
        let resource = match self.workload.kind {
            WorkloadKind::Deployment => "deployments/scale",
            WorkloadKind::StatefulSet => "statefulsets/scale",
            WorkloadKind::DaemonSet => {
                return Err(format!("{} runs one pod per node: it does not scale", self.describe()).into());
            }
        };
        let min = self.workload.min_available as i32;
        let mut wait = FIRST_WAIT;
        loop {
            let read = Call { doing: format!("reading the scale of {}", self.describe()), verb: "get", resource };
            let scale = match self.workload.kind {
                WorkloadKind::StatefulSet => {
                    let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
                    self.call(deadline, read, || api.get_scale(name)).await?
                }
                _ => {
                    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                    self.call(deadline, read, || api.get_scale(name)).await?
                }
            };
            let mut scale = scale.ok_or_else(|| format!("{} does not exist", self.describe()))?;
            let from = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let to = from + by;
            if to < min.max(0) {
                return Err(format!(
                    "scaling {} from {from} to {to} would go below its min_available {min}: not scaling in",
                    self.describe()
                )
                .into());
            }
            scale.spec.get_or_insert_with(Default::default).replicas = Some(to);
            let body = serde_json::to_vec(&scale).map_err(|e| format!("encoding the scale: {e}"))?;
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            let result = match self.workload.kind {
                WorkloadKind::StatefulSet => {
                    let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
                    api.replace_scale(name, &params, body).await
                }
                _ => {
                    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                    api.replace_scale(name, &params, body).await
                }
            };
            let write = Call { doing: format!("scaling {} to {to}", self.describe()), verb: "update", resource };
            match result {
                Ok(_) => return Ok((from, to)),
                Err(e) => match self.classify(&write, e) {
                    Failure::Gone => return Err(format!("{} does not exist", self.describe()).into()),
                    Failure::Fatal(why) => return Err(why.into()),
                    // A 409 means another writer came first: read the scale again.
                    Failure::Retry(why, _) => {
                        if Instant::now() + wait > deadline {
                            return Err(format!("{}: still failing: {why}", write.doing).into());
                        }
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(MAX_WAIT);
                    }
                },
            }
        }
    }

    /// A lost node: cordoned, and the workload's pods on it evicted (their controller
    /// starts them on the others).
    async fn reschedule_from(&self, deadline: Instant, node: &str) -> Result<Acted, ActionError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({"spec": {"unschedulable": true}});
        let patch = Patch::Strategic(&patch);
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        let call = Call { doing: format!("cordoning node {node}"), verb: "patch", resource: "nodes" };
        if self.call(deadline, call, || nodes.patch(node, &params, &patch)).await?.is_none() {
            return Err(format!("node {node} is not in the cluster").into());
        }
        let observed = self.observe(deadline).await?;
        let selector = observed.selector.ok_or_else(|| format!("{} has no pod selector", self.describe()))?;
        let on_node: Vec<String> = self
            .workload_pods(deadline, &selector)
            .await?
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .filter_map(|p| p.metadata.name)
            .collect();
        for pod in &on_node {
            self.evict(deadline, pod).await?;
        }
        Ok(Acted::Done(format!(
            "cordoned node {node} and evicted {} pod(s) of {} there ({}); its controller starts them elsewhere",
            on_node.len(),
            self.describe(),
            if on_node.is_empty() { "none".to_string() } else { on_node.join(", ") }
        )))
    }

    /// Whether the workload has settled: its rollout complete and as many pods ready as
    /// it asks for (what a repair is verified by, beside its alert clearing).
    pub async fn settled(&self) -> Result<bool, ActionError> {
        let observed = self.observe(Instant::now() + Duration::from_secs(5)).await?;
        let rolled_out = observed.rolled_out.map_err(|why| format!("{}: {why}", self.describe()))?;
        Ok(rolled_out && observed.ready >= observed.desired)
    }
}

/// The pod an alert names: its `pod` label, else its `instance`.
fn pod_of(r: &Request) -> Option<String> {
    r.labels.get("pod").cloned().or_else(|| r.instance.clone())
}

impl Executor for KubernetesExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Kubernetes
    }

    fn can(&self, capability: Capability) -> bool {
        match capability {
            Capability::Restart => true,
            Capability::Stop | Capability::StartAnother => self.workload.kind != WorkloadKind::DaemonSet,
            Capability::Drain | Capability::Promote | Capability::Fence | Capability::Rejoin => false,
        }
    }

    fn act<'a>(&'a self, capability: Capability, r: &'a Request) -> Acting<'a> {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            // An alert about another namespace or workload than the service's is not this
            // executor's to act on, whatever its `service` label says.
            let kind_label = self.workload.kind.kind().to_lowercase();
            for (label, mine) in [("namespace", self.ns()), (kind_label.as_str(), self.name())] {
                if let Some(theirs) = r.labels.get(label).filter(|v| v.as_str() != mine) {
                    return Err(format!(
                        "the alert's {label} is {theirs:?}, but service {} is {}: not acting",
                        self.service,
                        self.describe()
                    )
                    .into());
                }
            }
            match capability {
                Capability::Restart => match pod_of(r) {
                    Some(pod) => self.restart_pod(deadline, &pod).await,
                    None => self.rollout_restart(deadline).await,
                },
                Capability::StartAnother if r.kind == ActionKind::Reschedule => {
                    let node = r.node.as_deref().ok_or("the alert names no node to reschedule from")?;
                    self.reschedule_from(deadline, node).await
                }
                Capability::StartAnother => {
                    let (from, to) = self.scale(deadline, 1).await?;
                    Ok(Acted::Started { instance: format!("{} replica {to}", self.name()), node: None, url: None })
                        .inspect(|_| tracing::info!(from, to, workload = %self.describe(), "scaled out"))
                }
                Capability::Stop => {
                    let (from, to) = self.scale(deadline, -1).await?;
                    Ok(Acted::Done(format!("scaled {} from {from} to {to} replicas", self.describe())))
                }
                Capability::Drain | Capability::Promote | Capability::Fence | Capability::Rejoin => {
                    Err(format!("the kubernetes executor cannot {}", capability.as_str()).into())
                }
            }
        })
    }

    fn settled<'a>(&'a self) -> Option<crate::executor::Settling<'a>> {
        Some(Box::pin(self.settled()))
    }
}
