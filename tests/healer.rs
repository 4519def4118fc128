//! End to end: the real `hale healer` beside a real `hale collector` fed with probe
//! results: unsigned, stale and forged webhooks are refused and change nothing; dry-run
//! records what it would do and does nothing; pause, approval, rejection and the
//! duplicate guard; `hale policies check`.

mod common;

use common::{Proc, eventually, free_addr};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hale_core::api::{
    ACTION_WEBHOOK_VERSION, Action, ActionKind, ActionStatus, ActionWebhook, ErrorBody, ExecInput, Ha, HaRole,
    HealerState, HookAccepted, RetryWhen, SilenceState,
};
use serde_json::{Value, json};

const SECRET: &str = "healer-test-secret";
const TOKEN: &str = "healer-test-token";
const INTAKE_TOKEN: &str = "healer-test-intake-token";
/// The collector's admin token (silences), also in the healer's cluster.toml.
const ADMIN_TOKEN: &str = "healer-test-admin-token";

const POLICIES: &str = r#"defaults:
  cooldown: 1m
policies:
  - name: restart-unready
    match: { alertname: ReplicaDown }
    action: restart
    verify: { timeout: 5s }
  - name: run-a-command
    match: { alertname: DiskFilling }
    action: exec
    params:
      command: "sh EXECSCRIPT"
      timeout: 5s
    # The other policies verify the same way (an alias, as operators write them).
    verify: &probe_failing
      query: 'probe_success{instance="{{ $labels.instance }}"} == 0'
      timeout: 2m
  - name: tell-automation
    match: { alertname: QueueBacklog }
    action: webhook
    params:
      url: HOOKURL
    verify: *probe_failing
  - name: gated-by-budget
    match: { alertname: CheckoutBurning }
    action: webhook
    params:
      url: HOOKURL
    approval: true
    require_burn: { slo: checkout, window: 1h, above: 14.4 }
  - name: limited-per-service
    match: { alertname: QueueFlood }
    action: webhook
    params:
      url: HOOKURL
    max_service_actions: 2
  - name: verified-by-a-query
    match: { alertname: QueueStuck }
    action: webhook
    params:
      url: HOOKURL
    verify: *probe_failing
  - name: restart-slow-with-approval
    match: { alertname: SlowReplica }
    action: restart
    approval: true
    approval_timeout: 1m
"#;

struct Setup {
    dir: tempfile::TempDir,
    collector: SocketAddr,
    healer: SocketAddr,
    _procs: Vec<Proc>,
}

async fn start(dry_run: bool) -> Setup {
    start_with(dry_run, "http://127.0.0.1:9/unused").await
}

async fn start_with(dry_run: bool, hook_url: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let (c, collector, policies, cluster) = collector_and_files(dir.path(), hook_url).await;
    let extra: &[&str] = if dry_run { &["--dry-run"] } else { &[] };
    let (h, healer) = spawn_healer(dir.path(), "healer", collector, &policies, &cluster, extra).await;
    Setup { dir, collector, healer, _procs: vec![c, h] }
}

/// A running collector, the test policies (`hook_url` for their webhooks) and the
/// embedded cluster.toml (its agents are not running, so no action can reach one).
async fn collector_and_files(dir: &Path, hook_url: &str) -> (Proc, SocketAddr, PathBuf, PathBuf) {
    let collector = free_addr();
    let out = dir.join("collector.out");
    let mut c =
        common::spawn_collector(collector, &dir.join("collector"), &out, &[], &[("HALE_ADMIN_TOKEN", ADMIN_TOKEN)]);
    common::collector_ready(&mut c, collector, &out).await;
    let cluster = dir.join("cluster.toml");
    // The demo topology with secrets of its own, the collector's admin token among them.
    let mut config = hale_core::ClusterConfig::parse(hale_core::DEFAULT_CLUSTER_TOML).expect("config");
    config.secrets.admin_token = ADMIN_TOKEN.into();
    std::fs::write(&cluster, config.to_toml()).expect("cluster");
    let policies = dir.join("policies.yaml");
    // The command keeps the alert it is given on stdin, and the environment it runs in.
    let script = dir.join("exec.sh");
    let (out_file, env_file) = (dir.join("exec.out"), dir.join("exec.env"));
    std::fs::write(&script, format!("env > '{}'\nexec tee '{}'\n", env_file.display(), out_file.display()))
        .expect("script");
    let text = POLICIES.replace("EXECSCRIPT", &script.display().to_string()).replace("HOOKURL", hook_url);
    std::fs::write(&policies, text).expect("policies");
    (c, collector, policies, cluster)
}

/// A `hale healer` with its data in `dir/name`, its output in `dir/name.out`; returns once
/// it answers `/-/ready`.
async fn spawn_healer(
    dir: &Path,
    name: &str,
    collector: SocketAddr,
    policies: &Path,
    cluster: &Path,
    extra: &[&str],
) -> (Proc, SocketAddr) {
    let healer = free_addr();
    let log = std::fs::File::create(dir.join(format!("{name}.out"))).expect("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hale"));
    cmd.args(["healer", "--listen", &healer.to_string(), "--data-dir"])
        .arg(dir.join(name))
        .arg("--policies")
        .arg(policies)
        .arg("--cluster")
        .arg(cluster)
        .args(["--collector", &format!("http://{collector}")])
        .args(extra)
        .env("HALE_WEBHOOK_SECRET", SECRET)
        .env("HALE_HEALER_TOKEN", TOKEN)
        .env("HALE_HEALER_INTAKE_TOKEN", INTAKE_TOKEN);
    let h = Proc(common::spawn_logged(&mut cmd, log, "healer"));
    common::wait_ready("healer", healer).await;
    (h, healer)
}

/// Fresh probe results for search-1 (failing) and search-2 (ready).
async fn probes(collector: SocketAddr) {
    for (instance, node, ok) in [("search-1", "node-3", 0.0), ("search-2", "node-2", 1.0)] {
        let labels = [("instance", instance), ("node", node), ("probe", "readyz"), ("service", "search")];
        common::push_gauge(collector, "probe_success", &labels, ok).await;
    }
}

/// The readiness of `instance` as the collector sees it (what the verify queries watch).
async fn set_probe(collector: SocketAddr, instance: &str, value: f64) {
    let labels = [("instance", instance), ("node", "node-3"), ("probe", "readyz"), ("service", "search")];
    common::push_gauge(collector, "probe_success", &labels, value).await;
}

fn payload(alertname: &str, instance: &str, starts_at: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": "4",
        "status": "firing",
        "receiver": "healer",
        "groupLabels": {"alertname": alertname},
        "extra": "unknown fields are ignored",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": alertname, "instance": instance, "node": "node-3", "service": "search"},
            "annotations": {},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": format!("fp-{alertname}-{instance}"),
        }],
    }))
    .expect("json")
}

/// Posts to the healer's intake: the status and the answer's body (a `HookAccepted` or an
/// `ErrorBody`, read with [`queued`] and [`error_message`]).
async fn post(healer: SocketAddr, body: &[u8], signature: Option<String>, bearer: Option<&str>) -> (u16, String) {
    let mut r = reqwest::Client::new().post(format!("http://{healer}/hooks/alertmanager")).body(body.to_vec());
    if let Some(s) = signature {
        r = r.header(hale_core::webhook::SIGNATURE_HEADER, s);
    }
    if let Some(b) = bearer {
        r = r.bearer_auth(b);
    }
    let r = r.send().await.expect("post");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// How many alerts an accepted post queued.
fn queued(reply: &str) -> Option<usize> {
    serde_json::from_str::<HookAccepted>(reply).ok().map(|a| a.queued)
}

/// The message of an error answer.
fn error_message(reply: &str) -> Option<String> {
    serde_json::from_str::<ErrorBody>(reply).ok().map(|e| e.error.message)
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

fn signed(body: &[u8]) -> Option<String> {
    Some(hale_core::webhook::sign(SECRET.as_bytes(), now_s(), body))
}

/// The healer's typed client (reads only).
fn client_of(healer: SocketAddr) -> hale_client::Healer {
    hale_client::Healer::new(&format!("http://{healer}"), None).expect("healer client")
}

async fn actions(healer: SocketAddr) -> Vec<Action> {
    client_of(healer).actions().await.expect("actions").actions
}

/// Whether the healer has an action for `alertname` in `status`.
async fn has_action(healer: SocketAddr, alertname: &str, status: ActionStatus) -> Option<()> {
    actions(healer).await.iter().any(|a| a.alert.name() == alertname && a.status == status).then_some(())
}

/// Whether the healer has exactly one action, in `status`.
async fn only_action_is(healer: SocketAddr, status: ActionStatus) -> bool {
    matches!(actions(healer).await.as_slice(), [a] if a.status == status)
}

/// The first action awaiting approval.
async fn awaiting_approval(healer: SocketAddr) -> Option<Action> {
    actions(healer).await.into_iter().find(|a| a.status == ActionStatus::AwaitingApproval)
}

async fn state(healer: SocketAddr) -> HealerState {
    client_of(healer).state().await.expect("state")
}

// The audit log is the healer's free-form record (JSON lines, fields by event, written
// as `Value`): no wire type, so read as JSON.
fn audit(dir: &Path) -> Vec<Value> {
    audit_of(dir, "healer")
}

fn audit_of(dir: &Path, name: &str) -> Vec<Value> {
    let path: PathBuf = dir.join(name).join("audit.jsonl");
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn events(dir: &Path) -> Vec<String> {
    events_of(dir, "healer")
}

fn events_of(dir: &Path, name: &str) -> Vec<String> {
    audit_of(dir, name).iter().filter_map(|r| r["event"].as_str().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_stale_and_forged_webhooks_are_refused_and_change_nothing() {
    let s = start(false).await;
    let body = payload("ReplicaDown", "search-1", "2026-01-01T00:00:00Z");
    let (status, _) = post(s.healer, &body, None, None).await;
    assert_eq!(status, 401, "unsigned");
    let (status, reply) = post(s.healer, &body, Some(hale_core::webhook::sign(b"forged", now_s(), &body)), None).await;
    assert_eq!(status, 401, "forged");
    assert!(error_message(&reply).is_some_and(|m| m.contains("does not match")), "{reply}");
    let (status, reply) =
        post(s.healer, &body, Some(hale_core::webhook::sign(SECRET.as_bytes(), now_s() - 600, &body)), None).await;
    assert_eq!(status, 401, "stale");
    assert!(error_message(&reply).is_some_and(|m| m.contains("300 s")), "{reply}");
    let other = payload("ReplicaDown", "search-2", "2026-01-01T00:00:00Z");
    let (status, _) = post(s.healer, &other, signed(&body), None).await;
    assert_eq!(status, 401, "a signature of another body");
    let (status, _) = post(s.healer, &body, None, Some("wrong-token")).await;
    assert_eq!(status, 401, "wrong bearer");
    let (status, _) = post(s.healer, b"{not json", signed(b"{not json"), None).await;
    assert_eq!(status, 400, "signed garbage is a bad request");
    assert!(actions(s.healer).await.is_empty());
    assert!(!events(s.dir.path()).iter().any(|e| e == "received"), "nothing was even received");
    // The healer's write token is no way in: it moves the healer, it does not feed it.
    let (status, _) = post(s.healer, &body, None, Some(TOKEN)).await;
    assert_eq!(status, 401, "the write token on the intake");
    assert!(!events(s.dir.path()).iter().any(|e| e == "received"), "nothing was even received");
    // The intake token, configured for senders that cannot sign, is accepted.
    let (status, reply) = post(s.healer, &body, None, Some(INTAKE_TOKEN)).await;
    assert_eq!((status, queued(&reply)), (200, Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_acts_on_nothing_and_records_everything() {
    let s = start(true).await;
    probes(s.collector).await;
    let body = payload("ReplicaDown", "search-1", "2026-01-01T00:00:01Z");
    let (status, _) = post(s.healer, &body, signed(&body), None).await;
    assert_eq!(status, 200);
    let list = eventually("a dry-run action", Duration::from_secs(10), async || {
        Some(actions(s.healer).await).filter(|a| !a.is_empty())
    })
    .await;
    assert_eq!(list[0].status, ActionStatus::DryRun);
    assert_eq!(list[0].kind, ActionKind::Restart);
    assert_eq!(list[0].target.instance.as_deref(), Some("search-1"));
    let ev = events(s.dir.path());
    assert!(ev.contains(&"received".to_string()) && ev.contains(&"dry_run".to_string()), "{ev:?}");
    assert!(!ev.iter().any(|e| e == "acting" || e == "acted"), "nothing done: {ev:?}");
    let state = state(s.healer).await;
    assert!(state.dry_run);
    assert!(state.targets.is_empty(), "a dry run counts for no cooldown: {state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_pause_approval_and_rejection() {
    let s = start(false).await;
    probes(s.collector).await;
    let client = reqwest::Client::new();
    // 100 copies of one alert in a burst: one is queued, 99 are duplicates.
    let body = payload("SlowReplica", "search-1", "2026-01-01T00:00:02Z");
    let mut total = 0;
    for _ in 0..100 {
        let (status, reply) = post(s.healer, &body, signed(&body), None).await;
        assert_eq!(status, 200);
        total += queued(&reply).unwrap_or(0);
    }
    assert_eq!(total, 1);
    let waiting =
        eventually("awaiting approval", Duration::from_secs(10), async || awaiting_approval(s.healer).await).await;
    assert_eq!(actions(s.healer).await.len(), 1, "exactly one action");
    let id = waiting.id;
    // A second occurrence of the same alert while the first awaits: refused, in progress.
    let again = payload("SlowReplica", "search-1", "2026-01-01T00:00:03Z");
    let (status, reply) = post(s.healer, &again, signed(&again), None).await;
    assert_eq!((status, queued(&reply)), (200, Some(1)), "a new occurrence: {reply}");
    eventually("refused as in progress", Duration::from_secs(10), async || {
        audit(s.dir.path())
            .into_iter()
            .find(|r| r["event"] == "refused" && r["reason"].as_str().is_some_and(|m| m.contains("in progress")))
    })
    .await;
    // Approving needs the token; rejecting with it ends the action.
    let url = format!("http://{}/api/v1/actions/{id}/reject", s.healer);
    assert_eq!(client.post(&url).send().await.expect("post").status(), 401);
    let r = client.post(&url).bearer_auth(TOKEN).send().await.expect("post");
    assert_eq!(r.status(), 200);
    let list = actions(s.healer).await;
    assert_eq!(list[0].status, ActionStatus::Rejected);
    let r = client.post(&url).bearer_auth(TOKEN).send().await.expect("post");
    assert_eq!(r.status(), 409, "answered once");
    // The occurrence refused while the first was in progress is looked at again now that
    // it is not; this collector has no rule that fires it, so it is dropped, with a record.
    let dropped = eventually("the refused occurrence dropped", Duration::from_secs(10), async || {
        audit(s.dir.path()).into_iter().find(|r| r["event"] == "dropped")
    })
    .await;
    assert_eq!(dropped["alert"]["starts_at"], "2026-01-01T00:00:03Z");
    assert_eq!(dropped["reason"], "the alert no longer fires at the collector");
    assert_eq!(actions(s.healer).await.len(), 1, "nothing done for it");

    // Paused: everything is refused, and says why.
    let r = client.post(format!("http://{}/api/v1/pause", s.healer)).bearer_auth(TOKEN).send().await.expect("pause");
    assert_eq!(r.status(), 200);
    let third = payload("ReplicaDown", "search-1", "2026-01-01T00:00:04Z");
    let (status, reply) = post(s.healer, &third, signed(&third), None).await;
    assert_eq!((status, queued(&reply)), (200, Some(1)), "{reply}");
    eventually("refused while paused", Duration::from_secs(10), async || {
        audit(s.dir.path()).into_iter().find(|r| r["event"] == "refused" && r["reason"] == "the healer is paused")
    })
    .await;
    assert_eq!(actions(s.healer).await.len(), 1);
    // Kept, to be decided on resume if it still fires.
    let state = state(s.healer).await;
    let kept = &state.deferred;
    assert_eq!(kept.len(), 1, "{state:?}");
    assert_eq!(kept[0].alert.name(), "ReplicaDown");
    assert_eq!(kept[0].code, "paused");
    assert_eq!(kept[0].retry, RetryWhen::Resumed);
    let metrics =
        reqwest::get(format!("http://{}/metrics", s.healer)).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("hale_healer_paused 1"), "{metrics}");
    assert!(metrics.contains("hale_healer_alerts_duplicate_total 99"), "{metrics}");
    assert!(metrics.contains("hale_healer_decisions_total{decision=\"refused\"} 2"), "{metrics}");
}

/// A failed repair's escalation is stored (fsynced) before it is sent: with its receiver
/// down and the healer killed -9, the healer started again delivers it — Alertmanager's
/// v4 payload, signed, Hale's record in its annotations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_survives_its_receiver_being_down_and_a_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_c, collector, _, cluster) = collector_and_files(dir.path(), "http://127.0.0.1:9/unused").await;
    let policies = common::file(
        dir.path(),
        "doomed.yaml",
        "policies:\n  - name: doomed\n    match: { alertname: Doomed }\n    action: exec\n    params: { command: \"false\", timeout: 5s }\n",
    );
    let pager = free_addr(); // nothing listens there yet
    let hook = format!("http://{pager}/escalate");
    let extra = ["--escalation-webhook", hook.as_str()];
    let (mut h, healer) = spawn_healer(dir.path(), "healer", collector, &policies, &cluster, &extra).await;
    let body = payload("Doomed", "disk-a", "2026-01-01T00:00:05Z");
    assert_eq!(post(healer, &body, signed(&body), None).await.0, 200);
    eventually("the failed repair escalated", Duration::from_secs(20), async || {
        events_of(dir.path(), "healer").iter().any(|e| e == "escalated").then_some(())
    })
    .await;
    let stored = || {
        std::fs::read_dir(dir.path().join("healer/escalations"))
            .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")).count())
            .unwrap_or(0)
    };
    assert_eq!(stored(), 1, "waiting in the outbox while the receiver is down");
    h.kill_9();
    let got = common::receiver_on(pager, "/escalate").await;
    let (_h, _) = spawn_healer(dir.path(), "healer", collector, &policies, &cluster, &extra).await;
    let (_, headers, body) = eventually("delivered after the restart", Duration::from_secs(30), async || {
        got.lock().expect("lock").first().cloned()
    })
    .await;
    let sig = headers.get(hale_core::webhook::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    hale_core::webhook::verify(SECRET.as_bytes(), sig, &body, now_s()).expect("signed");
    let payload: hale_core::api::WebhookPayload = serde_json::from_slice(&body).expect("a v4 payload");
    assert_eq!(payload.version, "4");
    let alert = &payload.alerts[0];
    assert_eq!((alert.labels["alertname"].as_str(), alert.labels["instance"].as_str()), ("HaleRepairFailed", "disk-a"));
    assert_eq!(alert.labels["escalated_alertname"], "Doomed");
    let escalation = hale_core::api::Escalation::from_webhook(&payload).expect("Hale's record");
    assert!(escalation.why.contains("false"), "{escalation:?}");
    eventually("the outbox emptied", Duration::from_secs(10), async || (stored() == 0).then_some(())).await;
    assert_eq!(got.lock().expect("lock").len(), 1, "delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_webhook_actions_run_and_are_verified() {
    // Outside automation: takes signed posts.
    let (hook, got) = common::receiver("/automation").await;
    let s = start_with(false, &format!("http://{hook}/automation")).await;
    // Each problem lasts until its repair has worked (here: until the test says so).
    for instance in ["disk-a", "queue-a"] {
        set_probe(s.collector, instance, 0.0).await;
    }
    for (name, instance) in [("DiskFilling", "disk-a"), ("QueueBacklog", "queue-a")] {
        let body = payload(name, instance, "2026-01-01T00:00:05Z");
        assert_eq!(post(s.healer, &body, signed(&body), None).await.0, 200);
    }
    eventually("both acted, verifying", Duration::from_secs(20), async || {
        let list = actions(s.healer).await;
        (list.len() == 2 && list.iter().all(|a| a.status == ActionStatus::Verifying)).then_some(list)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        actions(s.healer).await.iter().all(|a| a.status == ActionStatus::Verifying),
        "not verified before it worked"
    );
    for instance in ["disk-a", "queue-a"] {
        set_probe(s.collector, instance, 1.0).await;
    }
    let done = eventually("both verified", Duration::from_secs(20), async || {
        let list = actions(s.healer).await;
        (list.len() == 2 && list.iter().all(|a| a.status == ActionStatus::Succeeded)).then_some(list)
    })
    .await;
    assert!(done.iter().any(|a| a.kind == ActionKind::Exec) && done.iter().any(|a| a.kind == ActionKind::Webhook));
    assert!(done.iter().all(|a| a.detail == "the condition cleared"), "{done:?}");
    // The command got the alert on stdin, as core's `ExecInput`.
    let written: ExecInput =
        serde_json::from_str(&std::fs::read_to_string(s.dir.path().join("exec.out")).expect("exec output"))
            .expect("an ExecInput");
    assert_eq!(written.alert.labels["alertname"], "DiskFilling");
    // ...and none of the healer's credentials (its parent's environment has them all).
    let env = std::fs::read_to_string(s.dir.path().join("exec.env")).expect("exec environment");
    assert!(env.contains("PATH="), "{env}");
    for secret in [SECRET, TOKEN, INTAKE_TOKEN] {
        assert!(!env.contains(secret), "the command saw a credential of the healer's: {env}");
    }
    // Automation got a signed post.
    let (_, headers, body) = got.lock().expect("lock").first().cloned().expect("a post");
    let sig = headers.get(hale_core::webhook::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    hale_core::webhook::verify(SECRET.as_bytes(), sig, &body, now_s()).expect("signed");
    let body: ActionWebhook = serde_json::from_slice(&body).expect("an ActionWebhook");
    assert_eq!(
        (body.version.as_str(), body.alert.labels["alertname"].as_str()),
        (ACTION_WEBHOOK_VERSION, "QueueBacklog")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_gets_at_most_its_actions_per_window_whatever_the_replica() {
    let (hook, got) = common::receiver("/automation").await;
    let s = start_with(false, &format!("http://{hook}/automation")).await;
    for instance in ["flood-1", "flood-2", "flood-3"] {
        let body = payload("QueueFlood", instance, "2026-01-01T00:00:05Z");
        assert_eq!(post(s.healer, &body, signed(&body), None).await.0, 200);
    }
    eventually("two acted, one refused", Duration::from_secs(20), async || {
        let refused = audit(s.dir.path()).into_iter().find(|r| r["event"] == "refused")?;
        (actions(s.healer).await.len() == 2).then_some(refused)
    })
    .await;
    let refused = audit(s.dir.path()).into_iter().find(|r| r["event"] == "refused").expect("refusal");
    assert_eq!(refused["target"]["instance"], "flood-3");
    let why = refused["reason"].as_str().expect("reason");
    assert!(why.contains("2 actions on the search service"), "{why}");
    assert_eq!(got.lock().expect("lock").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_budget_gate_acts_only_on_a_fast_burn() {
    let s = start(false).await;
    let slo = [("sloth_id", "orders-checkout"), ("sloth_service", "orders"), ("sloth_slo", "checkout")];
    let decide = async |starts: &str| {
        let body = payload("CheckoutBurning", "orders-1", starts);
        assert_eq!(post(s.healer, &body, signed(&body), None).await.0, 200);
    };
    // No SLO data at all: no action.
    decide("2026-01-01T00:00:10Z").await;
    eventually("refused for lack of data", Duration::from_secs(10), async || {
        audit(s.dir.path()).into_iter().find(|r| r["reason"].as_str().is_some_and(|m| m.contains("no burn rate")))
    })
    .await;
    // Burning 10× (a 1 % error ratio against a 0.1 % budget): below the gate.
    common::push_gauge(s.collector, "slo:error_budget:ratio", &slo, 0.001).await;
    common::push_gauge(s.collector, "slo:sli_error:ratio_rate1h", &slo, 0.01).await;
    decide("2026-01-01T00:00:11Z").await;
    eventually("refused below the gate", Duration::from_secs(10), async || {
        audit(s.dir.path())
            .into_iter()
            .find(|r| r["reason"].as_str().is_some_and(|m| m.contains("acts only above 14.4")))
    })
    .await;
    assert!(actions(s.healer).await.is_empty());
    // Burning 20×: the action is taken (here it waits for approval).
    common::push_gauge(s.collector, "slo:sli_error:ratio_rate1h", &slo, 0.02).await;
    decide("2026-01-01T00:00:12Z").await;
    eventually("acted on a fast burn", Duration::from_secs(10), async || awaiting_approval(s.healer).await).await;
}

#[test]
fn policies_check_reports_lines() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/policies.yaml");
    let ok = Command::new(env!("CARGO_BIN_EXE_hale")).args(["policies", "check", file]).output().expect("hale");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = common::file(
        dir.path(),
        "bad.yaml",
        &POLICIES.replace("action: restart\n    verify", "action: reboot\n    verify"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hale")).args(["policies", "check"]).arg(&bad).output().expect("hale");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:6: ", bad.display())) && err.contains("reboot"), "{err}");
    // Against an inventory: an action no executor of the service can do is refused.
    let inventory = common::file(
        dir.path(),
        "healer.toml",
        "[[services]]\nname = \"legacy\"\nexecutor = \"exec\"\nrestart = [\"legacy-ctl\", \"restart\"]\n",
    );
    let grow = common::file(
        dir.path(),
        "grow.yaml",
        "policies:\n  - name: grow\n    match: { alertname: Busy, service: legacy }\n    action: scale_out\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hale"))
        .args(["policies", "check", "--inventory"])
        .arg(&inventory)
        .arg(&grow)
        .output()
        .expect("hale");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs start_another") && err.contains("\"legacy\" (executor exec: restart)"), "{err}");
}

#[test]
fn replay_shows_what_policies_would_have_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = dir.path().join("policies.yaml");
    std::fs::write(&policies, POLICIES.replace("HOOKURL", "http://127.0.0.1:9/x")).expect("policies");
    let alerts = dir.path().join("alerts.jsonl");
    let lines = [
        String::from_utf8(payload("ReplicaDown", "search-1", "2026-01-01T00:00:00Z")).expect("utf8"),
        String::from_utf8(payload("ReplicaDown", "search-1", "2026-01-01T00:00:30Z")).expect("utf8"),
        String::from_utf8(payload("Unknown", "search-1", "2026-01-01T00:00:40Z")).expect("utf8"),
    ];
    std::fs::write(&alerts, lines.join("\n")).expect("alerts");
    let out = Command::new(env!("CARGO_BIN_EXE_hale"))
        .args(["healer", "replay", "--policies"])
        .arg(&policies)
        .arg(&alerts)
        .output()
        .expect("hale");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 alerts: 1 act, 1 no_policy, 1 refused"), "{text}");
    assert!(text.contains("cooldown"), "{text}");
}

/// The role a healer reports in the election.
async fn ha_role(healer: SocketAddr) -> Option<HaRole> {
    match client_of(healer).state().await.ok()?.ha? {
        Ha::Single { role } | Ha::Etcd { role, .. } => Some(role),
    }
}

async fn post_to(healer: SocketAddr, body: &[u8]) -> u16 {
    post(healer, body, signed(body), None).await.0
}

/// etcd over mutual TLS: a healer with the CA and a client certificate is elected; one
/// without a certificate is refused by etcd and says so as it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healer_reaches_etcd_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, etcd_url) = common::spawn_etcd_tls(dir.path()).await;
    assert!(etcd_url.starts_with("https://"));
    let (_collector, collector, policies, cluster) = collector_and_files(dir.path(), "http://127.0.0.1:9/none").await;
    let pem = |name: &str| dir.path().join("certs").join(name).display().to_string();
    let (ca, cert, key) = (pem("ca.pem"), pem("client.pem"), pem("client-key.pem"));
    let args = ["--etcd", &etcd_url, "--etcd-prefix", "/hale-tls", "--etcd-ca", &ca, "--etcd-cert", &cert];
    let args = [&args[..], &["--etcd-key", &key]].concat();
    let (_healer, addr) = spawn_healer(dir.path(), "tls", collector, &policies, &cluster, &args).await;
    eventually("the healer leads through etcd over TLS", Duration::from_secs(20), async || {
        (ha_role(addr).await? == HaRole::Leader).then_some(())
    })
    .await;

    // No client certificate: etcd ends the handshake; the healer does not start.
    let out = Command::new(env!("CARGO_BIN_EXE_hale"))
        .args(["healer", "--listen", &free_addr().to_string(), "--data-dir"])
        .arg(dir.path().join("stranger"))
        .arg("--policies")
        .arg(&policies)
        .arg("--cluster")
        .arg(&cluster)
        .args(["--etcd", &etcd_url, "--etcd-ca", &ca])
        .env("HALE_WEBHOOK_SECRET", SECRET)
        .output()
        .expect("hale healer");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcd at"), "{err}");
    // https without a CA to check etcd by is refused before anything is tried.
    let out = Command::new(env!("CARGO_BIN_EXE_hale"))
        .args(["healer", "--policies"])
        .arg(&policies)
        .arg("--cluster")
        .arg(&cluster)
        .args(["--etcd", &etcd_url])
        .output()
        .expect("hale healer");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--etcd-ca"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_healers_on_etcd_elect_one_leader_and_the_other_takes_over_without_repeating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, etcd_url) = common::spawn_etcd(dir.path()).await;
    let (hook, got) = common::receiver("/automation").await;
    let (_collector, collector, policies, cluster) =
        collector_and_files(dir.path(), &format!("http://{hook}/automation")).await;
    let args = ["--etcd", &etcd_url, "--etcd-prefix", "/hale-test/healer"];
    let (a, a_addr) = spawn_healer(dir.path(), "a", collector, &policies, &cluster, &args).await;
    let (b, b_addr) = spawn_healer(dir.path(), "b", collector, &policies, &cluster, &args).await;
    let mut procs = [Some(a), Some(b)];
    let addrs = [a_addr, b_addr];
    let leader = eventually("one leader", Duration::from_secs(20), async || {
        let roles = [ha_role(a_addr).await?, ha_role(b_addr).await?];
        match roles.iter().filter(|r| **r == HaRole::Leader).count() {
            1 => roles.iter().position(|r| *r == HaRole::Leader),
            _ => None,
        }
    })
    .await;
    let follower = 1 - leader;
    let hooks = |alertname: &str, instance: &str| {
        got.lock()
            .expect("lock")
            .iter()
            .filter(|(_, _, body)| {
                let Ok(hook) = serde_json::from_slice::<ActionWebhook>(body) else { return false };
                let label = |name: &str| hook.alert.labels.get(name).map(String::as_str);
                label("alertname") == Some(alertname) && label("instance") == Some(instance)
            })
            .count()
    };

    // The same alert reaches both healers (as from two collectors, or one with both as
    // receivers), several times: exactly one action, taken by the leader.
    let first = payload("QueueBacklog", "queue-a", "2026-01-01T00:00:05Z");
    set_probe(collector, "queue-a", 0.0).await;
    set_probe(collector, "queue-b", 0.0).await;
    for _ in 0..5 {
        for addr in addrs {
            assert_eq!(post_to(addr, &first).await, 200);
        }
    }
    eventually("the leader acted", Duration::from_secs(20), async || {
        (only_action_is(addrs[leader], ActionStatus::Verifying).await && hooks("QueueBacklog", "queue-a") == 1)
            .then_some(())
    })
    .await;
    // Verified only once the automation's repair has worked.
    set_probe(collector, "queue-a", 1.0).await;
    eventually("the leader verified", Duration::from_secs(20), async || {
        only_action_is(addrs[leader], ActionStatus::Succeeded).await.then_some(())
    })
    .await;
    assert_eq!(hooks("QueueBacklog", "queue-a"), 1, "one action for ten copies across two healers");
    // The follower sees the shared state, and refuses decisions with the leader's address.
    eventually("the follower sees the action", Duration::from_secs(10), async || {
        only_action_is(addrs[follower], ActionStatus::Succeeded).await.then_some(())
    })
    .await;
    let r = reqwest::Client::new()
        .post(format!("http://{}/api/v1/pause", addrs[follower]))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("pause");
    assert_eq!(r.status().as_u16(), 503);
    let msg = r.text().await.expect("text");
    assert!(msg.contains(&addrs[leader].to_string()), "names the leader: {msg}");
    let leader_name = ["a", "b"][leader];
    assert!(
        !events_of(dir.path(), ["a", "b"][follower]).iter().any(|e| e == "planned"),
        "the follower decided nothing"
    );

    // An action whose verification takes a while: the leader is killed while verifying.
    let probe_queue_c = async |value: f64| {
        let labels = [("instance", "queue-c"), ("node", "node-3"), ("service", "search")];
        common::push_gauge(collector, "probe_success", &labels, value).await;
    };
    probe_queue_c(0.0).await;
    let stuck = payload("QueueStuck", "queue-c", "2026-01-01T00:00:06Z");
    assert_eq!(post_to(addrs[follower], &stuck).await, 200, "taken by the follower, decided by the leader");
    eventually("the leader acted on it and verifies", Duration::from_secs(20), async || {
        has_action(addrs[leader], "QueueStuck", ActionStatus::Verifying).await
    })
    .await;
    assert_eq!(hooks("QueueStuck", "queue-c"), 1);
    assert!(events_of(dir.path(), leader_name).iter().any(|e| e == "planned"));
    // kill -9: the lease is not given back; the other healer waits for it to expire.
    let mut dead = procs[leader].take().expect("leader process");
    dead.kill_9();
    let killed = std::time::Instant::now();
    eventually("the other healer leads", Duration::from_secs(15), async || {
        (ha_role(addrs[follower]).await? == HaRole::Leader).then_some(())
    })
    .await;
    let takeover = killed.elapsed();
    // The problem clears: the new leader verifies the action it did not start.
    probe_queue_c(1.0).await;
    eventually("the new leader verified the old leader's action", Duration::from_secs(20), async || {
        has_action(addrs[follower], "QueueStuck", ActionStatus::Succeeded).await
    })
    .await;
    // The first alert again, and a new one: the duplicate is recognised, the new one acted on.
    assert_eq!(post_to(addrs[follower], &first).await, 200);
    let second = payload("QueueBacklog", "queue-b", "2026-01-01T00:00:07Z");
    assert_eq!(post_to(addrs[follower], &second).await, 200);
    eventually("the new leader acted on the new alert", Duration::from_secs(20), async || {
        (hooks("QueueBacklog", "queue-b") == 1).then_some(())
    })
    .await;
    set_probe(collector, "queue-b", 1.0).await;
    let list = eventually("the new leader acted on the new alert", Duration::from_secs(20), async || {
        let list = actions(addrs[follower]).await;
        (list.len() == 3 && list.iter().all(|a| a.status == ActionStatus::Succeeded)).then_some(list)
    })
    .await;
    assert_eq!(hooks("QueueBacklog", "queue-a"), 1, "not repeated after the takeover");
    assert_eq!(hooks("QueueStuck", "queue-c"), 1, "the interrupted action was verified, not repeated");
    assert_eq!(hooks("QueueBacklog", "queue-b"), 1);
    assert_eq!(list.len(), 3);
    let new_leader = events_of(dir.path(), ["a", "b"][follower]);
    assert!(new_leader.iter().any(|e| e == "leading") && new_leader.iter().any(|e| e == "resumed"), "{new_leader:?}");
    eprintln!("takeover after kill -9: {takeover:?}");
    assert!(takeover < Duration::from_secs(10), "takeover took {takeover:?}");
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_late_write_is_refused_by_etcd() {
    use hale_healer::ha::Leadership;
    use hale_healer::state::{SaveError, Store};
    let dir = tempfile::tempdir().expect("tempdir");
    let (_etcd, url) = common::spawn_etcd(dir.path()).await;
    let client = etcd_client::Client::connect([url.as_str()], None).await.expect("connect");
    let me = std::sync::Arc::new(Leadership::new("/t", "http://127.0.0.1:1".into(), Duration::from_secs(3)));
    let store = Store::open_etcd(client.clone(), "/t", me.clone()).await.expect("open");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let campaign = tokio::spawn({
        let (me, client) = (me.clone(), client.clone());
        async move {
            me.campaign(client, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    tokio::time::timeout(Duration::from_secs(10), store.lead()).await.expect("leads within 10 s");
    store.update(|s| s.paused = true).await.expect("the leader writes");
    // Another healer holds the lead now, and this one has not noticed yet (a stalled
    // process, a slow network): its next decision must not land.
    let other = r#"{"id":"other","api":"http://127.0.0.2:1"}"#;
    client.clone().put("/t/leader", other, None).await.expect("put");
    let refused = store.update(|s| s.paused = false).await;
    assert!(matches!(refused, Err(SaveError::NotLeader(_))), "{refused:?}");
    // Taking alerts stays open to every healer.
    store.take(|s| s.seen.insert("fp@t".into(), hale_core::time::now_ms())).await.expect("any healer stores an alert");
    let fresh = Store::open_etcd(client.clone(), "/t", me.clone()).await.expect("reopen");
    assert!(fresh.read(|s| s.paused), "the refused write did not land");
    assert!(fresh.read(|s| s.seen.contains_key("fp@t")));
    let _ = stop.send(());
    campaign.await.expect("campaign ends");
}

/// The dashboard's actions, through its actuator, against the real healer and collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_actions_reach_the_healer_and_the_collector() {
    use hale_tui::Actuator;
    use hale_tui::act::HttpActuator;
    use hale_tui::app::Effect;
    let s = start(false).await;
    probes(s.collector).await;
    let endpoints = hale_tui::source::Endpoints {
        collector: format!("http://{}", s.collector),
        healer: format!("http://{}", s.healer),
        agents: Vec::new(),
    };
    let act = HttpActuator::new(endpoints.clone(), Some(TOKEN.into()), Some(ADMIN_TOKEN.into()), None);
    act.act(Effect::SetPaused(true)).await.expect("pause");
    assert!(state(s.healer).await.paused);
    act.act(Effect::SetPaused(false)).await.expect("resume");
    assert!(!state(s.healer).await.paused);
    // Two occurrences of an alert whose repair waits for approval (one at a time: the
    // search service's share allows one action at once): the first rejected, the second
    // approved.
    let mut waiting = Vec::new();
    for starts_at in ["2026-01-01T00:00:09Z", "2026-01-01T00:00:10Z"] {
        let body = payload("SlowReplica", "search-1", starts_at);
        assert_eq!(post(s.healer, &body, signed(&body), None).await.0, 200);
        let id = eventually("an action awaiting approval", Duration::from_secs(10), async || {
            awaiting_approval(s.healer).await
        })
        .await
        .id;
        if waiting.is_empty() {
            act.act(Effect::Reject(id.clone())).await.expect("reject");
        } else {
            act.act(Effect::Approve(id.clone())).await.expect("approve");
        }
        waiting.push(id);
    }
    let list = actions(s.healer).await;
    let status = |id: &str| list.iter().find(|a| a.id == id).map(|a| a.status).expect("action");
    assert_eq!(status(&waiting[0]), ActionStatus::Rejected);
    // Approved, it runs: this cluster's agents are not running, so the restart itself
    // fails, and says so, and the replica waits for a human.
    let approved = eventually("the approved restart ends", Duration::from_secs(20), async || {
        actions(s.healer).await.into_iter().find(|a| a.id == waiting[1] && a.status == ActionStatus::Failed)
    })
    .await;
    let detail = &approved.detail;
    assert!(detail.contains("on node-3") && detail.contains("restart search-1"), "{approved:?}");
    let state_now = state(s.healer).await;
    let blocked = state_now.targets.get("instance/search-1").and_then(|t| t.needs_human.as_ref());
    assert!(blocked.is_some(), "{state_now:?}");
    let again = act.act(Effect::Reject(waiting[0].clone())).await.expect_err("answered once");
    assert!(again.contains("409"), "{again}");
    // A silence for an hour, then expired.
    let matchers =
        vec![("alertname".to_string(), "DiskFilling".to_string()), ("node".to_string(), "node-3".to_string())];
    let said = act.act(Effect::Silence { matchers, duration: "1h".into() }).await.expect("silence");
    let collector = hale_client::Collector::new(&format!("http://{}", s.collector), None).expect("client");
    let silence = collector.silences().await.expect("silences").into_iter().next().expect("a silence");
    let id = silence.id.clone();
    assert!(said.contains(&id), "{said}");
    assert_eq!(silence.status.state, SilenceState::Active);
    act.act(Effect::ExpireSilence(id.clone())).await.expect("expire");
    let silences = collector.silences().await.expect("silences");
    assert_eq!(silences[0].status.state, SilenceState::Expired);
    // Wrong tokens and no chaos hook: clear errors, nothing done.
    let wrong = HttpActuator::new(endpoints, Some("wrong".into()), Some("wrong".into()), None);
    let e = wrong.act(Effect::SetPaused(true)).await.expect_err("refused");
    assert!(e.contains("401"), "{e}");
    assert!(!state(s.healer).await.paused);
    let e = act
        .act(Effect::Chaos { kind: hale_tui::app::ChaosKind::Kill, target: "search-1".into() })
        .await
        .expect_err("no chaos");
    assert!(e.contains("no chaos"), "{e}");
}

/// The shipped `dashboards/alertmanager/alertmanager.yml`, run by the real Alertmanager:
/// an alert the healer has a policy for is routed to the healer's intake with the bearer
/// token from the credentials file (Alertmanager cannot sign), the healer acts and proves
/// the repair; the same alert also reaches the humans' receiver (`continue: true`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_with_the_shipped_config_delivers_to_the_healer_which_acts() {
    let am_bin = common::need("prometheus-alertmanager");
    let (hook, automation) = common::receiver("/automation").await;
    let (pager, humans) = common::receiver("/alerts").await;
    let s = start_with(false, &format!("http://{hook}/automation")).await;
    set_probe(s.collector, "queue-a", 0.0).await;
    let am_dir = s.dir.path().join("alertmanager");
    std::fs::create_dir_all(&am_dir).expect("am dir");
    let token_file = am_dir.join("hale-intake-token");
    std::fs::write(&token_file, INTAKE_TOKEN).expect("token file");
    // The example as shipped, pointed at this test's healer, pager and token file (so
    // nothing leaves loopback), with the test's alert among the healer's and no wait.
    let shipped = include_str!("../dashboards/alertmanager/alertmanager.yml");
    let config = shipped
        .replace("http://hale-healer.internal:9465", &format!("http://{}", s.healer))
        .replace("http://pager.internal:8080", &format!("http://{pager}"))
        .replace("/etc/alertmanager/secrets/hale-intake-token", &token_file.display().to_string())
        .replace("alertname =~ \"", "alertname =~ \"QueueBacklog|")
        .replace("group_wait: 30s", "group_wait: 0s")
        .replace("group_wait: 10s", "group_wait: 0s");
    assert!(!config.contains(".internal"), "every receiver points at this test");
    let am_config = am_dir.join("alertmanager.yml");
    std::fs::write(&am_config, config).expect("am config");
    let am_addr = free_addr();
    let mut am = Command::new(am_bin);
    am.arg(format!("--config.file={}", am_config.display()))
        .arg(format!("--storage.path={}", am_dir.join("data").display()))
        .arg(format!("--web.listen-address={am_addr}"))
        .arg("--cluster.listen-address=");
    let log = std::fs::File::create(am_dir.join("am.out")).expect("log");
    let _am = Proc(common::spawn_logged(&mut am, log, "alertmanager"));
    common::wait_ready("alertmanager", am_addr).await;

    let alert = json!([{
        "labels": {"alertname": "QueueBacklog", "instance": "queue-a", "service": "search", "node": "node-3"},
        "annotations": {"summary": "the queue is backing up"},
    }]);
    let posted = reqwest::Client::new()
        .post(format!("http://{am_addr}/api/v2/alerts"))
        .json(&alert)
        .send()
        .await
        .expect("post to Alertmanager");
    assert!(posted.status().is_success(), "{}", posted.status());
    let acted = eventually("the healer acts on Alertmanager's delivery", Duration::from_secs(30), async || {
        actions(s.healer).await.into_iter().find(|a| a.alert.name() == "QueueBacklog" && a.kind == ActionKind::Webhook)
    })
    .await;
    assert_eq!(acted.alert.labels.get("instance").map(String::as_str), Some("queue-a"));
    eventually("automation called", Duration::from_secs(10), async || {
        (!automation.lock().expect("lock").is_empty()).then_some(())
    })
    .await;
    set_probe(s.collector, "queue-a", 1.0).await;
    eventually("the repair verified", Duration::from_secs(20), async || {
        has_action(s.healer, "QueueBacklog", ActionStatus::Succeeded).await
    })
    .await;
    eventually("the humans were told too", Duration::from_secs(10), async || {
        (!humans.lock().expect("lock").is_empty()).then_some(())
    })
    .await;
}
