//! Executors: what carries a repair out on a service, behind one trait. Each declares its
//! capabilities; a policy whose action needs one its service's executor lacks is refused
//! when the policies are loaded ([`check_policies`]), and again, permanently, for an
//! alert whose service turns out not to have it.
//!
//! - `agent`: the node agents' actuators (restart, stop, start another from the agent's
//!   own template) — replicas the agents supervise and services they adopted.
//! - `exec`: a command from `healer.toml` per capability, run without a shell, the
//!   alert's labels in the environment (`HALE_LABEL_<NAME>`), never in its arguments.
//! - `http`: a signed `POST` (`X-Hale-Signature`) to the service's own admin endpoint.
//! - `kubernetes`: the API server (kube-rs), on a Deployment, StatefulSet or DaemonSet
//!   ([`crate::kubernetes`]): evict a pod, restart a rollout, scale, cordon.
//!
//! Load balancers are a step of their own ([`LoadBalancerClient`]): a started instance
//! is registered, an instance scaled in is deregistered first.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use hale_core::api::{ExecutorCall, StartedInstance};
use serde::Deserialize;

use crate::clients::{Agents, ClientError, Gateway};
use crate::engine::ActionError;
use crate::inventory::{ExecutorKind, Inventory, LoadBalancer, Service};
use crate::policy::{ActionKind, PolicyFile};
use crate::state::Labels;

/// Something an executor can do to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Restart,
    Stop,
    /// Start one more instance (scale-out, reschedule).
    StartAnother,
    /// Take an instance out of traffic.
    Drain,
    /// Make a standby the primary under a new epoch (failover).
    Promote,
    /// Cut an old primary off from writes.
    Fence,
    /// Make a fenced old primary a standby of the new one.
    Rejoin,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Capability::Restart,
        Capability::Stop,
        Capability::StartAnother,
        Capability::Drain,
        Capability::Promote,
        Capability::Fence,
        Capability::Rejoin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Restart => "restart",
            Capability::Stop => "stop",
            Capability::StartAnother => "start_another",
            Capability::Drain => "drain",
            Capability::Promote => "promote",
            Capability::Fence => "fence",
            Capability::Rejoin => "rejoin",
        }
    }

    /// What an action needs of its service's executor. Exec and webhook actions run the
    /// healer's own command or call, so they need nothing of it.
    pub fn needed_by(kind: ActionKind) -> &'static [Capability] {
        match kind {
            ActionKind::Restart => &[Capability::Restart],
            ActionKind::ScaleOut | ActionKind::Reschedule => &[Capability::StartAnother],
            ActionKind::ScaleIn => &[Capability::Stop],
            ActionKind::Failover => &[Capability::Promote, Capability::Fence],
            ActionKind::Rejoin => &[Capability::Rejoin],
            ActionKind::Exec | ActionKind::Webhook => &[],
        }
    }
}

/// What a service can have done to it: its executor's capabilities, and a load balancer's
/// (any drains; the shop gateway's pools also carry the failover protocol: promote with
/// a new epoch, which fences the old primary, and rejoin).
pub fn capabilities(inventory: &Inventory, service: &Service) -> BTreeSet<Capability> {
    let mut caps = service.capabilities();
    match service.load_balancer.as_ref().and_then(|lb| inventory.load_balancers.get(lb)) {
        Some(LoadBalancer::Gateway { .. }) => {
            caps.extend([Capability::Drain, Capability::Promote, Capability::Fence, Capability::Rejoin])
        }
        Some(LoadBalancer::Exec { .. }) => {
            caps.insert(Capability::Drain);
        }
        None => {}
    }
    caps
}

/// Refuses a policy set that asks an executor for what it cannot do: a policy naming its
/// service (`match: {service: x}` or a `match_re` on `service`) needs every such service
/// in the inventory to have the action's capabilities, and at least one to exist; a
/// policy that names none needs some service able to.
pub fn check_policies(policies: &PolicyFile, inventory: &Inventory) -> Result<(), String> {
    for p in &policies.policies {
        let needed = Capability::needed_by(p.action);
        if needed.is_empty() {
            continue;
        }
        let named: Vec<&Service> = inventory
            .services
            .iter()
            .filter(|s| {
                p.match_eq.get("service").is_none_or(|v| *v == s.name)
                    && p.match_re.get("service").is_none_or(|re| re.0.is_match(&s.name))
            })
            .collect();
        let names_service = p.match_eq.contains_key("service") || p.match_re.contains_key("service");
        let lacking = |s: &Service| {
            let caps = capabilities(inventory, s);
            needed.iter().copied().filter(|c| !caps.contains(c)).map(Capability::as_str).collect::<Vec<_>>()
        };
        let describe = |s: &Service| {
            let caps: Vec<&str> = capabilities(inventory, s).into_iter().map(Capability::as_str).collect();
            format!("service {:?} (executor {}: {})", s.name, s.executor.as_str(), caps.join(", "))
        };
        let action = serde_json::to_value(p.action).ok().and_then(|v| v.as_str().map(str::to_string));
        let action = action.unwrap_or_default();
        if named.is_empty() {
            return Err(format!(
                "policy {:?}: no service of the inventory (healer.toml) matches it; list the service it acts on",
                p.name
            ));
        }
        if names_service {
            if let Some(s) = named.iter().find(|s| !lacking(s).is_empty()) {
                return Err(format!(
                    "policy {:?}: action {action} needs {}, which {} cannot do",
                    p.name,
                    lacking(s).join(" and "),
                    describe(s)
                ));
            }
        } else if named.iter().all(|s| !lacking(s).is_empty()) {
            return Err(format!(
                "policy {:?}: action {action} needs {}, and no service of the inventory can do it ({})",
                p.name,
                needed.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(" and "),
                named.iter().map(|s| describe(s)).collect::<Vec<_>>().join("; ")
            ));
        }
    }
    Ok(())
}

/// What an action asks of an executor.
#[derive(Debug, Clone)]
pub struct Request {
    pub action_id: String,
    pub service: String,
    pub instance: Option<String>,
    pub node: Option<String>,
    /// The instance's base URL, where known (its pool entry); else `http://{instance}`.
    pub url: Option<String>,
    /// The alert's labels.
    pub labels: Labels,
    /// The wait between SIGTERM and SIGKILL for a restart through an agent.
    pub grace: Option<Duration>,
    /// The action this call is part of (a start on a lost node's behalf is a reschedule).
    pub kind: crate::policy::ActionKind,
}

/// What an executor did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acted {
    Done(String),
    /// A new instance: its name, node (if the executor placed it) and URL (if known).
    Started {
        instance: String,
        node: Option<String>,
        url: Option<String>,
    },
}

pub type Acting<'a> = Pin<Box<dyn Future<Output = Result<Acted, ActionError>> + Send + 'a>>;
pub type Settling<'a> = Pin<Box<dyn Future<Output = Result<bool, ActionError>> + Send + 'a>>;

/// One way of acting on services.
pub trait Executor: Send + Sync {
    fn kind(&self) -> ExecutorKind;
    /// Only these are ever asked of it.
    fn can(&self, capability: Capability) -> bool;
    fn act<'a>(&'a self, capability: Capability, request: &'a Request) -> Acting<'a>;
    /// Whether the service has settled after an action, as its executor can read it (a
    /// Kubernetes workload's rollout and ready replicas); a repair is verified only once
    /// it has. `None`: the executor cannot tell, the alert and readiness decide alone.
    fn settled<'a>(&'a self) -> Option<Settling<'a>> {
        None
    }
}

/// Through the node agents' actuators.
pub struct AgentExecutor {
    pub agents: std::sync::Arc<Agents>,
}

impl Executor for AgentExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Agent
    }

    fn can(&self, capability: Capability) -> bool {
        matches!(capability, Capability::Restart | Capability::Stop | Capability::StartAnother)
    }

    fn act<'a>(&'a self, capability: Capability, r: &'a Request) -> Acting<'a> {
        Box::pin(async move {
            let node = r.node.as_deref().ok_or("the alert names no node for the agent to act on")?;
            match capability {
                Capability::Restart => {
                    let instance = r.instance.as_deref().ok_or("the alert names no instance to restart")?;
                    self.agents.restart(node, instance, r.grace).await?;
                    Ok(Acted::Done(format!("restarted {instance} through the agent on {node}")))
                }
                Capability::Stop => {
                    let instance = r.instance.as_deref().ok_or("the alert names no instance to stop")?;
                    self.agents.stop(node, instance).await?;
                    Ok(Acted::Done(format!("stopped {instance} through the agent on {node}")))
                }
                Capability::StartAnother => {
                    let (instance, url) = self.agents.start(node, &r.service).await?;
                    Ok(Acted::Started { instance, node: Some(node.to_string()), url: Some(url) })
                }
                Capability::Drain | Capability::Promote | Capability::Fence | Capability::Rejoin => {
                    Err(format!("the agent executor cannot {}", capability.as_str()).into())
                }
            }
        })
    }
}

/// The environment a command or hook runs with: what it acts on, and the alert's labels
/// as `HALE_LABEL_<NAME>` (upper case, other characters as `_`). Never arguments: a label
/// value is data, not a word of a command.
pub fn environment(r: &Request, capability: Capability) -> Vec<(String, String)> {
    let mut env = vec![
        ("HALE_ACTION".to_string(), capability.as_str().to_string()),
        ("HALE_ACTION_ID".to_string(), r.action_id.clone()),
        ("HALE_SERVICE".to_string(), r.service.clone()),
    ];
    for (key, value) in [("HALE_INSTANCE", &r.instance), ("HALE_NODE", &r.node), ("HALE_URL", &r.url)] {
        if let Some(value) = value {
            env.push((key.to_string(), value.clone()));
        }
    }
    for (name, value) in &r.labels {
        let name: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        env.push((format!("HALE_LABEL_{name}"), value.clone()));
    }
    env
}

/// Runs `argv` without a shell, with `env`, within `timeout`; its stdout (64 KiB at most)
/// or why it failed, with the end of its stderr.
pub async fn run_command(argv: &[String], env: &[(String, String)], timeout: Duration) -> Result<String, ActionError> {
    use tokio::io::AsyncReadExt;
    let (program, args) = argv.split_first().ok_or("no command")?;
    let mut command = tokio::process::Command::new(program);
    // The healer's tokens and webhook secret are not the hook's: it gets what it acts on.
    for key in hale_core::withheld_from_children(|name| env.iter().any(|(k, _)| k == name)) {
        command.env_remove(key);
    }
    let mut child = command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {program}: {e}"))?;
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let read = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(64 * 1024).read_to_end(&mut out).await;
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(64 * 1024).read_to_end(&mut err).await;
        }
        let status = child.wait().await;
        (status, out, err)
    };
    let (status, out, err) = match tokio::time::timeout(timeout, read).await {
        Ok(done) => done,
        Err(_) => {
            return Err(
                format!("{program} did not finish within {}; killed", humantime::format_duration(timeout)).into()
            );
        }
    };
    let status = status.map_err(|e| format!("waiting for {program}: {e}"))?;
    if status.success() {
        return Ok(String::from_utf8_lossy(&out).into_owned());
    }
    let err = String::from_utf8_lossy(&err);
    let tail: String = err.trim().chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect();
    Err(format!("{program} exited with {status}: {tail}").into())
}

/// What an executor's answer (a command's output, an endpoint's body) says it did: for
/// `start_another`, the instance it started (`{"instance": ..., "url": ...}`); else
/// `done`.
fn acted(capability: Capability, answer: &str, done: &str) -> Result<Acted, ActionError> {
    match capability {
        Capability::StartAnother => {
            let started: StartedInstance = serde_json::from_str(answer.trim()).map_err(|e| {
                format!("{done}: start_another must answer {{\"instance\": ..., \"url\": ...}} (JSON): {e}")
            })?;
            Ok(Acted::Started { instance: started.instance, node: started.node, url: started.url })
        }
        Capability::Restart
        | Capability::Stop
        | Capability::Drain
        | Capability::Promote
        | Capability::Fence
        | Capability::Rejoin => Ok(Acted::Done(done.to_string())),
    }
}

/// Commands from `healer.toml`.
pub struct ExecExecutor {
    pub commands: BTreeMap<Capability, Vec<String>>,
    pub timeout: Duration,
}

impl Executor for ExecExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Exec
    }

    fn can(&self, capability: Capability) -> bool {
        self.commands.contains_key(&capability)
    }

    fn act<'a>(&'a self, capability: Capability, r: &'a Request) -> Acting<'a> {
        Box::pin(async move {
            let argv = self.commands.get(&capability).ok_or_else(|| format!("no {} command", capability.as_str()))?;
            let out = run_command(argv, &environment(r, capability), self.timeout).await?;
            let what = r.instance.as_deref().unwrap_or(&r.service);
            acted(capability, &out, &format!("{} of {what} by {}", capability.as_str(), argv[0]))
        })
    }
}

/// Signed calls to the service's own admin endpoints.
pub struct HttpExecutor {
    pub endpoints: BTreeMap<Capability, String>,
    pub client: reqwest::Client,
    pub secret: Option<std::sync::Arc<[u8]>>,
    pub timeout: Duration,
}

impl Executor for HttpExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Http
    }

    fn can(&self, capability: Capability) -> bool {
        self.endpoints.contains_key(&capability)
    }

    fn act<'a>(&'a self, capability: Capability, r: &'a Request) -> Acting<'a> {
        Box::pin(async move {
            let template =
                self.endpoints.get(&capability).ok_or_else(|| format!("no {} endpoint", capability.as_str()))?;
            let instance = r.instance.clone().unwrap_or_default();
            let base = r.url.clone().unwrap_or_else(|| format!("http://{instance}"));
            let url = template.replace("{url}", base.trim_end_matches('/')).replace("{instance}", &instance);
            let body = serde_json::to_vec(&ExecutorCall {
                action: capability.as_str().to_string(),
                action_id: r.action_id.clone(),
                service: r.service.clone(),
                instance: r.instance.clone(),
                labels: r.labels.clone(),
            })
            .unwrap_or_default();
            let mut request = self.client.post(&url).timeout(self.timeout).header("content-type", "application/json");
            if let Some(secret) = &self.secret {
                let now = (hale_core::time::now_ms() / 1000).max(0) as u64;
                request =
                    request.header(hale_core::webhook::SIGNATURE_HEADER, hale_core::webhook::sign(secret, now, &body));
            }
            let what =
                format!("{} of {}", capability.as_str(), if instance.is_empty() { &r.service } else { &instance });
            let response = request
                .body(body)
                .send()
                .await
                .map_err(|error| ClientError::Transport { doing: what.clone(), error: error.without_url() })?;
            let (status, text) = crate::clients::success_text(response, &what).await?;
            acted(capability, &text, &format!("{what}: {status}"))
        })
    }
}

/// The secrets executors and load balancers act with.
pub struct Tokens {
    /// The node agents' actuator token.
    pub agent: Option<std::sync::Arc<hale_core::token::Token>>,
    /// The shop gateway's admin token.
    pub admin: Option<std::sync::Arc<hale_core::token::Token>>,
    /// Signs `http` executor calls.
    pub webhook_secret: Option<std::sync::Arc<[u8]>>,
    /// The Kubernetes API (in-cluster or a kubeconfig), for `kubernetes` services.
    pub kube: Option<kube::Client>,
}

/// Every inventory service's executor and every load balancer's client.
#[allow(clippy::type_complexity)]
pub fn build(
    inventory: &Inventory,
    client: &reqwest::Client,
    tokens: Tokens,
) -> Result<(BTreeMap<String, Box<dyn Executor>>, BTreeMap<String, LoadBalancerClient>), String> {
    const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    let uses_agents = inventory.services.iter().any(|s| s.executor == ExecutorKind::Agent);
    let agent_token = match (&tokens.agent, uses_agents) {
        (Some(token), _) => token.clone(),
        (None, false) => hale_core::token::Token::fixed(""),
        (None, true) => {
            return Err(
                "the agent executor needs the agents' actuator token: set HALE_AGENT_TOKEN (or --agent-token)".into()
            );
        }
    };
    let agents =
        std::sync::Arc::new(Agents { by_node: inventory.agents.clone(), token: agent_token, client: client.clone() });
    let mut executors: BTreeMap<String, Box<dyn Executor>> = BTreeMap::new();
    for s in &inventory.services {
        let timeout = s.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
        let executor: Box<dyn Executor> = match s.executor {
            ExecutorKind::Agent => Box::new(AgentExecutor { agents: agents.clone() }),
            ExecutorKind::Exec => Box::new(ExecExecutor {
                commands: Capability::ALL
                    .into_iter()
                    .filter(|c| !s.command(*c).is_empty())
                    .map(|c| (c, s.command(c).to_vec()))
                    .collect(),
                timeout,
            }),
            ExecutorKind::Http => Box::new(HttpExecutor {
                endpoints: s.endpoints.clone(),
                client: client.clone(),
                secret: tokens.webhook_secret.clone(),
                timeout,
            }),
            ExecutorKind::Kubernetes => {
                let client = tokens.kube.clone().ok_or_else(|| {
                    format!(
                        "service {:?}: the kubernetes executor needs the Kubernetes API (in-cluster, or --kubeconfig)",
                        s.name
                    )
                })?;
                let workload = s.kubernetes.clone().ok_or_else(|| {
                    format!("service {:?}: executor kubernetes needs [services.kubernetes] (namespace, kind)", s.name)
                })?;
                Box::new(crate::kubernetes::KubernetesExecutor { client, service: s.name.clone(), workload, timeout })
            }
        };
        executors.insert(s.name.clone(), executor);
    }
    let mut load_balancers = BTreeMap::new();
    for (name, lb) in &inventory.load_balancers {
        let client = match lb {
            LoadBalancer::Gateway { url } => {
                let admin_token = tokens.admin.clone().ok_or_else(|| {
                    format!("load balancer {name:?} (the gateway) needs its admin token: set HALE_ADMIN_TOKEN (or --admin-token)")
                })?;
                LoadBalancerClient::Gateway(std::sync::Arc::new(Gateway {
                    base: url.trim_end_matches('/').to_string(),
                    admin_token,
                    client: client.clone(),
                }))
            }
            LoadBalancer::Exec { register, deregister, timeout } => LoadBalancerClient::Exec {
                register: register.clone(),
                deregister: deregister.clone(),
                timeout: timeout.map_or(DEFAULT_TIMEOUT, |d| d.0),
            },
        };
        load_balancers.insert(name.clone(), client);
    }
    Ok((executors, load_balancers))
}

/// Registering instances for traffic, and taking them out.
pub enum LoadBalancerClient {
    Gateway(std::sync::Arc<Gateway>),
    Exec { register: Vec<String>, deregister: Vec<String>, timeout: Duration },
}

impl LoadBalancerClient {
    pub async fn register(&self, service: &str, instance: &str, url: &str) -> Result<(), ActionError> {
        match self {
            LoadBalancerClient::Gateway(gateway) => Ok(gateway.add_member(service, instance, url).await?),
            LoadBalancerClient::Exec { register, timeout, .. } => {
                run_command(register, &lb_env(service, instance, Some(url)), *timeout).await.map(drop)
            }
        }
    }

    /// Points a primary/standby service's writes at its new primary: the gateway's pool,
    /// or the `register` hook again with `HALE_ROLE=primary` and `HALE_EPOCH`.
    pub async fn set_primary(&self, service: &str, instance: &str, url: &str, epoch: u64) -> Result<(), ActionError> {
        match self {
            LoadBalancerClient::Gateway(gateway) => Ok(gateway.set_primary(service, instance, epoch).await?),
            LoadBalancerClient::Exec { register, timeout, .. } => {
                let mut env = lb_env(service, instance, Some(url));
                env.extend([
                    ("HALE_ROLE".to_string(), "primary".to_string()),
                    ("HALE_EPOCH".to_string(), epoch.to_string()),
                ]);
                run_command(register, &env, *timeout).await.map(drop)
            }
        }
    }

    pub async fn deregister(&self, service: &str, instance: &str) -> Result<(), ActionError> {
        match self {
            LoadBalancerClient::Gateway(gateway) => Ok(gateway.remove_member(service, instance).await?),
            LoadBalancerClient::Exec { deregister, timeout, .. } => {
                run_command(deregister, &lb_env(service, instance, None), *timeout).await.map(drop)
            }
        }
    }
}

fn lb_env(service: &str, instance: &str, url: Option<&str>) -> Vec<(String, String)> {
    let mut env =
        vec![("HALE_SERVICE".to_string(), service.to_string()), ("HALE_INSTANCE".to_string(), instance.to_string())];
    if let Some(url) = url {
        env.push(("HALE_URL".to_string(), url.to_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(labels: &[(&str, &str)]) -> Request {
        Request {
            action_id: "act-1".into(),
            service: "legacy".into(),
            instance: Some("legacy-1".into()),
            node: None,
            url: None,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            grace: None,
            kind: crate::policy::ActionKind::Restart,
        }
    }

    #[tokio::test]
    async fn exec_passes_labels_as_environment_never_as_words() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("out");
        let script = format!(
            "printf '%s|%s|%s' \"$HALE_INSTANCE\" \"$HALE_LABEL_ALERTNAME\" \"$HALE_LABEL_X_Y\" > {}",
            out.display()
        );
        let exec = ExecExecutor {
            commands: [(Capability::Restart, vec!["sh".into(), "-c".into(), script])].into(),
            timeout: Duration::from_secs(5),
        };
        let hostile = "$(touch /tmp/hale-pwned); rm -rf /";
        let r = request(&[("alertname", "ReplicaDown"), ("x-y", hostile)]);
        let acted = exec.act(Capability::Restart, &r).await.expect("runs");
        assert!(matches!(acted, Acted::Done(_)));
        assert_eq!(std::fs::read_to_string(&out).expect("out"), format!("legacy-1|ReplicaDown|{hostile}"));
        assert!(!std::path::Path::new("/tmp/hale-pwned").exists());
        assert!(!exec.can(Capability::Stop));
    }

    #[tokio::test]
    async fn exec_start_another_says_what_it_started_or_fails_clearly() {
        let start = |printed: &str| ExecExecutor {
            commands: [(Capability::StartAnother, vec!["echo".into(), printed.into()])].into(),
            timeout: Duration::from_secs(5),
        };
        let acted = start(r#"{"instance": "legacy-2", "url": "http://127.0.0.1:9"}"#)
            .act(Capability::StartAnother, &request(&[]))
            .await
            .expect("started");
        assert_eq!(
            acted,
            Acted::Started { instance: "legacy-2".into(), node: None, url: Some("http://127.0.0.1:9".into()) }
        );
        let e = start("ok").act(Capability::StartAnother, &request(&[])).await.expect_err("no JSON");
        assert!(e.to_string().contains("must answer"), "{e}");
        let slow = ExecExecutor {
            commands: [(Capability::Restart, vec!["sleep".into(), "5".into()])].into(),
            timeout: Duration::from_millis(100),
        };
        let e = slow.act(Capability::Restart, &request(&[])).await.expect_err("times out");
        assert!(e.to_string().contains("did not finish"), "{e}");
    }

    #[tokio::test]
    async fn http_calls_the_services_own_endpoint_signed_with_the_target_filled_in() {
        type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>, serde_json::Value)>>>;
        let seen: Seen = Default::default();
        let store = seen.clone();
        let router = axum::Router::new().route(
            "/{*path}",
            axum::routing::post(
                move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                    let signature = headers.get(hale_core::webhook::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
                    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let ok =
                        hale_core::webhook::verify(b"k", signature, &body, (hale_core::time::now_ms() / 1000) as u64);
                    store.lock().expect("lock").push((uri.path().to_string(), ok.err().map(|e| e.to_string()), json));
                    if uri.path().ends_with("/spawn") {
                        axum::Json(serde_json::json!({"instance": "db-3", "url": "http://127.0.0.1:1"})).into_response()
                    } else if uri.path().ends_with("/refuse") {
                        (axum::http::StatusCode::CONFLICT, "not a standby").into_response()
                    } else {
                        "ok".into_response()
                    }
                },
            ),
        );
        use axum::response::IntoResponse;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, router).await });
        let http = HttpExecutor {
            endpoints: [
                (Capability::Promote, "{url}/admin/promote/{instance}".to_string()),
                (Capability::StartAnother, format!("http://{addr}/spawn")),
                (Capability::Rejoin, format!("http://{addr}/refuse")),
            ]
            .into(),
            client: reqwest::Client::new(),
            secret: Some(std::sync::Arc::from(&b"k"[..])),
            timeout: Duration::from_secs(5),
        };
        let r = Request { url: Some(format!("http://{addr}/")), ..request(&[("alertname", "DbDown")]) };
        assert!(matches!(http.act(Capability::Promote, &r).await.expect("promoted"), Acted::Done(_)));
        let started = http.act(Capability::StartAnother, &r).await.expect("started");
        assert_eq!(
            started,
            Acted::Started { instance: "db-3".into(), node: None, url: Some("http://127.0.0.1:1".into()) }
        );
        let e = http.act(Capability::Rejoin, &r).await.expect_err("refused");
        assert!(e.to_string().contains("409") && e.to_string().contains("not a standby"), "{e}");
        assert!(!http.can(Capability::Restart));
        let seen = seen.lock().expect("lock");
        assert_eq!(seen[0].0, "/admin/promote/legacy-1", "the target's URL and instance filled in");
        assert!(seen.iter().all(|(_, bad_signature, _)| bad_signature.is_none()), "every call signed: {seen:?}");
        assert_eq!(seen[0].2["labels"]["alertname"], "DbDown");
        assert_eq!(seen[0].2["action"], "promote");
    }

    #[test]
    fn policies_asking_what_no_executor_can_do_are_refused_at_load() {
        let inventory = Inventory::parse(
            r#"
[agents]
n1 = "http://127.0.0.1:1"
[[services]]
name = "search"
executor = "agent"
nodes = ["n1"]
[[services]]
name = "legacy"
executor = "exec"
restart = ["legacy-ctl", "restart"]
"#,
        )
        .expect("inventory");
        let policies = |action: &str, matcher: &str| {
            PolicyFile::parse(&format!(
                "policies:\n  - name: p\n    match: {{ alertname: A{matcher} }}\n    action: {action}\n"
            ))
            .expect("policies")
        };
        assert!(check_policies(&policies("restart", ", service: legacy"), &inventory).is_ok());
        assert!(check_policies(&policies("scale_out", ", service: search"), &inventory).is_ok());
        let e = check_policies(&policies("scale_out", ", service: legacy"), &inventory).expect_err("exec lacks it");
        assert!(e.contains("start_another") && e.contains("\"legacy\" (executor exec: restart)"), "{e}");
        let e = check_policies(&policies("failover", ""), &inventory).expect_err("nobody can");
        assert!(e.contains("no service of the inventory can do it"), "{e}");
        let e = check_policies(&policies("restart", ", service: nope"), &inventory).expect_err("unknown service");
        assert!(e.contains("no service of the inventory"), "{e}");
        assert!(check_policies(&policies("exec\n    params: { command: x }", ""), &inventory).is_ok());
    }
}
