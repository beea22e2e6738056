//! Keeping a peer's ICE pair open when its stack sends no binding requests once connected.
//!
//! The server is ICE-lite: it never checks a pair itself, and str0m's lite agent drops a pair
//! that has had no binding request for 15 s. Browsers send one every few seconds (consent
//! freshness, RFC 7675), so their sessions last as long as they do. libnice, under GStreamer's
//! `webrtcbin`, sends none after nomination unless its consent freshness is turned on (it is
//! not in GStreamer 1.22): it keeps the pair open with its media and RTCP and a binding
//! indication now and then, as RFC 8445 (section 11) allows. Pion (ice v2, under Go tools)
//! sends a request only when its pair has been idle one way or the other for 2 s, which media
//! flowing both ways never lets happen. Without help every GStreamer and Pion viewer and
//! publisher was cut 15 s in.
//!
//! So a connected peer that has been heard from lately but has sent no binding request for a
//! while gets one made on its behalf: from the path and with the username, priority and
//! tie-breaker of its last real request (one that carried the session's own signature, so a
//! forged packet cannot pick the path), signed with the session's password, and fed to its
//! `Rtc`; str0m's answer to it is not sent. A peer that goes quiet is let go as before: 15 s
//! after the last request made for it, at most [`HEARD_WITHIN`] + 15 s after it was last heard.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use log::{debug, info};
use sha1::Sha1;
use str0m::ice::{StunMessage, TransId};
use str0m::net::{Protocol, Receive};
use str0m::Input;

use super::peers::guarded;
use crate::server::Server;

/// No request from the peer for this long: one is made for it. Longer than consent
/// freshness's 4-6 s between checks (RFC 7675: browsers, aiortc), so a stack that checks is
/// left alone; short enough that one made request lands well inside str0m's 15 s.
pub(in crate::server) const REQUEST_AFTER: Duration = Duration::from_secs(7);
/// Made only while the peer was heard from within this (its RTCP comes every 1-5 s).
pub(in crate::server) const HEARD_WITHIN: Duration = Duration::from_secs(10);
/// The longest ICE username kept (STUN allows 513 bytes; ufrags are at most 256 characters).
const MAX_USERNAME: usize = 513;

/// The path and attributes of a peer's last authentic binding request.
#[derive(Debug, Clone)]
struct Path {
    proto: Protocol,
    source: SocketAddr,
    destination: SocketAddr,
    username: String,
    prio: u32,
    tie_breaker: u64,
}

/// A request made for a peer: what to feed its `Rtc`.
#[derive(Debug)]
pub(in crate::server) struct Made {
    pub(in crate::server) proto: Protocol,
    pub(in crate::server) source: SocketAddr,
    pub(in crate::server) destination: SocketAddr,
    pub(in crate::server) bytes: Vec<u8>,
}

/// One peer's liveness as its traffic shows it (see the module's doc).
#[derive(Debug)]
pub(in crate::server) struct Keepalive {
    /// The session's own ICE password: what the peer signs its requests with.
    password: String,
    /// The last binding request from the peer, or made for it.
    last_request: Option<Instant>,
    /// The last datagram of any other kind from it.
    last_heard: Option<Instant>,
    path: Option<Path>,
    /// The transaction id of the request last made for it, until str0m answers it.
    pending: Option<[u8; 12]>,
    /// Requests made for it.
    pub(in crate::server) made: u64,
}

/// HMAC-SHA1 over the parts, as STUN's MESSAGE-INTEGRITY wants it.
pub(in crate::server) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return [0; 20]; // HMAC takes keys of any length
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Whether a datagram is a STUN message (RFC 5389's first two bits and magic cookie).
fn is_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] < 2 && data[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

impl Keepalive {
    /// For a session whose own ICE password is `password`.
    pub(in crate::server) fn new(password: String) -> Self {
        Self {
            password,
            last_request: None,
            last_heard: None,
            path: None,
            pending: None,
            made: 0,
        }
    }

    /// Takes note of a datagram from the peer, over `proto` from `source` to our
    /// `destination`. Only a binding request signed with the session's password counts as
    /// one (str0m checks the same; a forged one must neither pick the path nor put off the
    /// next request made for the peer).
    pub(in crate::server) fn on_input(
        &mut self,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        let request = is_stun(data)
            .then(|| StunMessage::parse(data).ok())
            .flatten()
            .filter(StunMessage::is_binding_request);
        let Some(m) = request else {
            self.last_heard = Some(now);
            return;
        };
        let Some(username) = m.username().filter(|u| u.len() <= MAX_USERNAME) else {
            return;
        };
        if !m.verify(self.password.as_bytes(), hmac_sha1) {
            return;
        }
        self.last_request = Some(now);
        let known = self
            .path
            .as_ref()
            .is_some_and(|p| p.source == source && p.proto == proto && p.username == username);
        if known {
            return;
        }
        self.path = Some(Path {
            proto,
            source,
            destination,
            username: username.to_string(),
            prio: m.prio().unwrap_or(PRFLX_PRIO),
            tie_breaker: m.ice_controlling().unwrap_or_default(),
        });
    }

    /// A binding request to feed the peer's `Rtc` on its behalf, when one is due (see the
    /// module's doc): connected, no request for [`REQUEST_AFTER`], heard within
    /// [`HEARD_WITHIN`].
    pub(in crate::server) fn due(&mut self, connected: bool, now: Instant) -> Option<Made> {
        let quiet = self
            .last_request
            .is_some_and(|t| now.saturating_duration_since(t) >= REQUEST_AFTER);
        let heard = self
            .last_heard
            .is_some_and(|t| now.saturating_duration_since(t) < HEARD_WITHIN);
        if !(connected && quiet && heard) {
            return None;
        }
        let path = self.path.as_ref()?;
        let id = TransId::new();
        let message = StunMessage::binding_request(
            &path.username,
            id,
            true,
            path.tie_breaker,
            path.prio,
            false,
        );
        let mut buf = vec![0_u8; MAX_USERNAME + 128];
        let n = message
            .to_bytes(Some(self.password.as_bytes()), &mut buf, hmac_sha1)
            .ok()?;
        buf.truncate(n);
        let mut tid = [0_u8; 12];
        tid.copy_from_slice(buf.get(8..20)?);
        self.pending = Some(tid);
        self.last_request = Some(now);
        self.made += 1;
        Some(Made {
            proto: path.proto,
            source: path.source,
            destination: path.destination,
            bytes: buf,
        })
    }

    /// Whether a datagram str0m would send is its answer to the request made for the peer
    /// (not sent: the peer did not ask).
    pub(in crate::server) fn swallows(&mut self, data: &[u8]) -> bool {
        let Some(tid) = self.pending else {
            return false;
        };
        let answer = is_stun(data) && data[0..2] == [0x01, 0x01] && data[8..20] == tid;
        if answer {
            self.pending = None;
        }
        answer
    }
}

impl Server {
    /// Feeds peer `id`'s `Rtc` the binding request made for it, when one is due (see the
    /// module's doc); runs before the peer's timeout, where str0m would drop a quiet pair.
    pub(in crate::server) fn peer_keepalive(&mut self, id: u64, now: Instant) {
        let Some(v) = self.viewers.map.get_mut(&id) else {
            return;
        };
        let Some(made) = v.keepalive.due(v.connected(), now) else {
            return;
        };
        if v.keepalive.made == 1 {
            info!(
                "peer {id}: no ICE binding request from it for {} s while its traffic comes \
                 (libnice and Pion send none while media flows): the server makes them",
                REQUEST_AFTER.as_secs()
            );
        }
        self.counters.ice_keepalives += 1;
        let Ok(contents) = made.bytes.as_slice().try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: made.proto,
                source: made.source,
                destination: made.destination,
                contents,
            },
        );
        if let Ok(Err(e)) = guarded(|| v.rtc.handle_input(input)) {
            debug!("peer {id}: the binding request made for it: {e}");
        }
    }
}

/// A peer-reflexive candidate's priority (RFC 8445 5.1.2.1, type preference 110), for a
/// request that carried none.
const PRFLX_PRIO: u32 = (110 << 24) | (65535 << 8) | 255;

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::ice::StunMessage;

    const PWD: &str = "the-session-password-24c";

    fn request(username: &str, pwd: &str) -> Vec<u8> {
        let m = StunMessage::binding_request(username, TransId::new(), true, 77, 1234, false);
        let mut buf = vec![0; 600];
        let n = m
            .to_bytes(Some(pwd.as_bytes()), &mut buf, hmac_sha1)
            .unwrap();
        buf.truncate(n);
        buf
    }

    fn addrs() -> (SocketAddr, SocketAddr) {
        (
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:20000".parse().unwrap(),
        )
    }

    #[test]
    fn a_peer_heard_but_not_asking_gets_a_request_signed_like_its_own() {
        let (peer, us) = addrs();
        let t0 = Instant::now();
        let mut k = Keepalive::new(PWD.into());
        k.on_input(Protocol::Udp, peer, us, &request("srv:cli", PWD), t0);
        // Media and RTCP keep coming, no request.
        for s in 1..5 {
            k.on_input(
                Protocol::Udp,
                peer,
                us,
                &[0x80, 96, 0, 1],
                t0 + Duration::from_secs(s),
            );
            assert!(k.due(true, t0 + Duration::from_secs(s)).is_none());
        }
        let at = t0 + REQUEST_AFTER;
        assert!(k.due(false, at).is_none(), "not before it connected");
        let made = k.due(true, at).unwrap();
        assert_eq!(
            (made.proto, made.source, made.destination),
            (Protocol::Udp, peer, us)
        );
        let m = StunMessage::parse(&made.bytes).unwrap();
        assert!(m.is_binding_request());
        assert_eq!(m.username(), Some("srv:cli"));
        assert_eq!((m.prio(), m.ice_controlling()), (Some(1234), Some(77)));
        assert!(m.verify(PWD.as_bytes(), hmac_sha1));
        assert!(!m.verify(b"another password", hmac_sha1));
        assert_eq!(k.made, 1);
        // The next one a full interval later; str0m's answer is kept back, once.
        assert!(k.due(true, at + Duration::from_secs(1)).is_none());
        let mut answer = made.bytes.clone();
        answer[0..2].copy_from_slice(&[0x01, 0x01]);
        let mut other = answer.clone();
        other[19] ^= 1;
        assert!(!k.swallows(&other), "another transaction goes out");
        assert!(!k.swallows(&[0x80; 40]), "media goes out");
        assert!(k.swallows(&answer));
        assert!(!k.swallows(&answer), "only once");
    }

    #[test]
    fn nothing_is_made_for_a_peer_that_asks_itself_or_went_quiet() {
        let (peer, us) = addrs();
        let t0 = Instant::now();
        let mut k = Keepalive::new(PWD.into());
        // A browser: a request every 2.5 s, media in between.
        for i in 0..8_u32 {
            let at = t0 + Duration::from_millis(2500) * i;
            k.on_input(Protocol::Udp, peer, us, &request("srv:cli", PWD), at);
            k.on_input(Protocol::Udp, peer, us, &[0x80; 20], at);
            assert!(k.due(true, at + Duration::from_secs(2)).is_none());
        }
        // Gone: heard last at 17.5 s; one request made while it may still be there, then none.
        let last = t0 + Duration::from_millis(17500);
        assert!(k.due(true, last + REQUEST_AFTER).is_some());
        assert!(k.due(true, last + HEARD_WITHIN).is_none());
        assert!(k.due(true, last + HEARD_WITHIN * 3).is_none());
        assert_eq!(k.made, 1);
    }

    #[test]
    fn a_request_not_signed_with_the_session_password_sets_no_path() {
        let (peer, us) = addrs();
        let forger: SocketAddr = "192.0.2.9:5000".parse().unwrap();
        let t0 = Instant::now();
        let mut k = Keepalive::new(PWD.into());
        k.on_input(
            Protocol::Udp,
            forger,
            us,
            &request("srv:cli", "guessed"),
            t0,
        );
        k.on_input(
            Protocol::Udp,
            peer,
            us,
            &[0x80; 20],
            t0 + Duration::from_secs(4),
        );
        assert!(k.due(true, t0 + REQUEST_AFTER).is_none(), "no path");
        // The real one, then a forged one from elsewhere: the path stays the peer's.
        k.on_input(
            Protocol::Udp,
            peer,
            us,
            &request("srv:cli", PWD),
            t0 + Duration::from_secs(5),
        );
        // (Nor does a forged one put off the next request made for it.)
        k.on_input(
            Protocol::Udp,
            forger,
            us,
            &request("srv:x", "guessed"),
            t0 + Duration::from_secs(8),
        );
        k.on_input(
            Protocol::Udp,
            peer,
            us,
            &[0x80; 20],
            t0 + Duration::from_secs(11),
        );
        let made = k.due(true, t0 + Duration::from_secs(12)).unwrap();
        assert_eq!(made.source, peer);
        // Junk that looks like STUN: no panic, no path.
        for junk in [
            &[0u8; 3][..],
            &[
                0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ][..],
        ] {
            k.on_input(Protocol::Udp, peer, us, junk, t0 + Duration::from_secs(12));
        }
        assert_eq!(k.path.as_ref().unwrap().username, "srv:cli");
    }
}
