//! # hale-outbox
//!
//! The durable outbox of the collector's notifications and the healer's escalations: a notification is a file, fsynced, before any attempt to send it,
//! and the file goes only when a receiver has answered 2xx. Connection errors, timeouts
//! and 5xx are retried with exponential backoff (1 s doubling to 60 s, with jitter) for up
//! to a day; a 4xx means the receiver will never take it (bad signature, bad payload), so
//! it is moved to `dead/` and logged at once. After a crash or restart every file left is
//! sent again: delivery is at least once, and receivers deduplicate by group key and
//! alert fingerprints if they must.
//!
//! Each delivery is signed when it is sent (`X-Hale-Signature`), so a notification retried
//! after an hour still carries a fresh signature.
//!
//! One file per notification and receiver. Each receiver gets its notifications strictly
//! in the order they were stored: a retry holds back the ones behind it, so a "resolved"
//! never overtakes the "firing" it follows. Receivers do not wait for each other, and
//! each attempt may take at most 5 s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Give up on a notification after this long.
const MAX_AGE_MS: i64 = 24 * 3600 * 1000;
/// Each attempt may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// One stored notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub url: String,
    pub created_ms: i64,
    pub body: serde_json::Value,
}

#[derive(Default)]
pub struct OutboxStats {
    pub sent: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub dropped: AtomicU64,
    pub pending: AtomicU64,
    /// Time from a notification being stored to its delivery, last one, in µs.
    pub last_delivery_us: AtomicU64,
}

pub struct Outbox {
    dir: PathBuf,
    /// `User-Agent` of every delivery (`hale-collector/0.1.0`).
    user_agent: String,
    seq: AtomicU64,
    wake: tokio::sync::Notify,
    pub stats: OutboxStats,
}

impl Outbox {
    /// Opens (creating) the outbox in `dir`; deliveries say they come from `user_agent`.
    pub fn open(dir: &Path, user_agent: &str) -> std::io::Result<Outbox> {
        std::fs::create_dir_all(dir.join("dead"))?;
        // Leftover temporary files are half-written notifications that were never stored.
        let mut max = 0;
        // Numbers in dead/ count too: a new notification must never reuse one.
        let entries = std::fs::read_dir(dir)?.flatten().chain(std::fs::read_dir(dir.join("dead"))?.flatten());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            } else if let Some(n) = name.strip_suffix(".json").and_then(|n| n.parse::<u64>().ok()) {
                max = max.max(n);
            }
        }
        let outbox = Outbox {
            dir: dir.to_path_buf(),
            user_agent: user_agent.to_string(),
            seq: AtomicU64::new(max + 1),
            wake: Default::default(),
            stats: Default::default(),
        };
        outbox.stats.pending.store(outbox.pending().len() as u64, Ordering::Relaxed);
        Ok(outbox)
    }

    /// Stores a notification durably and wakes the sender.
    pub fn put(&self, entry: &Entry) -> std::io::Result<()> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let bytes = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        hale_fs::write_durable(&self.dir.join(format!("{seq:020}.json")), &bytes)?;
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(())
    }

    /// Stored notifications, oldest first.
    fn pending(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    fn to_dead(&self, path: &Path, why: &str) {
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        if let Err(e) = std::fs::rename(path, self.dir.join("dead").join(name)) {
            tracing::error!(error = %e, path = %path.display(), "could not move a dead notification aside");
            let _ = std::fs::remove_file(path);
        }
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        self.stats.pending.fetch_sub(1, Ordering::Relaxed);
        tracing::error!(path = %path.display(), reason = why, "notification given up; it is kept in the outbox's dead/ folder");
    }

    /// Stored notifications by receiver URL, oldest first; unreadable files go to `dead/`.
    fn pending_by_url(&self) -> std::collections::BTreeMap<String, Vec<(PathBuf, Entry)>> {
        let mut by_url: std::collections::BTreeMap<String, Vec<(PathBuf, Entry)>> = Default::default();
        for path in self.pending() {
            let read = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Entry>(&b).map_err(|e| e.to_string()));
            match read {
                Ok(entry) => by_url.entry(entry.url.clone()).or_default().push((path, entry)),
                // Gone meanwhile: delivered by an earlier round.
                Err(_) if !path.exists() => {}
                Err(e) => self.to_dead(&path, &format!("unreadable: {e}")),
            }
        }
        by_url
    }

    /// Sends what is stored until the process ends. Each receiver gets its notifications
    /// strictly in the order they were stored: a retry holds back the ones after it, so a
    /// "resolved" never overtakes the "firing" it follows. Receivers do not wait for each
    /// other.
    pub async fn run(self: Arc<Self>, client: reqwest::Client, secret: Option<Arc<[u8]>>) {
        // url → (failed rounds in a row, not before)
        let mut retry: HashMap<String, (u32, Instant)> = HashMap::new();
        loop {
            let now = Instant::now();
            let due: Vec<(String, Vec<(PathBuf, Entry)>)> = self
                .pending_by_url()
                .into_iter()
                .filter(|(url, _)| retry.get(url).is_none_or(|(_, at)| *at <= now))
                .collect();
            let rounds = due.into_iter().map(|(url, entries)| {
                let (client, secret, outbox) = (client.clone(), secret.clone(), self.clone());
                async move {
                    for (path, entry) in entries {
                        match outbox.attempt(&client, secret.as_deref(), &path, &entry).await {
                            Attempt::Delivered => {}
                            Attempt::Dead(why) => outbox.to_dead(&path, &why),
                            Attempt::Retry(why) => return (url, Some((path, why))),
                        }
                    }
                    (url, None)
                }
            });
            for (url, failed) in futures::future::join_all(rounds).await {
                let Some((path, why)) = failed else {
                    retry.remove(&url);
                    continue;
                };
                self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                let (n, at) = retry.entry(url).or_insert((0, now));
                *n += 1;
                let backoff = Duration::from_secs(1 << (*n - 1).min(6)).min(Duration::from_secs(60));
                let jitter = rand::random_range(0.8..1.2);
                *at = Instant::now() + backoff.mul_f64(jitter);
                tracing::warn!(path = %path.display(), attempt = *n, retry_in_ms = at.saturating_duration_since(Instant::now()).as_millis() as u64, reason = %why, "notification not delivered; will retry");
            }
            let next = retry.values().map(|(_, at)| *at).min();
            let sleep = next.map_or(Duration::from_secs(3600), |at| at.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    async fn attempt(&self, client: &reqwest::Client, secret: Option<&[u8]>, path: &Path, entry: &Entry) -> Attempt {
        let now_ms = hale_core::time::now_ms();
        if now_ms - entry.created_ms > MAX_AGE_MS {
            return Attempt::Dead("undelivered for a day".into());
        }
        let body = match serde_json::to_vec(&entry.body) {
            Ok(b) => b,
            Err(e) => return Attempt::Dead(e.to_string()),
        };
        let mut request = client
            .post(&entry.url)
            .timeout(ATTEMPT_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::USER_AGENT, &self.user_agent);
        if let Some(secret) = secret {
            let t = (now_ms / 1000).max(0) as u64;
            request = request.header(hale_core::webhook::SIGNATURE_HEADER, hale_core::webhook::sign(secret, t, &body));
        }
        match request.body(body).send().await {
            Ok(r) if r.status().is_success() => {
                if std::fs::remove_file(path).is_ok() {
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    self.stats.pending.fetch_sub(1, Ordering::Relaxed);
                    let waited = (hale_core::time::now_ms() - entry.created_ms).max(0) as u64;
                    self.stats.last_delivery_us.store(waited * 1000, Ordering::Relaxed);
                    if let Ok(dir) = std::fs::File::open(&self.dir) {
                        let _ = dir.sync_all();
                    }
                }
                Attempt::Delivered
            }
            Ok(r)
                if r.status().is_client_error()
                    && r.status() != reqwest::StatusCode::TOO_MANY_REQUESTS
                    && r.status() != reqwest::StatusCode::REQUEST_TIMEOUT =>
            {
                let status = r.status();
                let text: String = r.text().await.unwrap_or_default().chars().take(200).collect();
                Attempt::Dead(format!("{} answered {status}: {text}", redact_url(&entry.url)))
            }
            Ok(r) => Attempt::Retry(format!("{} answered {}", redact_url(&entry.url), r.status())),
            Err(e) => Attempt::Retry(format!("{}: {}", redact_url(&entry.url), e.without_url())),
        }
    }
}

enum Attempt {
    Delivered,
    Retry(String),
    Dead(String),
}

/// A URL as logs may show it: scheme, host, port and path; no user, password or query,
/// which is where tokens hide.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path()
        ),
        Err(_) => "<unparsable url>".into(),
    }
}
