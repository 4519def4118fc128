//! The catalog primary's write lease: a primary whose standby is in its sync set takes
//! writes only while it has heard from that standby within [`LEASE`], and the standby,
//! when promoted, knows from its own clock when that lease has surely run out — so it can
//! take over without reaching the old primary (a frozen or cut-off primary cannot be
//! fenced, and waiting for a fence that never answers was most of a failover's time).
//!
//! What the lease adds to the sync set. The set already keeps every acknowledged write:
//! the primary acknowledges only what the standby confirmed, and only a standby in the set
//! is promoted. The lease bounds what the old primary *does* after losing its standby:
//! once it lapses it commits nothing more (a write is refused at once, not stored and
//! refused a second later), so at the promotion its log is final without a fence, and a
//! primary cut off from its standby answers 503 straight away.
//!
//! Renewal. Each page the primary sends the standby carries a stamp: this process's id
//! and the time on its monotonic clock. The standby's next poll echoes the stamp of the
//! last page it received, and the primary extends its lease to that stamp plus [`LEASE`] —
//! never from a poll's arrival, so polls queued while the primary was frozen cannot renew
//! it after the standby was promoted. The standby counts from when it received that page
//! (later than the stamp) and waits [`LEASE_WAIT`]: the lease and a margin for clock-rate
//! drift and for a write checked just before the lease ended and answered just after.
//! While it is promoting it echoes nothing, so nothing extends the lease it is waiting
//! out. A standby that has heard nothing since it started counts from its start: a lease
//! its previous run granted ended by then.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long one renewal lets the primary take writes.
pub const LEASE: Duration = Duration::from_millis(1000);
/// How long after the last page it received a promoting standby takes the old primary's
/// lease for expired: [`LEASE`] and a fifth more.
pub const LEASE_WAIT: Duration = Duration::from_millis(1200);
/// The standby's long-poll while there is nothing to replicate: short enough that an idle
/// pair renews the lease several times per period.
pub const IDLE_POLL: Duration = Duration::from_millis(250);

/// Which page of which primary process: what the standby echoes to renew the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStamp {
    /// The primary process's random id: a stamp from an earlier run renews nothing.
    pub boot: u64,
    /// Milliseconds on that process's monotonic clock when it wrote the page.
    pub at_ms: u64,
}

/// The primary's side.
pub struct PrimaryLease {
    boot: u64,
    started: Instant,
    /// The lease runs until this many ms after `started` (0: never granted).
    until_ms: AtomicU64,
}

impl Default for PrimaryLease {
    fn default() -> Self {
        PrimaryLease { boot: rand::random(), started: Instant::now(), until_ms: AtomicU64::new(0) }
    }
}

impl PrimaryLease {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The stamp for a page written now.
    pub fn stamp(&self) -> LeaseStamp {
        LeaseStamp { boot: self.boot, at_ms: self.now_ms() }
    }

    /// The standby echoed `stamp`: the lease runs to the stamp's time plus [`LEASE`].
    /// A stamp of another process, or from the future, renews nothing.
    pub fn renew(&self, stamp: LeaseStamp) -> bool {
        self.renew_at(stamp, self.now_ms())
    }

    fn renew_at(&self, stamp: LeaseStamp, now_ms: u64) -> bool {
        if stamp.boot != self.boot || stamp.at_ms > now_ms {
            return false;
        }
        self.until_ms.fetch_max(stamp.at_ms + LEASE.as_millis() as u64, Ordering::AcqRel);
        true
    }

    /// Whether the primary may take and acknowledge writes that its sync standby must
    /// confirm.
    pub fn held(&self) -> bool {
        self.held_at(self.now_ms())
    }

    fn held_at(&self, now_ms: u64) -> bool {
        now_ms < self.until_ms.load(Ordering::Acquire)
    }

    /// Lapsed for a whole lease period after this process started, so not a primary just
    /// restarted that has not heard its standby's next poll yet: the standby is gone, as
    /// far as the primary can tell (what `shop_catalog_sync_blocked` reports).
    pub fn standby_silent(&self) -> bool {
        let now = self.now_ms();
        !self.held_at(now) && now >= LEASE.as_millis() as u64
    }
}

/// The standby's side: when it last heard from its primary, and what to echo.
pub struct StandbyLease {
    started: Instant,
    inner: Mutex<Heard>,
}

#[derive(Default)]
struct Heard {
    /// When the last stamped page arrived.
    at: Option<Instant>,
    echo: Option<LeaseStamp>,
    promoting: bool,
}

impl Default for StandbyLease {
    fn default() -> Self {
        StandbyLease { started: Instant::now(), inner: Mutex::default() }
    }
}

impl StandbyLease {
    fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A page arrived now from the primary with `stamp`.
    pub fn received(&self, stamp: Option<LeaseStamp>) {
        if let Some(stamp) = stamp {
            let mut heard = self.heard();
            heard.at = Some(Instant::now());
            heard.echo = Some(stamp);
        }
    }

    /// The stamp the next poll echoes: none while promoting.
    pub fn echo(&self) -> Option<LeaseStamp> {
        let heard = self.heard();
        if heard.promoting { None } else { heard.echo }
    }

    /// Stops renewing the primary's lease; returns when it has surely run out.
    pub fn begin_promotion(&self) -> Instant {
        let mut heard = self.heard();
        heard.promoting = true;
        heard.at.unwrap_or(self.started) + LEASE_WAIT
    }

    /// The promotion is over (done or refused): a standby still renews its primary.
    pub fn end_promotion(&self) {
        self.heard().promoting = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_echo_of_a_page_this_process_sent_renews_the_lease() {
        let lease = PrimaryLease::default();
        assert!(!lease.held_at(0), "granted by no standby yet");
        let page = LeaseStamp { boot: lease.boot, at_ms: 5_000 };
        assert!(lease.renew_at(page, 5_100));
        assert!(lease.held_at(5_999) && !lease.held_at(6_000), "the stamp's time plus the lease");
        // A poll that waited in a queue while the primary was frozen echoes an old page:
        // it cannot move the lease past that page's time.
        assert!(lease.renew_at(LeaseStamp { boot: lease.boot, at_ms: 4_000 }, 9_000));
        assert!(!lease.held_at(6_000));
        assert!(!lease.renew_at(LeaseStamp { boot: lease.boot ^ 1, at_ms: 8_900 }, 9_000), "another run's page");
        assert!(!lease.renew_at(LeaseStamp { boot: lease.boot, at_ms: 9_500 }, 9_000), "a page not yet written");
        assert!(!lease.held_at(9_000));
    }

    #[test]
    fn a_promoting_standby_stops_renewing_and_waits_from_the_last_page_it_received() {
        let standby = StandbyLease::default();
        let from_start = standby.begin_promotion();
        assert_eq!(from_start, standby.started + LEASE_WAIT, "heard nothing since it started");
        standby.end_promotion();
        let stamp = LeaseStamp { boot: 7, at_ms: 1 };
        standby.received(Some(stamp));
        assert_eq!(standby.echo(), Some(stamp));
        let before = Instant::now();
        let deadline = standby.begin_promotion();
        assert!(deadline >= before + LEASE_WAIT - Duration::from_millis(50) && deadline > from_start);
        assert_eq!(standby.echo(), None, "nothing extends the lease being waited out");
        standby.end_promotion();
        assert_eq!(standby.echo(), Some(stamp));
        assert!(LEASE_WAIT > LEASE && IDLE_POLL * 3 < LEASE);
    }
}
