//! The healer's state, actions, deferrals and HA membership.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::Labels;

/// A firing alert as the healer received it (in its state, its actions and refusals).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedAlert {
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub starts_at: String,
    pub fingerprint: String,
    pub received_ms: i64,
}

impl ReceivedAlert {
    /// What identifies one occurrence of an alert: the same fingerprint and start time is
    /// the same alert, however often it is sent.
    pub fn dedup_key(&self) -> String {
        format!("{}@{}", self.fingerprint, self.starts_at)
    }

    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// What a healer action acts on, from the alert's labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub service: Option<String>,
    pub instance: Option<String>,
    pub node: Option<String>,
}

impl Target {
    pub fn from_labels(labels: &Labels) -> Target {
        Target {
            service: labels.get("service").cloned().or_else(|| labels.get("sloth_service").cloned()),
            instance: labels.get("instance").cloned(),
            node: labels.get("node").cloned(),
        }
    }

    /// The key cooldowns and limits are kept under: the instance, else the service, else
    /// the node.
    pub fn key(&self) -> String {
        match (&self.instance, &self.service, &self.node) {
            (Some(i), _, _) => format!("instance/{i}"),
            (None, Some(s), _) => format!("service/{s}"),
            (None, None, Some(n)) => format!("node/{n}"),
            _ => "cluster".into(),
        }
    }
}

/// What a healer policy does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Restart the replica through its node agent.
    Restart,
    /// Promote the catalog standby, fence the old primary.
    Failover,
    /// Bring a fenced old catalog primary back as the standby of the new one.
    Rejoin,
    /// Start one more replica of the service on the least-loaded node.
    ScaleOut,
    /// Drain and stop a replica the service can spare.
    ScaleIn,
    /// Start the replicas of a lost node on the other nodes.
    Reschedule,
    /// Run a configured local command with the alert on stdin.
    Exec,
    /// Post the alert to outside automation.
    Webhook,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Restart => "restart",
            ActionKind::Failover => "failover",
            ActionKind::Rejoin => "rejoin",
            ActionKind::ScaleOut => "scale_out",
            ActionKind::ScaleIn => "scale_in",
            ActionKind::Reschedule => "reschedule",
            ActionKind::Exec => "exec",
            ActionKind::Webhook => "webhook",
        }
    }
}

/// Where a healer action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    AwaitingApproval,
    Running,
    Verifying,
    Succeeded,
    Failed,
    Rejected,
    Expired,
    DryRun,
}

impl ActionStatus {
    pub fn in_flight(self) -> bool {
        matches!(self, ActionStatus::AwaitingApproval | ActionStatus::Running | ActionStatus::Verifying)
    }

    /// Whether the action was taken (what the rate limits count).
    pub fn acted(self) -> bool {
        matches!(self, ActionStatus::Running | ActionStatus::Verifying | ActionStatus::Succeeded | ActionStatus::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::AwaitingApproval => "awaiting_approval",
            ActionStatus::Running => "running",
            ActionStatus::Verifying => "verifying",
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::Failed => "failed",
            ActionStatus::Rejected => "rejected",
            ActionStatus::Expired => "expired",
            ActionStatus::DryRun => "dry_run",
        }
    }
}

/// One healer action (`/api/v1/actions`, and the healer's durable state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub id: String,
    pub policy: String,
    pub kind: ActionKind,
    pub target: Target,
    pub alert: ReceivedAlert,
    pub status: ActionStatus,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Approval deadline.
    #[serde(default)]
    pub expires_ms: Option<i64>,
    /// What happened, in words.
    #[serde(default)]
    pub detail: String,
    /// Replicas the action started (reschedule, scale-out), verified by their readiness.
    #[serde(default)]
    pub started: Vec<(String, String)>,
    /// For a scale-out: the scale-in that later took its replicas back.
    #[serde(default)]
    pub followed_by: Option<String>,
    /// The SLO burn rate of the alert's SLO (or the worst of its service's) when the
    /// action was decided, for the escalation's before-and-after.
    #[serde(default)]
    pub burn_before: Option<f64>,
    /// The same burn rate when the verification ended: the repair's effect on the SLO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn_after: Option<f64>,
    /// The repair's trace (alert → policy → checks → executor → verification → outcome),
    /// when the healer exports traces: look it up at the collector's `/api/traces/<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The W3C `traceparent` of the repair's root span, so work on the action that
    /// resumes later (after an approval, or on the next leader) joins the same trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// A target's history at the healer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    /// When actions on this target were taken (ms).
    pub actions: Vec<i64>,
    /// Set when a repair failed: no automatic action until a human resets it.
    pub needs_human: Option<String>,
}

/// When a refused alert is worth deciding again: `{"when": "at", "at_ms": …}`,
/// `{"when": "target_free"}`, `{"when": "service_freer", "service", "busy"}`,
/// `{"when": "resumed"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RetryWire", into = "RetryWire")]
pub enum RetryWhen {
    /// At a known time: a cooldown ends, an action leaves the rate window, or the next
    /// look at a live check.
    At { at_ms: i64 },
    /// When no action on the target is in flight any more.
    TargetFree,
    /// When fewer than `busy` actions on `service` are in flight.
    ServiceFreer { service: String, busy: usize },
    /// When the healer is resumed.
    Resumed,
    /// A condition this reader does not know (a newer healer), or an incomplete one: its
    /// `when`, possibly empty.
    Other { when: String },
}

/// [`RetryWhen`] as written: a `when` and the fields that kind of condition has.
#[derive(Serialize, Deserialize)]
struct RetryWire {
    #[serde(default)]
    when: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    busy: Option<usize>,
}

impl From<RetryWire> for RetryWhen {
    fn from(w: RetryWire) -> RetryWhen {
        match (w.when.as_str(), w.at_ms, w.service, w.busy) {
            ("at", Some(at_ms), _, _) => RetryWhen::At { at_ms },
            ("target_free", ..) => RetryWhen::TargetFree,
            ("service_freer", _, Some(service), Some(busy)) => RetryWhen::ServiceFreer { service, busy },
            ("resumed", ..) => RetryWhen::Resumed,
            _ => RetryWhen::Other { when: w.when },
        }
    }
}

impl From<RetryWhen> for RetryWire {
    fn from(r: RetryWhen) -> RetryWire {
        let wire = |when: &str| RetryWire { when: when.into(), at_ms: None, service: None, busy: None };
        match r {
            RetryWhen::At { at_ms } => RetryWire { at_ms: Some(at_ms), ..wire("at") },
            RetryWhen::TargetFree => wire("target_free"),
            RetryWhen::ServiceFreer { service, busy } => {
                RetryWire { service: Some(service), busy: Some(busy), ..wire("service_freer") }
            }
            RetryWhen::Resumed => wire("resumed"),
            RetryWhen::Other { when } => wire(&when),
        }
    }
}

/// A firing alert the healer's safety checks refused for now, and when to decide it
/// again (`/api/v1/state`'s `deferred`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deferred {
    pub alert: ReceivedAlert,
    pub policy: String,
    pub action: ActionKind,
    pub target: Target,
    /// The refusal's short name (`cooldown`, `in_progress`, `paused`, …).
    pub code: String,
    /// The refusal in words.
    pub reason: String,
    pub first_refused_ms: i64,
    /// When it was last refused.
    pub refused_ms: i64,
    /// How many times it has been refused.
    pub attempts: u32,
    pub retry: RetryWhen,
}

/// Who a healer is, as written in the leader key and shown in `/api/v1/state`'s `ha`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealerMember {
    /// Unique per process (host, pid, random), so a restarted healer is a new member.
    pub id: String,
    /// Where its API answers (`http://addr`).
    pub api: String,
}

/// Whether a healer acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HaRole {
    Leader,
    Follower,
}

/// `/api/v1/state`'s `ha`: alone, or one of several sharing etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Ha {
    Single { role: HaRole },
    Etcd { me: HealerMember, role: HaRole, leader: Option<HealerMember> },
}

/// The healer's `GET /api/v1/state`; what an older healer leaves out is empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealerState {
    pub paused: bool,
    /// Alerts received and not yet decided.
    pub queued: usize,
    pub targets: BTreeMap<String, TargetState>,
    /// Ids of the actions awaiting approval, running or verifying.
    pub in_flight: Vec<String>,
    /// Refused alerts kept for another look: what, why, and when.
    pub deferred: Vec<Deferred>,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha: Option<Ha>,
}

/// The healer's `GET /api/v1/actions`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionList {
    pub actions: Vec<Action>,
}

/// The healer's answer to an approval or a rejection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionAnswer {
    pub action: Action,
}

/// The healer's answer to `POST /hooks/alertmanager`: firing alerts stored for a decision,
/// and those it already had (same fingerprint and start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookAccepted {
    pub queued: usize,
    pub duplicates: usize,
}

/// The healer's answer to `POST /api/v1/pause` and `/resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub paused: bool,
}

/// The healer's answer to `POST /api/v1/targets/{kind}/{name}/reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetReset {
    /// `kind/name`.
    pub target: String,
    /// Whether it was waiting for a human (a failed repair) before the reset.
    pub was_blocked: bool,
}

/// The healer's `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealerHealth {
    /// `alive`.
    pub status: String,
}

/// The `version` of [`ActionWebhook`].
pub const ACTION_WEBHOOK_VERSION: &str = "hale-action/1";

/// What a `webhook` action posts to outside automation (signed like the collector's
/// webhooks). Fields in the order the healer has always written them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionWebhook {
    pub action_id: String,
    pub alert: ReceivedAlert,
    pub policy: String,
    pub target: Target,
    /// [`ACTION_WEBHOOK_VERSION`].
    pub version: String,
}

/// What an `exec` action's command reads on its stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecInput {
    pub action_id: String,
    pub alert: ReceivedAlert,
    pub target: Target,
}

/// What the healer's `http` executor posts (signed) to a service's own admin endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorCall {
    /// The capability asked for: `restart`, `stop`, `start_another`, `drain`, `promote`,
    /// `fence`, `rejoin`.
    pub action: String,
    pub action_id: String,
    pub service: String,
    pub instance: Option<String>,
    /// The alert's labels.
    pub labels: Labels,
}

/// What an executor's `start_another` answers (an `exec` command prints it, an `http`
/// endpoint returns it): the instance it started, for the load balancer and the
/// verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedInstance {
    pub instance: String,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::round_trip;

    fn deferred(retry: RetryWhen) -> Deferred {
        Deferred {
            alert: ReceivedAlert {
                labels: [("alertname".to_string(), "ReplicaDown".to_string())].into(),
                annotations: Labels::new(),
                starts_at: "2026-01-01T00:00:00Z".into(),
                fingerprint: "f".into(),
                received_ms: 1,
            },
            policy: "restart-hung".into(),
            action: ActionKind::Restart,
            target: Target { service: Some("search".into()), instance: Some("search-2".into()), node: None },
            code: "cooldown".into(),
            reason: "cooldown".into(),
            first_refused_ms: 1000,
            refused_ms: 2000,
            attempts: 2,
            retry,
        }
    }

    #[test]
    fn healer_state_round_trips_and_parses_as_the_healer_writes_it() {
        let action = Action {
            id: "act-1".into(),
            policy: "restart-hung".into(),
            kind: ActionKind::ScaleOut,
            target: Target { service: Some("search".into()), instance: None, node: None },
            alert: deferred(RetryWhen::Resumed).alert,
            status: ActionStatus::AwaitingApproval,
            created_ms: 1,
            updated_ms: 2,
            expires_ms: Some(3),
            detail: "waiting".into(),
            started: vec![("search-3".into(), "node-2".into())],
            followed_by: None,
            burn_before: Some(14.4),
            burn_after: Some(0.5),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        round_trip(&ActionList { actions: vec![action.clone()] });
        round_trip(&ActionAnswer { action });
        let state = HealerState {
            paused: true,
            queued: 1,
            targets: [(
                "instance/orders-2".to_string(),
                TargetState { actions: vec![1], needs_human: Some("act-0 failed".into()) },
            )]
            .into(),
            in_flight: vec!["act-1".into()],
            deferred: vec![
                deferred(RetryWhen::At { at_ms: 23000 }),
                deferred(RetryWhen::TargetFree),
                deferred(RetryWhen::ServiceFreer { service: "search".into(), busy: 1 }),
                deferred(RetryWhen::Resumed),
            ],
            dry_run: false,
            ha: Some(Ha::Etcd {
                me: HealerMember { id: "a".into(), api: "http://127.0.0.1:9465".into() },
                role: HaRole::Follower,
                leader: None,
            }),
        };
        round_trip(&state);
        let text = serde_json::to_value(&state).expect("json");
        assert_eq!(text["deferred"][0]["retry"], serde_json::json!({"when": "at", "at_ms": 23000}));
        assert_eq!(
            text["deferred"][2]["retry"],
            serde_json::json!({"when": "service_freer", "service": "search", "busy": 1})
        );
        assert_eq!(text["ha"]["leader"], serde_json::Value::Null);
        assert_eq!(text["ha"]["mode"], "etcd");
        let single = serde_json::to_value(Ha::Single { role: HaRole::Leader }).expect("json");
        assert_eq!(single, serde_json::json!({"mode": "single", "role": "leader"}));
        // As the healer served it before these types: an older healer's state still reads.
        let served = r#"{"paused":false,"queued":0,"targets":{},"in_flight":[],"dry_run":true,
            "deferred":[{"alert":{"labels":{"alertname":"ReplicaDown"},"annotations":{},"starts_at":"2026-01-01T00:00:00Z",
            "fingerprint":"f","received_ms":1},"policy":"restart-hung","action":"restart",
            "target":{"service":"search","instance":"search-2","node":null},"code":"cooldown","reason":"cooldown",
            "first_refused_ms":1000,"refused_ms":2000,"attempts":2,"retry":{"when":"resumed"}}],
            "ha":{"mode":"single","role":"leader"}}"#;
        let parsed: HealerState = serde_json::from_str(served).expect("state");
        assert_eq!(parsed.deferred, vec![deferred(RetryWhen::Resumed)]);
        assert_eq!(parsed.ha, Some(Ha::Single { role: HaRole::Leader }));
        let old: HealerState = serde_json::from_str(r#"{"paused":false}"#).expect("old state");
        assert!(old.deferred.is_empty() && old.ha.is_none());
    }

    #[test]
    fn an_unknown_retry_condition_keeps_its_name() {
        let r = |v: &str| serde_json::from_str::<RetryWhen>(v).expect("retry");
        assert_eq!(r(r#"{"when":"next_full_moon"}"#), RetryWhen::Other { when: "next_full_moon".into() });
        assert_eq!(r(r#"{"when":"at"}"#), RetryWhen::Other { when: "at".into() });
        assert_eq!(r("{}"), RetryWhen::Other { when: String::new() });
        round_trip(&RetryWhen::Other { when: "next_full_moon".into() });
    }

    #[test]
    fn action_names_are_their_wire_names() {
        for kind in [ActionKind::Restart, ActionKind::ScaleOut, ActionKind::ScaleIn, ActionKind::Webhook] {
            assert_eq!(serde_json::to_value(kind).expect("json"), kind.as_str());
        }
        for status in [ActionStatus::AwaitingApproval, ActionStatus::DryRun, ActionStatus::Succeeded] {
            assert_eq!(serde_json::to_value(status).expect("json"), status.as_str());
        }
    }

    #[test]
    fn small_replies_round_trip_and_parse_as_the_healer_writes_them() {
        let cases = [
            (r#"{"queued":2,"duplicates":1}"#, reserialize::<HookAccepted> as fn(&str) -> String),
            (r#"{"paused":true}"#, reserialize::<Paused>),
            (r#"{"target":"instance/search-1","was_blocked":false}"#, reserialize::<TargetReset>),
            (r#"{"status":"alive"}"#, reserialize::<HealerHealth>),
        ];
        for (served, again) in cases {
            assert_eq!(again(served), served);
        }
    }

    /// Parses what the healer served and writes it again.
    fn reserialize<T: serde::de::DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(served: &str) -> String {
        let value: T = serde_json::from_str(served).expect("parses");
        round_trip(&value);
        serde_json::to_string(&value).expect("json")
    }

    #[test]
    fn what_actions_send_round_trips_and_parses_as_the_healer_writes_it() {
        let alert = deferred(RetryWhen::Resumed).alert;
        let target = Target { service: Some("search".into()), instance: None, node: None };
        let webhook = ActionWebhook {
            action_id: "act-1".into(),
            alert: alert.clone(),
            policy: "notify".into(),
            target: target.clone(),
            version: ACTION_WEBHOOK_VERSION.into(),
        };
        round_trip(&webhook);
        let served = r#"{"action_id":"act-1","alert":{"labels":{"alertname":"ReplicaDown"},"annotations":{},
            "starts_at":"2026-01-01T00:00:00Z","fingerprint":"f","received_ms":1},"policy":"notify",
            "target":{"service":"search","instance":null,"node":null},"version":"hale-action/1"}"#;
        let compact: String = served.split_whitespace().collect();
        assert_eq!(serde_json::to_string(&webhook).expect("json"), compact);
        let input = ExecInput { action_id: "act-1".into(), alert, target };
        round_trip(&input);
        let v = serde_json::to_value(&input).expect("json");
        assert_eq!(v.as_object().map(|o| o.len()), Some(3));
    }
}
