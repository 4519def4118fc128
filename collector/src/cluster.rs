//! `GET /api/v1/cluster`: the fleet at a glance, computed from the stored series with the
//! same PromQL engine: nodes with their agent's state and resources, services with their
//! replicas' probes, scrapes, restarts and last logged error. Missing data is reported as
//! `null`, never as healthy.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::logs::LogStore;
use crate::query::{self, Value};
use crate::store::Store;

/// An agent whose host metrics are older than this is reported down.
const AGENT_STALE_MS: i64 = 30_000;

#[derive(Debug, Serialize, PartialEq)]
pub struct NodeView {
    pub node: String,
    pub agent_up: bool,
    pub last_seen_secs_ago: Option<f64>,
    pub cpu_used_ratio: Option<f64>,
    pub memory_used_ratio: Option<f64>,
    pub disk_used_ratio: Option<f64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct LastError {
    pub time_unix_nano: u64,
    pub message: String,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ReplicaView {
    pub instance: String,
    pub node: Option<String>,
    /// `/readyz` probe; `None` without data.
    pub ready: Option<bool>,
    /// `/healthz` probe.
    pub alive: Option<bool>,
    /// Last scrape succeeded.
    pub up: Option<bool>,
    pub restarts: Option<f64>,
    pub last_error: Option<LastError>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ServiceView {
    pub service: String,
    pub replicas: Vec<ReplicaView>,
    pub ready_replicas: usize,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    pub services: Vec<ServiceView>,
}

/// `label → value` of a vector query at `t`.
fn by_label(store: &Store, expr: &str, t: i64, label: &str) -> BTreeMap<String, f64> {
    match query::instant_query(store, expr, t) {
        Ok(Value::Vector(samples)) => samples
            .into_iter()
            .filter_map(|s| Some((s.labels.iter().find(|(n, _)| n == label)?.1.clone(), s.value)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `(service, instance) → (value, node)` of a vector query at `t`.
fn by_instance(store: &Store, expr: &str, t: i64) -> BTreeMap<(String, String), (f64, Option<String>)> {
    match query::instant_query(store, expr, t) {
        Ok(Value::Vector(samples)) => samples
            .into_iter()
            .filter_map(|s| {
                let get = |k: &str| s.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                Some(((get("service")?, get("instance")?), (s.value, get("node"))))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

pub fn view(store: &Store, logs: &LogStore, now_ms: i64) -> ClusterView {
    let seen = by_label(store, "timestamp(node_load1)", now_ms, "node");
    let cpu = by_label(store, "1 - avg by (node) (rate(node_cpu_seconds_total{mode=\"idle\"}[1m]))", now_ms, "node");
    let mem = by_label(store, "1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", now_ms, "node");
    let disk =
        by_label(store, "max by (node) (1 - node_filesystem_avail_bytes / node_filesystem_size_bytes)", now_ms, "node");
    let nodes = seen
        .iter()
        .map(|(node, ts)| {
            let ago = (now_ms as f64 / 1000.0 - ts).max(0.0);
            NodeView {
                node: node.clone(),
                agent_up: ago * 1000.0 < AGENT_STALE_MS as f64,
                last_seen_secs_ago: Some(ago),
                cpu_used_ratio: cpu.get(node).copied().filter(|v| v.is_finite()),
                memory_used_ratio: mem.get(node).copied().filter(|v| v.is_finite()),
                disk_used_ratio: disk.get(node).copied().filter(|v| v.is_finite()),
            }
        })
        .collect();
    let ready = by_instance(store, "probe_success{probe=\"readyz\"}", now_ms);
    let alive = by_instance(store, "probe_success{probe=\"healthz\"}", now_ms);
    let up = by_instance(store, "up", now_ms);
    let restarts = by_instance(store, "hale_process_restarts_total", now_ms);
    let mut services: BTreeMap<String, Vec<ReplicaView>> = BTreeMap::new();
    let mut keys: Vec<&(String, String)> =
        ready.keys().chain(alive.keys()).chain(up.keys()).chain(restarts.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let (service, instance) = key;
        let node = [&ready, &alive, &up, &restarts].iter().find_map(|m| m.get(key).and_then(|(_, n)| n.clone()));
        let flag = |m: &BTreeMap<(String, String), (f64, Option<String>)>| m.get(key).map(|(v, _)| *v == 1.0);
        services.entry(service.clone()).or_default().push(ReplicaView {
            instance: instance.clone(),
            node,
            ready: flag(&ready),
            alive: flag(&alive),
            up: flag(&up),
            restarts: restarts.get(key).map(|(v, _)| *v),
            last_error: logs
                .last_error(service, instance)
                .map(|l| LastError { time_unix_nano: l.time_unix_nano, message: l.message }),
        });
    }
    let services = services
        .into_iter()
        .map(|(service, replicas)| ServiceView {
            ready_replicas: replicas.iter().filter(|r| r.ready == Some(true)).count(),
            service,
            replicas,
        })
        .collect();
    ClusterView { nodes, services }
}
