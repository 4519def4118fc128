//! Upstream pools of the gateway: who serves each service, who is ready, who is the
//! catalog's primary, and which replica takes the next request.
//!
//! Balancing is power-of-two-choices on outstanding requests. Readiness comes from active
//! `/readyz` checks; a replica that fails a request (connect error, 5xx) is also ejected
//! passively for [`EJECTION`] (5 s), unless that would leave the service with nobody.
//!
//! A definite "not ready" (an answer, or a refused connection) counts at once; a check
//! that times out counts only from the second in a row, so one slow answer from a busy
//! replica does not take it out of the pool.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hale_core::ServiceKind;
use hale_core::api::{MemberSpec, PoolMember, PoolView, Pools as PoolsView};
use rand::Rng;

/// Readiness checks that must time out in a row before a replica counts as not ready.
pub const TIMEOUTS_TO_UNREADY: u32 = 2;

/// The outcome of one readiness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Ready,
    /// It answered, or refused the connection: a definite no.
    NotReady,
    TimedOut,
}

/// How long a replica that failed a request is skipped.
pub const EJECTION: Duration = Duration::from_secs(5);

pub struct Member {
    pub instance: String,
    pub url: String,
    ready: AtomicBool,
    /// Readiness checks that timed out in a row.
    timeouts: std::sync::atomic::AtomicU32,
    outstanding: AtomicUsize,
    ejected_until: Mutex<Option<Instant>>,
    /// Catalog only: the role and epoch the replica last reported on `/readyz`.
    reported_primary_epoch: AtomicU64,
}

impl Member {
    pub fn new(instance: &str, url: &str) -> Arc<Self> {
        Arc::new(Member {
            instance: instance.to_string(),
            url: url.trim_end_matches('/').to_string(),
            // Optimistic until the first check: a fresh gateway can serve at once.
            ready: AtomicBool::new(true),
            timeouts: std::sync::atomic::AtomicU32::new(0),
            outstanding: AtomicUsize::new(0),
            ejected_until: Mutex::new(None),
            reported_primary_epoch: AtomicU64::new(0),
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Takes one readiness check's result. A definite answer (ready, not ready, nothing
    /// listening) counts at once; a timeout only from the second in a row, so a briefly
    /// overloaded replica is not dropped from its pool for one slow answer.
    pub fn record_check(&self, check: Check) {
        match check {
            Check::Ready => {
                self.timeouts.store(0, Ordering::Relaxed);
                self.set_ready(true);
            }
            Check::NotReady => self.set_ready(false),
            Check::TimedOut => {
                if self.timeouts.fetch_add(1, Ordering::Relaxed) + 1 >= TIMEOUTS_TO_UNREADY {
                    self.set_ready(false);
                }
            }
        }
    }

    /// Readiness checks that timed out in a row.
    pub fn timeouts(&self) -> u32 {
        self.timeouts.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn set_reported_primary_epoch(&self, epoch: u64) {
        self.reported_primary_epoch.store(epoch, Ordering::Relaxed);
    }

    pub fn reported_primary_epoch(&self) -> u64 {
        self.reported_primary_epoch.load(Ordering::Relaxed)
    }

    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|until| until > now)
    }

    pub fn eject(&self) {
        *self.ejected_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + EJECTION);
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

pub struct InFlight(Arc<Member>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default, Clone)]
pub struct Pool {
    pub members: Vec<Arc<Member>>,
    /// The member that takes writes (catalog), by instance name.
    pub primary: Option<String>,
    /// Epoch of that primary; sent with every write so a stale primary fences itself.
    pub epoch: u64,
}

#[derive(Default)]
pub struct Pools {
    inner: RwLock<BTreeMap<ServiceKind, Pool>>,
}

impl Pools {
    pub fn new(pools: BTreeMap<ServiceKind, Pool>) -> Self {
        Pools { inner: RwLock::new(pools) }
    }

    pub fn get(&self, service: ServiceKind) -> Option<Pool> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).get(&service).cloned()
    }

    pub fn all_members(&self) -> Vec<(ServiceKind, Arc<Member>)> {
        let pools = self.inner.read().unwrap_or_else(|p| p.into_inner());
        pools.iter().flat_map(|(s, p)| p.members.iter().map(|m| (*s, m.clone()))).collect()
    }

    /// Replaces a service's members and/or primary. Members that stay keep their state.
    pub fn update(
        &self,
        service: ServiceKind,
        members: Option<Vec<MemberSpec>>,
        primary: Option<String>,
        epoch: Option<u64>,
    ) -> Result<(), String> {
        let mut pools = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let pool = pools.entry(service).or_default();
        let mut next = pool.clone();
        if let Some(specs) = members {
            let mut seen = std::collections::HashSet::new();
            next.members = specs
                .iter()
                .map(|spec| {
                    if !seen.insert(spec.instance.clone()) {
                        return Err(format!("instance {:?} is listed twice", spec.instance));
                    }
                    if !spec.url.starts_with("http://") && !spec.url.starts_with("https://") {
                        return Err(format!("url {:?} must start with http:// or https://", spec.url));
                    }
                    Ok(pool
                        .members
                        .iter()
                        .find(|m| m.instance == spec.instance && m.url == spec.url.trim_end_matches('/'))
                        .cloned()
                        .unwrap_or_else(|| Member::new(&spec.instance, &spec.url)))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(primary) = primary {
            next.primary = Some(primary);
        }
        if let Some(epoch) = epoch {
            next.epoch = epoch;
        }
        if let Some(primary) = &next.primary
            && !next.members.iter().any(|m| &m.instance == primary)
        {
            return Err(format!("primary {primary:?} is not a member of the {service} pool"));
        }
        *pool = next;
        Ok(())
    }

    /// Adopts `instance` as primary if it reports a newer epoch than the pool knows.
    /// Returns true when the primary changed.
    pub fn adopt_primary(&self, service: ServiceKind, instance: &str, epoch: u64) -> bool {
        let mut pools = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let Some(pool) = pools.get_mut(&service) else { return false };
        if epoch > pool.epoch || (epoch == pool.epoch && pool.primary.is_none()) {
            let changed = pool.primary.as_deref() != Some(instance);
            pool.primary = Some(instance.to_string());
            pool.epoch = epoch;
            return changed;
        }
        false
    }

    /// The pools as `GET /admin/pool` shows them.
    pub fn snapshot(&self) -> PoolsView {
        let now = Instant::now();
        let pools = self.inner.read().unwrap_or_else(|p| p.into_inner());
        pools
            .iter()
            .map(|(service, pool)| {
                let members = pool
                    .members
                    .iter()
                    .map(|m| PoolMember {
                        instance: m.instance.clone(),
                        url: m.url.clone(),
                        ready: m.is_ready(),
                        ejected: m.is_ejected(now),
                        outstanding: m.outstanding(),
                    })
                    .collect();
                let is_catalog = *service == ServiceKind::Catalog;
                (*service, PoolView { members, primary: pool.primary.clone(), epoch: is_catalog.then_some(pool.epoch) })
            })
            .collect()
    }
}

impl Pool {
    /// Picks a replica by power of two choices on outstanding requests, among ready and
    /// not-ejected members; failing that, among ready ones (better a suspect replica
    /// than none). `exclude` skips a replica that already failed this request.
    pub fn pick(&self, exclude: Option<&str>) -> Option<Arc<Member>> {
        let now = Instant::now();
        let allowed = |m: &&Arc<Member>| Some(m.instance.as_str()) != exclude && m.is_ready();
        let mut candidates: Vec<&Arc<Member>> =
            self.members.iter().filter(allowed).filter(|m| !m.is_ejected(now)).collect();
        if candidates.is_empty() {
            candidates = self.members.iter().filter(allowed).collect();
        }
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0].clone()),
            n => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let mut b = rng.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let (ma, mb) = (candidates[a], candidates[b]);
                Some(if mb.outstanding() < ma.outstanding() { mb.clone() } else { ma.clone() })
            }
        }
    }

    pub fn primary(&self) -> Option<Arc<Member>> {
        let primary = self.primary.as_deref()?;
        self.members.iter().find(|m| m.instance == primary).cloned()
    }

    pub fn ready_count(&self) -> usize {
        self.members.iter().filter(|m| m.is_ready()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Pool {
        Pool {
            members: (1..=n).map(|i| Member::new(&format!("s-{i}"), &format!("http://127.0.0.1:{i}"))).collect(),
            primary: None,
            epoch: 0,
        }
    }

    #[test]
    fn picks_skip_unready_excluded_and_ejected() {
        let p = pool(3);
        p.members[0].set_ready(false);
        p.members[1].eject();
        for _ in 0..20 {
            assert_eq!(p.pick(None).expect("one left").instance, "s-3");
        }
        assert_eq!(p.pick(Some("s-3")).expect("falls back to ejected").instance, "s-2");
        p.members[1].set_ready(false);
        assert!(p.pick(Some("s-3")).is_none());
    }

    #[test]
    fn one_slow_check_does_not_unready_but_a_refusal_does() {
        let m = Member::new("s-1", "http://127.0.0.1:1");
        m.record_check(Check::TimedOut);
        assert!(m.is_ready());
        m.record_check(Check::TimedOut);
        assert!(!m.is_ready());
        m.record_check(Check::Ready);
        assert!(m.is_ready());
        m.record_check(Check::TimedOut);
        m.record_check(Check::Ready);
        m.record_check(Check::TimedOut);
        assert!(m.is_ready(), "timeouts must be consecutive");
        m.record_check(Check::NotReady);
        assert!(!m.is_ready());
    }

    #[test]
    fn prefers_the_less_loaded_of_two() {
        let p = pool(2);
        let _busy: Vec<InFlight> = (0..5).map(|_| p.members[0].start()).collect();
        for _ in 0..20 {
            assert_eq!(p.pick(None).expect("pick").instance, "s-2");
        }
        drop(_busy);
        assert_eq!(p.members[0].outstanding(), 0);
    }

    #[test]
    fn update_validates_and_keeps_state_of_kept_members() {
        let pools = Pools::new(BTreeMap::from([(ServiceKind::Catalog, pool(2))]));
        let before = pools.get(ServiceKind::Catalog).expect("pool").members[0].clone();
        before.set_ready(false);
        let specs = vec![MemberSpec { instance: "s-1".into(), url: "http://127.0.0.1:1".into() }];
        pools.update(ServiceKind::Catalog, Some(specs.clone()), Some("s-1".into()), Some(2)).expect("update");
        let after = pools.get(ServiceKind::Catalog).expect("pool");
        assert!(!after.members[0].is_ready(), "state kept");
        assert_eq!((after.primary.as_deref(), after.epoch), (Some("s-1"), 2));
        assert!(pools.update(ServiceKind::Catalog, None, Some("nobody".into()), None).is_err());
        let twice = vec![specs[0].clone(), specs[0].clone()];
        assert!(pools.update(ServiceKind::Catalog, Some(twice), None, None).is_err());
    }

    #[test]
    fn adopts_only_newer_primaries() {
        let pools = Pools::new(BTreeMap::from([(
            ServiceKind::Catalog,
            Pool { primary: Some("s-1".into()), epoch: 1, ..pool(2) },
        )]));
        assert!(!pools.adopt_primary(ServiceKind::Catalog, "s-2", 1));
        assert!(pools.adopt_primary(ServiceKind::Catalog, "s-2", 2));
        assert_eq!(pools.get(ServiceKind::Catalog).expect("pool").primary.as_deref(), Some("s-2"));
    }

    #[test]
    fn the_admin_view_is_the_json_it_always_was_and_what_clients_read() {
        let mut catalog = pool(2);
        catalog.primary = Some("s-2".into());
        catalog.epoch = 3;
        catalog.members[0].set_ready(false);
        let pools = Pools::new(BTreeMap::from([(ServiceKind::Catalog, catalog), (ServiceKind::Search, pool(1))]));
        let served = serde_json::to_string(&pools.snapshot()).expect("json");
        let member = |i: usize, ready: bool| {
            format!(
                r#"{{"instance":"s-{i}","url":"http://127.0.0.1:{i}","ready":{ready},"ejected":false,"outstanding":0}}"#
            )
        };
        let expected = format!(
            r#"{{"catalog":{{"members":[{},{}],"primary":"s-2","epoch":3}},"search":{{"members":[{}]}}}}"#,
            member(1, false),
            member(2, true),
            member(1, true)
        );
        assert_eq!(served, expected);
        let read: hale_core::api::Pools = serde_json::from_str(&served).expect("the client's type");
        let catalog = &read[&ServiceKind::Catalog];
        assert_eq!((catalog.primary_member().map(|m| m.ready), catalog.epoch), (Some(true), Some(3)));
        assert_eq!(read[&ServiceKind::Search].epoch, None, "only the catalog has an epoch");
    }
}
