//! The failover protocol: how the healer fails over any primary/standby service that
//! speaks it — the shop's catalog does, and so can any other (ARCHITECTURE.md, "Failover
//! protocol"). Each replica serves, under its base URL:
//!
//! - `GET /admin/replication` → `{"role": "primary"|"standby"|"fenced", "epoch": N,
//!   "last_seq": S, ...}`: what it is and under which epoch it leads or follows;
//! - `POST /admin/promote` `{"epoch": N}` → `{"epoch": M, "role": "primary"}`: become the
//!   primary under an epoch of at least N (M ≥ N);
//! - `POST /admin/fence` `{"epoch": M}`: a primary of an older epoch stops taking writes;
//! - `POST /admin/rejoin` `{"primary": url, "epoch": M}`: a fenced old primary becomes
//!   the new primary's standby (keeping the log both share).
//!
//! Calls carry the service's admin token (`Authorization: Bearer`) and Hale's signature.
//! [`plan`] is the decision, pure: the primary of the newest epoch still fine means
//! nothing to do; else the reachable standby with the most of the log is promoted under
//! the next epoch, and the old primary fenced. The load balancer is then told the new
//! primary (the gateway's pool, or an exec hook).
//!
//! Sync sets (optional, the catalog speaks them): a primary acknowledges a write only
//! once the standby of its sync set has it, so only a standby in the set
//! (`"in_sync": true`, under the newest `sync_stamp` the healer knows of) may be promoted.
//! A primary whose standby does not confirm says `"sync_blocked": true`; the healer then
//! releases it (`POST /admin/release` `{"stamp": …}`), records the set it ended, and
//! promotes that standby no more until it is in a later set.

use std::sync::Arc;
use std::time::Duration;

use hale_core::Role;
use hale_core::api::{EpochRequest, Promoted, RejoinRequest, Rejoined, ReleaseRequest, ReplicationStatus, SyncStamp};

use crate::clients::ClientError;
use crate::engine::ActionError;

/// Each protocol call may take this long (a promotion drains the old primary first).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A member's `GET /admin/replication`, when its load balancer holds it ready.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long past the ready members' answers an unready member's status is waited for.
pub const UNREADY_GRACE: Duration = Duration::from_millis(100);

/// A replica of a primary/standby service: where it is and, if known, whether it is
/// ready (its load balancer's or its probe's word).
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub instance: String,
    pub url: String,
    pub ready: Option<bool>,
    /// The load balancer's (or the alert's) word that it is the primary: the old primary
    /// to fence when its own status cannot be asked.
    pub listed_primary: bool,
}

/// A replica's `GET /admin/replication`, as far as the protocol reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub role: Role,
    pub epoch: u64,
    pub last_seq: u64,
    pub in_sync: Option<bool>,
    pub sync_stamp: Option<SyncStamp>,
    pub sync_blocked: bool,
}

impl From<ReplicationStatus> for ReplicaStatus {
    fn from(s: ReplicationStatus) -> Self {
        ReplicaStatus {
            role: s.role,
            epoch: s.epoch,
            last_seq: s.last_seq,
            in_sync: s.in_sync,
            sync_stamp: s.sync_stamp,
            sync_blocked: s.sync_blocked,
        }
    }
}

impl ReplicaStatus {
    /// Whether promoting this standby keeps every acknowledged write: it was in its
    /// primary's sync set, and not in one the healer has since released. A service that
    /// says nothing of sync sets is promoted as before.
    pub fn may_be_promoted(&self, released: Option<SyncStamp>) -> bool {
        match (self.in_sync, released) {
            (None, _) => true,
            (Some(false), _) => false,
            (Some(true), None) => true,
            (Some(true), Some(r)) => self.sync_stamp.is_some_and(|s| s >= r),
        }
    }
}

/// What a failover should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The primary of the newest epoch answers and is not known to be unready.
    NotNeeded { primary: usize },
    /// Promote `candidate` under `epoch`; fence `old_primary` (if one is known).
    Promote { candidate: usize, old_primary: Option<usize>, epoch: u64 },
    /// The primary is fine but its writes wait for a standby that does not confirm them:
    /// release the standby from the sync set of `stamp`.
    Release { primary: usize, stamp: SyncStamp },
    /// No standby can take over.
    NoCandidate(String),
}

/// Decides a failover from each member's status (`None`: it did not answer) and the
/// last sync set the healer released for the service (`released`).
pub fn plan(members: &[(Member, Option<ReplicaStatus>)], released: Option<SyncStamp>) -> Plan {
    let newest = members.iter().filter_map(|(_, s)| s.map(|s| s.epoch)).max().unwrap_or(0);
    let primary = members
        .iter()
        .position(|(m, s)| s.is_some_and(|s| s.role == Role::Primary && s.epoch == newest) && m.ready != Some(false));
    if let Some(primary) = primary {
        return match members[primary].1 {
            Some(ReplicaStatus { sync_blocked: true, sync_stamp: Some(stamp), .. }) => Plan::Release { primary, stamp },
            _ => Plan::NotNeeded { primary },
        };
    }
    // The old primary: the one whose status says so, else the one the load balancer (or
    // the alert) names, not answering now.
    let old_primary = members
        .iter()
        .position(|(_, s)| s.is_some_and(|s| s.role == Role::Primary))
        .or_else(|| members.iter().position(|(m, _)| m.listed_primary));
    let ready = |(_, (m, s)): &(usize, &(Member, Option<ReplicaStatus>))| {
        s.is_some_and(|s| s.role == Role::Standby) && m.ready != Some(false)
    };
    let candidate = members
        .iter()
        .enumerate()
        .filter(ready)
        .filter(|(_, (_, s))| s.is_some_and(|s| s.may_be_promoted(released)))
        .max_by_key(|(_, (_, s))| s.map(|s| (s.epoch, s.last_seq)))
        .map(|(i, _)| i);
    match candidate {
        Some(candidate) => Plan::Promote { candidate, old_primary, epoch: newest + 1 },
        None => {
            let behind: Vec<&str> =
                members.iter().enumerate().filter(ready).map(|(_, (m, _))| m.instance.as_str()).collect();
            if behind.is_empty() {
                Plan::NoCandidate(format!(
                    "no standby answers and is ready among {}",
                    members.iter().map(|(m, _)| m.instance.as_str()).collect::<Vec<_>>().join(", ")
                ))
            } else {
                Plan::NoCandidate(format!(
                    "{} {} not in the primary's sync set (released, or never caught up): promoting it could lose \
                     acknowledged writes; a human decides (bring the old primary back, or promote by hand \
                     knowing what may be lost)",
                    behind.join(", "),
                    if behind.len() == 1 { "is" } else { "are" }
                ))
            }
        }
    }
}

/// The protocol's calls.
pub struct Protocol {
    pub client: reqwest::Client,
    pub token: Option<Arc<hale_core::token::Token>>,
    pub secret: Option<Arc<[u8]>>,
}

impl Protocol {
    fn call(&self, method: reqwest::Method, url: &str, body: Option<Vec<u8>>) -> reqwest::RequestBuilder {
        let bytes = body.unwrap_or_default();
        let mut request = self.client.request(method, url).timeout(CALL_TIMEOUT);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.current());
        }
        if let Some(secret) = &self.secret {
            let now = (hale_core::time::now_ms() / 1000).max(0) as u64;
            request =
                request.header(hale_core::webhook::SIGNATURE_HEADER, hale_core::webhook::sign(secret, now, &bytes));
        }
        if bytes.is_empty() { request } else { request.header("content-type", "application/json").body(bytes) }
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        member: &Member,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).unwrap_or_default();
        let what = format!("{path} of {}", member.instance);
        let url = format!("{}/admin/{path}", member.url.trim_end_matches('/'));
        let response = self
            .call(reqwest::Method::POST, &url, Some(body))
            .send()
            .await
            .map_err(|error| ClientError::Transport { doing: what.clone(), error: error.without_url() })?;
        let (_, text) = crate::clients::success_text(response, &what).await?;
        serde_json::from_str(&text).map_err(|e| ClientError::Answer(format!("{what}: {e}")))
    }

    /// Each member's status, asked of all at once (`None`: no answer). A member its load
    /// balancer holds not ready (the old primary, in a failover) gets only
    /// [`UNREADY_GRACE`] past the last ready member's answer: a frozen primary accepts the
    /// connection and never answers, and every second spent on it is a second without
    /// writes. An unready member that does answer in time is read as usual.
    pub async fn statuses(&self, members: Vec<Member>) -> Vec<(Member, Option<ReplicaStatus>)> {
        let ask = |m: &Member| {
            let url = format!("{}/admin/replication", m.url.trim_end_matches('/'));
            async move {
                let r = self.call(reqwest::Method::GET, &url, None).timeout(STATUS_TIMEOUT).send().await.ok()?;
                r.status().is_success().then_some(())?;
                r.json::<ReplicationStatus>().await.ok().map(ReplicaStatus::from)
            }
        };
        let (answered, ready_done) = tokio::sync::watch::channel(false);
        let ready = members.iter().filter(|m| m.ready != Some(false)).map(ask);
        let ready = async {
            let statuses = futures::future::join_all(ready).await;
            let _ = answered.send(true);
            statuses
        };
        let unready = members.iter().filter(|m| m.ready == Some(false)).map(|m| {
            let mut ready_done = ready_done.clone();
            let status = ask(m);
            async move {
                let grace = async {
                    let _ = ready_done.wait_for(|done| *done).await;
                    tokio::time::sleep(UNREADY_GRACE).await;
                };
                tokio::select! {
                    status = status => status,
                    () = grace => None,
                }
            }
        });
        let (ready, unready) = futures::future::join(ready, futures::future::join_all(unready)).await;
        let (mut ready, mut unready) = (ready.into_iter(), unready.into_iter());
        members
            .into_iter()
            .map(|m| {
                let status = if m.ready == Some(false) { unready.next() } else { ready.next() }.flatten();
                (m, status)
            })
            .collect()
    }

    /// Promotes `member` under at least `epoch`; returns the epoch it leads under.
    pub async fn promote(&self, member: &Member, epoch: u64) -> Result<u64, ActionError> {
        let answer: Promoted = self.post(member, "promote", &EpochRequest { epoch: Some(epoch) }).await?;
        Ok(answer.epoch)
    }

    /// Takes the standby out of `member`'s sync set of `stamp`; the set it moved to.
    pub async fn release(&self, member: &Member, stamp: SyncStamp) -> Result<Option<SyncStamp>, ActionError> {
        let answer: ReplicationStatus = self.post(member, "release", &ReleaseRequest { stamp }).await?;
        Ok(answer.sync_stamp)
    }

    /// Tells `member` of `epoch`: an older primary stops taking writes.
    pub async fn fence(&self, member: &Member, epoch: u64) -> Result<(), ActionError> {
        self.post::<serde::de::IgnoredAny>(member, "fence", &EpochRequest { epoch: Some(epoch) }).await?;
        Ok(())
    }

    /// Makes `member` a standby of `primary` under `epoch`; the replica's account of it.
    pub async fn rejoin(&self, member: &Member, primary: &Member, epoch: u64) -> Result<Rejoined, ActionError> {
        let body = RejoinRequest { primary: primary.url.clone(), epoch };
        Ok(self.post(member, "rejoin", &body).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, ready: Option<bool>, status: Option<(Role, u64, u64)>) -> (Member, Option<ReplicaStatus>) {
        let m = Member { instance: name.into(), url: format!("http://{name}"), ready, listed_primary: name == "a" };
        (
            m,
            status.map(|(role, epoch, last_seq)| ReplicaStatus {
                role,
                epoch,
                last_seq,
                in_sync: None,
                sync_stamp: None,
                sync_blocked: false,
            }),
        )
    }

    #[test]
    fn a_primary_of_the_newest_epoch_that_is_fine_needs_nothing() {
        let members =
            [member("a", Some(true), Some((Role::Primary, 3, 10))), member("b", None, Some((Role::Standby, 3, 9)))];
        assert_eq!(plan(&members, None), Plan::NotNeeded { primary: 0 });
    }

    #[test]
    fn the_standby_with_the_most_log_is_promoted_under_the_next_epoch() {
        let members = [
            member("a", Some(false), None), // the primary, gone
            member("b", Some(true), Some((Role::Standby, 3, 9))),
            member("c", None, Some((Role::Standby, 3, 12))),
            member("d", Some(false), Some((Role::Standby, 3, 20))), // not ready: not a candidate
        ];
        assert_eq!(
            plan(&members, None),
            Plan::Promote { candidate: 2, old_primary: Some(0), epoch: 4 },
            "the listed primary"
        );
    }

    fn synced(
        mut m: (Member, Option<ReplicaStatus>),
        in_sync: bool,
        stamp: (u64, u64),
    ) -> (Member, Option<ReplicaStatus>) {
        if let Some(s) = &mut m.1 {
            s.in_sync = Some(in_sync);
            s.sync_stamp = Some(SyncStamp { epoch: stamp.0, generation: stamp.1 });
        }
        m
    }

    /// A standby out of its primary's sync set may lack writes the primary acknowledged
    /// alone: it is never promoted by the healer (found by tests/netns.rs).
    #[test]
    fn only_a_standby_in_the_sync_set_is_promoted() {
        let gone = member("a", Some(false), None);
        let out = synced(member("b", Some(true), Some((Role::Standby, 3, 9))), false, (3, 0));
        let Plan::NoCandidate(why) = plan(&[gone.clone(), out], None) else {
            panic!("promoted a standby out of the set")
        };
        assert!(why.contains("b is not in the primary's sync set"), "{why}");
        // In the set: promoted. In the set, but one the healer has since released: not.
        let in_set = synced(member("b", Some(true), Some((Role::Standby, 3, 9))), true, (3, 1));
        assert_eq!(
            plan(&[gone.clone(), in_set.clone()], None),
            Plan::Promote { candidate: 1, old_primary: Some(0), epoch: 4 }
        );
        let released = Some(SyncStamp { epoch: 3, generation: 2 });
        assert!(matches!(plan(&[gone.clone(), in_set], released), Plan::NoCandidate(_)));
        // Back in the released set's successor: promoted again.
        let back = synced(member("b", Some(true), Some((Role::Standby, 3, 9))), true, (3, 2));
        assert!(matches!(plan(&[gone, back], released), Plan::Promote { candidate: 1, .. }));
    }

    #[test]
    fn a_primary_blocked_on_its_standby_has_the_standby_released() {
        let mut primary = synced(member("a", Some(true), Some((Role::Primary, 3, 10))), false, (3, 4));
        if let Some(s) = &mut primary.1 {
            s.sync_blocked = true;
        }
        let standby = member("b", Some(false), None);
        assert_eq!(
            plan(&[primary, standby], None),
            Plan::Release { primary: 0, stamp: SyncStamp { epoch: 3, generation: 4 } }
        );
    }

    #[test]
    fn an_unready_primary_is_fenced_and_an_old_epochs_primary_does_not_count() {
        let members =
            [member("a", Some(false), Some((Role::Primary, 3, 10))), member("b", None, Some((Role::Standby, 3, 10)))];
        assert_eq!(plan(&members, None), Plan::Promote { candidate: 1, old_primary: Some(0), epoch: 4 });
        // A primary of epoch 2 beside a fenced replica of epoch 3: split brain, not fine.
        let members = [member("a", None, Some((Role::Primary, 2, 10))), member("b", None, Some((Role::Fenced, 3, 10)))];
        assert!(matches!(plan(&members, None), Plan::NoCandidate(_)));
    }
}
