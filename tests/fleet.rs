//! End to end on a fleet Hale did not start: services started by the test's own control
//! script (a small HTTP service written for the test: metrics, health, JSON logs with a
//! stack trace), an agent that adopts them (static and file_sd scrape jobs with
//! relabelling, a blackbox probe, log globs with multiline joining, a service managed by
//! a pidfile and restarted by a command of its config), a collector with rules for them,
//! and a healer with its own inventory and no cluster.toml. A hang is detected and
//! repaired, a kill is restarted, a backlog scales the workers out through an `exec`
//! executor that registers the new one with the file_sd "load balancer", and back in
//! once it is quiet; the audit, the dashboard (in a real terminal) and `hale status` show
//! all of it.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::tmux::Tmux;
use common::{Proc, eventually_or_dump, free_addr};
use hale_core::api::{ActionList, StatusReport};

const AGENT_TOKEN: &str = "fleet-agent-token-0123456789";
const HEALER_TOKEN: &str = "fleet-healer-token-0123456789";
const SECRET: &str = "fleet-webhook-secret-0123456789";
/// The collector's admin token: the healer silences the side effects of its own actions.
const ADMIN_TOKEN: &str = "fleet-admin-token-0123456789";

/// The foreign service itself: this test binary run again with `FLEET_SERVICE` set (by
/// the control script), so the service is a process of its own that Hale did not start.
/// Without the variable it is an empty test.
#[test]
fn foreign_service_process() {
    let (Ok(name), Ok(dir), Ok(listen)) =
        (std::env::var("FLEET_SERVICE"), std::env::var("FLEET_DIR"), std::env::var("FLEET_LISTEN"))
    else {
        return;
    };
    let dir = PathBuf::from(dir);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        use std::io::Write;
        let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
        let log_path = dir.join("logs").join(format!("{name}.log"));
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log");
        // Plain text, as many services log: a failed warm-up with its stack trace (one
        // record once joined), then the start.
        writeln!(log, "2026-12-07T02:00:00Z ERROR warm-up of {name} failed; retrying").expect("log");
        writeln!(log, "  at cache::warm (cache.rs:10)\n  at main (main.rs:3)").expect("log");
        writeln!(log, "2026-12-07T02:00:01Z INFO {name} started").expect("log");
        std::fs::write(dir.join(format!("{name}.pid")), std::process::id().to_string()).expect("pid");
        let addr = listener.local_addr().expect("addr").to_string();
        std::fs::write(dir.join(format!("{name}.addr.tmp")), &addr).expect("addr");
        std::fs::rename(dir.join(format!("{name}.addr.tmp")), dir.join(format!("{name}.addr"))).expect("addr");
        let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let metrics = {
            let (dir, served) = (dir.clone(), served.clone());
            move || async move {
                let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let depth = std::fs::read_to_string(dir.join("queue-depth")).unwrap_or_default();
                let depth: f64 = depth.trim().parse().unwrap_or(0.0);
                format!("app_requests_total{{code=\"200\"}} {n}\napp_queue_depth {depth}\n")
            }
        };
        let router = axum::Router::new()
            .route("/metrics", axum::routing::get(metrics))
            .route("/healthz", axum::routing::get(|| async { "ok" }));
        axum::serve(listener, router).await.expect("serve");
    });
}

/// The fleet's control script, as a team would have one: start, restart, spawn and stop
/// instances, and (de)register workers in the file_sd directory the agent watches.
fn control_script(dir: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let text = format!(
        r#"#!/bin/sh
DIR={dir}
start() {{
  rm -f "$DIR/$1.addr"
  echo "$2" > "$DIR/$1.listen"
  FLEET_SERVICE="$1" FLEET_DIR="$DIR" FLEET_LISTEN="$2" {exe} --exact foreign_service_process --nocapture --test-threads 1 >>"$DIR/$1.out" 2>&1 &
  i=0
  while [ ! -s "$DIR/$1.addr" ]; do
    i=$((i+1)); if [ $i -gt 400 ]; then echo "$1 did not start" >&2; exit 1; fi
    sleep 0.05
  done
}}
case "$1" in
  start) start "$2" "$3" ;;
  restart) kill -9 "$(cat "$DIR/$2.pid")" 2>/dev/null; start "$2" "$(cat "$DIR/$2.listen")" ;;
  spawn)
    n=$(ls "$DIR"/worker-*.listen | wc -l); name="worker-$((n+1))"
    start "$name" 127.0.0.1:0
    printf '{{"instance": "%s", "url": "http://%s"}}\n' "$name" "$(cat "$DIR/$name.addr")" ;;
  stop) kill "$(cat "$DIR/$HALE_INSTANCE.pid")" ;;
  register)
    printf '[{{"targets": ["%s"], "labels": {{"instance": "%s"}}}}]' "${{HALE_URL#http://}}" "$HALE_INSTANCE" > "$DIR/sd/$HALE_INSTANCE.json.tmp"
    mv "$DIR/sd/$HALE_INSTANCE.json.tmp" "$DIR/sd/$HALE_INSTANCE.json" ;;
  deregister) rm -f "$DIR/sd/$HALE_INSTANCE.json" ;;
  *) echo "usage: $0 start|restart|spawn|stop|register|deregister" >&2; exit 2 ;;
esac
"#,
        dir = dir.display(),
        exe = exe.display()
    );
    let path = dir.join("fleet-ctl");
    std::fs::write(&path, text).expect("script");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    path
}

/// Kills every instance the control script started (by the PIDs they wrote) when the
/// test ends, however it ends.
struct Fleet(PathBuf);

impl Drop for Fleet {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|e| e == "pid")
                && let Ok(pid) = std::fs::read_to_string(entry.path())
            {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
        }
    }
}

/// A process's state letter from /proc (`Z` for a zombie nobody reaped yet).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim().chars().next()
}

fn pid_of(dir: &Path, name: &str) -> u32 {
    std::fs::read_to_string(dir.join(format!("{name}.pid"))).expect("pid").trim().parse().expect("pid")
}

fn spawn(what: &str, dir: &Path, args: &[String], env: &[(&str, &str)]) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{what}.out"))).expect("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hale"));
    cmd.args(args).envs(env.iter().copied());
    Proc(common::spawn_logged(&mut cmd, log, what))
}

const RULES: &str = r#"groups:
  - name: fleet
    interval: 500ms
    rules:
      - alert: WebDown
        expr: up{job="web"} == 0
        labels: { severity: page }
      - alert: WorkerBacklog
        expr: max by (service) (app_queue_depth{job="worker"}) > 10
        labels: { severity: page }
"#;

const POLICIES: &str = r#"policies:
  - name: restart-web
    match: { alertname: WebDown }
    action: restart
    cooldown: 1s
    max_actions: 5
    verify: { timeout: 30s }
  - name: scale-out-workers
    match: { alertname: WorkerBacklog }
    action: scale_out
    params: { stabilization: 3s }
    verify: { timeout: 30s }
"#;

struct Setup {
    dir: PathBuf,
    collector: SocketAddr,
    healer: SocketAddr,
}

impl Setup {
    /// The healer's actions.
    async fn actions(&self) -> Vec<hale_core::api::Action> {
        let url = format!("http://{}/api/v1/actions", self.healer);
        let Ok(r) = reqwest::get(&url).await else { return Vec::new() };
        r.json::<ActionList>().await.map(|l| l.actions).unwrap_or_default()
    }

    /// Whether `up{instance}` is `value` at the collector now.
    async fn up_is(&self, instance: &str, value: f64) -> Option<()> {
        let client = reqwest::Client::new();
        let q = format!("up{{instance=\"{instance}\"}}");
        let found = common::query(&client, &format!("http://{}", self.collector), &q).await?;
        found.iter().any(|s| s.value.value() == Some(value)).then_some(())
    }

    /// The output of every process, for a failure's message.
    fn dump(&self) -> String {
        let mut out: String = ["collector", "agent", "healer"]
            .iter()
            .map(|w| common::tail(&self.dir.join(format!("{w}.out")), 40))
            .collect();
        out.push_str(&common::tail(&self.dir.join("healer-data/audit.jsonl"), 30));
        out
    }

    /// The ids of the healer's actions so far.
    async fn action_ids(&self) -> Vec<String> {
        self.actions().await.into_iter().map(|a| a.id).collect()
    }

    /// Waits for an action of `kind` on `instance` (or any, when `None`), not one of
    /// `before`, to succeed; returns it.
    async fn succeeded(&self, kind: &str, instance: Option<&str>, before: &[String]) -> hale_core::api::Action {
        eventually_or_dump(
            &format!("a {kind} that succeeds"),
            Duration::from_secs(60),
            async || {
                let actions = self.actions().await;
                let found = actions.into_iter().filter(|a| !before.contains(&a.id)).find(|a| {
                    serde_json::to_value(a.kind).ok().and_then(|v| v.as_str().map(str::to_string)).as_deref()
                        == Some(kind)
                        && instance.is_none_or(|i| a.target.instance.as_deref() == Some(i))
                })?;
                (found.status == hale_core::api::ActionStatus::Succeeded).then_some(found)
            },
            async || format!("actions: {:#?}\n{}\n{}", self.actions().await, self.signals().await, self.dump()),
        )
        .await
    }

    /// What the collector saw and said, for a failure's message: web-1's `up` over the
    /// last minute, the alerts it holds, and what the healer counted of its webhooks.
    async fn signals(&self) -> String {
        let client = reqwest::Client::new();
        let base = format!("http://{}", self.collector);
        let up = common::query_matrix(&client, &base, "up{instance=\"web-1\"}[1m]").await;
        let alerts = common::alerts(&client, &base).await;
        let healer_metrics = match reqwest::get(format!("http://{}/metrics", self.healer)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        let intake: String =
            healer_metrics.lines().filter(|l| l.starts_with("hale_healer_alerts")).map(|l| format!("{l}\n")).collect();
        let collector_metrics = match reqwest::get(format!("http://{}/metrics", self.collector)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        let notify: String = collector_metrics
            .lines()
            .filter(|l| l.starts_with("hale_collector_notif") || l.starts_with("hale_collector_alert"))
            .map(|l| format!("{l}\n"))
            .collect();
        format!(
            "up of web-1 over 1m: {up:?}\ncollector alerts: {alerts:#?}\nhealer intake:\n{intake}collector notifications:\n{notify}"
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_hale_did_not_start_is_watched_repaired_scaled_and_shown() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    for sub in ["logs", "sd"] {
        std::fs::create_dir_all(dir.join(sub)).expect("dir");
    }
    let ctl = control_script(&dir);
    let _fleet = Fleet(dir.clone());
    // The fleet, started by its own tooling: one web server, one worker.
    let web_addr = free_addr();
    for (name, listen) in [("web-1", web_addr.to_string()), ("worker-1", "127.0.0.1:0".to_string())] {
        assert!(Command::new(&ctl).args(["start", name, &listen]).status().expect("ctl").success(), "{name}");
    }
    let worker_1 = std::fs::read_to_string(dir.join("worker-1.addr")).expect("addr");
    std::fs::write(
        dir.join("sd/worker-1.json"),
        format!(r#"[{{"targets": ["{worker_1}"], "labels": {{"instance": "worker-1"}}}}]"#),
    )
    .expect("sd");

    let (collector, healer, agent) = (free_addr(), free_addr(), free_addr());
    let s = Setup { dir: dir.clone(), collector, healer };
    // The collector, with the fleet's rules, notifying the healer.
    let rules = common::file(&dir, "rules.yml", RULES);
    let _collector = spawn(
        "collector",
        &dir,
        &[
            "collector".into(),
            "--insecure-open-ingest".into(),
            "--listen".into(),
            collector.to_string(),
            "--data-dir".into(),
            dir.join("collector-data").display().to_string(),
            "--rules".into(),
            rules.display().to_string(),
            "--evaluation-interval".into(),
            "500ms".into(),
            "--group-wait".into(),
            "0s".into(),
            "--group-interval".into(),
            "1s".into(),
            "--alert-webhook".into(),
            format!("http://{healer}/hooks/alertmanager"),
        ],
        &[("HALE_WEBHOOK_SECRET", SECRET), ("HALE_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    common::wait_ready("collector", collector).await;

    // The agent adopts what is there.
    let ctl_path = ctl.display();
    let agent_toml = format!(
        r#"node = "node-f"
listen = "{agent}"
data_dir = "{data}"
remote_write = ["http://{collector}/api/v1/write"]
logs_endpoint = "http://{collector}/v1/logs"
scrape_interval_ms = 500
probe_interval_ms = 500
timeout_ms = 300
batch = {{ max_records = 100, max_wait_ms = 200 }}

[[services]]
name = "web"
managed = {{ pidfile = "{dir}/web-1.pid", restart = ["{ctl_path}", "restart", "web-1"], instance = "web-1", listen = "{web_addr}" }}

[[scrape_configs]]
job_name = "web"
scrape_interval = "500ms"
scrape_timeout = "300ms"
static_configs = [{{ targets = ["{web_addr}"], labels = {{ team = "storefront" }} }}]
relabel_configs = [{{ target_label = "instance", replacement = "web-1" }}]

[[scrape_configs]]
job_name = "worker"
scrape_interval = "500ms"
scrape_timeout = "300ms"
file_sd_configs = [{{ files = ["{dir}/sd/*.json"] }}]

[[probes]]
name = "web-health"
module = "http"
target = "http://{web_addr}/healthz"
service = "web"
interval = "1s"

[[logs]]
path = "{dir}/logs/web-*.log"
service = "web"
labels = {{ team = "storefront" }}
format = "plain"
multiline = {{ start = '^\d{{4}}-', timeout_ms = 500 }}

[[logs]]
path = "{dir}/logs/worker-*.log"
service = "worker"
format = "plain"
"#,
        data = dir.join("agent-data").display(),
        dir = dir.display(),
    );
    let agent_config = common::file(&dir, "agent.toml", &agent_toml);
    let _agent = spawn(
        "agent",
        &dir,
        &["agent".into(), "--config".into(), agent_config.display().to_string()],
        &[("HALE_AGENT_TOKEN", AGENT_TOKEN)],
    );

    // The healer, from its own inventory: no cluster.toml anywhere.
    let inventory = common::file(
        &dir,
        "healer.toml",
        &format!(
            r#"[agents]
node-f = "http://{agent}"

[load_balancers.worker-sd]
kind = "exec"
register = ["{ctl_path}", "register"]
deregister = ["{ctl_path}", "deregister"]

[[services]]
name = "web"
executor = "agent"
nodes = ["node-f"]

[[services]]
name = "worker"
executor = "exec"
start_another = ["{ctl_path}", "spawn"]
stop = ["{ctl_path}", "stop"]
load_balancer = "worker-sd"
"#
        ),
    );
    let policies = common::file(&dir, "policies.yaml", POLICIES);
    let _healer = spawn(
        "healer",
        &dir,
        &[
            "healer".into(),
            "--listen".into(),
            healer.to_string(),
            "--data-dir".into(),
            dir.join("healer-data").display().to_string(),
            "--policies".into(),
            policies.display().to_string(),
            "--inventory".into(),
            inventory.display().to_string(),
            "--collector".into(),
            format!("http://{collector}"),
        ],
        &[
            ("HALE_WEBHOOK_SECRET", SECRET),
            ("HALE_AGENT_TOKEN", AGENT_TOKEN),
            ("HALE_HEALER_TOKEN", HEALER_TOKEN),
            ("HALE_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );
    common::wait_ready("healer", healer).await;
    assert!(!dir.join("cluster.toml").exists());

    eventually_or_dump(
        "web-1 and worker-1 scraped up",
        Duration::from_secs(60),
        async || {
            s.up_is("web-1", 1.0).await?;
            s.up_is("worker-1", 1.0).await
        },
        async || s.dump(),
    )
    .await;

    // A hang: the process is there, answers nothing. Detected, restarted by the agent
    // through the fleet's own command, verified.
    let hung = pid_of(&dir, "web-1");
    assert!(Command::new("kill").args(["-STOP", &hung.to_string()]).status().expect("kill").success());
    s.succeeded("restart", Some("web-1"), &[]).await;
    let restarted = pid_of(&dir, "web-1");
    assert_ne!(restarted, hung, "a new process");
    let _ = Command::new("kill").args(["-9", &hung.to_string()]).status();

    // A kill: restarted the same way.
    let before = s.action_ids().await;
    assert!(Command::new("kill").args(["-9", &restarted.to_string()]).status().expect("kill").success());
    s.succeeded("restart", Some("web-1"), &before).await;
    assert_ne!(pid_of(&dir, "web-1"), restarted);

    // A backlog: one more worker, started by the exec executor's command, registered in
    // the file_sd directory, scraped, verified up.
    let before = s.action_ids().await;
    std::fs::write(dir.join("queue-depth"), "50").expect("depth");
    let out = s.succeeded("scale_out", None, &before).await;
    assert_eq!(out.started, [("worker".to_string(), "worker-2".to_string())], "{out:?}");
    assert!(dir.join("sd/worker-2.json").exists(), "registered with the load balancer");
    let worker_2 = pid_of(&dir, "worker-2");
    eventually_or_dump(
        "worker-2 scraped up",
        Duration::from_secs(30),
        async || s.up_is("worker-2", 1.0).await,
        async || s.dump(),
    )
    .await;
    // The backlog gone and quiet for the stabilization window: the worker is taken out
    // of the load balancer and stopped, by the same executor.
    let before = s.action_ids().await;
    std::fs::write(dir.join("queue-depth"), "0").expect("depth");
    let scale_in = s.succeeded("scale_in", None, &before).await;
    assert!(scale_in.detail.contains("drained and stopped worker-2"), "{scale_in:?}");
    assert!(!dir.join("sd/worker-2.json").exists(), "deregistered");
    assert!(matches!(proc_state(worker_2), None | Some('Z')), "worker-2 stopped");

    // The audit says what was done and by what.
    let audit = std::fs::read_to_string(dir.join("healer-data/audit.jsonl")).expect("audit");
    let acted: Vec<&str> = audit.lines().filter(|l| l.contains("\"event\":\"acted\"")).collect();
    assert_eq!(acted.len(), 4, "{audit}");
    assert_eq!(
        acted.iter().filter(|l| l.contains("restarted web-1 through the agent on node-f")).count(),
        2,
        "{audit}"
    );
    assert!(acted.iter().any(|l| l.contains("started worker-2")), "{audit}");
    assert!(!audit.contains("silence_failed"), "{audit}");

    // Logs of the fleet: their stack traces joined, their labels on, levels read.
    let client = reqwest::Client::new();
    let logs_url = format!("http://{collector}/api/v1/logs");
    let joined = eventually_or_dump(
        "web-1's joined stack trace stored",
        Duration::from_secs(30),
        async || {
            let query = [("service", "web"), ("instance", "web-1"), ("contains", "at cache::warm")];
            let lines: Vec<hale_core::api::LogLine> = common::get_data(&client, &logs_url, &query).await?;
            lines.into_iter().next()
        },
        async || s.dump(),
    )
    .await;
    assert!(joined.message.ends_with("at cache::warm (cache.rs:10)\n  at main (main.rs:3)"), "{joined:?}");
    assert_eq!(joined.level, "error", "{joined:?}");
    assert!(joined.attributes.contains_key("team"), "the source's label: {joined:?}");

    // `hale status` lists the fleet's services and the healer's work.
    let status = Command::new(env!("CARGO_BIN_EXE_hale"))
        .args([
            "status",
            "--json",
            "--collector",
            &format!("http://{collector}"),
            "--healer",
            &format!("http://{healer}"),
        ])
        .args(["--data-dir", &dir.join("no-cluster").display().to_string()])
        .output()
        .expect("hale status");
    let report: StatusReport = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&status.stdout), String::from_utf8_lossy(&status.stderr))
    });
    let services: Vec<(&str, usize, usize)> =
        report.services.iter().map(|s| (s.service.as_str(), s.ready, s.replicas)).collect();
    assert!(services.contains(&("web", 1, 1)), "{services:?}");
    assert!(services.contains(&("worker", 1, 1)), "worker-2 left with the scale-in: {services:?}");
    assert!(report.healer && report.collector, "{report:?}");

    // The dashboard, in a real terminal, shows the fleet and the repairs.
    let t = Tmux { socket: format!("hale-fleet-{}", std::process::id()), data_dir: dir.join("no-cluster") };
    let command = format!(
        "{} tui --collector http://{collector} --healer http://{healer} --data-dir {}",
        env!("CARGO_BIN_EXE_hale"),
        dir.join("no-cluster").display()
    );
    t.run(&["new-session", "-d", "-s", "hale", "-x", "160", "-y", "48", &command]);
    let wanted = ["node-f", "web ", "worker ", "restart web-1 succeeded", "scale_out worker succeeded", "scale_in"];
    t.shows("the fleet and its repairs on the dashboard", Duration::from_secs(30), &wanted).await;
}
