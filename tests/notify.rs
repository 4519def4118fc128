//! End to end: alerts from `hale collector` reach webhook receivers signed, through the
//! durable outbox (receiver down, collector killed with SIGKILL, delivered after the
//! restart), with retries on 5xx and none on 4xx; silences over the API and the CLI; and
//! forwarding to a real Alertmanager (Debian's prometheus-alertmanager), which delivers.

mod common;

use common::{Proc, eventually, free_addr, need};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hale_core::api::{Envelope, NotifyStatus, SilenceCreated, SilenceState, WebhookPayload};
use serde_json::Value;

const SECRET: &str = "test-webhook-secret";
const ADMIN: &str = "test-admin-token";

const RULES: &str = r#"groups:
  - name: test
    interval: 100ms
    rules:
      - alert: TestDown
        expr: test_up == 0
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.instance }} is down"
"#;

/// A webhook receiver on `addr` that records every request and answers with the
/// statuses queued in `answers` (200 once they run out).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    answers: Arc<Mutex<Vec<u16>>>,
}

impl Receiver {
    async fn serve(&self, addr: SocketAddr) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let me = me.clone();
                async move {
                    me.got.lock().expect("lock").push((headers, body));
                    let next = { me.answers.lock().expect("lock").pop() };
                    StatusCode::from_u16(next.unwrap_or(200)).unwrap_or(StatusCode::OK)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind receiver");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
    }

    fn bodies(&self) -> Vec<(HeaderMap, WebhookPayload)> {
        let got = self.got.lock().expect("lock");
        got.iter().map(|(h, b)| (h.clone(), serde_json::from_slice(b).expect("json body"))).collect()
    }

    /// The first request's body, once it verifies against the secret.
    fn verified(&self, i: usize) -> Option<WebhookPayload> {
        let got = self.got.lock().expect("lock");
        let (headers, body) = got.get(i)?;
        let header = headers.get(hale_core::webhook::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        hale_core::webhook::verify(SECRET.as_bytes(), header, body, now).expect("signature verifies");
        assert!(hale_core::webhook::verify(b"wrong", header, body, now).is_err());
        Some(serde_json::from_slice(body).expect("json"))
    }
}

fn spawn_collector(addr: SocketAddr, data: &Path, out: &Path, extra: &[String]) -> Proc {
    common::spawn_collector(addr, data, out, extra, &[("HALE_WEBHOOK_SECRET", SECRET), ("HALE_ADMIN_TOKEN", ADMIN)])
}

async fn ready(proc: &mut Proc, addr: SocketAddr, out: &Path) {
    common::collector_ready(proc, addr, out).await;
}

async fn push(addr: SocketAddr, instance: &str, value: f64) {
    common::push_gauge(addr, "test_up", &[("instance", instance)], value).await;
}

async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics")).await.expect("metrics").text().await.expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(f64::NAN)
}

fn instances(body: &WebhookPayload) -> Vec<String> {
    body.alerts.iter().filter_map(|a| a.labels.get("instance").cloned()).collect()
}

/// A label of the `i`-th alert of a payload (empty if missing).
fn label(body: &WebhookPayload, i: usize, name: &str) -> String {
    body.alerts.get(i).and_then(|a| a.labels.get(name)).cloned().unwrap_or_default()
}

struct Setup {
    _dir: tempfile::TempDir,
    data: PathBuf,
    out: PathBuf,
    rules: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).expect("rules");
    Setup { data: dir.path().join("data"), out: dir.path().join("collector.out"), rules, _dir: dir }
}

fn flags(s: &Setup, hook: SocketAddr, with_rules: bool) -> Vec<String> {
    let mut f = vec![
        "--alert-webhook".to_string(),
        format!("http://{hook}/hook"),
        "--group-wait".into(),
        "0s".into(),
        "--group-interval".into(),
        "1s".into(),
    ];
    if with_rules {
        f.extend(["--rules".to_string(), s.rules.display().to_string()]);
    }
    f
}

/// A receiver answering `answers` (popped from the end), and a collector with the test
/// rules notifying it.
async fn start(answers: Vec<u16>) -> (Setup, Receiver, SocketAddr, Proc) {
    let s = setup();
    let hook = free_addr();
    let receiver = Receiver::default();
    *receiver.answers.lock().expect("lock") = answers;
    receiver.serve(hook).await;
    let addr = free_addr();
    let mut proc = spawn_collector(addr, &s.data, &s.out, &flags(&s, hook, true));
    ready(&mut proc, addr, &s.out).await;
    (s, receiver, addr, proc)
}

/// Waits until a metric of the collector reads `value`.
async fn metric_reaches(addr: SocketAddr, name: &str, value: f64) {
    eventually(name, Duration::from_secs(15), async || (metric(addr, name).await == value).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_arrives_firing_then_resolved() {
    let (_s, receiver, addr, _proc) = start(vec![]).await;

    let started = std::time::Instant::now();
    push(addr, "a", 0.0).await;
    let firing = eventually("firing webhook", Duration::from_secs(10), async || receiver.verified(0)).await;
    println!("fault to signed webhook: {:?}", started.elapsed());
    assert_eq!(firing.version, "4");
    assert_eq!(firing.status, NotifyStatus::Firing);
    assert_eq!(firing.receiver, "webhook-1");
    assert_eq!(firing.group_labels.get("alertname").map(String::as_str), Some("TestDown"));
    assert_eq!(label(&firing, 0, "instance"), "a");
    assert_eq!(label(&firing, 0, "severity"), "page");
    assert_eq!(firing.alerts[0].annotations.get("summary").map(String::as_str), Some("a is down"));
    assert_eq!(firing.alerts[0].ends_at, "0001-01-01T00:00:00Z");
    let (headers, _) = &receiver.bodies()[0];
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));

    push(addr, "a", 1.0).await;
    let resolved = eventually("resolved webhook", Duration::from_secs(10), async || receiver.verified(1)).await;
    assert_eq!(resolved.status, NotifyStatus::Resolved);
    assert_eq!(resolved.alerts[0].status, NotifyStatus::Resolved);
    assert_eq!(resolved.alerts[0].fingerprint, firing.alerts[0].fingerprint);
    assert_eq!(metric(addr, "hale_collector_notifications_sent_total").await, 2.0);
    assert_eq!(metric(addr, "hale_collector_notifications_pending").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_and_kill_9_the_notification_still_arrives() {
    let s = setup();
    let hook = free_addr(); // nothing listens there yet
    let addr = free_addr();
    let mut proc = spawn_collector(addr, &s.data, &s.out, &flags(&s, hook, true));
    ready(&mut proc, addr, &s.out).await;
    push(addr, "a", 0.0).await;
    eventually("a failed attempt", Duration::from_secs(10), async || {
        (metric(addr, "hale_collector_notification_attempts_failed_total").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(metric(addr, "hale_collector_notifications_pending").await, 1.0);
    // SIGKILL: no chance to flush anything.
    proc.kill_9();

    let receiver = Receiver::default();
    receiver.serve(hook).await;
    // Restarted without rules: only the outbox can deliver it.
    let mut proc = spawn_collector(addr, &s.data, &s.out, &flags(&s, hook, false));
    ready(&mut proc, addr, &s.out).await;
    let body = eventually("delivered after restart", Duration::from_secs(15), async || receiver.verified(0)).await;
    assert_eq!(body.status, NotifyStatus::Firing);
    assert_eq!(label(&body, 0, "alertname"), "TestDown");
    metric_reaches(addr, "hale_collector_notifications_pending", 0.0).await;
    assert_eq!(
        std::fs::read_dir(s.data.join("outbox"))
            .expect("outbox")
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file()))
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_on_5xx_given_up_on_4xx() {
    // Answers are popped from the end: 503, 503, then 200.
    let (s, receiver, addr, _proc) = start(vec![200, 503, 503]).await;
    push(addr, "a", 0.0).await;
    metric_reaches(addr, "hale_collector_notifications_sent_total", 1.0).await;
    assert_eq!(receiver.bodies().len(), 3);
    assert_eq!(metric(addr, "hale_collector_notification_attempts_failed_total").await, 2.0);

    // A 4xx is final: one attempt, then the notification is set aside.
    *receiver.answers.lock().expect("lock") = vec![401];
    push(addr, "b", 0.0).await;
    metric_reaches(addr, "hale_collector_notifications_dropped_total", 1.0).await;
    assert_eq!(receiver.bodies().len(), 4, "no retry after a 4xx");
    let dead = std::fs::read_dir(s.data.join("outbox").join("dead")).expect("dead").count();
    assert_eq!(dead, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_over_the_api_and_the_cli() {
    let (_s, receiver, addr, _proc) = start(vec![]).await;
    let client = reqwest::Client::new();
    let silence = serde_json::json!({
        "matchers": [{"name": "instance", "value": "a", "isRegex": false, "isEqual": true}],
        "endsAt": "2100-01-01T00:00:00Z",
        "createdBy": "test",
        "comment": "maintenance"
    });
    let url = format!("http://{addr}/api/v1/silences");
    let r = client.post(&url).json(&silence).send().await.expect("post");
    assert_eq!(r.status(), 401, "writes need the admin token");
    let r = client.post(&url).bearer_auth("wrong").json(&silence).send().await.expect("post");
    assert_eq!(r.status(), 401);
    let r = client
        .post(&url)
        .bearer_auth(ADMIN)
        .body("{\"matchers\": 3}")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let r = client.post(&url).bearer_auth(ADMIN).json(&silence).send().await.expect("post");
    assert_eq!(r.status(), 200);
    let created: Envelope<SilenceCreated> = r.json().await.expect("json");
    let id = created.into_data().expect("created").silence_id;
    // Expiring it needs the admin token too: refused without it, and the silence stays.
    let longer = format!("{ADMIN}x");
    for token in [None, Some("wrong"), Some(longer.as_str())] {
        let mut request = client.delete(format!("{url}/{id}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.expect("delete");
        assert_eq!(r.status(), 401, "expire with {token:?}");
        let body: Envelope<()> = r.json().await.expect("json");
        assert_eq!(body.error_type.as_deref(), Some("unauthorized"), "{body:?}");
    }
    let typed = hale_client::Collector::new(&format!("http://{addr}"), None).expect("client");
    let listed = typed.silences().await.expect("silences");
    let kept: Vec<(&str, SilenceState)> = listed.iter().map(|s| (s.id.as_str(), s.status.state)).collect();
    assert_eq!(kept, [(id.as_str(), SilenceState::Active)], "{listed:?}");

    // a is silenced, b is not: only b is notified.
    push(addr, "a", 0.0).await;
    push(addr, "b", 0.0).await;
    let body = eventually("webhook for b", Duration::from_secs(10), async || receiver.verified(0)).await;
    assert_eq!(instances(&body), ["b"]);

    // The CLI lists and expires it; then a is notified too.
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hale"))
            .args(["silence"])
            .args(args)
            .args(["--collector", &format!("http://{addr}")])
            .env("HALE_ADMIN_TOKEN", ADMIN)
            .output()
            .expect("hale silence")
    };
    let list = cli(&["list"]);
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains(&id) && text.contains("instance=\"a\"") && text.contains("active"), "{text}");
    let expired = cli(&["expire", &id]);
    assert!(expired.status.success(), "{}", String::from_utf8_lossy(&expired.stderr));
    let body = eventually("webhook with a", Duration::from_secs(10), async || receiver.verified(1)).await;
    assert_eq!(instances(&body), ["a", "b"]);
    let added = cli(&["add", "alertname=TestDown", "instance=~\"c|d\"", "--duration", "1h", "--comment", "deploy"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let listed = typed.silences().await.expect("silences");
    let states: Vec<SilenceState> = listed.iter().map(|s| s.status.state).collect();
    assert_eq!(states, [SilenceState::Active, SilenceState::Expired]);
    let bad = cli(&["add", "instance=~.*", "--duration", "1h"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("empty label"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_receives_forwarded_alerts_and_delivers_them() {
    let am_bin = need("prometheus-alertmanager");
    let s = setup();
    let hook = free_addr();
    let receiver = Receiver::default();
    receiver.serve(hook).await;
    let am_addr = free_addr();
    let am_dir = s.data.with_file_name("am");
    std::fs::create_dir_all(&am_dir).expect("am dir");
    let am_config = am_dir.join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://{hook}/hook\n"
        ),
    )
    .expect("am config");
    let am_log = std::fs::File::create(am_dir.join("am.out")).expect("log");
    let mut am = Command::new(am_bin);
    am.arg(format!("--config.file={}", am_config.display()))
        .arg(format!("--storage.path={}", am_dir.join("data").display()))
        .arg(format!("--web.listen-address={am_addr}"))
        .arg("--cluster.listen-address=");
    let _am = Proc(common::spawn_logged(&mut am, am_log, "alertmanager"));
    common::wait_ready("alertmanager", am_addr).await;

    let addr = free_addr();
    let extra = vec![
        "--alertmanager".to_string(),
        format!("http://{am_addr}"),
        "--rules".into(),
        s.rules.display().to_string(),
    ];
    let mut proc = spawn_collector(addr, &s.data, &s.out, &extra);
    ready(&mut proc, addr, &s.out).await;
    push(addr, "a", 0.0).await;
    // Alertmanager's own `GettableAlert` (no Hale type: Hale only posts to it) read as JSON.
    let alerts = eventually("alert in Alertmanager", Duration::from_secs(15), async || {
        let v: Value = reqwest::get(format!("http://{am_addr}/api/v2/alerts")).await.ok()?.json().await.ok()?;
        v.as_array().filter(|a| !a.is_empty()).cloned()
    })
    .await;
    assert_eq!(alerts[0]["labels"]["alertname"], "TestDown");
    assert_eq!(alerts[0]["labels"]["instance"], "a");
    assert_eq!(alerts[0]["status"]["state"], "active");
    // Alertmanager delivered it with its own webhook (unsigned: that is Alertmanager's).
    let delivered =
        eventually("Alertmanager's webhook", Duration::from_secs(15), async || receiver.bodies().into_iter().next())
            .await;
    assert_eq!(delivered.1.status, NotifyStatus::Firing);
    assert_eq!(label(&delivered.1, 0, "alertname"), "TestDown");
    assert_eq!(delivered.1.alerts[0].annotations.get("summary").map(String::as_str), Some("a is down"));
    // Resolving reaches Alertmanager as an end time.
    push(addr, "a", 1.0).await;
    eventually("resolved in Alertmanager", Duration::from_secs(15), async || {
        receiver.bodies().into_iter().find(|(_, b)| b.status == NotifyStatus::Resolved).map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_notification_never_overtakes_its_firing_one() {
    // Popped from the end: the firing notification fails twice, then all succeed.
    let (_s, receiver, addr, _proc) = start(vec![200, 200, 503, 503]).await;
    push(addr, "a", 0.0).await;
    eventually("first failed attempt", Duration::from_secs(10), async || (!receiver.bodies().is_empty()).then_some(()))
        .await;
    // Resolve while the firing one waits for its retry: the resolved one is stored behind it.
    push(addr, "a", 1.0).await;
    metric_reaches(addr, "hale_collector_notifications_sent_total", 2.0).await;
    let statuses: Vec<NotifyStatus> = receiver.bodies().iter().map(|(_, b)| b.status).collect();
    let last_firing = statuses.iter().rposition(|s| *s == NotifyStatus::Firing).expect("firing sent");
    let first_resolved = statuses.iter().position(|s| *s == NotifyStatus::Resolved).expect("resolved sent");
    assert!(first_resolved > last_firing, "in order: {statuses:?}");
    assert_eq!(statuses.len(), 4, "{statuses:?}");
}
