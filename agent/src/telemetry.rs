//! The agent's own telemetry. Each event is one method that logs and counts together
//! (vector's "internal events"), so the log line and the metric cannot drift apart.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hale_core::metrics::{Family, MetricKind};

#[derive(Default)]
pub struct Telemetry {
    /// (destination, outcome) → batches: `sent`, `failed` (an attempt), `dropped`.
    batches: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// (service, level) → lines.
    log_lines: Mutex<BTreeMap<(String, String), u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Telemetry {
    pub fn batch_sent(&self, destination: &str) {
        *lock(&self.batches).entry((destination.to_string(), "sent")).or_default() += 1;
    }

    pub fn batch_failed(&self, destination: &str, seq: u64, reason: &str, retry_in_ms: u64) {
        *lock(&self.batches).entry((destination.to_string(), "failed")).or_default() += 1;
        tracing::warn!(destination, seq, reason, retry_in_ms, "batch not delivered; will retry");
    }

    pub fn batch_dropped(&self, destination: &str, seq: u64, reason: &str) {
        *lock(&self.batches).entry((destination.to_string(), "dropped")).or_default() += 1;
        tracing::error!(destination, seq, reason, "batch refused by the receiver; dropped");
    }

    pub fn log_line(&self, service: &str, level: &str) {
        *lock(&self.log_lines).entry((service.to_string(), level.to_string())).or_default() += 1;
    }

    pub fn families(&self) -> Vec<Family> {
        let mut out = Vec::new();
        let batches = lock(&self.batches);
        for (outcome, help) in [
            ("sent", "Batches the receiver accepted."),
            ("failed", "Delivery attempts that failed and will be retried."),
            ("dropped", "Batches the receiver refused for good (4xx other than 429)."),
        ] {
            let mut f = Family::new(format!("hale_agent_batches_{outcome}_total"), help, MetricKind::Counter);
            for ((destination, o), n) in batches.iter() {
                if *o == outcome {
                    f.push(&[("destination", destination)], *n as f64);
                }
            }
            out.push(f);
        }
        let mut lines =
            Family::new("hale_agent_log_lines_total", "Log lines read, by service and level.", MetricKind::Counter);
        for ((service, level), n) in lock(&self.log_lines).iter() {
            lines.push(&[("service", service), ("level", level)], *n as f64);
        }
        out.push(lines);
        out
    }
}
