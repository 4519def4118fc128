//! Small pieces of request authentication every component needs: constant-time
//! comparison, bearer-token parsing, and [`bearer_matches`], the one check of an
//! `Authorization` header every token-guarded endpoint makes (agent actuator, collector
//! ingest and silences, healer writes). One check in one place, so no endpoint compares a
//! token with `==` and leaks it a byte at a time through timing.

/// Compares secrets without leaking, through timing, how long a matching prefix is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    header_value
        .strip_prefix("Bearer ")
        .or_else(|| header_value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether an `Authorization` header's text (`None`: no header, or not text) is
/// `Bearer <expected>`. The one check every token-guarded endpoint makes (agent actuator,
/// collector ingest and silences, healer writes), compared in constant time so a caller
/// cannot find the token a byte at a time.
pub fn bearer_matches(header: Option<&str>, expected: &str) -> bool {
    header.and_then(bearer_token).is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes()))
}

/// A fresh random secret: 256 bits from the operating system's generator, as 64 hex
/// digits (a token, an HMAC key, or an AES-256 key).
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_and_extracts() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert_eq!(bearer_token("Bearer xyz"), Some("xyz"));
        assert_eq!(bearer_token("Basic xyz"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert!(bearer_matches(Some("Bearer xyz"), "xyz"));
        assert!(!bearer_matches(Some("Bearer xy"), "xyz"));
        assert!(!bearer_matches(Some("Basic xyz"), "xyz"));
        assert!(!bearer_matches(None, "xyz"));
    }
}
