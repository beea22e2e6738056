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
    use crate::client::framing::{frame, Deframer};
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
                    assert!(!f.is_empty() && f.len() <= crate::client::framing::MAX_FRAME);
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
            assert!(d.buffered() <= crate::client::framing::MAX_FRAME + 2);
        }
    }
}

/// A response of the key service, and the key in its body.
pub fn key_service_response(data: &[u8]) {
    let _ = crate::hooks::http::parse(data);
    let _ = crate::hooks::key_from_body(data);
}

/// Signalling text from a peer through str0m's parsers behind the server's guard: a WHEP or
/// WHIP offer, a WebSocket viewer's answer, a trickled candidate.
pub fn signalling(text: &str) {
    let _ = super::webrtc::whip::parse_offer(text);
    let _ = super::webrtc::peers::parse_answer(text);
    let _ = super::webrtc::peers::parse_candidate(text);
}

/// The server's own reading of signalling text, apart from str0m's parser (which
/// [`signalling`] covers, at a few hundred inputs a second): the media sections and codecs of
/// an offer, and the checks for a publisher and for a viewer of each codec.
pub fn sdp_text(text: &str) {
    use super::webrtc::whip::{check_media, offered_video_codecs, publisher_codecs, Offerer};
    if let Ok(preferred) = check_media(text, Offerer::Publisher) {
        // What a publisher's answer names: the preferred codec first, each once.
        let codecs = publisher_codecs(text, preferred);
        assert_eq!(codecs.first().copied(), preferred);
        for (i, c) in codecs.iter().enumerate() {
            assert!(
                !codecs.iter().skip(i + 1).any(|d| d == c),
                "{c:?} named twice"
            );
        }
    }
    for codec in relay_core::VideoCodec::ALL {
        let _ = check_media(text, Offerer::Viewer(codec));
    }
    let _ = offered_video_codecs(text);
    let _ = super::webrtc::peers::mids_from_sdp(text);
}

/// DTLS datagrams from a peer as str0m hands them to the server's DTLS: an endpoint in the
/// server role (as for every WHIP and WHEP peer) takes a sequence of datagrams, each written
/// as a 2-byte big-endian length and its bytes, with its outputs drained after each.
pub fn dtls_datagrams(data: &[u8]) {
    use std::sync::OnceLock;
    use std::time::Instant;
    use str0m::crypto::dtls::{DtlsCert, DtlsInstance, DtlsOutput};
    static CERT: OnceLock<Option<DtlsCert>> = OnceLock::new();
    let Some(cert) = CERT
        .get_or_init(|| crate::dtls::cert::generate(crate::dtls::cert::KeyKind::EcdsaP256).ok())
        .as_ref()
    else {
        return;
    };
    let Ok(mut dtls) = crate::dtls::OpensslDtls::new(cert, Instant::now(), 1150) else {
        return;
    };
    dtls.set_active(false);
    let mut buf = vec![0u8; 2000];
    let mut rest = data;
    while let Some((&[hi, lo], tail)) = rest.split_first_chunk::<2>() {
        let n = usize::from(u16::from_be_bytes([hi, lo])).min(tail.len());
        let (datagram, after) = tail.split_at(n);
        let _ = dtls.handle_packet(datagram);
        let _ = dtls.handle_timeout(Instant::now());
        for _ in 0..256 {
            match dtls.poll_output(&mut buf) {
                DtlsOutput::Timeout(_) => break,
                DtlsOutput::Packet(p) => assert!(p.len() <= buf.len()),
                _ => {}
            }
        }
        rest = after;
    }
}

/// What recording takes from the network: a request's `Range` header and recording path
/// (mode byte even), or media packets as a publisher sends them, through the assembler and
/// the muxer (mode byte odd). Ranges stay inside the file, paths inside the folder, and muxed
/// output is whole boxes.
pub fn recording(data: &[u8]) {
    use crate::record::reader::{parse_range, RangeReq};
    use crate::record::{assemble::Assembler, index, mux::FileMux};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        let size = u64::from(mode) * 1000;
        if let RangeReq::Bytes(a, b) = parse_range(&text, size) {
            assert!(a <= b && b < size);
        }
        let (channel, name) = text.split_once('/').unwrap_or((&text, ""));
        let root = std::path::Path::new("/r");
        if let Some(p) = index::path_of(root, channel, name) {
            assert!(p.starts_with(root) && p.components().count() == 4);
            assert!(index::valid_name(name) && index::start_of(name).is_some());
        }
        return;
    }
    // Packets: [kind|key|marker, seq step, ts step (2 bytes), length] then the payload.
    // The video's codec from the mode byte: every codec's depacketizer and sample entry.
    let codec =
        relay_core::VideoCodec::ALL[usize::from(mode >> 2) % relay_core::VideoCodec::ALL.len()];
    let mut a = Assembler::new(codec);
    let mut mux = FileMux::new(mode & 2 != 0, codec);
    let t0 = std::time::Instant::now();
    let (mut seq, mut vts, mut ats) = (0u64, 0u32, 0u32);
    let mut rest = rest;
    let push = |gop: crate::record::assemble::Gop, mux: &mut FileMux| {
        if let Ok(bytes) = mux.push(&gop) {
            if let Some(head) = bytes.get(..4).and_then(|h| <[u8; 4]>::try_from(h).ok()) {
                let size = u32::from_be_bytes(head) as usize;
                assert!(size >= 8 && size <= bytes.len());
            }
        }
    };
    while let [flags, step, t1, t2, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        let video = flags & 1 == 0;
        seq += u64::from(*step % 3);
        let dt = u32::from(u16::from_be_bytes([*t1, *t2]));
        let timestamp = if video {
            vts = vts.wrapping_add(dt);
            vts
        } else {
            ats = ats.wrapping_add(dt);
            ats
        };
        let f = relay_core::Forward {
            viewer: relay_core::ViewerId(1),
            kind: if video {
                relay_core::MediaKind::Video
            } else {
                relay_core::MediaKind::Audio
            },
            seq,
            timestamp,
            wallclock: t0 + std::time::Duration::from_millis(u64::from(*step)),
            marker: flags & 2 != 0,
            keyframe: flags & 4 != 0,
            cached: false,
            payload: std::sync::Arc::from(payload),
        };
        if let Some(gop) = a.push(&f) {
            push(gop, &mut mux);
        }
    }
    if let Some(gop) = a.finish() {
        push(gop, &mut mux);
    }
}

/// Datagrams from a peer as its keepalive reads them (STUN or not, signed or not, a few
/// seconds apart), and the same bytes as VP8 payloads a viewer's picture numbering rewrites:
/// no panic, and a request made for the peer is a STUN binding request whose answer is kept
/// back.
pub fn peer_datagrams(data: &[u8]) {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use super::webrtc::keepalive::{hmac_sha1, Keepalive};
    use super::webrtc::vp8::Vp8Ids;
    use str0m::ice::{StunMessage, TransId};
    use str0m::net::Protocol;

    let peer = SocketAddr::from(([127, 0, 0, 1], 5000));
    let us = SocketAddr::from(([127, 0, 0, 1], 20000));
    const PASSWORD: &str = "fuzzing-password-0123456";
    let mut k = Keepalive::new(PASSWORD.into());
    let mut ids = Vp8Ids::default();
    let t0 = Instant::now();
    // The peer's own signed request first, so that requests can be made for it.
    let mut genuine = [0_u8; 256];
    let request = StunMessage::binding_request("srv:cli", TransId::new(), true, 7, 1234, false);
    if let Ok(n) = request.to_bytes(Some(PASSWORD.as_bytes()), &mut genuine, hmac_sha1) {
        k.on_input(
            Protocol::Udp,
            peer,
            us,
            genuine.get(..n).unwrap_or_default(),
            t0,
        );
    }
    for (i, datagram) in data.split(|b| *b == 0xfe).enumerate() {
        let now = t0 + Duration::from_secs(3) * u32::try_from(i).unwrap_or(u32::MAX / 4);
        k.on_input(Protocol::Udp, peer, us, datagram, now);
        if let Some(made) = k.due(true, now) {
            assert!(StunMessage::parse(&made.bytes).is_ok_and(|m| m.is_binding_request()));
            let mut answer = made.bytes.clone();
            if let Some(class) = answer.get_mut(0..2) {
                class.copy_from_slice(&[0x01, 0x01]);
            }
            assert!(k.swallows(&answer) && !k.swallows(&answer));
        }
        let keyframe = datagram.first().is_some_and(|b| b & 1 == 1);
        let _ = ids.patch(datagram, keyframe);
    }
}
