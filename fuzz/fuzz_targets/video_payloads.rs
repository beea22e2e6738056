//! The codec seam on arbitrary RTP payloads of every codec a WHIP publisher may send (H.265,
//! VP8, VP9, AV1; H.264 has `h264_inspect`): the first byte picks the codec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::VideoCodec;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let codec = VideoCodec::ALL[usize::from(pick) % VideoCodec::ALL.len()];
    if let Some(info) = codec.inspect(payload) {
        if let Some(f) = info.format {
            assert!(f.width > 0 && f.height > 0, "{codec:?}: {f:?}");
            assert!(f.profile.len() < 64);
        }
    }
});
