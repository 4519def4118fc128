//! Access tokens: HS256 JWTs issued by the auth service and verified by every service
//! with the shared key, so no request needs a round trip to auth.

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

    pub fn verify(&self, token: &str) -> Result<Claims, AppError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| AppError::Unauthorized(format!("invalid access token: {e}")))
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What the auth layers need at request time; put into request extensions by
/// [`super::serve::common_layers`].
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

/// Extractor: a request carrying the cluster's admin token (for `/admin/*`).
pub struct Admin;

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let expected = context(parts)?.admin_token.as_bytes();
        if constant_time_eq(token.as_bytes(), expected) {
            Ok(Admin)
        } else {
            Err(AppError::Unauthorized("wrong admin token".into()))
        }
    }
}

pub use hale_core::auth::constant_time_eq;

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
