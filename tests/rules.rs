//! End to end: `hale collector --rules` evaluates a rule file on live data and serves
//! `/api/v1/rules` and `/api/v1/alerts`; `hale rules check` and promtool agree on files.

mod common;

use common::{Proc, eventually, free_addr, need};

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

const RULES: &str = r#"groups:
  - name: test
    interval: 200ms
    rules:
      - record: instance:test_up:doubled
        expr: test_up * 2
        labels:
          team: shop
      - alert: TestDown
        expr: test_up == 0
        for: 1s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.instance }} is down ({{ $value }})"
"#;

fn spawn_collector(addr: SocketAddr, data: &Path, rules: &Path, out: &Path) -> Proc {
    common::spawn_collector(addr, data, out, &["--rules".to_string(), rules.display().to_string()], &[])
}

async fn get(url: String) -> (u16, Value) {
    let r = reqwest::get(url).await.expect("get");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

async fn push(addr: SocketAddr, instance: &str, value: f64) {
    common::push_gauge(addr, "test_up", &[("instance", instance)], value).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_evaluate_on_live_data_and_the_api_shows_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).expect("write rules");
    let addr = free_addr();
    let out = dir.path().join("collector.out");
    let mut proc = spawn_collector(addr, &dir.path().join("data"), &rules, &out);
    common::collector_ready(&mut proc, addr, &out).await;

    push(addr, "a", 0.0).await;
    push(addr, "b", 1.0).await;
    // Pending first, firing after `for: 1s`.
    let pending = eventually("pending alert", Duration::from_secs(10), async || {
        let (_, body) = get(format!("http://{addr}/api/v1/alerts")).await;
        body["data"]["alerts"].as_array().and_then(|a| a.first().cloned()).filter(|a| a["state"] == "pending")
    })
    .await;
    assert_eq!(pending["labels"]["alertname"], "TestDown");
    assert_eq!(pending["labels"]["instance"], "a");
    assert_eq!(pending["labels"]["severity"], "page");
    assert_eq!(pending["annotations"]["summary"], "a is down (0)");
    assert_eq!(pending["value"], "0e+00");
    let firing = eventually("firing alert", Duration::from_secs(10), async || {
        let (_, body) = get(format!("http://{addr}/api/v1/alerts")).await;
        body["data"]["alerts"].as_array().and_then(|a| a.first().cloned()).filter(|a| a["state"] == "firing")
    })
    .await;
    assert_eq!(firing["activeAt"], pending["activeAt"], "active since it was first returned");
    let (_, body) = get(format!("http://{addr}/api/v1/alerts")).await;
    assert_eq!(body["data"]["groupBy"], serde_json::json!(["alertname"]), "how notifications group them");

    let (status, body) = get(format!("http://{addr}/api/v1/rules")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "success");
    let group = &body["data"]["groups"][0];
    assert_eq!(group["name"], "test");
    assert_eq!(group["interval"], 0.2);
    assert_eq!(group["file"], rules.display().to_string());
    let (record, alert) = (&group["rules"][0], &group["rules"][1]);
    assert_eq!(record["type"], "recording");
    assert_eq!(record["name"], "instance:test_up:doubled");
    assert_eq!(record["health"], "ok");
    assert_eq!(alert["type"], "alerting");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["duration"], 1.0);
    assert_eq!(alert["alerts"].as_array().map(Vec::len), Some(1));
    assert_eq!(alert["annotations"]["summary"], "{{ $labels.instance }} is down ({{ $value }})");
    let (_, only_alerts) = get(format!("http://{addr}/api/v1/rules?type=alert")).await;
    assert_eq!(only_alerts["data"]["groups"][0]["rules"].as_array().map(Vec::len), Some(1));
    let (status, bad) = get(format!("http://{addr}/api/v1/rules?type=bogus")).await;
    assert_eq!((status, bad["errorType"].as_str()), (400, Some("bad_data")));

    // What the rules wrote is queryable like any series.
    let (_, q) = get(format!("http://{addr}/api/v1/query?query=instance:test_up:doubled%7Binstance=%22b%22%7D")).await;
    assert_eq!(q["data"]["result"][0]["value"][1], "2");
    assert_eq!(q["data"]["result"][0]["metric"]["team"], "shop");
    let (_, q) = get(format!("http://{addr}/api/v1/query?query=ALERTS%7Balertstate=%22firing%22%7D")).await;
    assert_eq!(q["data"]["result"][0]["metric"]["alertname"], "TestDown");
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("hale_collector_alerts{state=\"firing\"} 1"), "{metrics}");
    assert!(metrics.contains("hale_collector_rule_group_rules_failing{group=\"test\""), "{metrics}");

    // Recovery resolves it: no longer listed.
    push(addr, "a", 1.0).await;
    eventually("alert resolved", Duration::from_secs(10), async || {
        let (_, body) = get(format!("http://{addr}/api/v1/alerts")).await;
        body["data"]["alerts"].as_array().filter(|a| a.is_empty()).map(|_| ())
    })
    .await;
}

#[test]
fn a_broken_rule_file_stops_the_collector_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES.replace("for: 1s", "for: soon")).expect("write");
    let out = dir.path().join("collector.out");
    let mut proc = spawn_collector(free_addr(), &dir.path().join("data"), &rules, &out);
    let status = proc.0.wait().expect("wait");
    assert!(!status.success());
    let log = std::fs::read_to_string(&out).expect("log");
    assert!(
        log.contains("line 11") && log.matches("not a duration").count() == 1 && log.contains("hale rules check"),
        "{log}"
    );
}

#[test]
fn the_default_rules_pass_hale_rules_check_and_promtool() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules.yml");
    let ours = Command::new(env!("CARGO_BIN_EXE_hale")).args(["rules", "check", file]).output().expect("hale");
    assert!(ours.status.success(), "{}", String::from_utf8_lossy(&ours.stderr));
    assert!(String::from_utf8_lossy(&ours.stdout).contains("OK"));
    let theirs = Command::new(need("promtool")).args(["check", "rules", file]).output().expect("promtool");
    assert!(theirs.status.success(), "{}", String::from_utf8_lossy(&theirs.stdout));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "groups:\n  - name: a\n    rules:\n      - alert: X\n        expr: up ==\n").expect("write");
    let out =
        Command::new(env!("CARGO_BIN_EXE_hale")).args(["rules", "check"]).arg(&bad).arg(file).output().expect("hale");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:5: ", bad.display())) && err.contains("not valid PromQL"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("rules.yml: OK"), "the good file is still checked");
}
