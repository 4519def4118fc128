//! Wiring: from an `AgentConfig` to the shared [`Agent`] state, its collect loops,
//! shippers, log tailer and API. Data flows one way: collect → queue (disk) → ship.
//!
//! Metrics are collected every `scrape_interval_ms` (host, own, scrapes) and probes every
//! `probe_interval_ms`; log files are followed by [`crate::logs`].
//!
//! On a clean stop, once its replicas are stopped, the agent ends every series it sent
//! with a staleness marker and ships what its metrics queue holds for up to 2 s; what is
//! left stays queued and ships at the next start. `hale up` stops the agents before the
//! collector, so those markers land.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::agent::{Agent, AgentError, metrics_reader};
use crate::config::{AgentConfig, ConfigSource};
use crate::ship::{self, Destination, Protocol};
use crate::tail;

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

/// Threads the agent's runtime may add for blocking calls (queue fsyncs, `/proc` and
/// `statvfs` reads, log batches): three. Metric cycles make short calls one after
/// another; a hung network mount holds one up once, for 5 s, and is skipped after that
/// (`host::disk`). The others are for a log backlog: one batch is encoded while the one
/// before it is fsynced ([`crate::logs`]), and neither holds up the shipper's queue
/// reads. Tokio starts a thread only when a call waits for one and ends it after 10 s
/// idle, so an agent without a log backlog runs with one (each costs 0.5 MiB resident).
const BLOCKING_THREADS: usize = 3;

/// The runtime an agent process runs on. An agent's work is a few small jobs a second,
/// so one thread does its async work and at most [`BLOCKING_THREADS`] its blocking calls;
/// and glibc is told to keep one malloc arena instead of one per thread, each of which
/// would hold its own free memory (on a 2-core host: 3.7 → 2.6 MiB of heap). Call it at
/// the start of the process, before any other thread is started.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    one_malloc_arena();
    // Each metrics cycle trims (`release_free_memory`); between trims a log backlog's
    // batch buffers are reused instead of faulted in afresh.
    hale_serve::process::keep_freed_memory_until_trimmed();
    tokio::runtime::Builder::new_current_thread().max_blocking_threads(BLOCKING_THREADS).enable_all().build()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn one_malloc_arena() {
    // SAFETY: mallopt takes no pointers and only sets the allocator's own parameter; it
    // runs before the runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}

/// Reloads the config at every SIGHUP (as Prometheus and most daemons do).
async fn reload_on_hangup(agent: Arc<Agent>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /-/reload");
        return;
    };
    while hangups.recv().await.is_some() {
        let _ = agent.reload_from_source();
    }
}

/// Runs the agent until `shutdown` resolves; then stops its replicas. `source` is where
/// `config` came from, read again at a reload (SIGHUP, `POST /-/reload`).
pub async fn run(
    config: AgentConfig,
    source: ConfigSource,
    security: hale_serve::Security,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| AgentError::Io { path: data_dir.clone(), source })?;
    let agent_id =
        ship::agent_id(&data_dir, &config.node).map_err(|source| AgentError::Io { path: data_dir.clone(), source })?;
    let ingest_token = config.ingest_bearer().map_err(|e| AgentError::Config(e.to_string()))?;
    let agent = Arc::new(Agent::open(config, source)?);
    let listen = agent.config().listen;
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|error| AgentError::Listen { addr: listen, error })?;
    agent.start_configured();

    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut metric_destinations = Vec::new();
    if let Some(queue) = &agent.metrics_queue {
        for (i, url) in agent.config().remote_write.iter().enumerate() {
            let destination = Destination {
                url: url.clone(),
                reader: metrics_reader(i),
                protocol: Protocol::RemoteWrite,
                token: ingest_token.clone(),
                // Each queue numbers its own batches: the id names the queue.
                agent_id: format!("{agent_id}.metrics"),
                unwrap: |b| b,
                in_flight: 1,
            };
            metric_destinations.push(destination.clone());
            tasks.push(tokio::spawn(ship::deliver(queue.clone(), destination, agent.telemetry.clone(), stop.clone())));
        }
        let a = agent.clone();
        tasks.push(tokio::spawn(every(
            Duration::from_millis(a.config().scrape_interval_ms),
            stop.clone(),
            async move || {
                a.collect_metrics().await;
                // A cycle's batch is encoded and freed each time: hand the pages back.
                let _ = tokio::task::spawn_blocking(hale_serve::process::release_free_memory).await;
            },
        )));
        tasks.push(tokio::spawn(crate::jobs::run(agent.clone(), stop.clone())));
        let a = agent.clone();
        tasks.push(tokio::spawn(every(
            Duration::from_millis(a.config().probe_interval_ms),
            stop.clone(),
            async move || a.collect_probes().await,
        )));
    }
    if let (Some(queue), Some(url)) = (&agent.logs_queue, &agent.config().logs_endpoint) {
        let destination = Destination {
            url: url.clone(),
            reader: "logs".into(),
            protocol: Protocol::OtlpLogs,
            token: ingest_token.clone(),
            agent_id: format!("{agent_id}.logs"),
            unwrap: tail::unwrap_envelope,
            in_flight: agent.config().batch.max_in_flight,
        };
        tasks.push(tokio::spawn(ship::deliver(queue.clone(), destination, agent.telemetry.clone(), stop.clone())));
        tasks.push(tokio::spawn(crate::logs::run(agent.clone(), queue.clone(), stop.clone())));
    }
    tasks.push(tokio::spawn(reload_on_hangup(agent.clone())));
    tracing::info!(node = %agent.config().node, listen = %agent.config().listen, agent_id, "agent running");
    let result = hale_serve::serve_secure(
        listener,
        crate::api::router(agent.clone()),
        hale_serve::Limits::default(),
        security,
        async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        },
    )
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
