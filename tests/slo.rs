//! End to end: `hale slo check` and `hale slo export` on files; the exported rules pass the
//! real promtool; and a real Prometheus 2.42 loaded with them, fed the same error streams
//! as the collector, fires the same SLO alerts the collector fires.

mod common;

use common::{eventually, free_addr, need};

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use hale_core::api::SloStatus;
use hale_core::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};

fn hale(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hale")).args(args).output().expect("hale")
}

const DEFAULT_SLOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/slo.yaml");

#[test]
fn check_and_export_pass_promtool() {
    let ok = hale(&["slo", "check", DEFAULT_SLOS]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK, 4 services, 4 SLOs"));
    let dir = tempfile::tempdir().expect("tempdir");
    for (scale, min) in [("1", "0"), ("0.01", "5")] {
        let out = hale(&[
            "slo",
            "export",
            "--format",
            "prometheus",
            "--time-scale",
            scale,
            "--min-events",
            min,
            DEFAULT_SLOS,
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let file = dir.path().join(format!("rules-{scale}.yml"));
        std::fs::write(&file, &out.stdout).expect("write");
        let promtool = Command::new(need("promtool")).args(["check", "rules"]).arg(&file).output().expect("promtool");
        assert!(
            promtool.status.success(),
            "{}{}",
            String::from_utf8_lossy(&promtool.stdout),
            String::from_utf8_lossy(&promtool.stderr)
        );
        let said =
            format!("{}{}", String::from_utf8_lossy(&promtool.stdout), String::from_utf8_lossy(&promtool.stderr));
        assert!(said.contains("SUCCESS: 96 rules found"), "{said}");
        // One file for the three services' documents, and no rule twice (promtool's lint).
        assert!(!said.to_lowercase().contains("duplicate"), "{said}");
    }
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(DEFAULT_SLOS).expect("read").replacen("objective: 99.9", "objective: 199.9", 1);
    std::fs::write(&bad, text).expect("write");
    let out = hale(&["slo", "check", bad.to_str().expect("path")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:14: ", bad.display())) && err.contains("objective"), "{err}");
    let out = hale(&["slo", "export", "--format", "sloth", DEFAULT_SLOS]);
    assert!(!out.status.success());
}

/// A spec can be valid Sloth and still become rules the collector refuses (a broken
/// template in an alert label): `hale slo check` says so at the spec's document.
#[test]
fn check_refuses_a_spec_whose_generated_rules_do_not_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad-template.yaml");
    let text = std::fs::read_to_string(DEFAULT_SLOS).expect("read").replacen(
        "category: availability",
        "category: \"{{ $labels.x\"",
        1,
    );
    std::fs::write(&bad, text).expect("write");
    let out = hale(&["slo", "check", bad.to_str().expect("path")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:1: ", bad.display())) && err.contains("generated rules do not load"), "{err}");
}

/// A service's request stream: requests per second and the error fraction at time `t`
/// (seconds relative to the moment the history ends).
struct Stream {
    service: &'static str,
    rps: f64,
    errors: fn(i64) -> f64,
}

const STREAMS: [Stream; 7] = [
    Stream { service: "page-fast", rps: 10.0, errors: |t| if t > -40 { 0.1 } else { 0.0 } },
    Stream { service: "page-slow", rps: 10.0, errors: |t| if t > -250 { 0.04 } else { 0.0 } },
    Stream { service: "ticket-fast", rps: 10.0, errors: |t| if t > -900 { 0.02 } else { 0.0 } },
    Stream { service: "ticket-slow", rps: 10.0, errors: |_| 0.008 },
    Stream { service: "dedup", rps: 10.0, errors: |_| 0.1 },
    // Too few events in the page windows: pages neither here nor in Prometheus.
    Stream { service: "quiet", rps: 0.2, errors: |t| if (-10..=0).contains(&t) { 1.0 } else { 0.0 } },
    Stream { service: "healthy", rps: 10.0, errors: |_| 0.0 },
];

const HISTORY_S: i64 = 2_700;

fn spec_text() -> String {
    STREAMS
        .iter()
        .map(|s| {
            let service = s.service;
            format!(
                "version: \"prometheus/v1\"\nservice: \"{service}\"\nslos:\n  - name: \"availability\"\n    objective: 99.5\n    sli:\n      events:\n        error_query: sum(rate(requests_total{{service=\"{service}\",code=\"500\"}}[{{{{.window}}}}])) or on() vector(0)\n        total_query: sum(rate(requests_total{{service=\"{service}\"}}[{{{{.window}}}}]))\n    alerting:\n      name: Availability\n      page_alert:\n        labels:\n          severity: page\n      ticket_alert:\n        labels:\n          severity: ticket\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The two counters of every stream from second `from` to `to` (relative), as one write.
fn write_request(totals: &mut [(f64, f64)], base_ms: i64, from: i64, to: i64) -> Vec<u8> {
    let mut timeseries = Vec::new();
    for (i, s) in STREAMS.iter().enumerate() {
        let (mut ok_points, mut bad_points) = (Vec::new(), Vec::new());
        for t in from..=to {
            let f = (s.errors)(t);
            totals[i].0 += s.rps * (1.0 - f);
            totals[i].1 += s.rps * f;
            let timestamp = base_ms + t * 1000;
            ok_points.push(Sample { value: totals[i].0, timestamp });
            bad_points.push(Sample { value: totals[i].1, timestamp });
        }
        let labels = |code: &str| {
            vec![
                Label { name: "__name__".into(), value: "requests_total".into() },
                Label { name: "code".into(), value: code.into() },
                Label { name: "service".into(), value: s.service.into() },
            ]
        };
        timeseries.push(TimeSeries::new(labels("200"), ok_points));
        timeseries.push(TimeSeries::new(labels("500"), bad_points));
    }
    remote_write::encode(&WriteRequest::of(timeseries))
}

/// Firing SLO alerts as (service, tier).
async fn firing(client: &reqwest::Client, addr: SocketAddr) -> Option<BTreeSet<(String, String)>> {
    let result = common::query(client, &format!("http://{addr}"), "ALERTS{alertstate=\"firing\"}").await?;
    let label = |m: &hale_core::api::Labels, name: &str| m.get(name).cloned().unwrap_or_default();
    Some(result.iter().map(|r| (label(&r.metric, "sloth_service"), label(&r.metric, "sloth_severity"))).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_with_the_export_fires_what_the_collector_fires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("slo.yaml");
    std::fs::write(&spec, spec_text()).expect("spec");
    let export = hale(&["slo", "export", "--time-scale", "0.01", "--min-events", "5", spec.to_str().expect("path")]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    std::fs::write(dir.path().join("rules.yml"), &export.stdout).expect("rules");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n",
    )
    .expect("config");

    let prom_addr = free_addr();
    let _prometheus = common::spawn_prometheus(dir.path(), prom_addr);
    let hale_addr = free_addr();
    let out = dir.path().join("collector.out");
    let args: Vec<String> = [
        "--slo",
        spec.to_str().expect("path"),
        "--slo-time-scale",
        "0.01",
        "--slo-min-events",
        "5",
        "--evaluation-interval",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut collector = common::spawn_collector(hale_addr, &dir.path().join("collector"), &out, &args, &[]);
    common::collector_ready(&mut collector, hale_addr, &out).await;
    let client = reqwest::Client::new();
    common::wait_ready("prometheus", prom_addr).await;

    // 45 minutes of history, ending now, to both; then a sample a second, live.
    let base_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let mut totals = vec![(0.0, 0.0); STREAMS.len()];
    let history = write_request(&mut totals, base_ms, -HISTORY_S, 0);
    common::send_remote_write(&client, prom_addr, history.clone()).await;
    common::send_remote_write(&client, hale_addr, history).await;
    let feeder = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut next = 1;
            loop {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis()
                    as i64;
                let upto = (now - base_ms) / 1000;
                if upto >= next {
                    let body = write_request(&mut totals, base_ms, next, upto);
                    common::send_remote_write(&client, prom_addr, body.clone()).await;
                    common::send_remote_write(&client, hale_addr, body).await;
                    next = upto + 1;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let expected: BTreeSet<(String, String)> = [
        ("dedup", "page"),
        ("page-fast", "page"),
        ("page-slow", "page"),
        ("ticket-fast", "ticket"),
        ("ticket-slow", "ticket"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    // Both reach the hand-computed set, and then agree on three polls in a row.
    let mut agreed = 0;
    let mut last = (None, None);
    eventually("Prometheus and the collector agree", Duration::from_secs(40), async || {
        let (p, h) = (firing(&client, prom_addr).await, firing(&client, hale_addr).await);
        agreed = if p.as_ref() == Some(&expected) && h.as_ref() == Some(&expected) { agreed + 1 } else { 0 };
        last = (p, h);
        (agreed >= 3).then_some(())
    })
    .await;
    println!("both fire: {:?}", last.0);
    feeder.abort();

    // The collector's own view of the same SLOs.
    let slos = common::slos(&client, &format!("http://{hale_addr}")).await.expect("slos");
    let status = |service: &str| slos.iter().find(|s| s.service == service).map(|s| s.status);
    assert_eq!(status("dedup"), Some(SloStatus::Page));
    assert_eq!(status("ticket-slow"), Some(SloStatus::Ticket));
    assert_eq!(status("quiet"), Some(SloStatus::InsufficientData));
    assert_eq!(status("healthy"), Some(SloStatus::Ok));
    let metrics =
        client.get(format!("http://{hale_addr}/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("hale_slo_objective_ratio{slo=\"availability\",service=\"healthy\"} 0.995"), "{metrics}");
    assert!(metrics.contains("hale_slo_error_budget_remaining_ratio{slo=\"availability\",service=\"healthy\"} 1"));
    assert!(metrics.contains("hale_slo_burn_rate{slo=\"availability\",service=\"dedup\",window=\"5m\"}"));
    assert!(metrics.contains("hale_slo_status{slo=\"availability\",service=\"quiet\",status=\"insufficient_data\"} 1"));
}
