//! AV1 in RTP (the AOM "RTP Payload Format for AV1"): the aggregation header says where a
//! coded video sequence (a keyframe) begins; a sequence header OBU gives the profile, level,
//! tier and the largest picture size.

use super::bits::{leb128, Bits};
use super::{VideoFormat, VideoInfo};

/// OBU type of a sequence header.
const OBU_SEQUENCE_HEADER: u8 = 1;

/// Inspects one AV1 RTP payload.
pub(super) fn inspect(payload: &[u8]) -> Option<VideoInfo> {
    let (&aggregation, mut rest) = payload.split_first()?;
    let continues = aggregation & 0x80 != 0; // Z: the first element continues an OBU
    let count = (aggregation >> 4) & 0x03; // W: elements, 0 when each has a length
    let new_sequence = aggregation & 0x08 != 0; // N
    let mut format = None;
    let mut element = 0;
    while !rest.is_empty() {
        element += 1;
        let last = count != 0 && element == count;
        let obu = if last {
            std::mem::take(&mut rest)
        } else {
            let (len, used) = leb128(rest)?;
            let len = usize::try_from(len).ok()?;
            let obu = rest.get(used..used.checked_add(len)?)?;
            rest = rest.get(used + len..)?;
            obu
        };
        // The first element of a packet that continues an OBU is its middle, not a header.
        if element == 1 && continues {
            continue;
        }
        if let Some(f) = sequence_header(obu) {
            format = Some(f);
        }
        if last {
            break;
        }
    }
    Some(VideoInfo {
        starts_keyframe: new_sequence && !continues,
        format,
        bidirectional: false,
    })
}

/// Reads a sequence header OBU (AV1 §5.5), if `obu` is one.
fn sequence_header(obu: &[u8]) -> Option<VideoFormat> {
    let (&header, mut body) = obu.split_first()?;
    if (header >> 3) & 0x0f != OBU_SEQUENCE_HEADER {
        return None;
    }
    if header & 0x04 != 0 {
        body = body.get(1..)?; // the extension header
    }
    if header & 0x02 != 0 {
        let (len, used) = leb128(body)?;
        let len = usize::try_from(len).ok()?;
        body = body.get(used..used.checked_add(len)?)?;
    }
    let mut b = Bits::new(body);
    let profile = b.bits(3)?;
    b.bit()?; // still_picture
    let reduced = b.flag()?;
    let (level, tier);
    if reduced {
        level = b.bits(5)?;
        tier = 0;
    } else {
        let timing_info = b.flag()?;
        let mut decoder_model_info = false;
        let mut buffer_delay_bits = 0;
        if timing_info {
            b.skip(64)?; // num_units_in_display_tick, time_scale
            if b.flag()? {
                b.uvlc()?; // num_ticks_per_picture_minus_1
            }
            decoder_model_info = b.flag()?;
            if decoder_model_info {
                buffer_delay_bits = b.bits(5)? + 1;
                b.skip(32 + 5 + 5)?; // num_units_in_decoding_tick, two lengths
            }
        }
        let initial_display_delay = b.flag()?;
        let points = b.bits(5)? + 1;
        let (mut first_level, mut first_tier) = (0, 0);
        for i in 0..points {
            b.skip(12)?; // operating_point_idc
            let l = b.bits(5)?;
            let t = if l > 7 { b.bit()? } else { 0 };
            if i == 0 {
                (first_level, first_tier) = (l, t);
            }
            if decoder_model_info && b.flag()? {
                b.skip(2 * buffer_delay_bits as usize + 1)?;
            }
            if initial_display_delay && b.flag()? {
                b.skip(4)?;
            }
        }
        level = first_level;
        tier = first_tier;
    }
    let width_bits = b.bits(4)? + 1;
    let height_bits = b.bits(4)? + 1;
    let width = b.bits(width_bits)? + 1;
    let height = b.bits(height_bits)? + 1;
    Some(VideoFormat {
        width,
        height,
        profile: format!("profile={profile};level-idx={level};tier={tier}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bits into bytes, MSB first, zero-padded.
    fn pack(bits: &[(u32, u32)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (value, n) in bits {
            for i in (0..*n).rev() {
                v.push(((value >> i) & 1) as u8);
            }
        }
        v.resize(v.len().div_ceil(8) * 8, 0);
        v.chunks(8)
            .map(|c| c.iter().fold(0u8, |a, b| (a << 1) | b))
            .collect()
    }

    /// A sequence header OBU as libaom writes one for a real-time stream: profile 0, one
    /// operating point at level 8 (4.0), no timing info, 11-bit size fields.
    fn sequence_obu(w: u32, h: u32) -> Vec<u8> {
        let body = pack(&[
            (0, 3),  // seq_profile
            (0, 1),  // still_picture
            (0, 1),  // reduced_still_picture_header
            (0, 1),  // timing_info_present_flag
            (0, 1),  // initial_display_delay_present_flag
            (0, 5),  // operating_points_cnt_minus_1
            (0, 12), // operating_point_idc
            (8, 5),  // seq_level_idx
            (0, 1),  // seq_tier
            (10, 4), // frame_width_bits_minus_1
            (10, 4), // frame_height_bits_minus_1
            (w - 1, 11),
            (h - 1, 11),
        ]);
        let mut obu = vec![(OBU_SEQUENCE_HEADER << 3) | 0x02, body.len() as u8];
        obu.extend(body);
        obu
    }

    #[test]
    fn a_new_sequence_with_its_header() {
        let obu = sequence_obu(1280, 720);
        // N, W=2: the first element with its length, the last without.
        let mut p = vec![0x08 | 0x20, obu.len() as u8];
        p.extend(&obu);
        p.extend([0x32, 0x00, 0x10]); // a frame OBU's start
        let i = inspect(&p).unwrap();
        assert!(i.starts_keyframe);
        let f = i.format.unwrap();
        assert_eq!((f.width, f.height), (1280, 720));
        assert_eq!(f.profile, "profile=0;level-idx=8;tier=0");
    }

    #[test]
    fn elements_with_lengths_when_w_is_zero() {
        let obu = sequence_obu(640, 360);
        let mut p = vec![0x08, obu.len() as u8];
        p.extend(&obu);
        p.extend([2, 0x32, 0x00]);
        let f = inspect(&p).unwrap().format.unwrap();
        assert_eq!((f.width, f.height), (640, 360));
    }

    #[test]
    fn other_packets() {
        // Not a new sequence.
        assert!(!inspect(&[0x10, 0x32, 0x00]).unwrap().starts_keyframe);
        // A continuation (Z) is never the start of one, whatever N says.
        assert!(!inspect(&[0x88 | 0x10, 0x01, 0x02]).unwrap().starts_keyframe);
        assert_eq!(inspect(&[]), None);
        // A length past the end.
        assert_eq!(inspect(&[0x08, 0x40, 0x0a]), None);
    }

    #[test]
    fn truncated_headers_are_safe() {
        let obu = sequence_obu(1920, 1080);
        let mut p = vec![0x08 | 0x10];
        p.extend(&obu);
        for n in 0..p.len() {
            let _ = inspect(&p[..n]);
        }
        assert_eq!(inspect(&p).unwrap().format.unwrap().width, 1920);
    }
}
