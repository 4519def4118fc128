//! The one request helper: a timeout on every call, errors mapped once.

use std::time::Duration;

use hale_core::api::ErrorBody;
use serde::de::DeserializeOwned;

/// How long any call may take unless the client is built with another timeout: a slow
/// peer must not hold a caller forever.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL does not parse or cannot carry a path.
    #[error("{url:?} is not an http URL")]
    BadUrl { url: String },
    /// No answer: refused, reset, timed out.
    #[error("reaching {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    /// The server answered 401: no or a wrong token.
    #[error("{url} refused the token (401): {message}")]
    Unauthorized { url: String, message: String },
    /// Any other non-2xx answer, with the server's own message when it gave one.
    #[error("{url} answered {status}: {message}")]
    Status { url: String, status: u16, message: String },
    /// A 2xx answer that is not the contract's shape.
    #[error("reading {url}'s answer: {message}")]
    Decode { url: String, message: String },
}

/// A connection pool and the timeout of each call made through it. Typed clients built
/// on one `Pool` share its connections (a dashboard's, a healer's); each call still has
/// the timeout.
#[derive(Debug, Clone)]
pub struct Pool {
    pub http: reqwest::Client,
    pub timeout: Duration,
}

impl Pool {
    /// A pool of its own whose calls take at most `timeout`.
    pub fn new(timeout: Duration) -> Result<Pool, ClientError> {
        let http = crate::tls::builder()
            .timeout(timeout)
            .build()
            .map_err(|source| ClientError::Unreachable { url: String::new(), source })?;
        Ok(Pool { http, timeout })
    }

    /// `http`'s connections, each call within `timeout`.
    pub fn of(http: &reqwest::Client, timeout: Duration) -> Pool {
        Pool { http: http.clone(), timeout }
    }
}

/// A client's base URL (`http://host:port`) without its trailing slash, checked once
/// when the client is built so that no call fails later on a URL that could never work.
fn base_url(base: &str) -> Result<String, ClientError> {
    let base = base.trim_end_matches('/').to_string();
    url(&base, &[])?;
    Ok(base)
}

/// `base` + path segments, each escaped.
pub(crate) fn url(base: &str, segments: &[&str]) -> Result<reqwest::Url, ClientError> {
    let bad = || ClientError::BadUrl { url: base.to_string() };
    let mut url = reqwest::Url::parse(base.trim_end_matches('/')).map_err(|_| bad())?;
    url.path_segments_mut().map_err(|_| bad())?.pop_if_empty().extend(segments);
    Ok(url)
}

/// What every typed client holds: its peer's checked base URL, a connection pool (its own
/// or the caller's), the timeout of each call, and the bearer token for the calls that
/// need one.
pub(crate) struct Peer {
    pub(crate) base: String,
    http: reqwest::Client,
    timeout: Duration,
    pub(crate) token: Option<String>,
}

impl Peer {
    pub(crate) fn new(base: &str, token: Option<String>, pool: &Pool) -> Result<Peer, ClientError> {
        Ok(Peer { base: base_url(base)?, http: pool.http.clone(), timeout: pool.timeout, token })
    }

    /// A request to `base` + `segments` with the timeout and without the token (reads).
    pub(crate) fn open(
        &self,
        method: reqwest::Method,
        segments: &[&str],
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        Ok(self.http.request(method, url(&self.base, segments)?).timeout(self.timeout))
    }

    /// A request to `base` + `segments` with the timeout and the token (writes).
    pub(crate) fn authed(
        &self,
        method: reqwest::Method,
        segments: &[&str],
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        self.authed_url(method, url(&self.base, segments)?)
    }

    /// A request to any URL (another replica's, or one with a query) with the timeout and
    /// the token.
    pub(crate) fn authed_url(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let r = self.http.request(method, url).timeout(self.timeout);
        Ok(match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        })
    }
}

/// Sends the request and reads a 2xx answer as `T`.
pub(crate) async fn call<T: DeserializeOwned>(request: reqwest::RequestBuilder) -> Result<T, ClientError> {
    let (url, bytes) = send(request).await?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode { url, message: e.to_string() })
}

/// Sends the request; a 2xx answer's URL and body, else the error it is.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<(String, Vec<u8>), ClientError> {
    let reply = request.send().await.map_err(|e| {
        let url = e.url().map(|u| u.to_string()).unwrap_or_default();
        ClientError::Unreachable { url, source: e.without_url() }
    })?;
    let (url, status) = (reply.url().to_string(), reply.status());
    let bytes =
        reply.bytes().await.map_err(|e| ClientError::Unreachable { url: url.clone(), source: e.without_url() })?;
    if status.is_success() {
        return Ok((url, bytes.to_vec()));
    }
    let message = error_message(&bytes);
    Err(if status == reqwest::StatusCode::UNAUTHORIZED {
        ClientError::Unauthorized { url, message }
    } else {
        ClientError::Status { url, status: status.as_u16(), message }
    })
}

/// What went wrong in the server's own words: the agent's, the healer's and the shop's
/// [`ErrorBody`], or the collector's `{"error": "…"}`.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Answer {
        Coded(ErrorBody),
        Text { error: String },
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(Answer::Coded(ErrorBody { error })) => error.message,
        Ok(Answer::Text { error }) => error,
        Err(_) => "no message".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_read_in_every_servers_shape() {
        assert_eq!(error_message(br#"{"status":"error","errorType":"bad_data","error":"no"}"#), "no");
        assert_eq!(error_message(br#"{"error":{"code":"not_found","message":"gone"}}"#), "gone");
        assert_eq!(error_message(b"<html>"), "no message");
    }

    #[test]
    fn urls_escape_their_segments() {
        let u = url("http://127.0.0.1:9464/", &["api", "v1", "silences", "a/b"]).expect("url");
        assert_eq!(u.as_str(), "http://127.0.0.1:9464/api/v1/silences/a%2Fb");
        assert!(matches!(url("not a url", &[]), Err(ClientError::BadUrl { .. })));
        assert_eq!(base_url("http://127.0.0.1:9464/").expect("base"), "http://127.0.0.1:9464");
        assert!(matches!(base_url("mailto:someone"), Err(ClientError::BadUrl { .. })));
    }
}
