//! DTLS for every peer the server talks to, through OpenSSL behind str0m's crypto provider seam.
//!
//! str0m 0.25 does its DTLS with `dimpl` 0.9, which signs and verifies ECDSA only: its
//! CertificateRequest offers no RSA signature algorithm, so a peer whose certificate is RSA
//! (GStreamer's `webrtcbin` makes RSA-2048 ones, as do many embedded encoders and older
//! libraries) sends an empty Certificate and the handshake ends in `handshake_failure`.
//! OpenSSL's DTLS 1.2 takes ECDSA, RSA (PKCS#1 and PSS) and Ed25519 certificates in both roles.
//!
//! Only the handshake moves to OpenSSL: [`provider`] is str0m's own aws-lc-rs provider with its
//! DTLS factory replaced, so SRTP (the per-packet work), SHA-1/SHA-256 and the STUN HMAC are
//! exactly what they were. The handshake's keying material is exported with the RFC 5764
//! label and handed to str0m, which derives the SRTP keys as before.
//!
//! Why not another way: str0m 0.25's own `openssl` feature needs `str0m-openssl` 0.7, which is
//! not published; going back to str0m 0.24 gives up the send path the egress work was measured
//! on; RSA inside `dimpl` would be a fork of a DTLS stack to keep. The `openssl` crate builds
//! against the system's libssl (Debian's `libssl-dev`) in seconds.
//!
//! - [`session`]: one DTLS endpoint as str0m's `DtlsInstance`, sans-IO over in-memory datagrams.
//! - [`cert`]: self-signed certificates (ECDSA P-256 for the server; RSA for tests of peers).

pub mod cert;
mod session;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{DtlsCert, DtlsInstance, DtlsProvider, DtlsVersion};
use str0m::crypto::{CryptoError, CryptoProvider};

pub use session::OpensslDtls;

use std::sync::atomic::{AtomicU64, Ordering};

/// Completed handshakes by the key of the peer's certificate: ECDSA, RSA, anything else.
static HANDSHAKES: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// The kind of key a DTLS peer presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKey {
    Ecdsa,
    Rsa,
    Other,
}

impl PeerKey {
    /// Every kind, in the order of [`handshakes`].
    pub const ALL: [PeerKey; 3] = [PeerKey::Ecdsa, PeerKey::Rsa, PeerKey::Other];

    /// Its label in the metrics.
    pub fn name(self) -> &'static str {
        match self {
            PeerKey::Ecdsa => "ecdsa",
            PeerKey::Rsa => "rsa",
            PeerKey::Other => "other",
        }
    }
}

fn count_handshake(key: PeerKey) {
    if let Some(c) = HANDSHAKES.get(key as usize) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Completed DTLS handshakes of this process by the peer's key (every `Rtc` of the server
/// shares the provider, so this is a process-wide count).
pub fn handshakes() -> [(PeerKey, u64); 3] {
    PeerKey::ALL.map(|k| {
        (
            k,
            HANDSHAKES
                .get(k as usize)
                .map_or(0, |c| c.load(Ordering::Relaxed)),
        )
    })
}

/// str0m's DTLS factory backed by OpenSSL.
#[derive(Debug)]
pub struct OpensslDtlsProvider;

static OPENSSL_DTLS: OpensslDtlsProvider = OpensslDtlsProvider;

impl DtlsProvider for OpensslDtlsProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        match cert::generate(cert::KeyKind::EcdsaP256) {
            Ok(c) => Some(c),
            Err(e) => {
                log::warn!("DTLS certificate: {e}");
                None
            }
        }
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        if version != DtlsVersion::Dtls12 {
            return Err(CryptoError::Other(format!(
                "{version} is not offered: OpenSSL's DTLS here is DTLS 1.2"
            )));
        }
        let dtls = OpensslDtls::new(cert, now, mtu.unwrap_or(session::DEFAULT_MTU))
            .map_err(|e| CryptoError::Other(format!("DTLS setup: {e}")))?;
        Ok(Box::new(dtls))
    }
}

/// The crypto provider every server peer's `Rtc` gets: str0m's aws-lc-rs provider (SRTP,
/// hashes, STUN HMAC) with DTLS done by OpenSSL.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let base = str0m::crypto::from_feature_flags();
            Arc::new(CryptoProvider {
                dtls_provider: &OPENSSL_DTLS,
                ..base
            })
        })
        .clone()
}
