//! The running agent's shared state — config, supervisor, telemetry, queues, host
//! collector — and what one collection cycle does with it. `run.rs` builds it and drives
//! its loops; the HTTP API reads it. Nothing here depends on either.
//!
//! A collection cycle (host, the agent's own series, scrapes, probes) passes through
//! [`crate::staleness`] before it is queued, so a series missing from this cycle is ended
//! with a marker. Host series carry `node`, `instance` (the agent's address) and
//! `job="node"`; the agent's own carry `node` and `agent`. Queuing encodes remote_write
//! requests and pushes them, fsynced, on the blocking pool; host metrics are read there
//! too, because `statvfs` of a hung mount must not stall the runtime.

/// Labels added to a cycle's series, as (name, value).
type Labels = Vec<(String, String)>;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hale_core::metrics::Family;
use hale_core::remote_write::{self, WriteRequest};
use hale_core::time::now_ms;
use tracing::Instrument;

use crate::config::{AgentConfig, ConfigSource};
use crate::host::HostCollector;
use crate::queue::DiskQueue;
use crate::scrape::{self, Target};
use crate::staleness::Staleness;
use crate::supervise::Supervisor;
use crate::tail::LogSource;
use crate::telemetry::{Telemetry, WatchedQueue};

/// Series per remote_write request: small enough for any receiver's limits.
const SERIES_PER_REQUEST: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(String),
    #[error("queue: {0}")]
    Queue(#[from] crate::queue::QueueError),
    #[error("host statistics: {0}")]
    Host(#[from] crate::host::HostError),
    #[error("could not listen on {addr}: {error}; {}", hale_serve::listen_hint(error, "another agent"))]
    Listen { addr: std::net::SocketAddr, error: std::io::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The metrics queue's reader for the `i`-th remote_write destination.
pub fn metrics_reader(i: usize) -> String {
    format!("rw-{i}")
}

/// The collection cycles whose series are tracked for staleness, each with the labels
/// the agent adds to what it ships.
#[derive(Clone, Copy)]
enum Cycle {
    /// Host metrics: `node`, `instance` (the agent's address), `job="node"`.
    Host,
    /// The supervisor's and the agent's own metrics: `node`, `agent`.
    Own,
    /// The targets' series, labelled by the scrape itself.
    Scrape,
    Probe,
}

impl Cycle {
    const ALL: [Cycle; 4] = [Cycle::Host, Cycle::Own, Cycle::Scrape, Cycle::Probe];

    fn name(self) -> &'static str {
        match self {
            Cycle::Host => "host",
            Cycle::Own => "own",
            Cycle::Scrape => "scrape",
            Cycle::Probe => "probe",
        }
    }
}

/// The files `pattern` names now: itself when it has no glob characters (followed even
/// before it exists), else the regular files matching it, in order.
fn matching_files(pattern: &std::path::Path) -> Vec<PathBuf> {
    let text = pattern.to_string_lossy();
    if !text.contains(['*', '?', '[']) {
        return vec![pattern.to_path_buf()];
    }
    match glob::glob(&text) {
        Ok(paths) => paths.flatten().filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The running agent's shared state.
pub struct Agent {
    /// Services run elsewhere that the actuator restarts through their manager.
    pub adopted: crate::adopted::Adopted,
    /// The config in force: replaced whole by a reload ([`Agent::reload`]); loops that
    /// compile parts of it watch for the change.
    config: tokio::sync::watch::Sender<Arc<AgentConfig>>,
    /// Where a reload reads the config from.
    source: ConfigSource,
    /// The actuator's token (a file's rotates by itself); replaced when a reload changes
    /// `token` or `token_file`. `None`: the actuator is off.
    actuator_token: std::sync::Mutex<Option<Arc<hale_core::token::Token>>>,
    pub supervisor: Supervisor,
    pub telemetry: Arc<Telemetry>,
    host: Arc<std::sync::Mutex<HostCollector>>,
    pub(crate) metrics_queue: Option<Arc<DiskQueue>>,
    pub(crate) logs_queue: Option<Arc<DiskQueue>>,
    pub(crate) http: reqwest::Client,
    /// What each collection cycle sent, to end the series that disappear.
    pub(crate) staleness: Staleness,
    /// Which families' metadata is due to ship again.
    metadata: Arc<crate::metadata::MetadataSchedule>,
    /// The last probe cycle's results, also served on `/metrics` so a Prometheus that
    /// scrapes the agent judges readiness as the collector does.
    last_probes: std::sync::Mutex<Vec<Family>>,
}

impl Agent {
    /// Opens the queues under the data directory (the metrics queue only with a
    /// remote_write destination, the logs queue only with a logs endpoint).
    pub fn open(config: AgentConfig, source: ConfigSource) -> Result<Agent, AgentError> {
        let actuator_token = config.actuator_token().map_err(|e| AgentError::Config(e.to_string()))?;
        let queue_dir = config.data_dir.join("queue");
        let metrics_queue = if config.remote_write.is_empty() {
            None
        } else {
            let readers: Vec<String> = (0..config.remote_write.len()).map(metrics_reader).collect();
            let refs: Vec<&str> = readers.iter().map(String::as_str).collect();
            let (q, report) = DiskQueue::open(&queue_dir.join("metrics"), config.metrics_queue.clone(), &refs)?;
            tracing::info!(segments = report.segments, truncated_bytes = report.truncated_bytes, "metrics queue open");
            Some((Arc::new(q), readers))
        };
        let logs_queue = match &config.logs_endpoint {
            None => None,
            Some(_) => {
                let (q, report) = DiskQueue::open(&queue_dir.join("logs"), config.logs_queue.clone(), &["logs"])?;
                tracing::info!(segments = report.segments, truncated_bytes = report.truncated_bytes, "logs queue open");
                Some((Arc::new(q), vec!["logs".to_string()]))
            }
        };
        let watched = [("metrics", &metrics_queue), ("logs", &logs_queue)]
            .into_iter()
            .filter_map(|(name, q)| {
                let (queue, readers) = q.clone()?;
                Some(WatchedQueue { name, queue, readers })
            })
            .collect();
        Ok(Agent {
            supervisor: Supervisor::new(Duration::from_secs(8)),
            telemetry: Arc::new(Telemetry::new(watched)),
            host: Arc::new(std::sync::Mutex::new(HostCollector::new()?.with_textfile_dir(config.textfile_dir.clone()))),
            http: hale_client::tls::builder().build().map_err(|e| AgentError::Config(e.to_string()))?,
            metrics_queue: metrics_queue.map(|(q, _)| q),
            logs_queue: logs_queue.map(|(q, _)| q),
            staleness: Staleness::default(),
            metadata: Default::default(),
            last_probes: Default::default(),
            config: tokio::sync::watch::Sender::new(Arc::new(config)),
            source,
            actuator_token: std::sync::Mutex::new(actuator_token),
            adopted: Default::default(),
        })
    }

    /// The actuator's token in force, if the actuator is on.
    pub fn actuator_token(&self) -> Option<Arc<hale_core::token::Token>> {
        self.actuator_token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The config in force now (a reload replaces it; hold the `Arc` for one pass).
    pub fn config(&self) -> Arc<AgentConfig> {
        self.config.borrow().clone()
    }

    /// Tells of every config reload.
    pub fn watch_config(&self) -> tokio::sync::watch::Receiver<Arc<AgentConfig>> {
        self.config.subscribe()
    }

    /// Puts `new` (parsed and validated already) in force and returns the sections that
    /// changed. Refused, the old config staying, when it changes what only a restart can
    /// (the node, the listener, the data directory, the destinations, the queues, the
    /// intervals of the agent's own cycles). Processes newly listed are started; ones no
    /// longer listed keep running (stop them through the actuator).
    pub fn reload(&self, new: AgentConfig) -> Result<Vec<&'static str>, String> {
        let outcome = self.put_in_force(new);
        self.telemetry.config_reloaded(&outcome);
        outcome
    }

    /// Reads the config again from where it came from ([`ConfigSource`]) and reloads it.
    pub fn reload_from_source(&self) -> Result<Vec<&'static str>, String> {
        let outcome = self.source.load().and_then(|new| self.put_in_force(new));
        self.telemetry.config_reloaded(&outcome);
        outcome
    }

    fn put_in_force(&self, new: AgentConfig) -> Result<Vec<&'static str>, String> {
        let old = self.config();
        let fixed = crate::config::restart_only_changes(&old, &new);
        if !fixed.is_empty() {
            return Err(format!(
                "{} cannot change without a restart (the config in force is kept; restart the agent to change them)",
                fixed.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            ));
        }
        let changed = crate::config::reloadable_changes(&old, &new);
        if new.token != old.token || new.token_file != old.token_file {
            let token = new.actuator_token().map_err(|e| e.to_string())?;
            *self.actuator_token.lock().unwrap_or_else(|p| p.into_inner()) = token;
        }
        if new.textfile_dir != old.textfile_dir {
            self.host.lock().unwrap_or_else(|p| p.into_inner()).set_textfile_dir(new.textfile_dir.clone());
        }
        self.config.send_replace(Arc::new(new));
        self.start_configured();
        Ok(changed)
    }

    /// Starts the `[[processes]]` of the config that are not running.
    pub fn start_configured(&self) {
        let config = self.config();
        let running: Vec<String> = self.supervisor.list().into_iter().map(|p| p.name).collect();
        for p in config.processes.iter().filter(|p| !running.contains(&p.name)) {
            if let Some(template) = config.template(&p.service) {
                let spec = config.render(template, &p.name, p.listen, &p.extra_args);
                if let Err(e) = self.supervisor.start(spec) {
                    tracing::error!(error = %e, "cannot start a configured process");
                }
            }
        }
    }

    /// Scrape and probe targets: every supervised replica with a template.
    fn targets(&self) -> Vec<Target> {
        let config = self.config();
        self.supervisor
            .list()
            .into_iter()
            .filter_map(|p| {
                let t = config.template(&p.service)?;
                Some(Target {
                    service: p.service,
                    instance: p.name,
                    node: config.node.clone(),
                    base_url: t.url(&p.listen),
                    metrics_path: t.metrics_path.clone(),
                    health_path: t.health_path.clone(),
                    ready_path: t.ready_path.clone(),
                })
            })
            .collect()
    }

    /// The `[[scrape]]` services: scraped, never probed (the agent does not run them).
    fn static_targets(&self) -> Vec<Target> {
        let config = self.config();
        config
            .scrape
            .iter()
            .filter_map(|s| {
                let (base_url, metrics_path) = s.split()?;
                Some(Target {
                    service: s.service.clone(),
                    instance: s.instance.clone(),
                    node: config.node.clone(),
                    base_url,
                    metrics_path,
                    health_path: String::new(),
                    ready_path: String::new(),
                })
            })
            .collect()
    }

    /// The files to tail: every supervised replica's log file, and the `[[logs]]`.
    pub fn log_sources(&self) -> Vec<LogSource> {
        let config = self.config();
        let mut sources: Vec<LogSource> = self
            .supervisor
            .list()
            .into_iter()
            .filter_map(|p| {
                let t = config.template(&p.service)?;
                let path = t.log_file.as_ref()?.replace("{name}", &p.name).replace("{listen}", &p.listen);
                Some(LogSource::new(path, p.service, p.name))
            })
            .collect();
        for logs in &config.logs {
            for path in matching_files(&logs.path) {
                let stem = || path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                sources.push(LogSource {
                    instance: logs.instance.clone().unwrap_or_else(stem),
                    service: logs.service.clone(),
                    labels: logs.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    format: logs.format,
                    multiline: logs.multiline.clone(),
                    path,
                });
            }
        }
        // One file, one source: the first that names it (by inode, so a glob cannot take
        // a rotated copy of a file already followed under another name).
        let mut seen = std::collections::HashSet::new();
        sources.retain(|s| {
            use std::os::unix::fs::MetadataExt;
            let id = std::fs::metadata(&s.path).map(|m| (m.dev(), m.ino())).ok();
            id.is_none_or(|id| seen.insert(id))
        });
        sources
    }

    /// What `/metrics` serves: host, supervised processes, the agent itself, and the last
    /// probes of its replicas (blackbox_exporter's names, with their service, instance and
    /// node: a Prometheus scraping the agent keeps them with `honor_labels`).
    pub async fn local_families(&self) -> Vec<Family> {
        let mut families = self.host_families().await;
        families.extend(self.own_families().await);
        families.extend(self.last_probes.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
        families
    }

    /// The processes (supervised and adopted) and the agent's own telemetry.
    async fn own_families(&self) -> Vec<Family> {
        let mut rows = self.supervisor.rows();
        for p in self.adopted.list(&self.config()).await {
            rows.push(crate::supervise::ProcessRow {
                started_unix: p.pid.and_then(crate::adopted::start_time_unix),
                service: p.service,
                instance: p.name,
                node: p.node,
                pid: p.pid,
                restarts: p.restarts,
                counts: None,
            });
        }
        let mut families = crate::supervise::process_families(&rows);
        families.extend(self.telemetry.families());
        families
    }

    /// The labels the agent adds to what a cycle ships.
    fn cycle_labels(&self, cycle: Cycle) -> Labels {
        let (node, listen) = (self.config().node.clone(), self.config().listen.to_string());
        let pairs = match cycle {
            Cycle::Host => vec![("node", node), ("instance", listen), ("job", "node".to_string())],
            Cycle::Own => vec![("node", node), ("agent", listen)],
            Cycle::Scrape | Cycle::Probe => Vec::new(),
        };
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Ends the series of `cycle` that vanished since its last run, then queues it.
    async fn ship_cycle(&self, cycle: Cycle, families: Vec<Family>) {
        self.ship_cycles(vec![(cycle, families)]).await;
    }

    /// [`Agent::ship_cycle`] for several cycles at once, queued as one batch: one queue
    /// append (one fsync) and one request a cycle instead of one per kind of metric.
    async fn ship_cycles(&self, cycles: Vec<(Cycle, Vec<Family>)>) {
        let mut batches = Vec::with_capacity(cycles.len());
        for (cycle, mut families) in cycles {
            self.staleness.mark_vanished(cycle.name(), &mut families);
            if !families.is_empty() {
                batches.push((families, self.cycle_labels(cycle)));
            }
        }
        if !batches.is_empty() {
            self.queue_metrics(batches).await;
        }
    }

    /// Encodes and queues families, each group with its own added labels, as
    /// remote_write requests (fsyncs: off the runtime).
    pub(crate) async fn queue_metrics(&self, batches: Vec<(Vec<Family>, Labels)>) {
        let Some(queue) = self.metrics_queue.clone() else { return };
        let schedule = self.metadata.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let (now, at) = (now_ms(), std::time::Instant::now());
            let mut series = Vec::new();
            let mut metadata = Vec::new();
            for (families, extra) in &batches {
                let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                series.extend(remote_write::to_timeseries(families, &extra, now));
                metadata.extend(schedule.due(families, at));
            }
            for chunk in series.chunks(SERIES_PER_REQUEST) {
                let request = WriteRequest { timeseries: chunk.to_vec(), metadata: std::mem::take(&mut metadata) };
                let body = remote_write::encode(&request);
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

    /// Calls `check` on every target at once.
    async fn each_target(&self, check: impl AsyncFn(reqwest::Client, Target, Duration) -> Vec<Family>) -> Vec<Family> {
        let timeout = Duration::from_millis(self.config().timeout_ms);
        let checks = self.targets().into_iter().map(|t| check(self.http.clone(), t, timeout));
        futures::future::join_all(checks).await.into_iter().flatten().collect()
    }

    /// One metrics cycle: host, own, scrapes. A replica stopped or removed since the
    /// last cycle, a failed scrape, or a series a target no longer exposes: ended with a
    /// marker, as Prometheus does.
    pub async fn collect_metrics(&self) {
        // One trace a cycle: host, own, each scrape, then queueing (shipping is a trace of
        // its own, each batch's, continued by the collector's ingest).
        let cycle = tracing::info_span!(parent: None, "metrics cycle", otel.name = "agent metrics cycle");
        self.collect_metrics_traced().instrument(cycle).await
    }

    async fn collect_metrics_traced(&self) {
        let host = self.host_families().instrument(tracing::info_span!("host metrics")).await;
        let own = self.own_families().await;
        let mut scraped = self.each_target(async |client, t, timeout| traced_scrape(client, t, timeout).await).await;
        let timeout = Duration::from_millis(self.config().timeout_ms);
        let statics = self.static_targets().into_iter().map(|t| traced_scrape(self.http.clone(), t, timeout));
        scraped.extend(futures::future::join_all(statics).await.into_iter().flatten());
        self.ship_cycles(vec![(Cycle::Host, host), (Cycle::Own, own), (Cycle::Scrape, scraped)])
            .instrument(tracing::info_span!("queue", otel.name = "queue metrics"))
            .await;
    }

    pub async fn collect_probes(&self) {
        let probed = self.each_target(async |client, t, timeout| scrape::probe(&client, &t, timeout).await).await;
        *self.last_probes.lock().unwrap_or_else(|p| p.into_inner()) = probed.clone();
        self.ship_cycle(Cycle::Probe, probed).await;
    }

    /// On a clean stop, once the replicas are stopped: every series this agent sent ends
    /// with a staleness marker, queued durably like any sample (and shipped by the final
    /// flush, or at the next start). Without them a stopped node's replicas would look
    /// alive for a few intervals after it left — long enough for a restarted cluster to
    /// count a replica no process stands behind.
    pub async fn end_series(&self) {
        self.ship_cycles(Cycle::ALL.into_iter().map(|cycle| (cycle, Vec::new())).collect()).await;
    }
}

/// A scrape of `target` in a span of its own.
async fn traced_scrape(client: reqwest::Client, target: Target, timeout: Duration) -> Vec<Family> {
    let url = reqwest::Url::parse(&target.base_url).ok();
    let span = tracing::info_span!(
        "scrape",
        otel.name = %format_args!("scrape {}", target.instance),
        otel.kind = "client",
        server.address = url.as_ref().and_then(|u| u.host_str()).unwrap_or_default(),
        server.port = url.as_ref().and_then(reqwest::Url::port_or_known_default).unwrap_or_default(),
    );
    async move { scrape::scrape(&client, &target, timeout).await }.instrument(span).await
}
