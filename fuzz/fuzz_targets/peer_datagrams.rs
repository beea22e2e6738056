//! A peer's datagrams through the keepalive's reading (STUN binding requests, signed or
//! forged, and everything else) and through a viewer's VP8 picture renumbering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server_mio::server::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::peer_datagrams(data);
});
