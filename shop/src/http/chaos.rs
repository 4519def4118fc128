//! Fault injection: `POST /admin/chaos` makes a running replica slow, failing, hung, busy
//! or dead for a while, so Hale's detection and repair can be exercised from outside.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// A fault request. Every fault lasts `duration_secs` (default 60 s) unless cleared with
/// `DELETE /admin/chaos`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChaosRequest {
    /// Extra latency added to every request.
    pub latency_ms: Option<u64>,
    /// Share of API requests (0..=1) answered with 500.
    pub error_rate: Option<f64>,
    /// Stop answering any request (the process stays alive): what a deadlock looks like.
    pub hang: bool,
    /// Exit the process with status 1 right after answering.
    pub crash: bool,
    /// Burn one core for this long.
    pub cpu_burn_secs: Option<u64>,
    pub duration_secs: Option<u64>,
}

const DEFAULT_DURATION_SECS: u64 = 60;
const MAX_DURATION_SECS: u64 = 24 * 3600;

#[derive(Debug, Default, Clone)]
struct Faults {
    latency: Option<(Duration, Instant)>,
    error_rate: Option<(f64, Instant)>,
    hang_until: Option<Instant>,
}

/// Current faults of this replica; cheap to clone.
#[derive(Clone, Default)]
pub struct Chaos {
    faults: Arc<Mutex<Faults>>,
}

/// What the chaos middleware should do to one request.
#[derive(Debug, PartialEq)]
pub enum Effect {
    None,
    Hang(Instant),
    Delay(Duration),
    Fail,
}

#[derive(Debug, Serialize)]
pub struct ChaosSnapshot {
    pub latency_ms: Option<u64>,
    pub error_rate: Option<f64>,
    pub hang: bool,
    pub remaining_secs: u64,
}

impl Chaos {
    /// Validates and applies a request. Returns `true` if the caller should crash after
    /// answering.
    pub fn apply(&self, req: &ChaosRequest) -> Result<bool, String> {
        let secs = req.duration_secs.unwrap_or(DEFAULT_DURATION_SECS);
        if secs == 0 || secs > MAX_DURATION_SECS {
            return Err(format!("duration_secs must be between 1 and {MAX_DURATION_SECS}"));
        }
        if let Some(rate) = req.error_rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err("error_rate must be between 0 and 1".into());
        }
        if req.latency_ms.is_some_and(|ms| ms > 600_000) {
            return Err("latency_ms must be at most 600000".into());
        }
        if req.cpu_burn_secs.is_some_and(|s| s > MAX_DURATION_SECS) {
            return Err(format!("cpu_burn_secs must be at most {MAX_DURATION_SECS}"));
        }
        let until = Instant::now() + Duration::from_secs(secs);
        let mut f = self.lock();
        if let Some(ms) = req.latency_ms {
            f.latency = Some((Duration::from_millis(ms), until));
        }
        if let Some(rate) = req.error_rate {
            f.error_rate = Some((rate, until));
        }
        if req.hang {
            f.hang_until = Some(until);
        }
        drop(f);
        if let Some(burn) = req.cpu_burn_secs {
            let end = Instant::now() + Duration::from_secs(burn);
            std::thread::spawn(move || {
                let mut x: u64 = 1;
                while Instant::now() < end {
                    for _ in 0..100_000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    std::hint::black_box(x);
                }
            });
        }
        Ok(req.crash)
    }

    pub fn clear(&self) {
        *self.lock() = Faults::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Faults> {
        // A poisoned lock only means a panic elsewhere held it; the data is still valid.
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> ChaosSnapshot {
        let now = Instant::now();
        let f = self.lock();
        let alive = |until: Instant| until > now;
        let remaining = [f.latency.map(|l| l.1), f.error_rate.map(|e| e.1), f.hang_until]
            .into_iter()
            .flatten()
            .filter(|u| alive(*u))
            .map(|u| u.duration_since(now).as_secs())
            .max()
            .unwrap_or(0);
        ChaosSnapshot {
            latency_ms: f.latency.filter(|l| alive(l.1)).map(|l| l.0.as_millis() as u64),
            error_rate: f.error_rate.filter(|e| alive(e.1)).map(|e| e.0),
            hang: f.hang_until.is_some_and(alive),
            remaining_secs: remaining,
        }
    }

    /// Decides the fate of one request. `api` is false for probes, metrics and admin
    /// calls, which never get injected errors.
    pub fn effect(&self, api: bool) -> Effect {
        let now = Instant::now();
        let f = self.lock();
        if let Some(until) = f.hang_until.filter(|u| *u > now) {
            return Effect::Hang(until);
        }
        if api
            && let Some((rate, _)) = f.error_rate.filter(|e| e.1 > now)
            && rand::rng().random_bool(rate)
        {
            return Effect::Fail;
        }
        match f.latency.filter(|l| l.1 > now) {
            Some((delay, _)) => Effect::Delay(delay),
            None => Effect::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_apply_and_clear() {
        let chaos = Chaos::default();
        assert_eq!(chaos.effect(true), Effect::None);
        chaos.apply(&ChaosRequest { error_rate: Some(1.0), ..Default::default() }).expect("apply");
        assert_eq!(chaos.effect(true), Effect::Fail);
        assert_eq!(chaos.effect(false), Effect::None, "probes never get injected errors");
        chaos.apply(&ChaosRequest { hang: true, ..Default::default() }).expect("apply");
        assert!(matches!(chaos.effect(false), Effect::Hang(_)));
        assert!(chaos.snapshot().hang);
        chaos.clear();
        assert_eq!(chaos.effect(true), Effect::None);
    }

    #[test]
    fn bad_requests_are_refused() {
        let chaos = Chaos::default();
        assert!(chaos.apply(&ChaosRequest { error_rate: Some(1.5), ..Default::default() }).is_err());
        assert!(chaos.apply(&ChaosRequest { duration_secs: Some(0), ..Default::default() }).is_err());
        assert_eq!(chaos.effect(true), Effect::None);
    }

    #[test]
    fn latency_is_reported_until_it_expires() {
        let chaos = Chaos::default();
        chaos.apply(&ChaosRequest { latency_ms: Some(250), ..Default::default() }).expect("apply");
        assert_eq!(chaos.effect(true), Effect::Delay(Duration::from_millis(250)));
        assert_eq!(chaos.snapshot().latency_ms, Some(250));
    }
}
