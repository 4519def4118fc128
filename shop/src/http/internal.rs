//! Headers only the gateway may set, and the proof that it did.
//!
//! The gateway tells a replica things a client must never be able to claim: the catalog
//! epoch it writes under (`X-Hale-Epoch`, which fences an older primary) and the address
//! of the client it forwards for (`X-Hale-Client-Addr`, which auth's per-client limits key
//! on). A client can reach a replica directly, so a replica honours these headers only
//! when `X-Hale-Gateway-Signature` proves the gateway sent them: `t=<unix>,sha256=<hex
//! HMAC-SHA256 of "t.<canonical>">` keyed with the cluster's admin token, the credential
//! that is already needed to fence or promote a replica through `/admin/*`. The
//! canonical text starts with a domain line (`hale-gateway-v1`, so no other signature
//! made with that key — a webhook's — can pass for one) and names the request's method
//! and path with its query, then the headers: a signature seen on one request cannot be
//! replayed on another. The HMAC means the admin token itself never travels on API
//! requests, and the timestamp bounds a replay of the same request to
//! [`hale_core::webhook::MAX_AGE_SECS`].
//!
//! Unproven headers are never half-believed: a catalog write with an unsigned epoch is
//! refused (403 `epoch_not_authorized`), and an unsigned client address is ignored in
//! favour of the peer's. The gateway drops a client's own copies of all three headers
//! before it forwards, and signs only when it has the admin token.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::token::{AuthContext, unix_now};

/// The epoch of the catalog primary the gateway believes in, on catalog writes.
pub const EPOCH_HEADER: &str = "x-hale-epoch";
/// The address of the client the gateway forwards for.
pub const CLIENT_ADDR_HEADER: &str = "x-hale-client-addr";
/// The gateway's proof over the two headers above.
pub const SIGNATURE_HEADER: &str = "x-hale-gateway-signature";

/// The signed headers, in the order they enter the MAC.
const SIGNED: [&str; 2] = [EPOCH_HEADER, CLIENT_ADDR_HEADER];

/// Why a replica refused the internal headers of a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error(
        "{EPOCH_HEADER} and {CLIENT_ADDR_HEADER} are set by the gateway only; this request carries no valid gateway signature"
    )]
    Unsigned,
    #[error("{EPOCH_HEADER} must be a number")]
    BadEpoch,
    #[error("{CLIENT_ADDR_HEADER} must be an IP address")]
    BadAddr,
}

/// What a request's gateway-signed headers say; empty when it carries none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forwarded {
    pub epoch: Option<u64>,
    pub client_addr: Option<IpAddr>,
}

/// True for a header a client's copy of which the gateway must drop before forwarding.
pub fn is_internal(name: &HeaderName) -> bool {
    let name = name.as_str();
    SIGNED.contains(&name) || name == SIGNATURE_HEADER
}

/// What a request is, for the signature: its method and its path with the query.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    pub method: &'a axum::http::Method,
    pub path_and_query: &'a str,
}

impl<'a> RequestLine<'a> {
    pub fn of(method: &'a axum::http::Method, uri: &'a axum::http::Uri) -> Self {
        RequestLine { method, path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()) }
    }
}

fn canonical(request: RequestLine<'_>, headers: &HeaderMap) -> Vec<u8> {
    let mut out = format!("hale-gateway-v1\n{} {}\n", request.method, request.path_and_query).into_bytes();
    for name in SIGNED {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        // Several copies of one header are refused by `verify`; sign the first.
        if let Some(value) = headers.get(name) {
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// Signs the internal headers already set on `headers` (the gateway, just before sending).
pub fn sign(request: RequestLine<'_>, headers: &mut HeaderMap, secret: &str, now: u64) {
    let value = hale_core::webhook::sign(secret.as_bytes(), now, &canonical(request, headers));
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(SIGNATURE_HEADER, value);
    }
}

/// The internal headers of a request, if the gateway signed them. A request with none is
/// fine (`Forwarded::default()`); one with any that is not signed by the holder of
/// `secret` is refused, never half-believed.
pub fn verify(request: RequestLine<'_>, headers: &HeaderMap, secret: &str, now: u64) -> Result<Forwarded, ProofError> {
    if SIGNED.iter().all(|name| !headers.contains_key(*name)) {
        return Ok(Forwarded::default());
    }
    if SIGNED.iter().any(|name| headers.get_all(*name).iter().count() > 1) {
        return Err(ProofError::Unsigned);
    }
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    hale_core::webhook::verify(secret.as_bytes(), signature, &canonical(request, headers), now).map_err(|e| {
        tracing::warn!(reason = %e, "internal headers without a valid gateway signature refused");
        ProofError::Unsigned
    })?;
    let text = |name: &str| headers.get(name).map(|v| v.to_str().map(str::trim));
    let epoch = match text(EPOCH_HEADER) {
        None => None,
        Some(v) => Some(v.ok().and_then(|s| s.parse::<u64>().ok()).ok_or(ProofError::BadEpoch)?),
    };
    let client_addr = match text(CLIENT_ADDR_HEADER) {
        None => None,
        Some(v) => Some(v.ok().and_then(|s| s.parse::<IpAddr>().ok()).ok_or(ProofError::BadAddr)?),
    };
    Ok(Forwarded { epoch, client_addr })
}

/// Extractor: the address of the client a request is for — the one the gateway forwards
/// for when it proves it, else the peer's (`None` when served without a socket, in tests).
/// An unproven `X-Hale-Client-Addr` is ignored, never believed: per-client limits must not
/// be dodged by writing a new address into each request.
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        // The path as the client sent it, before any nesting stripped a prefix.
        let uri = parts.extensions.get::<axum::extract::OriginalUri>().map_or(&parts.uri, |o| &o.0);
        let request = RequestLine::of(&parts.method, uri);
        let forwarded = parts
            .extensions
            .get::<AuthContext>()
            .and_then(|auth| verify(request, &parts.headers, &auth.admin_token, unix_now()).ok())
            .and_then(|f| f.client_addr);
        Ok(ClientAddr(forwarded.or(peer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "the-admin-token";

    fn line() -> RequestLine<'static> {
        static POST: axum::http::Method = axum::http::Method::POST;
        RequestLine { method: &POST, path_and_query: "/api/products" }
    }

    fn with(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn signed_headers_verify_and_anything_else_is_refused() {
        let now = 1_000_000;
        assert_eq!(verify(line(), &HeaderMap::new(), SECRET, now), Ok(Forwarded::default()));
        let mut h = with(&[(EPOCH_HEADER, "3"), (CLIENT_ADDR_HEADER, "10.0.0.7")]);
        assert_eq!(verify(line(), &h, SECRET, now), Err(ProofError::Unsigned), "unsigned");
        sign(line(), &mut h, SECRET, now);
        let ok = verify(line(), &h, SECRET, now).expect("signed");
        assert_eq!((ok.epoch, ok.client_addr.map(|a| a.to_string())), (Some(3), Some("10.0.0.7".into())));
        assert_eq!(verify(line(), &h, "another-secret", now), Err(ProofError::Unsigned), "wrong key");
        assert_eq!(verify(line(), &h, SECRET, now + 3600), Err(ProofError::Unsigned), "stale");
        // A signature for one epoch does not carry over to another.
        let mut tampered = h.clone();
        tampered.insert(EPOCH_HEADER, HeaderValue::from_static("281474976710656"));
        assert_eq!(verify(line(), &tampered, SECRET, now), Err(ProofError::Unsigned));
        let mut doubled = h.clone();
        doubled.append(EPOCH_HEADER, HeaderValue::from_static("3"));
        assert_eq!(verify(line(), &doubled, SECRET, now), Err(ProofError::Unsigned));
        let mut bad = with(&[(EPOCH_HEADER, "x")]);
        sign(line(), &mut bad, SECRET, now);
        assert_eq!(verify(line(), &bad, SECRET, now), Err(ProofError::BadEpoch));
        // Bound to its request: another path, query or method is refused.
        let post = axum::http::Method::POST;
        for (method, path) in [
            (&post, "/api/products/reservations"),
            (&post, "/api/products?x=1"),
            (&axum::http::Method::PUT, "/api/products"),
        ] {
            let other = RequestLine { method, path_and_query: path };
            assert_eq!(verify(other, &h, SECRET, now), Err(ProofError::Unsigned), "{method} {path}");
        }
    }
}
