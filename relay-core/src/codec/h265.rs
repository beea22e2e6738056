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
                    info.format = sps(nal);
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
                info.format = sps(payload);
            }
        }
    }
    Some(info)
}

/// Reads an SPS NAL unit (H.265 §7.3.2.2), header included.
fn sps(nal: &[u8]) -> Option<VideoFormat> {
    let mut buf = [0u8; MAX_SPS];
    let rbsp = unescape(nal.get(2..)?, &mut buf);
    let mut b = Bits::new(rbsp);
    b.bits(4)?; // sps_video_parameter_set_id
    let sub_layers = b.bits(3)?; // sps_max_sub_layers_minus1
    b.bit()?; // sps_temporal_id_nesting_flag
              // profile_tier_level(1, sub_layers)
    b.bits(2)?; // general_profile_space
    let tier = b.bit()?;
    let profile = b.bits(5)?;
    b.skip(32 + 48)?; // compatibility flags; progressive, interlaced, ... 44 reserved bits
    let level = b.bits(8)?;
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
    (width > 0 && height > 0).then(|| VideoFormat {
        width,
        height,
        profile: format!("profile-id={profile};tier-flag={tier};level-id={level}"),
    })
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
