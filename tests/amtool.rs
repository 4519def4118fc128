//! The real `amtool` (Debian's, Alertmanager 0.25) against the collector's Alertmanager v2
//! API: it lists the firing alerts, adds a silence with the admin token (read from an
//! http_config credentials file, as an operator would give it), sees the alert silenced,
//! lists and expires the silence, and is refused without the token.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{eventually, need};
use serde_json::Value;

const ADMIN: &str = "amtool-test-admin-token";

const RULES: &str = "groups:
  - name: always
    interval: 1s
    rules:
      - alert: AlwaysFiring
        expr: vector(1)
        labels:
          severity: ticket
        annotations:
          summary: fires from the first evaluation
";

/// `amtool <args> --alertmanager.url=<url>`: (success, stdout, stderr).
fn amtool(url: &str, args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(need("amtool")).arg(format!("--alertmanager.url={url}")).args(args).output().expect("amtool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn alert_names(json: &str) -> Vec<String> {
    let alerts: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("amtool -o json: {e}: {json}"));
    alerts
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
        .collect()
}

fn http_config(dir: &Path, token: &str) -> String {
    let token_file = dir.join(format!("token-{}", token.len()));
    std::fs::write(&token_file, token).expect("token");
    let config = dir.join(format!("http-{}.yml", token.len()));
    std::fs::write(&config, format!("authorization:\n  type: Bearer\n  credentials_file: {}\n", token_file.display()))
        .expect("http config");
    format!("--http.config.file={}", config.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amtool_queries_alerts_and_manages_silences_on_the_collector() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_collector, addr) = common::collector_with_rules(dir.path(), RULES, &[("HALE_ADMIN_TOKEN", ADMIN)]).await;
    let url = format!("http://{addr}");
    let with_token = http_config(dir.path(), ADMIN);
    let wrong_token = http_config(dir.path(), "not-the-admin-token");

    eventually("amtool sees the firing alert", Duration::from_secs(20), async || {
        let (ok, stdout, _) = amtool(&url, &["alert", "query", "-o", "json"]);
        (ok && alert_names(&stdout) == ["AlwaysFiring"]).then_some(())
    })
    .await;
    let (ok, config, err) = amtool(&url, &["config", "show"]);
    assert!(ok && config.contains("receiver: hale"), "{config}{err}");

    // Silences need the admin token.
    let add = ["silence", "add", "alertname=AlwaysFiring", "--comment=maintenance", "--duration=1h", "--author=test"];
    let (ok, _, err) = amtool(&url, &[&add[..], &[wrong_token.as_str()]].concat());
    assert!(!ok, "a wrong token must not add a silence: {err}");
    let (ok, id, err) = amtool(&url, &[&add[..], &[with_token.as_str()]].concat());
    assert!(ok, "silence add: {err}");
    let id = id.trim().to_string();
    assert!(!id.is_empty(), "amtool prints the new silence's id");

    // The alert is silenced now: gone from the active list, shown with --silenced.
    let (ok, stdout, err) = amtool(&url, &["alert", "query", "-o", "json"]);
    assert!(ok && alert_names(&stdout).is_empty(), "{stdout}{err}");
    let (ok, stdout, err) = amtool(&url, &["alert", "query", "--silenced", "-o", "json"]);
    assert!(ok, "{err}");
    let silenced: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(silenced[0]["status"]["silencedBy"][0], id.as_str(), "{stdout}");
    assert_eq!(silenced[0]["status"]["state"], "suppressed");
    let (ok, stdout, err) = amtool(&url, &["silence", "query", "-o", "json"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["comment"], "maintenance");

    // Expired: no active silence, the alert active again.
    let (ok, _, err) = amtool(&url, &["silence", "expire", &id, &with_token]);
    assert!(ok, "silence expire: {err}");
    let (ok, stdout, err) = amtool(&url, &["silence", "query", "-o", "json"]);
    assert!(ok && stdout.trim() == "[]", "only active silences are listed by default: {stdout}{err}");
    let (ok, stdout, _) = amtool(&url, &["alert", "query", "-o", "json"]);
    assert!(ok && alert_names(&stdout) == ["AlwaysFiring"], "{stdout}");
}
