//! The agent's own telemetry (`hale_agent_*`), kept in a `prometheus-client` registry.
//!
//! Each event is one method that logs and counts together (vector's "internal events"),
//! so the log line and the metric cannot drift apart. The queues' state is read when the
//! registry is encoded (`QueueMetrics`), not copied into gauges ahead of time.
//!
//! The agent both serves these series on `/metrics` and ships them with its host metrics,
//! so [`Telemetry::families`] is their one way out: the registry encoded as text 0.0.4
//! (`prometheus-client` appends `_total` and the units itself) and parsed back into the
//! `Family` values everything else the agent sends is made of.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use hale_core::exposition::{self, Format};
use hale_core::metrics::Family as Samples;
use hale_core::time::now_ms;
use hale_serve::metrics::registered;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::queue::DiskQueue;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    destination: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

/// A stage of the log path, timed by [`Telemetry::log_stage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStage {
    /// Reading and splitting lines from the files.
    Tail,
    /// Building the OTLP batch and its envelope.
    Encode,
    /// Appending the batch to the disk queue (fsynced) and saving the tail checkpoint.
    Queue,
    /// The round trip to the receiver, its own work included.
    Ship,
}

impl LogStage {
    fn label(self) -> &'static str {
        match self {
            LogStage::Tail => "tail",
            LogStage::Encode => "encode",
            LogStage::Queue => "queue",
            LogStage::Ship => "ship",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LogLabels {
    service: String,
    level: String,
}

pub struct Telemetry {
    registry: Registry,
    /// Batches the receiver accepted, by destination.
    sent: Family<DestinationLabels, Counter>,
    /// Delivery attempts that failed and will be retried.
    failed: Family<DestinationLabels, Counter>,
    /// Batches refused for good.
    dropped: Family<DestinationLabels, Counter>,
    log_lines: Family<LogLabels, Counter>,
    /// Seconds spent in each stage of the log path.
    log_stages: Family<StageLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// Bytes of each followed file not yet read: how far behind the agent is.
    log_unread: Family<PathLabels, prometheus_client::metrics::gauge::Gauge>,
    /// Seconds the log path waited on a full queue (backpressure from the receiver).
    log_blocked: Counter<f64, std::sync::atomic::AtomicU64>,
    /// `file_sd` files that could not be read or parsed.
    sd_read_errors: Counter,
    /// 1 when the last reload put its config in force (or none was tried), as
    /// Prometheus's `prometheus_config_last_reload_successful`.
    reload_ok: prometheus_client::metrics::gauge::Gauge,
    reload_at: prometheus_client::metrics::gauge::Gauge,
    reloads: Family<OutcomeLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new(Vec::new())
    }
}

impl Telemetry {
    /// The agent's metrics, with the state of `queues` read at every encoding.
    pub fn new(queues: Vec<WatchedQueue>) -> Self {
        let mut registry = Registry::with_prefix("hale");
        let agent = registry.sub_registry_with_prefix("agent");
        let [sent, failed, dropped] = [
            ("batches_sent", "Batches the receiver accepted"),
            ("batches_failed", "Delivery attempts that failed and will be retried"),
            ("batches_dropped", "Batches the receiver refused for good (4xx other than 401, 403, 404, 429)"),
        ]
        .map(|(name, help)| registered(agent, name, help));
        let log_lines = registered(agent, "log_lines", "Log lines read, by service and level");
        let log_stages = Family::default();
        agent.register_with_unit(
            "log_stage",
            "Time spent in each stage of the log path (tail, encode, queue, ship)",
            Unit::Seconds,
            log_stages.clone(),
        );
        let log_unread = Family::default();
        agent.register_with_unit(
            "log_unread",
            "Bytes of each followed log file not yet read",
            Unit::Bytes,
            log_unread.clone(),
        );
        let log_blocked = Counter::default();
        agent.register_with_unit(
            "log_blocked",
            "Time the log path waited because its queue was full (the receiver is slower than the files grow; the lines wait in their files)",
            Unit::Seconds,
            log_blocked.clone(),
        );
        let sd_read_errors = registered(
            agent,
            "sd_file_read_errors",
            "file_sd files that could not be read or parsed (their targets kept)",
        );
        let reload_ok = prometheus_client::metrics::gauge::Gauge::default();
        reload_ok.set(1);
        agent.register(
            "config_last_reload_successful",
            "Whether the last config reload was put in force (1) or refused (0)",
            reload_ok.clone(),
        );
        let reload_at = prometheus_client::metrics::gauge::Gauge::default();
        reload_at.set((now_ms() / 1000) as i64);
        agent.register(
            "config_last_reload_success_timestamp_seconds",
            "When the config in force was loaded",
            reload_at.clone(),
        );
        let reloads = registered(agent, "config_reloads", "Config reloads, applied or refused");
        agent.register_collector(Box::new(QueueMetrics { queues }));
        Telemetry {
            reloads,
            registry,
            sent,
            failed,
            dropped,
            log_lines,
            log_stages,
            log_unread,
            log_blocked,
            sd_read_errors,
            reload_ok,
            reload_at,
        }
    }

    fn destination(family: &Family<DestinationLabels, Counter>, destination: &str) {
        family.get_or_create(&DestinationLabels { destination: destination.to_string() }).inc();
    }

    pub fn batch_sent(&self, destination: &str) {
        Self::destination(&self.sent, destination);
    }

    pub fn batch_failed(&self, destination: &str, seq: u64, reason: &str, retry_in_ms: u64) {
        Self::destination(&self.failed, destination);
        tracing::warn!(destination, seq, reason, retry_in_ms, "batch not delivered; will retry");
    }

    pub fn batch_dropped(&self, destination: &str, seq: u64, reason: &str) {
        Self::destination(&self.dropped, destination);
        tracing::error!(destination, seq, reason, "batch refused by the receiver; dropped");
    }

    /// How many bytes of `path` are not yet read.
    pub fn log_unread(&self, path: &std::path::Path, bytes: u64) {
        self.log_unread.get_or_create(&PathLabels { path: path.display().to_string() }).set(bytes as i64);
    }

    /// Brings the `file_sd` read-error count up to `total`.
    pub fn sd_read_errors(&self, total: u64) {
        let counted = self.sd_read_errors.get();
        if total > counted {
            self.sd_read_errors.inc_by(total - counted);
        }
    }

    /// A config reload put in force (`changed` names its sections) or refused.
    pub fn config_reloaded(&self, outcome: &Result<Vec<&'static str>, String>) {
        match outcome {
            Ok(changed) => {
                self.reloads.get_or_create(&OutcomeLabels { outcome: "applied" }).inc();
                self.reload_ok.set(1);
                self.reload_at.set((now_ms() / 1000) as i64);
                tracing::info!(changed = ?changed, "config reloaded");
            }
            Err(why) => {
                self.reloads.get_or_create(&OutcomeLabels { outcome: "refused" }).inc();
                self.reload_ok.set(0);
                tracing::error!(error = %why, "config reload refused; the config in force is kept");
            }
        }
    }

    /// Counts time the log path waited on a full queue.
    pub fn log_blocked(&self, took: std::time::Duration) {
        self.log_blocked.inc_by(took.as_secs_f64());
    }

    /// Counts `took` against a stage of the log path.
    pub fn log_stage(&self, stage: LogStage, took: std::time::Duration) {
        self.log_stages.get_or_create(&StageLabels { stage: stage.label() }).inc_by(took.as_secs_f64());
    }

    /// Counts `n` lines of `service` at `level` tailed.
    pub fn log_lines(&self, service: &str, level: &str, n: u64) {
        self.log_lines.get_or_create(&LogLabels { service: service.to_string(), level: level.to_string() }).inc_by(n);
    }

    /// The registry in the text format 0.0.4.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String only fails if a metric's own encoder fails, which the
        // metric types used here never do.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding the agent's metrics failed");
        }
        out
    }

    /// Every `hale_agent_*` family, as served and shipped.
    pub fn families(&self) -> Vec<Samples> {
        exposition::parse(&self.encode(), Format::Text).unwrap_or_else(|e| {
            // The text comes from prometheus-client's encoder: a failure is a bug, and
            // losing the self-metrics must not stop the host metrics.
            tracing::error!(error = %e, "the agent's own metrics do not parse");
            Vec::new()
        })
    }
}

/// A disk queue and the readers whose backlog is reported.
pub struct WatchedQueue {
    /// The `queue` label: `metrics` or `logs`.
    pub name: &'static str,
    pub queue: Arc<DiskQueue>,
    pub readers: Vec<String>,
}

/// The `hale_agent_queue_*` families, read from the queues at each encoding.
struct QueueMetrics {
    queues: Vec<WatchedQueue>,
}

impl std::fmt::Debug for QueueMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.queues.iter().map(|q| q.name)).finish()
    }
}

/// One family of a collector: its descriptor, then one value per label set.
fn encode_family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: impl IntoIterator<Item = (Vec<(&'static str, String)>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut values = values.into_iter().peekable();
    let Some((_, first)) = values.peek() else { return Ok(()) };
    let mut metric = encoder.encode_descriptor(name, help, unit, first.metric_type())?;
    for (labels, value) in values {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for QueueMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = now_ms();
        let by_queue = |value: fn(&DiskQueue) -> u64| {
            self.queues.iter().map(move |q| (vec![("queue", q.name.to_string())], value(&q.queue)))
        };
        // (labels, batches pending, age of the oldest in seconds) per queue and reader.
        let backlog: Vec<_> = self
            .queues
            .iter()
            .flat_map(|q| {
                q.readers.iter().map(move |reader| {
                    let (n, oldest) = match q.queue.next_for(reader) {
                        Ok(Some((seq, created_ms))) => (q.queue.next_seq().saturating_sub(seq), Some(created_ms)),
                        _ => (0, None),
                    };
                    let age = oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
                    (vec![("queue", q.name.to_string()), ("reader", reader.clone())], n, age)
                })
            })
            .collect();
        let gauge = |v: u64| ConstGauge::new(v as i64);
        encode_family(
            &mut encoder,
            "queue",
            "Bytes in the disk queue.",
            Some(&Unit::Bytes),
            by_queue(DiskQueue::bytes).map(|(l, v)| (l, gauge(v))),
        )?;
        encode_family(
            &mut encoder,
            "queue_batches",
            "Batches queued and not yet delivered.",
            None,
            backlog.iter().map(|(l, n, _)| (l.clone(), gauge(*n))),
        )?;
        encode_family(
            &mut encoder,
            "queue_oldest_unsent_age",
            "Age of the oldest undelivered batch.",
            Some(&Unit::Seconds),
            backlog.iter().map(|(l, _, age)| (l.clone(), ConstGauge::new(*age))),
        )?;
        encode_family(
            &mut encoder,
            "queue_corrupt_records",
            "Damaged queue records skipped.",
            None,
            by_queue(|q| q.corrupt_records.load(Relaxed)).map(|(l, v)| (l, ConstCounter::new(v))),
        )?;
        encode_family(
            &mut encoder,
            "queue_dropped",
            "Bytes dropped because the queue was full.",
            Some(&Unit::Bytes),
            by_queue(|q| q.dropped_bytes.load(Relaxed)).map(|(l, v)| (l, ConstCounter::new(v))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueConfig;

    /// Names, help, types and labels as the agent has always exposed them.
    #[test]
    fn families_keep_their_names_help_and_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (queue, _) = DiskQueue::open(dir.path(), QueueConfig::metrics(), &["logs"]).expect("open");
        queue.push(b"batch").expect("push");
        let telemetry =
            Telemetry::new(vec![WatchedQueue { name: "logs", queue: Arc::new(queue), readers: vec!["logs".into()] }]);
        telemetry.batch_sent("http://collector/api/v1/write");
        telemetry.log_lines("app", "info", 1);
        telemetry.log_lines("app", "info", 1);
        let text = exposition::encode_text(&telemetry.families());
        for line in [
            "# HELP hale_agent_batches_sent_total Batches the receiver accepted.",
            "# TYPE hale_agent_batches_sent_total counter",
            "hale_agent_batches_sent_total{destination=\"http://collector/api/v1/write\"} 1",
            "# HELP hale_agent_log_lines_total Log lines read, by service and level.",
            "hale_agent_log_lines_total{service=\"app\",level=\"info\"} 2",
            "# HELP hale_agent_queue_bytes Bytes in the disk queue.",
            "# TYPE hale_agent_queue_bytes gauge",
            "hale_agent_queue_batches{queue=\"logs\",reader=\"logs\"} 1",
            "# TYPE hale_agent_queue_oldest_unsent_age_seconds gauge",
            "# HELP hale_agent_queue_corrupt_records_total Damaged queue records skipped.",
            "hale_agent_queue_corrupt_records_total{queue=\"logs\"} 0",
            "# TYPE hale_agent_queue_dropped_bytes_total counter",
            "hale_agent_queue_dropped_bytes_total{queue=\"logs\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from\n{text}");
        }
        assert!(text.contains("hale_agent_queue_bytes{queue=\"logs\"} "), "{text}");
    }
}
