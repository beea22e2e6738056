//! The client session: exact bytes, reply parsing, timers, and refusals.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use ftl_proto::control::*;
use ftl_proto::{ChannelId, Error, StreamKey};

fn client(clock: &Clock) -> ClientSession {
    let (channel, key) = StreamKey::parse_obs("77-testkey").unwrap();
    ClientSession::new(
        ClientConfig::new(channel, key, Metadata::reference(77)),
        clock.at(0),
    )
}

fn sent(c: &mut ClientSession) -> String {
    let mut out = Vec::new();
    while let Some(b) = c.poll_transmit() {
        out.extend(b);
    }
    String::from_utf8(out).unwrap()
}

fn events(c: &mut ClientSession) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn nonce_line() -> String {
    let hex: String = counting_nonce()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("200 {hex}\n")
}

fn connected(clock: &Clock) -> ClientSession {
    let mut c = client(clock);
    sent(&mut c);
    c.handle_input(nonce_line().as_bytes(), clock.at(1))
        .unwrap();
    sent(&mut c);
    c.handle_input(b"200\n", clock.at(2)).unwrap();
    sent(&mut c);
    c.handle_input(b"200 hi. Use UDP port 9000\n", clock.at(3))
        .unwrap();
    assert_eq!(events(&mut c), [ClientEvent::Connected { port: 9000 }]);
    c
}

#[test]
fn sends_the_reference_clients_bytes() {
    let clock = Clock::new();
    let mut c = client(&clock);
    assert_eq!(sent(&mut c), "HMAC\r\n\r\n");
    c.handle_input(nonce_line().as_bytes(), clock.at(1))
        .unwrap();
    assert_eq!(
        sent(&mut c),
        format!("CONNECT 77 ${REFERENCE_DIGEST}\r\n\r\n")
    );
    c.handle_input(b"200\n", clock.at(2)).unwrap();
    let meta = sent(&mut c);
    assert!(meta.starts_with("ProtocolVersion: 0.9\r\n\r\nVendorName: "));
    assert!(meta.contains("Video: true\r\n\r\nVideoCodec: H264\r\n\r\nVideoHeight: 720\r\n\r\n"));
    assert!(meta.ends_with("AudioIngestSSRC: 77\r\n\r\n.\r\n\r\n"));
}

#[test]
fn replies_may_arrive_in_pieces() {
    let clock = Clock::new();
    let mut c = client(&clock);
    sent(&mut c);
    for b in nonce_line().bytes() {
        c.handle_input(&[b], clock.at(1)).unwrap();
    }
    assert!(sent(&mut c).starts_with("CONNECT 77 $"));
}

#[test]
fn pings_every_five_seconds_and_gives_up_after_thirty_silent_ones() {
    let clock = Clock::new();
    let mut c = connected(&clock);
    assert_eq!(c.poll_timeout(), Some(clock.at(5_003)));
    c.handle_timeout(clock.at(5_003));
    assert_eq!(sent(&mut c), "PING 77\r\n\r\n");
    c.handle_input(b"201\n", clock.at(5_010)).unwrap();
    let mut now = 5_003;
    while !c.is_closed() {
        now = c
            .poll_timeout()
            .unwrap()
            .duration_since(clock.t0)
            .as_millis() as u64;
        c.handle_timeout(clock.at(now));
        assert!(now < 60_000, "never gave up");
    }
    assert_eq!(now, 35_010);
    assert_eq!(
        events(&mut c),
        [ClientEvent::Closed {
            reason: ClientCloseReason::Error(Error::KeepaliveTimeout)
        }]
    );
}

#[test]
fn each_handshake_reply_has_a_deadline() {
    let clock = Clock::new();
    let mut c = client(&clock);
    assert_eq!(c.poll_timeout(), Some(clock.at(5_000)));
    c.handle_timeout(clock.at(4_999));
    assert!(!c.is_closed());
    c.handle_timeout(clock.at(5_000));
    assert_eq!(
        events(&mut c),
        [ClientEvent::Closed {
            reason: ClientCloseReason::Error(Error::ReplyTimeout)
        }]
    );
}

#[test]
fn refusals_carry_status_and_reason() {
    let clock = Clock::new();
    let mut c = client(&clock);
    sent(&mut c);
    c.handle_input(nonce_line().as_bytes(), clock.at(1))
        .unwrap();
    let err = c
        .handle_input(b"405 invalid stream key\n", clock.at(2))
        .unwrap_err();
    assert_eq!(
        err,
        Error::Refused {
            status: StatusCode::INVALID_STREAM_KEY,
            reason: "invalid stream key".into()
        }
    );
    assert!(c.is_closed());
}

#[test]
fn an_unsolicited_status_while_streaming_ends_the_stream() {
    let clock = Clock::new();
    let mut c = connected(&clock);
    let err = c.handle_input(b"410 replaced\n", clock.at(10)).unwrap_err();
    assert!(matches!(
        err,
        Error::Refused {
            status: StatusCode::SERVER_TERMINATE,
            ..
        }
    ));
}

#[test]
fn bad_replies_are_errors() {
    let clock = Clock::new();
    let cases: [&[u8]; 5] = [
        b"200 abc\n", // odd-length nonce
        b"200 zz\n",  // not hex
        b"200\n",     // no nonce at all
        b"hello\n",
        b"201\n", // a pong before streaming
    ];
    for reply in cases {
        let mut c = client(&clock);
        sent(&mut c);
        let r = c.handle_input(reply, clock.at(1));
        assert!(
            matches!(r, Err(Error::BadReply(_))),
            "{:?}: {r:?}",
            String::from_utf8_lossy(reply)
        );
    }
    let mut c = connected(&clock);
    assert!(c
        .handle_input(b"200 hi Use UDP port 9000\n", clock.at(5))
        .is_err());
    let mut c = client(&clock);
    sent(&mut c);
    c.handle_input(nonce_line().as_bytes(), clock.at(1))
        .unwrap();
    c.handle_input(b"200\n", clock.at(2)).unwrap();
    let r = c.handle_input(b"200 hi there. Please use port 9000\n", clock.at(3));
    assert!(matches!(r, Err(Error::BadReply(_))));
}

#[test]
fn a_flood_of_reply_bytes_is_bounded() {
    let clock = Clock::new();
    let mut c = client(&clock);
    let r = c.handle_input(&[b'2'; 4096], clock.at(1));
    assert!(matches!(r, Err(Error::LineTooLong { limit: 512 })));
}

#[test]
fn disconnect_is_sent_once() {
    let clock = Clock::new();
    let mut c = connected(&clock);
    c.disconnect();
    c.disconnect();
    assert_eq!(sent(&mut c), "DISCONNECT\r\n\r\n");
    assert_eq!(
        events(&mut c),
        [ClientEvent::Closed {
            reason: ClientCloseReason::Disconnected
        }]
    );
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn client_and_server_complete_a_handshake_and_keep_alive() {
    let clock = Clock::new();
    let mut c = client(&clock);
    let mut s = ServerSession::new(ServerConfig::default(), [9; NONCE_LEN], clock.at(0));
    let (ce, se) = handshake(&mut c, &mut s, &testkey_answers(), clock.at(0));
    assert_eq!(ce, [ClientEvent::Connected { port: 9000 }]);
    assert!(se.contains(&ServerEvent::Authenticated {
        channel: ChannelId(77)
    }));
    // A minute of keepalives with the server answering each.
    let mut now = 0;
    while now < 60_000 {
        now += 1_000;
        c.handle_timeout(clock.at(now));
        s.handle_timeout(clock.at(now));
        while let Some(b) = c.poll_transmit() {
            s.handle_input(&b, clock.at(now)).unwrap();
        }
        while let Some(b) = s.poll_transmit() {
            c.handle_input(&b, clock.at(now)).unwrap();
        }
    }
    assert!(!c.is_closed() && !s.is_closed());
    assert!(s.poll_timeout().unwrap() > clock.at(60_000) + Duration::from_secs(20));
}
