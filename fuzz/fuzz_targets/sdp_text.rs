//! The server's own reading of signalling text: an offer's media sections and codecs, and the
//! checks for a publisher and for a viewer of each codec (str0m's parser is `sdp_signalling`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use server_mio::server::fuzzing;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        fuzzing::sdp_text(text);
    }
});
