//! The healer's loop and API over real HTTP: a fake collector and node agent (axum on
//! 127.0.0.1:0) whose alerts clear only when the right replica is restarted, real
//! escalation receivers, and the healer's own router. Covers what the end-to-end tests
//! cannot make happen on demand: refusals kept and retried when their reason lifts,
//! approval expiry, target reset, escalation delivery, and the API's authorisation.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{Request, StatusCode};
use axum::routing::{delete, get, post};
use hale_core::api::{ActionKind, ActionList, ErrorBody, Ha, HealerState, Paused, RetryWhen, TargetReset};
use hale_healer::api::{App, Auth};
use hale_healer::audit::Audit;
use hale_healer::clients::Collector;
use hale_healer::engine::{Escalation, Healer};
use hale_healer::policy::PolicyFile;
use hale_healer::state::{Alert, Labels, Store};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "healer-token";
const SECRET: &[u8] = b"escalation-secret";

/// What the fake collector and agent know: the firing alerts, the search replicas'
/// readiness, and the restarts asked for.
#[derive(Default)]
struct World {
    firing: Vec<Labels>,
    ready: BTreeMap<String, bool>,
    restarts: Vec<String>,
    /// Restarts of these fail (the agent answers 500).
    broken: HashSet<String>,
    /// The search SLO's burn rate over its shortest window, if it has one.
    burn: Option<f64>,
}

type Shared = Arc<Mutex<World>>;

/// An answer of the healer's API as the wire type every client reads it as.
fn typed<T: serde::de::DeserializeOwned>(answer: Value) -> T {
    serde_json::from_value(answer.clone()).unwrap_or_else(|e| panic!("{answer} is not the type expected: {e}"))
}

fn lock(w: &Shared) -> std::sync::MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

fn labels(name: &str, instance: &str) -> Labels {
    [("alertname", name), ("service", "search"), ("instance", instance), ("node", "node-1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn vector(samples: Vec<(Value, f64)>) -> Value {
    let result: Vec<Value> =
        samples.into_iter().map(|(metric, v)| json!({"metric": metric, "value": [1.0, v.to_string()]})).collect();
    json!({"status": "success", "data": {"resultType": "vector", "result": result}})
}

async fn query(State(w): State<Shared>, Query(q): Query<BTreeMap<String, String>>) -> axum::Json<Value> {
    let q = q.get("query").cloned().unwrap_or_default();
    let burn = lock(&w).burn;
    axum::Json(if q.starts_with("max(time() - timestamp(probe_success") {
        vector(vec![(json!({}), 1.0)]) // fresh telemetry
    } else if q.contains("slo:current_burn_rate:ratio") {
        vector(burn.map(|b| (json!({}), b)).into_iter().collect())
    } else {
        vector(Vec::new())
    })
}

/// The fake collector's cluster view: the search replicas as the world says, each with a
/// fresh probe (0.1 s old, every 0.5 s).
async fn cluster_view(State(w): State<Shared>) -> axum::Json<Value> {
    use hale_core::cluster::{ClusterView, ReplicaState, ReplicaView, ServiceView};
    let replicas: Vec<ReplicaView> = lock(&w)
        .ready
        .iter()
        .map(|(instance, ready)| ReplicaView {
            instance: instance.clone(),
            node: Some("node-1".into()),
            state: if *ready { ReplicaState::Ready } else { ReplicaState::NotReady },
            ready: Some(*ready),
            alive: Some(true),
            up: Some(true),
            age_secs: Some(0.1),
            interval_secs: Some(0.5),
            restarts: None,
            last_error: None,
        })
        .collect();
    let ready_replicas = replicas.iter().filter(|r| r.state == ReplicaState::Ready).count();
    let view = ClusterView {
        nodes: Vec::new(),
        services: vec![ServiceView { service: "search".into(), replicas, ready_replicas }],
        ingest_refused: None,
    };
    axum::Json(json!({"status": "success", "data": view}))
}

async fn alerts(State(w): State<Shared>) -> axum::Json<Value> {
    let list: Vec<Value> = lock(&w).firing.iter().map(|l| json!({"labels": l, "state": "firing"})).collect();
    axum::Json(json!({"status": "success", "data": {"alerts": list}}))
}

/// A restart repairs the replica: its alerts clear and it is ready. The answer is the
/// agent's own.
async fn restart(State(w): State<Shared>, Path(name): Path<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut w = lock(&w);
    if w.broken.contains(&name) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    w.restarts.push(name.clone());
    w.firing.retain(|l| l.get("instance") != Some(&name));
    w.ready.insert(name.clone(), true);
    (StatusCode::ACCEPTED, axum::Json(hale_core::api::ProcessRestarted { restarted: name })).into_response()
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// The fake collector and node agent, on one address.
async fn cluster(world: Shared) -> SocketAddr {
    let router = Router::new()
        .route("/api/v1/query", get(query))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/cluster", get(cluster_view))
        .route(
            "/api/v1/silences",
            post(|| async { axum::Json(json!({"status": "success", "data": {"silenceID": "sil-1"}})) }),
        )
        .route("/api/v1/silences/{id}", delete(|| async { StatusCode::OK }))
        .route("/api/v1/processes/{name}/restart", post(restart))
        .with_state(world);
    serve(router).await
}

struct Rig {
    healer: Arc<Healer>,
    world: Shared,
    dir: tempfile::TempDir,
}

impl Rig {
    async fn start(policies: &str, escalate: Vec<String>) -> Rig {
        Rig::start_with(policies, escalate, hale_healer::inventory::Inventory::default()).await
    }

    /// A healer over `inventory` (with the world's search service added to it).
    async fn start_with(
        policies: &str,
        escalate: Vec<String>,
        mut inventory: hale_healer::inventory::Inventory,
    ) -> Rig {
        let world: Shared = Arc::default();
        let addr = cluster(world.clone()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let client = reqwest::Client::new();
        // The world's one node runs the search replicas, acted on through its agent.
        let search = hale_healer::inventory::Inventory::parse(&format!(
            "[agents]\nnode-1 = \"http://{addr}\"\n[[services]]\nname = \"search\"\nexecutor = \"agent\"\nnodes = [\"node-1\"]\n"
        ))
        .expect("inventory");
        inventory.agents.extend(search.agents);
        inventory.services.extend(search.services);
        let tokens = hale_healer::executor::Tokens {
            agent: Some(hale_core::token::Token::fixed("agent")),
            admin: Some(hale_core::token::Token::fixed("admin")),
            webhook_secret: None,
            kube: None,
        };
        let (executors, load_balancers) = hale_healer::executor::build(&inventory, &client, tokens).expect("executors");
        let outbox = Arc::new(hale_outbox::Outbox::open(&dir.path().join("escalations"), "test").expect("outbox"));
        tokio::spawn(outbox.clone().run(client.clone(), Some(Arc::from(SECRET))));
        let healer = Arc::new(Healer {
            policies: PolicyFile::parse(policies).expect("policies"),
            store: Store::open(&dir.path().join("state.json")),
            audit: Audit::open(&dir.path().join("audit.jsonl")).expect("audit"),
            collector: Collector {
                base: format!("http://{addr}"),
                client: client.clone(),
                admin_token: Some(hale_core::token::Token::fixed("admin")),
            },
            inventory: inventory.clone(),
            executors,
            load_balancers,
            protocol: hale_healer::failover::Protocol { client: client.clone(), token: None, secret: None },
            escalation: Escalation {
                urls: escalate,
                alertmanagers: Vec::new(),
                secret: Some(Arc::from(SECRET)),
                outbox: outbox.clone(),
                external_url: "http://healer.test".into(),
            },
            dry_run: false,
            metrics: Default::default(),
            wake: Default::default(),
            client,
            handling: Default::default(),
        });
        tokio::spawn(healer.clone().run());
        Rig { healer, world, dir }
    }

    /// A search replica that is down and alerting.
    fn hang(&self, instance: &str) {
        let mut w = lock(&self.world);
        w.firing.push(labels("ReplicaDown", instance));
        w.ready.insert(instance.into(), false);
    }

    async fn fire(&self, instance: &str, starts_at: &str) {
        let alert = Alert {
            labels: labels("ReplicaDown", instance),
            annotations: Labels::new(),
            starts_at: starts_at.into(),
            fingerprint: format!("fp-{instance}"),
            received_ms: hale_core::time::now_ms(),
        };
        assert!(self.healer.receive(alert).await.expect("stored"), "a new alert");
    }

    fn restarts(&self) -> Vec<String> {
        lock(&self.world).restarts.clone()
    }

    fn audit(&self) -> Vec<Value> {
        Audit::read_all(&self.dir.path().join("audit.jsonl")).expect("audit")
    }

    /// The audit records of `event` about `instance`.
    fn events(&self, event: &str, instance: &str) -> Vec<Value> {
        self.audit().into_iter().filter(|r| r["event"] == event && r["target"]["instance"] == instance).collect()
    }

    async fn call(&self, auth: Auth, method: &str, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
        let app = Arc::new(App { healer: self.healer.clone(), auth });
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp =
            hale_healer::api::router(app).oneshot(req.body(Body::empty()).expect("request")).await.expect("call");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn api(&self, method: &str, uri: &str) -> (StatusCode, Value) {
        self.call(
            Auth { token: Some(hale_core::token::Token::fixed(TOKEN)), webhook_secret: None, intake_token: None },
            method,
            uri,
            Some(TOKEN),
        )
        .await
    }
}

async fn eventually(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const RESTART: &str = "defaults:\n  cooldown: 2s\npolicies:\n  - name: restart-hung\n    match: { alertname: ReplicaDown }\n    action: restart\n    max_service_share: 0.34\n    verify: { timeout: 5s }\n";

/// A repair is verified on its service's SLO too: the alert clears at once, but the
/// action stays verifying while the SLO burns above the page threshold, and succeeds
/// once it falls, with the burn before and after on it and in the audit.
#[tokio::test]
async fn a_repair_is_verified_only_once_its_slo_stops_burning() {
    let rig = Rig::start(&RESTART.replace("5s", "20s"), Vec::new()).await;
    lock(&rig.world).burn = Some(20.0);
    rig.hang("s-1");
    lock(&rig.world).ready.insert("s-2".into(), true);
    rig.fire("s-1", "2026-01-01T00:00:00Z").await;
    eventually("restarted", Duration::from_secs(10), || rig.restarts().len() == 1).await;
    let status = || rig.healer.store.read(|s| s.actions[0].status);
    eventually("verifying", Duration::from_secs(5), || status() == hale_core::api::ActionStatus::Verifying).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status(), hale_core::api::ActionStatus::Verifying, "the alert cleared, the SLO still burns");
    lock(&rig.world).burn = Some(2.0);
    eventually("verified", Duration::from_secs(10), || status() == hale_core::api::ActionStatus::Succeeded).await;
    let action = rig.healer.store.read(|s| s.actions[0].clone());
    assert_eq!((action.burn_before, action.burn_after), (Some(20.0), Some(2.0)));
    assert!(action.detail.contains("burns at 2.00"), "{}", action.detail);
    let verified = rig.events("verified", "s-1");
    assert_eq!((verified[0]["burn_before"].as_f64(), verified[0]["burn_after"].as_f64()), (Some(20.0), Some(2.0)));
}

/// Issue #12 (15): two hung replicas; the share limit refused the second while the first
/// was restarted, and it was left down for good.
#[tokio::test]
async fn a_replica_refused_for_the_share_in_flight_is_restarted_once_the_first_is_done() {
    let rig = Rig::start(RESTART, Vec::new()).await;
    rig.hang("s-1");
    rig.hang("s-2");
    lock(&rig.world).ready.insert("s-3".into(), true);
    rig.fire("s-1", "2026-01-01T00:00:00Z").await;
    rig.fire("s-2", "2026-01-01T00:00:01Z").await;
    eventually("both replicas restarted", Duration::from_secs(20), || rig.restarts().len() == 2).await;
    assert_eq!(rig.restarts(), ["s-1", "s-2"]);
    let refused = rig.events("refused", "s-2");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["code"], "service_share");
    assert_eq!(refused[0]["retry"], "when an action on the search service ends");
    assert_eq!(rig.events("retrying", "s-2").len(), 1);
    eventually("both verified", Duration::from_secs(10), || {
        rig.audit().iter().filter(|r| r["event"] == "verified").count() == 2
    })
    .await;
    assert!(rig.healer.store.read(|s| s.deferred.is_empty()), "nothing left to retry");
}

/// Issue #12 (15): while paused, alerts are refused; on resume the ones still firing are
/// repaired and the ones that stopped are dropped with a record, both exactly once.
#[tokio::test]
async fn alerts_refused_while_paused_are_decided_on_resume_if_they_still_fire() {
    let rig = Rig::start(RESTART.replace("0.34", "1.0").as_str(), Vec::new()).await;
    let (status, paused) = rig.api("POST", "/api/v1/pause").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(typed::<Paused>(paused), Paused { paused: true });
    for i in ["s-1", "s-2", "s-3"] {
        rig.hang(i);
    }
    rig.fire("s-1", "2026-01-01T00:00:00Z").await;
    rig.fire("s-2", "2026-01-01T00:00:00Z").await;
    eventually("both refused", Duration::from_secs(10), || {
        rig.audit().iter().filter(|r| r["event"] == "refused").count() == 2
    })
    .await;
    // The API shows what was refused, why, and when it will be looked at again.
    let state: HealerState = typed(rig.api("GET", "/api/v1/state").await.1);
    assert_eq!(state.deferred.len(), 2, "{state:?}");
    let first = &state.deferred[0];
    assert_eq!((first.code.as_str(), first.reason.as_str()), ("paused", "the healer is paused"));
    assert_eq!(first.retry, RetryWhen::Resumed);
    assert_eq!((first.policy.as_str(), first.action), ("restart-hung", ActionKind::Restart));
    assert_eq!(first.target.instance.as_deref(), Some("s-1"));
    assert_eq!(first.alert.labels["alertname"], "ReplicaDown");
    assert_eq!(first.attempts, 1);
    assert!(first.refused_ms > 0);
    assert!(state.paused);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(rig.restarts().is_empty(), "paused: nothing done");
    assert_eq!(rig.audit().iter().filter(|r| r["event"] == "refused").count(), 2, "no retry while still paused");
    // s-2 recovers by itself meanwhile.
    lock(&rig.world).firing.retain(|l| l.get("instance").map(String::as_str) != Some("s-2"));
    assert_eq!(rig.api("POST", "/api/v1/resume").await.0, StatusCode::OK);
    eventually("s-1 restarted", Duration::from_secs(10), || rig.restarts() == ["s-1"]).await;
    eventually("s-2 dropped", Duration::from_secs(10), || rig.events("dropped", "s-2").len() == 1).await;
    assert_eq!(rig.events("dropped", "s-2")[0]["reason"], "the alert no longer fires at the collector");
    assert_eq!(rig.events("dropped", "s-2")[0]["was_refused"], "the healer is paused");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(rig.restarts(), ["s-1"], "s-2 is never restarted");
    assert!(rig.healer.store.read(|s| s.deferred.is_empty()));
    let state: HealerState = typed(rig.api("GET", "/api/v1/state").await.1);
    assert!(state.deferred.is_empty(), "{state:?}");
}

/// Issue #12 (15): a new occurrence on a target in its cooldown is repaired when the
/// cooldown ends, not never.
#[tokio::test]
async fn an_alert_refused_for_a_cooldown_is_repaired_when_it_ends() {
    let rig = Rig::start(&RESTART.replace("0.34", "1.0"), Vec::new()).await;
    rig.hang("s-1");
    rig.hang("s-2");
    rig.fire("s-1", "2026-01-01T00:00:00Z").await;
    eventually("first restart", Duration::from_secs(10), || rig.restarts().len() == 1).await;
    eventually("verified", Duration::from_secs(10), || rig.events("verified", "s-1").len() == 1).await;
    let first = std::time::Instant::now();
    rig.hang("s-1");
    rig.fire("s-1", "2026-01-01T00:01:00Z").await;
    eventually("refused for the cooldown", Duration::from_secs(5), || !rig.events("refused", "s-1").is_empty()).await;
    assert_eq!(rig.events("refused", "s-1")[0]["code"], "cooldown");
    assert!(rig.events("refused", "s-1")[0]["retry"].as_str().is_some_and(|r| r.starts_with("at ")));
    eventually("second restart", Duration::from_secs(10), || rig.restarts().len() == 2).await;
    assert!(first.elapsed() >= Duration::from_millis(1500), "not before the cooldown ends");
    assert_eq!(rig.restarts(), ["s-1", "s-1"]);
}

/// What a receiver got: each request's signature header and body.
type Received = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

/// Receivers that answer with the statuses given, in turn (the last one repeats); each
/// request's signature and body are kept.
async fn receiver(statuses: Vec<u16>) -> (String, Received) {
    let seen: Received = Arc::default();
    let s = seen.clone();
    let router = Router::new().route(
        "/",
        post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let s = s.clone();
            let statuses = statuses.clone();
            async move {
                let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
                let sig =
                    headers.get(hale_core::webhook::SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
                s.push((sig, body.to_vec()));
                let code = statuses.get(s.len() - 1).or(statuses.last()).copied().unwrap_or(200);
                StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
            }
        }),
    );
    (format!("http://{}/", serve(router).await), seen)
}

/// Issue #12 (23): a failed repair escalates: retried on 5xx, given up at once on 4xx,
/// a receiver that is down does not keep the others from hearing; the target then needs
/// a human (refused for good, not kept for a retry) until it is reset.
#[tokio::test]
async fn a_failed_repair_escalates_to_every_receiver_and_waits_for_a_human() {
    let (flaky, flaky_seen) = receiver(vec![503, 502, 200]).await;
    let (picky, picky_seen) = receiver(vec![400]).await;
    let down = format!("http://{}/", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    });
    let rig = Rig::start(&RESTART.replace("0.34", "1.0"), vec![down, flaky, picky]).await;
    rig.hang("s-1");
    rig.hang("s-2");
    lock(&rig.world).broken.insert("s-1".into());
    rig.fire("s-1", "2026-01-01T00:00:00Z").await;
    eventually("escalated to the flaky receiver", Duration::from_secs(20), || {
        flaky_seen.lock().unwrap_or_else(|p| p.into_inner()).len() == 3
    })
    .await;
    eventually("the picky receiver asked once", Duration::from_secs(10), || {
        picky_seen.lock().unwrap_or_else(|p| p.into_inner()).len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(flaky_seen.lock().unwrap_or_else(|p| p.into_inner()).len(), 3, "no more after the 2xx");
    assert_eq!(picky_seen.lock().unwrap_or_else(|p| p.into_inner()).len(), 1, "a 4xx is not retried");
    let (sig, body) = flaky_seen.lock().unwrap_or_else(|p| p.into_inner())[2].clone();
    let now = (hale_core::time::now_ms() / 1000) as u64;
    assert_eq!(hale_core::webhook::verify(SECRET, sig.as_deref(), &body, now), Ok(()), "signed");
    // Alertmanager's webhook payload, Hale's record in an annotation.
    let payload: hale_core::api::WebhookPayload = serde_json::from_slice(&body).expect("a v4 payload");
    assert_eq!((payload.version.as_str(), payload.alerts[0].labels["alertname"].as_str()), ("4", "HaleRepairFailed"));
    let escalation = hale_core::api::Escalation::from_webhook(&payload).expect("an Escalation");
    assert_eq!(escalation.version, hale_core::api::ESCALATION_VERSION);
    assert_eq!(escalation.target.instance.as_deref(), Some("s-1"));
    assert!(escalation.why.contains("refused to restart s-1"), "{escalation:?}");
    assert_eq!(rig.events("escalated", "s-1").len(), 1);
    let needs = rig.healer.store.read(|s| s.targets["instance/s-1"].needs_human.clone());
    assert!(needs.is_some_and(|n| n.contains("failed")));
    // A new alert on it: refused for good, not kept.
    rig.fire("s-1", "2026-01-01T00:05:00Z").await;
    eventually("refused", Duration::from_secs(5), || !rig.events("refused", "s-1").is_empty()).await;
    let refused = &rig.events("refused", "s-1")[0];
    assert_eq!(refused["code"], "needs_human");
    assert!(refused["retry"].as_str().is_some_and(|r| r.starts_with("never")));
    assert!(rig.healer.store.read(|s| s.deferred.is_empty()));
    // A human resets it: automatic repairs may act on it again.
    let (status, body) = rig.api("POST", "/api/v1/targets/instance/s-1/reset").await;
    let blocked = TargetReset { target: "instance/s-1".into(), was_blocked: true };
    assert_eq!((status, typed::<TargetReset>(body)), (StatusCode::OK, blocked));
    assert!(rig.healer.store.read(|s| s.targets["instance/s-1"].needs_human.is_none()));
    let (status, body) = rig.api("POST", "/api/v1/targets/instance/s-1/reset").await;
    assert_eq!((status, typed::<TargetReset>(body).was_blocked), (StatusCode::OK, false));
    let (status, body) = rig.api("POST", "/api/v1/targets/pod/s-1/reset").await;
    assert_eq!((status, typed::<ErrorBody>(body).error.code), (StatusCode::BAD_REQUEST, "bad_target".into()));
    let resets: Vec<Value> = rig.audit().into_iter().filter(|r| r["event"] == "reset").collect();
    assert_eq!(resets.len(), 2);
    assert_eq!(resets[0]["was_blocked"], true);
}

/// Issue #12 (23): an approval nobody gives in time expires, is audited, and can no
/// longer be approved.
#[tokio::test]
async fn an_approval_expires_and_cannot_be_given_afterwards() {
    let policies = "policies:\n  - name: restart-with-approval\n    match: { alertname: ReplicaDown }\n    action: restart\n    approval: true\n    approval_timeout: 1s\n";
    let rig = Rig::start(policies, Vec::new()).await;
    rig.hang("s-1");
    rig.hang("s-2");
    lock(&rig.world).ready.insert("s-3".into(), true);
    rig.fire("s-1", "2026-01-01T00:00:00Z").await;
    eventually("awaiting approval", Duration::from_secs(5), || {
        rig.healer.store.read(|s| s.actions.iter().any(|a| a.status == hale_healer::state::Status::AwaitingApproval))
    })
    .await;
    let id = rig.healer.store.read(|s| s.actions[0].id.clone());
    eventually("expired", Duration::from_secs(5), || {
        rig.healer.store.read(|s| s.actions[0].status == hale_healer::state::Status::Expired)
    })
    .await;
    let expired: Vec<Value> = rig.audit().into_iter().filter(|r| r["event"] == "expired").collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["action_id"], id.as_str());
    let (status, body) = rig.api("POST", &format!("/api/v1/actions/{id}/approve")).await;
    let error = typed::<ErrorBody>(body).error;
    assert_eq!(status, StatusCode::CONFLICT, "{error:?}");
    assert!(error.message.contains("Expired"), "{error:?}");
    assert!(rig.restarts().is_empty());
    let (status, _) = rig.api("POST", "/api/v1/actions/act-none/approve").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Issue #12 (23): every write endpoint refuses a missing or wrong token with 401 and
/// changes nothing; a healer without a token is read-only (403 on writes, reads work).
#[tokio::test]
async fn writes_need_the_token_and_a_healer_without_one_is_read_only() {
    let rig = Rig::start(RESTART, Vec::new()).await;
    let writes = [
        "/api/v1/actions/act-1/approve",
        "/api/v1/actions/act-1/reject",
        "/api/v1/pause",
        "/api/v1/resume",
        "/api/v1/targets/instance/s-1/reset",
    ];
    let with_token =
        || Auth { token: Some(hale_core::token::Token::fixed(TOKEN)), webhook_secret: None, intake_token: None };
    for uri in writes {
        for given in [None, Some("wrong-token"), Some("")] {
            let (status, body) = rig.call(with_token(), "POST", uri, given).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} with {given:?}");
            assert_eq!(typed::<ErrorBody>(body).error.code, "unauthorized", "{uri}");
        }
        let (status, body) =
            rig.call(Auth { token: None, webhook_secret: None, intake_token: None }, "POST", uri, Some(TOKEN)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri} on a read-only healer");
        assert_eq!(typed::<ErrorBody>(body).error.code, "forbidden");
    }
    assert!(!rig.healer.store.read(|s| s.paused), "nothing changed");
    assert!(!rig.audit().iter().any(|r| r["event"] == "paused" || r["event"] == "reset"));
    for uri in ["/api/v1/state", "/api/v1/actions"] {
        let (status, body) =
            rig.call(Auth { token: None, webhook_secret: None, intake_token: None }, "GET", uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri} is open");
        assert!(body.is_object(), "{uri}: {body}");
    }
    let (_, actions) =
        rig.call(Auth { token: None, webhook_secret: None, intake_token: None }, "GET", "/api/v1/actions", None).await;
    typed::<ActionList>(actions);
    let (_, state) =
        rig.call(Auth { token: None, webhook_secret: None, intake_token: None }, "GET", "/api/v1/state", None).await;
    let state: HealerState = typed(state);
    assert!(!state.paused);
    assert!(matches!(state.ha, Some(Ha::Single { .. })), "{:?}", state.ha);
    // The intake without a signature or token is refused too.
    let (status, _) = rig.call(with_token(), "POST", "/hooks/alertmanager", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Nor does the write token open it: only a signature, or an intake token configured
    // for that purpose.
    let (status, body) = rig.call(with_token(), "POST", "/hooks/alertmanager", Some(TOKEN)).await;
    let error = typed::<ErrorBody>(body).error;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{error:?}");
    assert!(error.message.contains("--intake-token"), "{error:?}");
}

/// What a fake gateway, catalog replica and agent were asked, in order.
type Calls = Arc<Mutex<Vec<String>>>;

/// Issue #13: the gateway's pools, a catalog replica's promotion and rejoin, and an
/// agent's start and stop, as those servers write them (fixtures), read through the
/// healer's typed clients; and what the healer sends them is what they take.
#[tokio::test]
async fn the_gateway_catalog_and_agent_answers_read_as_their_servers_write_them() {
    let calls: Calls = Arc::default();
    let record = |calls: &Calls, what: String| lock_calls(calls).push(what);
    let pools = r#"{"catalog":{"members":[{"instance":"catalog-1","url":"http://127.0.0.1:9","ready":false,
        "ejected":false,"outstanding":0},{"instance":"catalog-2","url":"REPLICA","ready":true,"ejected":true,
        "outstanding":2}],"primary":"catalog-1","epoch":2},"search":{"members":[{"instance":"search-1",
        "url":"http://127.0.0.1:8091","ready":true,"ejected":false,"outstanding":0}]}}"#;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let pools = pools.replace("REPLICA", &format!("http://{addr}"));
    let answer = |body: String| ([("content-type", "application/json")], body);
    // `GET /admin/pool` (no body) and `PUT /admin/pool/{service}` both answer the pools.
    let (c, p) = (calls.clone(), pools.clone());
    let put = move |Path(service): Path<String>, body: String| async move {
        record(&c, format!("PUT {service} {body}"));
        answer(p)
    };
    let c = calls.clone();
    let get_pools = move || async move {
        record(&c, "GET pools".into());
        answer(pools)
    };
    let (c1, c2, c3, c4) = (calls.clone(), calls.clone(), calls.clone(), calls.clone());
    let router = Router::new()
        .route("/admin/pool", get(get_pools))
        .route("/admin/pool/{service}", axum::routing::put(put))
        .route(
            "/admin/promote",
            post(move |body: String| async move {
                record(&c1, format!("promote {body}"));
                answer(r#"{"role":"primary","epoch":3,"last_seq":41}"#.into())
            }),
        )
        .route(
            "/admin/rejoin",
            post(move |body: String| async move {
                record(&c2, format!("rejoin {body}"));
                answer(
                    r#"{"role":"standby","epoch":3,"following":"http://x","kept_through_seq":40,"set_aside":1}"#.into(),
                )
            }),
        )
        .route(
            "/api/v1/processes",
            post(move |body: String| async move {
                record(&c3, format!("start {body}"));
                let started = r#"{"process":{"name":"search-node-1-1","service":"search","node":"node-1",
                    "listen":"127.0.0.1:8095","pid":77,"state":"starting","restarts":0,"uptime_secs":0,"last_exit":null}}"#;
                (StatusCode::CREATED, answer(started.into()))
            }),
        )
        .route(
            "/api/v1/processes/{name}",
            delete(move |Path(name): Path<String>| async move {
                record(&c4, format!("stop {name}"));
                let body = json!({"error": {"code": "not_found", "message": format!("no process {name}")}});
                (StatusCode::NOT_FOUND, axum::Json(body))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    let gateway = hale_healer::clients::Gateway {
        base: format!("http://{addr}"),
        admin_token: hale_core::token::Token::fixed("admin"),
        client: client.clone(),
    };
    let catalog = gateway.catalog().await.expect("the catalog pool");
    assert_eq!((catalog.primary.as_deref(), catalog.epoch), (Some("catalog-1"), Some(2)));
    assert!(catalog.members[1].ready && catalog.members[1].ejected);
    let standby = catalog.members[1].clone();
    assert_eq!(gateway.promote(&standby).await.expect("promoted"), 3);
    let rejoined = gateway.rejoin(&catalog.members[0], &standby, 3).await;
    // catalog-1's URL answers nothing: the rejoin is asked of the replica itself.
    assert!(rejoined.is_err());
    let rejoined = gateway.rejoin(&standby, &catalog.members[0], 3).await.expect("rejoined");
    assert_eq!((rejoined.kept_through_seq, rejoined.set_aside), (40, 1));
    gateway.add_member("search", "search-2", "http://127.0.0.1:8092").await.expect("added");
    gateway.remove_member("search", "search-1").await.expect("removed");
    let agents = hale_healer::clients::Agents {
        by_node: [("node-1".to_string(), format!("http://{addr}"))].into(),
        token: hale_core::token::Token::fixed("agent"),
        client,
    };
    let started = agents.start("node-1", "search").await.expect("started");
    // An agent that does not say the replica's URL: plain HTTP on its address.
    assert_eq!(started, ("search-node-1-1".to_string(), "http://127.0.0.1:8095".to_string()));
    agents.stop("node-1", "search-9").await.expect("a replica the agent does not know is stopped");
    assert_eq!(
        *lock_calls(&calls),
        [
            "GET pools".to_string(),
            "promote ".into(),
            r#"PUT catalog {"primary":"catalog-2","epoch":3}"#.into(),
            r#"rejoin {"primary":"http://127.0.0.1:9","epoch":3}"#.into(),
            "GET pools".into(),
            r#"PUT search {"members":[{"instance":"search-1","url":"http://127.0.0.1:8091"},{"instance":"search-2","url":"http://127.0.0.1:8092"}]}"#.into(),
            "GET pools".into(),
            r#"PUT search {"members":[]}"#.into(),
            r#"start {"service":"search"}"#.into(),
            "stop search-9".into(),
        ]
    );
}

fn lock_calls(calls: &Calls) -> std::sync::MutexGuard<'_, Vec<String>> {
    calls.lock().unwrap_or_else(|p| p.into_inner())
}

/// A primary/standby service written for this test (not the shop's catalog) that speaks
/// the failover protocol: its role and epoch, promote, fence, rejoin.
#[derive(Default)]
struct Replica {
    role: String,
    epoch: u64,
    last_seq: u64,
    calls: Vec<String>,
}

async fn protocol_replica(role: &str, epoch: u64, last_seq: u64) -> (String, Arc<Mutex<Replica>>) {
    let me = Arc::new(Mutex::new(Replica { role: role.into(), epoch, last_seq, calls: Vec::new() }));
    let (m1, m2, m3, m4) = (me.clone(), me.clone(), me.clone(), me.clone());
    let router = Router::new()
        .route(
            "/admin/replication",
            get(move || async move {
                let r = m1.lock().unwrap_or_else(|p| p.into_inner());
                axum::Json(json!({"role": r.role, "epoch": r.epoch, "last_seq": r.last_seq}))
            }),
        )
        .route(
            "/admin/promote",
            post(move |axum::Json(body): axum::Json<Value>| async move {
                let mut r = m2.lock().unwrap_or_else(|p| p.into_inner());
                r.epoch = body["epoch"].as_u64().unwrap_or(0).max(r.epoch + 1);
                r.role = "primary".into();
                let epoch = r.epoch;
                r.calls.push(format!("promote {epoch}"));
                axum::Json(json!({"epoch": r.epoch, "role": "primary", "last_seq": r.last_seq}))
            }),
        )
        .route(
            "/admin/fence",
            post(move |axum::Json(body): axum::Json<Value>| async move {
                let mut r = m3.lock().unwrap_or_else(|p| p.into_inner());
                let epoch = body["epoch"].as_u64().unwrap_or(0);
                if epoch > r.epoch && r.role == "primary" {
                    r.role = "fenced".into();
                }
                r.epoch = r.epoch.max(epoch);
                r.calls.push(format!("fence {epoch}"));
                axum::Json(json!({"epoch": r.epoch, "role": r.role}))
            }),
        )
        .route(
            "/admin/rejoin",
            post(move |axum::Json(body): axum::Json<Value>| async move {
                let mut r = m4.lock().unwrap_or_else(|p| p.into_inner());
                r.role = "standby".into();
                r.epoch = body["epoch"].as_u64().unwrap_or(0);
                r.calls.push(format!("rejoin {}", body["primary"].as_str().unwrap_or("")));
                let following = body["primary"].clone();
                axum::Json(json!({"epoch": r.epoch, "following": following, "kept_through_seq": 7, "role": "standby", "set_aside": 1}))
            }),
        );
    (format!("http://{}", serve(router).await), me)
}

/// The failover protocol on a service the healer knows only from its inventory: the
/// primary is unready (its status still says primary), so the standby with the most of
/// the log is promoted under the next epoch and the old primary fenced; then the fenced
/// one rejoins as the new primary's standby. The load balancer is an exec hook, told the
/// new primary.
#[tokio::test]
async fn any_service_speaking_the_failover_protocol_is_failed_over_and_rejoined() {
    let (a_url, a) = protocol_replica("primary", 4, 10).await;
    let (b_url, b) = protocol_replica("standby", 4, 9).await;
    let (c_url, c) = protocol_replica("standby", 4, 8).await;
    let dir = tempfile::tempdir().expect("tmp");
    let told = dir.path().join("lb.out");
    let inventory = hale_healer::inventory::Inventory::parse(&format!(
        r#"[load_balancers.lb]
kind = "exec"
register = ["sh", "-c", "echo $HALE_INSTANCE $HALE_ROLE $HALE_EPOCH >> {told}"]
deregister = ["true"]
[[services]]
name = "ledger"
executor = "exec"
restart = ["true"]
stateful = true
load_balancer = "lb"
members = [{{ instance = "ledger-a", url = "{a_url}" }}, {{ instance = "ledger-b", url = "{b_url}" }}, {{ instance = "ledger-c", url = "{c_url}" }}]
"#,
        told = told.display()
    ))
    .expect("inventory");
    // Both act on ledger-a (a short cooldown between the failover and the rejoin).
    let policies = "defaults:\n  cooldown: 1s\npolicies:\n  - name: failover\n    match: { alertname: LedgerPrimaryDown }\n    action: failover\n    verify: { timeout: 5s }\n  - name: rejoin\n    match: { alertname: LedgerFenced }\n    action: rejoin\n    verify: { timeout: 5s }\n";
    let policy_file = PolicyFile::parse(policies).expect("policies");
    hale_healer::executor::check_policies(&policy_file, &inventory).expect("the protocol gives failover and rejoin");
    let rig = Rig::start_with(policies, Vec::new(), inventory).await;
    let fire = |name: &str, instance: &str| Alert {
        labels: [("alertname", name), ("service", "ledger"), ("instance", instance)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: Labels::new(),
        starts_at: "2026-01-01T00:00:00Z".into(),
        fingerprint: format!("fp-{name}"),
        received_ms: hale_core::time::now_ms(),
    };
    // ledger-a still says it is the primary, but the alert names it: it is not fine.
    assert!(rig.healer.receive(fire("LedgerPrimaryDown", "ledger-a")).await.expect("stored"));
    eventually("a promotion", Duration::from_secs(10), || {
        !b.lock().unwrap_or_else(|p| p.into_inner()).calls.is_empty()
    })
    .await;
    assert_eq!(b.lock().unwrap_or_else(|p| p.into_inner()).calls, ["promote 5"], "the standby with the most log");
    assert!(c.lock().unwrap_or_else(|p| p.into_inner()).calls.is_empty());
    eventually("the old primary fenced", Duration::from_secs(10), || {
        a.lock().unwrap_or_else(|p| p.into_inner()).role == "fenced"
    })
    .await;
    let lb = std::fs::read_to_string(&told).expect("the load balancer was told");
    assert_eq!(lb.trim(), "ledger-b primary 5");
    let detail = rig.healer.store.read(|s| s.actions[0].detail.clone());
    assert!(detail.contains("promoted ledger-b to primary under epoch 5; ledger-a is fenced"), "{detail}");
    // The fenced one rejoins as the new primary's standby (after the cooldown; the alert
    // fires meanwhile).
    let fenced = fire("LedgerFenced", "ledger-a");
    lock(&rig.world).firing.push(fenced.labels.clone());
    assert!(rig.healer.receive(fenced).await.expect("stored"));
    eventually("rejoined", Duration::from_secs(10), || a.lock().unwrap_or_else(|p| p.into_inner()).role == "standby")
        .await;
    assert_eq!(a.lock().unwrap_or_else(|p| p.into_inner()).calls.last().cloned(), Some(format!("rejoin {b_url}")));
}

/// A failover asks every member's status, and the old primary is usually the one that
/// does not answer: frozen, it accepts the connection and says nothing. Its status is
/// waited for only a moment past the ready members' answers (#21: the 2 s wait on it was
/// most of a failover's time), while an unready member that does answer is still read.
#[tokio::test]
async fn a_failover_does_not_wait_on_a_frozen_old_primarys_status() {
    use hale_healer::failover::{Member, Protocol};
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (standby_url, _) = protocol_replica("standby", 4, 9).await;
    let (unready_url, _) = protocol_replica("standby", 4, 7).await;
    let member = |name: &str, url: String, ready: bool| Member {
        instance: name.into(),
        url,
        ready: Some(ready),
        listed_primary: name == "a",
    };
    let members = vec![
        member("a", format!("http://{}", frozen.local_addr().expect("addr")), false),
        member("b", standby_url, true),
        member("c", unready_url, false),
    ];
    let protocol = Protocol { client: reqwest::Client::new(), token: None, secret: None };
    let started = std::time::Instant::now();
    let statuses = protocol.statuses(members).await;
    let took = started.elapsed();
    let got: Vec<_> = statuses.iter().map(|(m, s)| (m.instance.as_str(), s.map(|s| s.last_seq))).collect();
    assert_eq!(got, [("a", None), ("b", Some(9)), ("c", Some(7))]);
    assert!(took < Duration::from_secs(1), "waited {took:?} on a member that never answers");
}

/// Spans an OTLP/HTTP receiver on a free port got.
type Spans = Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>;

async fn span_receiver() -> (String, Spans) {
    use prost::Message;
    let got: Spans = Arc::default();
    let store = got.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| async move {
            let request =
                opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(&body[..])
                    .expect("OTLP protobuf");
            let spans = request.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
            store.lock().expect("lock").extend(spans);
            ""
        }),
    );
    (format!("http://{}/v1/traces", serve(app).await), got)
}

/// Each repair is one trace: alert → safety checks → executor call → verification, its
/// outcome on the root span, and its id on the action (the healer API) and on every
/// audit record of the decision.
#[tokio::test]
async fn a_repair_is_one_trace_whose_id_the_action_and_the_audit_record() {
    use tracing_subscriber::layer::SubscriberExt;
    let (endpoint, got) = span_receiver().await;
    let mut config = hale_trace::Config::new("hale-healer", "healer-test", &endpoint);
    config.ratio = 1.0;
    let tracing = Arc::new(hale_trace::Tracing::start(config));
    // The test's runtime has one thread: the healer's tasks run under this subscriber.
    // With this the only dispatcher, tracing-core decides a callsite's interest from the
    // default of whichever thread reaches it first, and the other tests' threads have
    // none: a second live dispatcher makes it ask every dispatcher instead.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(tracing.layer()));
    let rig = Rig::start(RESTART, Vec::new()).await;
    rig.hang("s-1");
    lock(&rig.world).ready.insert("s-2".into(), true);
    rig.fire("s-1", "2026-01-01T00:00:00Z").await;
    let status = || rig.healer.store.read(|s| s.actions.first().map(|a| a.status));
    eventually("verified", Duration::from_secs(10), || status() == Some(hale_core::api::ActionStatus::Succeeded)).await;
    let action = rig.healer.store.read(|s| s.actions[0].clone());
    let trace_id = action.trace_id.clone().expect("the action names its trace");
    let decided: Vec<Value> = rig.audit().into_iter().filter(|r| r["action_id"] == action.id.as_str()).collect();
    assert!(decided.len() >= 4, "planned, acting, acted, verified: {decided:?}");
    for record in &decided {
        assert_eq!(record["trace_id"], trace_id.as_str(), "{record}");
    }
    let (_, listed) = rig.api("GET", "/api/v1/actions").await;
    assert_eq!(listed["actions"][0]["trace_id"], trace_id.as_str(), "the healer API gives the trace");

    let flusher = tracing.clone();
    tokio::task::spawn_blocking(move || flusher.flush()).await.expect("flush");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let spans: Vec<_> = got.lock().expect("lock").iter().filter(|s| hex(&s.trace_id) == trace_id).cloned().collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let root = spans.iter().find(|s| s.name == "heal ReplicaDown").unwrap_or_else(|| panic!("the root: {names:?}"));
    assert!(root.parent_span_id.is_empty(), "a trace of its own");
    for child in ["safety checks", "restart instance/s-1", "verify repair"] {
        let span = spans.iter().find(|s| s.name == child).unwrap_or_else(|| panic!("{child} in {names:?}"));
        assert_eq!(span.parent_span_id, root.span_id, "{child} is a step of the repair");
    }
    let attr = |k: &str| root.attributes.iter().find(|kv| kv.key == k).map(|kv| format!("{:?}", kv.value));
    assert!(attr("hale.outcome").is_some_and(|v| v.contains("succeeded")), "{:?}", root.attributes);
    assert!(attr("hale.policy").is_some_and(|v| v.contains("restart-hung")));
}
