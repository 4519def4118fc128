//! `cluster.toml`: the nodes of a cluster, the services placed on them, and the shop's
//! accounts and secrets. Parsed once, validated into addresses every component agrees on.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{ConfigError, line_of};

/// The five services of the demo shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    Gateway,
    Auth,
    Catalog,
    Search,
    Orders,
}

impl ServiceKind {
    pub const ALL: [ServiceKind; 5] =
        [ServiceKind::Gateway, ServiceKind::Auth, ServiceKind::Catalog, ServiceKind::Search, ServiceKind::Orders];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Gateway => "gateway",
            ServiceKind::Auth => "auth",
            ServiceKind::Catalog => "catalog",
            ServiceKind::Search => "search",
            ServiceKind::Orders => "orders",
        }
    }
}

impl std::fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ServiceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown service {s:?} (expected gateway, auth, catalog, search or orders)"))
    }
}

/// What a replica does in its service. Only the catalog has more than one role: its first
/// replica starts as the primary and the others follow it as standbys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Standby,
    /// A former primary that learned of a newer epoch: it serves reads, refuses writes.
    Fenced,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Fenced => "fenced",
        })
    }
}

/// One host of the cluster. In the embedded cluster a node is a loopback address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node name, as it appears in every `node` label (`node-1`).
    pub name: String,
    /// Address every replica placed on this node binds to.
    pub ip: Ipv4Addr,
}

/// Where one service's replicas run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: Spanned<ServiceKind>,
    /// One entry per replica: the node it runs on. Replica `n` is named `<service>-<n>`.
    /// For the catalog the first replica starts as primary, the rest as standbys.
    pub replicas: Vec<Spanned<String>>,
    /// A replica's capacity: at most this many API requests at once; more wait for a
    /// free slot (up to 2 s, then 503 `overloaded`). Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// A request of this service at least this long (ms) is traced even when its trace
    /// was not sampled. Absent: 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_slow_ms: Option<u64>,
}

/// The single entry point of the shop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Node whose supervisor runs the gateway.
    pub node: Spanned<String>,
    /// Address the gateway serves on (`127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// As a service's `trace_slow_ms`, for the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_slow_ms: Option<u64>,
}

/// Where the healer runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealerPlacement {
    /// Address the healer serves on (`127.0.0.1:9465`); the collector's webhooks go there.
    pub listen: SocketAddr,
}

fn default_healer() -> HealerPlacement {
    HealerPlacement { listen: SocketAddr::from(([127, 0, 0, 1], 9465)) }
}

/// Where the collector runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorPlacement {
    /// Address the collector serves on (`127.0.0.1:9464`); agents remote_write to it.
    pub listen: SocketAddr,
}

/// Shared secrets of the shop. `hale up` hands them to children through the environment
/// and a 0600 config file, never on a command line. A cluster.toml without `[secrets]`
/// (the embedded demo) gets fresh random ones when it is read ([`Secrets::generate`]);
/// `hale up` keeps those in its data dir so a restart finds them again.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// HMAC key for the HS256 access tokens every service verifies (at least 32 bytes).
    pub jwt_secret: String,
    /// AES-256-GCM key for data at rest, 64 hex digits.
    pub encryption_key: String,
    /// Bearer token of the admin APIs (`/admin/*`).
    pub admin_token: String,
    /// The orders service's OAuth client secret (client_credentials grant to reserve stock).
    pub orders_client_secret: String,
    /// Bearer token of the node agents' actuator API.
    pub agent_token: String,
    /// Bearer token agents present to the collector when shipping.
    pub ingest_token: String,
    /// Bearer token the shop's services export spans with: `/v1/traces` only. A
    /// `[secrets]` written before it existed gets a fresh one at each read.
    #[serde(default = "crate::auth::random_token")]
    pub traces_token: String,
    /// True when these were generated because the file had no `[secrets]`.
    #[serde(skip)]
    pub generated: bool,
}

impl Secrets {
    /// Fresh random secrets from the operating system's generator: 256 bits each.
    pub fn generate() -> Secrets {
        let random = crate::auth::random_token;
        Secrets {
            jwt_secret: random(),
            encryption_key: random(),
            admin_token: random(),
            orders_client_secret: random(),
            agent_token: random(),
            ingest_token: random(),
            traces_token: random(),
            generated: true,
        }
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

/// A shop user of the password grant. Only the Argon2 hash of the password is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub username: String,
    /// PHC string (`$argon2id$v=19$...`).
    pub password_hash: String,
    /// Space-separated OAuth scopes granted to the user.
    pub scope: String,
}

/// An OAuth client of the client_credentials grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    /// PHC string of the client secret. A client without one cannot authenticate until
    /// it is given one; `hale up` gives the `orders` client the hash of
    /// `secrets.orders_client_secret` when it has none or the secrets were generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    pub scope: String,
}

/// A demo account `hale up` prints and its load generator uses. Demo clusters only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoLogin {
    pub username: String,
    pub password: crate::secret::Secret<String>,
}

fn default_first_port() -> u16 {
    8081
}
fn default_token_ttl_secs() -> u64 {
    3600
}
fn default_agent_port() -> u16 {
    9100
}

fn default_time_scale() -> f64 {
    1.0
}

fn default_trace_sample_ratio() -> f64 {
    0.1
}

fn yes() -> bool {
    true
}

/// A whole cluster: `cluster.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Replicas get consecutive ports from here, in the order the services list them.
    #[serde(default = "default_first_port")]
    pub first_port: u16,
    /// Lifetime of the access tokens the auth service issues.
    #[serde(default = "default_token_ttl_secs")]
    pub token_ttl_secs: u64,
    /// Port of every node agent, on its node's address.
    #[serde(default = "default_agent_port")]
    pub agent_port: u16,
    /// SLO windows are multiplied by this (Sloth's 5m…30d); below 1 only for demos, so a
    /// burn-rate page fires within seconds instead of minutes.
    #[serde(default = "default_time_scale")]
    pub time_scale: f64,
    /// The share of the shop's requests traced from end to end (head sampling, 0 to 1);
    /// failed and slow requests are traced whatever it says.
    #[serde(default = "default_trace_sample_ratio")]
    pub trace_sample_ratio: f64,
    /// Whether the shop's replicas and Hale's own components send spans to the collector.
    #[serde(default = "yes")]
    pub traces: bool,
    /// Every component of the cluster serves HTTPS and is reached at `https://` URLs (each
    /// one's certificate, key and CA come from its own `--tls-*` flags: they differ per
    /// host, this file does not). `hale up --tls` sets it.
    #[serde(default)]
    pub tls: bool,
    pub gateway: GatewayConfig,
    pub collector: CollectorPlacement,
    #[serde(default = "default_healer")]
    pub healer: HealerPlacement,
    pub nodes: Vec<NodeConfig>,
    pub services: Vec<ServiceConfig>,
    #[serde(default = "Secrets::generate")]
    pub secrets: Secrets,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub demo_logins: Vec<DemoLogin>,
}

/// One replica with its resolved address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `<service>-<n>`, n from 1.
    pub name: String,
    pub service: ServiceKind,
    pub node: String,
    pub listen: SocketAddr,
    /// Starting role (catalog: the first replica is primary).
    pub role: Role,
    /// Served over TLS (the cluster's `tls`).
    pub tls: bool,
}

impl Instance {
    /// Base URL of the replica (`http://127.0.1.2:8083`, or `https://` in a TLS cluster).
    pub fn url(&self) -> String {
        base_url(self.tls, self.listen)
    }
}

/// `http://addr` or `https://addr`: the one place a cluster address becomes a URL.
pub fn base_url(tls: bool, addr: SocketAddr) -> String {
    format!("{}://{addr}", if tls { "https" } else { "http" })
}

impl ClusterConfig {
    /// The configured capacity of one replica of `service` (see [`ServiceConfig`]).
    pub fn max_in_flight(&self, service: ServiceKind) -> Option<usize> {
        self.services.iter().find(|s| *s.name.get_ref() == service).and_then(|s| s.max_in_flight)
    }

    /// What counts as slow for `service`'s traces, when configured (see [`ServiceConfig`]).
    pub fn trace_slow_ms(&self, service: ServiceKind) -> Option<u64> {
        if service == ServiceKind::Gateway {
            return self.gateway.trace_slow_ms;
        }
        self.services.iter().find(|s| *s.name.get_ref() == service).and_then(|s| s.trace_slow_ms)
    }

    /// Parses and validates `cluster.toml`; errors carry the line they refer to.
    pub fn parse(source: &str) -> Result<Self, ConfigError> {
        let config: ClusterConfig =
            toml::from_str(source).map_err(|e| ConfigError::at(source, e.span(), e.message().trim().to_string()))?;
        config.validate(source)?;
        Ok(config)
    }

    /// Serializes back to TOML (used to hand the effective config to child processes).
    pub fn to_toml(&self) -> String {
        // Serializing plain data structures to TOML cannot fail: every field is a table,
        // an array of tables or a scalar.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let key_error = |key: &str, message: String| ConfigError { line: find_key_line(source, key), message };
        if self.nodes.is_empty() {
            return Err(key_error("nodes", "at least one [[nodes]] entry is required".into()));
        }
        if !(self.time_scale > 0.0 && self.time_scale <= 1.0) {
            return Err(key_error(
                "time_scale",
                "time_scale must be more than 0 and at most 1 (1 in production)".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            return Err(key_error(
                "trace_sample_ratio",
                "trace_sample_ratio must be from 0 (only failed and slow requests) to 1 (every request)".into(),
            ));
        }
        let mut names = HashSet::new();
        let mut ips = HashSet::new();
        for node in &self.nodes {
            if !names.insert(node.name.as_str()) {
                return Err(key_error("name", format!("node {:?} is defined twice", node.name)));
            }
            if !ips.insert(node.ip) {
                return Err(key_error("ip", format!("two nodes share the address {}", node.ip)));
            }
        }
        let node_exists = |name: &Spanned<String>| -> Result<(), ConfigError> {
            if names.contains(name.get_ref().as_str()) {
                Ok(())
            } else {
                Err(ConfigError::at(
                    source,
                    Some(name.span()),
                    format!(
                        "unknown node {:?}; defined nodes: {}",
                        name.get_ref(),
                        self.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ))
            }
        };
        node_exists(&self.gateway.node)?;
        if self.gateway.trace_slow_ms.is_some_and(|ms| !(1..=600_000).contains(&ms)) {
            return Err(ConfigError::at(
                source,
                Some(self.gateway.node.span()),
                "gateway: trace_slow_ms must be between 1 and 600000 (10 minutes)".to_string(),
            ));
        }
        let mut seen = HashSet::new();
        for service in &self.services {
            let kind = *service.name.get_ref();
            if kind == ServiceKind::Gateway {
                return Err(ConfigError::at(
                    source,
                    Some(service.name.span()),
                    "the gateway is configured in the [gateway] table, not in [[services]]".into(),
                ));
            }
            if !seen.insert(kind) {
                return Err(ConfigError::at(
                    source,
                    Some(service.name.span()),
                    format!("service {kind} is listed twice"),
                ));
            }
            if service.replicas.is_empty() {
                return Err(ConfigError::at(
                    source,
                    Some(service.name.span()),
                    format!("service {kind} needs at least one replica"),
                ));
            }
            for replica in &service.replicas {
                node_exists(replica)?;
            }
            if service.max_in_flight.is_some_and(|n| !(1..=100_000).contains(&n)) {
                return Err(ConfigError::at(
                    source,
                    Some(service.name.span()),
                    format!("service {kind}: max_in_flight must be between 1 and 100000"),
                ));
            }
            if service.trace_slow_ms.is_some_and(|ms| !(1..=600_000).contains(&ms)) {
                return Err(ConfigError::at(
                    source,
                    Some(service.name.span()),
                    format!("service {kind}: trace_slow_ms must be between 1 and 600000 (10 minutes)"),
                ));
            }
        }
        for kind in [ServiceKind::Auth, ServiceKind::Catalog, ServiceKind::Search, ServiceKind::Orders] {
            if !seen.contains(&kind) {
                return Err(key_error("services", format!("service {kind} is missing from [[services]]")));
            }
        }
        let instances = self.instances();
        let last_port = u32::from(self.first_port) + instances.len() as u32;
        if last_port > u32::from(u16::MAX) {
            return Err(key_error("first_port", "first_port leaves no room for every replica".into()));
        }
        if self.secrets.jwt_secret.len() < 32 {
            return Err(key_error("jwt_secret", "jwt_secret must be at least 32 characters".into()));
        }
        if self.secrets.encryption_key.len() != 64
            || !self.secrets.encryption_key.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(key_error(
                "encryption_key",
                "encryption_key must be 64 hex digits (a 256-bit key); generate one with `openssl rand -hex 32`".into(),
            ));
        }
        if self.secrets.ingest_token.len() < 16 {
            return Err(key_error("ingest_token", "ingest_token must be at least 16 characters".into()));
        }
        if self.secrets.agent_token.len() < 16 {
            return Err(key_error("agent_token", "agent_token must be at least 16 characters".into()));
        }
        if self.secrets.admin_token.len() < 16 {
            return Err(key_error("admin_token", "admin_token must be at least 16 characters".into()));
        }
        for user in &self.users {
            if !user.password_hash.starts_with("$argon2") {
                return Err(key_error(
                    "password_hash",
                    format!(
                        "user {:?}: password_hash must be an Argon2 PHC string (`hale shop hash-password`)",
                        user.username
                    ),
                ));
            }
        }
        for client in &self.clients {
            if client.secret_hash.as_ref().is_some_and(|h| !h.starts_with("$argon2")) {
                return Err(key_error(
                    "secret_hash",
                    format!("client {:?}: secret_hash must be an Argon2 PHC string", client.client_id),
                ));
            }
        }
        Ok(())
    }

    /// The base URL of a component listening on `addr` in this cluster (`http://` or,
    /// with `tls`, `https://`).
    pub fn url(&self, addr: SocketAddr) -> String {
        base_url(self.tls, addr)
    }

    /// The IP of a node by name.
    pub fn node_ip(&self, node: &str) -> Option<Ipv4Addr> {
        self.nodes.iter().find(|n| n.name == node).map(|n| n.ip)
    }

    /// Every replica of the cluster, gateway first, then the services in file order.
    /// Ports are handed out consecutively from `first_port`.
    pub fn instances(&self) -> Vec<Instance> {
        let mut out = vec![Instance {
            name: "gateway-1".into(),
            service: ServiceKind::Gateway,
            node: self.gateway.node.get_ref().clone(),
            listen: self.gateway.listen,
            role: Role::Primary,
            tls: self.tls,
        }];
        let mut port = self.first_port;
        for service in &self.services {
            let kind = *service.name.get_ref();
            for (i, node) in service.replicas.iter().enumerate() {
                let ip = self.node_ip(node.get_ref()).unwrap_or(Ipv4Addr::LOCALHOST);
                let role = if kind == ServiceKind::Catalog && i > 0 { Role::Standby } else { Role::Primary };
                out.push(Instance {
                    name: format!("{kind}-{}", i + 1),
                    service: kind,
                    node: node.get_ref().clone(),
                    listen: SocketAddr::new(IpAddr::V4(ip), port),
                    role,
                    tls: self.tls,
                });
                port = port.saturating_add(1);
            }
        }
        out
    }

    /// Address of a node's agent.
    pub fn agent_listen(&self, node: &NodeConfig) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(node.ip), self.agent_port)
    }

    /// Replicas of one service.
    pub fn instances_of(&self, kind: ServiceKind) -> Vec<Instance> {
        self.instances().into_iter().filter(|i| i.service == kind).collect()
    }

    /// Moves every node to `<prefix>.<n>` (n from 1), so a second cluster can run beside
    /// the default one. `prefix` is three octets, such as `127.0.2`.
    pub fn set_ip_prefix(&mut self, prefix: &str) -> Result<(), ConfigError> {
        let err = || ConfigError {
            line: None,
            message: format!("--ip-prefix {prefix:?}: expected three octets such as 127.0.2"),
        };
        let octets: Vec<u8> = prefix.split('.').map(|p| p.parse().map_err(|_| err())).collect::<Result<_, _>>()?;
        if octets.len() != 3 {
            return Err(err());
        }
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let host = u8::try_from(i + 1).map_err(|_| err())?;
            node.ip = Ipv4Addr::new(octets[0], octets[1], octets[2], host);
        }
        Ok(())
    }

    /// Sets the number of nodes. Extra nodes are added as `node-<n>` on the next address of
    /// the first node's /24; replicas on removed nodes move round-robin to those that stay.
    pub fn set_node_count(&mut self, count: usize) -> Result<(), ConfigError> {
        if count == 0 || count > 200 {
            return Err(ConfigError { line: None, message: "--nodes must be between 1 and 200".into() });
        }
        while self.nodes.len() < count {
            let base = self.nodes[0].ip.octets();
            let n = self.nodes.len() + 1;
            self.nodes
                .push(NodeConfig { name: format!("node-{n}"), ip: Ipv4Addr::new(base[0], base[1], base[2], n as u8) });
        }
        if self.nodes.len() > count {
            self.nodes.truncate(count);
            let kept: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
            let mut next = 0;
            let mut reassign = |node: &mut Spanned<String>| {
                if !kept.contains(node.get_ref()) {
                    *node = Spanned::new(node.span(), kept[next % kept.len()].clone());
                    next += 1;
                }
            };
            reassign(&mut self.gateway.node);
            for service in &mut self.services {
                service.replicas.iter_mut().for_each(&mut reassign);
            }
        }
        Ok(())
    }

    /// Shifts every port (gateway and replicas) by `offset`.
    pub fn add_port_offset(&mut self, offset: u16) -> Result<(), ConfigError> {
        let overflow =
            || ConfigError { line: None, message: format!("--port-offset {offset} pushes ports past 65535") };
        self.first_port = self.first_port.checked_add(offset).ok_or_else(overflow)?;
        self.agent_port = self.agent_port.checked_add(offset).ok_or_else(overflow)?;
        let port = self.gateway.listen.port().checked_add(offset).ok_or_else(overflow)?;
        self.gateway.listen.set_port(port);
        let port = self.collector.listen.port().checked_add(offset).ok_or_else(overflow)?;
        self.collector.listen.set_port(port);
        let port = self.healer.listen.port().checked_add(offset).ok_or_else(overflow)?;
        self.healer.listen.set_port(port);
        Ok(())
    }

    /// Gives the control plane a host of its own: node `name` at `ip`, whose agent runs
    /// the gateway, beside the collector and the healer (`hale up --netns`, where every
    /// host is a network namespace of its own).
    pub fn add_control_host(&mut self, name: &str, ip: Ipv4Addr) -> Result<(), ConfigError> {
        if let Some(n) = self.nodes.iter().find(|n| n.name == name || n.ip == ip) {
            return Err(ConfigError {
                line: None,
                message: format!("the control host {name} ({ip}) clashes with node {} ({})", n.name, n.ip),
            });
        }
        self.nodes.push(NodeConfig { name: name.to_string(), ip });
        self.gateway.node = Spanned::new(self.gateway.node.span(), name.to_string());
        self.set_control_ip(IpAddr::V4(ip));
        Ok(())
    }

    /// Moves the control plane (the gateway, the collector and the healer) to another IP.
    pub fn set_control_ip(&mut self, ip: IpAddr) {
        self.gateway.listen.set_ip(ip);
        self.collector.listen.set_ip(ip);
        self.healer.listen.set_ip(ip);
    }
}

/// Line of the first `key =` in the file, for errors about values that carry no span.
fn find_key_line(source: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let is_table = trimmed.starts_with(&format!("[{key}]")) || trimmed.starts_with(&format!("[[{key}]]"));
        let is_key = trimmed.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='));
        if is_table || is_key {
            return Some(line_of(source, offset));
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_CLUSTER_TOML;

    fn default() -> ClusterConfig {
        ClusterConfig::parse(DEFAULT_CLUSTER_TOML).expect("embedded config parses")
    }

    #[test]
    fn embedded_default_matches_design_topology() {
        let c = default();
        let names: Vec<String> = c.instances().into_iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            ["gateway-1", "auth-1", "auth-2", "catalog-1", "catalog-2", "search-1", "search-2", "orders-1", "orders-2"]
        );
        let gateway = &c.instances()[0];
        assert_eq!(gateway.listen, "127.0.0.1:8080".parse().expect("addr"));
        for i in c.instances().iter().skip(1) {
            assert!(i.listen.port() >= 8081);
            assert_eq!(i.listen.ip(), IpAddr::V4(c.node_ip(&i.node).expect("node")));
        }
        let catalog = c.instances_of(ServiceKind::Catalog);
        assert_eq!(catalog[0].role, Role::Primary);
        assert_eq!(catalog[1].role, Role::Standby);
        assert_ne!(catalog[0].node, catalog[1].node, "primary and standby on different nodes");
    }

    #[test]
    fn overrides_move_every_address() {
        let mut c = default();
        c.set_ip_prefix("127.0.9").expect("prefix");
        c.add_port_offset(1000).expect("offset");
        c.set_control_ip("127.0.9.200".parse().expect("ip"));
        for i in c.instances() {
            assert!(i.listen.ip().to_string().starts_with("127.0.9."), "{i:?}");
            assert!(i.listen.port() >= 9080, "{i:?}");
        }
        assert_eq!(c.collector.listen, "127.0.9.200:10464".parse().expect("addr"));
        assert!(c.set_ip_prefix("127.0").is_err());
        assert!(c.set_ip_prefix("127.0.x").is_err());
    }

    #[test]
    fn node_count_reassigns_replicas() {
        let mut c = default();
        c.set_node_count(1).expect("one node");
        assert!(c.instances().iter().all(|i| i.node == "node-1"));
        c.set_node_count(4).expect("four");
        assert_eq!(c.nodes[3].name, "node-4");
        assert_eq!(c.nodes[3].ip, Ipv4Addr::new(127, 0, 1, 4));
    }

    #[test]
    fn unknown_node_is_reported_with_its_line() {
        let src = DEFAULT_CLUSTER_TOML.replacen(
            "replicas = [\"node-1\", \"node-2\"]",
            "replicas = [\"node-1\", \"node-9\"]",
            1,
        );
        let err = ClusterConfig::parse(&src).expect_err("must fail");
        let expected = src.lines().position(|l| l.contains("node-9")).expect("line") + 1;
        assert_eq!(err.line, Some(expected));
        assert!(err.message.contains("unknown node \"node-9\""), "{err}");
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let src = format!("{DEFAULT_CLUSTER_TOML}\n[gateway2]\nlisten = 1\n");
        let err = ClusterConfig::parse(&src).expect_err("must fail");
        assert!(err.to_string().starts_with("line "), "{err}");
        assert!(err.message.contains("gateway2"), "{err}");
    }

    #[test]
    fn bad_encryption_key_names_the_fix() {
        let c = default();
        let secrets = toml::to_string(&c.secrets).expect("toml").replace(&c.secrets.encryption_key, "abc");
        let src = format!("{DEFAULT_CLUSTER_TOML}\n[secrets]\n{secrets}");
        let err = ClusterConfig::parse(&src).expect_err("must fail");
        assert!(err.message.contains("openssl rand -hex 32"), "{err}");
        assert!(err.line.is_some());
    }

    #[test]
    fn each_service_may_set_what_is_slow_for_its_traces() {
        let src = DEFAULT_CLUSTER_TOML
            .replacen("max_in_flight = 4", "max_in_flight = 4\ntrace_slow_ms = 2000", 1)
            .replacen("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:8080\"\ntrace_slow_ms = 800", 1);
        let c = ClusterConfig::parse(&src).expect("valid");
        assert_eq!(c.trace_slow_ms(ServiceKind::Search), Some(2000));
        assert_eq!(c.trace_slow_ms(ServiceKind::Gateway), Some(800));
        assert_eq!(c.trace_slow_ms(ServiceKind::Orders), None, "the default");
        let again = ClusterConfig::parse(&c.to_toml()).expect("reparse");
        assert_eq!(again.trace_slow_ms(ServiceKind::Search), Some(2000));
        let bad = DEFAULT_CLUSTER_TOML.replacen("max_in_flight = 4", "max_in_flight = 4\ntrace_slow_ms = 0", 1);
        let err = ClusterConfig::parse(&bad).expect_err("0 ms is refused");
        assert!(err.message.contains("trace_slow_ms must be between"), "{err}");
        assert!(err.line.is_some());
    }

    #[test]
    fn round_trips_through_toml() {
        let c = default();
        let again = ClusterConfig::parse(&c.to_toml()).expect("reparse");
        assert_eq!(again.instances(), c.instances());
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let c = default();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(&c.secrets.jwt_secret));
        assert!(!dbg.contains(&c.secrets.admin_token));
        assert!(!dbg.contains(&c.secrets.agent_token));
        assert!(!dbg.contains(&c.secrets.ingest_token));
    }
}
