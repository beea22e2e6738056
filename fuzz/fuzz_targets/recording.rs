//! Recording's network inputs: `Range` headers and recording paths from requests, and media
//! packets through the assembler and the MP4 muxer. Nothing panics, ranges stay in the file,
//! paths stay in the recordings folder, muxed output is whole boxes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server_mio::server::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::recording(data);
});
