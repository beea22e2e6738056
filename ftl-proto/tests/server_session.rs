//! The server session, command by command and error by error, on a virtual clock.
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
use ftl_proto::{ChannelId, Error, Ssrc};

fn server(clock: &Clock) -> ServerSession {
    ServerSession::new(ServerConfig::default(), counting_nonce(), clock.at(0))
}

fn nonce_reply() -> Vec<u8> {
    format!("200 {}\n", hex_nonce()).into_bytes()
}

fn hex_nonce() -> String {
    counting_nonce()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Feeds one chunk and returns what came out, without answering decisions.
fn feed(s: &mut ServerSession, bytes: &[u8], now: std::time::Instant) -> ServerOut {
    let _ = s.handle_input(bytes, now);
    drain_server(s)
}

/// A server that has just authenticated channel 77.
fn authenticated(clock: &Clock) -> ServerSession {
    let mut s = server(clock);
    feed(&mut s, b"HMAC\r\n\r\n", clock.at(0));
    let out = feed(
        &mut s,
        format!("CONNECT 77 ${REFERENCE_DIGEST}\r\n\r\n").as_bytes(),
        clock.at(1),
    );
    assert_eq!(
        out.events,
        [ServerEvent::KeyRequested {
            channel: ChannelId(77)
        }]
    );
    s.provide_key(&ftl_proto::StreamKey::new("testkey"), clock.at(2))
        .unwrap();
    let out = drain_server(&mut s);
    assert_eq!(text(&out.bytes), "200\n");
    s
}

fn streaming(clock: &Clock) -> ServerSession {
    let mut s = authenticated(clock);
    let meta = Metadata::reference(77);
    for l in meta.to_lines() {
        feed(&mut s, format!("{l}\r\n\r\n").as_bytes(), clock.at(3));
    }
    let out = feed(&mut s, b".\r\n\r\n", clock.at(3));
    assert_eq!(
        out.events,
        [ServerEvent::MetadataReady {
            channel: ChannelId(77),
            metadata: meta
        }]
    );
    s.assign_port(9000, clock.at(4)).unwrap();
    let out = drain_server(&mut s);
    assert_eq!(text(&out.bytes), "200 hi. Use UDP port 9000\n");
    assert_eq!(
        out.events,
        [ServerEvent::Streaming {
            channel: ChannelId(77),
            port: 9000
        }]
    );
    assert!(s.is_streaming());
    s
}

fn closed_with(out: &ServerOut) -> Option<&CloseReason> {
    out.events.iter().find_map(|e| match e {
        ServerEvent::Closed { reason } => Some(reason),
        _ => None,
    })
}

#[test]
fn reference_handshake_byte_for_byte() {
    let clock = Clock::new();
    let mut s = server(&clock);
    let out = feed(&mut s, b"HMAC\r\n\r\n", clock.at(0));
    assert_eq!(out.bytes, nonce_reply());
    assert!(out.events.is_empty());
    drop(s);
    let s = streaming(&clock);
    assert_eq!(s.channel(), Some(ChannelId(77)));
}

#[test]
fn the_whole_handshake_in_one_chunk_waits_for_each_decision() {
    let clock = Clock::new();
    let mut s = server(&clock);
    let bytes = reference_client_bytes(&Metadata::reference(77));
    let out = run_server(&mut s, &[&bytes], &testkey_answers(), clock.at(0));
    let expected = format!("{}200\n200 hi. Use UDP port 9000\n", text(&nonce_reply()));
    assert_eq!(text(&out.bytes), expected);
    assert_eq!(out.events.len(), 4, "{:?}", out.events);
    assert!(matches!(
        out.events[3],
        ServerEvent::Streaming { port: 9000, .. }
    ));
}

#[test]
fn ping_is_answered_and_keeps_the_session_alive() {
    let clock = Clock::new();
    let mut s = streaming(&clock);
    assert_eq!(
        s.poll_timeout(),
        Some(clock.at(4) + Duration::from_secs(30))
    );
    let out = feed(&mut s, b"PING 77\r\n\r\n", clock.at(5_000));
    assert_eq!(text(&out.bytes), "201\n");
    assert_eq!(
        feed(&mut s, b"PING\r\n\r\n", clock.at(6_000)).bytes,
        b"201\n"
    );
    assert_eq!(s.poll_timeout(), Some(clock.at(36_000)));
    s.handle_timeout(clock.at(35_999));
    assert!(!s.is_closed());
    s.handle_timeout(clock.at(36_000));
    let out = drain_server(&mut s);
    assert_eq!(
        closed_with(&out),
        Some(&CloseReason::Error(Error::KeepaliveTimeout))
    );
    assert!(text(&out.bytes).starts_with("408 "));
}

#[test]
fn ping_for_another_channel_is_refused() {
    let clock = Clock::new();
    let mut s = streaming(&clock);
    let out = feed(&mut s, b"PING 78\r\n\r\n", clock.at(5));
    assert!(text(&out.bytes).starts_with("400 "));
    assert!(s.is_closed());
}

#[test]
fn disconnect_ends_quietly_and_later_bytes_are_refused() {
    let clock = Clock::new();
    let mut s = streaming(&clock);
    let out = feed(&mut s, b"DISCONNECT\r\n\r\n", clock.at(10));
    assert!(out.bytes.is_empty());
    assert_eq!(closed_with(&out), Some(&CloseReason::Disconnect));
    assert_eq!(
        s.handle_input(b"PING 77\r\n\r\n", clock.at(11)),
        Err(Error::SessionClosed)
    );
    assert_eq!(drain_server(&mut s), ServerOut::default());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn disconnect_mid_handshake() {
    let clock = Clock::new();
    let mut s = server(&clock);
    feed(&mut s, b"HMAC\r\n\r\n", clock.at(0));
    let out = feed(&mut s, b"DISCONNECT\r\n\r\n", clock.at(1));
    assert_eq!(closed_with(&out), Some(&CloseReason::Disconnect));
}

#[test]
fn wrong_key_is_refused_with_405() {
    let clock = Clock::new();
    let mut s = server(&clock);
    feed(&mut s, b"HMAC\r\n\r\n", clock.at(0));
    feed(
        &mut s,
        format!("CONNECT 77 ${REFERENCE_DIGEST}\r\n\r\n").as_bytes(),
        clock.at(1),
    );
    let err = s.provide_key(&ftl_proto::StreamKey::new("testkez"), clock.at(2));
    assert_eq!(
        err,
        Err(Error::DigestMismatch {
            channel: ChannelId(77)
        })
    );
    let out = drain_server(&mut s);
    assert_eq!(text(&out.bytes), "405 wrong stream key for channel 77\n");
    assert_eq!(
        closed_with(&out),
        Some(&CloseReason::Error(Error::DigestMismatch {
            channel: ChannelId(77)
        }))
    );
}

#[test]
fn unknown_channel_is_refused_with_401() {
    let clock = Clock::new();
    let mut s = server(&clock);
    let bytes = reference_client_bytes(&Metadata::reference(77));
    let answers = Answers {
        keys: vec![],
        port: 1,
    };
    let out = run_server(&mut s, &[&bytes], &answers, clock.at(0));
    assert!(
        text(&out.bytes).ends_with("401 unknown channel 77\n"),
        "{}",
        text(&out.bytes)
    );
    assert!(s.is_closed());
}

#[test]
fn caller_refusals_send_their_status() {
    let clock = Clock::new();
    let mut s = authenticated(&clock);
    for l in Metadata::reference(77).to_lines() {
        feed(&mut s, format!("{l}\r\n\r\n").as_bytes(), clock.at(3));
    }
    feed(&mut s, b".\r\n\r\n", clock.at(3));
    s.refuse(StatusCode::CHANNEL_IN_USE, "channel already streaming");
    let out = drain_server(&mut s);
    assert_eq!(text(&out.bytes), "406 channel already streaming\n");
    assert_eq!(
        closed_with(&out),
        Some(&CloseReason::Refused(StatusCode::CHANNEL_IN_USE))
    );
    // A replaced session is told 410 even while streaming.
    let mut s = streaming(&clock);
    s.refuse(StatusCode::SERVER_TERMINATE, "replaced by a newer session");
    assert_eq!(
        text(&drain_server(&mut s).bytes),
        "410 replaced by a newer session\n"
    );
}

#[test]
fn decisions_out_of_turn_are_caller_errors() {
    let clock = Clock::new();
    let mut s = server(&clock);
    let key = ftl_proto::StreamKey::new("k");
    assert!(matches!(
        s.provide_key(&key, clock.at(0)),
        Err(Error::InvalidState(_))
    ));
    assert!(matches!(
        s.assign_port(1, clock.at(0)),
        Err(Error::InvalidState(_))
    ));
    assert!(matches!(
        s.reject_unknown_channel(),
        Err(Error::InvalidState(_))
    ));
    assert!(!s.is_closed());
}

/// Each case: the bytes after which the server must answer 400 and close.
#[test]
fn protocol_errors_answer_400_and_close() {
    let clock = Clock::new();
    let connect = format!("CONNECT 77 ${REFERENCE_DIGEST}\r\n\r\n");
    type Case = (&'static str, Vec<u8>, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        ("unknown command", b"HELLO\r\n\r\n".to_vec(), |e| {
            matches!(e, Error::UnknownCommand(_))
        }),
        ("CONNECT before HMAC", connect.clone().into_bytes(), |e| {
            matches!(
                e,
                Error::UnexpectedCommand {
                    command: "CONNECT",
                    ..
                }
            )
        }),
        ("PING before streaming", b"PING 77\r\n\r\n".to_vec(), |e| {
            matches!(
                e,
                Error::UnexpectedCommand {
                    command: "PING",
                    ..
                }
            )
        }),
        (
            "attribute before CONNECT",
            b"HMAC\r\n\r\nVideo: true\r\n\r\n".to_vec(),
            |e| {
                matches!(
                    e,
                    Error::UnexpectedCommand {
                        command: "attribute",
                        ..
                    }
                )
            },
        ),
        ("HMAC twice", b"HMAC\r\n\r\nHMAC\r\n\r\n".to_vec(), |e| {
            matches!(
                e,
                Error::UnexpectedCommand {
                    command: "HMAC",
                    ..
                }
            )
        }),
        (
            "CONNECT for another channel",
            format!("HMAC 76\r\n\r\n{connect}").into_bytes(),
            |e| {
                matches!(
                    e,
                    Error::ChannelMismatch {
                        expected: ChannelId(76),
                        got: ChannelId(77)
                    }
                )
            },
        ),
        (
            "malformed digest",
            b"HMAC\r\n\r\nCONNECT 77 $abcd\r\n\r\n".to_vec(),
            |e| *e == Error::MalformedDigest,
        ),
        (
            "digest without $",
            b"HMAC\r\n\r\nCONNECT 77 abcd\r\n\r\n".to_vec(),
            |e| *e == Error::MalformedDigest,
        ),
        (
            "channel out of range",
            b"HMAC\r\n\r\nCONNECT 4294967296 $00\r\n\r\n".to_vec(),
            |e| matches!(e, Error::MalformedCommand(_)),
        ),
        ("non-UTF-8", b"HM\xffAC\r\n\r\n".to_vec(), |e| {
            *e == Error::NotUtf8
        }),
        ("line too long", vec![b'A'; 2000], |e| {
            matches!(e, Error::LineTooLong { limit: 1024 })
        }),
    ];
    for (name, bytes, check) in cases {
        let mut s = server(&clock);
        let out = run_server(&mut s, &[&bytes], &testkey_answers(), clock.at(0));
        let reason = closed_with(&out).unwrap_or_else(|| panic!("{name}: not closed"));
        match reason {
            CloseReason::Error(e) => assert!(check(e), "{name}: {e:?}"),
            other => panic!("{name}: {other:?}"),
        }
        let reply = text(&out.bytes);
        let last = reply.lines().last().unwrap_or_default();
        assert!(last.starts_with("400 "), "{name}: {reply:?}");
        assert!(s.is_closed(), "{name}");
    }
}

#[test]
fn metadata_errors_are_refused_at_their_line_or_at_the_end() {
    let clock = Clock::new();
    let cases: &[(&[&str], &str)] = &[
        (&["VideoWidth: wide"], "400 attribute VideoWidth"),
        (&["VideoPayloadType: 300"], "400 attribute VideoPayloadType"),
        (&["AudioIngestSSRC: -5"], "400 attribute AudioIngestSSRC"),
        (
            &["Video: true", "Video: true"],
            "400 attribute Video sent twice",
        ),
        (
            &["Video: true", "."],
            "400 missing attribute ProtocolVersion",
        ),
        (
            &["ProtocolVersion: 0.9", "."],
            "400 neither video nor audio",
        ),
        (
            &[
                "ProtocolVersion: 0.9",
                "Video: true",
                "VideoCodec: VP8",
                ".",
            ],
            "400 unsupported video codec \"VP8\"",
        ),
        (
            &[
                "ProtocolVersion: 0.9",
                "Audio: true",
                "AudioCodec: AAC",
                ".",
            ],
            "400 unsupported audio codec \"AAC\"",
        ),
        (&["."], "400 missing attribute ProtocolVersion"),
        (&[".", "PING 77"], "400 missing attribute"),
    ];
    for (lines, expected) in cases {
        let mut s = authenticated(&clock);
        let mut all = Vec::new();
        for l in lines.iter() {
            all.extend(feed(&mut s, format!("{l}\r\n\r\n").as_bytes(), clock.at(3)).bytes);
        }
        assert!(
            text(&all).starts_with(expected),
            "{lines:?}: {:?}",
            text(&all)
        );
        assert!(s.is_closed());
    }
}

#[test]
fn attribute_count_is_limited() {
    let clock = Clock::new();
    let mut s = authenticated(&clock);
    let mut out = Vec::new();
    for i in 0..65 {
        out.extend(feed(&mut s, format!("X{i}: v\r\n\r\n").as_bytes(), clock.at(3)).bytes);
    }
    assert_eq!(text(&out), "400 more than 64 attributes\n");
}

#[test]
fn unknown_attributes_reach_the_caller() {
    let clock = Clock::new();
    let mut s = authenticated(&clock);
    let mut meta = Metadata::reference(77);
    meta.extra.push(("X-Encoder".into(), "x264 fast".into()));
    for l in meta.to_lines() {
        feed(&mut s, format!("{l}\r\n\r\n").as_bytes(), clock.at(3));
    }
    let out = feed(&mut s, b".\r\n\r\n", clock.at(3));
    match &out.events[..] {
        [ServerEvent::MetadataReady { metadata, .. }] => {
            assert_eq!(
                metadata.extra,
                [("X-Encoder".to_owned(), "x264 fast".to_owned())]
            );
            assert_eq!(metadata.video.as_ref().map(|v| v.ssrc), Some(Ssrc(78)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_connection_that_never_says_a_line_is_closed_at_the_first_line_deadline() {
    let clock = Clock::new();
    let mut s = server(&clock);
    assert_eq!(s.poll_timeout(), Some(clock.at(3_000)));
    // Bytes without a line end do not count.
    feed(&mut s, b"HM", clock.at(1_000));
    s.handle_timeout(clock.at(2_999));
    assert!(!s.is_closed());
    s.handle_timeout(clock.at(3_000));
    let out = drain_server(&mut s);
    assert_eq!(
        closed_with(&out),
        Some(&CloseReason::Error(Error::HelloTimeout))
    );
    assert!(text(&out.bytes).starts_with("408 "));
}

#[test]
fn handshake_deadline_closes_a_connection_that_stalls_after_hmac() {
    let clock = Clock::new();
    let mut s = server(&clock);
    feed(&mut s, b"HMAC\r\n\r\n", clock.at(100));
    assert_eq!(s.poll_timeout(), Some(clock.at(10_000)));
    s.handle_timeout(clock.at(9_999));
    assert!(!s.is_closed());
    s.handle_timeout(clock.at(10_000));
    let out = drain_server(&mut s);
    assert_eq!(
        closed_with(&out),
        Some(&CloseReason::Error(Error::HandshakeTimeout))
    );
    assert!(text(&out.bytes).starts_with("408 "));
}

#[test]
fn slowloris_is_cut_by_the_handshake_deadline() {
    let clock = Clock::new();
    let mut s = server(&clock);
    for (i, b) in b"HMAC\r\n\r\nCONNECT 77 $".iter().enumerate() {
        let now = clock.at(i as u64 * 1000);
        s.handle_timeout(now);
        if s.is_closed() {
            break;
        }
        let _ = s.handle_input(&[*b], now);
    }
    assert!(s.is_closed());
}

#[test]
fn a_key_lookup_that_never_answers_is_refused_before_the_clients_timeout() {
    let clock = Clock::new();
    let mut s = server(&clock);
    feed(&mut s, b"HMAC\r\n\r\n", clock.at(0));
    feed(
        &mut s,
        format!("CONNECT 77 ${REFERENCE_DIGEST}\r\n\r\n").as_bytes(),
        clock.at(500),
    );
    assert_eq!(s.poll_timeout(), Some(clock.at(4_500)));
    s.handle_timeout(clock.at(4_500));
    let out = drain_server(&mut s);
    assert_eq!(
        closed_with(&out),
        Some(&CloseReason::Error(Error::DecisionTimeout))
    );
    assert!(text(&out.bytes).starts_with("500 "));
}

#[test]
fn pipelined_input_is_bounded_while_a_decision_is_pending() {
    let clock = Clock::new();
    let mut s = server(&clock);
    feed(&mut s, b"HMAC\r\n\r\n", clock.at(0));
    feed(
        &mut s,
        format!("CONNECT 77 ${REFERENCE_DIGEST}\r\n\r\n").as_bytes(),
        clock.at(0),
    );
    let mut closed = false;
    for _ in 0..100 {
        let out = feed(
            &mut s,
            &b"X: yyyyyyyyyyyyyyyyyyyyyyyyyy\r\n\r\n".repeat(10),
            clock.at(1),
        );
        if let Some(reason) = closed_with(&out) {
            assert!(matches!(
                reason,
                CloseReason::Error(Error::BufferFull { .. })
            ));
            closed = true;
            break;
        }
    }
    assert!(closed);
}

#[test]
fn eof_without_disconnect() {
    let clock = Clock::new();
    let mut s = streaming(&clock);
    s.handle_eof();
    assert_eq!(
        drain_server(&mut s).events,
        [ServerEvent::Closed {
            reason: CloseReason::PeerClosed
        }]
    );
    s.handle_eof();
    assert_eq!(drain_server(&mut s), ServerOut::default());
}

/// Every input length from 0 to 64, of several byte patterns, in every state: no panic, and the
/// session either goes on or closes with a status line.
#[test]
fn sweep_lengths_through_every_state() {
    let clock = Clock::new();
    let makers: [fn(&Clock) -> ServerSession; 3] = [server, authenticated, streaming];
    let patterns: [&[u8]; 5] = [b"\0", b"\xff", b"A", b"\r\n", b"HMAC\r\n: ."];
    for make in makers {
        for pattern in patterns {
            for len in 0..=64 {
                let mut s = make(&clock);
                let input: Vec<u8> = pattern.iter().copied().cycle().take(len).collect();
                let result = s.handle_input(&input, clock.at(5));
                let out = drain_server(&mut s);
                if result.is_err() {
                    assert!(s.is_closed());
                    assert!(out.bytes.last() == Some(&b'\n'));
                }
            }
        }
    }
}
