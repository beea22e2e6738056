//! One DTLS 1.2 endpoint (RFC 6347, with DTLS-SRTP of RFC 5764) as str0m's `DtlsInstance`.
//!
//! OpenSSL reads and writes through an in-memory pair of datagram queues instead of a socket:
//! str0m hands in each DTLS datagram it demultiplexed, and takes out the records OpenSSL
//! wrote. A read returns one whole datagram (DTLS needs datagram boundaries); both queues are
//! bounded, so a peer that floods DTLS records costs at most [`MAX_QUEUED`] datagrams.
//!
//! **DTLS is only the key exchange here.** The server's peers carry media (SRTP, keyed from
//! the handshake's exported keying material) and no data channels: the server answers no
//! `m=application`. So once the handshake is done and its results are handed to str0m, the
//! OpenSSL session (~60 KB: record buffers, handshake state) is dropped. Two things a DTLS
//! session would still do are covered without it:
//!
//! - As the server, our last flight (ChangeCipherSpec, Finished) may be lost; the client then
//!   sends its own last flight again. That flight's datagrams are kept (a few hundred bytes)
//!   and sent again, byte for byte, whenever a handshake record arrives afterwards (at most
//!   [`MAX_REPLAYS`] times). The client never saw their record numbers, so it takes them.
//!   As the client, being connected means the server's Finished arrived: nothing is owed.
//! - A peer's `close_notify` can no longer be read, so it does not end the session at once:
//!   the peer table ends it on WHIP/WHEP `DELETE`, a closed WebSocket, or ICE going silent.
//!
//! The OpenSSL session is made when the handshake starts (a client's first step, a server's
//! first ClientHello), not before: an offer answered but never followed up costs no OpenSSL
//! memory.
//!
//! Time: OpenSSL keeps its handshake retransmission timer on the system clock (1 s, doubling)
//! and retransmits when a handshake step finds it expired. While a handshake is under way the
//! instance asks str0m for a timeout every [`HANDSHAKE_TICK`] and steps the handshake there.
//! The handshake's own deadline is the peer table's (`--viewer-connect-timeout`).
//!
//! The peer must present a certificate in both roles (WebRTC authenticates it by the SDP
//! fingerprint, which str0m checks on [`DtlsOutput::PeerCert`]): OpenSSL is told to accept any
//! self-signed certificate and to fail a handshake without one.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::debug;
use openssl::error::ErrorStack;

use super::{count_handshake, PeerKey};
use openssl::pkey::PKey;
use openssl::srtp::SrtpProfileId;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions,
    SslSessionCacheMode, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, KeyingMaterial, ProtocolVersion, SrtpProfile,
};

/// The datagram size handshake flights are cut to when str0m names none (str0m's target).
pub(super) const DEFAULT_MTU: usize = 1150;
/// Most datagrams held in either direction.
const MAX_QUEUED: usize = 64;
/// How often a handshake under way is stepped (OpenSSL's first retransmission is after 1 s).
const HANDSHAKE_TICK: Duration = Duration::from_millis(100);
/// How many times the server's last flight is sent again after the session was dropped.
const MAX_REPLAYS: u32 = 16;
/// The RFC 5764 section 4.2 exporter label for DTLS-SRTP keys.
const SRTP_LABEL: &str = "EXTRACTOR-dtls_srtp";
/// A DTLS record header: type, version, epoch, sequence number, length (RFC 6347 4.1).
const RECORD_HEADER: usize = 13;
/// The record content type of handshake messages (RFC 5246 section 6.2.1).
const HANDSHAKE: u8 = 22;
/// ECDHE only (forward secrecy), AEAD first; the CBC suites stay for older embedded peers.
/// The suite's signature half follows the local certificate (ECDSA for the server).
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
    ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
    ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
    ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA";
/// SRTP protection profiles in the server's preference, as str0m's own DTLS orders them (the
/// egress figures were measured with AES-256-GCM).
const SRTP_PROFILES: &str = "SRTP_AEAD_AES_256_GCM:SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80";

/// The two datagram queues OpenSSL reads and writes.
#[derive(Default)]
struct Datagrams {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(d) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        // OpenSSL reads with room for the largest record; a longer datagram is cut (and then
        // fails its record check), never spread over two reads.
        let n = d.len().min(buf.len());
        if let (Some(to), Some(from)) = (buf.get_mut(..n), d.get(..n)) {
            to.copy_from_slice(from);
        }
        Ok(n)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.outgoing.len() >= MAX_QUEUED {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Which output a polled byte string is.
enum Bytes {
    Packet,
    PeerCert,
}

enum Phase {
    /// Made, but str0m has not said which role it plays: no OpenSSL session yet.
    Idle {
        ctx: SslContext,
        mtu: u32,
    },
    Handshaking(SslStream<Datagrams>),
    /// Keys handed out, OpenSSL session dropped; what a lost last flight needs is kept.
    Connected {
        last_flight: Vec<Vec<u8>>,
        replays: u32,
    },
    /// The handshake failed; every further call says so.
    Failed,
}

/// One DTLS endpoint.
pub struct OpensslDtls {
    phase: Phase,
    active: Option<bool>,
    /// Datagrams to send, taken from OpenSSL's queue (or a replayed flight).
    out: VecDeque<Vec<u8>>,
    /// The latest time str0m gave (timeouts are reported from it).
    now: Instant,
    /// Outputs of the completed handshake, until str0m polls them.
    peer_cert: Option<Vec<u8>>,
    keying: Option<(Vec<u8>, SrtpProfile)>,
    connected_event: bool,
    closing: bool,
}

impl std::fmt::Debug for OpensslDtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.phase {
            Phase::Idle { .. } => "idle",
            Phase::Handshaking(_) => "handshaking",
            Phase::Connected { .. } => "connected",
            Phase::Failed => "failed",
        };
        f.debug_struct("OpensslDtls")
            .field("active", &self.active)
            .field("phase", &phase)
            .finish_non_exhaustive()
    }
}

/// Contexts by certificate: a context holds the parsed certificate and key, shared by every
/// endpoint that presents them (the server has one certificate; tests have a few).
static CONTEXTS: Mutex<Vec<(Vec<u8>, SslContext)>> = Mutex::new(Vec::new());
const MAX_CONTEXTS: usize = 4;

fn context(cert: &DtlsCert) -> Result<SslContext, ErrorStack> {
    let mut cache = CONTEXTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, ctx)) = cache.iter().find(|(der, _)| *der == cert.certificate) {
        return Ok(ctx.clone());
    }
    let mut b = SslContextBuilder::new(SslMethod::dtls())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_cipher_list(CIPHERS)?;
    b.set_tlsext_use_srtp(SRTP_PROFILES)?;
    // Ask for the peer's certificate in either role and fail without one; any self-signed
    // certificate passes here, its fingerprint is checked against the SDP by str0m.
    b.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        |_, _| true,
    );
    b.set_certificate(X509::from_der(&cert.certificate)?.as_ref())?;
    b.set_private_key(PKey::private_key_from_der(&cert.private_key)?.as_ref())?;
    b.check_private_key()?;
    // Our MTU, not a socket's; fresh ECDHE keys per handshake; no session resumption (WebRTC
    // never resumes, and a server's session cache would keep ~20 000 sessions of the dead).
    b.set_options(SslOptions::NO_QUERY_MTU | SslOptions::SINGLE_ECDH_USE | SslOptions::NO_TICKET);
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    b.set_mode(SslMode::RELEASE_BUFFERS);
    let ctx = b.build();
    if cache.len() >= MAX_CONTEXTS {
        cache.remove(0);
    }
    cache.push((cert.certificate.clone(), ctx.clone()));
    Ok(ctx)
}

fn profile_of(id: SrtpProfileId) -> Option<SrtpProfile> {
    match id {
        SrtpProfileId::SRTP_AEAD_AES_256_GCM => Some(SrtpProfile::AEAD_AES_256_GCM),
        SrtpProfileId::SRTP_AEAD_AES_128_GCM => Some(SrtpProfile::AEAD_AES_128_GCM),
        SrtpProfileId::SRTP_AES128_CM_SHA1_80 => Some(SrtpProfile::AES128_CM_SHA1_80),
        _ => None,
    }
}

/// The error str0m is given for a failed handshake (it names no reason of OpenSSL's; the
/// reason is logged here).
fn failed() -> DtlsImplError {
    // handshake_failure (RFC 5246 section 7.2.2).
    DtlsImplError::SecurityError(dimpl::SecurityError::FatalAlert { description: 40 })
}

/// Whether a datagram carries an encrypted handshake record: a client's Finished, which ends
/// its last flight, so once per repetition of that flight however it is split in datagrams.
fn has_finished(mut datagram: &[u8]) -> bool {
    while let Some(Ok(h)) = datagram
        .get(..RECORD_HEADER)
        .map(<[u8; RECORD_HEADER]>::try_from)
    {
        let [kind, _, _, e0, e1, _, _, _, _, _, _, l0, l1] = h;
        if kind == HANDSHAKE && u16::from_be_bytes([e0, e1]) > 0 {
            return true;
        }
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        datagram = datagram.get(RECORD_HEADER + len..).unwrap_or_default();
    }
    false
}

impl OpensslDtls {
    /// An endpoint that will present `cert`; `mtu` bounds its handshake datagrams.
    pub fn new(cert: &DtlsCert, now: Instant, mtu: usize) -> Result<OpensslDtls, ErrorStack> {
        Ok(OpensslDtls {
            phase: Phase::Idle {
                ctx: context(cert)?,
                mtu: u32::try_from(mtu).unwrap_or(u32::MAX),
            },
            active: None,
            out: VecDeque::new(),
            now,
            peer_cert: None,
            keying: None,
            connected_event: false,
            closing: false,
        })
    }

    /// Whether the OpenSSL session is still held (it is only during the handshake).
    pub fn holds_session(&self) -> bool {
        matches!(self.phase, Phase::Handshaking(_))
    }

    /// Steps the handshake with what arrived; collects what OpenSSL wrote.
    fn step(&mut self) -> Result<(), DtlsImplError> {
        let Phase::Handshaking(stream) = &mut self.phase else {
            return Ok(());
        };
        let result = stream.do_handshake();
        self.out.extend(stream.get_mut().outgoing.drain(..));
        match result {
            Ok(()) => self.handshake_done(),
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => Ok(()),
            Err(e) => Err(self.fail(&format!("DTLS handshake failed: {e}"))),
        }
    }

    /// Takes the handshake's results for str0m and drops the OpenSSL session.
    fn handshake_done(&mut self) -> Result<(), DtlsImplError> {
        let Phase::Handshaking(stream) = &self.phase else {
            return Ok(());
        };
        let ssl = stream.ssl();
        let Some(cert) = ssl.peer_certificate() else {
            return Err(self.fail("the DTLS peer presented no certificate"));
        };
        let Some(profile) = ssl.selected_srtp_profile().and_then(|p| profile_of(p.id())) else {
            return Err(self.fail("the DTLS peer agreed on no SRTP profile"));
        };
        let mut keying = vec![0; profile.keying_material_len()];
        if let Err(e) = ssl.export_keying_material(&mut keying, SRTP_LABEL, None) {
            return Err(self.fail(&format!("DTLS-SRTP key export failed: {e}")));
        }
        let der = match cert.to_der() {
            Ok(d) => d,
            Err(e) => return Err(self.fail(&format!("the DTLS peer's certificate: {e}"))),
        };
        let key = cert.public_key().ok().map(|k| match k.id() {
            openssl::pkey::Id::RSA => (PeerKey::Rsa, format!("RSA-{}", k.bits())),
            openssl::pkey::Id::EC => (PeerKey::Ecdsa, format!("ECDSA-{}", k.bits())),
            other => (PeerKey::Other, format!("{other:?}")),
        });
        count_handshake(key.as_ref().map_or(PeerKey::Other, |k| k.0));
        let key = key.map(|k| k.1);
        debug!(
            "DTLS connected ({}, {}, SRTP {profile:?}, peer key {})",
            ssl.version_str(),
            ssl.current_cipher().map_or("?", |c| c.name()),
            key.as_deref().unwrap_or("?"),
        );
        // As the server, what this last step wrote is our last flight.
        let last_flight = if self.active == Some(false) {
            self.out.iter().cloned().collect()
        } else {
            Vec::new()
        };
        self.peer_cert = Some(der);
        self.keying = Some((keying, profile));
        self.connected_event = true;
        self.phase = Phase::Connected {
            last_flight,
            replays: 0,
        };
        Ok(())
    }

    /// Makes the OpenSSL session in the role str0m gave and takes its first step: a client
    /// writes its ClientHello, a server waits for one.
    fn start(&mut self) {
        let Phase::Idle { ctx, mtu } = &self.phase else {
            return;
        };
        let active = self.active == Some(true);
        let made = Ssl::new(ctx).and_then(|mut ssl| {
            ssl.set_mtu(*mtu)?;
            SslStream::new(ssl, Datagrams::default())
        });
        let mut stream = match made {
            Ok(s) => s,
            Err(e) => {
                let _ = self.fail(&format!("DTLS setup failed: {e}"));
                return;
            }
        };
        let first = if active {
            stream.connect()
        } else {
            stream.accept()
        };
        self.out.extend(stream.get_mut().outgoing.drain(..));
        self.phase = Phase::Handshaking(stream);
        if let Err(e) = first {
            if !matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) {
                let _ = self.fail(&format!("DTLS handshake failed: {e}"));
            }
        }
    }

    fn fail(&mut self, why: &str) -> DtlsImplError {
        debug!("{why}");
        self.phase = Phase::Failed;
        failed()
    }
}

impl DtlsInstance for OpensslDtls {
    fn set_active(&mut self, active: bool) {
        if self.active.is_some() {
            return;
        }
        self.active = Some(active);
        // A client writes its ClientHello now; a server makes its session when the first
        // ClientHello arrives (see `handle_packet`).
        if active {
            self.start();
        }
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        match &mut self.phase {
            Phase::Failed => Err(failed()),
            Phase::Idle { .. } if self.active == Some(false) && !packet.is_empty() => {
                self.start();
                self.handle_packet(packet)
            }
            Phase::Idle { .. } => Ok(()),
            Phase::Handshaking(stream) => {
                if packet.is_empty() {
                    // OpenSSL would read an empty datagram as the end of the stream.
                    return Ok(());
                }
                let q = &mut stream.get_mut().incoming;
                if q.len() >= MAX_QUEUED {
                    q.pop_front();
                }
                q.push_back(packet.to_vec());
                self.step()
            }
            Phase::Connected {
                last_flight,
                replays,
            } => {
                // The client's Finished again: it repeats its last flight, so ours was lost. Anything else (a close_notify, records of a data channel that
                // was never offered) cannot be read without the session and is dropped.
                if has_finished(packet) && *replays < MAX_REPLAYS && !last_flight.is_empty() {
                    *replays += 1;
                    debug!("DTLS peer repeated its last flight: ours sent again");
                    self.out.extend(last_flight.iter().cloned());
                }
                Ok(())
            }
        }
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        // Records to send first, then the handshake's results.
        let (kind, bytes) = if let Some(d) = self.out.pop_front() {
            (Bytes::Packet, d)
        } else if let Some(der) = self.peer_cert.take() {
            (Bytes::PeerCert, der)
        } else if let Some((km, profile)) = self.keying.take() {
            return DtlsOutput::KeyingMaterial(KeyingMaterial::new(&km), profile);
        } else if std::mem::take(&mut self.connected_event) {
            return DtlsOutput::Connected;
        } else {
            let wait = if self.holds_session() {
                HANDSHAKE_TICK
            } else {
                Duration::from_secs(24 * 3600)
            };
            return DtlsOutput::Timeout(self.now + wait);
        };
        let needed = bytes.len();
        let Some(to) = buf.get_mut(..needed) else {
            match kind {
                Bytes::Packet => self.out.push_front(bytes),
                Bytes::PeerCert => self.peer_cert = Some(bytes),
            }
            return DtlsOutput::BufferTooSmall { needed };
        };
        to.copy_from_slice(&bytes);
        match kind {
            Bytes::Packet => DtlsOutput::Packet(to),
            Bytes::PeerCert => DtlsOutput::PeerCert(to),
        }
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.now = now;
        match self.phase {
            Phase::Failed => Err(failed()),
            Phase::Handshaking(_) => self.step(),
            Phase::Idle { .. } | Phase::Connected { .. } => Ok(()),
        }
    }

    fn send_application_data(&mut self, _data: &[u8]) -> Result<usize, DtlsImplError> {
        // No data channels are answered, so str0m has nothing to send here; before the
        // handshake "not yet" is the answer it retries on.
        match self.phase {
            Phase::Failed => Err(failed()),
            _ => Ok(0),
        }
    }

    fn is_active(&self) -> bool {
        self.active.unwrap_or(false)
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        matches!(self.phase, Phase::Connected { .. }).then_some(ProtocolVersion::DTLS1_2)
    }

    fn is_closing(&self) -> bool {
        self.closing
    }

    fn is_closed(&self) -> bool {
        self.closing && self.out.is_empty()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        // Without the session no close_notify can be written; the peer learns from ICE.
        self.closing = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::dtls::cert::{generate, KeyKind};
    use str0m::crypto::dtls::DtlsVersion;

    /// What one endpoint put out.
    #[derive(Default, Debug)]
    struct Seen {
        connected: bool,
        peer_cert: Option<Vec<u8>>,
        keying: Option<(Vec<u8>, SrtpProfile)>,
        data: Vec<Vec<u8>>,
        close_notify: bool,
    }

    struct Side {
        dtls: Box<dyn DtlsInstance>,
        seen: Seen,
    }

    impl Side {
        fn openssl(kind: KeyKind, now: Instant) -> (Side, DtlsCert) {
            // One certificate per kind for the whole test binary (RSA-4096 takes a while).
            static CERTS: Mutex<Vec<(KeyKind, DtlsCert)>> = Mutex::new(Vec::new());
            let mut certs = CERTS.lock().unwrap();
            if !certs.iter().any(|(k, _)| *k == kind) {
                certs.push((kind, generate(kind).unwrap()));
            }
            let cert = certs.iter().find(|(k, _)| *k == kind).unwrap().1.clone();
            let dtls = OpensslDtls::new(&cert, now, DEFAULT_MTU).unwrap();
            (
                Side {
                    dtls: Box::new(dtls),
                    seen: Seen::default(),
                },
                cert,
            )
        }

        /// str0m's own DTLS (`dimpl`), as the tools and Chromium-like peers use it.
        fn dimpl(now: Instant) -> (Side, DtlsCert) {
            let p = str0m::crypto::from_feature_flags();
            let cert = p.dtls_provider.generate_certificate().unwrap();
            let dtls = p
                .dtls_provider
                .new_dtls(&cert, now, DtlsVersion::Dtls12, Some(DEFAULT_MTU))
                .unwrap();
            (
                Side {
                    dtls,
                    seen: Seen::default(),
                },
                cert,
            )
        }

        /// Drains outputs; returns the datagrams to deliver.
        fn poll(&mut self) -> Vec<Vec<u8>> {
            let mut buf = vec![0u8; 2000];
            let mut out = Vec::new();
            for _ in 0..1000 {
                match self.dtls.poll_output(&mut buf) {
                    DtlsOutput::Packet(p) => out.push(p.to_vec()),
                    DtlsOutput::PeerCert(c) => self.seen.peer_cert = Some(c.to_vec()),
                    DtlsOutput::KeyingMaterial(k, p) => self.seen.keying = Some((k.to_vec(), p)),
                    DtlsOutput::Connected => self.seen.connected = true,
                    DtlsOutput::ApplicationData(d) => self.seen.data.push(d.to_vec()),
                    DtlsOutput::CloseNotify => self.seen.close_notify = true,
                    DtlsOutput::Timeout(_) => return out,
                    other => panic!("unexpected {other:?}"),
                }
            }
            panic!("poll_output never reached a timeout");
        }
    }

    /// Moves datagrams both ways until neither side has any (bounded).
    fn pump(client: &mut Side, server: &mut Side, now: Instant) -> Result<(), DtlsImplError> {
        for _ in 0..50 {
            client.dtls.handle_timeout(now)?;
            server.dtls.handle_timeout(now)?;
            let c = client.poll();
            let s = server.poll();
            if c.is_empty() && s.is_empty() {
                return Ok(());
            }
            for d in c {
                server.dtls.handle_packet(&d)?;
            }
            for d in s {
                client.dtls.handle_packet(&d)?;
            }
        }
        panic!("the exchange did not settle");
    }

    fn handshake(mut client: (Side, DtlsCert), mut server: (Side, DtlsCert), now: Instant) {
        client.0.dtls.set_active(true);
        server.0.dtls.set_active(false);
        pump(&mut client.0, &mut server.0, now).unwrap();
        let (c, s) = (&client.0.seen, &server.0.seen);
        assert!(c.connected && s.connected, "client {c:?} server {s:?}");
        // Each side saw the other's certificate (str0m checks its fingerprint against the SDP).
        assert_eq!(c.peer_cert.as_deref(), Some(&server.1.certificate[..]));
        assert_eq!(s.peer_cert.as_deref(), Some(&client.1.certificate[..]));
        // The same SRTP keys and profile on both sides: media will decrypt.
        let (ck, cp) = c.keying.clone().unwrap();
        let (sk, sp) = s.keying.clone().unwrap();
        assert_eq!((ck.len(), cp), (sk.len(), sp));
        assert_eq!(ck, sk);
        assert_eq!(cp, SrtpProfile::AEAD_AES_256_GCM);
        assert_eq!(
            client.0.dtls.protocol_version(),
            Some(ProtocolVersion::DTLS1_2)
        );
    }

    #[test]
    fn every_certificate_kind_connects_in_both_roles() {
        let now = Instant::now();
        let kinds = [KeyKind::EcdsaP256, KeyKind::Rsa(2048), KeyKind::Rsa(4096)];
        for client in kinds {
            for server in kinds {
                eprintln!("client {client:?}, server {server:?}");
                handshake(Side::openssl(client, now), Side::openssl(server, now), now);
            }
        }
    }

    #[test]
    fn str0m_own_dtls_connects_to_it_in_both_roles() {
        let now = Instant::now();
        handshake(
            Side::dimpl(now),
            Side::openssl(KeyKind::EcdsaP256, now),
            now,
        );
        handshake(
            Side::openssl(KeyKind::EcdsaP256, now),
            Side::dimpl(now),
            now,
        );
        // An RSA client (GStreamer's kind) is taken where str0m's own DTLS refuses it.
        handshake(
            Side::openssl(KeyKind::Rsa(2048), now),
            Side::openssl(KeyKind::EcdsaP256, now),
            now,
        );
    }

    /// Steps `side`'s timers on the real clock (OpenSSL's retransmission timer runs on it)
    /// until it writes something, for at most 5 s.
    fn until_it_sends(side: &mut Side) -> Vec<Vec<u8>> {
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(HANDSHAKE_TICK);
            side.dtls.handle_timeout(Instant::now()).unwrap();
            let out = side.poll();
            if !out.is_empty() {
                return out;
            }
        }
        panic!("nothing was sent again");
    }

    #[test]
    fn a_lost_client_hello_is_sent_again() {
        let now = Instant::now();
        let (mut client, _) = Side::openssl(KeyKind::EcdsaP256, now);
        let (mut server, _) = Side::openssl(KeyKind::EcdsaP256, now);
        client.dtls.set_active(true);
        server.dtls.set_active(false);
        assert!(
            !client.poll().is_empty(),
            "a client starts with its ClientHello"
        );
        // Lost. The ClientHello comes again after OpenSSL's timer (1 s).
        for d in until_it_sends(&mut client) {
            server.dtls.handle_packet(&d).unwrap();
        }
        pump(&mut client, &mut server, Instant::now()).unwrap();
        assert!(client.seen.connected && server.seen.connected);
    }

    /// The server's last flight is lost after it dropped its OpenSSL session: the client's
    /// repeated flight gets it again, byte for byte, and the client connects.
    fn lost_last_flight(mut client: Side) {
        let now = Instant::now();
        let (mut server, _) = Side::openssl(KeyKind::EcdsaP256, now);
        client.dtls.set_active(true);
        server.dtls.set_active(false);
        // Deliver everything but the server's answer to the client's last flight.
        let mut last = Vec::new();
        for _ in 0..20 {
            client.dtls.handle_timeout(now).unwrap();
            for d in client.poll() {
                server.dtls.handle_packet(&d).unwrap();
            }
            let s = server.poll();
            if server.seen.connected {
                last = s;
                break;
            }
            for d in s {
                client.dtls.handle_packet(&d).unwrap();
            }
        }
        assert!(server.seen.connected && !last.is_empty());
        assert!(!client.seen.connected);
        let inner = |s: &Side| format!("{:?}", s.dtls);
        assert!(inner(&server).contains("connected"), "{}", inner(&server));
        // The client repeats its flight; the server answers with the flight it kept.
        for d in until_it_sends(&mut client) {
            server.dtls.handle_packet(&d).unwrap();
        }
        let again = server.poll();
        assert_eq!(again, last, "the kept flight, byte for byte");
        for d in again {
            client.dtls.handle_packet(&d).unwrap();
        }
        client.poll();
        assert!(client.seen.connected, "{:?}", client.seen);
        assert_eq!(client.seen.keying, server.seen.keying);
    }

    #[test]
    fn a_lost_last_flight_is_answered_from_what_was_kept() {
        lost_last_flight(Side::openssl(KeyKind::Rsa(2048), Instant::now()).0);
        lost_last_flight(Side::dimpl(Instant::now()).0);
    }

    #[test]
    fn garbage_fails_or_is_ignored_without_a_panic_and_queues_stay_bounded() {
        let now = Instant::now();
        for len in 0..=64usize {
            let (mut server, _) = Side::openssl(KeyKind::EcdsaP256, now);
            // Before a role is set, input is ignored and no OpenSSL session exists.
            server.dtls.handle_packet(&vec![22; len]).unwrap();
            server.dtls.set_active(false);
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let _ = server.dtls.handle_packet(&bytes);
            // A record header that claims a handshake of the right version, then nothing.
            let mut fake = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
            fake.extend_from_slice(&bytes);
            let _ = server.dtls.handle_packet(&fake);
            server.poll();
            assert!(!server.seen.connected);
        }
        // A flood before the handshake is held to a bounded queue.
        let (mut server, _) = Side::openssl(KeyKind::EcdsaP256, now);
        server.dtls.set_active(false);
        for i in 0..10_000u32 {
            let _ = server.dtls.handle_packet(&i.to_be_bytes().repeat(300));
        }
        let out = server.poll();
        assert!(out.len() <= MAX_QUEUED);
        // A connected endpoint holds no session: records are dropped, a handshake record
        // gets the kept flight (a bounded number of times), nothing fails.
        let (mut c, _) = Side::openssl(KeyKind::EcdsaP256, now);
        let (mut s, _) = Side::openssl(KeyKind::EcdsaP256, now);
        c.dtls.set_active(true);
        s.dtls.set_active(false);
        pump(&mut c, &mut s, now).unwrap();
        assert!(s.seen.connected && c.seen.connected);
        let mut replayed = 0;
        for len in 0..=64usize {
            for kind in [21u8, 22, 23] {
                let mut rec = vec![kind, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, len as u8];
                rec.extend(std::iter::repeat_n(0xab, len));
                s.dtls.handle_packet(&rec).unwrap();
                s.dtls.handle_packet(&rec[..len.min(rec.len())]).unwrap();
                replayed += s.poll().len();
            }
        }
        assert_eq!(replayed, MAX_REPLAYS as usize, "bounded");
        assert_eq!(s.dtls.send_application_data(b"x").unwrap(), 0);
        // ChangeCipherSpec, then an encrypted handshake record: a Finished.
        let ccs = [20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 1];
        let fin = [22, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 7, 7];
        assert!(has_finished(&[&ccs[..], &fin[..]].concat()));
        assert!(!has_finished(&ccs));
        // Epoch 0 handshake (a ClientHello), application data, a cut record: no Finished.
        assert!(!has_finished(&[
            22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1
        ]));
        assert!(!has_finished(&[
            23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1
        ]));
        assert!(!has_finished(&[&ccs[..], &fin[..10]].concat()));
    }
}
