//! The healer's durable state: alerts received and not yet decided, which alerts were
//! seen (to recognise duplicates), actions and their outcome, per-target history (for
//! cooldowns, rate limits and "needs a human"), and the global pause. One JSON file,
//! replaced atomically (temporary file, fsync, rename, fsync of the folder) on every
//! change, so a restarted healer neither repeats nor forgets an action; or, with `--etcd`, one
//! key in etcd shared by several healers, changed by compare-and-swap, where only the
//! elected leader may record decisions (see `ha`).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use crate::ha::{EtcdError, Leadership, Member, with_timeout};

/// Alerts seen are remembered this long (a duplicate arriving later is a new alert).
const SEEN_FOR_MS: i64 = 24 * 3600 * 1000;
/// Actions kept in the state (the audit log keeps everything).
const KEEP_ACTIONS: usize = 1000;
/// Refused alerts kept for another look; beyond this the oldest go (audited when they
/// were refused, so nothing is lost but the retry).
const KEEP_DEFERRED: usize = 500;

pub type Labels = BTreeMap<String, String>;

/// The wire types of the healer's API, also what its durable state is made of (so the
/// state file and the API say the same thing).
pub use hale_core::api::{Action, ActionStatus as Status, Deferred, ReceivedAlert as Alert, Target, TargetState};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub paused: bool,
    /// Received, not yet decided.
    pub queue: VecDeque<Alert>,
    /// Dedup key → when first seen.
    pub seen: BTreeMap<String, i64>,
    pub targets: BTreeMap<String, TargetState>,
    pub actions: Vec<Action>,
    /// Alerts refused for a reason that lifts by itself (the pause, an action in
    /// progress, a rate limit, a cooldown, a live check), decided again when it does if
    /// they still fire. Kept here, not in memory, so a restarted healer or the next
    /// leader still remembers them.
    #[serde(default)]
    pub deferred: Vec<Deferred>,
    /// Per primary/standby service, the last sync set the healer released (see
    /// `failover`): a standby not in a set at least this new is never promoted.
    #[serde(default)]
    pub released: BTreeMap<String, hale_core::api::SyncStamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("saving the healer's state to {path}: {error}")]
    File { path: PathBuf, error: std::io::Error },
    #[error("saving the healer's state in etcd: {0}")]
    Etcd(EtcdError),
    /// Another healer's copy of the state does not read (a newer healer's format, or
    /// damage): nothing is written over it.
    #[error("the healer's state at {key} in etcd is not readable: {error}")]
    Unreadable { key: String, error: serde_json::Error },
    /// Other healers kept changing the state under this one's compare-and-swap.
    #[error("saving the healer's state in etcd: too many conflicting writers; try again")]
    Conflict,
    #[error("encoding the healer's state: {0}")]
    Encode(serde_json::Error),
    /// Only the leader decides and acts; this healer is not (or no longer) it.
    #[error("this healer does not lead{}", leader_hint(.0))]
    NotLeader(Option<Member>),
}

fn leader_hint(leader: &Option<Member>) -> String {
    match leader {
        Some(m) => format!("; the leader is {} at {}", m.id, m.api),
        None => "; no healer leads right now, try again in a few seconds".into(),
    }
}

/// Who may make a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Any healer: storing a received alert (every healer takes alerts).
    Any,
    /// Only the leader: decisions, action progress, human answers.
    Leader,
}

/// Where the state lives: one healer's file, or etcd shared by several healers.
enum Backend {
    File(PathBuf),
    Etcd(Box<Etcd>),
}

struct Etcd {
    client: etcd_client::Client,
    key: String,
    leadership: Arc<Leadership>,
}

/// The state as last read or written, with its etcd revision (0 for a file).
struct Cached {
    state: State,
    revision: i64,
}

pub struct Store {
    backend: Backend,
    cache: Mutex<Cached>,
    /// One change at a time from this process (fewer compare-and-swap conflicts).
    writing: tokio::sync::Mutex<()>,
    /// Rung when the state changed under this healer (another healer took an alert).
    pub changed: tokio::sync::Notify,
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
        Store::new(Backend::File(path.to_path_buf()), state, 0)
    }

    /// The state shared in etcd under `prefix`; reads it once to start.
    pub async fn open_etcd(
        client: etcd_client::Client,
        prefix: &str,
        leadership: Arc<Leadership>,
    ) -> Result<Store, SaveError> {
        let key = format!("{}/state", prefix.trim_end_matches('/'));
        let (state, revision) = read_etcd(&client, &key).await?;
        Ok(Store::new(Backend::Etcd(Box::new(Etcd { client, key, leadership })), state, revision))
    }

    fn new(backend: Backend, state: State, revision: i64) -> Store {
        Store {
            backend,
            cache: Mutex::new(Cached { state, revision }),
            writing: tokio::sync::Mutex::new(()),
            changed: tokio::sync::Notify::new(),
        }
    }

    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.cache.lock().unwrap_or_else(|p| p.into_inner()).state)
    }

    /// The election this store's writes are guarded by (`None`: a lone healer).
    pub fn leadership(&self) -> Option<&Arc<Leadership>> {
        match &self.backend {
            Backend::Etcd(e) => Some(&e.leadership),
            Backend::File(_) => None,
        }
    }

    /// A lone healer always leads.
    pub fn is_leader(&self) -> bool {
        self.leadership().is_none_or(|l| l.is_leader())
    }

    /// Waits until this healer leads, then reads the shared state afresh so decisions
    /// start from everything the previous leader recorded.
    pub async fn lead(&self) {
        let Backend::Etcd(etcd) = &self.backend else { return };
        let mut leading = etcd.leadership.subscribe();
        loop {
            while !*leading.borrow_and_update() {
                if leading.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            match read_etcd(&etcd.client, &etcd.key).await {
                Ok((state, revision)) => {
                    self.replace(state, revision);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leading, but cannot read the shared state yet; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
            }
        }
    }

    fn replace(&self, state: State, revision: i64) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if revision >= cache.revision {
            *cache = Cached { state, revision };
        }
    }

    /// Follows the shared state's changes in etcd (a no-op for a file) so reads stay
    /// current and the leader wakes for alerts another healer took.
    pub async fn follow(&self) {
        let Backend::Etcd(etcd) = &self.backend else { return };
        loop {
            let from = self.cache.lock().unwrap_or_else(|p| p.into_inner()).revision + 1;
            let opts = etcd_client::WatchOptions::new().with_start_revision(from);
            match etcd.client.clone().watch(etcd.key.clone(), Some(opts)).await {
                Ok(mut stream) => loop {
                    match stream.message().await {
                        Ok(Some(resp)) => {
                            for ev in resp.events() {
                                let Some(kv) = ev.kv() else { continue };
                                if let Ok(state) = serde_json::from_slice::<State>(kv.value()) {
                                    self.replace(state, kv.mod_revision());
                                    self.changed.notify_one();
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "watching the shared healer state; reconnecting");
                            break;
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot watch the shared healer state; retrying"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// Stores a received alert: any healer may (every healer takes alerts).
    pub async fn take<R>(&self, f: impl FnMut(&mut State) -> R) -> Result<R, SaveError> {
        self.change(Writer::Any, f).await
    }

    /// Changes the state and makes the change durable before returning; with etcd, only
    /// while this healer leads. If saving fails the change is undone, so memory never
    /// runs ahead of what is stored.
    pub async fn update<R>(&self, f: impl FnMut(&mut State) -> R) -> Result<R, SaveError> {
        self.change(Writer::Leader, f).await
    }

    async fn change<R>(&self, writer: Writer, mut f: impl FnMut(&mut State) -> R) -> Result<R, SaveError> {
        let _one = self.writing.lock().await;
        match &self.backend {
            Backend::File(path) => {
                let mut next = self.read(State::clone);
                let r = f(&mut next);
                trim(&mut next);
                let bytes = serde_json::to_vec(&next).map_err(SaveError::Encode)?;
                hale_fs::write_durable(path, &bytes).map_err(|error| SaveError::File { path: path.clone(), error })?;
                self.replace(next, 0);
                Ok(r)
            }
            Backend::Etcd(etcd) => {
                // Compare-and-swap on the state key's revision; a conflict (another
                // healer stored an alert meanwhile) reads the newer state and tries again.
                for _ in 0..16 {
                    if writer == Writer::Leader && !etcd.leadership.is_leader() {
                        return Err(SaveError::NotLeader(etcd.leadership.leader()));
                    }
                    let (mut next, revision) = {
                        let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                        (c.state.clone(), c.revision)
                    };
                    let r = f(&mut next);
                    trim(&mut next);
                    let bytes = serde_json::to_vec(&next).map_err(SaveError::Encode)?;
                    let mut when = vec![Compare::mod_revision(etcd.key.clone(), CompareOp::Equal, revision)];
                    if writer == Writer::Leader {
                        let l = &etcd.leadership;
                        when.push(Compare::value(l.key(), CompareOp::Equal, l.my_value()));
                    }
                    let txn = Txn::new()
                        .when(when)
                        .and_then([TxnOp::put(etcd.key.clone(), bytes, None)])
                        .or_else([TxnOp::get(etcd.key.clone(), None)]);
                    let resp = with_timeout(ETCD_WRITE_TIMEOUT, etcd.client.clone().txn(txn))
                        .await
                        .map_err(SaveError::Etcd)?;
                    if resp.succeeded() {
                        let at = resp.header().map_or(revision + 1, |h| h.revision());
                        self.replace(next, at);
                        return Ok(r);
                    }
                    let mut newer = false;
                    for op in resp.op_responses() {
                        if let TxnOpResponse::Get(get) = op
                            && let Some(kv) = get.kvs().first()
                            && kv.mod_revision() != revision
                        {
                            let state = serde_json::from_slice(kv.value())
                                .map_err(|error| SaveError::Unreadable { key: etcd.key.clone(), error })?;
                            self.replace(state, kv.mod_revision());
                            newer = true;
                        }
                    }
                    if !newer {
                        // The state did not move: the leader guard failed.
                        return Err(SaveError::NotLeader(etcd.leadership.leader()));
                    }
                }
                Err(SaveError::Conflict)
            }
        }
    }
}

const ETCD_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Old dedup keys and old actions go (the audit log keeps everything).
fn trim(next: &mut State) {
    let now = hale_core::time::now_ms();
    next.seen.retain(|_, at| now - *at < SEEN_FOR_MS);
    if next.actions.len() > KEEP_ACTIONS {
        let drop = next.actions.len() - KEEP_ACTIONS;
        next.actions.drain(..drop);
    }
    if next.deferred.len() > KEEP_DEFERRED {
        let drop = next.deferred.len() - KEEP_DEFERRED;
        next.deferred.drain(..drop);
    }
}

async fn read_etcd(client: &etcd_client::Client, key: &str) -> Result<(State, i64), SaveError> {
    let resp = with_timeout(ETCD_WRITE_TIMEOUT, client.clone().get(key, None)).await.map_err(SaveError::Etcd)?;
    match resp.kvs().first() {
        Some(kv) => {
            let state = serde_json::from_slice(kv.value())
                .map_err(|error| SaveError::Unreadable { key: key.to_string(), error })?;
            Ok((state, kv.mod_revision()))
        }
        None => Ok((State::default(), 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hale_core::api::{ActionKind, RetryWhen};

    #[tokio::test]
    async fn changes_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let store = Store::open(&path);
        store
            .update(|s| {
                s.paused = true;
                s.targets.entry("instance/search-1".into()).or_default().actions.push(5);
                s.seen.insert("x@t".into(), hale_core::time::now_ms());
            })
            .await
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

    #[tokio::test]
    async fn refusals_kept_for_a_retry_survive_a_reopen_and_older_states_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        // A state written before refusals were kept has no `deferred`.
        std::fs::write(&path, br#"{"paused":false,"queue":[],"seen":{},"targets":{},"actions":[]}"#).expect("old");
        let store = Store::open(&path);
        assert!(store.read(|s| s.deferred.is_empty()));
        assert!(!path.with_extension("damaged").exists(), "read, not set aside");
        let deferred = Deferred {
            alert: Alert {
                labels: [("alertname".to_string(), "ReplicaDown".to_string())].into_iter().collect(),
                annotations: Labels::new(),
                starts_at: "2026-01-01T00:00:00Z".into(),
                fingerprint: "f".into(),
                received_ms: 1,
            },
            policy: "restart".into(),
            action: ActionKind::Restart,
            target: Target { service: Some("search".into()), instance: Some("search-2".into()), node: None },
            code: "paused".into(),
            reason: "the healer is paused".into(),
            first_refused_ms: 5,
            refused_ms: 6,
            attempts: 2,
            retry: RetryWhen::Resumed,
        };
        store.update(|s| s.deferred.push(deferred.clone())).await.expect("save");
        assert_eq!(Store::open(&path).read(|s| s.deferred.clone()), [deferred]);
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
