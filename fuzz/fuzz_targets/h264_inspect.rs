//! H.264 payload inspection, slice types, SPS parsing and the relay's codec seam on arbitrary
//! bytes.
#![no_main]

use ftl_proto::media::{h264, Sps};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = h264::inspect(data) {
        let _ = info.starts_keyframe();
    }
    let _ = h264::slice_type(data);
    if let Some(v) = relay_core::VideoCodec::H264.inspect(data) {
        if let Some(f) = v.format {
            assert!(f.width > 0 && f.height > 0);
        }
    }
    if let Some(sps) = h264::find_sps(data) {
        assert!(sps.len() <= data.len());
        if let Ok(s) = Sps::parse(sps) {
            assert!(s.width > 0 && s.height > 0);
        }
    }
    // The SPS parser on its own, with the NAL header forced to an SPS.
    let mut nal = data.to_vec();
    if let Some(h) = nal.first_mut() {
        *h = 0x67;
    }
    let _ = Sps::parse(&nal);
});
