//! The RFC 4571 reassembler of ICE over TCP on arbitrary stream bytes in arbitrary chunks:
//! frames come out whole and non-empty, and no more than one frame is ever held.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server_mio::server::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::ice_tcp_framing(data);
});
