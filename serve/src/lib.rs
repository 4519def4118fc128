//! How every Hale server serves HTTP (agent, collector, healer, shop).
//!
//! `axum::serve` waits forever for a client's headers and accepts connections without
//! bound, so a few thousand sockets that never finish a request hold a server's memory
//! and file descriptors for good. [`serve`] bounds all three:
//!
//! - **header-read timeout**: a new connection's first byte, and each request's headers,
//!   must arrive within [`Limits::header_read_timeout`]. Hyper starts that clock again for
//!   each request of a keep-alive connection, so it is also the idle timeout between
//!   requests.
//! - **connection cap**: at most [`Limits::max_connections`] connections are served at
//!   once; past that the server stops accepting (new clients wait in the kernel's backlog)
//!   until one closes.
//! - **graceful drain**: on shutdown the listener closes, open connections finish their
//!   requests in flight, and whatever is still open after [`Limits::drain_timeout`] is
//!   dropped.
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
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a shutdown waits for requests in flight.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(10),
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
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
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
        let _ = stream.set_nodelay(true);
        let app = app.clone().map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        let first_byte_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            // Telling HTTP/1 from HTTP/2 waits for the first bytes with no clock of its own:
            // a socket that never sends one would be held for good.
            let mut first = [0u8; 1];
            match tokio::time::timeout(first_byte_timeout, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let service = TowerToHyperService::new(app);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
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

/// The peer address type every request carries.
pub type Peer = ConnectInfo<SocketAddr>;
