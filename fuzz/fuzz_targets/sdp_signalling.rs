//! Signalling text from peers through str0m's parsers behind the server's guard: WHEP and WHIP
//! offers, WebSocket answers, trickled candidates (the server's own reading of the text is
//! `sdp_text`, which runs far faster).
#![no_main]

use libfuzzer_sys::fuzz_target;
use server_mio::server::fuzzing;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        fuzzing::signalling(text);
    }
});
