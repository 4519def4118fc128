//! Webhook signatures: `X-Hale-Signature: t=<unix seconds>,sha256=<hex HMAC-SHA256 of
//! "<t>.<body>">`, as DESIGN.md fixes them. The timestamp is inside the MAC, so a captured
//! request cannot be replayed with a fresh time, and receivers refuse signatures older
//! than [`MAX_AGE_SECS`] (five minutes, either way). The collector signs with it and the
//! healer verifies with it, so both sides share one definition. Alertmanager's label-set
//! [`fingerprint`] lives here for the same reason: the collector sends it and the healer
//! deduplicates by it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Hale-Signature";
/// How old (or how far in the future) a signature may be.
pub const MAX_AGE_SECS: u64 = 300;

/// Why a signature was refused. Receivers answer 401 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no X-Hale-Signature header")]
    Missing,
    #[error("X-Hale-Signature must read t=<unix seconds>,sha256=<hex>")]
    Malformed,
    #[error("the signature is {0} s away from now, more than the 300 s allowed; check both clocks")]
    Stale(u64),
    #[error("the signature does not match the body; is the webhook secret the same on both sides?")]
    Mismatch,
}

fn mac(secret: &[u8], t: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Alertmanager's fingerprint of a label set: FNV-1a 64 over the names and values in name
/// order, each followed by a 0xff byte. Stable across restarts and machines, so the
/// collector (which sends it) and the healer (which deduplicates by it) agree.
pub fn fingerprint<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The header value for `body` sent at unix time `t`.
pub fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
    format!("t={t},sha256={}", hex::encode(mac(secret, t, body).finalize().into_bytes()))
}

/// Checks a header value against `body` at unix time `now`.
pub fn verify(secret: &[u8], header: Option<&str>, body: &[u8], now: u64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t = None;
    let mut sig = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("sha256", v)) => sig = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (t, sig) = t.zip(sig).ok_or(SignatureError::Malformed)?;
    let age = now.abs_diff(t);
    if age > MAX_AGE_SECS {
        return Err(SignatureError::Stale(age));
    }
    mac(secret, t, body).verify_slice(&sig).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let body = br#"{"version":"4"}"#;
        let header = sign(b"secret", 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,sha256="));
        assert_eq!(header.len(), "t=1700000000,sha256=".len() + 64);
        assert_eq!(verify(b"secret", Some(&header), body, 1_700_000_100), Ok(()));
        assert_eq!(verify(b"other", Some(&header), body, 1_700_000_100), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"secret", Some(&header), b"{}", 1_700_000_100), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"secret", Some(&header), body, 1_700_000_301), Err(SignatureError::Stale(301)));
        assert_eq!(verify(b"secret", Some(&header), body, 1_699_999_699), Err(SignatureError::Stale(301)));
        assert_eq!(verify(b"secret", None, body, 0), Err(SignatureError::Missing));
        assert_eq!(verify(b"secret", Some("sha256=00"), body, 0), Err(SignatureError::Malformed));
        // The time is inside the MAC: moving it breaks the signature.
        let moved = header.replace("t=1700000000", "t=1700000200");
        assert_eq!(verify(b"secret", Some(&moved), body, 1_700_000_200), Err(SignatureError::Mismatch));
    }

    #[test]
    fn matches_an_independent_hmac() {
        // HMAC-SHA256(key="key", "1.body"), computed with `openssl dgst -sha256 -hmac key`.
        assert_eq!(sign(b"key", 1, b"body"), format!("t=1,sha256={}", OPENSSL));
    }
    const OPENSSL: &str = "91b5374b153842ad05b2c4eab9349b8321b14703165bd3fb8b034dfb8be98ae5";
}
