//! Access tokens: HS256 JWTs issued by the auth service and verified by every service
//! with the shared key, so no request needs a round trip to auth.
//!
//! Every authenticated handler takes a [`Scoped<S>`] (a token carrying scope `S`) or
//! [`Admin`] (the cluster's admin token, for `/admin/*`) before its body, so authorization
//! is decided first: 401 for no token or a bad one, 403 for a missing scope or an API
//! token on `/admin/*` (`admin_only`), and only then 400 for a bad body.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::error::AppError;

/// Claims of a Hale access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user name, or the client id of a client_credentials token.
    pub sub: String,
    /// Space-separated scopes.
    pub scope: String,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
}

impl Claims {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split_whitespace().any(|s| s == scope)
    }

    /// `Ok` when the token carries `scope`, otherwise a 403 naming the missing scope.
    pub fn require(&self, scope: &str) -> Result<(), AppError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!("this call needs the `{scope}` scope; the token has `{}`", self.scope)))
        }
    }
}

const ISSUER: &str = "hale-shop-auth";

/// Signs and verifies tokens with the cluster's shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 5;
        TokenKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn issue(&self, sub: &str, scope: &str, ttl_secs: u64) -> Result<String, AppError> {
        let now = unix_now();
        let claims = Claims { sub: sub.into(), scope: scope.into(), iat: now, exp: now + ttl_secs, iss: ISSUER.into() };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(AppError::internal)
    }

    /// The token's claims. A refusal says what kind of problem it is in a few words; the
    /// decoder's own text (claim names, line and column of its JSON) goes to the log only.
    pub fn verify(&self, token: &str) -> Result<Claims, AppError> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|data| data.claims).map_err(|e| {
            tracing::debug!(error = %e, "access token refused");
            AppError::Unauthorized(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the access token has expired; get a new one from POST /oauth/token",
                    ErrorKind::InvalidSignature => "the access token's signature does not match",
                    ErrorKind::InvalidIssuer => "the access token was not issued by this shop",
                    ErrorKind::ImmatureSignature => "the access token is not valid yet",
                    _ => "the access token is malformed",
                }
                .into(),
            )
        })
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What the auth layers need at request time; put into request extensions by
/// [`super::serve::app`].
#[derive(Clone)]
pub struct AuthContext {
    pub keys: Arc<TokenKeys>,
    pub admin_token: Arc<str>,
}

fn bearer(parts: &Parts) -> Result<&str, AppError> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
        AppError::Unauthorized(
            "missing `Authorization: Bearer <token>` header; get a token from POST /oauth/token".into(),
        )
    })?;
    let value = value.to_str().map_err(|_| AppError::Unauthorized("Authorization header is not valid text".into()))?;
    hale_core::auth::bearer_token(value)
        .ok_or_else(|| AppError::Unauthorized("Authorization header must be `Bearer <token>`".into()))
}

fn context(parts: &Parts) -> Result<&AuthContext, AppError> {
    parts
        .extensions
        .get::<AuthContext>()
        .ok_or_else(|| AppError::internal("AuthContext missing from request extensions"))
}

/// Extractor: a request with a valid access token.
pub struct Authenticated(pub Claims);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        Ok(Authenticated(context(parts)?.keys.verify(token)?))
    }
}

/// A scope an API route needs, as a type, so the route's extractor checks it.
pub trait Scope: Send + Sync + 'static {
    const NAME: &'static str;
}

macro_rules! scopes {
    ($($(#[$doc:meta])* $ty:ident => $name:literal),* $(,)?) => {
        $( $(#[$doc])* pub struct $ty; impl Scope for $ty { const NAME: &'static str = $name; } )*
    };
}

scopes! {
    /// Publish products.
    CatalogWrite => "catalog:write",
    /// Reserve stock (the orders service's client).
    CatalogReserve => "catalog:reserve",
    /// Place orders.
    OrdersWrite => "orders:write",
    /// Read one's own orders.
    OrdersRead => "orders:read",
}

/// Extractor: a request whose valid access token carries scope `S`. Being an extractor of
/// the request's head, it runs before the body extractor (axum takes the body last), so a
/// caller without the right learns nothing about the body of a call it may not make:
/// 401 without a valid token, 403 without the scope, and only then 400 for the body.
pub struct Scoped<S: Scope>(pub Claims, pub PhantomData<S>);

impl<S: Scope, St: Send + Sync> FromRequestParts<St> for Scoped<S> {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, Self::Rejection> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        claims.require(S::NAME)?;
        Ok(Scoped(claims, PhantomData))
    }
}

/// Extractor: a request carrying the cluster's admin token (for `/admin/*`). No token or
/// a wrong one is 401; a valid API access token is a credential, just not this one: 403.
pub struct Admin;

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let context = context(parts)?;
        if hale_core::auth::constant_time_eq(token.as_bytes(), context.admin_token.as_bytes()) {
            Ok(Admin)
        } else if context.keys.verify(token).is_ok() {
            Err(AppError::Denied {
                code: "admin_only",
                message: "this endpoint needs the cluster's admin token; an API access token is not enough".into(),
            })
        } else {
            Err(AppError::Unauthorized("wrong admin token".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_carry_scope() {
        let keys = TokenKeys::new("a-test-secret-that-is-long-enough-123");
        let token = keys.issue("alice", "orders:write orders:read", 60).expect("issue");
        let claims = keys.verify(&token).expect("verify");
        assert_eq!(claims.sub, "alice");
        assert!(claims.require("orders:read").is_ok());
        assert!(matches!(claims.require("catalog:write"), Err(AppError::Forbidden(_))));
    }

    #[test]
    fn tokens_from_another_key_or_expired_are_refused() {
        let keys = TokenKeys::new("a-test-secret-that-is-long-enough-123");
        let other = TokenKeys::new("another-secret-that-is-long-enough-456");
        let token = other.issue("mallory", "catalog:write", 60).expect("issue");
        assert!(matches!(keys.verify(&token), Err(AppError::Unauthorized(_))));
        let now = unix_now();
        let stale = Claims { sub: "a".into(), scope: "".into(), iat: now - 100, exp: now - 50, iss: ISSUER.into() };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &stale, &keys.encoding).expect("encode");
        assert!(keys.verify(&token).is_err());
        assert!(keys.verify("not.a.jwt").is_err());
    }
}
