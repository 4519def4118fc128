//! A real Prometheus (Debian's 2.42) watches `hale up` through the files `hale up` writes
//! in `<data-dir>/prometheus/`: promtool accepts them, every agent, the collector, the
//! healer and every shop replica is a healthy target, a replica started later appears
//! and one stopped leaves, and a hung replica raises the same `ReplicaDown` in Prometheus
//! as in the collector.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::up::{Cluster, chaos};
use common::{eventually, need};
use hale_core::api::{AlertState, AlertsData, StartProcess, Targets};

/// No policy matches a replica's alerts: the hung replica stays hung for Prometheus to see.
const HANDS_OFF: &str =
    "policies:\n  - name: nothing-to-do\n    match: { alertname: NoSuchAlert }\n    action: restart\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_watches_hale_up_with_the_files_it_writes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let policies = tmp.path().join("policies.yaml");
    std::fs::write(&policies, HANDS_OFF).expect("policies");
    let cluster = Cluster::start(tmp.path(), 0, &["--policies".into(), policies.display().to_string()]).await;
    let files = cluster.data_dir.join("prometheus");
    let config = files.join("prometheus.yml");
    let check = Command::new(need("promtool")).args(["check", "config"]).arg(&config).output().expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "{said}");
    assert!(said.contains("rules.yml") && said.contains("slo-rules.yml"), "the rule files are checked too: {said}");

    let (_prometheus, prom) = common::prometheus_with(&config, &tmp.path().join("tsdb")).await;
    let client = reqwest::Client::new();
    let targets =
        async || -> Option<Targets> { common::get_data(&client, &format!("http://{prom}/api/v1/targets"), &[]).await };
    let effective = cluster.config();
    let expected = effective.nodes.len() + 2 + effective.instances().len();
    eventually("every part of the cluster scraped and up", Duration::from_secs(60), async || {
        let t = targets().await?;
        let up = t.active_targets.iter().filter(|t| t.health == "up").count();
        (t.active_targets.len() == expected && up == expected).then_some(())
    })
    .await;
    let jobs: BTreeSet<String> =
        targets().await.expect("targets").active_targets.into_iter().map(|t| t.scrape_pool).collect();
    assert_eq!(jobs, BTreeSet::from(["hale-collector", "hale-healer", "node", "shop"].map(String::from)));

    // A replica started later (as the healer's scale-out does) becomes a target; stopped, it leaves.
    let node = &effective.nodes[0];
    let agent = hale_client::Agent::new(&format!("http://{}", effective.agent_listen(node)))
        .expect("agent client")
        .with_token(&effective.secrets.agent_token);
    let started = agent
        .start(&StartProcess { service: "search".into(), name: Some("search-extra".into()) })
        .await
        .expect("start a replica");
    let name = started.process.map(|p| p.name).unwrap_or_else(|| "search-extra".into());
    let has = async |name: &str| {
        targets().await.is_some_and(|t| {
            t.active_targets.iter().any(|t| t.labels.get("instance").map(String::as_str) == Some(name))
        })
    };
    eventually("the new replica is a target", Duration::from_secs(30), async || has(&name).await.then_some(())).await;
    agent.stop(&name).await.expect("stop it");
    eventually("the stopped replica is no target", Duration::from_secs(30), async || (!has(&name).await).then_some(()))
        .await;

    // The same alert in both: a hung replica fails its readiness probe.
    chaos(&cluster.data_dir, &["hang", "search-1", "--duration", "120s"]);
    let replica_down = async |base: String| {
        let alerts: Option<AlertsData> = common::get_data(&client, &format!("{base}/api/v1/alerts"), &[]).await;
        alerts?
            .alerts
            .iter()
            .any(|a| {
                a.labels.get("alertname").map(String::as_str) == Some("ReplicaDown")
                    && a.labels.get("instance").map(String::as_str) == Some("search-1")
                    && a.state == AlertState::Firing
            })
            .then_some(())
    };
    eventually("ReplicaDown fires in Prometheus", Duration::from_secs(60), async || {
        replica_down(format!("http://{prom}")).await
    })
    .await;
    eventually("and in the collector", Duration::from_secs(30), async || replica_down(cluster.collector()).await).await;
}

/// The production example in `dashboards/prometheus/` is a valid Prometheus config, with
/// Hale's rules and exported SLO rules in its `rules/` directory.
#[test]
fn the_shipped_prometheus_example_passes_promtool_with_hales_rules() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("rules")).expect("rules dir");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/prometheus/prometheus.yml"),
        tmp.path().join("prometheus.yml"),
    )
    .expect("copy the example");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules.yml"), tmp.path().join("rules/hale.yml"))
        .expect("rules");
    let slo = Command::new(env!("CARGO_BIN_EXE_hale"))
        .args(["slo", "export", "--format", "prometheus", concat!(env!("CARGO_MANIFEST_DIR"), "/config/slo.yaml")])
        .output()
        .expect("hale slo export");
    assert!(slo.status.success());
    std::fs::write(tmp.path().join("rules/slo.yml"), slo.stdout).expect("slo rules");
    let check = Command::new(need("promtool"))
        .args(["check", "config", "prometheus.yml"])
        .current_dir(tmp.path())
        .output()
        .expect("promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success(), "{said}");
    assert!(said.contains("rules/hale.yml") && said.contains("rules/slo.yml"), "{said}");
}
