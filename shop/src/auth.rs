//! The auth service: OAuth 2.0 token endpoint (RFC 6749) with the `password` and
//! `client_credentials` grants. It issues HS256 JWTs that every other service verifies
//! on its own with the shared key.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use base64::Engine;
use hale_core::ClusterConfig;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::TokenKeys;
use crate::http::internal::ClientAddr;

/// A password hash of the same cost as the real ones, verified when the user is unknown
/// so that response time does not tell which user names exist.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0cWzw6xO8i0b1p1OQ4h2bbC4u3cX9mRrRmJ3yJ2wQzE";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrantLabels {
    grant_type: String,
    outcome: String,
}

struct Account {
    hash: String,
    scope: String,
}

/// A token bucket's size and refill rate.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Attempts allowed at once, after a quiet while.
    pub burst: f64,
    /// Attempts allowed per second, sustained.
    pub per_sec: f64,
}

/// Logins one client address may make: a person or a service logs in now and then, a
/// flood is slowed to this pace and cannot take every Argon2 slot from everyone else.
pub const PER_ADDRESS: RateLimit = RateLimit { burst: 10.0, per_sec: 2.0 };
/// Failed logins one user account may take, from anywhere: bounds password guessing
/// spread over many addresses. A login that succeeds gives its token back, so a user who
/// knows the password is never slowed by their own logins, and a flood of correct ones
/// cannot empty the bucket. Unknown names have no bucket (they cost the address's budget
/// only), so the map stays as small as the account list. Client ids of the
/// client_credentials grant have none: their secrets are 256-bit, guessing is hopeless,
/// and a bucket there would let anyone lock the orders service out of checkout.
pub const PER_ACCOUNT: RateLimit = RateLimit { burst: 5.0, per_sec: 1.0 };
/// Addresses remembered at most; full buckets are forgotten first.
const MAX_TRACKED_ADDRESSES: usize = 100_000;
/// How long a login waits for an Argon2 slot before 503 `temporarily_unavailable`.
const HASH_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, limit: RateLimit, now: Instant) -> Bucket {
        let gained = now.saturating_duration_since(self.at).as_secs_f64() * limit.per_sec;
        Bucket { tokens: (self.tokens + gained).min(limit.burst), at: now }
    }

    /// Seconds until one token is there (whole seconds, at least 1, for `Retry-After`).
    fn wait_secs(self, limit: RateLimit) -> u64 {
        (((1.0 - self.tokens) / limit.per_sec).ceil() as u64).max(1)
    }
}

/// Per-address and per-account token buckets of the token endpoint.
struct Limiter {
    buckets: Mutex<(HashMap<IpAddr, Bucket>, HashMap<String, Bucket>)>,
    per_address: RateLimit,
    per_account: RateLimit,
}

/// Which limit refused a login, and when to retry.
struct Limited {
    what: &'static str,
    retry_after_secs: u64,
}

impl Limiter {
    fn new(per_address: RateLimit, per_account: RateLimit) -> Self {
        Limiter { buckets: Mutex::new((HashMap::new(), HashMap::new())), per_address, per_account }
    }

    /// Takes one attempt from the address's bucket and the account's (if known), or from
    /// neither when either is empty. [`Limiter::succeeded`] gives the account's back.
    fn take(&self, addr: Option<IpAddr>, account: Option<&str>, now: Instant) -> Result<(), Limited> {
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (addresses, accounts) = &mut *guard;
        if addresses.len() >= MAX_TRACKED_ADDRESSES {
            let limit = self.per_address;
            addresses.retain(|_, b| b.refilled(limit, now).tokens < limit.burst);
        }
        let full = |limit: RateLimit| Bucket { tokens: limit.burst, at: now };
        // A request without a known address (no socket, in tests) shares one bucket.
        let addr = addr.unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        let a = addresses.get(&addr).map_or(full(self.per_address), |b| b.refilled(self.per_address, now));
        let n = account
            .map(|name| accounts.get(name).map_or(full(self.per_account), |b| b.refilled(self.per_account, now)));
        if a.tokens < 1.0 {
            return Err(Limited { what: "this client", retry_after_secs: a.wait_secs(self.per_address) });
        }
        if let Some(n) = n.filter(|n| n.tokens < 1.0) {
            return Err(Limited { what: "this account", retry_after_secs: n.wait_secs(self.per_account) });
        }
        addresses.insert(addr, Bucket { tokens: a.tokens - 1.0, at: now });
        if let (Some(name), Some(n)) = (account, n) {
            accounts.insert(name.to_string(), Bucket { tokens: n.tokens - 1.0, at: now });
        }
        Ok(())
    }

    /// A login of `account` succeeded: its attempt is given back to the account's bucket.
    fn succeeded(&self, account: &str, now: Instant) {
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = guard.1.get_mut(account) {
            let refilled = b.refilled(self.per_account, now);
            *b = Bucket { tokens: (refilled.tokens + 1.0).min(self.per_account.burst), at: now };
        }
    }
}

/// Which accounts' logins count against [`PER_ACCOUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccountLimit {
    /// People: failed passwords are limited per account.
    Users,
    /// Machine clients with long random secrets: only their address is limited.
    Clients,
}

struct AuthState {
    /// Argon2 runs at most this many at once; beyond, callers wait in line (first come,
    /// first served) up to [`HASH_QUEUE_WAIT`], then get 503, instead of queueing
    /// unbounded memory (19 MiB a verification) on the blocking pool.
    hashing: tokio::sync::Semaphore,
    limiter: Limiter,
    users: HashMap<String, Account>,
    clients: HashMap<String, Account>,
    keys: Arc<TokenKeys>,
    ttl_secs: u64,
    grants: Family<GrantLabels, Counter>,
}

/// Form of `POST /oauth/token`. No `Debug`: it holds passwords.
#[derive(Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub scope: String,
}

/// An error in RFC 6749 §5.2's shape.
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// For 429 and 503: when to come back.
    retry_after_secs: Option<u64>,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = if error == "invalid_client" { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
        OAuthError { status, error, description: description.into(), retry_after_secs: None }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [("cache-control", "no-store")],
            axum::Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert("www-authenticate", axum::http::HeaderValue::from_static("Basic realm=\"hale\""));
        }
        response
    }
}

/// The auth service's routes.
pub fn router(cluster: &ClusterConfig, registry: &mut Registry) -> Router {
    let grants = Family::<GrantLabels, Counter>::default();
    registry.register("shop_auth_token_requests", "Token requests by grant type and outcome", grants.clone());
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let state = AuthState {
        hashing: tokio::sync::Semaphore::new(cpus * 2),
        limiter: Limiter::new(PER_ADDRESS, PER_ACCOUNT),
        users: cluster
            .users
            .iter()
            .map(|u| (u.username.clone(), Account { hash: u.password_hash.clone(), scope: u.scope.clone() }))
            .collect(),
        clients: cluster
            .clients
            .iter()
            .map(|c| {
                (
                    c.client_id.clone(),
                    Account { hash: c.secret_hash.clone().unwrap_or_default(), scope: c.scope.clone() },
                )
            })
            .collect(),
        keys: Arc::new(TokenKeys::new(&cluster.secrets.jwt_secret)),
        ttl_secs: cluster.token_ttl_secs,
        grants,
    };
    Router::new().route("/oauth/token", post(token)).with_state(Arc::new(state))
}

async fn token(
    State(state): State<Arc<AuthState>>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Form(req) = match form {
        Ok(form) => form,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return crate::http::AppError::PayloadTooLarge { limit_bytes: crate::http::BODY_LIMIT_BYTES }
                .into_response();
        }
        Err(rejection) => {
            tracing::debug!(detail = %rejection.body_text(), "token request body refused");
            return OAuthError::new("invalid_request", "expected an application/x-www-form-urlencoded body")
                .into_response();
        }
    };
    let grant_type = req.grant_type.clone().unwrap_or_default();
    let result = match grant_type.as_str() {
        "password" => password_grant(&state, addr, req).await,
        "client_credentials" => client_grant(&state, addr, &headers, req).await,
        "" => Err(OAuthError::new("invalid_request", "grant_type is required")),
        other => Err(OAuthError::new(
            "unsupported_grant_type",
            format!("grant_type {other:?} is not supported; use password or client_credentials"),
        )),
    };
    let outcome = match &result {
        Ok(_) => "issued",
        Err(e) => e.error,
    };
    let label =
        if matches!(grant_type.as_str(), "password" | "client_credentials") { grant_type.as_str() } else { "other" };
    state.grants.get_or_create(&GrantLabels { grant_type: label.into(), outcome: outcome.into() }).inc();
    match result {
        Ok(response) => ([("cache-control", "no-store"), ("pragma", "no-cache")], axum::Json(response)).into_response(),
        Err(e) => {
            tracing::warn!(grant_type = label, error = e.error, "token refused");
            e.into_response()
        }
    }
}

async fn password_grant(
    state: &AuthState,
    addr: Option<IpAddr>,
    req: TokenRequest,
) -> Result<TokenResponse, OAuthError> {
    let (Some(username), Some(password)) = (req.username, req.password) else {
        return Err(OAuthError::new("invalid_request", "the password grant needs username and password"));
    };
    let Some(account) = authenticate(state, addr, &state.users, AccountLimit::Users, &username, password).await? else {
        return Err(OAuthError::new("invalid_grant", "wrong username or password"));
    };
    issue(state, &username, &account.scope, req.scope.as_deref())
}

async fn client_grant(
    state: &AuthState,
    addr: Option<IpAddr>,
    headers: &HeaderMap,
    req: TokenRequest,
) -> Result<TokenResponse, OAuthError> {
    let (client_id, client_secret) = match basic_credentials(headers) {
        Some(pair) => pair,
        None => match (req.client_id, req.client_secret) {
            (Some(id), Some(secret)) => (id, secret),
            _ => {
                return Err(OAuthError::new(
                    "invalid_client",
                    "client authentication needed: HTTP Basic or client_id and client_secret",
                ));
            }
        },
    };
    let Some(account) =
        authenticate(state, addr, &state.clients, AccountLimit::Clients, &client_id, client_secret).await?
    else {
        return Err(OAuthError::new("invalid_client", "unknown client or wrong client secret"));
    };
    issue(state, &client_id, &account.scope, req.scope.as_deref())
}

fn issue(state: &AuthState, sub: &str, granted: &str, requested: Option<&str>) -> Result<TokenResponse, OAuthError> {
    let scope = match requested.map(str::trim).filter(|s| !s.is_empty()) {
        None => granted.to_string(),
        Some(requested) => {
            let allowed: Vec<&str> = granted.split_whitespace().collect();
            if let Some(extra) = requested.split_whitespace().find(|s| !allowed.contains(s)) {
                return Err(OAuthError::new("invalid_scope", format!("scope {extra:?} is not granted to {sub:?}")));
            }
            requested.split_whitespace().collect::<Vec<_>>().join(" ")
        }
    };
    let access_token = state
        .keys
        .issue(sub, &scope, state.ttl_secs)
        .map_err(|_| OAuthError::new("server_error", "could not sign the token"))?;
    Ok(TokenResponse { access_token, token_type: "Bearer".into(), expires_in: state.ttl_secs, scope })
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// The account `name` if `secret` is its secret. An unknown name costs the same time as
/// a wrong secret, so timing does not reveal which names exist. The client's and the
/// account's rate limits come first (429), so a flood is turned away before it costs a
/// hash and before it can take the hashing slots from everyone else.
async fn authenticate<'a>(
    state: &AuthState,
    addr: Option<IpAddr>,
    accounts: &'a HashMap<String, Account>,
    limit: AccountLimit,
    name: &str,
    secret: String,
) -> Result<Option<&'a Account>, OAuthError> {
    let known = accounts.contains_key(name).then_some(name).filter(|_| limit == AccountLimit::Users);
    state.limiter.take(addr, known, Instant::now()).map_err(|limited| {
        tracing::warn!(client = ?addr, limit = limited.what, "login rate limit reached");
        OAuthError {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "slow_down",
            description: format!("too many logins from {}; retry in {} s", limited.what, limited.retry_after_secs),
            retry_after_secs: Some(limited.retry_after_secs),
        }
    })?;
    let _permit = match tokio::time::timeout(HASH_QUEUE_WAIT, state.hashing.acquire()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            return Err(OAuthError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "temporarily_unavailable",
                description: "too many logins at once; retry in a moment".into(),
                retry_after_secs: Some(1),
            });
        }
    };
    let account = accounts.get(name);
    // A client without a hash is checked against the dummy too: no fast answer that
    // would tell it apart from a wrong secret.
    let hash = account.map(|a| a.hash.as_str()).filter(|h| !h.is_empty()).unwrap_or(DUMMY_HASH).to_string();
    let ok = verify_secret(hash, secret).await && account.is_some_and(|a| !a.hash.is_empty());
    if ok && let Some(name) = known {
        state.limiter.succeeded(name, Instant::now());
    }
    Ok(account.filter(|_| ok))
}

/// Argon2 verification costs tens of milliseconds of CPU: keep it off the async workers.
async fn verify_secret(hash: String, secret: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// Argon2 refused to hash a secret. It carries argon2's error as its message only: that
/// error is a `std` error only with argon2's `std` feature, which the shop does not need.
#[derive(Debug, thiserror::Error)]
#[error("hashing a secret with argon2: {0}")]
pub struct HashError(argon2::password_hash::Error);

/// Hashes a password or client secret for `cluster.toml` (`hale shop hash-password`).
pub fn hash_secret(secret: &str) -> Result<String, HashError> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(secret.as_bytes(), &salt).map(|h| h.to_string()).map_err(HashError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_is_a_valid_argon2_hash() {
        // If it did not parse, unknown users would be answered faster than known ones.
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn hashed_secrets_verify() {
        let hash = hash_secret("s3cret").expect("hash");
        let parsed = PasswordHash::new(&hash).expect("parse");
        assert!(Argon2::default().verify_password(b"s3cret", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"other", &parsed).is_err());
    }
}
