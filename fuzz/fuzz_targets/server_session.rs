//! The FTL server session fed arbitrary bytes in arbitrary chunks, with decisions answered and
//! time moving. Byte 0 picks whether a valid authenticated prefix comes first (so the fuzzer also
//! reaches metadata and streaming states); byte 1 drives chunk sizes.
#![no_main]

use std::time::{Duration, Instant};

use ftl_proto::control::{ServerConfig, ServerEvent, ServerSession, NONCE_LEN};
use ftl_proto::StreamKey;
use libfuzzer_sys::fuzz_target;

/// Secret `testkey`, nonce 0x00..0x3f: the wire reference's vector.
const CONNECT: &str = "CONNECT 77 $fc74e95e8a8beddd570e37bed704e9b86db409c285dfd0cd01915f6f5f88b37f2a10b431e5bacb444570541efe83a8bc6e58c4a87427fa604e034c30f5e000b4\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let (mode, chunk, body) = match data {
        [m, c, rest @ ..] => (*m, usize::from(*c).max(1), rest),
        _ => return,
    };
    let t0 = Instant::now();
    let mut nonce = [0u8; NONCE_LEN];
    for (i, b) in nonce.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut s = ServerSession::new(ServerConfig::default(), nonce, t0);
    let key = StreamKey::new("testkey");
    let mut input = Vec::new();
    if mode & 1 == 1 {
        input.extend_from_slice(b"HMAC\r\n\r\n");
        input.extend_from_slice(CONNECT.as_bytes());
    }
    input.extend_from_slice(body);
    for (i, piece) in input.chunks(chunk).enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * u64::from(mode >> 1));
        s.handle_timeout(now);
        let _ = s.handle_input(piece, now);
        while let Some(ev) = s.poll_event() {
            match ev {
                ServerEvent::KeyRequested { .. } => {
                    if mode & 2 == 0 {
                        let _ = s.provide_key(&key, now);
                    } else {
                        let _ = s.reject_unknown_channel();
                    }
                }
                ServerEvent::MetadataReady { .. } => {
                    let _ = s.assign_port(9000, now);
                }
                _ => {}
            }
        }
        while s.poll_transmit().is_some() {}
        if s.is_closed() {
            assert!(s.poll_timeout().is_none());
        }
    }
});
