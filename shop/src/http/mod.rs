//! HTTP plumbing shared by every shop service: the common routes and layers around a
//! service's router (`serve`), the one error shape and the extractors that produce it
//! (`error`), access tokens and their scopes (`token`), the headers only the gateway may
//! set (`internal`), the HTTP metrics (`metrics`) and fault injection (`chaos`), and the
//! client one replica calls another with (`peer_client`).

pub mod chaos;
pub mod error;
pub mod internal;
pub mod metrics;
pub mod serve;
pub mod token;

pub use error::{ApiJson, ApiQuery, AppError};
pub use serve::{BODY_LIMIT_BYTES, Frame, Readiness, app, serve, serve_on};
pub use token::{Admin, Authenticated, Claims, Scoped, TokenKeys};

/// The current span's trace context as headers (`traceparent`, `tracestate`), for a
/// call to another service that is its own client span (search's change-feed poll):
/// the callee's server span then continues this trace. Other calls go through
/// [`hale_trace::send`], which makes the client span too.
pub fn trace_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    hale_trace::inject(&mut headers);
    headers
}

/// The client a replica calls another replica with (orders → catalog and auth, search and
/// a standby → the catalog's change feed): a peer on the same network answers a connect
/// at once or is down, so the connect timeout is short, and `total` bounds the whole call.
pub fn peer_client(connect: std::time::Duration, total: std::time::Duration) -> reqwest::Result<reqwest::Client> {
    hale_client::tls::builder().connect_timeout(connect).timeout(total).build()
}
