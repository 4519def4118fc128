//! How every Hale server serves HTTP (agent, collector, healer, shop), and its own
//! metrics on `/metrics` ([`metrics`]).
//!
//! `axum::serve` waits forever for a client's headers and accepts connections without
//! bound, so a few thousand sockets that never finish a request hold a server's memory
//! and file descriptors for good. [`serve`] bounds all three:
//!
//! - **header-read timeout**: a new connection's first byte, and each request's headers,
//!   must arrive within [`Limits::header_read_timeout`] (10 s by default). Hyper starts
//!   that clock again for each request of a keep-alive connection, so it is also the idle
//!   timeout between requests.
//! - **body deadline**: a request's body must arrive whole within
//!   [`Limits::body_timeout`] (30 s) of its headers; a client trickling a byte at a time
//!   is cut off (a per-read timeout would not stop that).
//! - **connection caps**: at most [`Limits::max_connections`] (1,024) connections are
//!   served at once, and [`Limits::max_connections_per_ip`] (256) from one address; past
//!   the first the server stops accepting (new clients wait in the kernel's backlog) until
//!   one closes, past the second the new connection is closed at once.
//! - **graceful drain**: on shutdown the listener closes, open connections finish their
//!   requests in flight, and whatever is still open after [`Limits::drain_timeout`]
//!   (10 s) is dropped.
//!
//! HTTP/1.1 only: every client Hale has (agents, Prometheus' remote_write, Grafana,
//! curl) speaks it, and an idle HTTP/2 connection has no clock hyper enforces.
//!
//! Each request carries the peer's address as `axum::extract::ConnectInfo<SocketAddr>`.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
//! hale_serve::serve(listener, app, hale_serve::Limits::default(), std::future::pending()).await
//! # }
//! ```

pub mod metrics;
pub mod process;
pub mod tls;

/// What to do about a listener that could not bind, by why: `who` is what else might
/// hold the port (`another agent`).
pub fn listen_hint(error: &std::io::Error, who: &str) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!("is {who} using it? Stop it or listen on another port"),
        std::io::ErrorKind::AddrNotAvailable => {
            "that address is not one of this host's: listen on one of its own (`ip -brief addr`)".into()
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: pick a higher port".into()
        }
        _ => "check the address".into(),
    }
}

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// The bounds [`serve`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send a request's headers, and the longest a keep-alive
    /// connection may sit idle between requests.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's whole body, from its headers.
    pub body_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one IP address.
    pub max_connections_per_ip: usize,
    /// How long a shutdown waits for requests in flight.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_ip: 256,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// A request body that fails once its deadline passes, however the bytes trickle in.
struct DeadlineBody {
    body: hyper::body::Incoming,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl hyper::body::Body for DeadlineBody {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.deadline.as_mut().poll(cx).is_ready() {
            let message = format!("the request body did not arrive within {} s", this.timeout.as_secs_f64());
            return std::task::Poll::Ready(Some(Err(message.into())));
        }
        std::pin::Pin::new(&mut this.body).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Open connections per peer address; an entry leaves with its last connection.
#[derive(Default)]
struct PerIp(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection counted against its address until dropped.
struct IpSlot(Arc<PerIp>, std::net::IpAddr);

impl PerIp {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then drains.
/// Errors accepting one connection (a client that hung up, too many open files) are
/// logged and do not stop the server.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_secure(listener, app, limits, Security::default(), shutdown).await
}

/// How a server protects what crosses the wire.
#[derive(Clone, Default)]
pub struct Security {
    /// Serve TLS (and, with a client CA, mutual TLS).
    pub tls: Option<Arc<tls::Tls>>,
    /// Serve writes over plain HTTP beyond loopback anyway (tokens in clear).
    pub insecure_plaintext: bool,
}

impl Security {
    /// How this server is reached at `addr`: `https://addr` when it serves TLS.
    pub fn base_url(&self, addr: std::net::SocketAddr) -> String {
        format!("{}://{addr}", if self.tls.is_some() { "https" } else { "http" })
    }
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.as_ref().map(|t| t.files().clone()))
            .field("insecure_plaintext", &self.insecure_plaintext)
            .finish()
    }
}

/// How a server's requests travel, from its address and [`Security`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tls,
    /// Plain HTTP on a loopback address: nothing leaves the host.
    Loopback,
    /// Plain HTTP beyond loopback, because the operator said so.
    InsecurePlaintext,
    /// Plain HTTP beyond loopback: reads are served, writes and actions refused (403).
    ReadOnly,
}

impl Transport {
    pub fn of(listen: SocketAddr, security: &Security) -> Transport {
        match (security.tls.is_some(), listen.ip().is_loopback(), security.insecure_plaintext) {
            (true, _, _) => Transport::Tls,
            (false, true, _) => Transport::Loopback,
            (false, false, true) => Transport::InsecurePlaintext,
            (false, false, false) => Transport::ReadOnly,
        }
    }
}

/// Refuses every request but reads (GET, HEAD, OPTIONS) with 403: on a plain-HTTP server
/// reachable from the network, a write or an action carries a credential that anyone on
/// the path could read and replay.
fn read_only(app: Router) -> Router {
    app.layer(axum::middleware::from_fn(|request: axum::extract::Request, next: axum::middleware::Next| async move {
        use axum::response::IntoResponse;
        if matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS)
        {
            return next.run(request).await;
        }
        let body = serde_json::json!({"error": {
            "code": "plaintext_refused",
            "message": "this server listens beyond loopback over plain HTTP, so it takes no writes or actions \
                        (their credentials would cross the network in clear): serve TLS (--tls-cert, --tls-key), \
                        or restart it with --insecure-plaintext to accept that",
        }});
        (axum::http::StatusCode::FORBIDDEN, axum::Json(body)).into_response()
    }))
}

/// [`serve`], over TLS when `security.tls` is given: the handshake must complete within
/// the header-read timeout, a client refused by the allow-list is dropped after it, and
/// the certificate files are watched for renewal while the server runs. Plain HTTP beyond
/// loopback serves reads only, unless `security.insecure_plaintext` (then it says so at
/// every start).
pub async fn serve_secure(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    security: Security,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let app = match Transport::of(local, &security) {
        Transport::Tls | Transport::Loopback => app,
        Transport::InsecurePlaintext => {
            tracing::warn!(listen = %local, "serving plain HTTP beyond loopback (--insecure-plaintext): tokens and data cross the network in clear");
            app
        }
        Transport::ReadOnly => {
            tracing::warn!(listen = %local, "plain HTTP beyond loopback: serving reads only; writes and actions are refused until TLS is configured (--tls-cert, --tls-key) or --insecure-plaintext is given");
            read_only(app)
        }
    };
    let tls = security.tls;
    let _watching = tls.as_ref().map(|t| AbortOnDrop(t.watch(Duration::from_secs(1))));
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = Arc::new(PerIp::default());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // A permit first: at the cap, stop accepting rather than accept and drop.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    // Out of file descriptors: give others a moment to close theirs.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(ip_slot) = per_ip.take(peer.ip(), limits.max_connections_per_ip.max(1)) else {
            tracing::warn!(peer = %peer.ip(), "too many connections from one address; closing the new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body_timeout = limits.body_timeout;
        let app = app.clone().map_request(move |request: hyper::Request<hyper::body::Incoming>| {
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            let deadline = Box::pin(tokio::time::sleep(body_timeout));
            hyper::Request::from_parts(parts, DeadlineBody { body, deadline, timeout: body_timeout })
        });
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let first_byte_timeout = limits.header_read_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = TowerToHyperService::new(app);
            match tls {
                None => {
                    // The auto builder waits for a connection's first bytes with no clock
                    // of its own: a socket that never sends one would be held for good.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(first_byte_timeout, stream.peek(&mut first)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(connection.into_owned()).await {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                    let stream = match tokio::time::timeout(first_byte_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    if let Err(why) = tls.admits(stream.get_ref().1) {
                        tracing::warn!(peer = %peer, why, "client refused after the TLS handshake");
                        return;
                    }
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(connection.into_owned()).await {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                }
            }
            drop((permit, ip_slot));
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            timeout_secs = limits.drain_timeout.as_secs_f64(),
            "connections still open after the drain timeout were dropped"
        );
    }
    Ok(())
}

/// Stops a background task when the server it serves returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The peer address type every request carries.
pub type Peer = ConnectInfo<SocketAddr>;

#[cfg(test)]
mod listen_tests {
    #[test]
    fn a_failed_bind_says_what_to_do() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let e = std::net::TcpListener::bind(taken.local_addr().expect("addr")).expect_err("taken");
        assert!(super::listen_hint(&e, "another agent").contains("is another agent using it"), "{e}");
        // TEST-NET-1: an address no host of this test owns.
        let e = std::net::TcpListener::bind("192.0.2.1:0").expect_err("not ours");
        assert!(super::listen_hint(&e, "another agent").contains("not one of this host's"), "{e}");
    }
}

#[cfg(test)]
mod transport_tests {
    use super::*;
    use tower::ServiceExt;

    #[test]
    fn plain_http_beyond_loopback_is_read_only_unless_told_otherwise() {
        let lan: SocketAddr = "10.77.0.1:9464".parse().expect("addr");
        let lo: SocketAddr = "127.0.0.1:9464".parse().expect("addr");
        assert_eq!(Transport::of(lo, &Security::default()), Transport::Loopback);
        assert_eq!(Transport::of(lan, &Security::default()), Transport::ReadOnly);
        let insecure = Security { tls: None, insecure_plaintext: true };
        assert_eq!(Transport::of(lan, &insecure), Transport::InsecurePlaintext);
    }

    #[tokio::test]
    async fn a_read_only_server_serves_reads_and_refuses_writes() {
        let app =
            read_only(Router::new().route("/x", axum::routing::get(|| async { "read" }).post(|| async { "written" })));
        let send = |method: &str| {
            let request = axum::http::Request::builder().method(method).uri("/x").body(axum::body::Body::empty());
            app.clone().oneshot(request.expect("request"))
        };
        assert_eq!(send("GET").await.expect("get").status(), 200);
        let refused = send("POST").await.expect("post");
        assert_eq!(refused.status(), 403);
        let body = axum::body::to_bytes(refused.into_body(), 4096).await.expect("body");
        assert!(String::from_utf8_lossy(&body).contains("--insecure-plaintext"));
    }
}
