//! Encryption at rest for what an order must not leak: AES-256-GCM with a fresh random
//! nonce per value, the order id as associated data (a ciphertext copied onto another
//! order does not decrypt), stored as base64(nonce ‖ ciphertext ‖ tag).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the encryption key must be 64 hex digits")]
    BadKey,
    #[error("a stored value could not be decrypted (wrong key or tampered data)")]
    Undecryptable,
}

/// Seals and opens values with the cluster's data key, and derives keyed digests.
#[derive(Clone)]
pub struct Vault {
    cipher: Aes256Gcm,
    /// Separate key for digests, derived from the data key, so the digest of a card
    /// number cannot be brute-forced without the key.
    mac_key: [u8; 32],
}

impl Vault {
    pub fn from_hex(key_hex: &str) -> Result<Self, CryptoError> {
        let key = hex::decode(key_hex).map_err(|_| CryptoError::BadKey)?;
        if key.len() != 32 {
            return Err(CryptoError::BadKey);
        }
        let cipher = Aes256Gcm::new_from_slice(&key).map_err(|_| CryptoError::BadKey)?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|_| CryptoError::BadKey)?;
        mac.update(b"hale-orders-digest-v1");
        let mac_key: [u8; 32] = mac.finalize().into_bytes().into();
        Ok(Vault { cipher, mac_key })
    }

    pub fn seal(&self, plaintext: &str, aad: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and a 12-byte nonce cannot fail for inputs this size.
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: aad.as_bytes() })
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    pub fn open(&self, sealed: &str, aad: &str) -> Result<String, CryptoError> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(sealed).map_err(|_| CryptoError::Undecryptable)?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Undecryptable);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: aad.as_bytes() })
            .map_err(|_| CryptoError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Undecryptable)
    }

    /// Keyed digest (HMAC-SHA256, hex) of `parts`, length-prefixed so parts cannot run
    /// into each other.
    pub fn digest(&self, parts: &[&str]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key).unwrap_or_else(|_| unreachable_mac());
        for part in parts {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

/// HMAC accepts keys of any length, so building one from a 32-byte key never fails.
fn unreachable_mac() -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// `**** **** **** 4242`: all a response or a log ever shows of a card number.
pub fn mask_card(last4: &str) -> String {
    format!("**** **** **** {last4}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn seal_open_round_trip_and_binds_aad() {
        let v = Vault::from_hex(KEY).expect("key");
        let sealed = v.seal("1 Main St", "order-1");
        assert!(!sealed.contains("Main"));
        assert_eq!(v.open(&sealed, "order-1").expect("open"), "1 Main St");
        assert_eq!(v.open(&sealed, "order-2"), Err(CryptoError::Undecryptable));
        assert_ne!(v.seal("1 Main St", "order-1"), sealed, "fresh nonce every time");
    }

    #[test]
    fn wrong_key_or_tampering_fails() {
        let v = Vault::from_hex(KEY).expect("key");
        let other = Vault::from_hex(&KEY.replace("00", "ff")).expect("key");
        let sealed = v.seal("4242424242424242", "o");
        assert!(other.open(&sealed, "o").is_err());
        let mut bytes = base64::engine::general_purpose::STANDARD.decode(&sealed).expect("b64");
        bytes[20] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert!(v.open(&tampered, "o").is_err());
        assert!(Vault::from_hex("abcd").is_err());
    }

    #[test]
    fn digest_is_keyed_and_unambiguous() {
        let v = Vault::from_hex(KEY).expect("key");
        assert_eq!(v.digest(&["a", "bc"]), v.digest(&["a", "bc"]));
        assert_ne!(v.digest(&["a", "bc"]), v.digest(&["ab", "c"]));
        let other = Vault::from_hex(&KEY.replace("00", "ff")).expect("key");
        assert_ne!(v.digest(&["x"]), other.digest(&["x"]));
        assert_eq!(mask_card("4242"), "**** **** **** 4242");
    }
}
