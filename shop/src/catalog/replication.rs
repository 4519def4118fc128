//! Role, epoch and the replication stream of one catalog replica.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use hale_core::Role;
use hale_core::api::{CatalogReadiness, EpochRequest, Rejoined, SyncStamp};
use hale_serve::metrics::registered;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::lease::{IDLE_POLL, LEASE, LeaseStamp, PrimaryLease, StandbyLease};
use super::store::{Change, ReplicaMeta, Reservation, Store, StoreError, SyncMeta};
use super::{ChangeTrace, ChangesPage, ReplicationStatus};
use crate::http::internal::{self, ProofError};
use crate::http::token::unix_now;
use crate::http::{AppError, Readiness};

/// Header the gateway puts on every write: the epoch of the primary it believes in. It
/// counts only with the gateway's signature (see [`crate::http::internal`]).
pub use crate::http::internal::EPOCH_HEADER;
/// How long a primary waits for the standby of its sync set to confirm a write; past it the
/// write is refused (503): stored here and replicated later, but not acknowledged.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(1);
/// Epochs beyond this are refused, so no arithmetic on them can overflow.
pub const MAX_EPOCH: u64 = 1 << 48;
/// The most an epoch may move in one message: a failover moves it by one, so this leaves
/// room for a replica that missed a few, while no message can use up the epoch space (a
/// jump to [`MAX_EPOCH`] would leave no epoch for the next failover to promote under).
pub const MAX_EPOCH_STEP: u64 = 16;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone)]
struct Metrics {
    epoch: Gauge,
    is_primary: Gauge,
    fenced: Gauge,
    last_seq: Gauge,
    lag: Gauge,
    sync_timeouts: Counter,
    sync_member: Gauge,
    sync_blocked: Gauge,
    reservations: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Metrics {
        let mut metric = |name: &str, help: &str| registered(registry, name, help);
        Metrics {
            epoch: metric("shop_catalog_epoch", "Replication epoch this replica knows"),
            is_primary: metric("shop_catalog_primary", "1 if this replica accepts writes"),
            fenced: metric(
                "shop_catalog_fenced",
                "1 if a newer epoch fenced this replica: it must rejoin as a standby",
            ),
            last_seq: metric("shop_catalog_change_seq", "Last change sequence stored here"),
            lag: metric(
                "shop_catalog_replication_lag_changes",
                "Changes the primary has that this standby has not applied",
            ),
            sync_member: metric(
                "shop_catalog_sync_standby",
                "1 if a standby is in this primary's sync set: no write is acknowledged before it has it",
            ),
            sync_blocked: metric(
                "shop_catalog_sync_blocked",
                "1 if writes wait for a sync standby that does not confirm them (the healer may release it)",
            ),
            sync_timeouts: registered(
                registry,
                "shop_catalog_replication_sync_timeouts",
                "Writes refused because the sync standby did not confirm them in time",
            ),
            reservations: registered(registry, "shop_catalog_stock_reservations", "Stock reservations by outcome"),
        }
    }
}

pub struct CatalogState {
    store: Arc<Store>,
    instance: String,
    /// Role and epoch; the lock is held across every write so fencing and writes are
    /// ordered. Only blocking-pool threads take it.
    meta: Arc<Mutex<ReplicaMeta>>,
    out: Outputs,
    standby_ack: watch::Sender<u64>,
    /// Sync sets (see [`CatalogState::wait_for_standby`]); stored on every change.
    sync: watch::Sender<SyncMeta>,
    /// As a primary: the write lease its sync standby grants ([`super::lease`]).
    lease: Arc<PrimaryLease>,
    /// As a standby: when it last heard from its primary, what it echoes.
    standby_lease: StandbyLease,
    /// The primary a standby follows: as configured, or as the last rejoin said (stored).
    follow: Arc<Mutex<Option<String>>>,
    admin_token: String,
    client: reqwest::Client,
}

/// What the world sees of the replica's state — the async view of role and sequence,
/// `/readyz`, metrics — updated together by [`Outputs::publish`]. Cloned into the
/// blocking sections that change the state, so it is published there: a request whose
/// client hangs up is dropped at its next `.await`, and a change already stored must not
/// stay unseen (a fence whose caller gave up would leave the replica fenced but still
/// ready and counted as primary).
#[derive(Clone)]
struct Outputs {
    /// A copy of `meta` for async readers.
    meta_view: watch::Sender<ReplicaMeta>,
    seq: watch::Sender<u64>,
    primary_seq: Arc<AtomicU64>,
    /// False from a rejoin until the standby has caught up with its new primary: until
    /// then it is not ready, so the gateway sends it no reads.
    caught_up: Arc<AtomicBool>,
    readiness: Readiness,
    metrics: Metrics,
    /// The trace each recent change was written in (oldest first), until the standby
    /// has it: the page that carries a change carries its trace too.
    traced: Arc<Mutex<VecDeque<ChangeTrace>>>,
}

/// Changes whose trace is remembered for the standby; older ones (a standby long away)
/// replicate untraced.
const TRACED_CHANGES: usize = 4096;

impl Outputs {
    /// Remembers that change `seq` was written in the trace `traceparent` names.
    fn note_trace(&self, seq: u64, traceparent: String) {
        let mut traced = self.traced.lock().unwrap_or_else(|p| p.into_inner());
        traced.push_back(ChangeTrace { seq, traceparent });
        while traced.len() > TRACED_CHANGES {
            traced.pop_front();
        }
    }

    fn meta(&self) -> ReplicaMeta {
        *self.meta_view.borrow()
    }

    fn last_seq(&self) -> u64 {
        *self.seq.borrow()
    }

    /// Raises the known last sequence (never lowers it).
    fn advance(&self, seq: u64) {
        self.seq.send_if_modified(|cur| {
            let changed = seq > *cur;
            *cur = (*cur).max(seq);
            changed
        });
    }

    /// Refreshes metrics and the `/readyz` details after any change of state.
    fn publish(&self) {
        let meta = self.meta();
        let last = self.last_seq();
        let lag = self.primary_seq.load(Ordering::Relaxed).saturating_sub(last);
        self.metrics.epoch.set(meta.epoch as i64);
        self.metrics.is_primary.set(i64::from(meta.role == Role::Primary));
        self.metrics.fenced.set(i64::from(meta.role == Role::Fenced));
        self.metrics.last_seq.set(last as i64);
        self.metrics.lag.set(if meta.role == Role::Standby { lag as i64 } else { 0 });
        // Only a primary has a sync set: a fenced old primary's writes block on nothing.
        if meta.role != Role::Primary {
            self.metrics.sync_member.set(0);
            self.metrics.sync_blocked.set(0);
        }
        // A fenced replica leaves every pool: its data stops at the failover.
        self.readiness.set(match meta.role {
            Role::Fenced => {
                Err(format!("fenced: epoch {} has a newer primary; rejoin this replica as a standby", meta.epoch))
            }
            Role::Standby if !self.caught_up.load(Ordering::Relaxed) => {
                Err(format!("rejoined as a standby; catching up, {lag} changes behind the primary"))
            }
            _ => serde_json::to_value(CatalogReadiness { role: meta.role, epoch: meta.epoch, seq: last })
                .map_err(|e| format!("writing the readiness detail: {e}")),
        });
    }
}

impl CatalogState {
    pub fn open(
        db_path: &Path,
        instance: &str,
        initial_role: Role,
        follow: Option<String>,
        admin_token: &str,
        readiness: Readiness,
        registry: &mut Registry,
    ) -> Result<Arc<Self>, StoreError> {
        let store = Arc::new(Store::open(db_path, initial_role)?);
        let meta = store.meta()?;
        let last = store.last_seq()?;
        let follow = store.follow()?.or(follow);
        let sync = store.sync()?;
        let metrics = Metrics::register(registry);
        let state = Arc::new(CatalogState {
            store,
            instance: instance.to_string(),
            meta: Arc::new(Mutex::new(meta)),
            out: Outputs {
                meta_view: watch::Sender::new(meta),
                seq: watch::Sender::new(last),
                primary_seq: Arc::new(AtomicU64::new(last)),
                caught_up: Arc::new(AtomicBool::new(true)),
                readiness,
                metrics,
                traced: Arc::default(),
            },
            standby_ack: watch::Sender::new(0),
            sync: watch::Sender::new(sync),
            lease: Arc::default(),
            standby_lease: StandbyLease::default(),
            follow: Arc::new(Mutex::new(follow)),
            admin_token: admin_token.to_string(),
            client: crate::http::peer_client(Duration::from_millis(500), IDLE_POLL + Duration::from_secs(3))?,
        });
        state.out.metrics.sync_member.set(i64::from(sync.member && meta.role == Role::Primary));
        state.publish();
        Ok(state)
    }

    pub fn meta(&self) -> ReplicaMeta {
        self.out.meta()
    }

    pub fn last_seq(&self) -> u64 {
        self.out.last_seq()
    }

    fn following(&self) -> Option<String> {
        self.follow.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn publish(&self) {
        self.out.publish();
    }

    pub fn status(&self) -> ReplicationStatus {
        let meta = self.meta();
        let sync = *self.sync.borrow();
        let standby = meta.role == Role::Standby;
        ReplicationStatus {
            in_sync: standby.then_some(sync.in_sync),
            sync_stamp: match meta.role {
                Role::Primary => Some(sync.stamp),
                Role::Standby => Some(sync.in_stamp),
                Role::Fenced => None,
            },
            sync_blocked: meta.role == Role::Primary && self.out.metrics.sync_blocked.get() == 1,
            caught_up: self.out.caught_up.load(Ordering::Relaxed),
            epoch: meta.epoch,
            following: if meta.role == Role::Standby { self.following() } else { None },
            instance: self.instance.clone(),
            lag_changes: self.out.primary_seq.load(Ordering::Relaxed).saturating_sub(self.last_seq()),
            last_seq: self.last_seq(),
            role: meta.role,
        }
    }

    /// Runs a read on the blocking pool.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, AppError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store)).await.map_err(AppError::internal)?.map_err(AppError::from)
    }

    /// Runs a write if, and only if, this replica is the primary of the newest epoch it
    /// knows. The role lock is held for the whole write, so a concurrent fence either
    /// happens before it (the write is refused) or after it (the write was acknowledged
    /// under the old epoch, before anyone was told of the new one).
    pub async fn write<R: Written + Send + 'static>(
        &self,
        request: internal::RequestLine<'_>,
        headers: &HeaderMap,
        f: impl FnOnce(&Store, u64) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, AppError> {
        // An epoch on a write is the gateway's news of a failover; anyone else who sends
        // one (a client holding a mere API token) could fence the primary with it.
        let forwarded = internal::verify(request, headers, &self.admin_token, unix_now()).map_err(|e| match e {
            ProofError::Unsigned => AppError::Denied { code: "epoch_not_authorized", message: e.to_string() },
            other => AppError::BadRequest(other.to_string()),
        })?;
        if let Some(epoch) = forwarded.epoch {
            self.learn_epoch(epoch).await?;
        }
        let store = self.store.clone();
        let meta = self.meta.clone();
        let out = self.out.clone();
        let (sync, lease) = (self.sync.subscribe(), self.lease.clone());
        let trace = hale_trace::traceparent();
        let result = tokio::task::spawn_blocking(move || {
            let guard = meta.lock().unwrap_or_else(|p| p.into_inner());
            match guard.role {
                // Its standby silent for a lease period: this primary may already have
                // been replaced, so it commits nothing (ARCHITECTURE.md, "Primary lease").
                Role::Primary if sync.borrow().member && !lease.held() => {
                    out.metrics.sync_timeouts.inc();
                    if lease.standby_silent() {
                        out.metrics.sync_blocked.set(1);
                    }
                    Err(AppError::Unavailable(format!(
                        "the primary has not heard from its sync standby for {} ms (its write lease lapsed): \
                         nothing was written; retry shortly",
                        LEASE.as_millis()
                    )))
                }
                Role::Primary => {
                    let written = f(&store, guard.epoch).map_err(AppError::from)?;
                    if let Some(seq) = written.written_seq() {
                        if let Some(trace) = trace {
                            out.note_trace(seq, trace);
                        }
                        out.advance(seq);
                        out.publish();
                    }
                    Ok(written)
                }
                Role::Standby => Err(AppError::Conflict {
                    code: "read_only_replica",
                    message: "this catalog replica is a standby; writes go to the primary".into(),
                }),
                Role::Fenced => Err(AppError::Conflict {
                    code: "fenced",
                    message: format!("this catalog replica was fenced: epoch {} has a newer primary", guard.epoch),
                }),
            }
        })
        .await
        .map_err(AppError::internal)??;
        Ok(result)
    }

    /// The lease stamp for a page to the standby, written now (a primary's only).
    pub fn lease_stamp(&self) -> Option<LeaseStamp> {
        (self.meta().role == Role::Primary).then(|| self.lease.stamp())
    }

    /// Waits until some change after `after` exists, or `wait` passes.
    pub async fn wait_for_seq_after(&self, after: u64, wait: Duration) {
        if wait.is_zero() || self.last_seq() > after {
            return;
        }
        let mut rx = self.out.seq.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|seq| *seq > after)).await;
    }

    /// The traces of `changes` still remembered, for the standby's page; those the
    /// standby already has (up to the first change of the page) are forgotten.
    pub fn traces_of(&self, changes: &[Change]) -> Vec<ChangeTrace> {
        let mut traced = self.out.traced.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(first), Some(last)) = (changes.first(), changes.last()) else { return Vec::new() };
        while traced.front().is_some_and(|t| t.seq < first.seq) {
            traced.pop_front();
        }
        traced.iter().take_while(|t| t.seq <= last.seq).cloned().collect()
    }

    /// Records that the standby has applied everything up to `seq` (never more than
    /// this replica has) and renews the lease with the stamp it echoed; a standby that
    /// has everything joins the sync set (with the lease held, so joining never refuses a
    /// write). Returns what the page it asked for tells it of the set.
    pub async fn standby_polled(&self, seq: u64, echo: Option<LeaseStamp>) -> Result<(bool, SyncStamp), AppError> {
        let seq = seq.min(self.last_seq());
        if let Some(echo) = echo {
            self.lease.renew(echo);
        }
        // Every poll wakes the writes waiting for confirmation: a renewal alone may be
        // what one of them waits for.
        self.standby_ack.send_modify(|cur| *cur = (*cur).max(seq));
        let (store, meta, out, sync) = (self.store.clone(), self.meta.clone(), self.out.clone(), self.sync.clone());
        let lease = self.lease.clone();
        tokio::task::spawn_blocking(move || {
            // Under the role lock, which every write holds: no write is committed between
            // "the standby has everything" and "it is in the set", so every write
            // acknowledged alone is on it.
            let guard = meta.lock().unwrap_or_else(|p| p.into_inner());
            let mut now = *sync.borrow();
            if guard.role == Role::Primary && !now.member && seq >= out.last_seq() && lease.held() {
                now.member = true;
                if now.stamp.epoch != guard.epoch {
                    now.stamp = SyncStamp { epoch: guard.epoch, generation: 0 };
                }
                store.set_sync(now)?;
                sync.send_replace(now);
                out.metrics.sync_member.set(1);
                tracing::info!(stamp = ?now.stamp, "the standby has every change: in the sync set");
            }
            Ok::<_, StoreError>((now.member && guard.role == Role::Primary, now.stamp))
        })
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::from)
    }

    /// Synchronous replication: a write is acknowledged once the standby of the sync set
    /// has it. With no standby in the set (none has caught up since this replica became
    /// primary, or the failover authority released it) the primary acknowledges alone —
    /// the authority promotes no standby that is not in the set, so nothing acknowledged
    /// can be lost to a failover. A standby that does not confirm within [`SYNC_TIMEOUT`]
    /// gets the write refused (503): a primary cut off from its standby and from the
    /// failover authority must not acknowledge what a failover on the other side of the
    /// cut would lose (found by tests/netns.rs). Nor does it acknowledge without its
    /// write lease ([`super::lease`]), which the same standby's polls renew.
    pub async fn wait_for_standby(&self, seq: u64) -> Result<(), AppError> {
        use tracing::Instrument;
        let span = hale_trace::child_span(|| {
            tracing::info_span!("wait for standby", otel.name = "catalog wait for standby", catalog.change.seq = seq)
        });
        self.confirmed(seq).instrument(span).await
    }

    async fn confirmed(&self, seq: u64) -> Result<(), AppError> {
        let mut sync = self.sync.subscribe();
        let mut acked = self.standby_ack.subscribe();
        let deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
        loop {
            if !sync.borrow_and_update().member {
                return Ok(());
            }
            if *acked.borrow_and_update() >= seq && self.lease.held() {
                self.out.metrics.sync_blocked.set(0);
                return Ok(());
            }
            tokio::select! {
                _ = sync.changed() => {}
                _ = acked.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    self.out.metrics.sync_timeouts.inc();
                    self.out.metrics.sync_blocked.set(1);
                    tracing::warn!(seq, "the sync standby did not confirm the write in time; refused");
                    return Err(AppError::Unavailable(format!(
                        "the standby did not confirm change {seq} within {} ms: it is stored on the primary and \
                         replicates when the standby is back, but it is not acknowledged; retry later",
                        SYNC_TIMEOUT.as_millis()
                    )));
                }
            }
        }
    }

    /// `POST /admin/release`: the failover authority takes the standby out of the sync
    /// set of `stamp` (compare and set), so writes are acknowledged alone again. The set
    /// moves to the next generation: the released standby, whose stamp is older, is not
    /// promoted until it has caught up and joined the new set.
    pub async fn release(&self, stamp: SyncStamp) -> Result<ReplicationStatus, AppError> {
        let (store, meta, out, sync) = (self.store.clone(), self.meta.clone(), self.out.clone(), self.sync.clone());
        tokio::task::spawn_blocking(move || {
            let guard = meta.lock().unwrap_or_else(|p| p.into_inner());
            let mut now = *sync.borrow();
            if guard.role != Role::Primary {
                return Err(AppError::Conflict {
                    code: "not_primary",
                    message: format!("this replica is {}; only a primary has a sync set", guard.role),
                });
            }
            if now.stamp != stamp {
                return Err(AppError::Conflict {
                    code: "stamp_moved",
                    message: format!(
                        "the sync set is at epoch {} generation {} now, not {} / {}; read /admin/replication again",
                        now.stamp.epoch, now.stamp.generation, stamp.epoch, stamp.generation
                    ),
                });
            }
            now.member = false;
            now.stamp.generation += 1;
            store.set_sync(now).map_err(AppError::from)?;
            sync.send_replace(now);
            out.metrics.sync_member.set(0);
            out.metrics.sync_blocked.set(0);
            tracing::warn!(stamp = ?now.stamp, "the standby was released from the sync set: writes are acknowledged alone");
            Ok(())
        })
        .await
        .map_err(AppError::internal)??;
        Ok(self.status())
    }

    /// A standby records what its primary's page said of the sync set.
    async fn note_sync(&self, in_sync: bool, stamp: SyncStamp) -> Result<(), StoreError> {
        let mut now = *self.sync.borrow();
        if (now.in_sync, now.in_stamp) == (in_sync, stamp) {
            return Ok(());
        }
        now.in_sync = in_sync;
        now.in_stamp = stamp;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.set_sync(now))
            .await
            .map_err(|e| StoreError::Corrupt(e.to_string()))??;
        self.sync.send_replace(now);
        Ok(())
    }

    /// Sets the sync state after a change of role (promotion: a new, empty set under the
    /// new epoch; rejoin: out of every set until the new primary says otherwise).
    fn reset_sync(
        store: &Store,
        sync: &watch::Sender<SyncMeta>,
        out: &Outputs,
        new: SyncMeta,
    ) -> Result<(), StoreError> {
        store.set_sync(new)?;
        sync.send_replace(new);
        out.metrics.sync_member.set(i64::from(new.member));
        out.metrics.sync_blocked.set(0);
        Ok(())
    }

    pub fn count_reservation<T>(&self, result: &Result<T, AppError>) {
        let outcome = match result {
            Ok(_) => "reserved",
            Err(AppError::Conflict { code: "out_of_stock", .. }) => "out_of_stock",
            Err(AppError::NotFound(_)) => "unknown_product",
            Err(_) => "error",
        };
        self.out.metrics.reservations.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    /// Changes role and epoch atomically with respect to writes: `decide` sees the current
    /// state under the role lock and returns the new one (or `None` for no change), which is
    /// stored before anyone can observe it.
    async fn transition(
        &self,
        decide: impl FnOnce(ReplicaMeta) -> Result<Option<ReplicaMeta>, AppError> + Send + 'static,
    ) -> Result<ReplicaMeta, AppError> {
        let store = self.store.clone();
        let meta = self.meta.clone();
        let out = self.out.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = meta.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(new) = decide(*guard)? {
                store.set_meta(new)?;
                *guard = new;
                out.meta_view.send_replace(new);
                out.publish();
            }
            Ok::<_, AppError>(*guard)
        })
        .await
        .map_err(AppError::internal)?
    }

    /// Learns that epoch `epoch` exists. A primary of an older epoch fences itself. An
    /// epoch more than [`MAX_EPOCH_STEP`] past this replica's is refused (409
    /// `epoch_jump`): only a rejoin whose new primary vouches for it moves further.
    pub async fn learn_epoch(&self, epoch: u64) -> Result<ReplicaMeta, AppError> {
        check_range(epoch)?;
        check_step(self.meta().epoch, epoch)?;
        self.raise_epoch(epoch).await
    }

    /// An admin's fence (`/admin/fence`): a replica behind `epoch` stops taking writes
    /// however far behind it is — fencing only takes authority away, and an old primary
    /// left writable because its epoch lagged would be a split brain — but its epoch moves
    /// by at most [`MAX_EPOCH_STEP`], so not even an admin's typo can use up the epochs
    /// a later failover needs. A rejoin brings it the rest of the way.
    pub async fn fence(&self, epoch: u64) -> Result<ReplicaMeta, AppError> {
        check_range(epoch)?;
        let current = self.meta().epoch;
        self.raise_epoch(epoch.min(current.saturating_add(MAX_EPOCH_STEP))).await
    }

    /// [`Self::learn_epoch`] without the step bound, for an epoch a primary confirmed.
    async fn raise_epoch(&self, epoch: u64) -> Result<ReplicaMeta, AppError> {
        check_range(epoch)?;
        if epoch <= self.meta().epoch {
            return Ok(self.meta());
        }
        let meta = self
            .transition(move |current| {
                Ok((epoch > current.epoch).then(|| ReplicaMeta {
                    role: if current.role == Role::Primary { Role::Fenced } else { current.role },
                    epoch,
                }))
            })
            .await?;
        if meta.role == Role::Fenced {
            tracing::warn!(epoch, "a newer epoch exists: this replica is fenced and refuses writes");
        }
        Ok(meta)
    }

    /// Makes this replica the primary under a new epoch (at least `requested`).
    ///
    /// A standby makes sure the primary it follows takes no more writes first: either
    /// that primary's write lease has run out (it is silent for longer than
    /// [`super::lease::LEASE_WAIT`] — the usual case, a failover comes after the alert),
    /// or it is fenced in time, and then what it still had is drained; otherwise the
    /// promotion waits the lease out. It never waits on a primary it cannot reach.
    pub async fn promote(&self, requested: Option<u64>) -> Result<ReplicaMeta, AppError> {
        let current = self.meta();
        if current.role == Role::Primary && requested.is_none_or(|r| r <= current.epoch) {
            return Ok(current);
        }
        if requested.is_some_and(|r| r > MAX_EPOCH) {
            return Err(AppError::BadRequest(format!("epoch is out of range (at most {MAX_EPOCH})")));
        }
        if let Some(requested) = requested {
            check_step(current.epoch, requested)?;
        }
        let epoch = (current.epoch + 1).max(requested.unwrap_or(0));
        if epoch > MAX_EPOCH {
            return Err(AppError::Conflict {
                code: "epoch_exhausted",
                message: "no epoch is left to promote under".into(),
            });
        }
        let _promoting = Promoting::start(&self.standby_lease);
        if current.role == Role::Standby
            && let Some(old) = self.following()
        {
            self.outlast_old_primary(&old, epoch, _promoting.lease_ends).await;
        }
        // Compare and set: a newer epoch learned during the drain wins over this promotion.
        let new = self
            .transition(move |now| {
                if now.epoch > epoch {
                    return Err(AppError::Conflict {
                        code: "superseded",
                        message: format!("epoch {} appeared while promoting to {epoch}", now.epoch),
                    });
                }
                Ok(Some(ReplicaMeta { role: Role::Primary, epoch }))
            })
            .await?;
        // A new primary starts a new, empty sync set: its old primary, cut off or fenced,
        // joins once it has rejoined and caught up.
        let fresh = SyncMeta { stamp: SyncStamp { epoch: new.epoch, generation: 0 }, ..SyncMeta::default() };
        let (store, sync, out) = (self.store.clone(), self.sync.clone(), self.out.clone());
        tokio::task::spawn_blocking(move || Self::reset_sync(&store, &sync, &out, fresh))
            .await
            .map_err(AppError::internal)??;
        tracing::warn!(epoch, last_seq = self.last_seq(), "promoted to primary");
        Ok(new)
    }

    /// Returns once the old primary takes no more writes: its lease has run out by
    /// `lease_ends`, or it was fenced (and drained) before then.
    async fn outlast_old_primary(&self, old: &str, epoch: u64, lease_ends: Instant) {
        let now = Instant::now();
        if lease_ends <= now {
            tracing::info!(
                silent_ms = (now - lease_ends + super::lease::LEASE_WAIT).as_millis() as u64,
                "the old primary's write lease has run out: promoting without reaching it"
            );
            return;
        }
        let fence = tokio::time::timeout_at(lease_ends.into(), self.fence_old(old, epoch));
        if let Ok(true) = fence.await {
            self.drain(old).await;
            return;
        }
        tokio::time::sleep_until(lease_ends.into()).await;
        tracing::info!("waited out the old primary's write lease; promoting");
    }

    /// Tells the old primary of `epoch`; whether it is fenced now.
    async fn fence_old(&self, old: &str, epoch: u64) -> bool {
        let fenced = self
            .client
            .post(format!("{old}/admin/fence"))
            .bearer_auth(&self.admin_token)
            .json(&EpochRequest { epoch: Some(epoch) })
            .send()
            .await;
        match fenced {
            Ok(r) if r.status().is_success() => {
                tracing::info!(epoch, "old primary fenced");
                true
            }
            Ok(r) => {
                tracing::warn!(status = r.status().as_u16(), "old primary refused to be fenced; waiting out its lease");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "old primary unreachable; waiting out its lease");
                false
            }
        }
    }

    /// What the fenced old primary had that this standby has not: written before the
    /// fence, never acknowledged (the standby had not confirmed it), kept rather than set
    /// aside at its rejoin.
    async fn drain(&self, old: &str) {
        // Fenced, it takes no more writes: whatever it has now is final. Bounded rounds so
        // a misbehaving peer cannot hold the promotion forever.
        for _ in 0..20 {
            let before = self.last_seq();
            let url = format!("{old}/admin/replication/changes?after={before}&limit=1000&wait_ms=0");
            match self.poll(&url).await {
                Ok(()) if self.last_seq() == before => return,
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "draining the old primary failed; promoting with what was replicated");
                    return;
                }
            }
        }
    }

    /// The standby's loop: follow the primary's change log while this replica is a
    /// standby, and wait while it is not (a rejoin makes it one again). Returns when
    /// `shutdown` fires.
    pub async fn follow(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut roles = self.out.meta_view.subscribe();
        let mut backoff = Duration::from_millis(100);
        let mut failing_since: Option<Instant> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let (Role::Standby, Some(primary)) = (self.meta().role, self.following()) else {
                tokio::select! {
                    r = roles.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => return,
                }
                continue;
            };
            let mut url = format!(
                "{primary}/admin/replication/changes?after={}&limit=500&wait_ms={}",
                self.last_seq(),
                IDLE_POLL.as_millis()
            );
            if let Some(echo) = self.standby_lease.echo() {
                url.push_str(&format!("&lease_boot={}&lease_at_ms={}", echo.boot, echo.at_ms));
            }
            let result = tokio::select! {
                r = self.poll(&url) => r,
                _ = shutdown.changed() => return,
            };
            match result {
                Ok(()) => {
                    if failing_since.take().is_some() {
                        tracing::info!(primary, "replication resumed");
                    }
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    if failing_since.is_none() {
                        tracing::warn!(primary, error = %e, "replication from the primary failed; retrying");
                        failing_since = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Makes this replica (a fenced old primary, or a standby to re-point) a standby of
    /// `primary` under `epoch`: the change log both share is kept, what only this replica
    /// had (writes the new primary never received) is set aside in `diverged_changes`,
    /// and it catches up from there, not ready until it has.
    pub async fn rejoin(&self, primary: &str, epoch: u64) -> Result<Rejoined, AppError> {
        let primary = primary.trim_end_matches('/').to_string();
        if !(primary.starts_with("http://") || primary.starts_with("https://")) {
            return Err(AppError::BadRequest("primary must be the new primary's http(s):// URL".into()));
        }
        // A stale primary learns the new epoch first, which fences it. Further than a step
        // ahead, the primary named must itself be the primary of at least that epoch: a
        // replica away through many failovers can rejoin, a made-up epoch cannot land.
        let meta = if check_step(self.meta().epoch, epoch).is_ok() {
            self.learn_epoch(epoch).await?
        } else {
            self.confirm_epoch(&primary, epoch).await?;
            self.raise_epoch(epoch).await?
        };
        if meta.role == Role::Primary {
            return Err(AppError::Conflict {
                code: "is_primary",
                message: format!("this replica is the primary of epoch {}; it cannot rejoin under it", meta.epoch),
            });
        }
        let keep = self.shared_prefix(&primary).await.map_err(AppError::Unavailable)?;
        let new_meta = ReplicaMeta { role: Role::Standby, epoch: meta.epoch.max(epoch) };
        let (store, lock, out, follow) = (self.store.clone(), self.meta.clone(), self.out.clone(), self.follow.clone());
        let sync = self.sync.clone();
        let target = primary.clone();
        let set_aside = tokio::task::spawn_blocking(move || {
            let mut guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            if guard.role == Role::Primary {
                return Err(AppError::Conflict { code: "is_primary", message: "promoted while rejoining".into() });
            }
            let n = store.rejoin(keep, new_meta, &target)?;
            *guard = new_meta;
            *follow.lock().unwrap_or_else(|p| p.into_inner()) = Some(target);
            // Out of every sync set until the new primary counts it in.
            Self::reset_sync(&store, &sync, &out, SyncMeta::default())?;
            out.caught_up.store(false, Ordering::Relaxed);
            out.seq.send_replace(store.last_seq()?);
            out.meta_view.send_replace(new_meta);
            out.publish();
            Ok::<_, AppError>(n)
        })
        .await
        .map_err(AppError::internal)??;
        if set_aside > 0 {
            tracing::warn!(
                set_aside,
                kept_through = keep,
                "rejoined: changes the new primary never received were set aside in diverged_changes"
            );
        }
        tracing::info!(primary, epoch = new_meta.epoch, kept_through = keep, "rejoined as a standby; catching up");
        Ok(Rejoined {
            epoch: new_meta.epoch,
            following: primary,
            kept_through_seq: keep,
            role: new_meta.role,
            set_aside,
        })
    }

    /// Checks that `primary` is the primary of at least `epoch` (its `/admin/replication`).
    async fn confirm_epoch(&self, primary: &str, epoch: u64) -> Result<(), AppError> {
        let status: ReplicationStatus = async {
            let r = self.client.get(format!("{primary}/admin/replication")).send().await?;
            r.error_for_status()?.json().await
        }
        .await
        .map_err(|e| {
            tracing::warn!(primary, error = %e, "could not confirm the epoch of a rejoin");
            AppError::Unavailable("could not ask the primary to confirm the epoch; retry shortly".into())
        })?;
        if status.role != Role::Primary || status.epoch < epoch {
            return Err(AppError::Conflict {
                code: "epoch_jump",
                message: format!(
                    "epoch {epoch} is more than {MAX_EPOCH_STEP} past this replica's, and the primary named is not \
                     the primary of that epoch (it reports {} under epoch {})",
                    status.role, status.epoch
                ),
            });
        }
        Ok(())
    }

    /// The last sequence number up to which this replica's log and `primary`'s are the
    /// same: a change is identified by its sequence and the epoch it was written under
    /// (one primary per epoch), and the logs agree up to a point, then differ — so a
    /// binary search over the public change feed finds it in a few requests.
    async fn shared_prefix(&self, primary: &str) -> Result<u64, String> {
        let last = self.last_seq();
        let same = async |seq: u64| -> Result<bool, String> {
            if seq == 0 {
                return Ok(true);
            }
            let url = format!("{primary}/api/products/changes?after={}&limit=1&wait_ms=0", seq - 1);
            let response = self.client.get(&url).send().await.map_err(|e| format!("asking {primary}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{primary} answered {} for its change log", response.status()));
            }
            let page: ChangesPage = response.json().await.map_err(|e| e.to_string())?;
            let theirs = page.changes.first().filter(|c| c.seq == seq).map(|c| c.epoch);
            let store = self.store.clone();
            let ours = tokio::task::spawn_blocking(move || store.epoch_of(seq))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Ok(theirs.is_some() && theirs == ours)
        };
        if same(last).await? {
            return Ok(last);
        }
        let (mut agree, mut differ) = (0, last);
        while differ - agree > 1 {
            let mid = agree + (differ - agree) / 2;
            if same(mid).await? {
                agree = mid;
            } else {
                differ = mid;
            }
        }
        Ok(agree)
    }

    async fn poll(&self, url: &str) -> Result<(), String> {
        let response = self.client.get(url).bearer_auth(&self.admin_token).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("primary answered {}", response.status()));
        }
        let page: ChangesPage = response.json().await.map_err(|e| e.to_string())?;
        self.standby_lease.received(page.lease);
        self.out.primary_seq.store(page.last_seq, Ordering::Relaxed);
        if let (Some(in_sync), Some(stamp)) = (page.in_sync, page.sync_stamp) {
            self.note_sync(in_sync, stamp).await.map_err(|e| e.to_string())?;
        }
        // Bounded like every epoch: a primary poisoned with a runaway epoch must not pass
        // it on, or the standby is left with no epoch to be promoted under.
        if page.epoch > self.meta().epoch {
            self.learn_epoch(page.epoch).await.map_err(|e| e.to_string())?;
        }
        if !page.changes.is_empty() {
            let (store, meta, out) = (self.store.clone(), self.meta.clone(), self.out.clone());
            let changes = page.changes;
            // Applying a traced change is a span of the write's trace: the confirmation
            // its primary waits for. The spans end when the page is applied.
            let _spans: Vec<tracing::Span> = page.traces.iter().map(apply_span).collect();
            tokio::task::spawn_blocking(move || {
                // Hold the role lock: a promotion never interleaves with an apply.
                let guard = meta.lock().unwrap_or_else(|p| p.into_inner());
                if guard.role != Role::Standby {
                    return Ok(());
                }
                out.advance(store.apply(&changes)?);
                Ok::<_, StoreError>(())
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        }
        if self.last_seq() >= page.last_seq && !self.out.caught_up.swap(true, Ordering::Relaxed) {
            tracing::info!(seq = page.last_seq, "caught up with the primary");
        }
        self.publish();
        Ok(())
    }
}

/// The span of a standby applying the change `trace` names: a consumer of the write's
/// trace, its parent the write on the primary.
fn apply_span(trace: &ChangeTrace) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "replicate",
        otel.name = "catalog apply change",
        otel.kind = "consumer",
        db.system.name = "sqlite",
        db.operation.name = "apply",
        catalog.change.seq = trace.seq,
    );
    hale_trace::continue_trace(&span, &trace.traceparent);
    span
}

/// A promotion in progress: the standby echoes no lease stamp (so nothing extends the
/// lease it waits out) until this is dropped, however the promotion ends.
struct Promoting<'a> {
    lease: &'a StandbyLease,
    lease_ends: Instant,
}

impl<'a> Promoting<'a> {
    fn start(lease: &'a StandbyLease) -> Self {
        Promoting { lease, lease_ends: lease.begin_promotion() }
    }
}

impl Drop for Promoting<'_> {
    fn drop(&mut self) {
        self.lease.end_promotion();
    }
}

fn check_range(epoch: u64) -> Result<(), AppError> {
    if epoch > MAX_EPOCH {
        return Err(AppError::BadRequest(format!("epoch {epoch} is out of range (at most {MAX_EPOCH})")));
    }
    Ok(())
}

/// `Ok` when moving from epoch `current` to `next` is at most [`MAX_EPOCH_STEP`].
fn check_step(current: u64, next: u64) -> Result<(), AppError> {
    if next > current.saturating_add(MAX_EPOCH_STEP) {
        return Err(AppError::Conflict {
            code: "epoch_jump",
            message: format!(
                "epoch {next} is more than {MAX_EPOCH_STEP} past this replica's epoch {current}; a failover moves \
                 it by one"
            ),
        });
    }
    Ok(())
}

/// A write's result that knows the change sequence it appended, if any (an idempotent
/// replay appends none).
pub trait Written {
    fn written_seq(&self) -> Option<u64>;
}

impl Written for (super::store::Product, u64) {
    fn written_seq(&self) -> Option<u64> {
        Some(self.1)
    }
}

impl Written for (Reservation, Option<u64>) {
    fn written_seq(&self) -> Option<u64> {
        self.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fence whose caller hangs up (the promoting standby's 1 s timeout, a frozen
    /// primary answering late) must still show: not ready, counted as fenced.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fence_whose_caller_gave_up_is_still_published() {
        let dir = tempfile::tempdir().expect("tmp");
        let readiness = Readiness::ready(serde_json::json!({}));
        let mut registry = Registry::default();
        let state = CatalogState::open(
            &dir.path().join("db"),
            "catalog-1",
            Role::Primary,
            None,
            "t",
            readiness.clone(),
            &mut registry,
        )
        .expect("open");
        assert!(readiness.get().is_ok());
        // One poll, then the future is dropped: the blocking part runs on regardless.
        use futures::FutureExt;
        assert!(state.learn_epoch(2).now_or_never().is_none(), "the fence waits for the blocking pool");
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.meta().role != Role::Fenced {
            assert!(Instant::now() < deadline, "the fence never landed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let reason = readiness.get().expect_err("a fenced replica is not ready");
        assert!(reason.contains("fenced"), "{reason}");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("shop_catalog_fenced 1"), "{text}");
    }
}
