//! Self-signed DTLS certificates. WebRTC authenticates a certificate by the fingerprint the
//! SDP carries, not by a chain, so a fresh self-signed one per process is what every stack
//! uses: browsers make ECDSA P-256 ones, GStreamer RSA-2048. The server makes ECDSA P-256
//! (small, fast to sign, taken by every stack); RSA is here so tests can be the peers the
//! server has to take.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509Builder, X509NameBuilder};
use str0m::crypto::dtls::DtlsCert;

/// The key a certificate is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256 with SHA-256: what browsers and the server use.
    EcdsaP256,
    /// RSA with this many bits, signed with SHA-256 (GStreamer: 2048).
    Rsa(u32),
}

/// A self-signed certificate and its private key, both DER (the key as PKCS#8), valid from
/// a day ago (clocks differ) for 30 days: a process's certificate never outlives it by much.
pub fn generate(kind: KeyKind) -> Result<DtlsCert, ErrorStack> {
    let key: PKey<Private> = match kind {
        KeyKind::EcdsaP256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            PKey::from_ec_key(EcKey::generate(&group)?)?
        }
        KeyKind::Rsa(bits) => PKey::from_rsa(Rsa::generate(bits)?)?,
    };
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "itg")?;
    let name = name.build();
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    b.set_serial_number(serial.to_asn1_integer()?.as_ref())?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = 86_400;
    let start = i64::try_from(now.saturating_sub(day)).unwrap_or(i64::MAX);
    b.set_not_before(Asn1Time::from_unix(start)?.as_ref())?;
    b.set_not_after(Asn1Time::days_from_now(30)?.as_ref())?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok(DtlsCert {
        certificate: b.build().to_der()?,
        private_key: key.private_key_to_pkcs8()?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use openssl::x509::X509;

    #[test]
    fn certificates_of_each_kind_parse_back_with_their_key() {
        for kind in [KeyKind::EcdsaP256, KeyKind::Rsa(2048)] {
            let c = generate(kind).unwrap();
            let x = X509::from_der(&c.certificate).unwrap();
            let key = PKey::private_key_from_der(&c.private_key).unwrap();
            assert!(x.public_key().unwrap().public_eq(&key), "{kind:?}");
            assert!(x.verify(&key).unwrap(), "{kind:?} is self-signed");
            let is_rsa = key.rsa().is_ok();
            assert_eq!(is_rsa, matches!(kind, KeyKind::Rsa(_)));
        }
    }
}
