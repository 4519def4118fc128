//! Wiring: from an `AgentConfig` to running collectors, queues, shippers, supervisor and
//! API. Data flows one way: collect → queue (disk) → ship.

use hale_core::time::now_ms;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hale_core::metrics::{Family, MetricKind};
use hale_core::remote_write::{self, WriteRequest};
use tokio::sync::watch;

use crate::config::AgentConfig;
use crate::host::HostCollector;
use crate::queue::DiskQueue;
use crate::scrape::{self, Target};
use crate::ship::{self, Destination, Protocol};
use crate::staleness::Staleness;
use crate::supervise::Supervisor;
use crate::tail::{self, LogSource, Tailer};
use crate::telemetry::Telemetry;

/// Series per remote_write request: small enough for any receiver's limits.
const SERIES_PER_REQUEST: usize = 2000;
const LOG_POLL: Duration = Duration::from_millis(250);
/// A log batch is cut at this many bytes of lines, whatever `max_records` says.
const MAX_LOG_BATCH_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(String),
    #[error("queue: {0}")]
    Queue(#[from] crate::queue::QueueError),
    #[error("host statistics: {0}")]
    Host(#[from] crate::host::HostError),
    #[error("could not listen on {addr}: {source}; is another agent using it?")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The running agent's shared state.
pub struct Agent {
    pub config: AgentConfig,
    pub supervisor: Supervisor,
    pub telemetry: Arc<Telemetry>,
    host: Arc<std::sync::Mutex<HostCollector>>,
    metrics_queue: Option<Arc<DiskQueue>>,
    logs_queue: Option<Arc<DiskQueue>>,
    http: reqwest::Client,
    /// What each collection cycle sent, to end the series that disappear.
    staleness: Staleness,
}

impl Agent {
    /// Scrape and probe targets: every supervised replica with a template.
    fn targets(&self) -> Vec<Target> {
        self.supervisor
            .list()
            .into_iter()
            .filter_map(|p| {
                let t = self.config.template(&p.service)?;
                Some(Target {
                    service: p.service,
                    instance: p.name,
                    node: self.config.node.clone(),
                    base_url: format!("http://{}", p.listen),
                    metrics_path: t.metrics_path.clone(),
                    health_path: t.health_path.clone(),
                    ready_path: t.ready_path.clone(),
                })
            })
            .collect()
    }

    fn log_sources(&self) -> Vec<LogSource> {
        let mut sources: Vec<LogSource> = self
            .supervisor
            .list()
            .into_iter()
            .filter_map(|p| {
                let t = self.config.template(&p.service)?;
                let path = t.log_file.as_ref()?.replace("{name}", &p.name).replace("{listen}", &p.listen);
                Some(LogSource { path: path.into(), service: p.service, instance: p.name })
            })
            .collect();
        sources.extend(self.config.logs.iter().map(|l| LogSource {
            path: l.path.clone(),
            service: l.service.clone(),
            instance: l.instance.clone(),
        }));
        sources
    }

    /// What `/metrics` serves: host, supervised processes, the agent itself.
    pub async fn local_families(&self) -> Vec<Family> {
        let mut families = self.host_families().await;
        families.extend(self.supervisor.families());
        families.extend(self.telemetry.families());
        families.extend(self.queue_families());
        families
    }

    fn queue_families(&self) -> Vec<Family> {
        let mut bytes = Family::new("hale_agent_queue_bytes", "Bytes in the disk queue.", MetricKind::Gauge);
        let mut pending =
            Family::new("hale_agent_queue_batches", "Batches queued and not yet delivered.", MetricKind::Gauge);
        let mut age = Family::new(
            "hale_agent_queue_oldest_unsent_age_seconds",
            "Age of the oldest undelivered batch.",
            MetricKind::Gauge,
        );
        let mut corrupt = Family::new(
            "hale_agent_queue_corrupt_records_total",
            "Damaged queue records skipped.",
            MetricKind::Counter,
        );
        let mut dropped = Family::new(
            "hale_agent_queue_dropped_bytes_total",
            "Bytes dropped because the queue was full.",
            MetricKind::Counter,
        );
        let now = now_ms();
        let queues = [
            ("metrics", &self.metrics_queue, self.metric_readers()),
            ("logs", &self.logs_queue, vec!["logs".to_string()]),
        ];
        for (name, queue, readers) in queues {
            let Some(queue) = queue else { continue };
            bytes.push(&[("queue", name)], queue.bytes() as f64);
            corrupt.push(&[("queue", name)], queue.corrupt_records.load(std::sync::atomic::Ordering::Relaxed) as f64);
            dropped.push(&[("queue", name)], queue.dropped_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64);
            for reader in readers {
                let (n, oldest) = match queue.next_for(&reader) {
                    Ok(Some((seq, created_ms))) => (queue.next_seq().saturating_sub(seq), Some(created_ms)),
                    _ => (0, None),
                };
                pending.push(&[("queue", name), ("reader", &reader)], n as f64);
                age.push(
                    &[("queue", name), ("reader", &reader)],
                    oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0),
                );
            }
        }
        vec![bytes, pending, age, corrupt, dropped]
    }

    fn metric_readers(&self) -> Vec<String> {
        (0..self.config.remote_write.len()).map(|i| format!("rw-{i}")).collect()
    }

    /// Encodes and queues families as remote_write requests (fsyncs: off the runtime).
    async fn queue_metrics(&self, families: Vec<Family>, extra: Vec<(String, String)>) {
        let Some(queue) = self.metrics_queue.clone() else { return };
        let _ = tokio::task::spawn_blocking(move || {
            let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let series = remote_write::to_timeseries(&families, &extra, now_ms());
            for chunk in series.chunks(SERIES_PER_REQUEST) {
                let body = remote_write::encode(&WriteRequest { timeseries: chunk.to_vec() });
                if let Err(e) = queue.push(&body) {
                    tracing::error!(error = %e, "cannot queue metrics; this batch is lost");
                }
            }
        })
        .await;
    }

    /// Host metrics, read on the blocking pool (statvfs of a hung mount must not stall
    /// the runtime).
    async fn host_families(&self) -> Vec<Family> {
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || host.lock().unwrap_or_else(|p| p.into_inner()).collect())
            .await
            .unwrap_or_default()
    }

    async fn collect_metrics(&self) {
        let listen = self.config.listen.to_string();
        let node = self.config.node.clone();
        let labels =
            |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let mut host = self.host_families().await;
        self.staleness.mark_vanished("host", &mut host);
        self.queue_metrics(host, labels(&[("node", &node), ("instance", &listen), ("job", "node")])).await;
        let mut own = self.supervisor.families();
        own.extend(self.queue_families());
        own.extend(self.telemetry.families());
        self.staleness.mark_vanished("own", &mut own);
        self.queue_metrics(own, labels(&[("node", &node), ("agent", &listen)])).await;
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let scrapes = self.targets().into_iter().map(|t| {
            let client = self.http.clone();
            async move { scrape::scrape(&client, &t, timeout).await }
        });
        let mut scraped: Vec<Family> = futures::future::join_all(scrapes).await.into_iter().flatten().collect();
        // A replica stopped or removed since the last cycle, a failed scrape, or a series
        // a target no longer exposes: ended with a marker, as Prometheus does.
        self.staleness.mark_vanished("scrape", &mut scraped);
        self.queue_metrics(scraped, Vec::new()).await;
    }

    /// On a clean stop, once the replicas are stopped: every series this agent sent ends
    /// with a staleness marker, queued durably like any sample (and shipped by the final
    /// flush, or at the next start). Without them a stopped node's replicas would look
    /// alive for a few intervals after it left — long enough for a restarted cluster to
    /// count a replica no process stands behind.
    async fn end_series(&self) {
        let listen = self.config.listen.to_string();
        let node = self.config.node.clone();
        let labels =
            |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        for (cycle, extra) in [
            ("host", labels(&[("node", &node), ("instance", &listen), ("job", "node")])),
            ("own", labels(&[("node", &node), ("agent", &listen)])),
            ("scrape", Vec::new()),
            ("probe", Vec::new()),
        ] {
            let mut families = Vec::new();
            self.staleness.mark_vanished(cycle, &mut families);
            if !families.is_empty() {
                self.queue_metrics(families, extra).await;
            }
        }
    }

    async fn collect_probes(&self) {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let probes = self.targets().into_iter().map(|t| {
            let client = self.http.clone();
            async move { scrape::probe(&client, &t, timeout).await }
        });
        let mut families: Vec<Family> = futures::future::join_all(probes).await.into_iter().flatten().collect();
        self.staleness.mark_vanished("probe", &mut families);
        self.queue_metrics(families, Vec::new()).await;
    }
}

/// How long a stopping agent spends shipping what is left in its metrics queue (its
/// series' staleness markers above all).
const FINAL_FLUSH: Duration = Duration::from_secs(2);

/// Ships what the metrics queue holds to every destination until it is empty or
/// `deadline` passes; what is left stays queued, durably, for the next start.
async fn flush(agent: &Arc<Agent>, destinations: Vec<Destination>, deadline: Duration) {
    let Some(queue) = agent.metrics_queue.clone() else { return };
    let (stop_tx, stop) = watch::channel(false);
    let readers: Vec<String> = destinations.iter().map(|d| d.reader.clone()).collect();
    let shippers: Vec<_> = destinations
        .into_iter()
        .map(|d| tokio::spawn(ship::deliver(queue.clone(), d, agent.telemetry.clone(), stop.clone())))
        .collect();
    let drained = async {
        loop {
            let (q, readers) = (queue.clone(), readers.clone());
            let empty = tokio::task::spawn_blocking(move || readers.iter().all(|r| matches!(q.peek(r), Ok(None))))
                .await
                .unwrap_or(true);
            if empty {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(deadline, drained).await.is_err() {
        tracing::warn!("metrics still queued at stop; they are shipped at the next start");
    }
    let _ = stop_tx.send(true);
    for s in shippers {
        s.abort();
    }
}

async fn every(interval: Duration, mut shutdown: watch::Receiver<bool>, mut f: impl AsyncFnMut()) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => f().await,
            _ = shutdown.changed() => return,
        }
    }
}

/// Follows the log files and queues their lines, checkpointing after every push.
async fn tail_logs(agent: Arc<Agent>, queue: Arc<DiskQueue>, mut shutdown: watch::Receiver<bool>) {
    let checkpoint = agent.config.data_dir.join("tail-positions.json");
    let mut positions = tail::load_checkpoint(&checkpoint);
    // A crash between a push and its checkpoint: the queue knows better.
    if let Ok(Some(last)) = queue.last_record()
        && let Some(queued) = tail::envelope_positions(&last.body)
    {
        positions = tail::merge(&positions, &queued);
    }
    let mut tailer = Tailer::new(Vec::new(), &positions);
    let mut known: Vec<LogSource> = Vec::new();
    let max = agent.config.batch.max_records;
    let max_wait = Duration::from_millis(agent.config.batch.max_wait_ms);
    // Lines wait here until the batch is full or its oldest line has waited `max_wait`.
    let mut buffer: Vec<tail::Line> = Vec::new();
    let mut first_at: Option<std::time::Instant> = None;
    let mut buffered_bytes = 0usize;
    let mut pending: Option<(Vec<u8>, tail::Positions)> = None;
    loop {
        let fresh: Vec<LogSource> = agent.log_sources().into_iter().filter(|s| !known.contains(s)).collect();
        if !fresh.is_empty() && buffer.is_empty() && pending.is_none() {
            // New replicas bring new files. Files of stopped replicas stay followed: their
            // last lines still count, and a replica started again under the same name
            // continues where its file left off instead of being read twice.
            let current = tail::merge(&positions, &tailer.positions());
            known.extend(fresh);
            tailer = Tailer::new(known.clone(), &current);
        }
        if pending.is_none() {
            let want = max - buffer.len();
            let (t, lines) = match tokio::task::spawn_blocking(move || {
                let lines = tailer.poll(want);
                (tailer, lines)
            })
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "the tailer panicked; log shipping stops");
                    return;
                }
            };
            tailer = t;
            if !lines.is_empty() && first_at.is_none() {
                first_at = Some(std::time::Instant::now());
            }
            buffered_bytes += lines.iter().map(|l| l.text.len()).sum::<usize>();
            buffer.extend(lines);
            let due = buffer.len() >= max
                || buffered_bytes >= MAX_LOG_BATCH_BYTES
                || first_at.is_some_and(|t| t.elapsed() >= max_wait);
            if due && !buffer.is_empty() {
                let otlp = tail::to_otlp(&buffer, &agent.config.node, |service, level| {
                    agent.telemetry.log_line(service, level)
                });
                let reached = tailer.positions();
                pending = Some((tail::envelope(&reached, &otlp), reached));
                buffer.clear();
                buffered_bytes = 0;
                first_at = None;
            }
        }
        if let Some((body, reached)) = pending.take() {
            let (q, cp, r) = (queue.clone(), checkpoint.clone(), reached.clone());
            let pushed = tokio::task::spawn_blocking(move || {
                let result = q.push(&body).map(|_| ());
                if result.is_ok()
                    && let Err(e) = tail::save_checkpoint(&cp, &r)
                {
                    tracing::error!(error = %e, "cannot save the tail checkpoint");
                }
                (result, body)
            })
            .await;
            let Ok((result, body)) = pushed else { return };
            match result {
                Ok(()) => {
                    positions = tail::merge(&positions, &reached);
                    continue; // there may be more right away
                }
                Err(crate::queue::QueueError::Full { .. }) => pending = Some((body, reached)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot queue log lines; retrying");
                    pending = Some((body, reached));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LOG_POLL.min(max_wait)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs the agent until `shutdown` resolves; then stops its replicas.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| AgentError::Io { path: data_dir.clone(), source })?;
    let agent_id =
        ship::agent_id(&data_dir, &config.node).map_err(|source| AgentError::Io { path: data_dir.clone(), source })?;
    let readers: Vec<String> = (0..config.remote_write.len()).map(|i| format!("rw-{i}")).collect();
    let metrics_queue = if config.remote_write.is_empty() {
        None
    } else {
        let refs: Vec<&str> = readers.iter().map(String::as_str).collect();
        let (q, report) =
            DiskQueue::open(&data_dir.join("queue").join("metrics"), config.metrics_queue.clone(), &refs)?;
        tracing::info!(segments = report.segments, truncated_bytes = report.truncated_bytes, "metrics queue open");
        Some(Arc::new(q))
    };
    let logs_queue = match &config.logs_endpoint {
        None => None,
        Some(_) => {
            let (q, report) =
                DiskQueue::open(&data_dir.join("queue").join("logs"), config.logs_queue.clone(), &["logs"])?;
            tracing::info!(segments = report.segments, truncated_bytes = report.truncated_bytes, "logs queue open");
            Some(Arc::new(q))
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Listen { addr: config.listen, source })?;
    let agent = Arc::new(Agent {
        supervisor: Supervisor::new(Duration::from_secs(8)),
        telemetry: Arc::new(Telemetry::default()),
        host: Arc::new(std::sync::Mutex::new(HostCollector::new()?)),
        http: reqwest::Client::builder().build().map_err(|e| AgentError::Config(e.to_string()))?,
        metrics_queue,
        logs_queue,
        staleness: Staleness::default(),
        config,
    });
    for p in &agent.config.processes {
        if let Some(template) = agent.config.template(&p.service) {
            let spec = agent.config.render(template, &p.name, p.listen, &p.extra_args);
            if let Err(e) = agent.supervisor.start(spec) {
                tracing::error!(error = %e, "cannot start a configured process");
            }
        }
    }

    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut metric_destinations = Vec::new();
    if let Some(queue) = &agent.metrics_queue {
        for (i, url) in agent.config.remote_write.iter().enumerate() {
            let destination = Destination {
                url: url.clone(),
                reader: format!("rw-{i}"),
                protocol: Protocol::RemoteWrite,
                token: agent.config.ingest_token.clone(),
                // Each queue numbers its own batches: the id names the queue.
                agent_id: format!("{agent_id}.metrics"),
                unwrap: |b| b,
            };
            metric_destinations.push(destination.clone());
            tasks.push(tokio::spawn(ship::deliver(queue.clone(), destination, agent.telemetry.clone(), stop.clone())));
        }
        let a = agent.clone();
        tasks.push(tokio::spawn(every(
            Duration::from_millis(a.config.scrape_interval_ms),
            stop.clone(),
            async move || a.collect_metrics().await,
        )));
        let a = agent.clone();
        tasks.push(tokio::spawn(every(
            Duration::from_millis(a.config.probe_interval_ms),
            stop.clone(),
            async move || a.collect_probes().await,
        )));
    }
    if let (Some(queue), Some(url)) = (&agent.logs_queue, &agent.config.logs_endpoint) {
        let destination = Destination {
            url: url.clone(),
            reader: "logs".into(),
            protocol: Protocol::OtlpLogs,
            token: agent.config.ingest_token.clone(),
            agent_id: format!("{agent_id}.logs"),
            unwrap: tail::unwrap_envelope,
        };
        tasks.push(tokio::spawn(ship::deliver(queue.clone(), destination, agent.telemetry.clone(), stop.clone())));
        tasks.push(tokio::spawn(tail_logs(agent.clone(), queue.clone(), stop.clone())));
    }
    tracing::info!(node = %agent.config.node, listen = %agent.config.listen, agent_id, "agent running");
    let result =
        hale_serve::serve(listener, crate::api::router(agent.clone()), hale_serve::Limits::default(), async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
    for task in tasks {
        task.abort();
    }
    agent.supervisor.shutdown().await;
    agent.end_series().await;
    flush(&agent, metric_destinations, FINAL_FLUSH).await;
    tracing::info!("agent stopped");
    result.map_err(|source| AgentError::Io { path: "listener".into(), source })
}
