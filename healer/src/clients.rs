//! The healer's view of the rest of Hale: the collector (PromQL queries, the cluster view,
//! active alerts, silences), the node agents' actuators (restart, start, stop a replica)
//! and the shop gateway's pools (members, the catalog's primary, failover, rejoin). The
//! typed clients of `hale-client` make the calls; this says them in the healer's terms.

use std::collections::BTreeMap;
use std::time::Duration;

use hale_client::Pool;
use hale_core::ServiceKind;
use hale_core::api::{
    ActiveAlert, AlertState, MemberSpec, NewSilence, Point, PoolMember, PoolUpdate, PoolView, QueryResult,
    RejoinRequest, Rejoined, SilenceMatcher, StartProcess,
};

use crate::state::Labels;

/// Why a call to the collector, an agent or the gateway failed. The messages never hold
/// a URL (`reqwest::Error::without_url`): they go to the audit log and the dashboard, and
/// a URL may carry an instance's address or a token. The cause's own text is part of the
/// message (not a `source`), so a chain printed whole shows it once.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request got no answer (connect, timeout, reset): `doing` says what was asked.
    #[error("{doing}: {error}")]
    Transport { doing: String, error: reqwest::Error },
    /// The peer answered with an error status and, if it gave one, its own reason.
    #[error("{what}: {status} {detail}")]
    Status { what: String, status: reqwest::StatusCode, detail: String },
    /// A well-formed answer without what the healer needs from it.
    #[error("{0}")]
    Answer(String),
    /// The healer is not set up for this call (no token, no agent for the node, a bad URL).
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// A typed client's error in the healer's terms, without its URL: `doing` what when
    /// unreachable, `refused` what when the peer said no.
    fn typed(doing: impl Into<String>, refused: impl Into<String>) -> impl FnOnce(hale_client::ClientError) -> Self {
        let (doing, refused) = (doing.into(), refused.into());
        move |e| {
            use hale_client::ClientError as E;
            let status = |code: u16| reqwest::StatusCode::from_u16(code).unwrap_or(reqwest::StatusCode::BAD_GATEWAY);
            match e {
                E::Unreachable { source, .. } => ClientError::Transport { doing, error: source },
                E::Unauthorized { message, .. } => {
                    ClientError::Status { what: refused, status: reqwest::StatusCode::UNAUTHORIZED, detail: message }
                }
                E::Status { status: code, message, .. } => {
                    ClientError::Status { what: refused, status: status(code), detail: message }
                }
                E::Decode { message, .. } => ClientError::Answer(format!("{doing}: {message}")),
                E::BadUrl { .. } => ClientError::Config(e.to_string()),
            }
        }
    }
}

/// A response's status and body text when its status is a success; else why not, with
/// the peer's own words (at most 300 characters).
pub async fn success_text(
    response: reqwest::Response,
    what: &str,
) -> Result<(reqwest::StatusCode, String), ClientError> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(ClientError::Status { what: what.to_string(), status, detail: text.chars().take(300).collect() });
    }
    Ok((status, text))
}

/// Every call is bounded: a slow peer must not hold a repair forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Stopping a replica waits out its grace before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// A promotion drains the old primary first; a rejoin compares logs with the new one.
const REPLICA_ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Collector {
    pub base: String,
    pub client: reqwest::Client,
    /// For silences (read at each call: a token file rotates it).
    pub admin_token: Option<std::sync::Arc<hale_core::token::Token>>,
}

impl Collector {
    /// An instant query: the result's samples (label set, value).
    pub async fn query(&self, q: &str) -> Result<Vec<(Labels, f64)>, ClientError> {
        let result = self
            .typed()?
            .query(q)
            .await
            .map_err(ClientError::typed("querying the collector", format!("the collector refused {q:?}")))?;
        let value = |p: &Point| p.value().unwrap_or(f64::NAN);
        match result {
            QueryResult::Vector(samples) => Ok(samples.into_iter().map(|s| (s.metric, value(&s.value))).collect()),
            QueryResult::Scalar(p) => Ok(vec![(Labels::new(), value(&p))]),
            QueryResult::Matrix(_) => Err(ClientError::Answer(format!("{q:?} gave a matrix, not a vector"))),
            QueryResult::String(_) => Err(ClientError::Answer(format!("{q:?} gave a string, not a vector"))),
        }
    }

    /// The collector's judgement of the fleet (`/api/v1/cluster`): every replica's state
    /// by the age of its probes against their own spacing, the one freshness rule the
    /// dashboard and `hale status` use too.
    pub async fn cluster(&self) -> Result<hale_core::cluster::ClusterView, ClientError> {
        self.typed()?.cluster().await.map_err(ClientError::typed(
            "reading the collector's cluster view",
            "the collector refused its cluster view",
        ))
    }

    /// Whether an alert with these labels is pending or firing at the collector.
    pub async fn alert_active(&self, labels: &Labels) -> Result<bool, ClientError> {
        Ok(self.alerts().await?.iter().any(|a| a.has_labels(labels)))
    }

    /// Whether an alert with these labels fires (not merely pending) at the collector.
    pub async fn alert_firing(&self, labels: &Labels) -> Result<bool, ClientError> {
        Ok(self.alerts().await?.iter().any(|a| a.state == AlertState::Firing && a.has_labels(labels)))
    }

    async fn alerts(&self) -> Result<Vec<ActiveAlert>, ClientError> {
        let data = self
            .typed()?
            .alerts()
            .await
            .map_err(ClientError::typed("asking the collector for alerts", "the collector refused to list alerts"))?;
        Ok(data.alerts)
    }

    /// The typed client of the collector's own API, sharing this client's connections.
    fn typed(&self) -> Result<hale_client::Collector, ClientError> {
        let token = self.admin_token.as_ref().map(|t| t.current());
        hale_client::Collector::with_client(&self.base, token, &Pool::of(&self.client, CALL_TIMEOUT))
            .map_err(|e| ClientError::Config(e.to_string()))
    }

    /// Silences alerts matching `matchers` until `until_ms`; returns the silence id.
    pub async fn silence(
        &self,
        matchers: &BTreeMap<String, String>,
        until_ms: i64,
        comment: &str,
    ) -> Result<String, ClientError> {
        // The typed client sends the token; without one the collector would refuse.
        self.admin_token.as_ref().ok_or(ClientError::Config("no collector admin token to silence with".into()))?;
        let until = std::time::UNIX_EPOCH + Duration::from_millis(until_ms.max(0) as u64);
        let body = NewSilence {
            id: None,
            matchers: matchers.iter().map(|(k, v)| SilenceMatcher::equal(k, v)).collect(),
            starts_at: None,
            ends_at: humantime::format_rfc3339_seconds(until).to_string(),
            created_by: "hale-healer".into(),
            comment: comment.into(),
        };
        self.typed()?
            .add_silence(&body)
            .await
            .map_err(ClientError::typed("silencing at the collector", "the collector refused the silence"))
    }

    pub async fn expire_silence(&self, id: &str) -> Result<(), ClientError> {
        self.admin_token.as_ref().ok_or(ClientError::Config("no collector admin token".into()))?;
        self.typed()?
            .expire_silence(id)
            .await
            .map_err(ClientError::typed("expiring a silence", "the collector refused to expire the silence"))
    }
}

/// The node agents' actuators, by node name.
pub struct Agents {
    /// Node name → its agent's base URL (`http://10.0.0.1:9100`).
    pub by_node: BTreeMap<String, String>,
    /// The actuators' token, read at each call (a token file rotates it).
    pub token: std::sync::Arc<hale_core::token::Token>,
    pub client: reqwest::Client,
}

impl Agents {
    /// The typed client of `node`'s agent, with the actuator's token and `timeout`.
    fn agent(&self, node: &str, timeout: Duration) -> Result<hale_client::Agent, ClientError> {
        let url = self.by_node.get(node).ok_or_else(|| {
            ClientError::Config(format!("no agent is known for node {node:?} (healer.toml [agents])"))
        })?;
        let agent = hale_client::Agent::with_client(url, &Pool::of(&self.client, timeout))
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(agent.with_token(&self.token.current()))
    }

    /// Restarts a replica through its node's agent; `grace` replaces the agent's wait
    /// between SIGTERM and SIGKILL.
    pub async fn restart(&self, node: &str, instance: &str, grace: Option<Duration>) -> Result<(), ClientError> {
        self.agent(node, CALL_TIMEOUT)?.restart(instance, grace).await.map_err(ClientError::typed(
            format!("asking the agent on {node} to restart {instance}"),
            format!("the agent on {node} refused to restart {instance}"),
        ))?;
        Ok(())
    }

    /// Stops (and forgets) a replica on `node`; one the agent does not know is stopped.
    pub async fn stop(&self, node: &str, instance: &str) -> Result<(), ClientError> {
        match self.agent(node, STOP_TIMEOUT)?.stop(instance).await {
            Ok(_) | Err(hale_client::ClientError::Status { status: 404, .. }) => Ok(()),
            Err(e) => Err(ClientError::typed(
                format!("asking the agent on {node} to stop {instance}"),
                format!("the agent on {node} refused to stop {instance}"),
            )(e)),
        }
    }

    /// Starts a new replica of `service` on `node` (from the agent's own template; the
    /// agent picks the name and a free port). Returns (instance, listen address).
    /// Starts another replica of `service` on `node`: its instance name and base URL.
    pub async fn start(&self, node: &str, service: &str) -> Result<(String, String), ClientError> {
        let start = StartProcess { service: service.to_string(), name: None };
        let started = self.agent(node, CALL_TIMEOUT)?.start(&start).await.map_err(ClientError::typed(
            format!("asking the agent on {node} to start a {service} replica"),
            format!("the agent on {node} refused"),
        ))?;
        let process = started
            .process
            .ok_or_else(|| ClientError::Answer(format!("the agent on {node} did not say what it started")))?;
        let url = process.url.unwrap_or_else(|| format!("http://{}", process.listen));
        Ok((process.name, url))
    }
}

/// The shop gateway's pool admin API, and the catalog replicas' promotion and rejoin.
pub struct Gateway {
    pub base: String,
    /// Read at each call (a token file rotates it).
    pub admin_token: std::sync::Arc<hale_core::token::Token>,
    pub client: reqwest::Client,
}

fn service_kind(service: &str) -> Result<ServiceKind, ClientError> {
    service.parse().map_err(ClientError::Config)
}

impl Gateway {
    /// The typed client of the gateway, sharing this client's connections.
    fn typed(&self, timeout: Duration) -> Result<hale_client::Gateway, ClientError> {
        hale_client::Gateway::with_client(&self.base, &self.admin_token.current(), &Pool::of(&self.client, timeout))
            .map_err(|e| ClientError::Config(e.to_string()))
    }

    /// The catalog pool: its members, the primary writes go to and its epoch.
    pub async fn catalog(&self) -> Result<PoolView, ClientError> {
        let mut pools = self
            .typed(CALL_TIMEOUT)?
            .pools()
            .await
            .map_err(ClientError::typed("asking the gateway for its pools", "the gateway refused to show its pools"))?;
        pools.remove(&ServiceKind::Catalog).ok_or_else(|| ClientError::Answer("the gateway has no catalog pool".into()))
    }

    /// Members of a service's pool.
    pub async fn members(&self, service: &str) -> Result<Vec<PoolMember>, ClientError> {
        Ok(self.pool(service).await?.members)
    }

    /// A service's pool: its members and, for a primary/standby service, its primary.
    pub async fn pool(&self, service: &str) -> Result<PoolView, ClientError> {
        self.typed(CALL_TIMEOUT)?
            .pool(service_kind(service)?)
            .await
            .map_err(ClientError::typed("asking the gateway for its pools", "the gateway refused to show its pools"))
    }

    /// Replaces a service's members.
    async fn set_members(&self, service: &str, members: Vec<MemberSpec>) -> Result<(), ClientError> {
        let update = PoolUpdate { members: Some(members), ..PoolUpdate::default() };
        self.typed(CALL_TIMEOUT)?.set_pool(service_kind(service)?, &update).await.map_err(ClientError::typed(
            format!("changing the gateway's {service} pool"),
            format!("the gateway refused the {service} pool change"),
        ))?;
        Ok(())
    }

    /// Takes a replica out of a service's pool: no new requests go to it.
    pub async fn remove_member(&self, service: &str, instance: &str) -> Result<(), ClientError> {
        let members =
            self.members(service).await?.iter().filter(|m| m.instance != instance).map(PoolMember::spec).collect();
        self.set_members(service, members).await
    }

    /// Adds a replica to a service's pool (the gateway checks its readiness before
    /// sending it traffic).
    pub async fn add_member(&self, service: &str, instance: &str, url: &str) -> Result<(), ClientError> {
        let mut members: Vec<MemberSpec> = self.members(service).await?.iter().map(PoolMember::spec).collect();
        if !members.iter().any(|m| m.instance == instance) {
            members.push(MemberSpec { instance: instance.to_string(), url: url.to_string() });
        }
        self.set_members(service, members).await
    }

    /// Promotes `member` (it fences the old primary itself), then points the gateway's
    /// writes at it at once instead of waiting for the next readiness round. Returns the
    /// new epoch.
    pub async fn promote(&self, member: &PoolMember) -> Result<u64, ClientError> {
        let promoted =
            self.typed(REPLICA_ADMIN_TIMEOUT)?.promote(&member.url, None).await.map_err(ClientError::typed(
                format!("promoting {}", member.instance),
                format!("{} refused to be promoted", member.instance),
            ))?;
        self.set_primary("catalog", &member.instance, promoted.epoch).await?;
        Ok(promoted.epoch)
    }

    /// Points a primary/standby pool's writes at `instance` under `epoch` at once (the
    /// gateway would adopt the highest epoch it sees on its own within a readiness round).
    pub async fn set_primary(&self, service: &str, instance: &str, epoch: u64) -> Result<(), ClientError> {
        let update = PoolUpdate { primary: Some(instance.to_string()), epoch: Some(epoch), members: None };
        match self.typed(CALL_TIMEOUT)?.set_pool(service_kind(service)?, &update).await {
            Ok(_) => Ok(()),
            Err(hale_client::ClientError::Unreachable { source, .. }) => {
                Err(ClientError::Transport { doing: format!("pointing the gateway at {instance}"), error: source })
            }
            Err(e) => {
                tracing::warn!(error = %e, "the gateway refused the new primary; it will adopt it from readiness");
                Ok(())
            }
        }
    }

    /// Makes `member` (a fenced old primary) a standby of `primary` under `epoch`; the
    /// replica's answer says how much of its log it kept and set aside.
    pub async fn rejoin(&self, member: &PoolMember, primary: &PoolMember, epoch: u64) -> Result<Rejoined, ClientError> {
        let to = RejoinRequest { primary: primary.url.clone(), epoch };
        self.typed(REPLICA_ADMIN_TIMEOUT)?.rejoin(&member.url, &to).await.map_err(ClientError::typed(
            format!("asking to rejoin {}", member.instance),
            format!("{} refused to rejoin", member.instance),
        ))
    }
}
