//! VP8 in RTP (RFC 7741): the payload descriptor, and the frame header of a keyframe's first
//! partition, which gives the picture size.

use super::{VideoFormat, VideoInfo};

/// The length of a VP8 payload descriptor (RFC 7741 §4.2).
fn descriptor_len(payload: &[u8]) -> Option<usize> {
    let (&first, _) = payload.split_first()?;
    let mut at = 1;
    if first & 0x80 != 0 {
        let x = *payload.get(1)?;
        at = 2;
        if x & 0x80 != 0 {
            // PictureID: 7 bits, or 15 with the M bit.
            let m = *payload.get(at)? & 0x80 != 0;
            at += if m { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            at += 1; // TID / Y / KEYIDX
        }
    }
    (at <= payload.len()).then_some(at)
}

/// The VP8 frame of one frame's RTP payloads: their descriptors removed, partitions joined.
pub fn depacketize<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut frame = Vec::new();
    for p in payloads {
        if let Some(rest) = descriptor_len(p).and_then(|n| p.get(n..)) {
            frame.extend_from_slice(rest);
        }
    }
    frame
}

/// Inspects one VP8 RTP payload.
pub(super) fn inspect(payload: &[u8]) -> Option<VideoInfo> {
    let (&first, _) = payload.split_first()?;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    let frame = payload.get(descriptor_len(payload)?..)?;
    if !(start && partition == 0) {
        return Some(VideoInfo::default());
    }
    // The frame tag: bit 0 of the first byte is 0 on a keyframe.
    let tag = *frame.first()?;
    if tag & 0x01 != 0 {
        return Some(VideoInfo::default());
    }
    // A keyframe: the 3-byte tag, the start code 9d 01 2a, then 14-bit width and height
    // (each with a 2-bit scale above it).
    let format = match frame.get(3..10) {
        Some([0x9d, 0x01, 0x2a, w0, w1, h0, h1]) => {
            let width = u32::from(u16::from_le_bytes([*w0, *w1]) & 0x3fff);
            let height = u32::from(u16::from_le_bytes([*h0, *h1]) & 0x3fff);
            (width > 0 && height > 0).then(|| VideoFormat {
                width,
                height,
                profile: String::new(),
            })
        }
        _ => None,
    };
    Some(VideoInfo {
        starts_keyframe: true,
        format,
        bidirectional: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyframe's first packet as Chromium packetizes it: X, S, PictureID (15 bits).
    fn keyframe(width: u16, height: u16) -> Vec<u8> {
        let mut p = vec![0x90, 0x80, 0x80 | 0x12, 0x34];
        p.extend_from_slice(&[0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a]);
        p.extend_from_slice(&width.to_le_bytes());
        p.extend_from_slice(&height.to_le_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    #[test]
    fn a_keyframe_gives_its_size() {
        let i = inspect(&keyframe(640, 360)).unwrap();
        assert!(i.starts_keyframe);
        let f = i.format.unwrap();
        assert_eq!((f.width, f.height), (640, 360));
        // The scale bits above the 14-bit size are not part of it.
        let f = inspect(&keyframe(0x4000 | 320, 0xc000 | 180))
            .unwrap()
            .format
            .unwrap();
        assert_eq!((f.width, f.height), (320, 180));
    }

    #[test]
    fn other_packets_do_not_start_a_keyframe() {
        let mut inter = keyframe(640, 360);
        inter[4] |= 0x01; // the frame tag says inter frame
        assert!(!inspect(&inter).unwrap().starts_keyframe);
        let mut middle = keyframe(640, 360);
        middle[0] &= !0x10; // not the start of a partition
        assert!(!inspect(&middle).unwrap().starts_keyframe);
        // Without the extension byte.
        let short = [
            0x10, 0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01,
        ];
        let f = inspect(&short).unwrap().format.unwrap();
        assert_eq!((f.width, f.height), (640, 360));
    }

    #[test]
    fn truncated_payloads_are_refused_or_plain() {
        for n in 0..4 {
            assert!(inspect(&keyframe(640, 360)[..n]).is_none_or(|i| i.format.is_none()));
        }
        assert_eq!(inspect(&[]), None);
        // A keyframe whose header is cut short starts a keyframe without a size.
        let cut = &keyframe(640, 360)[..9];
        let i = inspect(cut).unwrap();
        assert!(i.starts_keyframe && i.format.is_none());
    }

    #[test]
    fn depacketizing_strips_descriptors() {
        let k = keyframe(640, 360);
        let second = [0x80, 0x80, 0x92, 0x34, 7, 8];
        let frame = depacketize([&k[..], &second[..]]);
        assert_eq!(&frame[..3], &[0x50, 0x42, 0x00]);
        assert_eq!(&frame[frame.len() - 2..], &[7, 8]);
        assert_eq!(frame.len(), k.len() - 4 + 2);
    }
}
