//! Running the `[[scrape_configs]]` jobs and the `[[probes]]`: the jobs' targets (static and `file_sd`, read again
//! every [`REFRESH`]) each scraped on its own interval, offset by a hash of the target so
//! a fleet's scrapes spread over the interval. A target that goes away is stopped and its
//! series ended with staleness markers. Results are queued together once a second (one
//! queue fsync for all the targets scraped meanwhile).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use hale_core::metrics::Family;
use tokio::sync::{mpsc, watch};

use crate::agent::Agent;
use crate::targets::{FileSd, FileSdConfig, Job, ScrapeTarget};

/// How often the `file_sd` files are looked at.
const REFRESH: Duration = Duration::from_secs(5);
/// How often scrape results are queued.
const SHIP_EVERY: Duration = Duration::from_secs(1);

/// What a target's loop reports.
enum Report {
    Scraped {
        key: String,
        families: Vec<Family>,
    },
    /// The target went away: its series end.
    Ended {
        key: String,
    },
}

/// A target's identity: its job and labels (what Prometheus deduplicates targets by).
fn key(target: &ScrapeTarget) -> String {
    format!("job:{}{:?}", target.job, target.labels)
}

/// Reports what `collect` finds every `interval`, the first time after `offset` (so a
/// fleet's scrapes spread over the interval), until the shipper is gone.
async fn report_every<F: std::future::Future<Output = Vec<Family>> + Send>(
    interval: Duration,
    offset: Duration,
    key: String,
    reports: mpsc::Sender<Report>,
    mut collect: impl FnMut() -> F,
) {
    tokio::time::sleep(offset).await;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let families = collect().await;
        if reports.send(Report::Scraped { key: key.clone(), families }).await.is_err() {
            return;
        }
    }
}

async fn target_loop(client: reqwest::Client, job: Arc<Job>, target: ScrapeTarget, reports: mpsc::Sender<Report>) {
    let key = key(&target);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    let offset = Duration::from_millis(hasher.finish() % (target.interval.as_millis().max(1) as u64));
    let target = Arc::new(target);
    let interval = target.interval;
    report_every(interval, offset, key, reports, move || {
        let (client, job, target) = (client.clone(), job.clone(), target.clone());
        async move { crate::scrape::scrape_job_target(&client, &job, &target).await }
    })
    .await;
}

async fn probe_loop(
    clients: crate::blackbox::Clients,
    probe: crate::blackbox::Probe,
    node: String,
    reports: mpsc::Sender<Report>,
) {
    let key = format!("probe:{}", probe.config.name);
    let (probe, node) = (Arc::new(probe), Arc::new(node));
    let interval = probe.interval;
    report_every(interval, Duration::ZERO, key, reports, move || {
        let (clients, probe, node) = (clients.clone(), probe.clone(), node.clone());
        async move { crate::blackbox::run(&clients, &probe, &node).await }
    })
    .await;
}

/// Queues what the target loops report, once a second.
async fn ship(agent: Arc<Agent>, mut reports: mpsc::Receiver<Report>) {
    let mut ticker = tokio::time::interval(SHIP_EVERY);
    loop {
        ticker.tick().await;
        let mut families = Vec::new();
        loop {
            match reports.try_recv() {
                Ok(Report::Scraped { key, families: mut scraped }) => {
                    agent.staleness.mark_vanished(&key, &mut scraped);
                    families.extend(scraped);
                }
                Ok(Report::Ended { key }) => families.extend(agent.staleness.end(&key)),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
        if !families.is_empty() {
            agent.queue_metrics(vec![(families, Default::default())]).await;
        }
    }
}

/// Runs the agent's scrape jobs until `shutdown`.
pub(crate) async fn run(agent: Arc<Agent>, mut shutdown: watch::Receiver<bool>) {
    let interval = Duration::from_millis(agent.config.scrape_interval_ms);
    let timeout = Duration::from_millis(agent.config.timeout_ms);
    // Checked when the config was loaded.
    let jobs: Vec<Arc<Job>> =
        agent.config.scrape_configs.iter().filter_map(|j| j.compile(interval, timeout).ok()).map(Arc::new).collect();
    let probe_interval = Duration::from_millis(agent.config.probe_interval_ms);
    let probes: Vec<crate::blackbox::Probe> =
        agent.config.probes.iter().filter_map(|p| p.compile(probe_interval, timeout).ok()).collect();
    if jobs.is_empty() && probes.is_empty() {
        return;
    }
    let file_sd: Vec<FileSdConfig> = jobs.iter().flat_map(|j| j.config.file_sd_configs.clone()).collect();
    let (reports, received) = mpsc::channel(1024);
    let shipper = tokio::spawn(ship(agent.clone(), received));
    let mut probing = Vec::new();
    match crate::blackbox::Clients::new() {
        Ok(clients) => {
            for probe in probes {
                let node = agent.config.node.clone();
                probing.push(tokio::spawn(probe_loop(clients.clone(), probe, node, reports.clone())));
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot build the probes' HTTP clients; probes are off"),
    }
    let mut sd = FileSd::default();
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let configs = file_sd.clone();
        // A panic reading the files starts discovery over.
        sd = tokio::task::spawn_blocking(move || {
            sd.refresh(&configs);
            sd
        })
        .await
        .unwrap_or_default();
        agent.telemetry.sd_read_errors(sd.read_errors);
        let mut wanted: HashMap<String, (Arc<Job>, ScrapeTarget)> = HashMap::new();
        for job in &jobs {
            for target in job.targets(&sd.groups(&job.config.file_sd_configs), &agent.config.node) {
                wanted.entry(key(&target)).or_insert_with(|| (job.clone(), target));
            }
        }
        running.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
                let _ = reports.try_send(Report::Ended { key: key.clone() });
            }
            keep
        });
        for (key, (job, target)) in wanted {
            running
                .entry(key)
                .or_insert_with(|| tokio::spawn(target_loop(agent.http.clone(), job, target, reports.clone())));
        }
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = shutdown.changed() => break,
        }
    }
    for task in running.into_values().chain(probing) {
        task.abort();
    }
    shipper.abort();
}
