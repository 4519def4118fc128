//! The agent's scrape targets against the real Prometheus (Debian's 2.42): the same job —
//! static groups, a `file_sd` file, and relabelling rules with every action — loaded into
//! both, and the targets each ends with (their labels, which are dropped, their URL and
//! interval) compared.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::eventually;
use hale_agent::targets::{FileSd, FileSdConfig, ScrapeJob};
use hale_core::api::Targets;

/// The job, as TOML for the agent; the test writes the same as YAML for Prometheus.
fn job(file_sd: &str) -> ScrapeJob {
    let toml = format!(
        r#"job_name = "foreign"
scrape_interval = "30s"
scrape_timeout = "10s"
metrics_path = "/stats"
static_configs = [
  {{ targets = ["127.0.0.1:9", "127.0.0.2:10", "127.0.0.3:11"], labels = {{ env = "prod", team = "Core", meta_zone = "a", want = "10", dup = "x" }} }},
  {{ targets = ["127.0.0.4:12"], labels = {{ env = "dev", team = "Edge" }} }},
]
file_sd_configs = [{{ files = ["{file_sd}"] }}]
relabel_configs = [
  {{ source_labels = ["__address__"], regex = "([^:]+):(\\d+)", target_label = "host", replacement = "$1" }},
  {{ source_labels = ["__address__"], regex = "[^:]+:(\\d+)", target_label = "port" }},
  {{ source_labels = ["env"], regex = "(.+)", target_label = "env_${{1}}", replacement = "yes" }},
  {{ source_labels = ["team"], target_label = "team_lc", action = "lowercase" }},
  {{ source_labels = ["team"], target_label = "team_uc", action = "uppercase" }},
  {{ source_labels = ["__address__"], modulus = 7, target_label = "shard", action = "hashmod" }},
  {{ regex = "meta_(.+)", replacement = "m_$1", action = "labelmap" }},
  {{ source_labels = ["env"], regex = "prod|stage", action = "keep" }},
  {{ source_labels = ["__address__"], regex = "127\\.0\\.0\\.1:9", action = "drop" }},
  {{ source_labels = ["__meta_filepath"], regex = ".*/(.*)\\.json", target_label = "sd_file" }},
  {{ source_labels = ["env", "team"], separator = "-", target_label = "env_team" }},
  {{ source_labels = ["dup"], target_label = "env", action = "dropequal" }},
  {{ source_labels = ["want"], target_label = "port", action = "keepequal" }},
  {{ regex = "dup|want|meta_zone", action = "labeldrop" }},
  {{ regex = "__.*|job|instance|host|port|env.*|team.*|shard|m_.*|sd_file", action = "labelkeep" }},
  {{ source_labels = ["port"], regex = "1([1-9])", target_label = "__scrape_interval__", replacement = "${{1}}m" }},
]
"#
    );
    toml::from_str(&toml).expect("the job parses")
}

/// The job as Prometheus's YAML: the same fields, written by the agent's own types.
fn prometheus_yaml(job: &ScrapeJob) -> String {
    let mut value = serde_norway::to_value(job).expect("yaml");
    let map = value.as_mapping_mut().expect("a mapping");
    // Hale's limits are 0 for "none"; Prometheus spells body_size_limit with a unit.
    for hale_only in ["sample_limit", "body_size_limit", "metric_relabel_configs", "honor_labels"] {
        map.remove(hale_only);
    }
    let mut config = serde_norway::Mapping::new();
    config.insert("scrape_configs".into(), serde_norway::Value::Sequence(vec![value]));
    serde_norway::to_string(&config).expect("yaml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_and_their_labels_are_what_prometheus_makes_of_the_same_job() {
    let tmp = tempfile::tempdir().expect("tmp");
    let sd_dir = tmp.path().join("sd");
    std::fs::create_dir_all(&sd_dir).expect("dir");
    std::fs::write(
        sd_dir.join("teams.json"),
        r#"[{"targets": ["127.0.0.5:13"], "labels": {"env": "stage", "team": "Ops", "want": "13", "dup": "x"}},
            {"targets": ["127.0.0.6:14"], "labels": {"env": "stage", "team": "Ops", "want": "14", "dup": "stage"}},
            {"targets": ["127.0.0.7:15"], "labels": {"env": "stage", "team": "Ops", "want": "99", "dup": "x"}}]"#,
    )
    .expect("file_sd");
    let job = job(&sd_dir.join("*.json").display().to_string());

    // The agent's targets.
    let compiled = job.compile(Duration::from_secs(10), Duration::from_secs(2)).expect("valid");
    let mut sd = FileSd::default();
    let configs: Vec<FileSdConfig> = job.file_sd_configs.clone();
    sd.refresh(&configs);
    let ours: BTreeSet<(String, String, BTreeMap<String, String>)> = compiled
        .targets(&sd.groups(&configs), &[], "node-t")
        .into_iter()
        .map(|t| {
            let mut labels = t.labels;
            // Hale's own labels, which Prometheus does not add.
            labels.remove("service");
            labels.remove("node");
            (t.url, humantime::format_duration(t.interval).to_string(), labels)
        })
        .collect();

    // Prometheus's, from the same job.
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_yaml(&job)).expect("config");
    let check = std::process::Command::new(common::need("promtool"))
        .args(["check", "config"])
        .arg(&config)
        .output()
        .expect("promtool");
    assert!(
        check.status.success(),
        "promtool refuses the job: {}{}\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr),
        prometheus_yaml(&job)
    );
    let (_prometheus, addr) = common::prometheus_with(&config, &tmp.path().join("tsdb")).await;
    let url = format!("http://{addr}/api/v1/targets");
    let theirs = eventually("Prometheus lists the job's targets", Duration::from_secs(30), async || {
        let targets: Targets = common::get_data(&reqwest::Client::new(), &url, &[("state", "any")]).await?;
        let active: BTreeSet<(String, String, BTreeMap<String, String>)> = targets
            .active_targets
            .into_iter()
            .map(|t| (t.scrape_url, t.scrape_interval, t.labels.into_iter().collect()))
            .collect();
        // Every address is either a target or dropped once discovery has run.
        (active.len() + targets.dropped_targets.len() == 7).then_some(active)
    })
    .await;
    assert!(!ours.is_empty());
    assert_eq!(ours, theirs, "the agent's targets (left) and Prometheus's (right)");
}
