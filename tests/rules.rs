//! End to end: `hale collector --rules` evaluates a rule file on live data and serves
//! `/api/v1/rules` and `/api/v1/alerts`; `hale rules check` and promtool agree on files.

mod common;

use common::{Proc, eventually, free_addr, need};

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hale_core::api::{ActiveAlert, AlertState, AlertsData, Envelope, RuleHealth, RuleKind, RulesData, Status};

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
      - alert: TestStillDown
        expr: test_up == 0
        for: 1h
        labels:
          severity: ticket
        annotations:
          summary: "{{ $labels.instance }} has been down an hour"
"#;

fn spawn_collector(addr: SocketAddr, data: &Path, rules: &Path, out: &Path) -> Proc {
    common::spawn_collector(addr, data, out, &["--rules".to_string(), rules.display().to_string()], &[])
}

/// The status and body of a GET of `/api/v1/rules`, read as core's `RulesData` (whose
/// serde names are Prometheus's: `type`, `health`, `duration`, …).
async fn get(url: String) -> (u16, Envelope<RulesData>) {
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
    let (_proc, addr) = common::collector_with_rules(dir.path(), RULES, &[]).await;

    push(addr, "a", 0.0).await;
    push(addr, "b", 1.0).await;
    // The alert with an hour's `for` stays pending: that state as the API shows it,
    // observed without racing a short window.
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let alert = async |name: &str, state: AlertState| -> Option<ActiveAlert> {
        let alerts = common::alerts(&client, &base).await?;
        alerts.into_iter().find(|a| a.labels.get("alertname").is_some_and(|n| n == name) && a.state == state)
    };
    let label = |a: &ActiveAlert, name: &str| a.labels.get(name).cloned().unwrap_or_default();
    let summary = |a: &ActiveAlert| a.annotations.get("summary").cloned().unwrap_or_default();
    let pending = eventually("pending alert", Duration::from_secs(10), async || {
        alert("TestStillDown", AlertState::Pending).await
    })
    .await;
    assert_eq!(label(&pending, "instance"), "a");
    assert_eq!(label(&pending, "severity"), "ticket");
    assert_eq!(summary(&pending), "a has been down an hour");
    assert_eq!(pending.value, "0e+00");
    let firing =
        eventually("firing alert", Duration::from_secs(10), async || alert("TestDown", AlertState::Firing).await).await;
    assert_eq!(label(&firing, "instance"), "a");
    assert_eq!(label(&firing, "severity"), "page");
    assert_eq!(summary(&firing), "a is down (0)");
    assert_eq!(firing.value, "0e+00");
    // TestDown was pending first and fired once `for: 1s` had passed, active all along
    // since its first pending evaluation: what the evaluations recorded says so.
    let history = async |selector: &str| -> Vec<(String, Vec<(f64, f64)>)> {
        let series = common::query_matrix(&client, &base, selector).await.expect("a matrix");
        series
            .into_iter()
            .map(|s| {
                let points = s.values.iter().map(|p| (p.0, p.value().expect("number")));
                (s.metric.get("alertstate").cloned().unwrap_or_default(), points.collect())
            })
            .collect()
    };
    let states = history("ALERTS{alertname=\"TestDown\"}[5m]").await;
    let times = |state: &str| -> Vec<f64> {
        states.iter().filter(|(s, _)| s == state).flat_map(|(_, points)| points.iter().map(|p| p.0)).collect()
    };
    let (was_pending, has_fired) = (times("pending"), times("firing"));
    assert!(!was_pending.is_empty() && !has_fired.is_empty(), "{states:?}");
    let first_pending = was_pending.iter().copied().fold(f64::INFINITY, f64::min);
    let first_firing = has_fired.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(was_pending.iter().all(|t| *t < first_firing), "pending only before firing: {states:?}");
    assert!(first_firing - first_pending >= 0.999, "fired after `for: 1s`: {states:?}");
    let active_since = history("ALERTS_FOR_STATE{alertname=\"TestDown\"}[5m]").await;
    assert_eq!(active_since.len(), 1, "{active_since:?}");
    assert!(
        active_since[0].1.iter().all(|(_, v)| (v - first_pending).abs() < 1e-6),
        "active since it was first pending: {active_since:?}"
    );
    let data: AlertsData = common::get_data(&client, &format!("{base}/api/v1/alerts"), &[]).await.expect("alerts");
    assert_eq!(data.group_by, ["alertname"], "how notifications group them");

    let (status, body) = get(format!("http://{addr}/api/v1/rules")).await;
    assert_eq!(status, 200);
    assert_eq!(body.status, Status::Success);
    let groups = body.into_data().expect("rules").groups;
    let group = &groups[0];
    assert_eq!(group.name, "test");
    assert_eq!(group.interval, 0.2);
    assert_eq!(group.file, dir.path().join("rules.yml").display().to_string());
    let (record, alert) = (&group.rules[0], &group.rules[1]);
    assert_eq!(record.kind, RuleKind::Recording);
    assert_eq!(record.name, "instance:test_up:doubled");
    assert_eq!(record.health, RuleHealth::Ok);
    let RuleKind::Alerting(alerting) = &alert.kind else { panic!("not an alerting rule: {alert:?}") };
    assert_eq!(alerting.state, AlertState::Firing);
    assert_eq!(alerting.duration, 1.0);
    assert_eq!(alerting.alerts.len(), 1);
    assert_eq!(
        alerting.annotations.get("summary").map(String::as_str),
        Some("{{ $labels.instance }} is down ({{ $value }})")
    );
    let slow = &group.rules[2];
    let RuleKind::Alerting(slow_alerting) = &slow.kind else { panic!("not an alerting rule: {slow:?}") };
    assert_eq!((slow.name.as_str(), slow_alerting.state), ("TestStillDown", AlertState::Pending));
    assert_eq!(slow_alerting.duration, 3600.0);
    let (_, only_alerts) = get(format!("http://{addr}/api/v1/rules?type=alert")).await;
    assert_eq!(only_alerts.into_data().expect("rules").groups[0].rules.len(), 2);
    let (status, bad) = get(format!("http://{addr}/api/v1/rules?type=bogus")).await;
    assert_eq!((status, bad.error_type.as_deref()), (400, Some("bad_data")));

    // What the rules wrote is queryable like any series.
    let q = common::query(&client, &base, "instance:test_up:doubled{instance=\"b\"}").await.expect("query");
    assert_eq!(q[0].value.1, "2");
    assert_eq!(q[0].metric.get("team").map(String::as_str), Some("shop"));
    let q = common::query(&client, &base, "ALERTS{alertstate=\"firing\"}").await.expect("query");
    assert_eq!(q[0].metric.get("alertname").map(String::as_str), Some("TestDown"));
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("hale_collector_alerts{state=\"firing\"} 1"), "{metrics}");
    assert!(metrics.contains("hale_collector_alerts{state=\"pending\"} 1"), "{metrics}");
    assert!(metrics.contains("hale_collector_rule_group_rules_failing{group=\"test\""), "{metrics}");

    // Recovery resolves it: no longer listed.
    push(addr, "a", 1.0).await;
    eventually("alert resolved", Duration::from_secs(10), async || {
        common::alerts(&client, &base).await?.is_empty().then_some(())
    })
    .await;
}

#[test]
fn a_broken_rule_file_stops_the_collector_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = common::file(dir.path(), "rules.yml", &RULES.replace("for: 1s", "for: soon"));
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
