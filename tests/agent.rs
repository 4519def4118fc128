//! End to end: the real `hale agent` against real peers on loopback — Debian's promtool,
//! Prometheus and node_exporter — and an OTLP receiver that drops resent batches by
//! `X-Hale-Batch`, as DESIGN.md asks every receiver to.

mod common;

use common::{Proc, eventually, free_addr, need};

use std::collections::BTreeSet;
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hale_core::api::{AgentHealth, ProcessList, ProcessStarted};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;

const TOKEN: &str = "test-agent-token-0123456789";

/// Prints the agent's output if the test fails, so CI logs say why.
struct Explain(PathBuf);

impl Drop for Explain {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.0.display(), std::fs::read_to_string(&self.0).unwrap_or_default());
        }
    }
}

struct AgentSetup {
    dir: PathBuf,
    listen: SocketAddr,
    extra: String,
}

impl AgentSetup {
    fn new(dir: &Path, extra: &str) -> Self {
        AgentSetup { dir: dir.to_path_buf(), listen: free_addr(), extra: extra.to_string() }
    }

    /// An agent that tails `<dir>/app.log`, already holding lines `0..lines`, and ships it
    /// to a receiver at the returned address (not started).
    fn tailing(dir: &Path, lines: usize) -> (Self, PathBuf, SocketAddr) {
        let log = dir.join("app.log");
        let port = free_addr();
        let extra = format!(
            "logs_endpoint = \"http://{port}/v1/logs\"\n[[logs]]\npath = \"{}\"\nservice = \"app\"\ninstance = \"app-1\"\n",
            log.display()
        );
        append(&log, 0, lines);
        (AgentSetup::new(dir, &extra), log, port)
    }

    fn config(&self) -> PathBuf {
        let path = self.dir.join("agent.toml");
        let text = format!(
            "node = \"node-t\"\nlisten = \"{}\"\ndata_dir = \"{}\"\nscrape_interval_ms = 200\nprobe_interval_ms = 200\n\
             batch = {{ max_records = 50, max_wait_ms = 100 }}\n{}\n",
            self.listen,
            self.dir.join("data").display(),
            self.extra
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// The agent's `/metrics` text, if it answers.
    async fn metrics(&self) -> Option<String> {
        reqwest::get(format!("http://{}/metrics", self.listen)).await.ok()?.text().await.ok()
    }

    /// The first segment file of the logs queue.
    fn logs_segment(&self) -> Option<std::fs::DirEntry> {
        let queue = self.dir.join("data").join("queue").join("logs");
        std::fs::read_dir(queue).ok()?.flatten().find(|e| e.path().extension().is_some_and(|x| x == "seg"))
    }

    async fn start(&self) -> Proc {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("agent.out")).expect("out");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hale"));
        cmd.args(["agent", "--config"]).arg(self.config()).env("HALE_AGENT_TOKEN", TOKEN);
        let mut proc = Proc(common::spawn_logged(&mut cmd, out, "agent"));
        let url = format!("http://{}/healthz", self.listen);
        let dir = self.dir.clone();
        eventually("agent healthy", Duration::from_secs(30), async || {
            if let Ok(Some(status)) = proc.0.try_wait() {
                panic!(
                    "agent exited ({status}): {}",
                    std::fs::read_to_string(dir.join("agent.out")).unwrap_or_default()
                );
            }
            let body: AgentHealth = reqwest::get(&url).await.ok()?.json().await.ok()?;
            (body.node == "node-t" && body.data_dir == dir.join("data").display().to_string()).then_some(())
        })
        .await;
        proc
    }
}

/// A log record as received: its instance, body and attributes (string values).
#[derive(Debug, Clone, PartialEq)]
struct Record {
    instance: String,
    body: String,
    attributes: BTreeMap<String, String>,
}

/// An OTLP/HTTP logs receiver that keeps each batch once (by `X-Hale-Batch`).
#[derive(Clone, Default)]
struct Receiver {
    /// Batch id → records.
    batches: Arc<Mutex<BTreeMap<String, Vec<Record>>>>,
    deliveries: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn serve_on(&self, addr: SocketAddr) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let router = axum::Router::new().route(
            "/v1/logs",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let me = me.clone();
                async move {
                    let id = headers.get("x-hale-batch").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let Ok(req) = ExportLogsServiceRequest::decode(body.as_ref()) else {
                        return axum::http::StatusCode::BAD_REQUEST;
                    };
                    let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
                        .as_ref()
                        .and_then(|b| b.value.as_ref())
                    {
                        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    };
                    let mut lines = Vec::new();
                    for resource in &req.resource_logs {
                        let attrs = resource.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default();
                        let instance = attrs
                            .iter()
                            .find(|kv| kv.key == "service.instance.id")
                            .and_then(|kv| text(&kv.value))
                            .unwrap_or_default();
                        for record in resource.scope_logs.iter().flat_map(|s| &s.log_records) {
                            let Some(body) = text(&record.body) else { continue };
                            let attributes = record
                                .attributes
                                .iter()
                                .filter_map(|kv| Some((kv.key.clone(), text(&kv.value)?)))
                                .collect();
                            lines.push(Record { instance: instance.clone(), body, attributes });
                        }
                    }
                    *me.deliveries.lock().expect("lock") += 1;
                    me.batches.lock().expect("lock").entry(id).or_insert(lines);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind receiver");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        })
    }

    fn lines(&self) -> Vec<String> {
        self.records().into_iter().map(|r| r.body).collect()
    }

    fn records(&self) -> Vec<Record> {
        self.batches.lock().expect("lock").values().flatten().cloned().collect()
    }

    /// The record whose body is `body`, once it has arrived.
    fn record(&self, body: &str) -> Option<Record> {
        self.records().into_iter().find(|r| r.body == body)
    }
}

fn append(path: &Path, from: usize, to: usize) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open log");
    for i in from..to {
        writeln!(f, "{{\"level\":\"info\",\"message\":\"line {i}\"}}").expect("write");
    }
}

fn assert_exactly_once(lines: &[String], n: usize) {
    let mut seen = HashSet::new();
    for line in lines {
        assert!(seen.insert(line.clone()), "{line:?} shipped twice");
    }
    for i in 0..n {
        assert!(seen.contains(&format!("line {i}")), "line {i} never shipped");
    }
    assert_eq!(seen.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_survive_kill_9_rotation_and_a_receiver_outage_exactly_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    // The receiver is down at first: everything queues.
    let (setup, log, port) = AgentSetup::tailing(tmp.path(), 300);
    let mut agent = setup.start().await;
    eventually("lines read into the queue", Duration::from_secs(20), async || {
        let text = setup.metrics().await?;
        text.contains("hale_agent_log_lines_total{service=\"app\",level=\"info\"} 300").then_some(())
    })
    .await;
    // kill -9 mid-file, write more and rotate (rename-and-create) while it is down.
    agent.kill_9();
    append(&log, 300, 400);
    std::fs::rename(&log, tmp.path().join("app.log.1")).expect("rotate");
    append(&log, 400, 500);
    let receiver = Receiver::default();
    let _server = receiver.serve_on(port).await;
    let _agent = setup.start().await;
    append(&log, 500, 600);
    // copytruncate rotation as well.
    eventually("first 600 lines delivered", Duration::from_secs(30), async || {
        (receiver.lines().len() >= 600).then_some(())
    })
    .await;
    std::fs::copy(&log, tmp.path().join("app.log.2")).expect("copy");
    std::fs::OpenOptions::new().write(true).open(&log).expect("open").set_len(0).expect("truncate");
    append(&log, 600, 700);
    eventually("all 700 lines delivered", Duration::from_secs(30), async || {
        (receiver.lines().len() >= 700).then_some(())
    })
    .await;
    // Nothing left to send: every queued batch acknowledged, so no late resend can follow.
    eventually("the logs queue drained", Duration::from_secs(30), async || {
        let text = setup.metrics().await?;
        text.lines().any(|l| l == "hale_agent_queue_batches{queue=\"logs\",reader=\"logs\"} 0").then_some(())
    })
    .await;
    assert_exactly_once(&receiver.lines(), 700);
}

/// Appends `text` to `path` as it is.
fn write_log(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open log");
    f.write_all(text.as_bytes()).expect("write");
}

/// `[[logs]]` for files the agent did not start: a glob (files created later are followed,
/// each its own instance), labels, stack traces joined into one record, a plain-text
/// source; a record held back across a kill -9 is joined again whole; a reload (SIGHUP)
/// changes the labels; a bad file or a change that needs a restart is refused over
/// `POST /-/reload` with the reason, the old config kept. Nothing is shipped twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_globs_labels_multiline_and_reload_ship_every_record_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (logs, plain) = (tmp.path().join("logs"), tmp.path().join("plain"));
    std::fs::create_dir_all(&logs).expect("dir");
    std::fs::create_dir_all(&plain).expect("dir");
    let a = logs.join("a.log");
    write_log(&a, "2026-12-07 INFO start\n2026-12-07 ERROR boom\n  at one\n  at two\n");
    write_log(&plain.join("x.txt"), "{\"level\":\"error\",\"message\":\"not parsed\"}\n");
    let port = free_addr();
    let sources = |labels: &str, multiline: &str| {
        format!(
            "logs_endpoint = \"http://{port}/v1/logs\"\n\
             [[logs]]\npath = \"{}/*.log\"\nservice = \"app\"\nlabels = {{ {labels} }}\n\
             multiline = {{ start = '{multiline}', timeout_ms = 60000 }}\n\
             [[logs]]\npath = \"{}/*.txt\"\nservice = \"raw\"\ninstance = \"raw-1\"\nformat = \"plain\"\n",
            logs.display(),
            plain.display()
        )
    };
    let receiver = Receiver::default();
    let _server = receiver.serve_on(port).await;
    let mut setup = AgentSetup::new(tmp.path(), &sources("env = \"test\"", r"^\d{4}-"));
    let mut agent = setup.start().await;
    let _explain = Explain(tmp.path().join("agent.out"));
    let first = eventually("the first record and the plain line", Duration::from_secs(30), async || {
        Some((
            receiver.record("2026-12-07 INFO start")?,
            receiver.record(r#"{"level":"error","message":"not parsed"}"#)?,
        ))
    })
    .await;
    assert_eq!(first.0.instance, "a", "a glob's file is its own instance");
    assert_eq!(first.0.attributes.get("env").map(String::as_str), Some("test"));
    assert_eq!(first.1.instance, "raw-1");
    // A file the glob matches from now on is followed too.
    write_log(&logs.join("b.log"), "2026-12-07 INFO from b\n2026-12-07 INFO b2\n");
    let b = eventually("the new file's record", Duration::from_secs(30), async || {
        receiver.record("2026-12-07 INFO from b")
    })
    .await;
    assert_eq!(b.instance, "b");
    // The stack trace may still go on: it is held, and a kill -9 does not lose or cut it.
    assert!(receiver.records().iter().all(|r| !r.body.contains("boom")), "held until the next record starts");
    agent.kill_9();
    write_log(&a, "  at three\n2026-12-07 INFO after\n");
    agent = setup.start().await;
    eventually("the stack trace as one record", Duration::from_secs(30), async || {
        receiver.record("2026-12-07 ERROR boom\n  at one\n  at two\n  at three")
    })
    .await;
    // SIGHUP reads the file again: new lines carry the new label.
    setup.extra = sources("env = \"test\", team = \"core\"", r"^\d{4}-");
    setup.config();
    let hup = Command::new("kill").args(["-HUP", &agent.0.id().to_string()]).status().expect("kill -HUP");
    assert!(hup.success());
    eventually("the reload applied", Duration::from_secs(10), async || {
        let text = setup.metrics().await?;
        text.contains("hale_agent_config_reloads_total{outcome=\"applied\"} 1").then_some(())
    })
    .await;
    // Lines read from now on carry the label (one may still be read under the old one).
    let mut n = 0;
    eventually("a record with the reloaded labels", Duration::from_secs(30), async || {
        n += 1;
        write_log(&a, &format!("2026-12-07 INFO labelled {n}\n"));
        receiver.records().into_iter().find(|r| r.attributes.get("team").is_some_and(|t| t == "core"))
    })
    .await;
    // A bad file is refused with its reason; so is a change only a restart can make.
    let client = reqwest::Client::new();
    let reload_url = format!("http://{}/-/reload", setup.listen);
    let reload = async |token: Option<&str>| {
        let mut request = client.post(&reload_url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("reload");
        (response.status().as_u16(), response.text().await.unwrap_or_default())
    };
    assert_eq!(reload(None).await.0, 401, "reloading needs the token");
    setup.extra = sources("env = \"test\"", "(unclosed");
    setup.config();
    let (status, body) = reload(Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("multiline.start") && body.contains("agent.toml"), "{body}");
    let text = setup.metrics().await.expect("metrics");
    assert!(text.contains("hale_agent_config_last_reload_successful 0"), "{text}");
    assert!(text.contains("hale_agent_config_reloads_total{outcome=\"refused\"} 1"), "{text}");
    let kept = setup.listen;
    setup.listen = free_addr();
    setup.extra = sources("env = \"test\"", r"^\d{4}-");
    setup.config();
    setup.listen = kept;
    let (status, body) = reload(Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("`listen`") && body.contains("restart"), "{body}");
    // A good file again: put in force, with what it changed (labels: the logs section).
    setup.extra = sources("env = \"test\"", r"^\d{4}-");
    setup.config();
    let (status, body) = reload(Some(TOKEN)).await;
    let reloaded: hale_core::api::ConfigReloaded = serde_json::from_str(&body).expect("the reload's answer");
    assert_eq!((status, reloaded.changed), (200, vec!["logs".to_string()]), "{body}");
    setup.extra = sources("env = \"test\", team = \"core\"", r"^\d{4}-");
    setup.config();
    assert_eq!(reload(Some(TOKEN)).await.0, 200);
    // The labels follow the config in force (lines read before the tailer saw the last
    // reload may still carry the one before it).
    let mut n = 0;
    eventually("lines with the labels in force", Duration::from_secs(30), async || {
        n += 1;
        write_log(&a, &format!("2026-12-07 INFO still {n}\n"));
        receiver.records().into_iter().find(|r| {
            r.body.starts_with("2026-12-07 INFO still") && r.attributes.get("team").is_some_and(|t| t == "core")
        })
    })
    .await;
    let mut seen = HashSet::new();
    for record in receiver.records() {
        assert!(seen.insert((record.instance.clone(), record.body.clone())), "{record:?} shipped twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_queue_holds_lines_in_their_files_and_says_so() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A queue of two 4 KiB segments, the receiver down: the queue fills, then the lines
    // wait in the file, and the metrics say so.
    let (mut setup, log, port) = AgentSetup::tailing(tmp.path(), 2000);
    setup.extra.push_str("[logs_queue]\nmax_bytes = 8192\nsegment_bytes = 4096\nwhen_full = \"block\"\n");
    let _agent = setup.start().await;
    let _explain = Explain(tmp.path().join("agent.out"));
    let metric = |text: &str, name: &str| -> f64 {
        text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok()).sum()
    };
    eventually("the agent says it waits on a full queue", Duration::from_secs(20), async || {
        let text = setup.metrics().await?;
        let blocked = metric(&text, "hale_agent_log_blocked_seconds_total");
        let unread = metric(&text, "hale_agent_log_unread_bytes{");
        (blocked > 0.0 && unread > 10_000.0).then_some(())
    })
    .await;
    let text = setup.metrics().await.expect("metrics");
    assert!(metric(&text, "hale_agent_queue_bytes{queue=\"logs\"}") <= 8192.0, "the queue keeps its bound");
    let receiver = Receiver::default();
    let _server = receiver.serve_on(port).await;
    append(&log, 2000, 2100);
    eventually("every line delivered once the receiver is back", Duration::from_secs(60), async || {
        (receiver.lines().len() >= 2100).then_some(())
    })
    .await;
    eventually("nothing left unread", Duration::from_secs(20), async || {
        let text = setup.metrics().await?;
        (metric(&text, "hale_agent_log_unread_bytes{") == 0.0).then_some(())
    })
    .await;
    assert_exactly_once(&receiver.lines(), 2100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_queue_segment_does_not_stop_the_agent() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (setup, log, port) = AgentSetup::tailing(tmp.path(), 200);
    let mut agent = setup.start().await;
    let agent_log = tmp.path().join("agent.out");
    let _explain = Explain(agent_log);
    eventually("batches queued", Duration::from_secs(20), async || {
        (setup.logs_segment()?.metadata().ok()?.len() > 2000).then_some(())
    })
    .await;
    agent.kill_9();
    let seg = setup.logs_segment().expect("segment").path();
    let mut bytes = std::fs::read(&seg).expect("read");
    for b in &mut bytes[100..140] {
        *b ^= 0x5a;
    }
    std::fs::write(&seg, bytes).expect("corrupt");
    let receiver = Receiver::default();
    let _server = receiver.serve_on(port).await;
    let _agent = setup.start().await;
    eventually("the damage is counted and later batches still arrive", Duration::from_secs(30), async || {
        let text = setup.metrics().await?;
        let counted = text.contains("hale_agent_queue_corrupt_records_total{queue=\"logs\"} 1");
        (counted && !receiver.lines().is_empty()).then_some(())
    })
    .await;
    append(&log, 200, 210);
    eventually("new lines still flow", Duration::from_secs(20), async || {
        receiver.lines().contains(&"line 209".to_string()).then_some(())
    })
    .await;
}

/// A service run by something else (here a pidfile and the commands of the agent's own
/// config): listed with its manager and process, reported as `hale_process_*`, restarted
/// and stopped through the actuator by those commands, never started as a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_a_service_run_elsewhere_and_restarts_it_by_its_configured_command() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pidfile = tmp.path().join("legacy.pid");
    // The daemon's own control script, as a team would have it: not Hale's to run.
    let ctl = tmp.path().join("legacy-ctl");
    std::fs::write(
        &ctl,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  start) sleep 300 >/dev/null 2>&1 & echo $! > {p} ;;\n  \
             restart) kill $(cat {p}) 2>/dev/null; sleep 300 >/dev/null 2>&1 & echo $! > {p} ;;\n  \
             broken) echo 'legacy: config error on line 3' >&2; exit 2 ;;\nesac\n",
            p = pidfile.display()
        ),
    )
    .expect("ctl");
    std::fs::set_permissions(&ctl, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    assert!(Command::new(&ctl).arg("start").status().expect("start").success());
    let first_pid: u32 = std::fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("pid");
    let ctl = ctl.display();
    let setup = AgentSetup::new(
        tmp.path(),
        &format!(
            "[[services]]\nname = \"legacy\"\nmanaged = {{ pidfile = \"{}\", restart = [\"{ctl}\", \"restart\"], \
             instance = \"legacy-1\", listen = \"127.0.0.1:8080\" }}\n\
             [[services]]\nname = \"brittle\"\nmanaged = {{ pidfile = \"{}\", restart = [\"{ctl}\", \"broken\"] }}\n",
            pidfile.display(),
            tmp.path().join("none.pid").display(),
        ),
    );
    let _agent = setup.start().await;
    let base = format!("http://{}", setup.listen);
    let client = reqwest::Client::new();
    let list = async || -> ProcessList {
        client.get(format!("{base}/api/v1/processes")).send().await.expect("list").json().await.expect("json")
    };
    let legacy = list().await.processes.into_iter().find(|p| p.name == "legacy-1").expect("listed");
    assert_eq!(legacy.pid, Some(first_pid));
    assert_eq!(legacy.service, "legacy");
    assert_eq!(legacy.listen, "127.0.0.1:8080");
    assert_eq!(legacy.managed_by.as_deref(), Some(format!("pidfile:{}", pidfile.display()).as_str()));
    let brittle = list().await.processes.into_iter().find(|p| p.name == "brittle").expect("listed");
    assert_eq!((brittle.pid, brittle.state.as_str()), (None, "stopped"), "no process: not running");
    let metrics = setup.metrics().await.expect("metrics");
    assert!(
        metrics.contains("hale_process_up{service=\"legacy\",instance=\"legacy-1\",node=\"node-t\"} 1"),
        "{metrics}"
    );
    let act = async |method: &str, path: &str| {
        let req = client.request(method.parse().expect("method"), format!("{base}{path}")).bearer_auth(TOKEN);
        let response = req.send().await.expect(path);
        (response.status().as_u16(), response.text().await.unwrap_or_default())
    };
    assert_eq!(act("POST", "/api/v1/processes/legacy-1/restart").await.0, 202);
    let after = list().await.processes.into_iter().find(|p| p.name == "legacy-1").expect("listed");
    assert!(after.pid.is_some_and(|pid| pid != first_pid), "{after:?}");
    assert_eq!(after.restarts, 1);
    // A failing manager command is the manager's failure, with its words.
    let (status, body) = act("POST", "/api/v1/processes/brittle/restart").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("config error on line 3"), "{body}");
    // No replica of a service run elsewhere is started through the agent.
    let r = client
        .post(format!("{base}/api/v1/processes"))
        .bearer_auth(TOKEN)
        .body("{\"service\":\"legacy\"}")
        .send()
        .await
        .expect("start");
    assert_eq!(r.status(), 409);
    // Stop without a `stop` command: SIGTERM to the pidfile's process.
    assert_eq!(act("DELETE", "/api/v1/processes/legacy-1").await.0, 200);
    let stopped = list().await.processes.into_iter().find(|p| p.name == "legacy-1").expect("still listed");
    assert_eq!(stopped.pid, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervises_replicas_and_guards_the_actuator_with_its_token() {
    let tmp = tempfile::tempdir().expect("tmp");
    let setup = AgentSetup::new(
        tmp.path(),
        &format!(
            "[[services]]\nname = \"sleeper\"\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"exec sleep 300 # {{name}} {{listen}}\"]\noutput_file = \"{}/{{name}}.out\"\nport_range = [{p}, {p2}]\n\
             [[processes]]\nname = \"sleeper-1\"\nservice = \"sleeper\"\nlisten = \"127.0.0.1:{p}\"\n",
            tmp.path().display(),
            p = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port(),
            p2 = 65000
        ),
    );
    let _agent = setup.start().await;
    let base = format!("http://{}", setup.listen);
    let client = reqwest::Client::new();
    let list = async || -> ProcessList {
        client.get(format!("{base}/api/v1/processes")).send().await.expect("list").json().await.expect("json")
    };
    let pid =
        eventually("sleeper running", Duration::from_secs(10), async || list().await.processes.first()?.pid).await;
    // kill -9 of a replica: the agent restarts it.
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill").success());
    let new_pid = eventually("sleeper restarted", Duration::from_secs(10), async || {
        let p = list().await.processes.into_iter().next()?;
        p.pid.filter(|n| *n != pid && p.restarts == 1)
    })
    .await;
    assert_ne!(new_pid, pid);
    // The actuator refuses calls without the right token, and the agent runs no command
    // it is sent: only services it has templates for.
    for (method, path) in [
        ("POST", "/api/v1/processes/sleeper-1/restart"),
        ("DELETE", "/api/v1/processes/sleeper-1"),
        ("POST", "/api/v1/processes"),
    ] {
        for auth in [None, Some("Bearer wrong-token")] {
            let mut req = client
                .request(method.parse().expect("method"), format!("{base}{path}"))
                .body("{\"service\":\"sleeper\"}");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            assert_eq!(req.send().await.expect("call").status(), 401, "{method} {path} with {auth:?}");
        }
    }
    // Raw bodies: the refused ones are not a `StartProcess`.
    let start = async |body: &'static str| {
        client.post(format!("{base}/api/v1/processes")).bearer_auth(TOKEN).body(body).send().await.expect("start")
    };
    let r = start("{\"service\":\"sh\",\"program\":\"/bin/rm\"}").await;
    assert_eq!(r.status(), 400, "unknown fields (a command) are refused");
    assert_eq!(start("{\"service\":\"nope\"}").await.status(), 404);
    let r = start("{\"service\":\"sleeper\"}").await;
    assert_eq!(r.status(), 201);
    let started: ProcessStarted = r.json().await.expect("json");
    assert_eq!(started.process.expect("process").name, "sleeper-node-t-1");
    let act = async |method: &str, path: &str| {
        let req = client.request(method.parse().expect("method"), format!("{base}{path}")).bearer_auth(TOKEN);
        req.send().await.expect(path).status()
    };
    assert_eq!(act("POST", "/api/v1/processes/sleeper-1/restart").await, 202);
    assert_eq!(act("DELETE", "/api/v1/processes/sleeper-node-t-1").await, 200);
    assert_eq!(list().await.processes.len(), 1);
    // Issue #13: what the agent serves is what the typed client reads.
    let typed = hale_client::Agent::new(&base).expect("client");
    let processes = typed.processes().await.expect("ProcessList");
    assert_eq!(processes.processes.len(), 1);
    assert_eq!(processes.node, list().await.node);
    assert!(typed.health().await.expect("AgentHealth").pid.is_some());
}

/// `promtool check metrics` on an exposition: whether it is well-formed, and the names
/// of the families its lint findings are about.
fn promtool_findings(text: &str) -> (bool, BTreeSet<String>) {
    let mut promtool = Command::new(need("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    {
        use std::io::Write;
        promtool.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    }
    let out = promtool.wait_with_output().expect("promtool output");
    // Exit 1 is a format error; exit 3 is lint findings, one per line, `name: problem`.
    let findings = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let names = findings.lines().filter_map(|l| Some(l.split_once(':')?.0.trim().to_string())).collect();
    (out.status.success() || out.status.code() == Some(3), names)
}

/// The groups of node_exporter's families the community node dashboards read, which the
/// agent keeps with node_exporter's names, types and label names.
const NODE_EXPORTER_GROUPS: [&str; 29] = [
    "node_uname_info",
    "node_os_",
    "node_memory_",
    "node_disk_",
    "node_filesystem_",
    "node_pressure_",
    "node_netstat_",
    "node_sockstat_",
    "node_vmstat_",
    "node_network_",
    "node_intr_total",
    "node_procs_",
    "node_entropy_",
    "node_timex_",
    "node_nf_conntrack_",
    "node_schedstat_",
    "node_hwmon_",
    "node_thermal_zone_",
    "node_textfile_",
    "node_cpu_seconds_total",
    "node_cpu_guest_seconds_total",
    "node_load1",
    "node_load5",
    "node_load15",
    "node_boot_time_seconds",
    "node_time_seconds",
    "node_context_switches_total",
    "node_forks_total",
    "node_filefd_",
];

/// Families node_exporter has on some hosts that the agent leaves out on purpose.
const LEFT_OUT: [(&str, &str); 1] = [
    // The kernel says -1 for a link whose speed it does not know; node_exporter reports
    // -125000 bytes/s, the agent reports nothing rather than a negative speed.
    ("node_network_speed_bytes", "unknown speed"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_match_node_exporter() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Both read the same textfile directory.
    let textfiles = tmp.path().join("textfile");
    std::fs::create_dir_all(&textfiles).expect("textfile dir");
    std::fs::write(textfiles.join("backup.prom"), "# HELP backup_last_success_seconds Last good backup.\n# TYPE backup_last_success_seconds gauge\nbackup_last_success_seconds{job=\"nightly\"} 1.7e9\n")
        .expect("prom file");
    let setup = AgentSetup::new(tmp.path(), &format!("textfile_dir = \"{}\"", textfiles.display()));
    let _agent = setup.start().await;
    let text = setup.metrics().await.expect("metrics");

    let port = free_addr();
    let _node_exporter = Proc(
        Command::new(need("prometheus-node-exporter"))
            .arg(format!("--web.listen-address={port}"))
            .arg(format!("--collector.textfile.directory={}", textfiles.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node_exporter"),
    );
    let theirs_text = eventually("node_exporter up", Duration::from_secs(10), async || {
        reqwest::get(format!("http://{port}/metrics")).await.ok()?.text().await.ok()
    })
    .await;

    // Well-formed, and no lint finding node_exporter's own output does not also get (its
    // camelCase node_memory_* and node_sockstat_TCP_* names, which dashboards depend on).
    let (ok, ours_findings) = promtool_findings(&text);
    assert!(ok, "promtool check metrics failed on the agent's output");
    let (_, their_findings) = promtool_findings(&theirs_text);
    let beyond: Vec<&String> = ours_findings.difference(&their_findings).collect();
    assert!(beyond.is_empty(), "promtool lint findings beyond node_exporter's own: {beyond:?}");

    // Every family node_exporter exposes in the dashboards' groups, the agent exposes too,
    // with the same type and label names.
    let parse = |t: &str| hale_core::exposition::parse(t, hale_core::exposition::Format::Text).expect("parse");
    let ours = parse(&text);
    let theirs = parse(&theirs_text);
    let label_names = |f: &hale_core::metrics::Family| {
        f.samples.first().map(|s| s.labels.iter().map(|l| l.0.clone()).collect::<BTreeSet<_>>()).unwrap_or_default()
    };
    let mut compared = 0;
    let mut missing = Vec::new();
    for family in theirs.iter().filter(|f| NODE_EXPORTER_GROUPS.iter().any(|g| f.name.starts_with(g))) {
        if LEFT_OUT.iter().any(|(prefix, _)| family.name.starts_with(prefix)) {
            continue;
        }
        let Some(mine) = ours.iter().find(|f| f.name == family.name) else {
            missing.push(family.name.clone());
            continue;
        };
        assert_eq!(mine.kind, family.kind, "type of {}", family.name);
        assert_eq!(label_names(mine), label_names(family), "label names of {}", family.name);
        compared += 1;
    }
    assert!(missing.is_empty(), "node_exporter families the agent lacks: {missing:?}");
    assert!(compared >= 150, "only {compared} families compared: did node_exporter answer in full?");
    // node_uname_info is how the community dashboards find a host.
    let uname = ours.iter().find(|f| f.name == "node_uname_info").expect("node_uname_info");
    assert!(uname.samples[0].labels.iter().any(|(k, v)| k == "nodename" && !v.is_empty()));
    // The textfile's own family, merged in as node_exporter merges it.
    assert!(ours.iter().any(|f| f.name == "backup_last_success_seconds"), "the textfile's family");
}

/// A service Hale did not start: `/metrics` answering `text`, on a free loopback port.
async fn foreign_service(text: &'static str) -> SocketAddr {
    let router = axum::Router::new().route("/metrics", axum::routing::get(move || async move { text }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_foreign_targets_and_probes_from_static_and_file_sd_config_with_relabelling_and_limits() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_prometheus, port) = common::prometheus_receiver(tmp.path()).await;
    let base = format!("http://{port}");
    let a = foreign_service("app_requests_total{instance=\"inner\",code=\"200\"} 5\napp_debug_info 1\n").await;
    let b = foreign_service("app_requests_total{code=\"500\"} 7\n").await;
    let many = foreign_service("m{i=\"1\"} 1\nm{i=\"2\"} 1\nm{i=\"3\"} 1\nm{i=\"4\"} 1\n").await;
    let sd = tmp.path().join("sd");
    std::fs::create_dir_all(&sd).expect("dir");
    std::fs::write(sd.join("b.json"), format!(r#"[{{"targets": ["{b}"], "labels": {{"team": "y"}}}}]"#)).expect("sd");
    let agent_dir = tmp.path().join("agent");
    std::fs::create_dir_all(&agent_dir).expect("dir");
    let mut setup = AgentSetup::new(
        &agent_dir,
        &format!(
            r#"remote_write = ["{base}/api/v1/write"]
[[scrape_configs]]
job_name = "foreign"
scrape_interval = "1s"
scrape_timeout = "500ms"
static_configs = [{{ targets = ["{a}"], labels = {{ team = "x" }} }}]
file_sd_configs = [{{ files = ["{}/*.json"] }}]
relabel_configs = [{{ source_labels = ["__address__"], regex = "([^:]+):.*", target_label = "host" }}]
metric_relabel_configs = [{{ source_labels = ["__name__"], regex = "app_debug_.*", action = "drop" }}]
[[scrape_configs]]
job_name = "limited"
scrape_interval = "1s"
sample_limit = 3
static_configs = [{{ targets = ["{many}"] }}]
[[probes]]
name = "a-metrics"
module = "http"
target = "http://{a}/metrics"
interval = "1s"
fail_if_body_not_matches_regexp = ["app_requests_total"]
[[probes]]
name = "b-port"
module = "tcp"
target = "{b}"
interval = "1s"
"#,
            sd.display()
        ),
    );
    let agent = setup.start().await;
    let _explain = Explain(agent_dir.join("agent.out"));
    let client = reqwest::Client::new();
    let up = |job: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move { common::query(&client, &base, &format!("up{{job=\"{job}\"}}")).await.unwrap_or_default() }
    };
    eventually("both foreign targets up, the limited one down", Duration::from_secs(30), async || {
        let (foreign, limited) = (up("foreign").await, up("limited").await);
        let ups: Vec<f64> = foreign.iter().filter_map(|s| s.value.value()).collect();
        let limited: Vec<f64> = limited.iter().filter_map(|s| s.value.value()).collect();
        (ups == [1.0, 1.0] && limited == [0.0]).then_some(())
    })
    .await;
    let series = common::query(&client, &base, "app_requests_total").await.expect("query");
    assert_eq!(series.len(), 2, "{series:?}");
    let from_a = series.iter().find(|s| s.metric.get("team").map(String::as_str) == Some("x")).expect("a's series");
    for (label, value) in [
        ("exported_instance", "inner"),
        ("instance", a.to_string().as_str()),
        ("host", "127.0.0.1"),
        ("job", "foreign"),
        ("service", "foreign"),
        ("node", "node-t"),
    ] {
        assert_eq!(from_a.metric.get(label).map(String::as_str), Some(value), "{label} of {:?}", from_a.metric);
    }
    eventually("the blackbox probes succeed", Duration::from_secs(30), async || {
        let probes = common::query(&client, &base, "probe_success{probe=~\"a-metrics|b-port\"}").await?;
        (probes.len() == 2 && probes.iter().all(|p| p.value.value() == Some(1.0))).then_some(())
    })
    .await;
    let dropped = common::query(&client, &base, "app_debug_info").await.expect("query");
    assert!(dropped.is_empty(), "metric relabelling drops it: {dropped:?}");
    // The file loses its target: the target stops and its series end.
    std::fs::write(sd.join("b.json"), "[]").expect("sd");
    eventually("the removed target's series ended", Duration::from_secs(30), async || {
        let foreign = up("foreign").await;
        let left = common::query(&client, &base, "app_requests_total{team=\"y\"}").await?;
        (foreign.len() == 1 && left.is_empty()).then_some(())
    })
    .await;
    // A reload (SIGHUP) swaps a probe: the new one starts, the removed one's series end.
    setup.extra = setup.extra.replace("name = \"b-port\"", "name = \"a-port\"").replace(&b.to_string(), &a.to_string());
    setup.config();
    let hup = Command::new("kill").args(["-HUP", &agent.0.id().to_string()]).status().expect("kill -HUP");
    assert!(hup.success());
    eventually("the reloaded probes", Duration::from_secs(30), async || {
        let probes = common::query(&client, &base, "probe_success").await?;
        let mut names: Vec<&str> = probes.iter().filter_map(|p| p.metric.get("probe").map(String::as_str)).collect();
        names.sort_unstable();
        (names == ["a-metrics", "a-port"]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_receives_remote_write_and_answers_queries() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_prometheus, port) = common::prometheus_receiver(tmp.path()).await;
    let base = format!("http://{port}");
    let agent_dir = tmp.path().join("agent");
    std::fs::create_dir_all(&agent_dir).expect("dir");
    let setup = AgentSetup::new(&agent_dir, &format!("remote_write = [\"{base}/api/v1/write\"]\n"));
    let _agent = setup.start().await;
    let client = reqwest::Client::new();
    let result = eventually("prometheus answers for the agent's series", Duration::from_secs(30), async || {
        common::query(&client, &base, "node_memory_MemAvailable_bytes{node=\"node-t\"}").await.filter(|r| !r.is_empty())
    })
    .await;
    assert_eq!(result[0].metric.get("job").map(String::as_str), Some("node"));
    let value: f64 = result[0].value.value().expect("number");
    assert!(value > 0.0);
    let cpu = common::query_value(&client, &base, "count(node_cpu_seconds_total{node=\"node-t\",mode=\"idle\"})")
        .await
        .expect("count");
    assert!(cpu >= 1.0);
}

/// A pod as the API server lists it: on `node`, at 127.0.0.1, annotated (or not) for
/// scraping on `port`.
fn k8s_pod(name: &str, node: &str, phase: &str, scrape: Option<u16>) -> serde_json::Value {
    let mut annotations = serde_json::json!({"kubectl.kubernetes.io/restartedAt": "2026-03-01T10:00:00Z"});
    if let Some(port) = scrape {
        annotations["prometheus.io/scrape"] = "true".into();
        annotations["prometheus.io/port"] = port.to_string().into();
        annotations["prometheus.io/path"] = "/metrics".into();
    }
    serde_json::json!({
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                     "labels": {"app": "web", "app.kubernetes.io/part-of": "shop"}, "annotations": annotations,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6",
                                          "uid": "uid-rs", "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "web", "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]},
        "status": if phase == "Running" {
            serde_json::json!({"phase": "Running", "podIP": "127.0.0.1", "hostIP": "10.0.0.11",
                               "conditions": [{"type": "Ready", "status": "True"}]})
        } else {
            serde_json::json!({"phase": phase})
        }
    })
}

/// Kubernetes service discovery: the agent lists the pods of its own node (the field
/// selector) through the API server — a fake one on loopback, reached through a
/// kubeconfig — scrapes the annotated running ones at their annotated port and path, and
/// their `__meta_kubernetes_*` labels go through the job's relabelling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_the_annotated_pods_of_its_node_through_the_kubernetes_api() {
    let tmp = tempfile::tempdir().expect("tmp");
    let app = foreign_service("app_requests_total{code=\"200\"} 5\n").await;
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let pods = vec![
        k8s_pod("web-1", "node-t", "Running", Some(app.port())),
        k8s_pod("quiet-1", "node-t", "Running", None),
        k8s_pod("web-2", "node-other", "Running", Some(app.port())),
        k8s_pod("web-3", "node-t", "Pending", Some(app.port())),
    ];
    let seen = asked.clone();
    let api = axum::Router::new().route(
        "/api/v1/pods",
        axum::routing::get(move |uri: axum::http::Uri| {
            let (seen, pods) = (seen.clone(), pods.clone());
            async move {
                let query = uri.query().unwrap_or("").to_string();
                seen.lock().expect("lock").push(query.clone());
                // The API server's field selector: only the pods of the node asked for.
                let node = query.split('&').find_map(|kv| kv.strip_prefix("fieldSelector=spec.nodeName%3D"));
                let items: Vec<serde_json::Value> =
                    pods.into_iter().filter(|p| Some(p["spec"]["nodeName"].as_str().unwrap_or("")) == node).collect();
                axum::Json(serde_json::json!({"kind": "PodList", "apiVersion": "v1",
                                              "metadata": {"resourceVersion": "1"}, "items": items}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, api).await });
    let kubeconfig = common::file(
        tmp.path(),
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: http://{api_addr}\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    );
    let collector = free_addr();
    let _collector =
        common::spawn_collector(collector, &tmp.path().join("collector"), &tmp.path().join("collector.out"), &[], &[]);
    common::wait_ready("collector", collector).await;
    let agent_dir = tmp.path().join("agent");
    std::fs::create_dir_all(&agent_dir).expect("dir");
    let setup = AgentSetup::new(
        &agent_dir,
        &format!(
            r#"remote_write = ["http://{collector}/api/v1/write"]
[[scrape_configs]]
job_name = "kubernetes-pods"
scrape_interval = "1s"
scrape_timeout = "500ms"
kubernetes_sd_configs = [{{ kubeconfig_file = "{}" }}]
relabel_configs = [
  {{ source_labels = ["__meta_kubernetes_namespace"], target_label = "namespace" }},
  {{ source_labels = ["__meta_kubernetes_pod_name"], target_label = "pod" }},
  {{ source_labels = ["__meta_kubernetes_pod_label_app_kubernetes_io_part_of"], target_label = "part_of" }},
  {{ source_labels = ["__meta_kubernetes_pod_controller_kind"], target_label = "controller" }},
]
"#,
            kubeconfig.display()
        ),
    );
    let _agent = setup.start().await;
    let _explain = Explain(agent_dir.join("agent.out"));
    let client = reqwest::Client::new();
    let base = format!("http://{collector}");
    let series = eventually("the pod's metrics at the collector", Duration::from_secs(30), async || {
        common::query(&client, &base, "app_requests_total").await.filter(|s| !s.is_empty())
    })
    .await;
    assert_eq!(
        series.len(),
        1,
        "only web-1: quiet-1 is not annotated, web-2 is another node's, web-3 not running: {series:?}"
    );
    let labels = &series[0].metric;
    for (name, value) in [
        ("pod", "web-1"),
        ("namespace", "shop"),
        ("part_of", "shop"),
        ("controller", "ReplicaSet"),
        ("job", "kubernetes-pods"),
        ("node", "node-t"),
        ("instance", &format!("127.0.0.1:{}", app.port())),
    ] {
        assert_eq!(labels.get(name).map(String::as_str), Some(value), "{name} of {labels:?}");
    }
    let asked = asked.lock().expect("lock").clone();
    assert!(asked.iter().all(|q| q.contains("fieldSelector=spec.nodeName%3Dnode-t")), "{asked:?}");
}
