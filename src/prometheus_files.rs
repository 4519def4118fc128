//! What a real Prometheus needs to watch the demo as Hale does. `hale up` writes
//! `<data-dir>/prometheus/`: `prometheus.yml` (scrape jobs over file_sd target files, the
//! rule files), `targets/*.json` (every agent, the collector, the healer and every shop
//! replica, labelled `job`/`service`/`instance`/`node` as Hale labels them), `rules.yml`
//! (the collector's alerting rules) and `slo-rules.yml` (the SLO rules the collector
//! generates, exported at the cluster's time scale). So
//! `prometheus --config.file=<data-dir>/prometheus/prometheus.yml` scrapes the whole demo
//! and evaluates the same alerts.
//!
//! The shop's targets follow the cluster: while `hale up` runs it reads every agent's
//! process list and rewrites `targets/shop.json` when it changes, so replicas the healer
//! starts (scale-out, reschedule) appear and the ones it stops leave. Prometheus watches
//! the file itself. Agents are scraped with `honor_labels`: their `/metrics` carries the
//! probes of their replicas with each replica's own `instance`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hale_core::ClusterConfig;
use hale_core::api::ProcessList;
use serde::Serialize;

/// How often Prometheus scrapes and evaluates: the demo's pace, as its agents scrape.
/// Its SLO rules run at the cluster's time scale (a 5-minute window is seconds long), and
/// a rate needs two samples inside its window.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// How often the shop's targets are looked at again.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// One file_sd target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

fn group(target: impl ToString, labels: &[(&str, &str)]) -> TargetGroup {
    TargetGroup {
        targets: vec![target.to_string()],
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

/// `prometheus.yml`: paths are relative to it, as Prometheus resolves them. In a TLS
/// cluster every job scrapes over HTTPS, trusting the data dir's CA and showing the
/// `prometheus` client certificate `hale up --tls` issued.
pub fn config_yaml(tls: bool) -> String {
    let secs = SCRAPE_INTERVAL.as_secs();
    let refresh = INTERVAL.as_secs();
    let tls_config = if tls {
        "    scheme: https\n    tls_config:\n      ca_file: ../certs/ca.pem\n      cert_file: ../certs/prometheus.pem\n      key_file: ../certs/prometheus-key.pem\n"
    } else {
        ""
    };
    let job = |name: &str, file: &str, extra: &str| {
        format!(
            "  - job_name: {name}\n{extra}{tls_config}    file_sd_configs:\n      - files: [targets/{file}.json]\n        refresh_interval: {refresh}s\n"
        )
    };
    format!(
        "# Written by `hale up`: a Prometheus that watches the demo as Hale does.\n\
         #   prometheus --config.file=<this file> --storage.tsdb.path=<a directory of its own>\n\
         # targets/*.json follow the cluster while `hale up` runs; rules.yml and slo-rules.yml\n\
         # are the collector's alerting rules and its generated SLO rules.\n\
         global:\n  scrape_interval: {secs}s\n  evaluation_interval: {secs}s\n\
         rule_files:\n  - rules.yml\n  - slo-rules.yml\n\
         scrape_configs:\n{}{}{}{}",
        // The agents' probe series name the replica they probed in `instance`.
        job("node", "agents", "    honor_labels: true\n"),
        job("shop", "shop", ""),
        job("hale-collector", "collector", ""),
        job("hale-healer", "healer", ""),
    )
}

/// The targets that do not change while the cluster runs: agents, collector, healer.
pub fn fixed_targets(cluster: &ClusterConfig) -> BTreeMap<&'static str, Vec<TargetGroup>> {
    let control = cluster.gateway.node.get_ref().as_str();
    let agents = cluster
        .nodes
        .iter()
        .map(|n| {
            let listen = cluster.agent_listen(n).to_string();
            group(&listen, &[("node", &n.name), ("instance", &listen)])
        })
        .collect();
    let own = |service: &str, listen: std::net::SocketAddr| {
        vec![group(listen, &[("service", service), ("instance", service), ("node", control)])]
    };
    BTreeMap::from([
        ("agents", agents),
        ("collector", own("collector", cluster.collector.listen)),
        ("healer", own("healer", cluster.healer.listen)),
    ])
}

/// The shop's replicas: what the agents run (`lists`), and the configured replicas of
/// any node whose agent did not answer (so a starting cluster has its targets at once).
pub fn shop_targets(cluster: &ClusterConfig, lists: &BTreeMap<String, ProcessList>) -> Vec<TargetGroup> {
    let mut out: Vec<TargetGroup> = Vec::new();
    for list in lists.values() {
        for p in list.processes.iter().filter(|p| !p.listen.is_empty()) {
            let node = if p.node.is_empty() { &list.node } else { &p.node };
            out.push(group(&p.listen, &[("service", &p.service), ("instance", &p.name), ("node", node)]));
        }
    }
    for i in cluster.instances().into_iter().filter(|i| !lists.contains_key(&i.node)) {
        out.push(group(i.listen, &[("service", &i.service.to_string()), ("instance", &i.name), ("node", &i.node)]));
    }
    out.sort_by(|a, b| a.labels.get("instance").cmp(&b.labels.get("instance")));
    out
}

/// `<data-dir>/prometheus` and what goes in it.
pub struct PrometheusFiles {
    pub dir: PathBuf,
}

impl PrometheusFiles {
    /// Writes the config, the rule files and every target file.
    pub fn write_all(&self, cluster: &ClusterConfig, rules: &str, slo_rules: &str) -> Result<()> {
        std::fs::create_dir_all(self.dir.join("targets"))
            .with_context(|| format!("creating {}", self.dir.join("targets").display()))?;
        for (name, text) in [
            ("prometheus.yml", config_yaml(cluster.tls)),
            ("rules.yml", rules.into()),
            ("slo-rules.yml", slo_rules.into()),
        ] {
            let path = self.dir.join(name);
            hale_fs::write_durable(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        }
        for (name, groups) in fixed_targets(cluster) {
            self.targets(name, &groups)?;
        }
        self.targets("shop", &shop_targets(cluster, &BTreeMap::new()))?;
        Ok(())
    }

    /// Writes `targets/<name>.json` when its groups differ from what it holds; whether
    /// it did. Written whole and renamed into place, so Prometheus never reads half.
    pub fn targets(&self, name: &str, groups: &[TargetGroup]) -> Result<bool> {
        let path = self.dir.join("targets").join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(groups)?;
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            return Ok(false);
        }
        hale_fs::write_durable(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        Ok(true)
    }

    /// Keeps `targets/shop.json` current until the task is dropped: every [`INTERVAL`],
    /// the agents' process lists (an agent that does not answer keeps its last list).
    pub async fn follow(self, cluster: ClusterConfig) {
        let agents: Vec<(String, hale_client::Agent)> = cluster
            .nodes
            .iter()
            .filter_map(|n| {
                let url = cluster.url(cluster.agent_listen(n));
                Some((n.name.clone(), hale_client::Agent::new(&url).ok()?))
            })
            .collect();
        let mut known: BTreeMap<String, ProcessList> = BTreeMap::new();
        loop {
            for (node, agent) in &agents {
                if let Ok(list) = agent.processes().await {
                    known.insert(node.clone(), list);
                }
            }
            if let Err(e) = self.targets("shop", &shop_targets(&cluster, &known)) {
                tracing::warn!(error = %format!("{e:#}"), "could not update Prometheus's shop targets");
            }
            tokio::time::sleep(INTERVAL).await;
        }
    }
}

/// Where the files go for a data dir.
pub fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("prometheus")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hale_core::api::{ProcessInfo, ProcessState};

    #[test]
    fn targets_name_every_part_as_hale_labels_it() {
        let cluster = ClusterConfig::parse(hale_core::DEFAULT_CLUSTER_TOML).expect("default cluster");
        let fixed = fixed_targets(&cluster);
        assert_eq!(fixed["agents"].len(), cluster.nodes.len());
        assert_eq!(fixed["agents"][0].labels["node"], cluster.nodes[0].name);
        assert_eq!(fixed["collector"][0].targets, [cluster.collector.listen.to_string()]);
        // Before any agent answers: the configured replicas.
        let shop = shop_targets(&cluster, &BTreeMap::new());
        assert_eq!(shop.len(), cluster.instances().len());
        assert!(shop.iter().all(|g| ["service", "instance", "node"].iter().all(|k| g.labels.contains_key(*k))));
        // An agent's list replaces its node's configured replicas: one added by the healer
        // appears, one it stopped is gone.
        let node = cluster.nodes[0].name.clone();
        let list = ProcessList {
            node: node.clone(),
            processes: vec![ProcessInfo {
                managed_by: None,
                url: None,
                name: "search-9".into(),
                service: "search".into(),
                node: node.clone(),
                listen: "127.0.1.1:8099".into(),
                pid: Some(1),
                state: ProcessState::Running,
                restarts: 0,
                uptime_secs: Some(1),
                last_exit: None,
            }],
        };
        let shop = shop_targets(&cluster, &BTreeMap::from([(node.clone(), list)]));
        let on_node: Vec<&str> =
            shop.iter().filter(|g| g.labels["node"] == node).map(|g| g.labels["instance"].as_str()).collect();
        assert_eq!(on_node, ["search-9"]);
        assert!(shop.iter().any(|g| g.labels["node"] != node), "the other nodes keep theirs");
    }

    #[test]
    fn target_files_are_rewritten_only_when_they_change() {
        let dir = tempfile::tempdir().expect("tmp");
        let files = PrometheusFiles { dir: dir.path().to_path_buf() };
        let cluster = ClusterConfig::parse(hale_core::DEFAULT_CLUSTER_TOML).expect("default cluster");
        files.write_all(&cluster, "groups: []\n", "groups: []\n").expect("write");
        for name in ["prometheus.yml", "rules.yml", "slo-rules.yml", "targets/agents.json", "targets/shop.json"] {
            assert!(dir.path().join(name).exists(), "{name}");
        }
        let shop = shop_targets(&cluster, &BTreeMap::new());
        assert!(!files.targets("shop", &shop).expect("same"), "unchanged: not rewritten");
        assert!(files.targets("shop", &shop[1..]).expect("changed"));
        let read: Vec<TargetGroup> =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("targets/shop.json")).expect("read"))
                .expect("file_sd JSON");
        assert_eq!(read, shop[1..]);
    }
}
