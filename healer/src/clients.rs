//! The healer's view of the rest of Hale: the collector (PromQL queries, active alerts,
//! silences) and the node agents' actuators (restart, start, stop a replica).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use hale_core::api::{ActiveAlert, AlertState, Envelope, NewSilence, Point, QueryResult, SilenceMatcher};
use serde_json::{Value, json};

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
    /// An answer came but its body could not be read or decoded.
    #[error("{doing}: {error}")]
    Decode { doing: String, error: reqwest::Error },
    /// The peer answered with an error status; `detail` is its own reason, if it gave one.
    #[error("{what}: {status}{}", if detail.is_empty() { String::new() } else { format!(" {detail}") })]
    Status { what: String, status: reqwest::StatusCode, detail: String },
    /// The peer answered, in its API's terms, that it would not do it.
    #[error("{what}: {message}")]
    Refused { what: String, message: String },
    /// A well-formed answer without what the healer needs from it.
    #[error("{0}")]
    Answer(String),
    /// The healer is not set up for this call (no token, no agent for the node, a bad URL).
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    fn transport(doing: impl Into<String>, error: reqwest::Error) -> Self {
        ClientError::Transport { doing: doing.into(), error: error.without_url() }
    }

    fn decode(doing: impl Into<String>, error: reqwest::Error) -> Self {
        ClientError::Decode { doing: doing.into(), error: error.without_url() }
    }

    fn status(what: impl Into<String>, status: reqwest::StatusCode, detail: impl Into<String>) -> Self {
        ClientError::Status { what: what.into(), status, detail: detail.into() }
    }

    /// A typed client's error in the healer's terms: `doing` what when unreachable,
    /// `refused` what when the peer said no in its own words.
    fn from_typed(e: hale_client::ClientError, doing: &str, refused: &str) -> Self {
        use hale_client::ClientError as E;
        match e {
            E::Unreachable { source, .. } => ClientError::Transport { doing: doing.into(), error: source },
            E::Unauthorized { message, .. } | E::Status { message, .. } => {
                ClientError::Refused { what: refused.into(), message }
            }
            E::Decode { message, .. } => ClientError::Answer(format!("{doing}: {message}")),
            E::BadUrl { .. } => ClientError::Config(e.to_string()),
        }
    }
}

/// Every call is bounded: a slow peer must not hold a repair forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Collector {
    pub base: String,
    pub client: reqwest::Client,
    /// For silences.
    pub admin_token: Option<String>,
}

impl Collector {
    /// An instant query: the result's samples (label set, value).
    pub async fn query(&self, q: &str) -> Result<Vec<(Labels, f64)>, ClientError> {
        let url = format!("{}/api/v1/query", self.base);
        let body: Envelope<QueryResult> = self
            .client
            .get(&url)
            .query(&[("query", q)])
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| ClientError::transport("querying the collector", e))?
            .json()
            .await
            .map_err(|e| ClientError::decode("reading the collector's answer", e))?;
        let value = |p: &Point| p.value().unwrap_or(f64::NAN);
        match body.into_data() {
            Err(message) => Err(ClientError::Refused { what: format!("the collector refused {q:?}"), message }),
            Ok(QueryResult::Vector(samples)) => Ok(samples.into_iter().map(|s| (s.metric, value(&s.value))).collect()),
            Ok(QueryResult::Scalar(p)) => Ok(vec![(Labels::new(), value(&p))]),
            Ok(QueryResult::Matrix(_)) => Err(ClientError::Answer(format!("{q:?} gave a matrix, not a vector"))),
            Ok(QueryResult::String(_)) => Err(ClientError::Answer(format!("{q:?} gave a string, not a vector"))),
        }
    }

    /// The collector's judgement of the fleet (`/api/v1/cluster`): every replica's state
    /// by the age of its probes against their own spacing, the one freshness rule the
    /// dashboard and `hale status` use too.
    pub async fn cluster(&self) -> Result<hale_core::cluster::ClusterView, ClientError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            data: hale_core::cluster::ClusterView,
        }
        let url = format!("{}/api/v1/cluster", self.base);
        let answer: Answer = self
            .client
            .get(&url)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| ClientError::transport("reading the collector's cluster view", e))?
            .json()
            .await
            .map_err(|e| ClientError::decode("reading the collector's cluster view", e))?;
        Ok(answer.data)
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
        let data = self.typed()?.alerts().await.map_err(|e| {
            ClientError::from_typed(e, "asking the collector for alerts", "the collector refused to list alerts")
        })?;
        Ok(data.alerts)
    }

    /// The typed client of the collector's own API, sharing this client's connections.
    fn typed(&self) -> Result<hale_client::Collector, ClientError> {
        hale_client::Collector::with_client(&self.base, self.admin_token.clone(), self.client.clone(), CALL_TIMEOUT)
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
        self.admin_token.as_deref().ok_or(ClientError::Config("no collector admin token to silence with".into()))?;
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
            .map_err(|e| ClientError::from_typed(e, "silencing at the collector", "the collector refused the silence"))
    }

    pub async fn expire_silence(&self, id: &str) -> Result<(), ClientError> {
        self.admin_token.as_deref().ok_or(ClientError::Config("no collector admin token".into()))?;
        self.typed()?.expire_silence(id).await.map_err(|e| match e {
            hale_client::ClientError::Status { status, .. } => {
                let status = reqwest::StatusCode::from_u16(status).unwrap_or(reqwest::StatusCode::BAD_GATEWAY);
                ClientError::status("the collector answered", status, "")
            }
            hale_client::ClientError::Unauthorized { .. } => {
                ClientError::status("the collector answered", reqwest::StatusCode::UNAUTHORIZED, "")
            }
            e => ClientError::from_typed(e, "expiring a silence", "the collector refused to expire the silence"),
        })
    }
}

/// The node agents' actuators, by node name.
pub struct Agents {
    pub by_node: BTreeMap<String, SocketAddr>,
    pub token: String,
    pub client: reqwest::Client,
}

impl Agents {
    fn base(&self, node: &str) -> Result<String, ClientError> {
        self.by_node
            .get(node)
            .map(|a| format!("http://{a}"))
            .ok_or_else(|| ClientError::Config(format!("no agent is known for node {node:?}")))
    }

    /// Restarts a replica through its node's agent; `grace` replaces the agent's wait
    /// between SIGTERM and SIGKILL.
    pub async fn restart(&self, node: &str, instance: &str, grace: Option<Duration>) -> Result<(), ClientError> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/processes", self.base(node)?))
            .map_err(|e| ClientError::Config(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| ClientError::Config("bad agent URL".into()))?
            .push(instance)
            .push("restart");
        if let Some(g) = grace {
            url.query_pairs_mut().append_pair("grace_ms", &g.as_millis().to_string());
        }
        let r = self
            .client
            .post(url)
            .bearer_auth(&self.token)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| ClientError::transport(format!("asking the agent on {node} to restart {instance}"), e))?;
        if r.status().is_success() {
            Ok(())
        } else {
            let status = r.status();
            let text: String = r.text().await.unwrap_or_default().chars().take(200).collect();
            Err(ClientError::status(format!("the agent on {node} refused to restart {instance}"), status, text))
        }
    }
}

impl Agents {
    /// Stops (and forgets) a replica on `node`.
    pub async fn stop(&self, node: &str, instance: &str) -> Result<(), ClientError> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/processes", self.base(node)?))
            .map_err(|e| ClientError::Config(e.to_string()))?;
        url.path_segments_mut().map_err(|()| ClientError::Config("bad agent URL".into()))?.push(instance);
        let r = self
            .client
            .delete(url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| ClientError::transport(format!("asking the agent on {node} to stop {instance}"), e))?;
        if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(ClientError::status(format!("the agent on {node} refused to stop {instance}"), r.status(), ""))
        }
    }

    /// Starts a new replica of `service` on `node` (from the agent's own template; the
    /// agent picks the name and a free port). Returns (instance, listen address).
    pub async fn start(&self, node: &str, service: &str) -> Result<(String, String), ClientError> {
        let r = self
            .client
            .post(format!("{}/api/v1/processes", self.base(node)?))
            .bearer_auth(&self.token)
            .json(&json!({"service": service}))
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                ClientError::transport(format!("asking the agent on {node} to start a {service} replica"), e)
            })?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ClientError::status(
                format!("the agent on {node} refused"),
                status,
                body["error"]["message"].as_str().unwrap_or(""),
            ));
        }
        let p = &body["process"];
        match (p["name"].as_str(), p["listen"].as_str()) {
            (Some(name), Some(listen)) => Ok((name.to_string(), listen.to_string())),
            _ => Err(ClientError::Answer(format!("the agent on {node} did not say what it started"))),
        }
    }
}

/// The shop gateway's pool admin API.
pub struct Gateway {
    pub base: String,
    pub admin_token: String,
    pub client: reqwest::Client,
}

/// A catalog replica as the gateway's pool knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolMember {
    pub instance: String,
    pub url: String,
    pub ready: bool,
}

impl Gateway {
    async fn pools(&self) -> Result<Value, ClientError> {
        self.client
            .get(format!("{}/admin/pool", self.base))
            .bearer_auth(&self.admin_token)
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| ClientError::transport("asking the gateway for its pools", e))?
            .json()
            .await
            .map_err(|e| ClientError::decode("reading the gateway's pools", e))
    }

    fn members_of(pools: &Value, service: &str) -> Vec<PoolMember> {
        pools[service]["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| PoolMember {
                instance: m["instance"].as_str().unwrap_or("").to_string(),
                url: m["url"].as_str().unwrap_or("").to_string(),
                ready: m["ready"].as_bool().unwrap_or(false),
            })
            .collect()
    }

    /// The catalog pool: members, and the primary writes go to.
    pub async fn catalog(&self) -> Result<(Vec<PoolMember>, Option<String>), ClientError> {
        let (members, primary, _) = self.catalog_epoch().await?;
        Ok((members, primary))
    }

    /// The catalog pool with the epoch of its primary.
    pub async fn catalog_epoch(&self) -> Result<(Vec<PoolMember>, Option<String>, u64), ClientError> {
        let pools = self.pools().await?;
        if pools["catalog"].is_null() {
            return Err(ClientError::Answer("the gateway has no catalog pool".into()));
        }
        Ok((
            Self::members_of(&pools, "catalog"),
            pools["catalog"]["primary"].as_str().map(str::to_string),
            pools["catalog"]["epoch"].as_u64().unwrap_or(0),
        ))
    }

    /// Makes `member` (a fenced old primary) a standby of `primary` under `epoch`; the
    /// replica's answer says how much of its log it kept and set aside.
    pub async fn rejoin(&self, member: &PoolMember, primary: &PoolMember, epoch: u64) -> Result<Value, ClientError> {
        let body = json!({"primary": primary.url, "epoch": epoch});
        self.replica_admin(member, "rejoin", Some(body), "asking to rejoin", "rejoin").await
    }

    /// `POST <replica>/admin/<path>` with the admin token; the reply's JSON, or the
    /// replica's own reason for refusing.
    async fn replica_admin(
        &self,
        member: &PoolMember,
        path: &str,
        body: Option<Value>,
        doing: &str,
        refused: &str,
    ) -> Result<Value, ClientError> {
        let mut request = self
            .client
            .post(format!("{}/admin/{path}", member.url.trim_end_matches('/')))
            .bearer_auth(&self.admin_token)
            .timeout(Duration::from_secs(10));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply =
            request.send().await.map_err(|e| ClientError::transport(format!("{doing} {}", member.instance), e))?;
        let status = reply.status();
        let body: Value = reply.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ClientError::status(
                format!("{} refused to {refused}", member.instance),
                status,
                body["error"]["message"].as_str().unwrap_or(""),
            ));
        }
        Ok(body)
    }

    /// Members of a service's pool.
    pub async fn members(&self, service: &str) -> Result<Vec<PoolMember>, ClientError> {
        Ok(Self::members_of(&self.pools().await?, service))
    }

    /// Takes a replica out of a service's pool: no new requests go to it.
    pub async fn remove_member(&self, service: &str, instance: &str) -> Result<(), ClientError> {
        let members: Vec<Value> = self
            .members(service)
            .await?
            .into_iter()
            .filter(|m| m.instance != instance)
            .map(|m| json!({"instance": m.instance, "url": m.url}))
            .collect();
        self.put_members(service, members).await
    }

    async fn put_members(&self, service: &str, members: Vec<Value>) -> Result<(), ClientError> {
        let r = self
            .client
            .put(format!("{}/admin/pool/{service}", self.base))
            .bearer_auth(&self.admin_token)
            .json(&json!({"members": members}))
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| ClientError::transport(format!("changing the gateway's {service} pool"), e))?;
        if r.status().is_success() {
            Ok(())
        } else {
            let status = r.status();
            Err(ClientError::status(
                format!("the gateway refused the {service} pool change"),
                status,
                r.text().await.unwrap_or_default(),
            ))
        }
    }

    /// Adds a replica to a service's pool (the gateway checks its readiness before
    /// sending it traffic).
    pub async fn add_member(&self, service: &str, instance: &str, url: &str) -> Result<(), ClientError> {
        let mut members: Vec<Value> =
            self.members(service).await?.into_iter().map(|m| json!({"instance": m.instance, "url": m.url})).collect();
        if !members.iter().any(|m| m["instance"] == instance) {
            members.push(json!({"instance": instance, "url": url}));
        }
        self.put_members(service, members).await
    }

    /// Promotes `member` (it fences the old primary itself), then points the gateway's
    /// writes at it at once instead of waiting for the next readiness round. Returns the
    /// new epoch.
    pub async fn promote(&self, member: &PoolMember) -> Result<u64, ClientError> {
        let body = self.replica_admin(member, "promote", None, "promoting", "be promoted").await?;
        let epoch = body["epoch"]
            .as_u64()
            .ok_or_else(|| ClientError::Answer(format!("{} did not say its new epoch", member.instance)))?;
        let r = self
            .client
            .put(format!("{}/admin/pool/catalog", self.base))
            .bearer_auth(&self.admin_token)
            .json(&json!({"primary": member.instance, "epoch": epoch}))
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| ClientError::transport(format!("pointing the gateway at {}", member.instance), e))?;
        if !r.status().is_success() {
            // The gateway also adopts the highest epoch it sees on its own.
            tracing::warn!(status = %r.status(), "the gateway refused the new primary; it will adopt it from readiness");
        }
        Ok(epoch)
    }
}
