//! Kubernetes service discovery (`kubernetes_sd_configs`, role `pod`), for an agent run
//! on every node (a DaemonSet): the pods of its own node (the field selector
//! `spec.nodeName`), listed through the API server with kube-rs, become target groups
//! with Prometheus's `__meta_kubernetes_pod_*` labels, which the job's relabelling can
//! use like Prometheus's.
//!
//! With `prometheus_io_annotations` (the default) only pods annotated
//! `prometheus.io/scrape: "true"` are targets, one per pod, at its IP and the port,
//! path and scheme of its `prometheus.io/port|path|scheme` annotations (the first
//! declared container port when it names none) — the convention most clusters' pods
//! already follow. Without it, every declared container port of every running pod is a
//! target, as Prometheus's own pod role makes them.
//!
//! A list that fails keeps the groups of the last one that did (and says why): an API
//! server restart does not stop the scrapes of pods that still run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use crate::targets::TargetGroup;

/// The API calls discovery makes, as RBAC rules (API group, resource, verbs): what
/// `deploy/kubernetes/rbac.yaml` grants the agents, exactly (a test compares them).
pub const RBAC: &[(&str, &str, &[&str])] = &[("", "pods", &["list"])];

/// What is discovered. Only pods: an agent sees its own node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Pod,
}

fn yes() -> bool {
    true
}

/// One `[[scrape_configs.kubernetes_sd_configs]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSdConfig {
    #[serde(default)]
    pub role: Role,
    /// The pods of this node (default: the agent's `node`, which in a DaemonSet is
    /// `spec.nodeName` through the downward API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Only these namespaces (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// A kubeconfig (default: kube's search: `$KUBECONFIG`, `~/.kube/config`, then the
    /// pod's service account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_file: Option<PathBuf>,
    /// Follow the `prometheus.io/scrape|port|path|scheme` annotations.
    #[serde(default = "yes")]
    pub prometheus_io_annotations: bool,
}

/// A label name Prometheus would make of a Kubernetes label or annotation name: every
/// character outside `[a-zA-Z0-9_]` becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// The `__meta_kubernetes_pod_*` labels of a pod, without the container ones.
fn pod_labels(pod: &Pod) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let meta = &pod.metadata;
    let mut put = |name: &str, value: Option<&str>| {
        if let Some(value) = value {
            out.insert(format!("__meta_kubernetes_{name}"), value.to_string());
        }
    };
    put("namespace", meta.namespace.as_deref());
    put("pod_name", meta.name.as_deref());
    put("pod_uid", meta.uid.as_deref());
    let status = pod.status.as_ref();
    put("pod_ip", status.and_then(|s| s.pod_ip.as_deref()));
    put("pod_host_ip", status.and_then(|s| s.host_ip.as_deref()));
    put("pod_phase", status.and_then(|s| s.phase.as_deref()));
    put("pod_node_name", pod.spec.as_ref().and_then(|s| s.node_name.as_deref()));
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| if c.status == "True" { "true" } else { "false" });
    put("pod_ready", Some(ready.unwrap_or("unknown")));
    if let Some(owner) = meta.owner_references.iter().flatten().find(|r| r.controller == Some(true)) {
        put("pod_controller_kind", Some(&owner.kind));
        put("pod_controller_name", Some(&owner.name));
    }
    for (name, value) in meta.labels.iter().flatten() {
        out.insert(format!("__meta_kubernetes_pod_label_{}", sanitize(name)), value.clone());
        out.insert(format!("__meta_kubernetes_pod_labelpresent_{}", sanitize(name)), "true".into());
    }
    for (name, value) in meta.annotations.iter().flatten() {
        out.insert(format!("__meta_kubernetes_pod_annotation_{}", sanitize(name)), value.clone());
        out.insert(format!("__meta_kubernetes_pod_annotationpresent_{}", sanitize(name)), "true".into());
    }
    out
}

/// The target groups of `pods`, as `config` makes them.
pub fn groups(config: &KubernetesSdConfig, pods: &[Pod]) -> Vec<TargetGroup> {
    let mut out = Vec::new();
    for pod in pods {
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else { continue };
        if !running || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let labels = pod_labels(pod);
        let ports: Vec<(String, &k8s_openapi::api::core::v1::ContainerPort)> = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten().map(move |p| (c.name.clone(), p)))
            .collect();
        if config.prometheus_io_annotations {
            let annotation = |key: &str| pod.metadata.annotations.as_ref().and_then(|a| a.get(key)).cloned();
            if annotation("prometheus.io/scrape").as_deref() != Some("true") {
                continue;
            }
            let port =
                annotation("prometheus.io/port").or_else(|| ports.first().map(|(_, p)| p.container_port.to_string()));
            let Some(port) = port else { continue };
            let mut labels = labels;
            if let Some(path) = annotation("prometheus.io/path") {
                labels.insert("__metrics_path__".into(), path);
            }
            if let Some(scheme) = annotation("prometheus.io/scheme") {
                labels.insert("__scheme__".into(), scheme);
            }
            out.push(TargetGroup { targets: vec![format!("{ip}:{port}")], labels });
            continue;
        }
        if ports.is_empty() {
            out.push(TargetGroup { targets: vec![ip], labels });
            continue;
        }
        for (container, port) in ports {
            let mut labels = labels.clone();
            labels.insert("__meta_kubernetes_pod_container_name".into(), container);
            labels.insert("__meta_kubernetes_pod_container_port_number".into(), port.container_port.to_string());
            if let Some(name) = &port.name {
                labels.insert("__meta_kubernetes_pod_container_port_name".into(), name.clone());
            }
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            labels.insert("__meta_kubernetes_pod_container_port_protocol".into(), protocol);
            out.push(TargetGroup { targets: vec![format!("{ip}:{}", port.container_port)], labels });
        }
    }
    out
}

/// The pods `config` discovers on `node`: one list per namespace (or one of all), with
/// the field selector `spec.nodeName=<node>`.
#[cfg(feature = "kubernetes")]
pub async fn list(client: &kube::Client, config: &KubernetesSdConfig, node: &str) -> Result<Vec<Pod>, kube::Error> {
    let node = config.node.as_deref().unwrap_or(node);
    use kube::api::{Api, ListParams};
    let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let apis: Vec<Api<Pod>> = if config.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        config.namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
    };
    let mut pods = Vec::new();
    for api in apis {
        pods.extend(api.list(&params).await?.items);
    }
    Ok(pods)
}

/// A kube client for `kubeconfig` (else kube's own search).
#[cfg(feature = "kubernetes")]
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// Whether this build discovers Kubernetes pods (the `kubernetes` feature).
pub const AVAILABLE: bool = cfg!(feature = "kubernetes");

/// The discovered groups of every job's `kubernetes_sd_configs`, kept between lists.
#[derive(Default)]
pub struct KubernetesSd {
    #[cfg(feature = "kubernetes")]
    clients: BTreeMap<Option<PathBuf>, kube::Client>,
    /// (job, config index) → its groups as last listed.
    groups: BTreeMap<(String, usize), Vec<TargetGroup>>,
    /// Lists that failed (their groups kept).
    pub errors: u64,
}

impl KubernetesSd {
    /// Lists again for every config of `jobs` (job name, its configs); forgets jobs gone.
    #[cfg(not(feature = "kubernetes"))]
    pub async fn refresh(&mut self, _jobs: &[(String, Vec<KubernetesSdConfig>)], _node: &str) {
        // Refused when the config is loaded; nothing to list.
    }

    /// Lists again for every config of `jobs` (job name, its configs); forgets jobs gone.
    #[cfg(feature = "kubernetes")]
    pub async fn refresh(&mut self, jobs: &[(String, Vec<KubernetesSdConfig>)], node: &str) {
        self.groups.retain(|(job, i), _| jobs.iter().any(|(j, c)| j == job && *i < c.len()));
        for (job, configs) in jobs {
            for (i, config) in configs.iter().enumerate() {
                let key = config.kubeconfig_file.clone();
                if !self.clients.contains_key(&key) {
                    match client(key.as_deref()).await {
                        Ok(c) => {
                            self.clients.insert(key.clone(), c);
                        }
                        Err(e) => {
                            self.errors += 1;
                            tracing::warn!(job, error = %e, "kubernetes_sd: no Kubernetes API client");
                            continue;
                        }
                    }
                }
                let Some(client) = self.clients.get(&key) else { continue };
                let listed = tokio::time::timeout(std::time::Duration::from_secs(10), list(client, config, node)).await;
                match listed {
                    Ok(Ok(pods)) => {
                        self.groups.insert((job.clone(), i), groups(config, &pods));
                    }
                    Ok(Err(e)) => {
                        self.errors += 1;
                        tracing::warn!(job, error = %e, "kubernetes_sd: listing pods failed; keeping the last targets");
                    }
                    Err(_) => {
                        self.errors += 1;
                        tracing::warn!(job, "kubernetes_sd: listing pods took over 10 s; keeping the last targets");
                    }
                }
            }
        }
    }

    /// The groups discovered for `job`.
    pub fn groups_of(&self, job: &str) -> Vec<TargetGroup> {
        self.groups.iter().filter(|((j, _), _)| j == job).flat_map(|(_, g)| g.iter().cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("a pod")
    }

    #[test]
    fn without_the_annotations_every_declared_port_of_a_running_pod_is_a_target() {
        let running = pod(serde_json::json!({
            "metadata": {"name": "db-0", "namespace": "data", "labels": {"app.kubernetes.io/name": "db"},
                         "annotations": {"prometheus.io/scrape": "false"}},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "db", "ports": [{"containerPort": 5432, "name": "sql"}, {"containerPort": 9187, "name": "metrics"}]},
                {"name": "sidecar"}]},
            "status": {"phase": "Running", "podIP": "10.1.0.5", "conditions": [{"type": "Ready", "status": "False"}]}
        }));
        let pending = pod(serde_json::json!({"metadata": {"name": "db-1"}, "status": {"phase": "Pending"}}));
        let raw = KubernetesSdConfig {
            role: Role::Pod,
            node: None,
            namespaces: Vec::new(),
            kubeconfig_file: None,
            prometheus_io_annotations: false,
        };
        let groups = groups(&raw, &[running.clone(), pending]);
        let targets: Vec<&str> = groups.iter().map(|g| g.targets[0].as_str()).collect();
        assert_eq!(targets, ["10.1.0.5:5432", "10.1.0.5:9187"]);
        let metrics = &groups[1].labels;
        assert_eq!(metrics["__meta_kubernetes_pod_container_port_name"], "metrics");
        assert_eq!(metrics["__meta_kubernetes_pod_container_name"], "db");
        assert_eq!(metrics["__meta_kubernetes_pod_label_app_kubernetes_io_name"], "db");
        assert_eq!(metrics["__meta_kubernetes_pod_ready"], "false");
        // With the annotations, `scrape: "false"` is no target at all.
        let annotated = KubernetesSdConfig { prometheus_io_annotations: true, ..raw };
        assert!(super::groups(&annotated, &[running]).is_empty());
    }
}
