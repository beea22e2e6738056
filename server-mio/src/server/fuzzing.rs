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

/// ICE-TCP stream bytes (RFC 4571 frames) in chunks as a peer's socket gives them; every
/// frame taken out is framed again and must read back the same.
pub fn ice_tcp_framing(data: &[u8]) {
    use super::webrtc::framing::{frame, Deframer};
    let mut d = Deframer::default();
    let split = usize::from(data.first().copied().unwrap_or(0)).max(1);
    for chunk in data.chunks(split) {
        let mut rest = chunk;
        loop {
            let (r, used) = d.next(rest);
            assert!(used <= rest.len());
            rest = rest.get(used..).unwrap_or_default();
            match r {
                Ok(Some(f)) => {
                    assert!(!f.is_empty() && f.len() <= super::webrtc::framing::MAX_FRAME);
                    let packet = f.to_vec();
                    let mut again = Vec::new();
                    assert!(frame(&packet, &mut again).is_ok());
                    let mut fresh = Deframer::default();
                    let (back, used) = fresh.next(&again);
                    assert_eq!((back, used), (Ok(Some(&packet[..])), again.len()));
                }
                Ok(None) => break,
                Err(_) => return,
            }
            assert!(d.buffered() <= super::webrtc::framing::MAX_FRAME + 2);
        }
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
