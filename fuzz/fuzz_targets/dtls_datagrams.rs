//! DTLS datagrams from a peer into the server's DTLS (OpenSSL behind str0m's provider seam), in
//! the server role every WHIP and WHEP peer meets: ClientHellos, flights, records, garbage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server_mio::server::fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::dtls_datagrams(data);
});
