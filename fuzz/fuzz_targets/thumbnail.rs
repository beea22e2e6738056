//! The thumbnail path on arbitrary keyframes: the input is a run of RTP payloads (each a
//! 16-bit big-endian length, then that many bytes) taken as the cached keyframe of an H.264
//! stream, depacketized, decoded, scaled and written as JPEG, as the thumbnail thread does.
//! Nothing panics; a picture that comes out is a JPEG within the width asked for.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use relay_core::VideoCodec;
use server_mio::thumbnail::thumbnail_of;

fuzz_target!(|data: &[u8]| {
    let mut payloads: Vec<Arc<[u8]>> = Vec::new();
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (p, next) = tail.split_at(len);
        payloads.push(p.into());
        rest = next;
    }
    if let Ok(p) = thumbnail_of(VideoCodec::H264, &payloads, 160) {
        assert!(p.width <= 160 && p.width > 0 && p.height > 0);
        assert_eq!(p.jpeg.get(..2), Some(&[0xff, 0xd8][..]));
    }
});
