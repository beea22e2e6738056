//! The FTL client session fed arbitrary server replies in arbitrary chunks. Byte 0 picks how far
//! a valid prefix of replies takes the session first; byte 1 drives chunk sizes.
#![no_main]

use std::time::{Duration, Instant};

use ftl_proto::control::{ClientConfig, ClientSession, Metadata};
use ftl_proto::{ChannelId, StreamKey};
use libfuzzer_sys::fuzz_target;

const PREFIXES: [&str; 4] = [
    "",
    "200 00112233\n",
    "200 00112233\n200\n",
    "200 00112233\n200\n200 hi. Use UDP port 9000\n",
];

fuzz_target!(|data: &[u8]| {
    let (mode, chunk, body) = match data {
        [m, c, rest @ ..] => (*m, usize::from(*c).max(1), rest),
        _ => return,
    };
    let t0 = Instant::now();
    let config = ClientConfig::new(
        ChannelId(77),
        StreamKey::new("testkey"),
        Metadata::reference(77),
    );
    let mut c = ClientSession::new(config, t0);
    let mut input = PREFIXES[usize::from(mode % 4)].as_bytes().to_vec();
    input.extend_from_slice(body);
    for (i, piece) in input.chunks(chunk).enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * u64::from(mode >> 2) * 100);
        c.handle_timeout(now);
        let _ = c.handle_input(piece, now);
        while c.poll_transmit().is_some() {}
        while c.poll_event().is_some() {}
    }
});
