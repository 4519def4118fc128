//! Forwarding what the collector stores to remote_write backends (VictoriaMetrics, Mimir,
//! Thanos Receive, Prometheus): one loop per endpoint reads the collector's own WAL from
//! a cursor of its own, so what was acknowledged to an agent reaches the backend across
//! the collector's restarts and the backend's outages.
//!
//! - The cursor (segment, offset) is fsynced after each batch the backend accepted; the
//!   WAL segments an endpoint has not read yet are kept past checkpoints for it.
//! - Backlog bound: an endpoint may hold back at most `max_backlog_bytes` of WAL (default
//!   1 GiB). Past that its oldest unread segments are given up — counted in
//!   `hale_collector_forward_dropped_bytes_total` and logged — so a backend gone for good
//!   cannot fill the collector's disk.
//! - Delivery: 2xx moves the cursor; 429, 5xx and no answer are retried with backoff
//!   (0.1 s doubling to 30 s, full jitter), and so are 401, 403 and 404 (a token or URL to
//!   fix: the batch is fine); any other 4xx is the batch's fault: dropped and counted.
//! - Idempotence: every request carries `X-Hale-Batch: <collector id>/<position>`, the
//!   position growing with the WAL, so a receiver that understands it (another Hale
//!   collector) drops a batch it already stored when an acknowledgement was lost. Others
//!   store the same samples again, which remote_write receivers treat as duplicates.
//! - Series are named through the head: WAL references survive restarts (see
//!   `Head::restore_series`); samples of a series retention removed before they were
//!   forwarded are dropped and counted (`reason="removed"`).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use hale_core::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use serde::{Deserialize, Serialize};

use crate::store::Store;
use crate::store::wal::{self, Record};

/// One backend, as collector.toml's `[[forward]]` or `--forward URL` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The remote_write URL (`http://victoria:8428/api/v1/write`).
    pub url: String,
    /// Its name in metrics and its cursor file (default: the URL's host and port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A bearer token from a file (read at each request: rotation needs no restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<PathBuf>,
    /// Extra headers (a tenant: `X-Scope-OrgID` for Mimir or Cortex).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl Endpoint {
    pub fn name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let host = self.url.split("://").nth(1).unwrap_or(&self.url).split('/').next().unwrap_or("");
        host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
    }
}

/// Default of how much WAL one endpoint may hold back.
pub const DEFAULT_MAX_BACKLOG: u64 = 1 << 30;
/// Samples per request.
const BATCH_SAMPLES: usize = 10_000;
/// Bytes of WAL read at a time.
const READ_CHUNK: usize = 4 << 20;
const FIRST_WAIT: Duration = Duration::from_millis(100);
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often an endpoint that has read everything looks for more.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Where an endpoint has read to: the next byte of WAL it has not forwarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

impl Position {
    /// The position as one growing number, for `X-Hale-Batch`.
    fn seq(self) -> u64 {
        (self.segment << 36) | self.offset.min((1 << 36) - 1)
    }
}

/// One endpoint's counters, read by `/metrics`.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub samples: AtomicU64,
    pub requests_failed: AtomicU64,
    pub dropped_refused: AtomicU64,
    pub dropped_removed: AtomicU64,
    pub dropped_bytes: AtomicU64,
    /// WAL bytes not yet forwarded.
    pub backlog_bytes: AtomicU64,
    /// Newest sample timestamp forwarded (ms), for the lag.
    pub newest_forwarded_ms: AtomicI64,
}

/// Every endpoint's stats, for `/metrics`.
#[derive(Debug, Default)]
pub struct Forwarding {
    pub endpoints: std::sync::Mutex<BTreeMap<String, Arc<EndpointStats>>>,
}

fn cursor_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.cursor"))
}

fn read_cursor(path: &Path) -> Option<Position> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// This collector's id for `X-Hale-Batch`, made once and kept in `dir`.
fn collector_id(dir: &Path) -> std::io::Result<String> {
    let path = dir.join("id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let id = format!("collector-{}", hale_core::auth::random_token().chars().take(12).collect::<String>());
    hale_fs::write_durable(&path, id.as_bytes())?;
    Ok(id)
}

/// What one read of the WAL gave: samples by reference, and where it ended.
struct WalRead {
    samples: Vec<(u32, i64, f64)>,
    end: Position,
}

/// Reads whole records of `segment` from `offset` until `want` samples or the end of what
/// is written; a record cut short (being written) ends the read before it. `Err` when the
/// segment is gone; `damaged` when a record is bad in the middle.
fn read_segment(wal_dir: &Path, at: Position, want: usize) -> std::io::Result<(WalRead, bool)> {
    let path = wal_dir.join(format!("{:08}.wal", at.segment));
    let mut file = std::fs::File::open(&path)?;
    let len = file.metadata()?.len();
    let mut samples = Vec::new();
    let mut pos = at.offset.min(len);
    file.seek(SeekFrom::Start(pos))?;
    let mut buffer = Vec::new();
    let mut damaged = false;
    while samples.len() < want && pos < len {
        buffer.clear();
        let take = (len - pos).min(READ_CHUNK as u64) as usize;
        buffer.resize(take, 0);
        file.read_exact(&mut buffer)?;
        let mut used = 0usize;
        while used + 8 <= buffer.len() && samples.len() < want {
            let frame_len = u32::from_le_bytes(buffer[used..used + 4].try_into().unwrap_or_default()) as usize;
            let crc = u32::from_le_bytes(buffer[used + 4..used + 8].try_into().unwrap_or_default());
            let end = used + 8 + frame_len;
            if end > buffer.len() {
                if frame_len + 8 > READ_CHUNK && used == 0 {
                    // One record larger than a read: read it whole.
                    let mut big = vec![0u8; frame_len + 8];
                    file.seek(SeekFrom::Start(pos))?;
                    if file.read_exact(&mut big).is_err() {
                        break;
                    }
                    buffer = big;
                    continue;
                }
                break;
            }
            let payload = &buffer[used + 8..end];
            if crc32fast::hash(payload) != crc {
                damaged = true;
                break;
            }
            match Record::decode(payload) {
                Some(Record::Samples(s)) => samples.extend(s),
                Some(_) => {}
                None => {
                    damaged = true;
                    break;
                }
            }
            used = end;
        }
        if used == 0 {
            break;
        }
        pos += used as u64;
        file.seek(SeekFrom::Start(pos))?;
        if damaged {
            break;
        }
    }
    Ok((WalRead { samples, end: Position { segment: at.segment, offset: pos } }, damaged))
}

/// The request for `samples`, each series named through the head; the count of samples
/// whose series is gone.
fn request(store: &Store, samples: &[(u32, i64, f64)]) -> (WriteRequest, u64, i64) {
    let mut by_ref: HashMap<u32, Vec<Sample>> = HashMap::new();
    let mut newest = i64::MIN;
    for (r, t, v) in samples {
        by_ref.entry(*r).or_default().push(Sample { value: *v, timestamp: *t });
        newest = newest.max(*t);
    }
    let mut removed = 0u64;
    let mut timeseries = Vec::with_capacity(by_ref.len());
    for (r, mut points) in by_ref {
        let Some(labels) = store.labels_of(r) else {
            removed += points.len() as u64;
            continue;
        };
        points.sort_by_key(|s| s.timestamp);
        timeseries.push(TimeSeries::new(
            labels.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect(),
            points,
        ));
    }
    (WriteRequest { timeseries, metadata: Vec::new() }, removed, newest)
}

/// What a backend's answer means for the batch.
enum Outcome {
    Stored,
    Retry(String),
    Refused(String),
}

async fn send(client: &reqwest::Client, endpoint: &Endpoint, id: &str, at: Position, body: Vec<u8>) -> Outcome {
    let mut request = client
        .post(&endpoint.url)
        .timeout(Duration::from_secs(30))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .header("x-hale-batch", format!("{id}/{}", at.seq()))
        .body(body);
    for (name, value) in &endpoint.headers {
        request = request.header(name, value);
    }
    if let Some(path) = &endpoint.bearer_token_file {
        match std::fs::read_to_string(path) {
            Ok(token) => request = request.bearer_auth(token.trim()),
            Err(e) => return Outcome::Retry(format!("reading the token file {}: {e}", path.display())),
        }
    }
    match request.send().await {
        Err(e) => Outcome::Retry(format!("{}", e.without_url())),
        Ok(r) if r.status().is_success() => Outcome::Stored,
        Ok(r) => {
            let status = r.status().as_u16();
            let text: String = r.text().await.unwrap_or_default().chars().take(300).collect();
            if status == 429 || status >= 500 || matches!(status, 401 | 403 | 404) || (300..400).contains(&status) {
                Outcome::Retry(format!("status {status}: {text}"))
            } else {
                Outcome::Refused(format!("status {status}: {text}"))
            }
        }
    }
}

/// The WAL bytes from `at` to the end of the newest segment.
fn backlog(wal_dir: &Path, at: Position) -> u64 {
    let segments = wal::segments(wal_dir).unwrap_or_default();
    segments
        .iter()
        .filter(|s| **s >= at.segment)
        .map(|s| {
            let len = std::fs::metadata(wal_dir.join(format!("{s:08}.wal"))).map(|m| m.len()).unwrap_or(0);
            if *s == at.segment { len.saturating_sub(at.offset) } else { len }
        })
        .sum()
}

/// Forwards to `endpoint` until the task is dropped.
pub async fn run(
    collector: Arc<crate::state::Collector>,
    endpoint: Endpoint,
    data_dir: PathBuf,
    max_backlog: u64,
    client: reqwest::Client,
) {
    let name = endpoint.name();
    let dir = data_dir.join("forward");
    let store = &collector.store;
    let wal_dir = store.wal().dir().to_path_buf();
    let stats = Arc::new(EndpointStats::default());
    collector.forwarding.endpoints.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), stats.clone());
    let keep = |at: Position| store.keep_wal_from(&format!("forward:{name}"), at.segment);
    let setup = hale_fs::create_private_dir(&dir).and_then(|()| collector_id(&dir));
    let id = match setup {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(endpoint = %name, error = %e, dir = %dir.display(), "cannot keep a forwarding cursor; not forwarding");
            return;
        }
    };
    let cursor_file = cursor_path(&dir, &name);
    // A new endpoint starts at the oldest segment kept: everything since the last checkpoint.
    let mut at = read_cursor(&cursor_file).unwrap_or_else(|| Position {
        segment: wal::segments(&wal_dir).ok().and_then(|s| s.first().copied()).unwrap_or(1),
        offset: 0,
    });
    keep(at);
    tracing::info!(endpoint = %name, url = %endpoint.url, segment = at.segment, offset = at.offset, "forwarding");
    let mut wait = FIRST_WAIT;
    loop {
        // The backlog bound: past it, the oldest unread segments are given up.
        let behind = backlog(&wal_dir, at);
        stats.backlog_bytes.store(behind, Ordering::Relaxed);
        if behind > max_backlog {
            let segments = wal::segments(&wal_dir).unwrap_or_default();
            if let Some(next) = segments.iter().copied().find(|s| *s > at.segment) {
                let skipped =
                    backlog(&wal_dir, at).saturating_sub(backlog(&wal_dir, Position { segment: next, offset: 0 }));
                stats.dropped_bytes.fetch_add(skipped, Ordering::Relaxed);
                tracing::error!(endpoint = %name, segment = at.segment, bytes = skipped, max_backlog, "the backend is too far behind: giving up the oldest WAL segment it has not read");
                at = Position { segment: next, offset: 0 };
                keep(at);
                continue;
            }
        }
        let read = {
            let wal_dir = wal_dir.clone();
            tokio::task::spawn_blocking(move || read_segment(&wal_dir, at, BATCH_SAMPLES)).await
        };
        let (read, damaged) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                // Gone (folded into a checkpoint before this endpoint was configured, or
                // given up): on to the next one that exists.
                match wal::segments(&wal_dir).unwrap_or_default().into_iter().find(|s| *s > at.segment) {
                    Some(next) => {
                        at = Position { segment: next, offset: 0 };
                        keep(at);
                    }
                    None => tokio::time::sleep(IDLE_POLL).await,
                }
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!(endpoint = %name, error = %e, "reading the WAL to forward it");
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            Err(_) => continue,
        };
        if read.samples.is_empty() {
            // Read to the end of this segment: on to the next, once there is one.
            let next = wal::segments(&wal_dir).unwrap_or_default().into_iter().find(|s| *s > at.segment);
            match next {
                Some(next) if damaged || read.end.offset >= segment_len(&wal_dir, at.segment) => {
                    if damaged {
                        tracing::error!(endpoint = %name, segment = at.segment, "a damaged WAL record: the rest of the segment is skipped");
                    }
                    at = Position { segment: next, offset: 0 };
                    keep(at);
                    save_cursor(&cursor_file, at).await;
                }
                _ => {
                    if read.end != at {
                        at = read.end;
                    }
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
            continue;
        }
        let (request, removed, newest) = {
            let collector = collector.clone();
            let samples = read.samples;
            tokio::task::spawn_blocking(move || request(&collector.store, &samples)).await.unwrap_or_default()
        };
        if removed > 0 {
            stats.dropped_removed.fetch_add(removed, Ordering::Relaxed);
        }
        let count: u64 = request.timeseries.iter().map(|t| t.samples.len() as u64).sum();
        let body = hale_core::remote_write::encode(&request);
        let mut given_up = false;
        loop {
            match send(&client, &endpoint, &id, read.end, body.clone()).await {
                Outcome::Stored => {
                    stats.samples.fetch_add(count, Ordering::Relaxed);
                    stats.newest_forwarded_ms.fetch_max(newest, Ordering::Relaxed);
                    wait = FIRST_WAIT;
                    break;
                }
                Outcome::Refused(why) => {
                    stats.dropped_refused.fetch_add(count, Ordering::Relaxed);
                    tracing::error!(endpoint = %name, samples = count, reason = %why, "the backend refused a batch; dropped");
                    break;
                }
                Outcome::Retry(why) => {
                    stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                    let jittered = wait.mul_f64(rand::random::<f64>());
                    tracing::warn!(endpoint = %name, reason = %why, retry_in_ms = jittered.as_millis() as u64, "forwarding failed; will retry");
                    tokio::time::sleep(jittered).await;
                    wait = (wait * 2).min(MAX_WAIT);
                    // Still retrying past the backlog bound: the bound decides (above).
                    let behind = backlog(&wal_dir, at);
                    stats.backlog_bytes.store(behind, Ordering::Relaxed);
                    if behind > max_backlog {
                        given_up = true;
                        break;
                    }
                }
            }
        }
        if given_up {
            continue;
        }
        at = read.end;
        save_cursor(&cursor_file, at).await;
        if damaged {
            tracing::error!(endpoint = %name, segment = at.segment, "a damaged WAL record: the rest of the segment is skipped");
            if let Some(next) = wal::segments(&wal_dir).unwrap_or_default().into_iter().find(|s| *s > at.segment) {
                at = Position { segment: next, offset: 0 };
            }
        }
        keep(at);
    }
}

fn segment_len(wal_dir: &Path, segment: u64) -> u64 {
    std::fs::metadata(wal_dir.join(format!("{segment:08}.wal"))).map(|m| m.len()).unwrap_or(0)
}

/// Writes the cursor durably; a failure is logged (the endpoint then resends from the
/// last saved cursor after a restart, which receivers take as duplicates).
async fn save_cursor(path: &Path, at: Position) {
    let path = path.to_path_buf();
    let saved = tokio::task::spawn_blocking(move || {
        let text = serde_json::to_vec(&at).unwrap_or_default();
        hale_fs::write_durable(&path, &text).map_err(|e| format!("{}: {e}", path.display()))
    })
    .await;
    if let Ok(Err(e)) = saved {
        tracing::error!(error = %e, "saving a forwarding cursor");
    }
}
