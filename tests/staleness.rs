//! End to end, issue #12 finding 12 ("missing is never healthy"): a frozen node's agent
//! and replicas are judged by the age of what they last sent. The real `hale up
//! --headless` on its own loopback range, ports and data dir; `hale chaos node-down`
//! freezes node-3 (SIGSTOP of its agent and replicas) and `node-up` thaws it.

mod common;

use common::eventually;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hale_core::api::{StartProcess, StatusReport};
use hale_core::cluster::{AgentState, ClusterView, NodeView, ReplicaState, ReplicaView};

use common::up::{Cluster, chaos};

/// `hale up --headless` without load on a private range; returns the collector's URL.
async fn start(tmp: &Path) -> (Cluster, String) {
    let cluster = Cluster::start(tmp, 0, &[]).await;
    let collector = cluster.collector();
    (cluster, collector)
}

/// `hale status --json`: its exit code and its answer (`None` when it printed none).
fn status(data_dir: &Path) -> (Option<i32>, Option<StatusReport>) {
    let out = Command::new(env!("CARGO_BIN_EXE_hale"))
        .args(["status", "--json", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("hale status");
    (out.status.code(), serde_json::from_slice(&out.stdout).ok())
}

/// The node's entry and the replicas on it in `/api/v1/cluster`.
fn node_of<'a>(view: &'a ClusterView, node: &str) -> (Option<&'a NodeView>, Vec<&'a ReplicaView>) {
    let entry = view.nodes.iter().find(|n| n.node == node);
    let replicas = common::replicas(view).filter(|r| r.node.as_deref() == Some(node)).collect();
    (entry, replicas)
}

/// Whether every one of `replicas` is ready.
fn all_ready(replicas: &[&ReplicaView]) -> bool {
    replicas.iter().all(|r| r.state == ReplicaState::Ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_frozen_node_is_stale_never_ready_and_status_fails_until_it_is_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (cluster, collector) = start(tmp.path()).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
    let view = async || common::cluster_view(&client, &collector).await;

    // Healthy first: every node's agent up, node-3's replicas ready, status exits 0.
    eventually("a healthy cluster, status 0", Duration::from_secs(60), async || {
        let v = view().await?;
        let (node, replicas) = node_of(&v, "node-3");
        let fresh = node?.agent == AgentState::Up && replicas.len() >= 2 && all_ready(&replicas);
        let (code, s) = status(&cluster.data_dir);
        (fresh && code == Some(0) && s?.healthy).then_some(())
    })
    .await;

    chaos(&cluster.data_dir, &["node-down", "node-3"]);
    let frozen = eventually("node-3 judged stale by its age", Duration::from_secs(20), async || {
        let v = view().await?;
        let (node, replicas) = node_of(&v, "node-3");
        let node = node?;
        let stale = node.agent != AgentState::Up
            && !node.agent_up
            && node.last_seen_secs_ago.is_some()
            && !replicas.is_empty()
            && replicas.iter().all(|r| r.state == ReplicaState::Stale && r.ready != Some(true) && r.age_secs.is_some());
        stale.then_some(v)
    })
    .await;
    // A stale replica is never counted: each service's ready count is its fresh ones.
    for s in &frozen.services {
        let fresh_ready = s.replicas.iter().filter(|r| r.state == ReplicaState::Ready).count();
        assert_eq!(s.ready_replicas, fresh_ready, "{s:?}");
    }
    eventually("status unhealthy, exit 1, node-3's agent not up", Duration::from_secs(20), async || {
        let (code, s) = status(&cluster.data_dir);
        let s = s?;
        let node3 = s.nodes.iter().find(|n| n.node == "node-3")?;
        (code == Some(1) && !s.healthy && node3.agent != AgentState::Up).then_some(())
    })
    .await;
    // The frozen node's last probes vanish from PromQL (stale markers), instead of
    // answering 1 for five minutes.
    eventually("node-3's probe_success gone from instant queries", Duration::from_secs(20), async || {
        common::query(&client, &collector, "probe_success{node=\"node-3\"}").await?.is_empty().then_some(())
    })
    .await;

    chaos(&cluster.data_dir, &["node-up", "node-3"]);
    eventually("node-3 back: agent up, replicas ready, status 0", Duration::from_secs(30), async || {
        let v = view().await?;
        let (node, replicas) = node_of(&v, "node-3");
        let back = node?.agent == AgentState::Up && !replicas.is_empty() && all_ready(&replicas);
        let (code, s) = status(&cluster.data_dir);
        (back && code == Some(0) && s?.healthy).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_replicas_of_a_previous_run_are_not_ready_after_a_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut cluster, collector) = start(tmp.path()).await;
    let config = cluster.config();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let replica = async |name: &str| -> Option<ReplicaView> {
        let view = common::cluster_view(&client, &collector).await?;
        common::replicas(&view).find(|r| r.instance == name).cloned()
    };

    // A replica started through node-1's agent, as the healer's scale-out does.
    let node = config.nodes.iter().find(|n| n.name == "node-1").expect("node-1");
    let agent = format!("http://{}:{}", node.ip, config.agent_port);
    let r = client
        .post(format!("{agent}/api/v1/processes"))
        .bearer_auth(&config.secrets.agent_token)
        .json(&StartProcess { service: "search".into(), name: Some("search-extra".into()) })
        .send()
        .await
        .expect("start");
    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
    eventually("the extra replica ready in the cluster view", Duration::from_secs(30), async || {
        (replica("search-extra").await?.state == ReplicaState::Ready).then_some(())
    })
    .await;

    // Restart on the same data dir and addresses: the extra replica is not started again.
    cluster.restart(&tmp.path().join("up2.out"), 0).await;
    eventually("the restarted cluster's own replicas ready", Duration::from_secs(90), async || {
        let view = common::cluster_view(&client, &collector).await?;
        let own = common::replicas(&view).filter(|r| r.instance != "search-extra").collect::<Vec<_>>();
        (own.len() >= 9 && all_ready(&own)).then_some(())
    })
    .await;
    // No process stands behind the extra replica: whatever is left of it is not ready,
    // and the dashboard's and status's health does not count it.
    if let Some(r) = replica("search-extra").await {
        assert_ne!(r.state, ReplicaState::Ready, "{r:?}");
        assert_ne!(r.ready, Some(true), "{r:?}");
    }
    let (_, s) = status(&cluster.data_dir);
    let s = s.expect("hale status --json answers");
    let search = s.services.iter().find(|x| x.service == "search").map(|x| x.ready);
    assert_eq!(search, Some(2), "status counts only running replicas: {s:?}");
}
