//! Reading the picture size from an H.264 sequence parameter set (ITU-T H.264 §7.3.2.1.1).
//!
//! The reference client announces 1280x720 whatever the encoder makes, so the real size comes
//! from here. Parsing stops after the frame-cropping fields; VUI is not needed.

use crate::Error;

/// What an SPS says that a relay cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sps {
    pub profile_idc: u8,
    /// The constraint_set flags byte (`profile-level-id`'s middle byte in SDP).
    pub constraint_flags: u8,
    pub level_idc: u8,
    /// Displayed width in pixels, cropping applied.
    pub width: u32,
    /// Displayed height in pixels, cropping applied.
    pub height: u32,
}

/// An SPS is small; anything longer than this is not read past (the fields needed come first).
const MAX_SPS: usize = 512;
/// Macroblock dimensions beyond this (16384 pixels) are refused as nonsense.
const MAX_MBS: u32 = 1024;

impl Sps {
    /// Parses an SPS NAL unit, header byte included, emulation prevention bytes still in.
    pub fn parse(nal: &[u8]) -> Result<Sps, Error> {
        let (&header, body) = nal.split_first().ok_or(Error::BadH264("empty SPS"))?;
        if header & 0x1f != 7 {
            return Err(Error::BadH264("not an SPS NAL unit"));
        }
        let mut buf = [0u8; MAX_SPS];
        let rbsp = unescape_into(body, &mut buf);
        let mut r = BitReader::new(rbsp);
        let profile_idc = r.bits(8)? as u8;
        let constraint_flags = r.bits(8)? as u8;
        let level_idc = r.bits(8)? as u8;
        r.ue_max(31)?; // seq_parameter_set_id
        let mut chroma_format_idc = 1;
        let mut separate_colour_plane = false;
        if matches!(
            profile_idc,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            chroma_format_idc = r.ue_max(3)?;
            if chroma_format_idc == 3 {
                separate_colour_plane = r.flag()?;
            }
            r.ue_max(6)?; // bit_depth_luma_minus8
            r.ue_max(6)?; // bit_depth_chroma_minus8
            r.flag()?; // qpprime_y_zero_transform_bypass_flag
            if r.flag()? {
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.flag()? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        r.ue_max(12)?; // log2_max_frame_num_minus4
        match r.ue_max(2)? {
            0 => {
                r.ue_max(12)?; // log2_max_pic_order_cnt_lsb_minus4
            }
            1 => {
                r.flag()?; // delta_pic_order_always_zero_flag
                r.se()?; // offset_for_non_ref_pic
                r.se()?; // offset_for_top_to_bottom_field
                for _ in 0..r.ue_max(255)? {
                    r.se()?; // offset_for_ref_frame
                }
            }
            _ => {}
        }
        r.ue_max(32)?; // max_num_ref_frames
        r.flag()?; // gaps_in_frame_num_value_allowed_flag
        let width_mbs = r.ue_max(MAX_MBS - 1)? + 1;
        let height_map_units = r.ue_max(MAX_MBS - 1)? + 1;
        let frame_mbs_only = r.flag()?;
        if !frame_mbs_only {
            r.flag()?; // mb_adaptive_frame_field_flag
        }
        r.flag()?; // direct_8x8_inference_flag
        let (mut crop_x, mut crop_y) = (0, 0);
        if r.flag()? {
            let left = r.ue_max(u32::MAX >> 1)?;
            let right = r.ue_max(u32::MAX >> 1)?;
            let top = r.ue_max(u32::MAX >> 1)?;
            let bottom = r.ue_max(u32::MAX >> 1)?;
            crop_x = left.saturating_add(right);
            crop_y = top.saturating_add(bottom);
        }
        let field_factor = if frame_mbs_only { 1 } else { 2 };
        let chroma_array_type = if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        };
        let (unit_x, unit_y) = match chroma_array_type {
            0 => (1, field_factor),
            1 => (2, 2 * field_factor),
            2 => (2, field_factor),
            _ => (1, field_factor),
        };
        let full_w = width_mbs * 16;
        let full_h = height_map_units * 16 * field_factor;
        let width = crop_x
            .checked_mul(unit_x)
            .and_then(|c| full_w.checked_sub(c))
            .filter(|w| *w > 0)
            .ok_or(Error::BadH264("cropping wider than the picture"))?;
        let height = crop_y
            .checked_mul(unit_y)
            .and_then(|c| full_h.checked_sub(c))
            .filter(|h| *h > 0)
            .ok_or(Error::BadH264("cropping taller than the picture"))?;
        Ok(Sps {
            profile_idc,
            constraint_flags,
            level_idc,
            width,
            height,
        })
    }

    /// The SDP `profile-level-id` (RFC 6184 §8.1) of this stream, e.g. `42c01e`.
    pub fn profile_level_id(&self) -> String {
        format!(
            "{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), Error> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let delta = i64::from(r.se()?);
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Removes emulation prevention bytes (`00 00 03` -> `00 00`, §7.4.1) from as much of `data`
/// as fits in `out`; returns the unescaped bytes. No allocation: slice headers are read per
/// packet.
pub fn unescape_into<'b>(data: &[u8], out: &'b mut [u8]) -> &'b [u8] {
    let mut len = 0;
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        let Some(slot) = out.get_mut(len) else { break };
        *slot = b;
        len += 1;
    }
    out.get(..len).unwrap_or_default()
}

/// Reads bits MSB first; running out of bits is an error, never a panic.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn bit(&mut self) -> Result<u32, Error> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or(Error::BadH264("SPS ends early"))?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }

    fn flag(&mut self) -> Result<bool, Error> {
        Ok(self.bit()? == 1)
    }

    fn bits(&mut self, n: u32) -> Result<u32, Error> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    /// Unsigned Exp-Golomb (§9.1), refused above `max`.
    pub(crate) fn ue_max(&mut self, max: u32) -> Result<u32, Error> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(Error::BadH264("Exp-Golomb code too long"));
            }
        }
        let value = ((1u64 << zeros) - 1) + u64::from(self.bits(zeros)?);
        u32::try_from(value)
            .ok()
            .filter(|v| *v <= max)
            .ok_or(Error::BadH264("SPS field out of range"))
    }

    /// Signed Exp-Golomb (§9.1.1).
    fn se(&mut self) -> Result<i32, Error> {
        let k = self.ue_max(u32::MAX)?;
        let magnitude = k.div_ceil(2) as i64;
        Ok((if k % 2 == 1 { magnitude } else { -magnitude }) as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulation_prevention_is_removed() {
        let mut out = [0u8; 16];
        assert_eq!(
            unescape_into(&[0, 0, 3, 1, 0, 0, 3, 0, 3], &mut out),
            [0, 0, 1, 0, 0, 0, 3]
        );
        // Bounded by the output buffer.
        let mut small = [0u8; 3];
        assert_eq!(unescape_into(&[0, 0, 3, 1, 2, 3], &mut small), [0, 0, 1]);
    }

    #[test]
    fn exp_golomb() {
        // 1 -> 0, 010 -> 1, 011 -> 2, 00100 -> 3 ; then se 00101 -> 4 -> -2
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data);
        assert_eq!(r.ue_max(10).unwrap(), 0);
        assert_eq!(r.ue_max(10).unwrap(), 1);
        assert_eq!(r.ue_max(10).unwrap(), 2);
        assert_eq!(r.ue_max(10).unwrap(), 3);
        assert_eq!(r.se().unwrap(), -2);
        assert!(r.ue_max(10).is_err());
    }

    #[test]
    fn refuses_non_sps_and_truncation() {
        assert!(Sps::parse(&[]).is_err());
        assert!(Sps::parse(&[0x68, 0x42]).is_err());
        assert!(Sps::parse(&[0x67, 0x42, 0xc0]).is_err());
        let long_code = [0x67, 0x42, 0xc0, 0x1e, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(Sps::parse(&long_code).is_err());
    }

    /// SPSs cut from ffmpeg/libx264 streams; the expected values are ffprobe's (see
    /// `tests/data/sps-dump.txt`).
    #[test]
    fn reads_sizes_of_real_encoder_output() {
        let cases: [(&[u8], u8, u8, u32, u32); 5] = [
            (
                include_bytes!("../../tests/data/sps-baseline-320x180.bin"),
                66,
                13,
                320,
                180,
            ),
            (
                include_bytes!("../../tests/data/sps-baseline-322x182.bin"),
                66,
                13,
                322,
                182,
            ),
            (
                include_bytes!("../../tests/data/sps-main-640x360.bin"),
                77,
                30,
                640,
                360,
            ),
            (
                include_bytes!("../../tests/data/sps-high-1280x720.bin"),
                100,
                31,
                1280,
                720,
            ),
            (
                include_bytes!("../../tests/data/sps-high-1920x1080.bin"),
                100,
                40,
                1920,
                1080,
            ),
        ];
        for (nal, profile, level, w, h) in cases {
            let sps = Sps::parse(nal).unwrap();
            assert_eq!(
                (sps.profile_idc, sps.level_idc, sps.width, sps.height),
                (profile, level, w, h)
            );
        }
        let sps = Sps::parse(include_bytes!("../../tests/data/sps-baseline-320x180.bin")).unwrap();
        assert_eq!(sps.profile_level_id(), "42c00d");
    }

    #[test]
    fn every_truncation_of_a_real_sps_is_safe() {
        let nal = include_bytes!("../../tests/data/sps-high-1920x1080.bin");
        for len in 0..nal.len() {
            let _ = Sps::parse(&nal[..len]);
        }
    }
}
