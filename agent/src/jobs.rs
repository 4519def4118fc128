//! Running the `[[scrape_configs]]` jobs and the `[[probes]]`: the jobs' targets (static and `file_sd`, read again
//! every [`REFRESH`]) each scraped on its own interval, offset by a hash of the target so
//! a fleet's scrapes spread over the interval. A target that goes away is stopped and its
//! series ended with staleness markers. Results are queued together once a second (one
//! queue fsync for all the targets scraped meanwhile). A config reload restarts only the
//! loops it changed.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use hale_core::metrics::Family;
use tokio::sync::{mpsc, watch};

use crate::agent::Agent;
use crate::config::AgentConfig;
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

/// Queues what the target loops report, once a second. A loop's end is marked a tick
/// after its last report: a probe's samples are stamped when they are queued, and a
/// staleness marker at the same millisecond would be a duplicate the receiver refuses.
async fn ship(agent: Arc<Agent>, mut reports: mpsc::Receiver<Report>) {
    let mut ticker = tokio::time::interval(SHIP_EVERY);
    let mut ending: Vec<String> = Vec::new();
    loop {
        ticker.tick().await;
        let mut families = Vec::new();
        for key in std::mem::take(&mut ending) {
            families.extend(agent.staleness.end(&key));
        }
        let mut reported = std::collections::HashSet::new();
        loop {
            match reports.try_recv() {
                Ok(Report::Scraped { key, families: mut scraped }) => {
                    agent.staleness.mark_vanished(&key, &mut scraped);
                    families.extend(scraped);
                    reported.insert(key);
                }
                Ok(Report::Ended { key }) if reported.contains(&key) => ending.push(key),
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

/// The jobs and probes of a config, compiled (they were checked when it was loaded).
fn compile(config: &AgentConfig) -> (Vec<Arc<Job>>, Vec<crate::blackbox::Probe>) {
    let interval = Duration::from_millis(config.scrape_interval_ms);
    let timeout = Duration::from_millis(config.timeout_ms);
    let jobs = config.scrape_configs.iter().filter_map(|j| j.compile(interval, timeout).ok()).map(Arc::new).collect();
    let probe_interval = Duration::from_millis(config.probe_interval_ms);
    let probes = config.probes.iter().filter_map(|p| p.compile(probe_interval, timeout).ok()).collect();
    (jobs, probes)
}

/// A running loop and what it runs, to tell whether a reload changed it.
struct Running<T> {
    what: T,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the agent's scrape jobs and probes until `shutdown`; a config reload starts the
/// loops whose job, target or probe changed, stops (and ends the series of) those gone,
/// and leaves the others running undisturbed.
pub(crate) async fn run(agent: Arc<Agent>, mut shutdown: watch::Receiver<bool>) {
    let mut configs = agent.watch_config();
    let (mut jobs, mut probes) = compile(&configs.borrow_and_update());
    let (reports, received) = mpsc::channel(1024);
    let shipper = tokio::spawn(ship(agent.clone(), received));
    let clients = crate::blackbox::Clients::new()
        .inspect_err(|e| tracing::error!(error = %e, "cannot build the probes' HTTP clients; probes are off"))
        .ok();
    let mut sd = FileSd::default();
    let mut kube_sd = crate::kubernetes_sd::KubernetesSd::default();
    let mut running: HashMap<String, Running<(Arc<Job>, ScrapeTarget)>> = HashMap::new();
    let mut probing: HashMap<String, Running<(crate::blackbox::ProbeConfig, Duration)>> = HashMap::new();
    loop {
        let node = agent.config().node.clone();
        let wanted: HashMap<String, crate::blackbox::Probe> =
            probes.iter().map(|p| (format!("probe:{}", p.config.name), p.clone())).collect();
        probing.retain(|key, run| {
            let keep = wanted.get(key).is_some_and(|p| (&p.config, p.timeout) == (&run.what.0, run.what.1));
            if !keep {
                run.task.abort();
                if !wanted.contains_key(key) {
                    let _ = reports.try_send(Report::Ended { key: key.clone() });
                }
            }
            keep
        });
        if let Some(clients) = &clients {
            for (key, probe) in wanted {
                probing.entry(key).or_insert_with(|| Running {
                    what: (probe.config.clone(), probe.timeout),
                    task: tokio::spawn(probe_loop(clients.clone(), probe, node.clone(), reports.clone())),
                });
            }
        }
        let file_sd: Vec<FileSdConfig> = jobs.iter().flat_map(|j| j.config.file_sd_configs.clone()).collect();
        // A panic reading the files starts discovery over.
        sd = tokio::task::spawn_blocking(move || {
            sd.refresh(&file_sd);
            sd
        })
        .await
        .unwrap_or_default();
        let kube_jobs: Vec<(String, Vec<crate::kubernetes_sd::KubernetesSdConfig>)> = jobs
            .iter()
            .filter(|j| !j.config.kubernetes_sd_configs.is_empty())
            .map(|j| (j.config.job_name.clone(), j.config.kubernetes_sd_configs.clone()))
            .collect();
        if !kube_jobs.is_empty() {
            kube_sd.refresh(&kube_jobs, &node).await;
        }
        agent.telemetry.sd_read_errors(sd.read_errors + kube_sd.errors);
        let mut wanted: HashMap<String, (Arc<Job>, ScrapeTarget)> = HashMap::new();
        for job in &jobs {
            let discovered = kube_sd.groups_of(&job.config.job_name);
            for target in job.targets(&sd.groups(&job.config.file_sd_configs), &discovered, &node) {
                wanted.entry(key(&target)).or_insert_with(|| (job.clone(), target));
            }
        }
        running.retain(|key, run| {
            let same = wanted.get(key).is_some_and(|(job, target)| {
                let (old_job, old_target) = &run.what;
                job.config == old_job.config && job.timeout == old_job.timeout && target == old_target
            });
            if !same {
                run.task.abort();
                // A changed job's target keeps its series (the same key reports again).
                if !wanted.contains_key(key) {
                    let _ = reports.try_send(Report::Ended { key: key.clone() });
                }
            }
            same
        });
        for (key, (job, target)) in wanted {
            running.entry(key).or_insert_with(|| Running {
                what: (job.clone(), target.clone()),
                task: tokio::spawn(target_loop(agent.http.clone(), job, target, reports.clone())),
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            changed = configs.changed() => if changed.is_ok() {
                (jobs, probes) = compile(&configs.borrow_and_update());
            },
            _ = shutdown.changed() => break,
        }
    }
    for run in running.into_values() {
        run.task.abort();
    }
    for run in probing.into_values() {
        run.task.abort();
    }
    shipper.abort();
}
