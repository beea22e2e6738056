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
    let mut element = 0usize;
    while !rest.is_empty() {
        element += 1;
        let last = count != 0 && element == usize::from(count);
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

/// What a sequence header OBU says (AV1 §5.5): the picture's largest size, and what an MP4
/// `av1C` box repeats of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1SequenceHeader {
    pub profile: u8,
    pub level: u8,
    pub tier: u8,
    pub high_bitdepth: bool,
    pub twelve_bit: bool,
    pub monochrome: bool,
    pub subsampling_x: bool,
    pub subsampling_y: bool,
    pub chroma_sample_position: u8,
    pub width: u32,
    pub height: u32,
}

/// Reads a sequence header OBU (header included), if `obu` is one.
pub fn parse_sequence_header(obu: &[u8]) -> Option<Av1SequenceHeader> {
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
    // The rest, up to the colour configuration (§5.5.2).
    if !reduced && b.flag()? {
        b.skip(4 + 3)?; // delta_frame_id_length_minus_2, additional_frame_id_length_minus_1
    }
    b.skip(3)?; // use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    if !reduced {
        b.skip(4)?; // interintra, masked compound, warped motion, dual filter
        let order_hint = b.flag()?;
        if order_hint {
            b.skip(2)?; // enable_jnt_comp, enable_ref_frame_mvs
        }
        let force_screen_content = if b.flag()? { 2 } else { b.bit()? };
        if force_screen_content > 0 && !b.flag()? {
            b.bit()?; // seq_force_integer_mv
        }
        if order_hint {
            b.skip(3)?; // order_hint_bits_minus_1
        }
    }
    b.skip(3)?; // enable_superres, enable_cdef, enable_restoration
                // color_config()
    let high_bitdepth = b.flag()?;
    let twelve_bit = profile == 2 && high_bitdepth && b.flag()?;
    let monochrome = profile != 1 && b.flag()?;
    let (mut cp, mut tc, mut mc) = (2, 2, 2);
    if b.flag()? {
        cp = b.bits(8)?;
        tc = b.bits(8)?;
        mc = b.bits(8)?;
    }
    let (subsampling_x, subsampling_y, mut chroma_sample_position) = if monochrome {
        (true, true, 0)
    } else if cp == 1 && tc == 13 && mc == 0 {
        (false, false, 0) // sRGB
    } else {
        b.bit()?; // color_range
        match profile {
            0 => (true, true, 0),
            1 => (false, false, 0),
            _ if twelve_bit => {
                let x = b.flag()?;
                let y = x && b.flag()?;
                (x, y, 0)
            }
            _ => (true, false, 0),
        }
    };
    if !monochrome && subsampling_x && subsampling_y {
        chroma_sample_position = b.bits(2)? as u8;
    }
    Some(Av1SequenceHeader {
        profile: profile as u8,
        level: level as u8,
        tier: tier as u8,
        high_bitdepth,
        twelve_bit,
        monochrome,
        subsampling_x,
        subsampling_y,
        chroma_sample_position,
        width,
        height,
    })
}

/// The picture format a sequence header gives. The fields after the size are not needed for
/// it, so a header cut short after the size still gives one.
fn sequence_header(obu: &[u8]) -> Option<VideoFormat> {
    let (profile, level, tier, width, height) = match parse_sequence_header(obu) {
        Some(s) => (s.profile, s.level, s.tier, s.width, s.height),
        None => size_only(obu)?,
    };
    Some(VideoFormat {
        width,
        height,
        profile: format!("profile={profile};level-idx={level};tier={tier}"),
    })
}

/// Profile, level, tier and size of a sequence header whose later fields are missing.
fn size_only(obu: &[u8]) -> Option<(u8, u8, u8, u32, u32)> {
    // Append zero bits: the fields after the size read as defaults.
    let mut padded = obu.to_vec();
    padded.extend([0u8; 16]);
    if obu.first()? & 0x02 != 0 {
        // A size field would now cut the padding off: drop it (no extension here or after).
        let (&h, rest) = padded.split_first()?;
        let (_, used) = leb128(rest)?;
        let mut v = vec![h & !0x02];
        v.extend(rest.get(used..)?);
        padded = v;
    }
    let s = parse_sequence_header(&padded)?;
    Some((s.profile, s.level, s.tier, s.width, s.height))
}

/// OBU type of a temporal delimiter (MP4 samples leave them out).
const OBU_TEMPORAL_DELIMITER: u8 = 2;

/// The OBUs of one temporal unit's RTP payloads, each with its size field as MP4 wants them
/// (AV1 in ISOBMFF §2.4), temporal delimiters left out. An OBU split over packets (Z and Y) is
/// joined; one whose beginning was lost is dropped.
pub fn depacketize<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut open: Option<Vec<u8>> = None;
    for p in payloads {
        let Some((&agg, mut rest)) = p.split_first() else {
            continue;
        };
        let continues = agg & 0x80 != 0;
        let continued = agg & 0x40 != 0;
        let count = (agg >> 4) & 0x03;
        let mut element = 0usize;
        let mut elements: Vec<&[u8]> = Vec::new();
        while !rest.is_empty() {
            element += 1;
            if count != 0 && element == usize::from(count) {
                elements.push(std::mem::take(&mut rest));
                break;
            }
            let Some((len, used)) = leb128(rest) else {
                break;
            };
            let Some(e) = usize::try_from(len)
                .ok()
                .and_then(|len| rest.get(used..used.checked_add(len)?))
            else {
                break;
            };
            rest = rest.get(used + e.len()..).unwrap_or_default();
            elements.push(e);
        }
        let last = elements.len();
        for (i, e) in elements.into_iter().enumerate() {
            let mut obu = if i == 0 && continues {
                match open.take() {
                    Some(mut o) => {
                        o.extend_from_slice(e);
                        o
                    }
                    None => continue, // its beginning was lost
                }
            } else {
                e.to_vec()
            };
            if i + 1 == last && continued {
                open = Some(std::mem::take(&mut obu));
                continue;
            }
            if let Some(o) = with_size(&obu) {
                out.push(o);
            }
        }
    }
    out
}

/// An OBU with its size field (added when missing); `None` for a temporal delimiter or
/// something not an OBU.
fn with_size(obu: &[u8]) -> Option<Vec<u8>> {
    let (&h, _) = obu.split_first()?;
    if h & 0x80 != 0 || (h >> 3) & 0x0f == OBU_TEMPORAL_DELIMITER {
        return None;
    }
    if h & 0x02 != 0 {
        return Some(obu.to_vec());
    }
    let head = if h & 0x04 != 0 { 2 } else { 1 };
    let payload = obu.get(head..)?;
    let mut out = Vec::with_capacity(obu.len() + 4);
    out.push(h | 0x02);
    out.extend(obu.get(1..head)?);
    let mut len = payload.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend(payload);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::pack_bits as pack;

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
    fn hundreds_of_empty_elements_are_counted_without_overflow() {
        // W=0 with 400 zero-length elements (found by fuzzing: the count was a u8).
        let mut p = vec![0x08];
        p.extend([0u8; 400]);
        let i = inspect(&p).unwrap();
        assert!(i.starts_keyframe && i.format.is_none());
        assert!(depacketize([p.as_slice()]).is_empty());
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

    #[test]
    fn the_sequence_header_gives_what_av1c_repeats() {
        // A header written in full: libaom's defaults after the size (no frame ids, 64x64
        // superblocks off, order hints of 7 bits, 4:2:0 8-bit, colour unspecified).
        let body = pack(&[
            (0, 3),
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 5),
            (0, 12),
            (8, 5),
            (0, 1),
            (10, 4),
            (10, 4),
            (1279, 11),
            (719, 11),
            (0, 1),     // frame_id_numbers_present_flag
            (0b011, 3), // superblock, filter intra, intra edge
            (0b1111, 4),
            (1, 1), // enable_order_hint
            (0b11, 2),
            (1, 1),     // seq_choose_screen_content_tools
            (1, 1),     // seq_choose_integer_mv
            (6, 3),     // order_hint_bits_minus_1
            (0b011, 3), // superres, cdef, restoration
            (0, 1),     // high_bitdepth
            (0, 1),     // mono_chrome
            (0, 1),     // color_description_present_flag
            (0, 1),     // color_range
            (2, 2),     // chroma_sample_position
        ]);
        let mut obu = vec![(OBU_SEQUENCE_HEADER << 3) | 0x02, body.len() as u8];
        obu.extend(body);
        let s = parse_sequence_header(&obu).unwrap();
        assert_eq!(
            (s.profile, s.level, s.tier, s.width, s.height),
            (0, 8, 0, 1280, 720)
        );
        assert!(s.subsampling_x && s.subsampling_y && !s.monochrome && !s.high_bitdepth);
        assert_eq!(s.chroma_sample_position, 2);
    }

    #[test]
    fn depacketizing_gives_sized_obus_without_temporal_delimiters() {
        // Packet 1: W=2: a temporal delimiter, then a frame OBU (no size field) that goes on
        // in packet 2 (Y). Packet 2: Z, W=1: the rest of it.
        let p1 = [0x40 | 0x20, 1, 0x12, 0x30, 0xaa, 0xbb];
        let p2 = [0x80 | 0x10, 0xcc];
        let obus = depacketize([&p1[..], &p2[..]]);
        assert_eq!(obus, vec![vec![0x32, 3, 0xaa, 0xbb, 0xcc]]);
        // A continuation whose beginning was lost is dropped.
        assert!(depacketize([&p2[..]]).is_empty());
        // An OBU that has its size already keeps it.
        assert_eq!(
            depacketize([&[0x10, 0x32, 1, 0xee][..]]),
            vec![vec![0x32, 1, 0xee]]
        );
        for n in 0..p1.len() {
            let _ = depacketize([&p1[..n]]);
        }
    }
}
