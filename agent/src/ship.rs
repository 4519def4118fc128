//! Delivery of queued batches: one loop per destination, reading its own cursor of a
//! disk queue. A batch is acknowledged only after the receiver answered 2xx. Connection
//! errors, timeouts, 5xx and 429 are retried with exponential backoff and full jitter, and
//! so are 401, 403, 404 and redirects: a token or URL the operator must fix, while the
//! batch itself is fine. Any other 4xx is dropped with a log line (the batch is what the
//! receiver refuses; resending cannot fix it). Every request
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

use crate::queue::{Cursor, DiskQueue, Record};
use crate::telemetry::Telemetry;
use std::time::Instant;

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
    /// Sent with every batch as it reads at the time (a token file rotates it).
    pub token: Option<Arc<hale_core::token::Token>>,
    pub agent_id: String,
    /// Turns a queued body into the request body (logs strip their envelope).
    pub unwrap: fn(&[u8]) -> &[u8],
    /// Requests in flight at once (1: each waits for the one before).
    pub in_flight: usize,
}

enum Outcome {
    Delivered,
    /// Send it again, no sooner than this (what the receiver asked in `Retry-After`: a
    /// collector whose disk is full answers 507 with one).
    Retry(String, Duration),
    Refused(String),
}

impl Outcome {
    fn retry(reason: String) -> Outcome {
        Outcome::Retry(reason, Duration::ZERO)
    }
}

async fn send(client: reqwest::Client, d: Destination, seq: u64, body: bytes::Bytes) -> Outcome {
    let encoding = content_encoding(&body);
    let mut request = client.post(&d.url).header(BATCH_HEADER, format!("{}/{seq}", d.agent_id)).body(body);
    request = match d.protocol {
        Protocol::RemoteWrite => request
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .header(VERSION_HEADER.0, VERSION_HEADER.1),
        Protocol::OtlpLogs => {
            let request = request.header("content-type", "application/x-protobuf");
            match encoding {
                Some(encoding) => request.header("content-encoding", encoding),
                None => request,
            }
        }
    };
    if let Some(token) = &d.token {
        request = request.bearer_auth(token.current());
    }
    // Each delivery is a trace of its own, continued by the receiver's ingest span.
    let span = tracing::info_span!(
        parent: None,
        "ship",
        otel.name = %format_args!("ship {}", d.reader),
        hale.batch = %format_args!("{}/{seq}", d.agent_id),
    );
    match tracing::Instrument::instrument(hale_trace::send(request), span).await {
        Err(e) => Outcome::retry(if e.is_timeout() { "timeout".into() } else { format!("connection: {e}") }),
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
            Outcome::Retry(format!("status {}", r.status()), retry_after(r.headers()).unwrap_or_default())
        }
        // A redirect or a 404 means a misconfigured URL, a 401 or 403 a token the receiver
        // does not take (yet: a rotation half done): the operator's to fix, not the data's
        // fault. Keep the batch and say so loudly.
        Ok(r) if r.status().is_redirection() || r.status() == 404 => {
            Outcome::retry(format!("status {} (fix the destination URL)", r.status()))
        }
        Ok(r) if r.status() == 401 || r.status() == 403 => Outcome::retry(format!(
            "status {}: the receiver does not take the ingest token (fix the token or its file; kept until then)",
            r.status()
        )),
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

/// A `Retry-After` in seconds (the form receivers send), at most [`BACKOFF_MAX`].
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(BACKOFF_MAX))
}

/// The `Content-Encoding` of a log batch, from its first bytes: a zstd frame or a gzip
/// member (an OTLP request starts with a field tag, never with either).
pub fn content_encoding(body: &[u8]) -> Option<&'static str> {
    match body {
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
        [0x1f, 0x8b, ..] => Some("gzip"),
        _ => None,
    }
}

/// A request sent: its batch's sequence number, the cursor past it, when it was sent.
type InFlight = (u64, Cursor, Instant, tokio::task::JoinHandle<Outcome>);

/// The request body of a queued record's body, sharing its bytes.
fn request_body(d: &Destination, body: Vec<u8>) -> bytes::Bytes {
    let whole = bytes::Bytes::from(body);
    let part = (d.unwrap)(&whole);
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    whole.slice(start..start + part.len())
}

/// Delivers `queue` to `destination` until `shutdown` fires.
///
/// Up to `in_flight` requests run at once, sent in queue order; they are acknowledged in
/// that order, each once it and all before it were answered, so the durable cursor never
/// passes a batch that was not delivered. When the oldest must be retried, the ones after
/// it are sent again too once the wait is over (a receiver stores each batch id once).
pub async fn deliver(
    queue: Arc<DiskQueue>,
    destination: Destination,
    telemetry: Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
) {
    // No redirects: a 3xx must not turn the POST into a GET that "succeeds".
    let client = match hale_client::tls::builder()
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
    let window = destination.in_flight.max(1);
    let mut backoff = BACKOFF_START;
    // Sent and not yet acknowledged, oldest first; and where reading ahead goes on.
    let mut in_flight: std::collections::VecDeque<InFlight> = Default::default();
    let mut read_ahead: Option<Cursor> = None;
    let stop_all = |in_flight: &mut std::collections::VecDeque<InFlight>| {
        for (.., send) in in_flight.drain(..) {
            send.abort();
        }
    };
    loop {
        if *shutdown.borrow() {
            stop_all(&mut in_flight);
            return;
        }
        // Fill the window.
        while in_flight.len() < window {
            let (q, reader) = (queue.clone(), destination.reader.clone());
            let peeked = tokio::task::spawn_blocking(move || match read_ahead {
                None => q.peek(&reader),
                Some(after) => q.peek_after(after),
            })
            .await;
            let Ok(peeked) = peeked else { return };
            match peeked {
                Ok(Some(Record { seq, next, body, .. })) => {
                    read_ahead = Some(next);
                    let body = request_body(&destination, body);
                    let send = tokio::spawn(send(client.clone(), destination.clone(), seq, body));
                    in_flight.push_back((seq, next, Instant::now(), send));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the queue; retrying");
                    break;
                }
            }
        }
        let Some((seq, next, started, mut sending)) = in_flight.pop_front() else {
            tokio::select! {
                _ = queue.wait_for_push(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        };
        let outcome = tokio::select! {
            o = &mut sending => o.unwrap_or_else(|e| Outcome::retry(format!("the request task failed: {e}"))),
            _ = shutdown.changed() => {
                sending.abort();
                stop_all(&mut in_flight);
                return;
            }
        };
        if destination.protocol == Protocol::OtlpLogs {
            telemetry.log_stage(crate::telemetry::LogStage::Ship, started.elapsed());
        }
        match outcome {
            Outcome::Delivered => {
                telemetry.batch_sent(&destination.url);
                backoff = BACKOFF_START;
                let (q, reader) = (queue.clone(), destination.reader.clone());
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || q.ack(&reader, next)).await {
                    tracing::error!(error = %e, "cannot record a delivery; the batch may be sent again");
                }
            }
            Outcome::Refused(reason) => {
                telemetry.batch_dropped(&destination.url, seq, &reason);
                let (q, reader) = (queue.clone(), destination.reader.clone());
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || q.ack(&reader, next)).await {
                    tracing::error!(error = %e, "cannot record a dropped batch");
                }
            }
            Outcome::Retry(reason, at_least) => {
                // The later requests are given up and sent again after the wait, in order.
                stop_all(&mut in_flight);
                read_ahead = None;
                // Full jitter: a fleet of agents does not come back in lockstep; never
                // sooner than the receiver asked.
                let jitter = Duration::from_millis(rand::rng().random_range(0..=backoff.as_millis() as u64));
                let wait = jitter.max(at_least);
                telemetry.batch_failed(&destination.url, seq, &reason, wait.as_millis() as u64);
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
            in_flight: 1,
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

    /// A token the receiver does not take (a rotation half done) is not the batch's fault.
    #[tokio::test]
    async fn a_refused_token_keeps_the_batch() {
        for status in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN, StatusCode::NOT_FOUND] {
            let d = Delivery::start(&[b"x"], usize::MAX, status).await;
            until(|| d.counted("hale_agent_batches_failed_total").is_some()).await;
            assert_eq!(d.counted("hale_agent_batches_dropped_total"), None, "{status}");
            assert!(d.queue.peek("r").expect("peek").is_some(), "{status}: the batch is kept");
        }
    }

    /// A collector whose disk is full answers 507 with `Retry-After`: the batch is kept,
    /// and not sent again sooner than it asked.
    #[tokio::test]
    async fn a_full_collector_keeps_the_batch_queued_and_is_asked_again_no_sooner_than_it_said() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("value"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(reqwest::header::RETRY_AFTER, "3600".parse().expect("value"));
        assert_eq!(retry_after(&headers), Some(BACKOFF_MAX), "never longer than the backoff's cap");
        headers.insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2026 07:28:00 GMT".parse().expect("value"));
        assert_eq!(retry_after(&headers), None, "a date: the backoff decides");
        let d = Delivery::start(&[b"x"], usize::MAX, StatusCode::INSUFFICIENT_STORAGE).await;
        until(|| d.counted("hale_agent_batches_failed_total").is_some()).await;
        assert_eq!(d.counted("hale_agent_batches_dropped_total"), None);
        assert!(d.queue.peek("r").expect("peek").is_some(), "the batch is kept");
    }

    #[tokio::test]
    async fn a_redirect_is_retried_not_followed() {
        let d = Delivery::start(&[b"x"], usize::MAX, StatusCode::TEMPORARY_REDIRECT).await;
        until(|| d.counted("hale_agent_batches_failed_total").is_some()).await;
        assert!(d.seen().is_empty());
        assert!(d.queue.peek("r").expect("peek").is_some(), "the batch is kept");
    }

    #[tokio::test]
    async fn a_window_is_acknowledged_in_order_and_a_failed_batch_resent_with_those_after_it() {
        // Batch 2 is refused with a 503 once; the others are stored when they come.
        let stored = Arc::new(Mutex::new(Vec::<String>::new()));
        let failed_once = Arc::new(Mutex::new(false));
        let s = stored.clone();
        let router = Router::new().route(
            "/write",
            post(move |headers: HeaderMap| {
                let (s, failed_once) = (s.clone(), failed_once.clone());
                async move {
                    let id = headers.get(BATCH_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    if id.ends_with("/2") && !std::mem::replace(&mut *failed_once.lock().expect("lock"), true) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    s.lock().expect("lock").push(id);
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/write", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        let dir = tempfile::tempdir().expect("tmp");
        let (queue, _) = DiskQueue::open(dir.path(), QueueConfig::metrics(), &["r"]).expect("queue");
        let queue = Arc::new(queue);
        for i in 1..=6u8 {
            queue.push(&[i]).expect("push");
        }
        let (_stop_tx, stop) = watch::channel(false);
        let telemetry = Arc::new(Telemetry::default());
        let destination = Destination { in_flight: 4, ..destination(url) };
        tokio::spawn(deliver(queue.clone(), destination, telemetry.clone(), stop));
        let all: std::collections::BTreeSet<String> = (1..=6).map(|i| format!("node-1-abc/{i}")).collect();
        until(|| {
            let got: std::collections::BTreeSet<String> = stored.lock().expect("lock").iter().cloned().collect();
            got == all && matches!(queue.peek("r"), Ok(None))
        })
        .await;
        // Whatever came after the refused batch in its window may have been sent twice;
        // nothing before it was, and every batch was acknowledged.
        let got = stored.lock().expect("lock").clone();
        assert_eq!(got.iter().filter(|id| id.ends_with("/1")).count(), 1, "{got:?}");
        assert_eq!(got.iter().filter(|id| id.ends_with("/2")).count(), 1, "{got:?}");
    }

    #[test]
    fn agent_id_is_stable() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = agent_id(dir.path(), "node-1").expect("id");
        assert!(a.starts_with("node-1-"));
        assert_eq!(agent_id(dir.path(), "node-1").expect("id"), a);
    }
}
