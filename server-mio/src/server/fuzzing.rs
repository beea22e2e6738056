//! Entry points for the fuzz targets (`fuzz/`): the server's parsers of untrusted bytes, called
//! as the server calls them. Each may refuse its input; none may panic past its guard.

/// An HTTP request head and body as the HTTP port reads them (viewers, WHEP, WHIP, the API).
pub fn http_request(data: &[u8]) {
    if let super::http::Parsed::Done(req) = super::http::parse(data) {
        let _ = req.header("Authorization");
        let _ = req.query_param("channel");
        let _ = req.redacted();
    }
}

/// A response of the key service, and the key in its body.
pub fn key_service_response(data: &[u8]) {
    let _ = crate::hooks::http::parse(data);
    let _ = crate::hooks::key_from_body(data);
}

/// Signalling text from a peer: a WHEP or WHIP offer, a WebSocket viewer's answer, a trickled
/// candidate.
pub fn signalling(text: &str) {
    let _ = super::webrtc::whip::check_offer(text, super::webrtc::whip::Offerer::Publisher);
    let _ = super::webrtc::whip::check_offer(text, super::webrtc::whip::Offerer::Viewer);
    let _ = super::webrtc::peers::mids_from_sdp(text);
    let _ = super::webrtc::peers::parse_answer(text);
    let _ = super::webrtc::peers::parse_candidate(text);
}
