//! Forwarding to a scalable backend: the collector forwards what it stores to a real
//! VictoriaMetrics (Debian's `victoria-metrics`) from its own WAL. A writer sends while
//! VictoriaMetrics is stopped and started again, and the collector is killed with SIGKILL
//! and restarted meanwhile, while checkpoints fold the WAL; afterwards every sample the
//! collector acknowledged is in VictoriaMetrics.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Proc, eventually, free_addr, need};
use hale_core::remote_write::{Label, Sample, TimeSeries, WriteRequest};

/// VictoriaMetrics on `addr` with its data in `dir`; returns once it answers `/health`.
async fn victoria(dir: &Path, addr: SocketAddr, out: &Path) -> Proc {
    let program = need("victoria-metrics");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(out).expect("log");
    let mut cmd = Command::new(program);
    cmd.arg(format!("-httpListenAddr={addr}"))
        .arg(format!("-storageDataPath={}", dir.display()))
        .arg("-retentionPeriod=100y")
        // Queries see samples at once (not 30 s later) and never a cached answer from
        // before they arrived, and a sample resent after a lost acknowledgement counts once.
        .arg("-search.latencyOffset=0s")
        .arg("-search.disableCache")
        .arg("-dedup.minScrapeInterval=1ms");
    let proc = Proc(common::spawn_logged(&mut cmd, log, "victoria-metrics"));
    eventually("VictoriaMetrics healthy", Duration::from_secs(30), async || {
        let r = reqwest::get(format!("http://{addr}/health")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    proc
}

/// Stops VictoriaMetrics as a service manager would (SIGTERM: it flushes what it holds).
fn stop_gracefully(proc: &mut Proc) {
    let pid = proc.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = proc.0.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("VictoriaMetrics did not stop within 30 s of SIGTERM");
}

fn start_collector(tmp: &Path, addr: SocketAddr, vm: SocketAddr) -> Proc {
    common::spawn_collector(
        addr,
        &tmp.join("collector"),
        &tmp.join("collector.out"),
        &[
            "--forward".into(),
            format!("http://{vm}/api/v1/write"),
            // Checkpoints often, so the segments kept for the forwarder are exercised.
            "--checkpoint-interval".into(),
            "1s".into(),
        ],
        &[],
    )
}

/// One batch: `n` series, one sample each at `t`, valued by batch number.
fn batch(batch: u64, t: i64) -> (Vec<u8>, Vec<(String, i64)>) {
    let mut sent = Vec::new();
    let timeseries = (0..10)
        .map(|i| {
            sent.push((format!("s{i}"), t));
            TimeSeries {
                exemplars: Vec::new(),
                labels: vec![
                    Label { name: "__name__".into(), value: "forwarded".into() },
                    Label { name: "series".into(), value: format!("s{i}") },
                ],
                samples: vec![Sample { value: batch as f64, timestamp: t }],
            }
        })
        .collect();
    (hale_core::remote_write::encode(&WriteRequest { timeseries, metadata: Vec::new() }), sent)
}

/// Every (series, timestamp) VictoriaMetrics holds of `forwarded`.
async fn stored(client: &reqwest::Client, vm: SocketAddr) -> Option<BTreeSet<(String, i64)>> {
    let r = client
        .get(format!("http://{vm}/api/v1/export"))
        .query(&[("match[]", "forwarded"), ("start", "0")])
        .send()
        .await
        .ok()?;
    let text = r.text().await.ok()?;
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let series = v["metric"]["series"].as_str()?.to_string();
        for t in v["timestamps"].as_array()? {
            out.insert((series.clone(), t.as_i64()?));
        }
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_sample_reaches_victoriametrics_across_a_collector_kill_and_a_backend_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let vm_addr = free_addr();
    let mut vm = victoria(&tmp.path().join("vm"), vm_addr, &tmp.path().join("vm.out")).await;
    let addr = free_addr();
    let mut collector = start_collector(tmp.path(), addr, vm_addr);
    common::collector_ready(&mut collector, addr, &tmp.path().join("collector.out")).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let start =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64 - 600_000;
    let mut acknowledged: BTreeSet<(String, i64)> = BTreeSet::new();
    let send = async |n: u64| -> Option<Vec<(String, i64)>> {
        let (body, sent) = batch(n, start + n as i64 * 1000);
        let r = client
            .post(format!("http://{addr}/api/v1/write"))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body)
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(sent)
    };
    for n in 0..300u64 {
        match n {
            // The backend goes away while batches keep coming…
            100 => stop_gracefully(&mut vm),
            // …the collector is killed meanwhile and comes back on the same data dir…
            150 => {
                collector.kill_9();
                collector = start_collector(tmp.path(), addr, vm_addr);
                common::collector_ready(&mut collector, addr, &tmp.path().join("collector.out")).await;
            }
            // …and checkpoints fold the WAL (every second) while the backend is still away:
            // the segments it has not had must stay.
            200 => tokio::time::sleep(Duration::from_millis(2500)).await,
            250 => vm = victoria(&tmp.path().join("vm"), vm_addr, &tmp.path().join("vm.out")).await,
            _ => {}
        }
        if let Some(sent) = send(n).await {
            acknowledged.extend(sent);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(acknowledged.len() >= 2500, "most batches acknowledged: {}", acknowledged.len());
    let missing = common::eventually_or_dump(
        "every acknowledged sample in VictoriaMetrics",
        Duration::from_secs(90),
        async || {
            let have = stored(&client, vm_addr).await?;
            acknowledged.is_subset(&have).then_some(())
        },
        async || {
            let have = stored(&client, vm_addr).await.unwrap_or_default();
            let missing: Vec<_> = acknowledged.difference(&have).take(10).collect();
            format!(
                "{} of {} missing, e.g. {missing:?}\n{}",
                acknowledged.difference(&have).count(),
                acknowledged.len(),
                common::tail(&tmp.path().join("collector.out"), 30)
            )
        },
    )
    .await;
    let () = missing;
    // The collector says what it did: samples forwarded, retries while the backend was
    // away, nothing given up.
    let metrics = client.get(format!("http://{addr}/metrics")).send().await.expect("metrics");
    let text = metrics.text().await.expect("text");
    let value = |prefix: &str| -> f64 {
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(-1.0)
    };
    let endpoint = format!("{{endpoint=\"{vm_addr}\"");
    let endpoint = endpoint.replace(':', "_");
    assert!(value(&format!("hale_collector_forward_samples_total{endpoint}")) > 0.0, "{text}");
    assert_eq!(value(&format!("hale_collector_forward_dropped_bytes_total{endpoint}")), 0.0, "{text}");
}

/// A backend gone for good cannot fill the collector's disk: past `--forward-max-backlog`
/// the oldest unread WAL is given up, counted, and checkpoints fold it away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_gone_for_good_holds_back_no_more_than_the_backlog_bound() {
    let tmp = tempfile::tempdir().expect("tmp");
    let nowhere = free_addr(); // nothing listens there
    let addr = free_addr();
    let out = tmp.path().join("collector.out");
    let mut collector = common::spawn_collector(
        addr,
        &tmp.path().join("collector"),
        &out,
        &[
            "--forward".into(),
            format!("http://{nowhere}/api/v1/write"),
            "--forward-max-backlog".into(),
            "20000".into(),
            "--checkpoint-interval".into(),
            "200ms".into(),
        ],
        &[],
    );
    common::collector_ready(&mut collector, addr, &out).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let metric = async |name: &str| -> Option<f64> {
        let text = client.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()?;
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let mut n = 0u64;
    eventually("WAL given up past the backlog bound", Duration::from_secs(60), async || {
        // Batches keep coming; each checkpoint starts a segment.
        for _ in 0..20 {
            n += 1;
            let (body, _) = batch(n, now - 3_600_000 + n as i64 * 100);
            common::send_remote_write_to(&client, &format!("http://{addr}"), body).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        metric("hale_collector_forward_dropped_bytes_total").await.filter(|d| *d > 0.0)
    })
    .await;
    // The WAL does not grow without bound: what was given up is folded away.
    let wal_bytes = || -> u64 {
        std::fs::read_dir(tmp.path().join("collector").join("wal"))
            .expect("wal")
            .flatten()
            .filter_map(|e| e.metadata().ok().map(|m| m.len()))
            .sum()
    };
    eventually("the kept WAL back near the bound", Duration::from_secs(30), async || {
        tokio::time::sleep(Duration::from_millis(300)).await;
        (wal_bytes() < 200_000).then_some(())
    })
    .await;
    assert!(metric("hale_collector_forward_requests_failed_total").await.unwrap_or(0.0) > 0.0);
    let log = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(log.contains("too far behind"), "the give-up is said:\n{log}");
}

/// Whether VictoriaMetrics itself answers `q` with some series.
async fn vm_has(client: &reqwest::Client, base: &str, q: &str) -> bool {
    let Ok(r) = client.get(format!("{base}/api/v1/query")).query(&[("query", q)]).send().await else { return false };
    let text = r.text().await.unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let has = v["data"]["result"].as_array().is_some_and(|r| !r.is_empty());
    if !has {
        eprintln!("VictoriaMetrics answered {q}: {text}");
    }
    has
}

/// The demo on VictoriaMetrics (`hale up --backend`): the collector forwards everything to
/// it and evaluates its rules and SLOs, and answers queries, through its query API. The
/// loop works as on the local head: a hung replica is restarted by the healer and
/// verified; errors in orders page the checkout SLO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_on_victoriametrics_heals_and_pages_as_on_the_local_head() {
    use hale_core::api::{ActionKind, ActionList, ActionStatus, SloStatus};
    let tmp = tempfile::tempdir().expect("tmp");
    let vm_addr = free_addr();
    let _vm = victoria(&tmp.path().join("vm"), vm_addr, &tmp.path().join("vm.out")).await;
    let backend = format!("http://{vm_addr}");
    let cluster = common::up::Cluster::start(tmp.path(), 20, &["--backend".into(), backend.clone()]).await;
    let config = cluster.config();
    let (collector, healer) = (cluster.collector(), config.url(config.healer.listen));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    // The collector's query API answers from VictoriaMetrics: what it forwarded is there.
    let ready = "max_over_time(probe_success{probe=\"readyz\",instance=\"search-1\"}[1h])";
    eventually("search-1 seen ready through VictoriaMetrics", Duration::from_secs(60), async || {
        (common::query(&client, &collector, ready).await?.first()?.value.1 == "1").then_some(())
    })
    .await;
    common::eventually_or_dump(
        "the agents' series in VictoriaMetrics itself",
        Duration::from_secs(30),
        async || vm_has(&client, &backend, "count(up)").await.then_some(()),
        async || {
            format!(
                "{}\n{}",
                common::tail(&tmp.path().join("vm.out"), 20),
                common::tail(&cluster.data_dir.join("logs").join("collector.out"), 20)
            )
        },
    )
    .await;

    // A hung replica: alerted by rules evaluated through VictoriaMetrics, restarted by the
    // healer, verified.
    common::up::chaos(&cluster.data_dir, &["hang", "search-1", "--duration", "120s"]);
    let action = eventually("a verified restart of search-1", Duration::from_secs(90), async || {
        let r = client.get(format!("{healer}/api/v1/actions")).send().await.ok()?;
        let actions = r.json::<ActionList>().await.ok()?.actions;
        actions
            .into_iter()
            .find(|a| a.target.instance.as_deref() == Some("search-1") && a.status == ActionStatus::Succeeded)
    })
    .await;
    assert_eq!(action.kind, ActionKind::Restart);

    // Errors in orders: the checkout SLO, its recording rules evaluated through
    // VictoriaMetrics (their outputs forwarded back to it), pages.
    let slo = async || -> Option<SloStatus> {
        common::slos(&client, &collector)
            .await?
            .into_iter()
            .find(|s| s.slo == "checkout-availability")
            .map(|s| s.status)
    };
    eventually("checkout SLO measured", Duration::from_secs(90), async || {
        (slo().await? == SloStatus::Ok).then_some(())
    })
    .await;
    for replica in config.instances().into_iter().filter(|i| i.service == hale_core::ServiceKind::Orders) {
        let r = client
            .post(format!("{}/admin/chaos", replica.url()))
            .bearer_auth(&config.secrets.admin_token)
            .json(&serde_json::json!({"error_rate": 1.0, "duration_secs": 60}))
            .send()
            .await
            .expect("chaos");
        assert!(r.status().is_success(), "chaos on {}", replica.name);
    }
    eventually("the checkout SLO pages", Duration::from_secs(90), async || {
        (slo().await? == SloStatus::Page).then_some(())
    })
    .await;
    assert!(
        vm_has(&client, &backend, "slo:sli_error:ratio_rate5m").await,
        "the SLO rules' outputs reached VictoriaMetrics"
    );
}

/// Every timestamp of `query` (a range selector) the collector holds, per series `node`.
async fn collector_timestamps(client: &reqwest::Client, base: &str, query: &str) -> Option<BTreeSet<i64>> {
    let r = client.get(format!("{base}/api/v1/query")).query(&[("query", query)]).send().await.ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    let mut out = BTreeSet::new();
    for series in v["data"]["result"].as_array()? {
        for pair in series["values"].as_array()? {
            out.insert((pair[0].as_f64()? * 1000.0).round() as i64);
        }
    }
    Some(out)
}

/// The same, of VictoriaMetrics' raw samples.
async fn vm_timestamps(client: &reqwest::Client, vm: SocketAddr, selector: &str) -> Option<BTreeSet<i64>> {
    let r = client
        .get(format!("http://{vm}/api/v1/export"))
        .query(&[("match[]", selector), ("start", "0")])
        .send()
        .await
        .ok()?;
    let mut out = BTreeSet::new();
    for line in r.text().await.ok()?.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        out.extend(v["timestamps"].as_array()?.iter().filter_map(|t| t.as_i64()));
    }
    Some(out)
}

/// The whole path: an agent ships its host metrics to the collector, which forwards them;
/// the collector is killed with SIGKILL and VictoriaMetrics restarted meanwhile. Every
/// sample the collector holds (what it acknowledged to the agent) ends up in
/// VictoriaMetrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_samples_reach_victoriametrics_through_the_collector_across_crashes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let vm_addr = free_addr();
    let mut vm = victoria(&tmp.path().join("vm"), vm_addr, &tmp.path().join("vm.out")).await;
    let addr = free_addr();
    let out = tmp.path().join("collector.out");
    let mut collector = start_collector(tmp.path(), addr, vm_addr);
    common::collector_ready(&mut collector, addr, &out).await;
    let agent_out = std::fs::File::create(tmp.path().join("agent.out")).expect("out");
    // Host metrics twice a second.
    let config = common::file(
        tmp.path(),
        "agent.toml",
        &format!(
            "node = \"fwd-node\"\nlisten = \"{}\"\ndata_dir = \"{}\"\nremote_write = [\"http://{addr}/api/v1/write\"]\n\
             scrape_interval_ms = 500\n",
            free_addr(),
            tmp.path().join("agent").display()
        ),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hale"));
    cmd.args(["agent", "--config"]).arg(&config);
    let _agent = Proc(common::spawn_logged(&mut cmd, agent_out, "agent"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let base = format!("http://{addr}");
    let held = async || collector_timestamps(&client, &base, "node_load1{node=\"fwd-node\"}[1h]").await;
    eventually("the agent's samples at the collector", Duration::from_secs(30), async || {
        held().await.filter(|t| t.len() >= 3)
    })
    .await;
    stop_gracefully(&mut vm);
    tokio::time::sleep(Duration::from_secs(3)).await;
    collector.kill_9();
    collector = start_collector(tmp.path(), addr, vm_addr);
    common::collector_ready(&mut collector, addr, &out).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    vm = victoria(&tmp.path().join("vm"), vm_addr, &tmp.path().join("vm.out")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Stop the source, then everything the collector holds must be in VictoriaMetrics.
    drop(_agent);
    let stored = held().await.expect("the collector answers");
    assert!(stored.len() >= 8, "samples from before, during and after: {}", stored.len());
    common::eventually_or_dump(
        "every sample the collector holds in VictoriaMetrics",
        Duration::from_secs(60),
        async || {
            let have = vm_timestamps(&client, vm_addr, "node_load1{node=\"fwd-node\"}").await?;
            stored.is_subset(&have).then_some(())
        },
        async || {
            let have = vm_timestamps(&client, vm_addr, "node_load1{node=\"fwd-node\"}").await.unwrap_or_default();
            format!("missing {:?}\n{}", stored.difference(&have).collect::<Vec<_>>(), common::tail(&out, 20))
        },
    )
    .await;
    let _ = &mut vm;
}
