//! The healer's durable state: alerts received and not yet decided, which alerts were
//! seen (to recognise duplicates), actions and their outcome, per-target history (for
//! cooldowns, rate limits and "needs a human"), and the global pause. One JSON file,
//! replaced atomically (temporary file, fsync, rename, fsync of the folder) on every
//! change, so a restarted healer neither repeats nor forgets an action.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::policy::ActionKind;

/// Alerts seen are remembered this long (a duplicate arriving later is a new alert).
const SEEN_FOR_MS: i64 = 24 * 3600 * 1000;
/// Actions kept in the state (the audit log keeps everything).
const KEEP_ACTIONS: usize = 1000;

pub type Labels = BTreeMap<String, String>;

/// A firing alert as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub starts_at: String,
    pub fingerprint: String,
    pub received_ms: i64,
}

impl Alert {
    /// What identifies one occurrence of an alert: the same fingerprint and start time is
    /// the same alert, however often it is sent.
    pub fn dedup_key(&self) -> String {
        format!("{}@{}", self.fingerprint, self.starts_at)
    }

    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// What an action acts on, from the alert's labels.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    AwaitingApproval,
    Running,
    Verifying,
    Succeeded,
    Failed,
    Rejected,
    Expired,
    DryRun,
}

impl Status {
    pub fn in_flight(self) -> bool {
        matches!(self, Status::AwaitingApproval | Status::Running | Status::Verifying)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub id: String,
    pub policy: String,
    pub kind: ActionKind,
    pub target: Target,
    pub alert: Alert,
    pub status: Status,
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
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    /// When actions on this target were taken (ms).
    pub actions: Vec<i64>,
    /// Set when a repair failed: no automatic action until a human resets it.
    pub needs_human: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub paused: bool,
    /// Received, not yet decided.
    pub queue: VecDeque<Alert>,
    /// Dedup key → when first seen.
    pub seen: BTreeMap<String, i64>,
    pub targets: BTreeMap<String, TargetState>,
    pub actions: Vec<Action>,
}

#[derive(Debug, thiserror::Error)]
#[error("saving the healer's state to {path}: {error}")]
pub struct SaveError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

pub struct Store {
    path: PathBuf,
    state: Mutex<State>,
}

impl Store {
    /// Loads the state (none yet is an empty state; a damaged file is set aside).
    pub fn open(path: &Path) -> Store {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                let aside = path.with_extension("damaged");
                tracing::error!(error = %e, aside = %aside.display(), "healer state unreadable; starting empty, the audit log has the history");
                let _ = std::fs::rename(path, &aside);
                State::default()
            }),
            Err(_) => State::default(),
        };
        Store { path: path.to_path_buf(), state: Mutex::new(state) }
    }

    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes the state and makes the change durable before returning. If saving fails
    /// the change is undone, so memory never runs ahead of disk.
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R, SaveError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = state.clone();
        let r = f(&mut next);
        let now = crate::now_ms();
        next.seen.retain(|_, at| now - *at < SEEN_FOR_MS);
        if next.actions.len() > KEEP_ACTIONS {
            let drop = next.actions.len() - KEEP_ACTIONS;
            next.actions.drain(..drop);
        }
        let bytes = serde_json::to_vec(&next)
            .map_err(|e| SaveError { path: self.path.clone(), error: std::io::Error::other(e) })?;
        write_durably(&self.path, &bytes).map_err(|error| SaveError { path: self.path.clone(), error })?;
        *state = next;
        Ok(r)
    }
}

/// Temporary file, fsync, rename, fsync of the folder: after a crash the file is whole,
/// old or new.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let store = Store::open(&path);
        store
            .update(|s| {
                s.paused = true;
                s.targets.entry("instance/search-1".into()).or_default().actions.push(5);
                s.seen.insert("x@t".into(), crate::now_ms());
            })
            .expect("save");
        let again = Store::open(&path);
        assert!(again.read(|s| s.paused));
        assert_eq!(again.read(|s| s.targets["instance/search-1"].actions.clone()), [5]);
        assert!(again.read(|s| s.seen.contains_key("x@t")));
        std::fs::write(&path, b"{not json").expect("damage");
        let damaged = Store::open(&path);
        assert!(!damaged.read(|s| s.paused), "starts empty");
        assert!(path.with_extension("damaged").exists(), "the damaged file is kept aside");
    }

    #[test]
    fn targets_key_by_the_narrowest_label() {
        let l = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Labels>();
        assert_eq!(
            Target::from_labels(&l(&[("service", "search"), ("instance", "search-1")])).key(),
            "instance/search-1"
        );
        assert_eq!(Target::from_labels(&l(&[("sloth_service", "orders")])).key(), "service/orders");
        assert_eq!(Target::from_labels(&l(&[("node", "node-2")])).key(), "node/node-2");
    }
}
