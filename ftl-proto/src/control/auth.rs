//! The HMAC-SHA512 challenge: the server sends a random nonce, the client answers
//! `HMAC-SHA512(key = secret, message = nonce)`.

use hmac::{Hmac, Mac};
use sha2::Sha512;

use crate::types::StreamKey;

/// Length of the nonce this server sends, in bytes (hex encoded on the wire: 128 characters).
/// Common servers send 64 bytes; the reference client accepts any even-length hex string that
/// fits its 512-byte reply buffer.
pub const NONCE_LEN: usize = 64;

/// Length of an HMAC-SHA512 digest in bytes (128 hex characters after the `$`).
pub const DIGEST_LEN: usize = 64;

/// The random challenge of one session. Drawn by the caller from a cryptographic RNG.
pub type Nonce = [u8; NONCE_LEN];

type HmacSha512 = Hmac<Sha512>;

fn mac(key: &StreamKey, nonce: &[u8]) -> HmacSha512 {
    // HMAC accepts keys of any length (longer ones are hashed), so this cannot fail.
    let mut mac = match HmacSha512::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    };
    mac.update(nonce);
    mac
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> ! {
    // `Hmac::new_from_slice` only fails for fixed-size-key MACs, which HMAC is not.
    panic!("HMAC rejected a key: HMAC accepts every key length")
}

/// Computes the digest a client sends for `nonce` with `key`.
pub fn digest(key: &StreamKey, nonce: &[u8]) -> [u8; DIGEST_LEN] {
    mac(key, nonce).finalize().into_bytes().into()
}

/// Checks a client's digest in constant time.
pub fn verify(key: &StreamKey, nonce: &[u8], client_digest: &[u8]) -> bool {
    mac(key, nonce).verify_slice(client_digest).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire reference's test vector, computed independently of this code.
    pub(crate) const REFERENCE_DIGEST: &str = concat!(
        "fc74e95e8a8beddd570e37bed704e9b86db409c285dfd0cd01915f6f5f88b37f",
        "2a10b431e5bacb444570541efe83a8bc6e58c4a87427fa604e034c30f5e000b4"
    );

    fn counting_nonce() -> Vec<u8> {
        (0u8..64).collect()
    }

    #[test]
    fn matches_the_reference_vector() {
        let d = digest(&StreamKey::new("testkey"), &counting_nonce());
        assert_eq!(hex::encode(d), REFERENCE_DIGEST);
    }

    /// Computed with Python's `hmac` module:
    /// `hmac.new(b"a much longer secret ...", bytes(range(255, 191, -1)), "sha512").hexdigest()`.
    #[test]
    fn matches_python_hmac_for_a_long_key() {
        let key = StreamKey::new(
            "a much longer secret, longer than the 128-byte SHA-512 block: ".repeat(3),
        );
        let nonce: Vec<u8> = (192u8..=255).rev().collect();
        assert_eq!(hex::encode(digest(&key, &nonce)), PYTHON_LONG_KEY_DIGEST);
    }

    const PYTHON_LONG_KEY_DIGEST: &str = include_str!("../../tests/data/hmac-long-key.txt");

    #[test]
    fn verify_is_exact() {
        let key = StreamKey::new("testkey");
        let nonce = counting_nonce();
        let good = digest(&key, &nonce);
        assert!(verify(&key, &nonce, &good));
        let mut bad = good;
        bad[63] ^= 1;
        assert!(!verify(&key, &nonce, &bad));
        assert!(!verify(&key, &nonce, &good[..63]));
        assert!(!verify(&StreamKey::new("testkez"), &nonce, &good));
    }
}
