//! End to end: the real `hale collector` fed by the real `hale agent` and by a test
//! sender, killed with SIGKILL under ingest and restarted, and given a torn WAL.

mod common;

use common::{Proc, eventually, free_addr};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hale_core::api::{Envelope, Labels, LogLine, Status};
use hale_core::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};
use serde_json::Value;

/// A collector's place in a test's temp dir: address, data dir and output file, the same
/// across its restarts.
/// A collector's address and files in a temporary dir of its own (removed on drop).
struct Site {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    data: PathBuf,
    out: PathBuf,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("tmp");
        let (data, out) = (dir.path().join("collector"), dir.path().join("collector.out"));
        Site { dir, addr: free_addr(), data, out }
    }

    /// A new site with its collector started and ready.
    async fn running() -> (Site, Proc) {
        let site = Site::new();
        let proc = site.start().await;
        (site, proc)
    }

    async fn start(&self) -> Proc {
        self.start_with(&[]).await
    }

    async fn start_with(&self, extra: &[&str]) -> Proc {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let env = [("HALE_INGEST_TOKEN", "ingest-secret")];
        let mut proc = common::spawn_collector(self.addr, &self.data, &self.out, &extra, &env);
        common::collector_ready(&mut proc, self.addr, &self.out).await;
        proc
    }
}

/// `hale agent` with `config`, sending the ingest token.
fn agent(config: &std::path::Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_hale"))
            .args(["agent", "--config"])
            .arg(config)
            .env("HALE_INGEST_TOKEN", "ingest-secret")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent"),
    )
}

async fn series_names(addr: SocketAddr, selector: &str) -> Vec<String> {
    let url = format!("http://{addr}/api/v1/series");
    let series: Vec<Labels> =
        common::get_data(&reqwest::Client::new(), &url, &[("match[]", selector)]).await.expect("series");
    series.into_iter().map(|mut s| s.remove("__name__").unwrap_or_default()).collect()
}

/// Every sample of the series matching `selector` over the last two hours, by metric name:
/// (timestamp in ms, value), raw as stored (a range selector, evaluated now).
async fn stored_samples(addr: SocketAddr, selector: &str) -> std::collections::HashMap<String, Vec<(i64, f64)>> {
    let query = format!("{selector}[2h]");
    let series = common::query_matrix(&reqwest::Client::new(), &format!("http://{addr}"), &query).await;
    series
        .expect("a matrix")
        .into_iter()
        .map(|s| {
            let name = s.metric.get("__name__").expect("name").clone();
            let points = s.values.iter().map(|p| ((p.0 * 1000.0).round() as i64, p.value().expect("number")));
            (name, points.collect())
        })
        .collect()
}

/// Asserts that batch `i` (see [`batch`]) is stored exactly: its one sample's value and
/// timestamp, for every `i` in `acked`.
fn assert_every_batch_stored(stored: &std::collections::HashMap<String, Vec<(i64, f64)>>, acked: &[u32]) {
    let wrong: Vec<String> = acked
        .iter()
        .filter_map(|i| {
            let expected = vec![(recent_ms() + i64::from(*i), f64::from(*i))];
            let got = stored.get(&format!("ack_{i}"));
            (got != Some(&expected)).then(|| format!("ack_{i}: {got:?}, not {expected:?}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged writes lost or changed: {:?}",
        wrong.len(),
        acked.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// An hour ago, fixed for the whole test run (so every writer shares one base).
fn recent_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
            - 3_600_000
    })
}

fn batch(i: u32) -> Vec<u8> {
    remote_write::encode(&WriteRequest {
        timeseries: vec![TimeSeries {
            exemplars: Vec::new(),
            labels: vec![
                Label { name: "__name__".into(), value: format!("ack_{i}") },
                Label { name: "job".into(), value: "durability".into() },
            ],
            // Recent enough that retention keeps it: the test is about durability.
            samples: vec![Sample { value: f64::from(i), timestamp: recent_ms() + i64::from(i) }],
        }],
        metadata: Vec::new(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_sample_survives_kill_9_and_a_torn_wal_tail() {
    let site = Site::new();
    let addr = site.addr;
    let mut collector = site.start().await;

    // Writers keep sending while the collector is killed; each remembers what was acknowledged.
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
            let mut i = w;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let r = client
                    .post(format!("http://{addr}/api/v1/write"))
                    .bearer_auth("ingest-secret")
                    .header("content-encoding", "snappy")
                    .body(batch(i))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 204 => acked.lock().expect("lock").push(i),
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => break, // the collector is gone
                }
                i += 4;
            }
        }));
    }
    eventually("some writes acknowledged", Duration::from_secs(20), async || {
        (acked.lock().expect("lock").len() >= 200).then_some(())
    })
    .await;
    collector.kill_9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let acked: Vec<u32> = acked.lock().expect("lock").clone();

    // A torn tail on top: half a record at the end of the newest WAL segment.
    let wal_dir = site.data.join("wal");
    let newest: PathBuf = std::fs::read_dir(&wal_dir)
        .expect("wal")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .max()
        .expect("segment");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&newest).expect("open");
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 1, 9, 9]).expect("tear");
    }

    let _collector = site.start().await;
    let log = std::fs::read_to_string(&site.out).expect("log");
    assert!(log.contains("torn or damaged tail"), "the truncation is reported:\n{log}");
    // Every acknowledged sample, with its value and timestamp.
    assert_every_batch_stored(&stored_samples(addr, "{job=\"durability\"}").await, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_ships_host_metrics_into_the_collector() {
    let (site, _collector) = Site::running().await;
    let addr = site.addr;
    let agent_addr = free_addr();
    let config = site.dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"node-c\"\nlisten = \"{agent_addr}\"\ndata_dir = \"{}\"\nremote_write = [\"http://{addr}/api/v1/write\"]\nscrape_interval_ms = 200\n",
            site.dir.path().join("agent").display()
        ),
    )
    .expect("config");
    let _agent = agent(&config);
    let names = eventually("host series in the collector", Duration::from_secs(30), async || {
        let names = series_names(addr, "{node=\"node-c\"}").await;
        // The agent's own delivery counter shows up from the cycle after its first delivery.
        let ready =
            ["node_cpu_seconds_total", "hale_agent_batches_sent_total"].iter().all(|n| names.contains(&n.to_string()));
        ready.then_some(names)
    })
    .await;
    for expected in ["node_load1", "node_memory_MemAvailable_bytes", "hale_agent_batches_sent_total"] {
        assert!(names.contains(&expected.to_string()), "{expected} missing from {names:?}");
    }
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("hale_collector_active_series"), "{metrics}");
    let federated = reqwest::Client::new()
        .get(format!("http://{addr}/federate"))
        .query(&[("match[]", "node_load1{node=\"node-c\"}")])
        .send()
        .await
        .expect("federate")
        .text()
        .await
        .expect("text");
    let line = federated.lines().find(|l| l.starts_with("node_load1{")).expect("a node_load1 line");
    assert_eq!(line.split_whitespace().count(), 3, "value and timestamp: {line}");
    let parsed =
        hale_core::exposition::parse(&federated, hale_core::exposition::Format::Text).expect("valid text format");
    assert_eq!(parsed.len(), 1);
}

async fn send(client: &reqwest::Client, addr: SocketAddr, i: u32) {
    let r = client
        .post(format!("http://{addr}/api/v1/write"))
        .bearer_auth("ingest-secret")
        .body(batch(i))
        .send()
        .await
        .expect("write");
    assert_eq!(r.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_fold_the_wal_and_lose_nothing_across_kill_9() {
    let site = Site::new();
    let addr = site.addr;
    let mut collector = site.start_with(&["--checkpoint-interval", "200ms"]).await;
    let client = reqwest::Client::new();
    for i in 0..50 {
        send(&client, addr, i).await;
    }
    eventually("a checkpoint written", Duration::from_secs(20), async || {
        std::fs::read_dir(&site.data)
            .ok()?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint.0"))
            .then_some(())
    })
    .await;
    for i in 50..60 {
        send(&client, addr, i).await;
    }
    collector.kill_9();
    let _collector = site.start().await;
    let stored = stored_samples(addr, "{job=\"durability\"}").await;
    assert_every_batch_stored(&stored, &(0..60).collect::<Vec<u32>>());
    assert_eq!(stored.len(), 60, "nothing else: {:?}", stored.keys());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_the_ingest_token_are_refused_and_store_nothing() {
    let (site, _collector) = Site::running().await;
    let addr = site.addr;
    let client = reqwest::Client::new();
    let logs = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "intruder"}}]},
        "scopeLogs": [{"logRecords": [{"timeUnixNano": "1700000000000000000", "severityText": "info", "body": {"stringValue": "let me in"}}]}]
    }]});
    for token in [None, Some("wrong"), Some("ingest-secret-but-longer"), Some("")] {
        let mut write = client.post(format!("http://{addr}/api/v1/write")).body(batch(7));
        let mut log = client.post(format!("http://{addr}/v1/logs")).json(&logs);
        if let Some(token) = token {
            (write, log) = (write.bearer_auth(token), log.bearer_auth(token));
        }
        for (what, request) in [("remote_write", write), ("OTLP logs", log)] {
            let r = request.send().await.expect("post");
            assert_eq!(r.status(), 401, "{what} with {token:?}");
            let body: Envelope<()> = r.json().await.expect("json");
            assert_eq!((body.status, body.error_type.as_deref()), (Status::Error, Some("unauthorized")));
        }
    }
    assert_eq!(series_names(addr, "{job=\"durability\"}").await, Vec::<String>::new(), "no series stored");
    let stored = |service: &str| {
        let client = client.clone();
        let url = format!("http://{addr}/api/v1/logs");
        let service = service.to_string();
        async move {
            let lines: Vec<LogLine> = common::get_data(&client, &url, &[("service", &service)]).await.expect("lines");
            lines.len()
        }
    };
    assert_eq!(stored("intruder").await, 0, "no log line stored");
    // The same requests with the token are stored, so the checks above can see a leak.
    send(&client, addr, 7).await;
    assert_every_batch_stored(&stored_samples(addr, "{job=\"durability\"}").await, &[7]);
    let r = client.post(format!("http://{addr}/v1/logs")).bearer_auth("ingest-secret").json(&logs).send().await;
    assert_eq!(r.expect("post").status(), 200);
    assert_eq!(stored("intruder").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_stored_queried_and_tailed_live() {
    let (site, _collector) = Site::running().await;
    let addr = site.addr;
    let client = reqwest::Client::new();
    let mut tail =
        client.get(format!("http://{addr}/api/v1/logs/tail?service=checkout&level=error")).send().await.expect("tail");
    assert_eq!(tail.status(), 200);
    let otlp_json = |message: &str, level: &str| {
        serde_json::json!({"resourceLogs": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "checkout"}},
                {"key": "service.instance.id", "value": {"stringValue": "checkout-1"}}
            ]},
            "scopeLogs": [{"logRecords": [{"timeUnixNano": "1700000000000000000", "severityText": level, "body": {"stringValue": message}}]}]
        }]})
    };
    let post = |body: Value, batch: &str, token: &str| {
        client
            .post(format!("http://{addr}/v1/logs"))
            .bearer_auth(token)
            .header("x-hale-batch", batch.to_string())
            .json(&body)
            .send()
    };
    assert_eq!(post(otlp_json("nope", "error"), "t/1", "wrong").await.expect("post").status(), 401);
    assert_eq!(post(otlp_json("all good", "info"), "t/1", "ingest-secret").await.expect("post").status(), 200);
    assert_eq!(post(otlp_json("card declined", "error"), "t/2", "ingest-secret").await.expect("post").status(), 200);
    assert_eq!(
        post(otlp_json("card declined", "error"), "t/2", "ingest-secret").await.expect("post").status(),
        200,
        "a resent batch is acknowledged"
    );
    let bad = client
        .post(format!("http://{addr}/v1/logs"))
        .bearer_auth("ingest-secret")
        .body("garbage")
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);
    // The live tail saw the error line, and only it.
    let chunk = tokio::time::timeout(Duration::from_secs(10), tail.chunk())
        .await
        .expect("in time")
        .expect("read")
        .expect("a chunk");
    let text = String::from_utf8_lossy(&chunk);
    assert!(text.contains("card declined") && !text.contains("all good"), "{text}");
    let url = format!("http://{addr}/api/v1/logs");
    let lines: Vec<LogLine> = common::get_data(&client, &url, &[("service", "checkout")]).await.expect("lines");
    let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(messages, ["all good", "card declined"], "stored once each");
}

/// The messages of every log line in the collector's segment files, as stored.
fn stored_messages(data: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(data.join("logs")) else { return out };
    let mut paths: Vec<PathBuf> =
        dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "jsonl")).collect();
    paths.sort();
    for path in paths {
        for line in std::fs::read_to_string(&path).unwrap_or_default().lines() {
            // Batch ids and a torn last line are not log lines.
            if let Ok(line) = serde_json::from_str::<LogLine>(line) {
                out.push(line.message);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_reach_the_collector_exactly_once_across_its_kill_9_mid_stream() {
    let (site, mut collector) = Site::running().await;
    let log = site.dir.path().join("app.log");
    let append = |from: usize, to: usize| {
        use std::io::Write;
        let text: String = (from..to).map(|i| format!("{{\"level\":\"info\",\"message\":\"line {i}\"}}\n")).collect();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log");
        f.write_all(text.as_bytes()).expect("append");
    };
    append(0, 5_000);
    let (agent_addr, config) = (free_addr(), site.dir.path().join("agent.toml"));
    std::fs::write(
        &config,
        format!(
            "node = \"node-l\"\nlisten = \"{agent_addr}\"\ndata_dir = \"{}\"\nlogs_endpoint = \"http://{}/v1/logs\"\n\
             batch = {{ max_records = 200, max_wait_ms = 50 }}\n[[logs]]\npath = \"{}\"\nservice = \"app\"\ninstance = \"app-1\"\n",
            site.dir.path().join("agent").display(),
            site.addr,
            log.display()
        ),
    )
    .expect("config");
    let _agent = agent(&config);
    // Three times: lines keep coming, and the collector is killed while batches are in
    // flight (200-line batches, four at a time), then started again.
    let mut written = 5_000;
    let mut killed_mid_stream = 0;
    for round in 1..=3 {
        eventually("lines arriving", Duration::from_secs(30), async || {
            (stored_messages(&site.data).len() >= written - 2_000).then_some(())
        })
        .await;
        append(written, written + 5_000);
        written += 5_000;
        tokio::time::sleep(Duration::from_millis(20 * round)).await;
        collector.kill_9();
        let stored = stored_messages(&site.data).len();
        eprintln!("round {round}: killed with {stored} of {written} lines stored");
        killed_mid_stream += usize::from(stored > 0 && stored < written);
        collector = site.start().await;
    }
    append(written, written + 1_000);
    written += 1_000;
    let messages = eventually("every line stored", Duration::from_secs(60), async || {
        let messages = stored_messages(&site.data);
        (messages.len() >= written).then_some(messages)
    })
    .await;
    let mut seen = std::collections::HashSet::new();
    for m in &messages {
        assert!(seen.insert(m.clone()), "{m:?} stored twice");
    }
    let missing: Vec<usize> = (0..written).filter(|i| !seen.contains(&format!("line {i}"))).collect();
    assert!(missing.is_empty(), "{} lines never stored, from line {:?}", missing.len(), missing.first());
    assert_eq!(messages.len(), written);
    assert!(killed_mid_stream > 0, "the collector was never killed mid-stream");
}

/// A value of the collector's own `/metrics`.
async fn own_metric(client: &reqwest::Client, addr: SocketAddr, name: &str) -> Option<f64> {
    let text = client.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Twelve hours of 20 series, sent in time order as an agent's backlog would be: what
/// left the 2 h head window is in on-disk blocks within seconds, a kill -9 right after
/// loses and doubles nothing, and queries read head and blocks as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_samples_move_to_blocks_and_a_kill_9_loses_and_doubles_nothing() {
    const HOUR: i64 = 3_600_000;
    let site = Site::new();
    let addr = site.addr;
    let mut collector = site.start_with(&["--checkpoint-interval", "1s"]).await;
    let client = reqwest::Client::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let end = (now - 60_000) / 15_000 * 15_000;
    let start = end - 12 * HOUR;
    let value = |i: i64, t: i64| (t / 15_000 % 100_000 + i) as f64;
    for from in (start..end).step_by(15 * 60_000) {
        let timeseries = (0..20)
            .map(|i| TimeSeries {
                exemplars: Vec::new(),
                labels: vec![
                    Label { name: "__name__".into(), value: "backfill".into() },
                    Label { name: "job".into(), value: "blocks".into() },
                    Label { name: "series".into(), value: i.to_string() },
                ],
                samples: (from..(from + 15 * 60_000).min(end))
                    .step_by(15_000)
                    .map(|t| Sample { value: value(i, t), timestamp: t })
                    .collect(),
            })
            .collect();
        let body = remote_write::encode(&WriteRequest { timeseries, metadata: Vec::new() });
        let r = client
            .post(format!("http://{addr}/api/v1/write"))
            .bearer_auth("ingest-secret")
            .body(body)
            .send()
            .await
            .expect("write");
        assert_eq!(r.status(), 204);
    }
    // Everything that ended 2 h (aligned to 2 h) behind the newest sample: at least 8 h
    // of the 12, less the chunk in progress at the cut.
    let on_disk = (20 * (8 * HOUR / 15_000 - 120)) as f64;
    eventually("the old samples in blocks", Duration::from_secs(60), async || {
        (own_metric(&client, addr, "hale_collector_block_samples").await? >= on_disk).then_some(())
    })
    .await;
    let blocks = std::fs::read_dir(site.data.join("blocks")).expect("blocks dir").count();
    assert!(blocks >= 4, "{blocks} blocks");
    collector.kill_9();
    let _collector = site.start().await;
    let base = format!("http://{addr}");
    let counts = common::query(&client, &base, "count_over_time(backfill[13h])").await.expect("counts");
    assert_eq!(counts.len(), 20);
    for c in &counts {
        assert_eq!(c.value.value(), Some((12 * HOUR / 15_000) as f64), "every sample once: {:?}", c.metric);
    }
    let one = common::query_matrix(&client, &base, "backfill{series=\"7\"}[13h]").await.expect("matrix");
    let got: Vec<(i64, f64)> =
        one[0].values.iter().map(|p| ((p.0 * 1000.0).round() as i64, p.value().expect("number"))).collect();
    let want: Vec<(i64, f64)> = (start..end).step_by(15_000).map(|t| (t, value(7, t))).collect();
    assert!(got == want, "series 7 differs: {} samples of {}", got.len(), want.len());
    // A range query across the head and the blocks, point by point.
    let (from, to) = ((start / 1000 + 3600).to_string(), (end / 1000).to_string());
    let sums = common::query_range(
        &client,
        &base,
        "sum(count_over_time(backfill[1h]))",
        [("start", from.as_str()), ("end", to.as_str()), ("step", "3600")],
    )
    .await
    .expect("range");
    // Every hour holds its 240 samples a series (241 where both window ends fall on one,
    // as 2.42 counts): none lost at a block's edge, none counted twice.
    let whole = |p: &hale_core::api::Point| p.value().is_some_and(|v| (20.0 * 240.0..=20.0 * 241.0).contains(&v));
    assert!(sums[0].values.iter().all(whole), "{:?}", sums[0].values);
    assert_eq!(sums[0].values.len(), 12);
}
