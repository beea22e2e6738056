//! VP9 in RTP (RFC 9628): the payload descriptor (and its scalability structure, which gives
//! the picture size), and a keyframe's uncompressed header for the profile and, when the
//! descriptor has no size, the size.

use super::bits::Bits;
use super::{VideoFormat, VideoInfo};

/// The VP9 frame of one frame's RTP payloads: their descriptors removed, joined.
pub fn depacketize<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut frame = Vec::new();
    for p in payloads {
        if let Some(rest) = descriptor(p).and_then(|d| p.get(d.len..)) {
            frame.extend_from_slice(rest);
        }
    }
    frame
}

/// What a VP9 payload descriptor (RFC 9628 §4.2) says.
struct Descriptor {
    len: usize,
    inter_predicted: bool,
    begins_frame: bool,
    spatial: u8,
    size: Option<(u32, u32)>,
}

/// Inspects one VP9 RTP payload.
pub(super) fn inspect(payload: &[u8]) -> Option<VideoInfo> {
    let d = descriptor(payload)?;
    let frame = payload.get(d.len..)?;
    // A keyframe starts a frame that is not predicted from earlier ones, at the base layer.
    if !(d.begins_frame && !d.inter_predicted && d.spatial == 0) {
        return Some(VideoInfo::default());
    }
    let header = uncompressed_header(frame);
    let profile = header.map_or(0, |h| h.0);
    let size = d
        .size
        .filter(|(w, h)| *w > 0 && *h > 0)
        .or(header.and_then(|h| h.1));
    Some(VideoInfo {
        starts_keyframe: true,
        format: size.map(|(width, height)| VideoFormat {
            width,
            height,
            profile: format!("profile-id={profile}"),
        }),
        bidirectional: false,
    })
}

/// The VP9 profile of a keyframe (its uncompressed header), for the recorder's `vpcC`.
pub fn frame_profile(frame: &[u8]) -> Option<u8> {
    uncompressed_header(frame).map(|h| h.0)
}

/// The picture size of a keyframe (its uncompressed header).
pub fn frame_size(frame: &[u8]) -> Option<(u32, u32)> {
    uncompressed_header(frame).and_then(|h| h.1)
}

fn descriptor(payload: &[u8]) -> Option<Descriptor> {
    let (&first, _) = payload.split_first()?;
    let has_picture_id = first & 0x80 != 0;
    let inter_predicted = first & 0x40 != 0;
    let has_layers = first & 0x20 != 0;
    let flexible = first & 0x10 != 0;
    let begins_frame = first & 0x08 != 0;
    let has_ss = first & 0x02 != 0;
    let mut at = 1;
    if has_picture_id {
        let m = *payload.get(at)? & 0x80 != 0;
        at += if m { 2 } else { 1 };
    }
    let mut spatial = 0;
    if has_layers {
        spatial = (*payload.get(at)? >> 1) & 0x07;
        at += if flexible { 1 } else { 2 }; // TL0PICIDX in non-flexible mode
    }
    if flexible && inter_predicted {
        // Up to three reference indices, each with a "another follows" bit.
        for _ in 0..3 {
            let p = *payload.get(at)?;
            at += 1;
            if p & 0x01 == 0 {
                break;
            }
        }
    }
    let mut size = None;
    if has_ss {
        let ss = *payload.get(at)?;
        at += 1;
        let layers = usize::from(ss >> 5) + 1;
        let has_sizes = ss & 0x10 != 0;
        let has_groups = ss & 0x08 != 0;
        if has_sizes {
            // The largest (last) spatial layer's size is the picture's.
            for _ in 0..layers {
                let [w0, w1, h0, h1]: [u8; 4] = payload.get(at..at + 4)?.try_into().ok()?;
                size = Some((
                    u32::from(u16::from_be_bytes([w0, w1])),
                    u32::from(u16::from_be_bytes([h0, h1])),
                ));
                at += 4;
            }
        }
        if has_groups {
            let groups = *payload.get(at)?;
            at += 1;
            for _ in 0..groups {
                let g = *payload.get(at)?;
                at += 1 + usize::from((g >> 2) & 0x03);
            }
        }
    }
    (at <= payload.len()).then_some(Descriptor {
        len: at,
        inter_predicted,
        begins_frame,
        spatial,
        size,
    })
}

/// A keyframe's uncompressed header (VP9 §6.2): the profile, and the size when it is a
/// keyframe.
fn uncompressed_header(frame: &[u8]) -> Option<(u8, Option<(u32, u32)>)> {
    let mut b = Bits::new(frame);
    if b.bits(2)? != 2 {
        return None; // frame_marker
    }
    let low = b.bit()?;
    let high = b.bit()?;
    let profile = (high << 1) | low;
    if profile == 3 {
        b.bit()?; // reserved_zero
    }
    let profile = profile as u8;
    if b.flag()? {
        return Some((profile, None)); // show_existing_frame
    }
    let key = b.bit()? == 0;
    b.bit()?; // show_frame
    b.bit()?; // error_resilient_mode
    if !key {
        return Some((profile, None));
    }
    if b.bits(24)? != 0x49_83_42 {
        return None; // frame_sync_code
    }
    // color_config()
    if profile >= 2 {
        b.bit()?; // ten_or_twelve_bit
    }
    let color_space = b.bits(3)?;
    if color_space != 7 {
        b.bit()?; // color_range
        if profile == 1 || profile == 3 {
            b.skip(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        b.bit()?; // reserved_zero
    }
    let width = b.bits(16)? + 1;
    let height = b.bits(16)? + 1;
    Some((profile, Some((width, height))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile-0 keyframe's uncompressed header for `w` x `h`.
    fn key_header(w: u16, h: u16) -> Vec<u8> {
        // frame_marker 10, profile 00, show_existing 0, frame_type 0, show 1, error_res 0
        let mut bits: Vec<u8> = vec![1, 0, 0, 0, 0, 0, 1, 0];
        for i in (0..24).rev() {
            bits.push(((0x49_83_42u32 >> i) & 1) as u8);
        }
        bits.extend_from_slice(&[0, 1, 0]); // color_space CS_BT_601
        bits.push(0); // color_range
        for v in [w - 1, h - 1] {
            for i in (0..16).rev() {
                bits.push(((v >> i) & 1) as u8);
            }
        }
        bits.resize(bits.len().div_ceil(8) * 8, 0);
        bits.chunks(8)
            .map(|c| c.iter().fold(0u8, |a, b| (a << 1) | b))
            .collect()
    }

    /// A 640x360 keyframe's first packet with I, B, E, V: a 15-bit PictureID, and a
    /// scalability structure of one layer with its size and no groups.
    fn keyframe_with_ss() -> Vec<u8> {
        let mut p = vec![
            0x80 | 0x08 | 0x04 | 0x02,
            0x81,
            0x02,
            0x10,
            0x02,
            0x80,
            0x01,
            0x68,
        ];
        p.extend(key_header(640, 360));
        p
    }

    #[test]
    fn a_keyframe_with_a_scalability_structure() {
        let p = keyframe_with_ss();
        let i = inspect(&p).unwrap();
        assert!(i.starts_keyframe);
        let f = i.format.unwrap();
        assert_eq!(
            (f.width, f.height, f.profile.as_str()),
            (640, 360, "profile-id=0")
        );
    }

    #[test]
    fn a_keyframe_without_one_takes_the_size_from_its_header() {
        let mut p = vec![0x08 | 0x04];
        p.extend(key_header(1280, 720));
        let f = inspect(&p).unwrap().format.unwrap();
        assert_eq!((f.width, f.height), (1280, 720));
    }

    #[test]
    fn predicted_frames_and_continuations_do_not_start_one() {
        let mut inter = vec![0x40 | 0x08];
        inter.extend(key_header(640, 360));
        assert!(!inspect(&inter).unwrap().starts_keyframe);
        let mut cont = vec![0x04];
        cont.extend(key_header(640, 360));
        assert!(!inspect(&cont).unwrap().starts_keyframe);
        // An upper spatial layer of a keyframe (L, SID 1, non-flexible: TL0PICIDX follows).
        let upper = [0x20 | 0x08, 0x02, 0x00, 0x00];
        assert!(!inspect(&upper).unwrap().starts_keyframe);
    }

    #[test]
    fn truncated_or_garbage_is_safe() {
        let p = keyframe_with_ss();
        for n in 0..p.len() {
            let _ = inspect(&p[..n]);
        }
        assert_eq!(inspect(&[]), None);
        // A keyframe whose header is not VP9 starts a keyframe without a size.
        let i = inspect(&[0x08, 0xff, 0xff]).unwrap();
        assert!(i.starts_keyframe && i.format.is_none());
    }

    #[test]
    fn depacketizing_strips_descriptors() {
        let p = keyframe_with_ss();
        let frame = depacketize([&p[..], &[0x04, 0xee][..]]);
        assert_eq!(frame.len(), p.len() - 8 + 1);
        assert_eq!(frame_profile(&frame), Some(0));
    }
}
