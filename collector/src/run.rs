//! Starting the collector: replay the WAL, serve the API, stop cleanly.
//!
//! Order of start: rule files and SLO specs first (a broken one stops the start with its
//! line, before anything is opened; SLOs become rule groups from the same text
//! `hale slo export` prints), then the checkpoint and WAL replay, the log store, the
//! outbox and silences, the rule groups and the notifier, then serving. Webhooks without
//! a signing secret are refused at start.
//!
//! Housekeeping: every 250 ms staleness markers for silent sources ([`crate::sources`]);
//! samples older than the head window moved to on-disk blocks every 10 s; retention of
//! samples and logs every minute; a checkpoint every `checkpoint_interval`
//! once the WAL has grown; and, every 2 s while data arrives, `malloc_trim` (glibc), so
//! freed request buffers go back to the kernel instead of staying resident.

use hale_core::secret::Secret;
use hale_core::time::now_ms;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::api;
use crate::rules::{FileKind, LoadError};
use crate::state::Collector;
use crate::store::Store;

/// What `hale collector` runs with.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Bearer token required to store telemetry; `None` only with `open_ingest`.
    pub ingest_token: Option<Arc<hale_core::token::Token>>,
    /// `--insecure-open-ingest`: no ingest token, on purpose.
    pub open_ingest: bool,
    /// Ingest is refused (507) while less than this is free under the data dir.
    pub min_free_bytes: u64,
    /// A token that may write spans only.
    pub traces_token: Option<Arc<hale_core::token::Token>>,
    /// Data older than this is dropped.
    pub retention: std::time::Duration,
    /// The head is kept under this many bytes of samples (0: no limit).
    pub retention_bytes: usize,
    /// Bytes of spans kept on disk at most (0: no limit).
    pub traces_max_bytes: u64,
    /// Exemplars kept in memory, the newest over all series.
    pub exemplars_max: usize,
    /// How often the WAL is folded into a checkpoint.
    pub checkpoint_interval: std::time::Duration,
    /// Prometheus rule files to evaluate.
    pub rule_files: Vec<PathBuf>,
    /// How often rule groups without an interval of their own run.
    pub evaluation_interval: std::time::Duration,
    /// Labels templates see as `$externalLabels`.
    pub external_labels: std::collections::BTreeMap<String, String>,
    /// Where alerts are notified.
    pub notify: crate::notify::NotifyConfig,
    /// Bearer token for silences; without it they are read-only.
    pub admin_token: Option<Arc<hale_core::token::Token>>,
    /// Sloth SLO specs to evaluate.
    pub slo_files: Vec<PathBuf>,
    /// Window scale and minimum events of the SLO rules.
    pub slo_options: crate::slo::Options,
    /// Samples one query may load and produce.
    pub query_max_samples: usize,
    /// remote_write backends everything stored is forwarded to ([`crate::forward`]).
    pub forward: Vec<crate::forward::Endpoint>,
    /// How much WAL one lagging backend may hold back before its oldest part is given up.
    pub forward_max_backlog: u64,
    /// Rules, SLOs and the query API evaluate through this Prometheus query API
    /// ([`crate::remote`]) instead of the local head.
    pub query_url: Option<String>,
    /// Its bearer token, from a file.
    pub query_token_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("opening the store in {dir}: {source}")]
    Store { dir: PathBuf, source: crate::store::wal::WalError },
    #[error("could not listen on {addr}: {error}; {}", hale_serve::listen_hint(error, "another collector"))]
    Listen { addr: SocketAddr, error: std::io::Error },
    #[error("serving: {0}")]
    Serve(std::io::Error),
    #[error("opening the log store: {0}")]
    Logs(crate::logs::LogsError),
    /// A rule file or an SLO spec.
    #[error(transparent)]
    Rules(#[from] LoadError),
    #[error("webhooks are always signed: give --webhook-secret (or HALE_WEBHOOK_SECRET) with --alert-webhook")]
    UnsignedWebhooks,
    #[error(
        "no ingest token: anyone who can reach the collector could store telemetry, and fire alerts the \
         healer acts on; give --ingest-token-file FILE (or HALE_INGEST_TOKEN), or --insecure-open-ingest \
         for a throwaway collector"
    )]
    OpenIngest,
    #[error("--insecure-open-ingest and an ingest token contradict each other: drop one")]
    OpenIngestWithToken,
    #[error("opening the notification outbox in {dir}: {error}")]
    Outbox { dir: PathBuf, error: std::io::Error },
}

pub async fn run(
    config: CollectorConfig,
    security: hale_serve::Security,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CollectorError> {
    let started = Instant::now();
    let mut tasks_forward = Vec::new();
    // Freed buffers stay for reuse until the periodic trim below hands them back.
    hale_serve::process::keep_freed_memory_until_trimmed();
    // Rule files first: a broken one stops the start before anything else is opened.
    let mut groups =
        crate::rules::manager::load(&config.rule_files, config.evaluation_interval, &config.external_labels)?;
    // SLOs become rule groups like any others, from the same text `hale slo export` prints.
    let mut slos = Vec::new();
    for path in &config.slo_files {
        let file = crate::slo::load(path, config.slo_options)?;
        let name = PathBuf::from(format!("{} (SLO rules)", path.display()));
        let external = Arc::new(config.external_labels.clone());
        // `slo::load` has checked that these rules load; if they did not, the SLO file says why.
        let generated = crate::rules::manager::parse_groups(&file.rules, &name, config.evaluation_interval, &external)
            .map_err(|e| match e {
                LoadError::Invalid { error, .. } => {
                    LoadError::Invalid { kind: FileKind::Slo, path: path.clone(), error }
                }
                other => other,
            })?;
        groups.extend(generated);
        slos.extend(crate::slo::state::defs(&file.specs));
    }
    let period = std::time::Duration::from_secs_f64(30.0 * 86400.0 * config.slo_options.time_scale);
    if !slos.is_empty() && config.retention < period {
        tracing::warn!(
            retention_secs = config.retention.as_secs(),
            period_secs = period.as_secs(),
            "retention is shorter than the SLO period (30d × time_scale): budgets cover only the retained part; raise --retention"
        );
    }
    if !config.notify.webhooks.is_empty() && config.notify.webhook_secret.is_none() {
        return Err(CollectorError::UnsignedWebhooks);
    }
    match (&config.ingest_token, config.open_ingest) {
        (None, false) => return Err(CollectorError::OpenIngest),
        (Some(_), true) => return Err(CollectorError::OpenIngestWithToken),
        (None, true) => {
            tracing::warn!("--insecure-open-ingest: anyone who can reach this collector can store telemetry")
        }
        (Some(_), false) => {}
    }
    let dir = config.data_dir.clone();
    let (store, report) = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| CollectorError::Serve(std::io::Error::other(e)))?
        .map_err(|source| CollectorError::Store { dir: config.data_dir.clone(), source })?;
    if report.wal.truncated_bytes > 0 {
        tracing::warn!(
            bytes = report.wal.truncated_bytes,
            "the WAL had a torn or damaged tail; it was cut and everything before it kept"
        );
    }
    tracing::info!(
        series = report.series,
        samples = report.samples,
        wal_records = report.wal.records,
        blocks = report.blocks,
        seconds = started.elapsed().as_secs_f64(),
        "store open"
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| CollectorError::Listen { addr: config.listen, error })?;
    let logs_dir = config.data_dir.join("logs");
    let logs = tokio::task::spawn_blocking(move || crate::logs::LogStore::open(&logs_dir))
        .await
        .map_err(|e| CollectorError::Serve(std::io::Error::other(e)))?
        .map_err(CollectorError::Logs)?;
    let traces_dir = config.data_dir.join("traces");
    let traces = tokio::task::spawn_blocking(move || crate::traces::TraceStore::open(&traces_dir))
        .await
        .map_err(|e| CollectorError::Serve(std::io::Error::other(e)))?
        .map_err(|e| CollectorError::Serve(std::io::Error::other(e)))?;
    let notifying = !config.notify.webhooks.is_empty() || !config.notify.alertmanagers.is_empty();
    let outbox_dir = config.data_dir.join("outbox");
    let outbox = if notifying {
        let outbox =
            crate::notify::outbox::Outbox::open(&outbox_dir, concat!("hale-collector/", env!("CARGO_PKG_VERSION")))
                .map_err(|error| CollectorError::Outbox { dir: outbox_dir.clone(), error })?;
        Some(Arc::new(outbox))
    } else {
        None
    };
    let silences = Arc::new(crate::notify::silence::Silences::open(&config.data_dir.join("silences.json")));
    let remote = match &config.query_url {
        Some(base) => {
            let client = hale_client::tls::builder()
                .connect_timeout(std::time::Duration::from_secs(3))
                .build()
                .map_err(|e| CollectorError::Serve(std::io::Error::other(e)))?;
            tracing::info!(query_url = %base, "rules, SLOs and queries evaluate through the query backend");
            Some(crate::remote::RemoteQuery {
                base: base.clone(),
                client,
                bearer_token_file: config.query_token_file.clone(),
            })
        }
        None => None,
    };
    let collector = Arc::new(Collector {
        store,
        logs,
        traces,
        exemplars: crate::exemplars::ExemplarStore::new(config.exemplars_max),
        disk: crate::disk::DiskGuard::new(&config.data_dir, config.min_free_bytes),
        ingest_token: config.ingest_token.clone(),
        traces_token: config.traces_token.clone(),
        started,
        telemetry: Default::default(),
        rules: Default::default(),
        admin_token: config.admin_token.clone(),
        silences: silences.clone(),
        outbox: outbox.clone(),
        slos,
        slo_min_events: config.slo_options.min_events,
        query_max_samples: config.query_max_samples,
        group_by: config.notify.route.group_by.clone(),
        sources: Default::default(),
        metadata: Default::default(),
        server: crate::server_info::ServerInfo::of(&config),
        forwarding: Default::default(),
        remote: remote.clone(),
    });
    let housekeeping = tokio::spawn(housekeep(collector.clone(), config.clone()));
    let persisting = tokio::spawn(persist(collector.clone()));
    if !config.forward.is_empty() {
        let client = hale_client::tls::builder()
            .connect_timeout(std::time::Duration::from_secs(3))
            .build()
            .map_err(|e| CollectorError::Serve(std::io::Error::other(e)))?;
        for endpoint in &config.forward {
            tasks_forward.push(tokio::spawn(crate::forward::run(
                collector.clone(),
                endpoint.clone(),
                config.data_dir.clone(),
                config.forward_max_backlog,
                client.clone(),
            )));
        }
    }
    tracing::info!(groups = groups.len(), files = config.rule_files.len(), "rules loaded");
    let mut tasks = Vec::new();
    let updates = match outbox {
        Some(outbox) => {
            let client = hale_client::tls::builder()
                .connect_timeout(std::time::Duration::from_secs(3))
                .build()
                .map_err(|e| CollectorError::Serve(std::io::Error::other(e)))?;
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            tracing::info!(
                pending = outbox.stats.pending.load(std::sync::atomic::Ordering::Relaxed),
                webhooks = config.notify.webhooks.len(),
                alertmanagers = config.notify.alertmanagers.len(),
                "notifications on"
            );
            tasks.push(tokio::spawn(
                outbox.clone().run(client.clone(), config.notify.webhook_secret.clone().map(Secret::into_inner)),
            ));
            tasks.push(tokio::spawn(crate::notify::run(config.notify.clone(), rx, silences, outbox, client)));
            Some(tx)
        }
        None => None,
    };
    tasks.extend(crate::rules::manager::spawn(groups, collector.clone(), collector.rules.clone(), updates, remote));
    tracing::info!(listen = %config.listen, "collector serving");
    let result =
        hale_serve::serve_secure(listener, api::router(collector), hale_serve::Limits::default(), security, shutdown)
            .await
            .map_err(CollectorError::Serve);
    housekeeping.abort();
    persisting.abort();
    tasks_forward.iter().for_each(tokio::task::JoinHandle::abort);
    tasks.iter().for_each(tokio::task::JoinHandle::abort);
    result
}

/// Moves samples older than the head window to on-disk blocks every 10 s: often, so a
/// burst (an agent's backlog, a backfill) leaves memory soon after it leaves the window;
/// a pass with nothing to move only scans chunk bounds. A task of its own, since a pass
/// that compacts a day takes seconds and staleness markers must not wait for it.
async fn persist(collector: Arc<Collector>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_ms();
        let c = collector.clone();
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || c.store.persist(now)).await {
            Ok(Ok(report)) if report.blocks_written + report.blocks_compacted > 0 => {
                tracing::info!(
                    blocks = report.blocks_written,
                    samples = report.samples,
                    compacted = report.blocks_compacted,
                    seconds = started.elapsed().as_secs_f64(),
                    "moved samples older than the head window to disk"
                );
                // The chunks that left the head go back to the kernel, data arriving or not.
                tokio::task::spawn_blocking(release_free_memory);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "moving samples to disk failed; the head keeps them and the next pass tries again")
            }
            Err(e) => tracing::error!(error = %e, "the pass moving samples to disk stopped"),
        }
    }
}

/// Retention every minute; a checkpoint every `checkpoint_interval` once the WAL has grown;
/// freed heap handed back to the kernel every few seconds while data arrives or queries run.
async fn housekeep(collector: Arc<Collector>, config: CollectorConfig) {
    let mut retention = tokio::time::interval(std::time::Duration::from_secs(60));
    let mut checkpoint = tokio::time::interval(config.checkpoint_interval);
    let mut trim = tokio::time::interval(std::time::Duration::from_secs(2));
    // Often enough that a silent agent's series end within a fraction of the demo's
    // 500 ms probe interval after they become due.
    let mut silent = tokio::time::interval(std::time::Duration::from_millis(250));
    silent.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checkpoint.tick().await;
    let mut written_at_last = 0;
    let mut written_at_trim = 0;
    loop {
        tokio::select! {
            _ = silent.tick() => {
                collector.sources.mark_silent(&collector.store, now_ms()).await;
            }
            _ = trim.tick() => {
                let written = collector.store.wal().stats().bytes_written.load(std::sync::atomic::Ordering::Relaxed)
                    + collector.logs.lines_stored.load(std::sync::atomic::Ordering::Relaxed)
                    + collector.telemetry.queries();
                if written != written_at_trim {
                    written_at_trim = written;
                    tokio::task::spawn_blocking(release_free_memory);
                }
            }
            _ = retention.tick() => {
                let now = now_ms();
                let min_t = now - config.retention.as_millis() as i64;
                let freed = collector.store.apply_retention(min_t, config.retention_bytes);
                if let Err(e) = collector.logs.apply_retention(min_t.max(0) as u64 * 1_000_000) {
                    tracing::error!(error = %e, "log retention failed");
                }
                if let Err(e) = collector.traces.apply_retention(min_t.max(0) as u64 * 1_000_000, config.traces_max_bytes) {
                    tracing::error!(error = %e, "trace retention failed");
                }
                if freed > 0 {
                    tracing::info!(bytes = freed, "retention dropped old chunks");
                }
            }
            _ = checkpoint.tick() => {
                let written = collector.store.wal().stats().bytes_written.load(std::sync::atomic::Ordering::Relaxed);
                if written == written_at_last {
                    continue;
                }
                let started = Instant::now();
                match collector.store.checkpoint().await {
                    Ok(report) => {
                        written_at_last = written;
                        tracing::info!(records = report.records, upto_segment = report.upto_segment, seconds = started.elapsed().as_secs_f64(), "checkpoint written");
                    }
                    Err(e) => tracing::error!(error = %e, "checkpoint failed; the WAL keeps everything meanwhile"),
                }
                tokio::task::spawn_blocking(release_free_memory);
            }
        }
    }
}

/// Hands freed heap pages back to the kernel: ingest decodes every request into buffers
/// far larger than what the head keeps of them (about 70 B per series in
/// `scripts/bench-collector.sh` without this). Go's scavenger does the same for
/// Prometheus.
use hale_serve::process::release_free_memory;
