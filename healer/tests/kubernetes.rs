//! The `kubernetes` executor against a fake API server: a loopback HTTP server answering
//! with the JSON shapes a real one sends (Deployments, ReplicaSets, Pods, Scale,
//! Eviction, and Status errors), recording every call, with scripted faults — a 409 on
//! a stale scale, a PodDisruptionBudget's 429, a 503, an RBAC 403 — so every action and
//! every error path is exercised through kube-rs's own client.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hale_healer::executor::{Acted, Capability, Executor, Request};
use hale_healer::kubernetes::{KubernetesExecutor, RBAC, Workload, WorkloadKind};
use hale_healer::policy::ActionKind;
use serde_json::{Value, json};

/// One recorded call: method, path, content type, body.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    content_type: String,
    authorization: String,
    body: String,
}

/// A scripted answer: the first call whose method and path (ending) match gets it, once.
struct Fault {
    method: &'static str,
    path_ends: &'static str,
    status: u16,
    body: Value,
}

struct Fake {
    replicas: i64,
    generation: i64,
    /// GETs of the deployment still to show the rollout under way (after a restart).
    rolling_gets: u32,
    resource_version: u64,
    pods: Vec<Value>,
    cordoned: Vec<String>,
    faults: VecDeque<Fault>,
    /// A fault that answers every matching call (a PDB that never lets go).
    always: Option<Fault>,
    calls: Vec<Call>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn pdb_429() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "Cannot evict pod as it would violate the pod's disruption budget.",
           "reason": "TooManyRequests",
           "details": {"causes": [{"reason": "DisruptionBudget",
                                   "message": "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}]},
           "code": 429})
}

fn pod(name: &str, rs: &str, app: &str, node: &str, ready: bool) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "shop", "generateName": format!("{rs}-"),
                     "uid": format!("uid-{name}"), "resourceVersion": "48190",
                     "labels": {"app": app, "pod-template-hash": rs.rsplit('-').next()},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                                          "uid": format!("uid-{rs}"), "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"nodeName": node, "containers": [{"name": app, "image": "ghcr.io/example/web:1.4.2"}]},
        "status": {"phase": "Running", "podIP": "10.244.1.17",
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                   "lastTransitionTime": "2026-03-01T10:00:21Z"}]}
    })
}

impl Fake {
    fn new() -> Fake {
        Fake {
            replicas: 3,
            generation: 4,
            rolling_gets: 0,
            resource_version: 48213,
            pods: vec![
                pod("web-7d4b9c8f6-a", "web-7d4b9c8f6", "web", "node-1", true),
                pod("web-7d4b9c8f6-b", "web-7d4b9c8f6", "web", "node-2", true),
                pod("web-7d4b9c8f6-c", "web-7d4b9c8f6", "web", "node-2", false),
                pod("api-5f6d7c8b9-x", "api-5f6d7c8b9", "api", "node-1", true),
            ],
            cordoned: Vec::new(),
            faults: VecDeque::new(),
            always: None,
            calls: Vec::new(),
        }
    }

    fn ready_web(&self) -> i64 {
        self.pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "web" && p["status"]["conditions"][0]["status"] == "True")
            .count() as i64
    }

    fn deployment(&mut self) -> Value {
        let rolling = self.rolling_gets > 0;
        self.rolling_gets = self.rolling_gets.saturating_sub(1);
        let observed = if rolling { self.generation - 1 } else { self.generation };
        let ready = if rolling { self.ready_web() } else { self.replicas };
        json!({
            "kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web", "generation": self.generation,
                         "resourceVersion": self.resource_version.to_string(), "labels": {"app": "web"}},
            "spec": {"replicas": self.replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "ghcr.io/example/web:1.4.2"}]}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}},
            "status": {"observedGeneration": observed, "replicas": self.replicas,
                       "updatedReplicas": if rolling { 1 } else { self.replicas },
                       "readyReplicas": ready, "availableReplicas": ready,
                       "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                                       "message": "Deployment has minimum availability."}]}
        })
    }

    fn scale(&self) -> Value {
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
               "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web",
                            "resourceVersion": self.resource_version.to_string()},
               "spec": {"replicas": self.replicas}, "status": {"replicas": self.replicas, "selector": "app=web"}})
    }

    fn replica_set(name: &str) -> Option<Value> {
        let owner = match name {
            "web-7d4b9c8f6" => "web",
            "api-5f6d7c8b9" => "api",
            _ => return None,
        };
        Some(json!({"kind": "ReplicaSet", "apiVersion": "apps/v1",
                    "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": owner,
                                                      "uid": format!("uid-{owner}"), "controller": true,
                                                      "blockOwnerDeletion": true}]},
                    "spec": {"selector": {"matchLabels": {"app": owner}}}}))
    }

    fn answer(&mut self, method: &Method, uri: &Uri, body: &[u8]) -> (u16, Value) {
        let path = uri.path();
        let query = uri.query().unwrap_or("");
        let faulted = |f: &Fault| f.method == method.as_str() && path.ends_with(f.path_ends);
        if let Some(i) = self.faults.iter().position(faulted) {
            let f = self.faults.remove(i).expect("fault");
            return (f.status, f.body);
        }
        if let Some(f) = self.always.as_ref().filter(|f| faulted(f)) {
            return (f.status, f.body.clone());
        }
        let pod_name =
            path.strip_prefix("/api/v1/namespaces/shop/pods/").map(|rest| rest.trim_end_matches("/eviction"));
        let find = |pods: &[Value], name: &str| pods.iter().position(|p| p["metadata"]["name"] == name);
        match (method.as_str(), path) {
            ("GET", "/apis/apps/v1/namespaces/shop/deployments/web") => (200, self.deployment()),
            ("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web") => {
                self.generation += 1;
                // The answer, then two reads, show the rollout under way.
                self.rolling_gets = 3;
                (200, self.deployment())
            }
            ("GET", "/apis/apps/v1/namespaces/shop/deployments/web/scale") => (200, self.scale()),
            ("PUT", "/apis/apps/v1/namespaces/shop/deployments/web/scale") => {
                let sent: Value = serde_json::from_slice(body).unwrap_or_default();
                if sent["metadata"]["resourceVersion"].as_str() != Some(self.resource_version.to_string().as_str()) {
                    return (
                        409,
                        status(
                            409,
                            "Conflict",
                            "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again",
                        ),
                    );
                }
                self.replicas = sent["spec"]["replicas"].as_i64().unwrap_or(self.replicas);
                self.resource_version += 1;
                (200, self.scale())
            }
            ("GET", "/api/v1/namespaces/shop/pods") => {
                let app = query.split('&').find_map(|kv| kv.strip_prefix("labelSelector=app%3D")).unwrap_or("");
                let items: Vec<Value> =
                    self.pods.iter().filter(|p| p["metadata"]["labels"]["app"] == app).cloned().collect();
                (
                    200,
                    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "48260"}, "items": items}),
                )
            }
            ("GET", _) if path.starts_with("/apis/apps/v1/namespaces/shop/replicasets/") => {
                let name = path.rsplit('/').next().unwrap_or("");
                match Fake::replica_set(name) {
                    Some(rs) => (200, rs),
                    None => (404, status(404, "NotFound", &format!("replicasets.apps \"{name}\" not found"))),
                }
            }
            (m, _) if pod_name.is_some() => {
                let name = pod_name.unwrap_or_default().to_string();
                let Some(i) = find(&self.pods, &name) else {
                    return (404, status(404, "NotFound", &format!("pods \"{name}\" not found")));
                };
                match m {
                    "GET" => (200, self.pods[i].clone()),
                    "POST" if path.ends_with("/eviction") => {
                        self.pods.remove(i);
                        // Its replacement is not ready at the next read of the Deployment.
                        self.rolling_gets = 1;
                        (
                            201,
                            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                        )
                    }
                    "DELETE" => (200, self.pods.remove(i)),
                    _ => (405, status(405, "MethodNotAllowed", "no")),
                }
            }
            ("PATCH", _) if path.starts_with("/api/v1/nodes/") => {
                let name = path.rsplit('/').next().unwrap_or("").to_string();
                if !name.starts_with("node-") {
                    return (404, status(404, "NotFound", &format!("nodes \"{name}\" not found")));
                }
                self.cordoned.push(name.clone());
                (
                    200,
                    json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": name}, "spec": {"unschedulable": true}}),
                )
            }
            _ => (404, status(404, "NotFound", &format!("the fake has no {method} {path}"))),
        }
    }
}

type Shared = Arc<Mutex<Fake>>;

async fn handle(
    axum::extract::State(fake): axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut fake = fake.lock().expect("lock");
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    fake.calls.push(Call {
        method: method.to_string(),
        path: uri.path().to_string(),
        content_type,
        authorization,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let (code, value) = fake.answer(&method, &uri, &body);
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [("content-type", "application/json")], value.to_string()).into_response()
}

/// The fake on a loopback port of its own, and a kube client pointed at it.
async fn fake_api() -> (Shared, kube::Client, SocketAddr) {
    let fake: Shared = Arc::new(Mutex::new(Fake::new()));
    let app = axum::Router::new().fallback(handle).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut config = kube::Config::new(format!("http://{addr}").parse().expect("uri"));
    config.root_cert = Some(Vec::new());
    config.read_timeout = Some(Duration::from_secs(5));
    let client = kube::Client::try_from(config).expect("client");
    (fake, client, addr)
}

fn executor(client: kube::Client, tweak: impl FnOnce(&mut Workload)) -> KubernetesExecutor {
    let mut workload = Workload {
        namespace: "shop".into(),
        kind: WorkloadKind::Deployment,
        name: None,
        min_available: 1,
        delete_when_eviction_blocked: false,
    };
    tweak(&mut workload);
    KubernetesExecutor { client, service: "web".into(), workload, timeout: Duration::from_secs(3) }
}

fn request(kind: ActionKind, labels: &[(&str, &str)]) -> Request {
    Request {
        action_id: "act-1".into(),
        service: "web".into(),
        instance: None,
        node: labels.iter().find(|(k, _)| *k == "node").map(|(_, v)| v.to_string()),
        url: None,
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        grace: None,
        kind,
    }
}

fn calls(fake: &Shared, method: &str, path_ends: &str) -> Vec<Call> {
    fake.lock()
        .expect("lock")
        .calls
        .iter()
        .filter(|c| c.method == method && c.path.ends_with(path_ends))
        .cloned()
        .collect()
}

fn detail(acted: Acted) -> String {
    match acted {
        Acted::Done(d) => d,
        Acted::Started { instance, .. } => instance,
    }
}

#[tokio::test]
async fn a_restart_evicts_the_named_pod_of_the_workload_and_no_other() {
    let (fake, client, _) = fake_api().await;
    let exec = executor(client, |_| {});
    let done = exec.act(Capability::Restart, &request(ActionKind::Restart, &[("pod", "web-7d4b9c8f6-a")])).await;
    assert!(detail(done.expect("evicted")).contains("evicted pod shop/web-7d4b9c8f6-a"));
    let evictions = calls(&fake, "POST", "/eviction");
    assert_eq!(evictions.len(), 1);
    assert_eq!(evictions[0].path, "/api/v1/namespaces/shop/pods/web-7d4b9c8f6-a/eviction");
    assert_eq!(calls(&fake, "GET", "/replicasets/web-7d4b9c8f6").len(), 1, "the owner walked");

    // A pod of another Deployment, named by an alert's labels: refused, untouched.
    let other = exec.act(Capability::Restart, &request(ActionKind::Restart, &[("pod", "api-5f6d7c8b9-x")])).await;
    assert!(other.expect_err("not ours").to_string().contains("is not one of deployment shop/web's"));
    assert_eq!(calls(&fake, "POST", "/eviction").len(), 1);

    // An alert about another namespace or Deployment: not this service's to touch.
    for label in [("namespace", "payments"), ("deployment", "api")] {
        let r =
            exec.act(Capability::Restart, &request(ActionKind::Restart, &[("pod", "web-7d4b9c8f6-b"), label])).await;
        assert!(r.expect_err("another workload").to_string().contains("not acting"), "{label:?}");
    }
    assert_eq!(calls(&fake, "POST", "/eviction").len(), 1);

    // Already gone (404): done, not failed.
    let gone = exec.act(Capability::Restart, &request(ActionKind::Restart, &[("pod", "web-7d4b9c8f6-zz")])).await;
    assert!(detail(gone.expect("gone is done")).contains("already gone"));
}

#[tokio::test]
async fn a_ready_pod_is_not_evicted_below_min_available_but_an_unready_one_is() {
    let (fake, client, _) = fake_api().await;
    let exec = executor(client, |w| w.min_available = 2);
    // Two ready pods (a, b), floor 2: evicting a would leave one.
    let refused = exec.act(Capability::Restart, &request(ActionKind::Restart, &[("pod", "web-7d4b9c8f6-a")])).await;
    let why = refused.expect_err("below the floor").to_string();
    assert!(why.contains("below its min_available 2"), "{why}");
    assert!(calls(&fake, "POST", "/eviction").is_empty(), "nothing evicted");
    // c is not ready: it serves nothing, evicting it costs nothing.
    let ok = exec.act(Capability::Restart, &request(ActionKind::Restart, &[("pod", "web-7d4b9c8f6-c")])).await;
    assert!(detail(ok.expect("evicted")).contains("web-7d4b9c8f6-c"));
}

#[tokio::test]
async fn a_disruption_budget_is_waited_for_then_escalated_or_the_pod_deleted_where_allowed() {
    let (fake, client, _) = fake_api().await;
    // Two refusals, then the budget lets go: retried with backoff, evicted.
    {
        let mut f = fake.lock().expect("lock");
        for _ in 0..2 {
            f.faults.push_back(Fault { method: "POST", path_ends: "/eviction", status: 429, body: pdb_429() });
        }
    }
    let exec = executor(client.clone(), |_| {});
    let r = exec.act(Capability::Restart, &request(ActionKind::Restart, &[("pod", "web-7d4b9c8f6-a")])).await;
    assert!(detail(r.expect("evicted after the budget let go")).contains("evicted"));
    assert_eq!(calls(&fake, "POST", "/eviction").len(), 3);

    // A budget that never lets go (on the unready pod: a ready one would now breach the
    // floor): the action fails saying why, within its timeout.
    fake.lock().expect("lock").always =
        Some(Fault { method: "POST", path_ends: "/eviction", status: 429, body: pdb_429() });
    let started = std::time::Instant::now();
    let r = exec.act(Capability::Restart, &request(ActionKind::Restart, &[("pod", "web-7d4b9c8f6-c")])).await;
    let why = r.expect_err("blocked").to_string();
    assert!(why.contains("disruption budget") && why.contains("429"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(6), "bounded by the timeout");
    assert!(calls(&fake, "DELETE", "/pods/web-7d4b9c8f6-c").is_empty(), "never deleted unless allowed");

    // Where the service allows it, the pod is deleted instead.
    let exec = executor(client, |w| w.delete_when_eviction_blocked = true);
    let r = exec.act(Capability::Restart, &request(ActionKind::Restart, &[("pod", "web-7d4b9c8f6-c")])).await;
    assert!(detail(r.expect("deleted")).contains("web-7d4b9c8f6-c"));
    assert_eq!(calls(&fake, "DELETE", "/pods/web-7d4b9c8f6-c").len(), 1);
}

#[tokio::test]
async fn a_workload_restart_patches_like_kubectl_and_settles_once_the_rollout_is_done() {
    let (fake, client, _) = fake_api().await;
    let exec = executor(client, |_| {});
    assert!(exec.settled().await.expect("reads"), "settled before");
    let r = exec.act(Capability::Restart, &request(ActionKind::Restart, &[("alertname", "WebSlow")])).await;
    assert!(detail(r.expect("restarted")).contains("restarted the rollout of deployment shop/web"));
    let patches = calls(&fake, "PATCH", "/deployments/web");
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].content_type, "application/strategic-merge-patch+json");
    let body: Value = serde_json::from_str(&patches[0].body).expect("json");
    let at = body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].as_str();
    assert!(at.is_some_and(|t| t.ends_with('Z') && t.len() == 20), "{body}");
    // The rollout is under way for two reads: not settled; then it is.
    assert!(!exec.settled().await.expect("reads"));
    assert!(!exec.settled().await.expect("reads"));
    assert!(exec.settled().await.expect("reads"), "settled once observed and ready");
}

#[tokio::test]
async fn scaling_reads_again_after_a_conflict_and_stops_at_the_floor() {
    let (fake, client, _) = fake_api().await;
    // Another writer scales first: the healer's write, with the old resourceVersion, is a 409.
    fake.lock().expect("lock").faults.push_back(Fault {
        method: "PUT",
        path_ends: "/deployments/web/scale",
        status: 409,
        body: status(409, "Conflict", "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"),
    });
    let exec = executor(client.clone(), |w| w.min_available = 3);
    let r = exec.act(Capability::StartAnother, &request(ActionKind::ScaleOut, &[])).await;
    match r.expect("scaled out") {
        Acted::Started { instance, .. } => assert_eq!(instance, "web replica 4"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.lock().expect("lock").replicas, 4);
    assert_eq!(calls(&fake, "PUT", "/scale").len(), 2, "written again after reading again");
    assert_eq!(calls(&fake, "GET", "/scale").len(), 2);
    // Back to 3, then not below the floor of 3.
    assert!(
        detail(exec.act(Capability::Stop, &request(ActionKind::ScaleIn, &[])).await.expect("in"))
            .contains("from 4 to 3")
    );
    let r = exec.act(Capability::Stop, &request(ActionKind::ScaleIn, &[])).await;
    assert!(r.expect_err("floor").to_string().contains("below its min_available 3"));
    assert_eq!(fake.lock().expect("lock").replicas, 3);
    // A DaemonSet runs a pod per node: it has no replicas to scale.
    assert!(!executor(client, |w| w.kind = WorkloadKind::DaemonSet).can(Capability::StartAnother));
}

#[tokio::test]
async fn rbac_refusals_name_what_is_missing_and_server_errors_are_retried() {
    let (fake, client, _) = fake_api().await;
    let forbidden = "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:hale:hale-healer\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"shop\"";
    {
        let mut f = fake.lock().expect("lock");
        f.faults.push_back(Fault {
            method: "PATCH",
            path_ends: "/deployments/web",
            status: 403,
            body: status(403, "Forbidden", forbidden),
        });
        f.faults.push_back(Fault {
            method: "GET",
            path_ends: "/pods/web-7d4b9c8f6-c",
            status: 503,
            body: status(503, "ServiceUnavailable", "etcdserver: leader changed"),
        });
    }
    let exec = executor(client, |_| {});
    let r = exec.act(Capability::Restart, &request(ActionKind::Restart, &[])).await;
    let why = r.expect_err("forbidden").to_string();
    assert!(why.contains("may not `patch` `deployments` in namespace shop") && why.contains("rbac.yaml"), "{why}");
    assert!(why.contains("system:serviceaccount:hale:hale-healer"), "the server's own words: {why}");
    assert_eq!(calls(&fake, "PATCH", "/deployments/web").len(), 1, "a 403 is not retried");
    // A 503 is: the pod is read again and evicted.
    let r = exec.act(Capability::Restart, &request(ActionKind::Restart, &[("pod", "web-7d4b9c8f6-c")])).await;
    assert!(detail(r.expect("after a retry")).contains("evicted"));
    assert_eq!(calls(&fake, "GET", "/pods/web-7d4b9c8f6-c").len(), 2);
}

#[tokio::test]
async fn a_lost_node_is_cordoned_and_the_workloads_pods_there_evicted() {
    let (fake, client, _) = fake_api().await;
    let exec = executor(client, |_| {});
    let r = exec.act(Capability::StartAnother, &request(ActionKind::Reschedule, &[("node", "node-2")])).await;
    let d = detail(r.expect("rescheduled"));
    assert!(d.contains("cordoned node node-2") && d.contains("2 pod(s)"), "{d}");
    let cordon = calls(&fake, "PATCH", "/api/v1/nodes/node-2");
    assert_eq!(cordon.len(), 1);
    assert_eq!(cordon[0].content_type, "application/strategic-merge-patch+json");
    assert_eq!(serde_json::from_str::<Value>(&cordon[0].body).expect("json"), json!({"spec": {"unschedulable": true}}));
    let evicted: Vec<String> = calls(&fake, "POST", "/eviction").into_iter().map(|c| c.path).collect();
    assert_eq!(
        evicted,
        [
            "/api/v1/namespaces/shop/pods/web-7d4b9c8f6-b/eviction",
            "/api/v1/namespaces/shop/pods/web-7d4b9c8f6-c/eviction"
        ]
    );
    assert!(
        fake.lock().expect("lock").pods.iter().any(|p| p["metadata"]["name"] == "web-7d4b9c8f6-a"),
        "node-1's stays"
    );
}

/// The fake collector beside the fake API server: the unready pod alerts (and reads
/// unready) while it exists; telemetry is fresh.
async fn fake_collector(fake: Shared) -> SocketAddr {
    use axum::extract::{Query, State};
    use axum::routing::get;
    async fn query(Query(q): Query<std::collections::BTreeMap<String, String>>) -> axum::Json<Value> {
        let fresh = q.get("query").is_some_and(|q| q.starts_with("max(time() - timestamp("));
        let result = if fresh { vec![json!({"metric": {}, "value": [1.0, "0.5"]})] } else { Vec::new() };
        axum::Json(json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
    }
    async fn alerts(State(fake): State<Shared>) -> axum::Json<Value> {
        let present = fake.lock().expect("lock").pods.iter().any(|p| p["metadata"]["name"] == "web-7d4b9c8f6-c");
        let alerts: Vec<Value> =
            if present { vec![json!({"labels": alert_labels(), "state": "firing"})] } else { vec![] };
        axum::Json(json!({"status": "success", "data": {"alerts": alerts}}))
    }
    async fn cluster(State(fake): State<Shared>) -> axum::Json<Value> {
        let replicas: Vec<Value> = fake
            .lock()
            .expect("lock")
            .pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "web")
            .map(|p| {
                let ready = p["status"]["conditions"][0]["status"] == "True";
                json!({"instance": p["metadata"]["name"], "node": p["spec"]["nodeName"],
                       "state": if ready { "ready" } else { "not_ready" }, "ready": ready, "alive": true, "up": true,
                       "age_secs": 0.1, "interval_secs": 0.5})
            })
            .collect();
        let ready = replicas.iter().filter(|r| r["ready"] == true).count();
        axum::Json(json!({"status": "success", "data": {"nodes": [],
            "services": [{"service": "web", "replicas": replicas, "ready_replicas": ready}]}}))
    }
    let app = axum::Router::new()
        .route("/api/v1/query", get(query))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/cluster", get(cluster))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn alert_labels() -> hale_healer::state::Labels {
    [
        ("alertname", "PodNotReady"),
        ("service", "web"),
        ("instance", "web-7d4b9c8f6-c"),
        ("pod", "web-7d4b9c8f6-c"),
        ("namespace", "shop"),
        ("node", "node-2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The whole loop on a Kubernetes workload: an alert on an unready pod, a policy's
/// restart, the healer's client from a kubeconfig, the pod evicted through the API, and
/// the action verified only once the alert cleared and the Deployment reads settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_on_a_pod_is_repaired_through_the_api_and_verified_by_the_workloads_readiness() {
    use hale_healer::audit::Audit;
    use hale_healer::clients::Collector;
    use hale_healer::engine::{Escalation, Healer};
    use hale_healer::state::{Alert, Store};
    let (fake, _, api) = fake_api().await;
    let collector = fake_collector(fake.clone()).await;
    let dir = tempfile::tempdir().expect("tmp");
    // The healer's own way to the API: a kubeconfig (as `hale healer --kubeconfig`).
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: http://{api}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: healer\n    namespace: shop\n\
             users:\n- name: healer\n  user:\n    token: a-service-account-token\n"
        ),
    )
    .expect("kubeconfig");
    let kube = hale_healer::kubernetes_client(Some(&kubeconfig)).await.expect("a client from the kubeconfig");
    let inventory = hale_healer::inventory::Inventory::parse(
        "[[services]]\nname = \"web\"\nexecutor = \"kubernetes\"\n[services.kubernetes]\nnamespace = \"shop\"\nkind = \"deployment\"\n",
    )
    .expect("inventory");
    let policies = "policies:\n  - name: evict-unready-pod\n    match:\n      alertname: PodNotReady\n    action: restart\n    verify:\n      timeout: 10s\n";
    let client = reqwest::Client::new();
    let tokens = hale_healer::executor::Tokens { agent: None, admin: None, webhook_secret: None, kube: Some(kube) };
    let (executors, load_balancers) = hale_healer::executor::build(&inventory, &client, tokens).expect("executors");
    let outbox = Arc::new(hale_outbox::Outbox::open(&dir.path().join("escalations"), "test").expect("outbox"));
    let healer = Arc::new(Healer {
        policies: hale_healer::policy::PolicyFile::parse(policies).expect("policies"),
        store: Store::open(&dir.path().join("state.json")),
        audit: Audit::open(&dir.path().join("audit.jsonl")).expect("audit"),
        collector: Collector { base: format!("http://{collector}"), client: client.clone(), admin_token: None },
        inventory,
        executors,
        load_balancers,
        protocol: hale_healer::failover::Protocol { client: client.clone(), token: None, secret: None },
        escalation: Escalation {
            urls: Vec::new(),
            alertmanagers: Vec::new(),
            secret: None,
            outbox,
            external_url: "http://healer.test".into(),
        },
        dry_run: false,
        metrics: Default::default(),
        wake: Default::default(),
        client,
        handling: Default::default(),
    });
    tokio::spawn(healer.clone().run());
    let alert = Alert {
        labels: alert_labels(),
        annotations: Default::default(),
        starts_at: "2026-03-01T10:00:00Z".into(),
        fingerprint: "fp-web-c".into(),
        received_ms: hale_core::time::now_ms(),
    };
    assert!(healer.receive(alert).await.expect("stored"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let action = loop {
        let done = healer.store.read(|s| s.actions.first().cloned()).filter(|a| {
            matches!(a.status, hale_core::api::ActionStatus::Succeeded | hale_core::api::ActionStatus::Failed)
        });
        if let Some(a) = done {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "no outcome within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(action.status, hale_core::api::ActionStatus::Succeeded, "{action:?}");
    let evictions = calls(&fake, "POST", "/eviction");
    assert_eq!(evictions.len(), 1);
    assert!(evictions[0].path.ends_with("/pods/web-7d4b9c8f6-c/eviction"));
    assert_eq!(evictions[0].authorization, "Bearer a-service-account-token", "the kubeconfig's credentials");
    // Verification read the Deployment until it settled (its replacement pod unready at first).
    assert!(calls(&fake, "GET", "/deployments/web").len() >= 2, "read to verify");
}

/// `deploy/kubernetes/rbac.yaml` grants the healer exactly the verbs the executor uses.
#[test]
fn the_rbac_manifest_grants_exactly_what_the_executor_uses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("rbac.yaml");
    let mut granted = std::collections::BTreeSet::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(doc).expect("yaml");
        let healers = value["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("hale-healer"));
        if !matches!(value["kind"].as_str(), Some("Role" | "ClusterRole")) || !healers {
            continue;
        }
        for rule in value["rules"].as_array().into_iter().flatten() {
            for group in rule["apiGroups"].as_array().into_iter().flatten() {
                for resource in rule["resources"].as_array().into_iter().flatten() {
                    for verb in rule["verbs"].as_array().into_iter().flatten() {
                        granted.insert((
                            group.as_str().unwrap_or("?").to_string(),
                            resource.as_str().unwrap_or("?").to_string(),
                            verb.as_str().unwrap_or("?").to_string(),
                        ));
                    }
                }
            }
        }
    }
    let used: std::collections::BTreeSet<(String, String, String)> = RBAC
        .iter()
        .flat_map(|(g, r, verbs)| verbs.iter().map(move |v| (g.to_string(), r.to_string(), v.to_string())))
        .collect();
    assert_eq!(granted, used, "rbac.yaml and hale_healer::kubernetes::RBAC");
}
