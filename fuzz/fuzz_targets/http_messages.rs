//! The server's HTTP request parser (viewers, WHEP, WHIP, the API) and its parser of the key
//! service's responses, on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server_mio::server::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::http_request(data);
    fuzzing::key_service_response(data);
});
