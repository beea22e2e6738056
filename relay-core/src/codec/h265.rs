//! H.265 in RTP (RFC 7798): NAL unit types say where a decoder can start (parameter sets
//! ahead of an IRAP picture, or the IRAP picture itself); the SPS gives profile, tier, level
//! and picture size.

use super::bits::{unescape, Bits};
use super::{VideoFormat, VideoInfo};

const VPS: u8 = 32;
const SPS: u8 = 33;
const AP: u8 = 48;
const FU: u8 = 49;
/// Most of an SPS read (the fields needed come first).
const MAX_SPS: usize = 256;

fn nal_type(header: u8) -> u8 {
    (header >> 1) & 0x3f
}

/// IRAP pictures (BLA, IDR, CRA: 16 to 21) can be decoded without what came before.
fn is_irap(t: u8) -> bool {
    (16..=21).contains(&t)
}

/// Inspects one H.265 RTP payload.
pub(super) fn inspect(payload: &[u8]) -> Option<VideoInfo> {
    let header = *payload.first()?;
    payload.get(1)?;
    if header & 0x80 != 0 {
        return None; // forbidden_zero_bit
    }
    let t = nal_type(header);
    let mut info = VideoInfo::default();
    match t {
        AP => {
            // Aggregated NAL units, each after a 16-bit size (no DONL: sprop-max-don-diff 0).
            let mut rest = payload.get(2..)?;
            let mut first = true;
            while let Some(len) = rest.get(..2) {
                let len = usize::from(u16::from_be_bytes([*len.first()?, *len.get(1)?]));
                let nal = rest.get(2..2 + len)?;
                let nt = nal_type(*nal.first()?);
                if first && (nt == VPS || nt == SPS || is_irap(nt)) {
                    info.starts_keyframe = true;
                }
                if nt == SPS {
                    (info.format, info.bidirectional) = sps(nal);
                }
                first = false;
                rest = rest.get(2 + len..)?;
            }
        }
        FU => {
            let fu = *payload.get(2)?;
            let start = fu & 0x80 != 0;
            info.starts_keyframe = start && is_irap(fu & 0x3f);
        }
        _ => {
            info.starts_keyframe = t == VPS || t == SPS || is_irap(t);
            if t == SPS {
                (info.format, info.bidirectional) = sps(payload);
            }
        }
    }
    Some(info)
}

/// What an H.265 SPS says (H.265 §7.3.2.2): what the picture is, and what an MP4 `hvcC` box
/// repeats of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H265Sps {
    /// The general profile_tier_level bytes: profile space, tier and profile, 4 bytes of
    /// compatibility flags, 6 of constraint flags, and the level.
    pub general: [u8; 12],
    pub chroma_format_idc: u8,
    pub bit_depth_luma_minus8: u8,
    pub bit_depth_chroma_minus8: u8,
    pub width: u32,
    pub height: u32,
    /// `sps_max_num_reorder_pics` of the highest sub-layer: above 0, pictures arrive out of
    /// display order (B-frames), which costs a viewer that much delay and stutters in some
    /// browsers' WebRTC decoders. `None` where the SPS ends before it.
    pub max_num_reorder_pics: Option<u32>,
}

impl H265Sps {
    pub fn tier(&self) -> u8 {
        (self.general[0] >> 5) & 1
    }

    pub fn profile(&self) -> u8 {
        self.general[0] & 0x1f
    }

    pub fn level(&self) -> u8 {
        self.general[11]
    }
}

/// Reads an SPS NAL unit, header included, emulation prevention bytes still in.
pub fn parse_sps(nal: &[u8]) -> Option<H265Sps> {
    if nal_type(*nal.first()?) != SPS {
        return None;
    }
    let mut buf = [0u8; MAX_SPS];
    let rbsp = unescape(nal.get(2..)?, &mut buf);
    let general: [u8; 12] = rbsp.get(1..13)?.try_into().ok()?;
    let mut b = Bits::new(rbsp);
    b.bits(4)?; // sps_video_parameter_set_id
    let sub_layers = b.bits(3)?; // sps_max_sub_layers_minus1
    b.bit()?; // sps_temporal_id_nesting_flag
    b.skip(96)?; // the general profile_tier_level, read above as bytes
    let mut present = [(false, false); 8];
    for p in present.iter_mut().take(sub_layers as usize) {
        *p = (b.flag()?, b.flag()?);
    }
    if sub_layers > 0 {
        b.skip(2 * (8 - sub_layers as usize))?;
    }
    for (profile_present, level_present) in present.iter().take(sub_layers as usize) {
        if *profile_present {
            b.skip(88)?;
        }
        if *level_present {
            b.skip(8)?;
        }
    }
    b.ue(15)?; // sps_seq_parameter_set_id
    let chroma = b.ue(3)?;
    if chroma == 3 {
        b.bit()?; // separate_colour_plane_flag
    }
    let mut width = b.ue(16384)?;
    let mut height = b.ue(16384)?;
    if b.flag()? {
        // conformance_window: offsets in chroma units.
        let (sx, sy) = match chroma {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let left = b.ue(16384)?;
        let right = b.ue(16384)?;
        let top = b.ue(16384)?;
        let bottom = b.ue(16384)?;
        width = width.checked_sub(sx * (left + right))?;
        height = height.checked_sub(sy * (top + bottom))?;
    }
    let luma = b.ue(8)?;
    let chroma_depth = b.ue(8)?;
    let max_num_reorder_pics = reorder(&mut b, sub_layers);
    (width > 0 && height > 0).then_some(H265Sps {
        general,
        chroma_format_idc: chroma as u8,
        bit_depth_luma_minus8: luma as u8,
        bit_depth_chroma_minus8: chroma_depth as u8,
        width,
        height,
        max_num_reorder_pics,
    })
}

/// The sub-layer ordering info after the bit depths: the highest sub-layer's reorder depth.
fn reorder(b: &mut Bits, sub_layers: u32) -> Option<u32> {
    b.ue(12)?; // log2_max_pic_order_cnt_lsb_minus4
    let first = if b.flag()? { 0 } else { sub_layers };
    let mut num_reorder = 0;
    for _ in first..=sub_layers {
        b.ue(15)?; // sps_max_dec_pic_buffering_minus1
        num_reorder = b.ue(15)?;
        b.ue(u32::MAX - 1)?; // sps_max_latency_increase_plus1
    }
    Some(num_reorder)
}

/// The picture format an SPS gives, and whether it declares pictures out of display order.
/// H.265 says so in the SPS rather than by slice type: low-delay encoders send B slices
/// that refer only to the past ("generalized P and B"), which are no B-frames to a viewer.
fn sps(nal: &[u8]) -> (Option<VideoFormat>, bool) {
    let Some(s) = parse_sps(nal) else {
        return (None, false);
    };
    let format = VideoFormat {
        width: s.width,
        height: s.height,
        profile: format!(
            "profile-id={};tier-flag={};level-id={}",
            s.profile(),
            s.tier(),
            s.level()
        ),
    };
    (Some(format), s.max_num_reorder_pics.is_some_and(|n| n > 0))
}

/// The NAL units of one access unit's RTP payloads, in order: single NAL units as they are,
/// aggregation packets split, fragmentation units joined (a fragment whose start was lost is
/// dropped with what follows of it).
pub fn depacketize<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut fu: Option<Vec<u8>> = None;
    for p in payloads {
        let (Some(&h0), Some(&h1)) = (p.first(), p.get(1)) else {
            continue;
        };
        match nal_type(h0) {
            AP => {
                let mut rest = p.get(2..).unwrap_or_default();
                while let (Some(&a), Some(&b)) = (rest.first(), rest.get(1)) {
                    let len = usize::from(u16::from_be_bytes([a, b]));
                    let Some(nal) = rest.get(2..2 + len) else {
                        break;
                    };
                    if !nal.is_empty() {
                        out.push(nal.to_vec());
                    }
                    rest = rest.get(2 + len..).unwrap_or_default();
                }
            }
            FU => {
                let Some(&fh) = p.get(2) else { continue };
                let data = p.get(3..).unwrap_or_default();
                if fh & 0x80 != 0 {
                    let mut nal = vec![(h0 & 0x81) | ((fh & 0x3f) << 1), h1];
                    nal.extend_from_slice(data);
                    fu = Some(nal);
                } else if let Some(nal) = fu.as_mut() {
                    nal.extend_from_slice(data);
                }
                if fh & 0x40 != 0 {
                    out.extend(fu.take());
                }
            }
            _ => out.push(p.to_vec()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SPS libx265 writes for 1920x1080 Main (level 4.0, 1080 coded as 1088 with a
    /// conformance window of 8 rows), escaped as on the wire.
    const SPS_1080P: [u8; 42] = [
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x78, 0xa0, 0x03, 0xc0, 0x80, 0x10, 0xe5, 0x96, 0x56, 0x69, 0x24, 0xca, 0xf0,
        0x16, 0x80, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x0f, 0x04,
    ];

    #[test]
    fn an_sps_gives_size_and_profile() {
        let i = inspect(&SPS_1080P).unwrap();
        assert!(i.starts_keyframe);
        let f = i.format.unwrap();
        assert_eq!((f.width, f.height), (1920, 1080));
        assert_eq!(f.profile, "profile-id=1;tier-flag=0;level-id=120");
    }

    #[test]
    fn irap_pictures_and_their_fragments_start_keyframes() {
        assert!(inspect(&[19 << 1, 0x01, 0xaf]).unwrap().starts_keyframe); // IDR_W_RADL
        assert!(inspect(&[21 << 1, 0x01, 0xaf]).unwrap().starts_keyframe); // CRA
        assert!(!inspect(&[1 << 1, 0x01, 0xaf]).unwrap().starts_keyframe); // TRAIL_R
        assert!(
            inspect(&[FU << 1, 0x01, 0x80 | 19, 0xaf])
                .unwrap()
                .starts_keyframe
        );
        assert!(!inspect(&[FU << 1, 0x01, 19, 0xaf]).unwrap().starts_keyframe);
        assert!(
            !inspect(&[FU << 1, 0x01, 0x80 | 1, 0xaf])
                .unwrap()
                .starts_keyframe
        );
    }

    #[test]
    fn an_aggregation_of_parameter_sets() {
        let mut p = vec![AP << 1, 0x01];
        let vps = [VPS << 1, 0x01, 0x0c];
        p.extend((vps.len() as u16).to_be_bytes());
        p.extend(vps);
        p.extend((SPS_1080P.len() as u16).to_be_bytes());
        p.extend(SPS_1080P);
        let i = inspect(&p).unwrap();
        assert!(i.starts_keyframe);
        assert_eq!(i.format.unwrap().height, 1080);
        for n in 0..p.len() {
            let _ = inspect(&p[..n]);
        }
    }

    /// libx265's SPS for 320x240 with `bframes=0` and with `bframes=3`.
    const SPS_NO_B: [u8; 41] = [
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x3c, 0xa0, 0x0a, 0x08, 0x0f, 0x16, 0x59, 0x2a, 0x49, 0x32, 0xbc, 0x05, 0xa0,
        0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x03, 0x03, 0xc1,
    ];
    const SPS_B3: [u8; 42] = [
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x03, 0x00, 0x3c, 0xa0, 0x0a, 0x08, 0x0f, 0x16, 0x59, 0x59, 0x64, 0x93, 0x2b, 0xc0, 0x5a,
        0x02, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x10,
    ];

    #[test]
    fn b_frames_are_read_from_the_reorder_depth_the_sps_declares() {
        let none = parse_sps(&SPS_NO_B).unwrap();
        assert_eq!((none.width, none.height), (320, 240));
        assert_eq!(none.max_num_reorder_pics, Some(0));
        assert!(!inspect(&SPS_NO_B).unwrap().bidirectional);
        let b3 = parse_sps(&SPS_B3).unwrap();
        assert!(b3.max_num_reorder_pics.is_some_and(|n| n > 0));
        assert!(inspect(&SPS_B3).unwrap().bidirectional);
        // In an aggregation packet with the VPS, as encoders send them.
        let mut p = vec![AP << 1, 0x01];
        p.extend((SPS_B3.len() as u16).to_be_bytes());
        p.extend(SPS_B3);
        assert!(inspect(&p).unwrap().bidirectional);
        // Cut anywhere: the reorder depth is the right one or unknown, never another.
        let whole = b3.max_num_reorder_pics;
        for n in 0..SPS_B3.len() {
            if let Some(s) = parse_sps(&SPS_B3[..n]) {
                assert!(s.max_num_reorder_pics.is_none() || s.max_num_reorder_pics == whole);
            }
        }
    }

    #[test]
    fn the_sps_gives_what_hvcc_repeats() {
        let s = parse_sps(&SPS_1080P).unwrap();
        assert_eq!((s.profile(), s.tier(), s.level()), (1, 0, 120));
        assert_eq!(
            (
                s.chroma_format_idc,
                s.bit_depth_luma_minus8,
                s.bit_depth_chroma_minus8
            ),
            (1, 0, 0)
        );
        assert_eq!(
            s.general[1..5],
            [0x60, 0, 0, 0],
            "Main and Main 10 compatible"
        );
    }

    #[test]
    fn depacketizing_joins_fragments_and_splits_aggregates() {
        let ap = [AP << 1, 1, 0, 3, VPS << 1, 1, 9, 0, 2, SPS << 1, 1];
        let start = [FU << 1, 1, 0x80 | 19, 0xaa, 0xbb];
        let end = [FU << 1, 1, 0x40 | 19, 0xcc];
        let nals = depacketize([&ap[..], &start[..], &end[..], &[2, 1, 7][..]]);
        assert_eq!(
            nals,
            vec![
                vec![VPS << 1, 1, 9],
                vec![SPS << 1, 1],
                vec![19 << 1, 1, 0xaa, 0xbb, 0xcc],
                vec![2, 1, 7]
            ]
        );
        // A fragment without its start is dropped.
        assert!(depacketize([&end[..]]).is_empty());
        let _ = depacketize([&[AP << 1, 1, 0xff, 0xff, 1][..], &[FU << 1][..]]);
    }

    #[test]
    fn garbage_is_safe() {
        assert_eq!(inspect(&[]), None);
        assert_eq!(inspect(&[0x42]), None);
        assert_eq!(inspect(&[0x80, 0x01]), None);
        for n in 0..SPS_1080P.len() {
            let _ = inspect(&SPS_1080P[..n]);
        }
    }
}
