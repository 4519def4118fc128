//! `/metrics`: the collector's own metrics in the OpenMetrics text format, through
//! `prometheus-client`. Most are readings of state kept elsewhere (the store, the WAL, the
//! log store, the outbox, the rule groups, the SLOs), so each scrape builds a registry of
//! them beside the ones counted as requests are served ([`crate::telemetry`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use hale_core::time::now_ms;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::blocking;
use crate::notify::outbox::OutboxStats;
use crate::state::Collector;

pub(super) fn routes() -> Router<Arc<Collector>> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(c): State<Arc<Collector>>) -> impl IntoResponse {
    let slos = if c.slos.is_empty() {
        Vec::new()
    } else {
        let now = now_ms();
        blocking(&c, move |c| c.slo_states(now)).await.unwrap_or_default()
    };
    let mut registry = Registry::default();
    let hale = registry.sub_registry_with_prefix("hale");
    collector_metrics(&c, hale.sub_registry_with_prefix("collector"));
    crate::slo::state::register_metrics(&slos, hale.sub_registry_with_prefix("slo"));
    // Span-derived RED metrics, under the names the OpenTelemetry Collector gives them.
    registry.register_collector(Box::new(c.traces.metrics.exposition()));
    hale_serve::metrics::exposition(&registry)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct Endpoint {
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct EndpointReason {
    endpoint: String,
    reason: &'static str,
}

/// `hale_collector_forward_*`, per remote_write backend.
fn forward_metrics(c: &Collector, registry: &mut Registry) {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    let endpoints = c.forwarding.endpoints.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if endpoints.is_empty() {
        return;
    }
    let samples = Family::<Endpoint, Counter>::default();
    let failed = Family::<Endpoint, Counter>::default();
    let dropped = Family::<EndpointReason, Counter>::default();
    let dropped_bytes = Family::<Endpoint, Counter>::default();
    let backlog = Family::<Endpoint, Gauge>::default();
    let lag = Family::<Endpoint, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let now = now_ms();
    for (name, stats) in &endpoints {
        let e = Endpoint { endpoint: name.clone() };
        samples.get_or_create(&e).inc_by(stats.samples.load(Relaxed));
        failed.get_or_create(&e).inc_by(stats.requests_failed.load(Relaxed));
        dropped_bytes.get_or_create(&e).inc_by(stats.dropped_bytes.load(Relaxed));
        for (reason, n) in [("refused", &stats.dropped_refused), ("removed", &stats.dropped_removed)] {
            dropped.get_or_create(&EndpointReason { endpoint: name.clone(), reason }).inc_by(n.load(Relaxed));
        }
        let behind = stats.backlog_bytes.load(Relaxed);
        backlog.get_or_create(&e).set(behind as i64);
        let newest = stats.newest_forwarded_ms.load(Relaxed);
        let seconds = if behind == 0 || newest <= 0 { 0.0 } else { (now - newest).max(0) as f64 / 1000.0 };
        lag.get_or_create(&e).set(seconds);
    }
    registry.register("forward_samples", "Samples a remote_write backend accepted", samples);
    registry.register("forward_requests_failed", "Forwarding requests that failed and are retried", failed);
    registry.register(
        "forward_dropped_samples",
        "Samples not forwarded: refused by the backend for good (4xx), or their series removed by retention first",
        dropped,
    );
    registry.register_with_unit(
        "forward_dropped",
        "WAL given up for a backend that fell further behind than forward_max_backlog",
        Unit::Bytes,
        dropped_bytes,
    );
    registry.register_with_unit("forward_backlog", "WAL not yet forwarded", Unit::Bytes, backlog);
    registry.register_with_unit(
        "forward_lag",
        "Age of the newest sample forwarded while a backlog remains (0 when caught up)",
        Unit::Seconds,
        lag,
    );
}

/// Everything named `hale_collector_*`.
fn collector_metrics(c: &Collector, registry: &mut Registry) {
    let counter = |v: &AtomicU64| ConstCounter::new(v.load(Relaxed));
    c.telemetry.register(registry);
    c.disk.register(registry);
    forward_metrics(c, registry);
    let (series, samples, chunk_bytes) = c.store.stats();
    registry.register("samples_ingested", "Samples stored since start (replay included)", ConstCounter::new(samples));
    registry.register("active_series", "Series in the head", ConstGauge::new(series as i64));
    registry.register_with_unit(
        "chunk",
        "Bytes of compressed samples in the head",
        Unit::Bytes,
        ConstGauge::new(chunk_bytes as i64),
    );
    let blocks = c.store.block_stats();
    registry.register(
        "blocks",
        "On-disk blocks of samples older than the head window",
        ConstGauge::new(blocks.blocks as i64),
    );
    registry.register_with_unit(
        "block",
        "Bytes of on-disk blocks (index and chunks)",
        Unit::Bytes,
        ConstGauge::new(blocks.bytes as i64),
    );
    registry.register("block_samples", "Samples held in on-disk blocks", ConstGauge::new(blocks.samples as i64));
    registry.register(
        "block_persist_failures",
        "Passes that could not move chunks from the head to blocks (the head keeps them meanwhile)",
        ConstCounter::new(blocks.persist_failures),
    );
    let (traces, spans, trace_bytes) = c.traces.stats();
    registry.register(
        "spans_stored",
        "Spans stored since start (a resend not counted)",
        counter(&c.traces.spans_stored),
    );
    registry.register(
        "spans_duplicate",
        "Spans received again and not stored twice",
        counter(&c.traces.spans_duplicate),
    );
    registry.register("traces", "Traces held", ConstGauge::new(traces as i64));
    registry.register("spans", "Spans held", ConstGauge::new(spans as i64));
    registry.register_with_unit("trace", "Bytes of spans on disk", Unit::Bytes, ConstGauge::new(trace_bytes as i64));
    registry.register(
        "exemplars",
        "Exemplars held in memory (the newest, up to --exemplars-max)",
        ConstGauge::new(c.exemplars.len() as i64),
    );
    let wal = c.store.wal().stats();
    registry.register_with_unit("wal_written", "Bytes written to the WAL", Unit::Bytes, counter(&wal.bytes_written));
    registry.register("wal_fsyncs", "WAL fsyncs (each commits a group of writes)", counter(&wal.fsyncs));
    registry.register_with_unit(
        "wal_fsync",
        "Time spent in WAL fsyncs",
        Unit::Seconds,
        ConstCounter::new(wal.fsync_micros.load(Relaxed) as f64 / 1e6),
    );
    registry.register("log_lines_stored", "Log lines stored since start", counter(&c.logs.lines_stored));
    let logs = &c.logs.stats;
    let seconds = |micros: &AtomicU64| ConstCounter::new(micros.load(Relaxed) as f64 / 1e6);
    registry.register_with_unit(
        "log_decode",
        "Time reading log requests into stored lines",
        Unit::Seconds,
        seconds(&logs.decode_micros),
    );
    registry.register_with_unit(
        "log_store",
        "Time storing log lines (write, fsync, recent lines)",
        Unit::Seconds,
        seconds(&logs.store_micros),
    );
    registry.register("log_fsyncs", "Log store fsyncs (each commits a group of requests)", counter(&logs.fsyncs));
    registry.register_with_unit(
        "log_written",
        "Bytes written to the log store",
        Unit::Bytes,
        counter(&logs.bytes_written),
    );
    outbox_metrics(c.outbox.as_ref().map(|o| &o.stats), registry);
    registry.register_with_unit(
        "uptime",
        "Seconds since the collector started",
        Unit::Seconds,
        ConstGauge::new(c.started.elapsed().as_secs_f64()),
    );
    c.rules.register_metrics(registry);
}

/// Notification delivery; all 0 when notifications are off.
fn outbox_metrics(stats: Option<&OutboxStats>, registry: &mut Registry) {
    let read = |pick: fn(&OutboxStats) -> &AtomicU64| stats.map_or(0, |s| pick(s).load(Relaxed));
    registry.register(
        "notifications_sent",
        "Notifications delivered to a webhook receiver (2xx)",
        ConstCounter::new(read(|o| &o.sent)),
    );
    registry.register(
        "notification_attempts_failed",
        "Webhook deliveries that failed and will be retried (connection error, timeout, 5xx)",
        ConstCounter::new(read(|o| &o.failed_attempts)),
    );
    registry.register(
        "notifications_dropped",
        "Notifications given up (4xx, or undelivered for a day); kept in outbox/dead",
        ConstCounter::new(read(|o| &o.dropped)),
    );
    registry.register(
        "notifications_pending",
        "Notifications stored in the outbox and not yet delivered",
        ConstGauge::new(read(|o| &o.pending) as i64),
    );
    registry.register_with_unit(
        "notification_last_delivery",
        "From storing the last delivered notification to its receiver's 2xx",
        Unit::Seconds,
        ConstGauge::new(read(|o| &o.last_delivery_us) as f64 / 1e6),
    );
}

#[cfg(test)]
mod tests {
    use crate::api::test_support::{app, get};

    /// Names, types, units and help as before prometheus-client (counters end in `_total`).
    #[tokio::test]
    async fn self_metrics_keep_their_names() {
        let (_dir, app) = app(None);
        let (status, text) = get(&app, "/metrics").await;
        assert!(status.is_success(), "{status}");
        for line in [
            "# TYPE hale_collector_query_duration_seconds histogram",
            "hale_collector_query_duration_seconds_bucket{le=\"+Inf\"} 0",
            "hale_collector_samples_dropped_total{reason=\"duplicate\"} 0",
            "hale_collector_rejected_batches_total 0",
            "hale_collector_samples_ingested_total 0",
            "hale_collector_active_series 0",
            "hale_collector_chunk_bytes 0",
            "hale_collector_wal_written_bytes_total 0",
            "hale_collector_wal_fsyncs_total 0",
            "# TYPE hale_collector_wal_fsync_seconds counter",
            "hale_collector_log_lines_stored_total 0",
            "hale_collector_notifications_sent_total 0",
            "hale_collector_notification_attempts_failed_total 0",
            "hale_collector_notifications_dropped_total 0",
            "hale_collector_notifications_pending 0",
            "# HELP hale_collector_notification_last_delivery_seconds From storing the last delivered notification to its receiver's 2xx.",
            "# TYPE hale_collector_uptime_seconds gauge",
            "hale_collector_alerts{state=\"firing\"} 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }
}
