//! Property tests: chunking never changes what a session does, and client and server sessions
//! agree for any key, channel and attribute set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use ftl_proto::control::*;
use ftl_proto::{ChannelId, Ssrc, StreamKey};
use proptest::prelude::*;

fn text_value() -> impl Strategy<Value = String> {
    // Attribute values are trimmed on receipt, so generate them trimmed.
    "[A-Za-z0-9._/-]([A-Za-z0-9 ._/-]{0,14}[A-Za-z0-9._/-])?"
}

fn metadata() -> impl Strategy<Value = Metadata> {
    (
        (0u32..20, 0u32..20),
        text_value(),
        text_value(),
        prop::option::of((0u32..=16384, 0u32..=16384, 0u8..=127, any::<u32>())),
        prop::option::of((0u8..=127, any::<u32>())),
        prop::collection::vec(("X-[A-Za-z0-9]{1,10}", text_value()), 0..5),
    )
        .prop_filter_map(
            "tracks must be valid",
            |(pv, vn, vv, video, audio, extra)| {
                if video.is_none() && audio.is_none() {
                    return None;
                }
                if let (Some(v), Some(a)) = (video, audio) {
                    if v.2 == a.0 || v.3 == a.1 {
                        return None;
                    }
                }
                Some(Metadata {
                    protocol_version: ProtocolVersion {
                        major: pv.0,
                        minor: pv.1,
                    },
                    vendor_name: vn,
                    vendor_version: vv,
                    video: video.map(|(w, h, pt, ssrc)| VideoTrack {
                        codec: VideoCodec::H264,
                        width: w,
                        height: h,
                        payload_type: pt,
                        ssrc: Ssrc(ssrc),
                    }),
                    audio: audio.map(|(pt, ssrc)| AudioTrack {
                        codec: AudioCodec::Opus,
                        payload_type: pt,
                        ssrc: Ssrc(ssrc),
                    }),
                    extra,
                })
            },
        )
}

/// Splits `bytes` at the given (sorted, deduplicated) cut points.
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut from = 0;
    for p in points {
        out.push(&bytes[from..p]);
        from = p;
    }
    out.push(&bytes[from..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any valid client byte stream, split anywhere, gives the same replies and events as the
    /// stream in one piece.
    #[test]
    fn chunking_does_not_change_the_outcome(
        meta in metadata(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
        pings in 0usize..4,
    ) {
        let clock = Clock::new();
        let mut bytes = reference_client_bytes(&meta);
        for _ in 0..pings {
            bytes.extend_from_slice(b"PING 77\r\n\r\n");
        }
        bytes.extend_from_slice(b"DISCONNECT\r\n\r\n");
        let answers = testkey_answers();
        let mut whole = ServerSession::new(ServerConfig::default(), counting_nonce(), clock.at(0));
        let expected = run_server(&mut whole, &[&bytes], &answers, clock.at(0));
        let mut pieces = ServerSession::new(ServerConfig::default(), counting_nonce(), clock.at(0));
        let got = run_server(&mut pieces, &split(&bytes, &cuts), &answers, clock.at(0));
        prop_assert_eq!(&got, &expected);
        // And the outcome is the right one: metadata as sent, a pong per ping, a clean close.
        let ready = ServerEvent::MetadataReady { channel: ChannelId(77), metadata: meta };
        prop_assert!(expected.events.contains(&ready));
        prop_assert_eq!(
            expected.events.last(),
            Some(&ServerEvent::Closed { reason: CloseReason::Disconnect })
        );
        let pongs = String::from_utf8_lossy(&expected.bytes).matches("201\n").count();
        prop_assert_eq!(pongs, pings);
    }

    /// Client and server sessions complete a handshake for any key, channel and metadata, and a
    /// different key is always refused.
    #[test]
    fn client_and_server_agree(
        channel in 0u32..=ChannelId::MAX,
        secret in prop::collection::vec(any::<u8>(), 1..100),
        other in prop::collection::vec(any::<u8>(), 1..100),
        nonce in prop::array::uniform32(any::<u8>()),
        meta in metadata(),
        port in 1u16..,
    ) {
        let clock = Clock::new();
        let channel = ChannelId(channel);
        let key = StreamKey::new(secret.clone());
        let mut full_nonce = [0u8; NONCE_LEN];
        full_nonce[..32].copy_from_slice(&nonce);
        full_nonce[32..].copy_from_slice(&nonce);
        let answers = Answers { keys: vec![(channel, key.clone())], port };

        let mut c = ClientSession::new(ClientConfig::new(channel, key, meta.clone()), clock.at(0));
        let mut s = ServerSession::new(ServerConfig::default(), full_nonce, clock.at(0));
        let (ce, se) = handshake(&mut c, &mut s, &answers, clock.at(0));
        prop_assert_eq!(ce, vec![ClientEvent::Connected { port }]);
        let ready = ServerEvent::MetadataReady { channel, metadata: meta.clone() };
        prop_assert!(se.contains(&ready));

        prop_assume!(secret != other);
        let mut c = ClientSession::new(
            ClientConfig::new(channel, StreamKey::new(other), meta), clock.at(0));
        let mut s = ServerSession::new(ServerConfig::default(), full_nonce, clock.at(0));
        let (ce, _) = handshake(&mut c, &mut s, &answers, clock.at(0));
        let refused = matches!(
            ce.as_slice(),
            [ClientEvent::Closed { reason: ClientCloseReason::Error(ftl_proto::Error::Refused {
                status: StatusCode::INVALID_STREAM_KEY, ..
            }) }]
        );
        prop_assert!(refused, "{:?}", ce);
    }

    /// Arbitrary bytes in arbitrary chunks never panic and never leave the session waiting
    /// without a deadline.
    #[test]
    fn garbage_never_panics(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20)) {
        let clock = Clock::new();
        let mut s = ServerSession::new(ServerConfig::default(), counting_nonce(), clock.at(0));
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        run_server(&mut s, &refs, &testkey_answers(), clock.at(0));
        prop_assert!(s.is_closed() || s.poll_timeout().is_some());
    }
}
