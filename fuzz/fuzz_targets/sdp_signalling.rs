//! Signalling text from peers: WHEP and WHIP offers (str0m's parser behind the server's guard,
//! then the server's own codec and media checks), WebSocket answers, trickled candidates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server_mio::server::fuzzing;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        fuzzing::signalling(text);
    }
});
