//! The codec seam: everything the relay needs to know about a video payload, in one place.
//!
//! The relay forwards payloads untouched; it looks inside a video payload only to find where a
//! decoder can start (a keyframe), the picture's size and profile (from a parameter set), and
//! whether the encoder reorders frames (B-frames, which browsers' WebRTC decoders do not
//! handle). Those three questions are answered here per codec ([`h265`], [`vp8`], [`vp9`],
//! [`av1`]; H.264 in `ftl_proto::media::h264`), so the GOP cache, keyframe requests and
//! late-viewer skips work the same for every codec a browser decodes.

pub mod av1;
mod bits;
pub use bits::pack_bits;
pub mod h265;
pub mod vp8;
pub mod vp9;

use ftl_proto::media::{h264, SliceType, Sps};

/// The video codec of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum VideoCodec {
    /// H.264, RTP packetization mode 1 (RFC 6184): what FTL carries and most publishers send.
    #[default]
    H264,
    /// H.265 (RFC 7798): OBS's HEVC over WHIP; Safari and Chromium with hardware decode it.
    H265,
    /// VP8 (RFC 7741): every browser.
    Vp8,
    /// VP9 (RFC 9628).
    Vp9,
    /// AV1 (the AOM RTP payload format): OBS with recent GPUs, browsers.
    Av1,
}

/// The picture format read from a parameter set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFormat {
    pub width: u32,
    pub height: u32,
    /// The profile (and level, tier) as the codec's SDP parameters spell them: H.264's
    /// `profile-level-id` (`42c01f`), VP9's `profile-id=0`, AV1's
    /// `profile=0;level-idx=8;tier=0`, H.265's `profile-id=1;tier-flag=0;level-id=120`; empty
    /// for VP8, which has none.
    pub profile: String,
}

/// What one video payload tells the relay.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VideoInfo {
    /// A decoder joining here can start (a keyframe, or the parameter sets ahead of one).
    pub starts_keyframe: bool,
    /// The format, when the payload carries a parameter set that gives it.
    pub format: Option<VideoFormat>,
    /// The payload begins a bi-predicted picture (a B-frame).
    pub bidirectional: bool,
}

impl VideoCodec {
    /// Inspects one RTP payload. `None` if it cannot be read as this codec: such a payload is
    /// forwarded as it is (the decoder judges) and never starts a keyframe.
    pub fn inspect(self, payload: &[u8]) -> Option<VideoInfo> {
        match self {
            VideoCodec::H264 => {
                let info = h264::inspect(payload).ok()?;
                let format = if info.has_sps {
                    h264::find_sps(payload)
                        .and_then(|nal| Sps::parse(nal).ok())
                        .map(|sps| VideoFormat {
                            width: sps.width,
                            height: sps.height,
                            profile: sps.profile_level_id(),
                        })
                } else {
                    None
                };
                let bidirectional = info.begins_nal()
                    && matches!(info.first_nal, h264::NalType::Slice | h264::NalType::StapA)
                    && h264::slice_type(payload) == Some(SliceType::B);
                Some(VideoInfo {
                    starts_keyframe: info.starts_keyframe(),
                    format,
                    bidirectional,
                })
            }
            VideoCodec::H265 => h265::inspect(payload),
            VideoCodec::Vp8 => vp8::inspect(payload),
            VideoCodec::Vp9 => vp9::inspect(payload),
            VideoCodec::Av1 => av1::inspect(payload),
        }
    }

    /// The codec's name as SDP and logs spell it.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "H264",
            VideoCodec::H265 => "H265",
            VideoCodec::Vp8 => "VP8",
            VideoCodec::Vp9 => "VP9",
            VideoCodec::Av1 => "AV1",
        }
    }

    /// What a decoder (or a file) takes of one frame, from its RTP payloads in order: the NAL
    /// units (H.264, H.265), the frame (VP8, VP9: descriptors removed), the OBUs with their
    /// sizes, temporal delimiters left out (AV1). Empty when nothing usable was there.
    pub fn frame_units<'a>(self, payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
        match self {
            VideoCodec::H264 => ftl_proto::media::packetize::depacketize(payloads),
            VideoCodec::H265 => h265::depacketize(payloads),
            VideoCodec::Vp8 => Some(vp8::depacketize(payloads))
                .filter(|f| !f.is_empty())
                .into_iter()
                .collect(),
            VideoCodec::Vp9 => Some(vp9::depacketize(payloads))
                .filter(|f| !f.is_empty())
                .into_iter()
                .collect(),
            VideoCodec::Av1 => av1::depacketize(payloads),
        }
    }

    /// The codec's name as people write it (`H.264`, `AV1`), for messages.
    pub fn label(self) -> &'static str {
        match self {
            VideoCodec::H264 => "H.264",
            VideoCodec::H265 => "H.265",
            other => other.name(),
        }
    }

    /// Every codec, in the order the server prefers them when a publisher offers several:
    /// H.264 first (every browser, hardware everywhere), then what the publisher put first.
    pub const ALL: [VideoCodec; 5] = [
        VideoCodec::H264,
        VideoCodec::H265,
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::Av1,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_payloads() {
        let c = VideoCodec::H264;
        let idr = c.inspect(&[0x65, 0x88, 0x80]).unwrap();
        assert!(idr.starts_keyframe && !idr.bidirectional && idr.format.is_none());
        let b = c.inspect(&[0x01, 0xa0]).unwrap();
        assert!(b.bidirectional && !b.starts_keyframe);
        let p = c.inspect(&[0x41, 0xc0]).unwrap();
        assert!(!p.bidirectional);
        // An FU-A start of a B slice is one; its middle fragments are not counted again.
        assert!(c.inspect(&[0x7c, 0x81, 0xa0]).unwrap().bidirectional);
        assert!(!c.inspect(&[0x7c, 0x01, 0xa0]).unwrap().bidirectional);
        assert_eq!(c.inspect(&[]), None);
        assert_eq!(c.inspect(&[0xe7]), None);
    }
}
