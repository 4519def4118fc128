//! `healer.toml`: the healer's own inventory — the services it may act on, where each
//! runs, the executor that acts on it, and the load balancer its instances are
//! registered with. The healer needs nothing else about the fleet (no `cluster.toml`);
//! `hale up` writes this file for the demo.
//!
//! ```toml
//! [agents]                       # node agents (their actuator token: HALE_AGENT_TOKEN)
//! node-1 = "http://10.0.0.1:9100"
//!
//! [load_balancers.edge]          # the shop gateway's pool admin API (token: HALE_ADMIN_TOKEN)
//! kind = "gateway"
//! url = "http://10.0.0.9:8080"
//!
//! [load_balancers.haproxy]       # or commands: HALE_SERVICE, HALE_INSTANCE, HALE_URL set
//! kind = "exec"
//! register = ["/usr/local/bin/lb", "add"]
//! deregister = ["/usr/local/bin/lb", "remove"]
//!
//! [[services]]
//! name = "search"
//! executor = "agent"             # restart, stop, start another through the node's agent
//! nodes = ["node-1", "node-2"]   # where new instances may start
//! load_balancer = "edge"
//!
//! [[services]]
//! name = "web"
//! executor = "kubernetes"        # the API server: evict, rollout restart, scale, cordon
//! [services.kubernetes]
//! namespace = "shop"
//! kind = "deployment"            # or statefulset, daemonset
//! min_available = 2              # ready pods that stay through any action
//!
//! [[services]]
//! name = "legacy"
//! executor = "exec"              # the commands below; the alert's labels as HALE_LABEL_*
//! restart = ["/usr/local/bin/legacy-ctl", "restart"]
//! start_another = ["/usr/local/bin/legacy-ctl", "spawn"]
//! ```

use std::collections::{BTreeMap, BTreeSet};

use hale_core::ConfigError;
use serde::{Deserialize, Serialize};

use crate::executor::Capability;

/// Which executor acts on a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    /// The node agents' actuators: restart, stop, start another.
    Agent,
    /// Commands from this file, run without a shell.
    Exec,
    /// Signed calls to the service's own admin endpoints.
    Http,
    /// The Kubernetes API server (kube-rs): evict, rollout restart, scale, cordon.
    Kubernetes,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Agent => "agent",
            ExecutorKind::Exec => "exec",
            ExecutorKind::Http => "http",
            ExecutorKind::Kubernetes => "kubernetes",
        }
    }
}

/// A service the healer may act on.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub executor: ExecutorKind,
    /// Nodes (keys of `[agents]`) where it runs and where new instances may start.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// The `[load_balancers]` entry its instances are registered with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<String>,
    /// `exec`: a command (argument vector) per capability.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_another: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drain: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promote: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fence: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejoin: Vec<String>,
    /// `http`: a URL per capability (`{instance}` and `{url}` of the target filled in),
    /// each called with a signed `POST`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<Capability, String>,
    /// How long a command or call may take (default 30s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<crate::policy::Dur>,
    /// A primary/standby service (a database): never started blank elsewhere — no
    /// scale-out, no reschedule; failover, rejoin and restart are its repairs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stateful: bool,
    /// A primary/standby service's replicas, when its load balancer does not list them:
    /// the healer fails it over by the failover protocol (`crate::failover`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberConfig>,
    /// `kubernetes`: the workload the service is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<crate::kubernetes::Workload>,
}

/// A replica of a primary/standby service: its instance name and base URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub instance: String,
    pub url: String,
}

/// Where instances are registered for traffic.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoadBalancer {
    /// The shop gateway's pool admin API; its pools also hold a primary/standby service's
    /// roles, which makes it able to fail over (see ARCHITECTURE.md, "Failover protocol").
    Gateway { url: String },
    /// Commands; the instance in HALE_SERVICE, HALE_INSTANCE, HALE_URL.
    Exec {
        register: Vec<String>,
        deregister: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout: Option<crate::policy::Dur>,
    },
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Node name → its agent's base URL.
    #[serde(default)]
    pub agents: BTreeMap<String, String>,
    #[serde(default)]
    pub load_balancers: BTreeMap<String, LoadBalancer>,
    #[serde(default)]
    pub services: Vec<Service>,
}

impl Service {
    /// What this service's executor can do (what a policy may ask of it).
    pub fn capabilities(&self) -> BTreeSet<Capability> {
        let mut caps: BTreeSet<Capability> = match self.executor {
            ExecutorKind::Agent => [Capability::Restart, Capability::Stop, Capability::StartAnother].into(),
            ExecutorKind::Exec => Capability::ALL.into_iter().filter(|c| !self.command(*c).is_empty()).collect(),
            ExecutorKind::Http => self.endpoints.keys().copied().collect(),
            ExecutorKind::Kubernetes => match &self.kubernetes {
                Some(w) if w.kind == crate::kubernetes::WorkloadKind::DaemonSet => [Capability::Restart].into(),
                Some(_) => [Capability::Restart, Capability::Stop, Capability::StartAnother].into(),
                None => BTreeSet::new(),
            },
        };
        if self.stateful {
            caps.remove(&Capability::StartAnother);
            if !self.members.is_empty() {
                caps.extend([Capability::Promote, Capability::Fence, Capability::Rejoin]);
            }
        }
        caps
    }

    /// The `exec` command for `capability` (empty: none).
    pub fn command(&self, capability: Capability) -> &[String] {
        match capability {
            Capability::Restart => &self.restart,
            Capability::Stop => &self.stop,
            Capability::StartAnother => &self.start_another,
            Capability::Drain => &self.drain,
            Capability::Promote => &self.promote,
            Capability::Fence => &self.fence,
            Capability::Rejoin => &self.rejoin,
        }
    }
}

/// The line (1-based) of the first line at or after the one holding `anchor` that holds
/// `needle` (the anchor's own line when none does).
fn line_of(source: &str, anchor: &str, needle: &str) -> Option<usize> {
    let lines: Vec<&str> = source.lines().collect();
    let start = lines.iter().position(|l| !anchor.is_empty() && l.contains(anchor))?;
    let found = (!needle.is_empty()).then(|| lines[start..].iter().position(|l| l.contains(needle))).flatten();
    Some(start + found.unwrap_or(0) + 1)
}

impl Inventory {
    /// Parses and checks `healer.toml`; errors carry the line.
    pub fn parse(source: &str) -> Result<Inventory, ConfigError> {
        let inventory: Inventory = toml::from_str(source).map_err(|e| ConfigError::from_toml(source, &e))?;
        inventory
            .check()
            .map_err(|(message, anchor, needle)| ConfigError { line: line_of(source, &anchor, &needle), message })?;
        Ok(inventory)
    }

    /// Checks what serde cannot; an error comes with the text that starts its entry and
    /// the text of the offending value, to find its line.
    fn check(&self) -> Result<(), (String, String, String)> {
        self.check_entries().map_err(|message| {
            let quoted: Vec<&str> = message.split('"').collect();
            let (entry, value) = (quoted.get(1).copied().unwrap_or(""), quoted.get(3).copied().unwrap_or(""));
            let anchor = if message.starts_with("service") {
                format!("name = \"{entry}\"")
            } else if message.starts_with("load balancer") {
                format!("[load_balancers.{entry}]")
            } else {
                entry.to_string()
            };
            (message.clone(), anchor, value.to_string())
        })
    }

    fn check_entries(&self) -> Result<(), String> {
        for (node, url) in &self.agents {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("agent of node \"{node}\": {url:?} is not an http:// or https:// URL"));
            }
        }
        for (name, lb) in &self.load_balancers {
            match lb {
                LoadBalancer::Gateway { url } if !(url.starts_with("http://") || url.starts_with("https://")) => {
                    return Err(format!("load balancer \"{name}\": {url:?} is not an http:// or https:// URL"));
                }
                LoadBalancer::Exec { register, deregister, .. } if register.is_empty() || deregister.is_empty() => {
                    return Err(format!("load balancer \"{name}\": needs `register` and `deregister` commands"));
                }
                _ => {}
            }
        }
        let mut names = BTreeSet::new();
        for s in &self.services {
            let fail = |why: String| Err(format!("service \"{}\": {why}", s.name));
            if !names.insert(s.name.as_str()) {
                return fail("listed twice".into());
            }
            match (s.executor, &s.kubernetes) {
                (ExecutorKind::Kubernetes, None) => {
                    return fail("the \"kubernetes\" executor needs [services.kubernetes] (namespace, kind)".into());
                }
                (ExecutorKind::Kubernetes, Some(w)) if w.namespace.is_empty() => {
                    return fail("[services.kubernetes] needs its `namespace`".into());
                }
                (ExecutorKind::Kubernetes, Some(_)) if s.load_balancer.is_some() || !s.nodes.is_empty() => {
                    return fail(
                        "a Kubernetes workload's traffic and placement are Kubernetes's: no `load_balancer` or `nodes`"
                            .into(),
                    );
                }
                (other, Some(_)) if other != ExecutorKind::Kubernetes => {
                    return fail(format!(
                        "[services.kubernetes] is for the kubernetes executor, not \"{}\"",
                        other.as_str()
                    ));
                }
                _ => {}
            }
            let commands = Capability::ALL.iter().any(|c| !s.command(*c).is_empty());
            if s.executor != ExecutorKind::Exec && commands {
                return fail(format!("commands are for the exec executor, not \"{}\"", s.executor.as_str()));
            }
            if s.executor != ExecutorKind::Http && !s.endpoints.is_empty() {
                return fail(format!("endpoints are for the http executor, not \"{}\"", s.executor.as_str()));
            }
            if s.executor == ExecutorKind::Agent && s.nodes.is_empty() {
                return fail("the agent executor needs `nodes` (where the service runs)".into());
            }
            if let Some(node) = s.nodes.iter().find(|n| !self.agents.contains_key(*n)) {
                return fail(format!("node {node:?} has no entry in [agents]"));
            }
            if let Some(lb) = &s.load_balancer
                && !self.load_balancers.contains_key(lb)
            {
                return fail(format!("load_balancer {lb:?} is not in [load_balancers]"));
            }
            if !s.members.is_empty() && !s.stateful {
                return fail("`members` are for a primary/standby service: set `stateful = true`".into());
            }
            if let Some(m) = s.members.iter().find(|m| !(m.url.starts_with("http://") || m.url.starts_with("https://")))
            {
                return fail(format!("member {:?}: {:?} is not an http(s) URL", m.instance, m.url));
            }
            if s.capabilities().is_empty() {
                return fail(format!(
                    "its {} executor can do nothing: give it commands or endpoints",
                    s.executor.as_str()
                ));
            }
            if let Some((c, url)) = s
                .endpoints
                .iter()
                .find(|(_, u)| !(u.starts_with("http://") || u.starts_with("https://") || u.starts_with("{url}")))
            {
                return fail(format!("endpoint {} {url:?} is not an http(s) URL", c.as_str()));
            }
        }
        Ok(())
    }

    /// The demo shop's inventory, from its `cluster.toml` (what `hale up` writes as
    /// `healer.toml`): every node's agent; the gateway as the load balancer of the
    /// services behind it; each service acted on through the agents on every node, the
    /// catalog as a primary/standby service (failed over through the gateway's pools,
    /// never started blank), the gateway itself restarted only.
    pub fn of_cluster(cluster: &hale_core::ClusterConfig) -> Inventory {
        let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
        let agents = cluster.nodes.iter().map(|n| (n.name.clone(), cluster.url(cluster.agent_listen(n)))).collect();
        let gateway = LoadBalancer::Gateway { url: cluster.url(cluster.gateway.listen) };
        let services = hale_core::ServiceKind::ALL
            .into_iter()
            .map(|kind| Service {
                name: kind.as_str().to_string(),
                executor: ExecutorKind::Agent,
                nodes: nodes.clone(),
                load_balancer: (kind != hale_core::ServiceKind::Gateway).then(|| "gateway".to_string()),
                restart: Vec::new(),
                stop: Vec::new(),
                start_another: Vec::new(),
                drain: Vec::new(),
                promote: Vec::new(),
                fence: Vec::new(),
                rejoin: Vec::new(),
                endpoints: BTreeMap::new(),
                timeout: None,
                stateful: matches!(kind, hale_core::ServiceKind::Catalog | hale_core::ServiceKind::Gateway),
                members: Vec::new(),
                kubernetes: None,
            })
            .collect();
        Inventory { agents, load_balancers: [("gateway".to_string(), gateway)].into(), services }
    }

    /// As `healer.toml` writes it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[agents]
node-1 = "http://127.0.0.1:9101"

[load_balancers.edge]
kind = "gateway"
url = "http://127.0.0.1:8080"

[[services]]
name = "search"
executor = "agent"
nodes = ["node-1"]
load_balancer = "edge"

[[services]]
name = "legacy"
executor = "exec"
restart = ["/usr/local/bin/legacy-ctl", "restart"]

[[services]]
name = "db"
executor = "http"
endpoints = { promote = "{url}/admin/promote", rejoin = "{url}/admin/rejoin" }
"#;

    #[test]
    fn executors_declare_what_they_can_do() {
        let inv = Inventory::parse(SAMPLE).expect("parses");
        let caps = |name: &str| inv.service(name).expect(name).capabilities().into_iter().collect::<Vec<_>>();
        assert_eq!(caps("search"), [Capability::Restart, Capability::Stop, Capability::StartAnother]);
        assert_eq!(caps("legacy"), [Capability::Restart]);
        assert_eq!(caps("db"), [Capability::Promote, Capability::Rejoin]);
    }

    #[test]
    fn the_demos_inventory_comes_from_its_cluster_file_and_reads_back() {
        let cluster = hale_core::ClusterConfig::parse(hale_core::DEFAULT_CLUSTER_TOML).expect("cluster");
        let inv = Inventory::of_cluster(&cluster);
        let text = inv.to_toml();
        let back = Inventory::parse(&text).expect(&text);
        assert_eq!(back.agents.len(), cluster.nodes.len());
        let caps = |name: &str| back.service(name).expect(name).capabilities();
        assert!(caps("search").contains(&Capability::StartAnother));
        assert!(!caps("catalog").contains(&Capability::StartAnother), "a database is not started blank");
        let policies = crate::policy::PolicyFile::parse(include_str!("../../config/policies.yaml")).expect("policies");
        crate::executor::check_policies(&policies, &back).expect("the demo's policies fit the demo's inventory");
    }

    #[test]
    fn the_shipped_example_reads() {
        let inv = Inventory::parse(include_str!("../../config/examples/healer.toml")).expect("the example");
        let ledger = inv.service("ledger").expect("ledger");
        assert!(ledger.capabilities().contains(&Capability::Promote), "the protocol");
    }

    #[test]
    fn mistakes_are_refused_with_the_line() {
        for (edit, says, line) in [
            (SAMPLE.replace("nodes = [\"node-1\"]", "nodes = [\"node-9\"]"), "node \"node-9\" has no entry", 12),
            (SAMPLE.replace("load_balancer = \"edge\"", "load_balancer = \"nope\""), "not in [load_balancers]", 13),
            (SAMPLE.replace("executor = \"exec\"", "executor = \"agent\""), "commands are for the exec executor", 17),
            (SAMPLE.replace("executor = \"http\"", "executor = \"kubernetes\""), "needs [services.kubernetes]", 22),
            (SAMPLE.replace("restart = [", "rstart = ["), "unknown field `rstart`", 18),
        ] {
            let e = Inventory::parse(&edit).expect_err(says);
            assert!(e.message.contains(says), "{}", e.message);
            assert_eq!(e.line, Some(line), "{says}: {}", e.message);
        }
    }
}
