//! Delivery of queued batches: one loop per destination, reading its own cursor of a
//! disk queue. A batch is acknowledged only after the receiver answered 2xx. Connection
//! errors, timeouts, 5xx and 429 are retried with exponential backoff and full jitter;
//! any other 4xx is dropped with a log line (resending cannot fix it). Every request
//! carries `X-Hale-Batch: <agent-id>/<seq>`, stable across retries and restarts, so the
//! receiver can drop a batch it already stored.
//!
//! Backoff starts at 0.1 s and doubles to 30 s; each wait is drawn at random below it
//! (full jitter), so agents that lost the collector together do not return together. The
//! agent id ([`agent_id`]) is `<node>-<random>`, made once and kept in the data dir, so a
//! new queue's sequence numbers never collide with an old one's; each queue sends under
//! its own id (`<id>.metrics`, `<id>.logs`), since each numbers its own batches.

use std::sync::Arc;
use std::time::Duration;

use hale_core::remote_write::{BATCH_HEADER, VERSION_HEADER};
use rand::Rng;
use tokio::sync::watch;

use crate::queue::DiskQueue;
use crate::telemetry::Telemetry;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a destination speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Prometheus remote_write 1.0: snappy-compressed protobuf.
    RemoteWrite,
    /// OTLP/HTTP logs: protobuf.
    OtlpLogs,
}

#[derive(Clone)]
pub struct Destination {
    pub url: String,
    /// Name of this destination's cursor in the queue.
    pub reader: String,
    pub protocol: Protocol,
    pub token: Option<String>,
    pub agent_id: String,
    /// Turns a queued body into the request body (logs strip their envelope).
    pub unwrap: fn(&[u8]) -> &[u8],
}

enum Outcome {
    Delivered,
    Retry(String),
    Refused(String),
}

async fn send(client: &reqwest::Client, d: &Destination, seq: u64, body: &[u8]) -> Outcome {
    let mut request = client.post(&d.url).header(BATCH_HEADER, format!("{}/{seq}", d.agent_id)).body(body.to_vec());
    request = match d.protocol {
        Protocol::RemoteWrite => request
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .header(VERSION_HEADER.0, VERSION_HEADER.1),
        Protocol::OtlpLogs => request.header("content-type", "application/x-protobuf"),
    };
    if let Some(token) = &d.token {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Err(e) => Outcome::Retry(if e.is_timeout() { "timeout".into() } else { format!("connection: {e}") }),
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
            Outcome::Retry(format!("status {}", r.status()))
        }
        // A redirect means a misconfigured URL: keep the batch and say so loudly.
        Ok(r) if r.status().is_redirection() => {
            Outcome::Retry(format!("status {} (fix the destination URL)", r.status()))
        }
        Ok(r) => {
            let status = r.status();
            // Only the start of the explanation is kept, however long the body.
            let mut text = Vec::new();
            let mut r = r;
            while text.len() < 300
                && let Ok(Some(chunk)) = r.chunk().await
            {
                text.extend_from_slice(&chunk);
            }
            let text = String::from_utf8_lossy(&text[..text.len().min(300)]).into_owned();
            Outcome::Refused(format!("status {status}: {text}"))
        }
    }
}

/// Delivers `queue` to `destination` until `shutdown` fires.
pub async fn deliver(
    queue: Arc<DiskQueue>,
    destination: Destination,
    telemetry: Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
) {
    // No redirects: a 3xx must not turn the POST into a GET that "succeeds".
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client; shipping is off");
            return;
        }
    };
    let mut backoff = BACKOFF_START;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let (q, reader) = (queue.clone(), destination.reader.clone());
        let peeked = tokio::task::spawn_blocking(move || q.peek(&reader)).await;
        let Ok(peeked) = peeked else { return };
        let record = match peeked {
            Ok(Some(record)) => record,
            Ok(None) => {
                tokio::select! {
                    _ = queue.wait_for_push(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the queue; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
        };
        let body = (destination.unwrap)(&record.body);
        let started = std::time::Instant::now();
        let outcome = tokio::select! {
            o = send(&client, &destination, record.seq, body) => o,
            _ = shutdown.changed() => return,
        };
        if destination.protocol == Protocol::OtlpLogs {
            telemetry.log_stage(crate::telemetry::LogStage::Ship, started.elapsed());
        }
        match outcome {
            Outcome::Delivered => {
                telemetry.batch_sent(&destination.url);
                backoff = BACKOFF_START;
                let (q, reader, next) = (queue.clone(), destination.reader.clone(), record.next);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || q.ack(&reader, next)).await {
                    tracing::error!(error = %e, "cannot record a delivery; the batch may be sent again");
                }
            }
            Outcome::Refused(reason) => {
                telemetry.batch_dropped(&destination.url, record.seq, &reason);
                let (q, reader, next) = (queue.clone(), destination.reader.clone(), record.next);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || q.ack(&reader, next)).await {
                    tracing::error!(error = %e, "cannot record a dropped batch");
                }
            }
            Outcome::Retry(reason) => {
                // Full jitter: a fleet of agents does not come back in lockstep.
                let wait = Duration::from_millis(rand::rng().random_range(0..=backoff.as_millis() as u64));
                telemetry.batch_failed(&destination.url, record.seq, &reason, wait.as_millis() as u64);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// The identity carried in `X-Hale-Batch`: `<node>-<random>`, made once and kept in the
/// data dir, so sequence numbers of a new queue never collide with an old one's.
pub fn agent_id(data_dir: &std::path::Path, node: &str) -> std::io::Result<String> {
    let path = data_dir.join("agent-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let id = format!("{node}-{:016x}", rand::rng().random::<u64>());
    // Written atomically and durably: an id that changed after a crash would make resent
    // batches look new to the receiver.
    hale_fs::write_durable(&path, id.as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueConfig;
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use std::sync::Mutex;

    /// A receiver that fails the first `fail` requests with `status`, then records batch ids.
    async fn receiver(fail: usize, status: StatusCode) -> (String, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(Mutex::new(0usize));
        let s = seen.clone();
        let router = Router::new().route(
            "/write",
            post(move |headers: HeaderMap| {
                let s = s.clone();
                let calls = calls.clone();
                async move {
                    let mut n = calls.lock().expect("lock");
                    *n += 1;
                    if *n <= fail {
                        return status;
                    }
                    let id = headers.get(BATCH_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    s.lock().expect("lock").push(id);
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/write", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        (url, seen)
    }

    fn destination(url: String) -> Destination {
        Destination {
            url,
            reader: "r".into(),
            protocol: Protocol::RemoteWrite,
            token: None,
            agent_id: "node-1-abc".into(),
            unwrap: |b| b,
        }
    }

    async fn until(mut f: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "not reached in 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A delivery loop from a queue holding `batches` to a receiver that fails the first
    /// `fail` requests with `status`.
    struct Delivery {
        _dir: tempfile::TempDir,
        queue: Arc<DiskQueue>,
        seen: Arc<Mutex<Vec<String>>>,
        telemetry: Arc<Telemetry>,
        _stop: watch::Sender<bool>,
    }

    impl Delivery {
        async fn start(batches: &[&[u8]], fail: usize, status: StatusCode) -> Self {
            let dir = tempfile::tempdir().expect("tmp");
            let (queue, _) = DiskQueue::open(dir.path(), QueueConfig::metrics(), &["r"]).expect("queue");
            let queue = Arc::new(queue);
            for batch in batches {
                queue.push(batch).expect("push");
            }
            let (url, seen) = receiver(fail, status).await;
            let telemetry = Arc::new(Telemetry::default());
            let (stop_tx, stop) = watch::channel(false);
            tokio::spawn(deliver(queue.clone(), destination(url), telemetry.clone(), stop));
            Delivery { _dir: dir, queue, seen, telemetry, _stop: stop_tx }
        }

        fn seen(&self) -> Vec<String> {
            self.seen.lock().expect("lock").clone()
        }

        /// The value of the first series of the self-metric `name`, if it has one.
        fn counted(&self, name: &str) -> Option<f64> {
            let families = self.telemetry.families();
            families.into_iter().find(|f| f.name == name)?.samples.first().map(|s| s.value)
        }
    }

    #[tokio::test]
    async fn retries_5xx_then_delivers_in_order_with_batch_ids() {
        let d = Delivery::start(&[&[0], &[1], &[2]], 2, StatusCode::SERVICE_UNAVAILABLE).await;
        until(|| d.seen().len() == 3).await;
        assert_eq!(d.seen(), ["node-1-abc/1", "node-1-abc/2", "node-1-abc/3"]);
        assert_eq!(d.counted("hale_agent_batches_failed_total"), Some(2.0));
    }

    #[tokio::test]
    async fn a_4xx_is_dropped_not_retried() {
        let d = Delivery::start(&[b"bad", b"good"], 1, StatusCode::BAD_REQUEST).await;
        until(|| d.seen().len() == 1).await;
        assert_eq!(d.seen(), ["node-1-abc/2"]);
        assert_eq!(d.counted("hale_agent_batches_dropped_total"), Some(1.0));
    }

    #[tokio::test]
    async fn a_redirect_is_retried_not_followed() {
        let d = Delivery::start(&[b"x"], usize::MAX, StatusCode::TEMPORARY_REDIRECT).await;
        until(|| d.counted("hale_agent_batches_failed_total").is_some()).await;
        assert!(d.seen().is_empty());
        assert!(d.queue.peek("r").expect("peek").is_some(), "the batch is kept");
    }

    #[test]
    fn agent_id_is_stable() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = agent_id(dir.path(), "node-1").expect("id");
        assert!(a.starts_with("node-1-"));
        assert_eq!(agent_id(dir.path(), "node-1").expect("id"), a);
    }
}
