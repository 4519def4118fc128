//! The JSON contracts between Hale's components, as serde types and nothing else (no I/O).
//!
//! The server of each API serializes these types and every client deserializes them, so
//! a field renamed on one side fails to compile (or a test) instead of reading as absent
//! on the other. Field names follow what the endpoints have always said (Prometheus's and
//! Alertmanager's camelCase where the collector mimics them, snake_case elsewhere); a
//! field a reader has always tolerated missing is `#[serde(default)]` here.
//!
//! The cluster view lives beside its freshness rule in [`crate::cluster`].
//!
//! ```
//! use hale_core::api::{AlertsData, Envelope};
//! let answer: Envelope<AlertsData> =
//!     serde_json::from_str(r#"{"status":"success","data":{"alerts":[],"groupBy":["alertname"]}}"#).unwrap();
//! assert_eq!(answer.into_data().unwrap().group_by, ["alertname"]);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Label names to values.
pub type Labels = BTreeMap<String, String>;

/// Whether a collector answer succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Error,
}

/// The collector's (Prometheus's) envelope: `{"status": "success", "data": …}` or
/// `{"status": "error", "errorType": …, "error": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub status: Status,
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    #[serde(default, rename = "errorType", skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn none<T>() -> Option<T> {
    None
}

impl<T> Envelope<T> {
    /// A successful answer carrying `data`.
    pub fn success(data: T) -> Envelope<T> {
        Envelope { status: Status::Success, data: Some(data), error_type: None, error: None }
    }

    /// The data of a successful answer, else the server's message.
    pub fn into_data(self) -> Result<T, String> {
        match (self.status, self.data) {
            (Status::Success, Some(data)) => Ok(data),
            _ => Err(self.error.unwrap_or_else(|| "no message".into())),
        }
    }
}

/// An alert's state, as Prometheus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

/// One pending or firing alert (`/api/v1/alerts`, and each alerting rule's `alerts` in
/// `/api/v1/rules`): Prometheus's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveAlert {
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub state: AlertState,
    /// RFC 3339.
    #[serde(default)]
    pub active_at: String,
    /// The value that made it fire, as Go formats it (`1e+00`).
    #[serde(default)]
    pub value: String,
}

impl ActiveAlert {
    /// Whether every one of `labels` has the same value on this alert.
    pub fn has_labels<'a>(&self, labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> bool {
        labels.into_iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// `GET /api/v1/alerts`'s `data`: every pending and firing alert and, beside Prometheus's
/// shape, `groupBy`, the labels notifications group them by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertsData {
    pub alerts: Vec<ActiveAlert>,
    #[serde(default)]
    pub group_by: Vec<String>,
}

/// One matcher of a silence: Alertmanager's v2 `matchers[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl SilenceMatcher {
    /// `name="value"`: equality, not a regex.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> SilenceMatcher {
        SilenceMatcher { name: name.into(), value: value.into(), is_regex: false, is_equal: true }
    }

    /// `=`, `!=`, `=~` or `!~`.
    pub fn op(&self) -> &'static str {
        match (self.is_equal, self.is_regex) {
            (true, false) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (false, true) => "!~",
        }
    }

    /// Parses `name=value`, `name!=value`, `name=~regex`, `name!~regex` (the CLI's form).
    pub fn parse(text: &str) -> Result<SilenceMatcher, String> {
        for (op, is_regex, is_equal) in
            [("=~", true, true), ("!~", true, false), ("!=", false, false), ("=", false, true)]
        {
            if let Some((name, value)) = text.split_once(op) {
                let value = value.trim().trim_matches('"').to_string();
                return Ok(SilenceMatcher { name: name.trim().to_string(), value, is_regex, is_equal });
            }
        }
        Err(format!("{text:?} is not a matcher: write name=value, name!=value, name=~regex or name!~regex"))
    }
}

/// Where a silence stands in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Active,
    Pending,
    Expired,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Active => "active",
            SilenceState::Pending => "pending",
            SilenceState::Expired => "expired",
        }
    }
}

/// A silence's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceStatus {
    pub state: SilenceState,
}

/// One silence as `GET /api/v1/silences` lists it: Alertmanager's `GettableSilence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    /// RFC 3339, as are the other times.
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
    pub status: SilenceStatus,
}

/// What `POST /api/v1/silences` takes: Alertmanager's `PostableSilence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSilence {
    /// Set to replace an existing silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub matchers: Vec<SilenceMatcher>,
    /// RFC 3339; now when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    pub ends_at: String,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

/// `POST /api/v1/silences`'s `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceCreated {
    #[serde(rename = "silenceID")]
    pub silence_id: String,
}

/// Where an SLO stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SloStatus {
    /// A page-tier burn-rate alert fires.
    Page,
    /// A ticket-tier one fires.
    Ticket,
    Ok,
    /// Too few events (or a blind page window) to call it good.
    InsufficientData,
    /// No data at all; also what a reader makes of a status it does not know.
    #[serde(other)]
    NoData,
}

impl SloStatus {
    pub const ALL: [SloStatus; 5] =
        [SloStatus::Page, SloStatus::Ticket, SloStatus::Ok, SloStatus::InsufficientData, SloStatus::NoData];

    pub fn as_str(self) -> &'static str {
        match self {
            SloStatus::Page => "page",
            SloStatus::Ticket => "ticket",
            SloStatus::Ok => "ok",
            SloStatus::InsufficientData => "insufficient_data",
            SloStatus::NoData => "no_data",
        }
    }
}

/// One SLO window in `/api/v1/slos`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloWindow {
    /// `5m`, `30m`, `1h`, … (the burn-rate windows).
    pub window: String,
    /// `None`: no data (no series, or no traffic: 0/0).
    pub error_ratio: Option<f64>,
    pub burn_rate: Option<f64>,
    /// Events in the window (event-based SLIs only).
    #[serde(default)]
    pub events: Option<f64>,
}

/// One SLO as the collector's `/api/v1/slos` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloState {
    pub id: String,
    pub service: String,
    pub slo: String,
    /// A ratio (0.999).
    pub objective: f64,
    #[serde(default)]
    pub windows: Vec<SloWindow>,
    /// Error ratio over the 30-day period.
    #[serde(default)]
    pub period_error_ratio: Option<f64>,
    #[serde(default)]
    pub error_budget_remaining: Option<f64>,
    pub status: SloStatus,
    /// Firing alert tiers.
    #[serde(default)]
    pub firing: Vec<String>,
}

/// What a supervised process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    Starting,
    Running,
    /// Waiting out the backoff after an exit.
    Restarting,
    /// Exited too often: waiting out the crash-loop backoff.
    CrashLoop,
    Stopping,
    Stopped,
}

impl ProcessState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Starting => "starting",
            ProcessState::Running => "running",
            ProcessState::Restarting => "restarting",
            ProcessState::CrashLoop => "crash_loop",
            ProcessState::Stopping => "stopping",
            ProcessState::Stopped => "stopped",
        }
    }
}

/// A process as a node agent's `GET /api/v1/processes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub name: String,
    pub service: String,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub listen: String,
    pub pid: Option<u32>,
    pub state: ProcessState,
    #[serde(default)]
    pub restarts: u64,
    #[serde(default)]
    pub uptime_secs: Option<u64>,
    /// How the last run ended, if it did.
    #[serde(default)]
    pub last_exit: Option<String>,
}

/// A node agent's `GET /api/v1/processes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessList {
    pub node: String,
    pub processes: Vec<ProcessInfo>,
}

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

/// The healer's `GET /api/v1/state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealerState {
    #[serde(default)]
    pub paused: bool,
    /// Alerts received and not yet decided.
    #[serde(default)]
    pub queued: usize,
    #[serde(default)]
    pub targets: BTreeMap<String, TargetState>,
    /// Ids of the actions awaiting approval, running or verifying.
    #[serde(default)]
    pub in_flight: Vec<String>,
    /// Refused alerts kept for another look: what, why, and when.
    #[serde(default)]
    pub deferred: Vec<Deferred>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// Whether a notified alert still fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyStatus {
    Firing,
    Resolved,
    /// Missing or not Alertmanager's: neither firing nor resolved, so never acted on.
    #[default]
    #[serde(other)]
    Unknown,
}

/// One alert of Alertmanager's webhook payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    #[serde(default)]
    pub status: NotifyStatus,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    /// RFC 3339, as is `ends_at` (`0001-01-01T00:00:00Z` while firing).
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// 16 hex digits ([`crate::webhook::fingerprint`]); may be empty from other senders.
    #[serde(default)]
    pub fingerprint: String,
}

/// Alertmanager's webhook payload (`"version": "4"`): what the collector's notifications
/// carry and the healer's intake reads, so any receiver written for Alertmanager reads
/// Hale's unchanged. Only `alerts` is required of other senders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    #[serde(default)]
    pub status: NotifyStatus,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: Labels,
    #[serde(default)]
    pub common_labels: Labels,
    #[serde(default)]
    pub common_annotations: Labels,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<WebhookAlert>,
}

/// One alert of Alertmanager's `POST /api/v2/alerts` body (`PostableAlert`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
}

/// The `version` of [`Escalation`].
pub const ESCALATION_VERSION: &str = "hale-escalation/1";

/// The alert an escalation is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalatedAlert {
    pub alertname: String,
    pub fingerprint: String,
    pub starts_at: String,
    pub labels: Labels,
}

/// One action already tried on an escalated target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriedAction {
    pub action_id: String,
    pub action: ActionKind,
    pub status: ActionStatus,
    pub detail: String,
}

/// What the healer sends its escalation receivers when a repair failed and a human is
/// needed (signed like webhooks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// [`ESCALATION_VERSION`].
    pub version: String,
    pub action_id: String,
    pub policy: String,
    pub action: ActionKind,
    pub target: Target,
    pub alert: EscalatedAlert,
    pub why: String,
    /// Every action taken on the target, oldest first.
    pub tried: Vec<TriedAction>,
    pub burn_rate_before: Option<f64>,
    pub burn_rate_after: Option<f64>,
    /// What a human should do.
    pub next: String,
}

/// A node agent's `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    /// `alive`.
    pub status: String,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub data_dir: String,
    /// The agent's own process, so `hale chaos node-down` can freeze it first.
    #[serde(default)]
    pub pid: Option<u32>,
}

/// One point of a PromQL answer: Unix seconds, and the value as Prometheus writes it (a
/// string, so `NaN` and `+Inf` survive JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point(pub f64, pub String);

impl Point {
    /// The value, if it parses.
    pub fn value(&self) -> Option<f64> {
        self.1.parse().ok()
    }
}

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorSample {
    pub metric: Labels,
    pub value: Point,
}

/// One series of a range query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixSeries {
    pub metric: Labels,
    pub values: Vec<Point>,
}

/// `/api/v1/query` and `/api/v1/query_range`'s `data`: Prometheus's
/// `{"resultType": …, "result": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
pub enum QueryResult {
    Vector(Vec<VectorSample>),
    Matrix(Vec<MatrixSeries>),
    Scalar(Point),
    String(Point),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;

    /// Serializes, reads back, and checks nothing changed.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
        let text = serde_json::to_string(value).expect("valid");
        let back: T = serde_json::from_str(&text).expect("valid");
        assert_eq!(&back, value, "{text}");
    }

    fn alert() -> ActiveAlert {
        ActiveAlert {
            labels: [("alertname", "ReplicaDown"), ("instance", "search-1")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            annotations: [("summary".to_string(), "search-1 is down".to_string())].into(),
            state: AlertState::Firing,
            active_at: "2026-12-01T10:00:00.5Z".into(),
            value: "0e+00".into(),
        }
    }

    #[test]
    fn alerts_round_trip_and_parse_as_the_collector_writes_them() {
        let data = AlertsData { alerts: vec![alert()], group_by: vec!["alertname".into(), "service".into()] };
        round_trip(&Envelope::success(data.clone()));
        let served = r#"{"data":{"alerts":[{"activeAt":"2026-12-01T10:00:00.5Z","annotations":{"summary":"search-1 is down"},
            "labels":{"alertname":"ReplicaDown","instance":"search-1"},"state":"firing","value":"0e+00"}],
            "groupBy":["alertname","service"]},"status":"success"}"#;
        let parsed: Envelope<AlertsData> = serde_json::from_str(served).expect("valid");
        assert_eq!(parsed.into_data().expect("valid"), data);
        // A Prometheus without `groupBy` still reads.
        let plain: Envelope<AlertsData> =
            serde_json::from_str(r#"{"status":"success","data":{"alerts":[]}}"#).expect("valid");
        assert!(plain.into_data().expect("valid").group_by.is_empty());
    }

    #[test]
    fn an_error_answer_gives_its_message() {
        let served = r#"{"status":"error","errorType":"bad_data","error":"no such thing"}"#;
        let parsed: Envelope<AlertsData> = serde_json::from_str(served).expect("valid");
        assert_eq!(parsed.error_type.as_deref(), Some("bad_data"));
        round_trip(&parsed);
        assert_eq!(parsed.into_data().expect_err("an error"), "no such thing");
    }

    #[test]
    fn silences_round_trip_and_parse_as_the_collector_writes_them() {
        let silence = Silence {
            id: "4f1c".into(),
            matchers: vec![
                SilenceMatcher::equal("alertname", "ReplicaDown"),
                SilenceMatcher::parse("instance!~search-.*").expect("valid"),
            ],
            starts_at: "2026-12-01T10:00:00Z".into(),
            ends_at: "2026-12-01T12:00:00Z".into(),
            updated_at: "2026-12-01T10:00:00Z".into(),
            created_by: "ops".into(),
            comment: "deploy".into(),
            status: SilenceStatus { state: SilenceState::Active },
        };
        round_trip(&Envelope::success(vec![silence.clone()]));
        let served = r#"{"status":"success","data":[{"comment":"deploy","createdBy":"ops","endsAt":"2026-12-01T12:00:00Z",
            "id":"4f1c","matchers":[{"isEqual":true,"isRegex":false,"name":"alertname","value":"ReplicaDown"},
            {"isEqual":false,"isRegex":true,"name":"instance","value":"search-.*"}],"startsAt":"2026-12-01T10:00:00Z",
            "status":{"state":"active"},"updatedAt":"2026-12-01T10:00:00Z"}]}"#;
        let parsed: Envelope<Vec<Silence>> = serde_json::from_str(served).expect("valid");
        assert_eq!(parsed.into_data().expect("valid"), vec![silence]);
    }

    #[test]
    fn a_new_silence_round_trips_and_refuses_unknown_fields() {
        let new = NewSilence {
            id: None,
            matchers: vec![SilenceMatcher::equal("alertname", "X")],
            starts_at: None,
            ends_at: "2026-12-01T12:00:00Z".into(),
            created_by: "hale-healer".into(),
            comment: "c".into(),
        };
        round_trip(&new);
        let posted = r#"{"matchers":[{"name":"alertname","value":"X"}],"endsAt":"2026-12-01T12:00:00Z","createdBy":"hale-healer","comment":"c"}"#;
        assert_eq!(serde_json::from_str::<NewSilence>(posted).expect("valid"), new);
        assert!(serde_json::from_str::<NewSilence>(r#"{"matchers":[],"endsAt":"x","bogus":1}"#).is_err());
        let created = Envelope::success(SilenceCreated { silence_id: "4f1c".into() });
        round_trip(&created);
        assert_eq!(
            serde_json::to_string(&created).expect("valid"),
            r#"{"status":"success","data":{"silenceID":"4f1c"}}"#
        );
    }

    #[test]
    fn matchers_parse_every_operator() {
        for (text, op) in [("a=b", "="), ("a!=b", "!="), ("a=~b.*", "=~"), ("a!~b", "!~")] {
            assert_eq!(SilenceMatcher::parse(text).expect("valid").op(), op, "{text}");
        }
        assert!(SilenceMatcher::parse("nothing").is_err());
    }

    #[test]
    fn processes_round_trip_and_parse_as_the_agent_writes_them() {
        let list = ProcessList {
            node: "node-1".into(),
            processes: vec![ProcessInfo {
                name: "search-1".into(),
                service: "search".into(),
                node: "node-1".into(),
                listen: "127.0.0.1:8091".into(),
                pid: Some(4242),
                state: ProcessState::CrashLoop,
                restarts: 3,
                uptime_secs: None,
                last_exit: Some("exit status: 1".into()),
            }],
        };
        round_trip(&list);
        let served = r#"{"node":"node-1","processes":[{"name":"search-1","service":"search","node":"node-1",
            "listen":"127.0.0.1:8091","pid":4242,"state":"crash_loop","restarts":3,"uptime_secs":null,
            "last_exit":"exit status: 1"}]}"#;
        assert_eq!(serde_json::from_str::<ProcessList>(served).expect("valid"), list);
    }
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
    fn the_webhook_payload_round_trips_and_parses_as_the_collector_writes_it() {
        let served = r#"{"version":"4","groupKey":"{}:{alertname=\"Down\"}","truncatedAlerts":0,"status":"firing",
            "receiver":"webhook-1","groupLabels":{"alertname":"Down"},"commonLabels":{"alertname":"Down"},
            "commonAnnotations":{},"externalURL":"http://c:9464","alerts":[{"status":"firing",
            "labels":{"alertname":"Down","instance":"a"},"annotations":{"summary":"a is down"},
            "startsAt":"1970-01-01T00:00:01.000000000Z","endsAt":"0001-01-01T00:00:00Z",
            "generatorURL":"http://c:9464/api/v1/rules?type=alert#Down","fingerprint":"000000000000002a"}]}"#;
        let payload: WebhookPayload = serde_json::from_str(served).expect("payload");
        assert_eq!(payload.status, NotifyStatus::Firing);
        assert_eq!(payload.alerts[0].fingerprint, "000000000000002a");
        assert_eq!(payload.alerts[0].generator_url, "http://c:9464/api/v1/rules?type=alert#Down");
        round_trip(&payload);
        let again: serde_json::Value = serde_json::to_value(&payload).expect("json");
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(served).expect("json"));
        // Another sender's bare minimum still reads; a status that is not Alertmanager's is neither.
        let bare: WebhookPayload =
            serde_json::from_str(r#"{"alerts":[{"status":"weird","labels":{"a":"b"}}]}"#).expect("bare");
        assert_eq!(bare.alerts[0].status, NotifyStatus::Unknown);
        round_trip(&vec![PostableAlert {
            labels: [("alertname".to_string(), "Down".to_string())].into(),
            annotations: Labels::new(),
            starts_at: "1970-01-01T00:00:01Z".into(),
            ends_at: "1970-01-01T00:04:01Z".into(),
            generator_url: String::new(),
        }]);
    }

    #[test]
    fn the_escalation_round_trips() {
        let escalation = Escalation {
            version: ESCALATION_VERSION.into(),
            action_id: "act-1".into(),
            policy: "restart-hung".into(),
            action: ActionKind::Restart,
            target: Target { service: Some("orders".into()), instance: Some("orders-2".into()), node: None },
            alert: EscalatedAlert {
                alertname: "ReplicaDown".into(),
                fingerprint: "f".into(),
                starts_at: "2026-01-01T00:00:00Z".into(),
                labels: Labels::new(),
            },
            why: "still down".into(),
            tried: vec![TriedAction {
                action_id: "act-1".into(),
                action: ActionKind::Restart,
                status: ActionStatus::Failed,
                detail: "x".into(),
            }],
            burn_rate_before: Some(14.4),
            burn_rate_after: None,
            next: "reset it".into(),
        };
        round_trip(&escalation);
        let v = serde_json::to_value(&escalation).expect("json");
        assert_eq!(v["version"], "hale-escalation/1");
        assert_eq!(v["target"], serde_json::json!({"service": "orders", "instance": "orders-2", "node": null}));
        assert_eq!(v["burn_rate_after"], serde_json::Value::Null);
    }
    #[test]
    fn slos_round_trip_and_parse_as_the_collector_writes_them() {
        let slo = SloState {
            id: "search-availability".into(),
            service: "search".into(),
            slo: "availability".into(),
            objective: 0.999,
            windows: vec![SloWindow { window: "5m".into(), error_ratio: None, burn_rate: None, events: Some(3.0) }],
            period_error_ratio: Some(0.0005),
            error_budget_remaining: Some(0.5),
            status: SloStatus::InsufficientData,
            firing: vec![],
        };
        round_trip(&Envelope::success(vec![slo.clone()]));
        let served = r#"{"status":"success","data":[{"id":"search-availability","service":"search","slo":"availability",
            "objective":0.999,"windows":[{"window":"5m","error_ratio":null,"burn_rate":null,"events":3.0}],
            "period_error_ratio":0.0005,"error_budget_remaining":0.5,"status":"insufficient_data","firing":[]}]}"#;
        let parsed: Envelope<Vec<SloState>> = serde_json::from_str(served).expect("slos");
        assert_eq!(parsed.into_data().expect("data"), vec![slo]);
        for status in SloStatus::ALL {
            assert_eq!(serde_json::to_value(status).expect("json"), status.as_str());
        }
        assert_eq!(serde_json::from_str::<SloStatus>(r#""eclipse""#).expect("status"), SloStatus::NoData);
    }
    #[test]
    fn agent_health_round_trips_and_parses_as_the_agent_writes_it() {
        let served = r#"{"status":"alive","node":"node-1","data_dir":".hale/node-1","pid":4242}"#;
        let health: AgentHealth = serde_json::from_str(served).expect("health");
        assert_eq!(health.pid, Some(4242));
        round_trip(&health);
        assert_eq!(serde_json::to_string(&health).expect("json"), served);
    }
    #[test]
    fn query_results_round_trip_and_parse_as_the_collector_writes_them() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"node":"node-1"},"value":[1700000000.5,"0.25"]},
            {"metric":{},"value":[1700000000.5,"NaN"]}]}}"#;
        let parsed: Envelope<QueryResult> = serde_json::from_str(vector).expect("vector");
        let QueryResult::Vector(samples) = parsed.clone().into_data().expect("data") else { panic!("not a vector") };
        assert_eq!(samples[0].value.value(), Some(0.25));
        assert!(samples[1].value.value().is_some_and(f64::is_nan));
        round_trip(&parsed);
        let matrix =
            r#"{"resultType":"matrix","result":[{"metric":{"node":"node-1"},"values":[[1.0,"1"],[2.0,"+Inf"]]}]}"#;
        let parsed: QueryResult = serde_json::from_str(matrix).expect("matrix");
        assert_eq!(
            serde_json::to_value(&parsed).expect("json"),
            serde_json::from_str::<serde_json::Value>(matrix).expect("json")
        );
        let scalar: QueryResult =
            serde_json::from_str(r#"{"resultType":"scalar","result":[1.0,"2"]}"#).expect("scalar");
        assert_eq!(scalar, QueryResult::Scalar(Point(1.0, "2".into())));
        round_trip(&QueryResult::String(Point(1.0, "text".into())));
    }
}
