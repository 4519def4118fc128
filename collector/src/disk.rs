//! Free space under the data dir. Ingest is refused — 507 Insufficient Storage, with
//! `Retry-After` — while less than a reserve is free, before a request's body is read: the
//! WAL, checkpoints and segment writes never run the disk dry, nothing already stored is
//! put at risk, and queries go on. Senders keep what they could not deliver (an agent's
//! disk queue) and send it once space is back. Should the disk fill anyway (another
//! program filling it faster than the reserve), the WAL refuses the write it could not
//! finish, cuts its tail back to the last whole batch and takes the next one
//! (`store::wal`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// The reserve by default: room for a checkpoint of a large head and the segments being
/// written when ingest stops.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 << 20;
/// What a refused sender is told to wait.
pub const RETRY_AFTER_SECS: u64 = 10;
/// Free space is measured again after this long (a `statvfs` is cheap; this keeps a
/// busy ingest from making one per request).
const REFRESH_MS: i64 = 250;

/// Whether `e` says the disk (or the user's quota) is full.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == libc::ENOSPC || code == libc::EDQUOT)
}

/// Why ingest is refused now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the collector's disk is full: {free} bytes free under {dir}, below the {min_free}-byte reserve \
     (--min-free-bytes); nothing was stored — free space there, and senders deliver what they kept"
)]
pub struct DiskFull {
    pub free: u64,
    pub min_free: u64,
    pub dir: PathBuf,
}

#[derive(Debug)]
pub struct DiskGuard {
    dir: PathBuf,
    min_free: u64,
    /// Free bytes at the last measure (`u64::MAX`: not measured yet).
    free: AtomicU64,
    measured_ms: AtomicI64,
    free_gauge: Gauge,
    refused: Counter,
}

impl DiskGuard {
    pub fn new(dir: &Path, min_free: u64) -> Self {
        DiskGuard {
            dir: dir.to_path_buf(),
            min_free,
            free: AtomicU64::new(u64::MAX),
            measured_ms: AtomicI64::new(i64::MIN),
            free_gauge: Gauge::default(),
            refused: Counter::default(),
        }
    }

    /// Free bytes under the data dir, for an unprivileged writer (what `df` calls
    /// available); `None` if it cannot be measured (then ingest is not refused for it).
    fn measure(&self) -> Option<u64> {
        let s = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        Some((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
    }

    fn free_now(&self) -> u64 {
        let now = hale_core::time::now_ms();
        let last = self.measured_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= REFRESH_MS
            && self.measured_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let free = self.measure().unwrap_or(u64::MAX);
            self.free.store(free, Ordering::Relaxed);
            self.free_gauge.set(i64::try_from(free).unwrap_or(i64::MAX));
        }
        self.free.load(Ordering::Relaxed)
    }

    /// `Err` while less than the reserve is free: the sender should come back later.
    pub fn check(&self) -> Result<(), DiskFull> {
        let free = self.free_now();
        if free >= self.min_free {
            return Ok(());
        }
        self.refused.inc();
        Err(DiskFull { free, min_free: self.min_free, dir: self.dir.clone() })
    }

    /// A write found the disk full below the reserve's watch: measure again at the next
    /// request, and count the refusal.
    pub fn ran_out(&self) {
        self.measured_ms.store(i64::MIN, Ordering::Relaxed);
        self.refused.inc();
    }

    /// Whether ingest is refused now, for the status pages and the dashboard.
    pub fn full(&self) -> Option<DiskFull> {
        let free = self.free_now();
        (free < self.min_free).then(|| DiskFull { free, min_free: self.min_free, dir: self.dir.clone() })
    }

    /// `hale_collector_disk_free_bytes`, `hale_collector_ingest_refused_disk_full_total`.
    pub fn register(&self, registry: &mut Registry) {
        self.free_now();
        registry.register_with_unit(
            "disk_free",
            "Bytes free under the data dir at the last look (ingest is refused below --min-free-bytes)",
            Unit::Bytes,
            self.free_gauge.clone(),
        );
        registry.register(
            "ingest_refused_disk_full",
            "Ingest requests refused with 507 because the data dir's disk is full",
            self.refused.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_is_refused_below_the_reserve_and_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(DiskGuard::new(dir.path(), 0).check().is_ok());
        let full = DiskGuard::new(dir.path(), u64::MAX).check().expect_err("no disk has that much free");
        assert!(full.to_string().contains("--min-free-bytes") && full.to_string().contains("free space"), "{full}");
        let guard = DiskGuard::new(dir.path(), u64::MAX);
        assert!(guard.full().is_some());
        guard.ran_out();
        assert_eq!(guard.refused.get(), 1);
    }
}
