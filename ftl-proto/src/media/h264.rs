//! H.264 payload inspection (RFC 6184): which NAL units an RTP payload carries, whether it
//! starts a keyframe, and where its SPS is.
//!
//! FTL uses packetization mode 1: single NAL units and FU-A fragments (STAP-A is handled too,
//! since other encoders aggregate SPS and PPS). The reference client sends SPS and PPS in band
//! before each IDR, each as a single NAL unit.

use crate::media::bytes::u8_at;
use crate::Error;

/// NAL unit types (ITU-T H.264 Table 7-1, RFC 6184 Table 1). Unknown numbers are values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalType {
    /// A slice of a non-IDR picture (1).
    Slice,
    /// A slice of an IDR picture (5): a keyframe.
    Idr,
    /// Supplemental enhancement information (6).
    Sei,
    /// Sequence parameter set (7).
    Sps,
    /// Picture parameter set (8).
    Pps,
    /// Access unit delimiter (9).
    Aud,
    /// Single-time aggregation packet (24).
    StapA,
    /// Fragmentation unit A (28).
    FuA,
    /// Any other type.
    Other(u8),
}

impl NalType {
    /// The type of a NAL unit header byte.
    pub fn from_header(byte: u8) -> NalType {
        match byte & 0x1f {
            1 => NalType::Slice,
            5 => NalType::Idr,
            6 => NalType::Sei,
            7 => NalType::Sps,
            8 => NalType::Pps,
            9 => NalType::Aud,
            24 => NalType::StapA,
            28 => NalType::FuA,
            n => NalType::Other(n),
        }
    }
}

/// Where an FU-A fragment sits in its NAL unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// A whole NAL unit (single or aggregated).
    Whole,
    /// The first fragment (S bit).
    Start,
    /// A fragment in between.
    Middle,
    /// The last fragment (E bit).
    End,
}

/// What an RTP payload of H.264 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadInfo {
    /// The first NAL unit's type: the fragmented unit's for FU-A, the first aggregated one's for
    /// STAP-A.
    pub first_nal: NalType,
    pub fragment: Fragment,
    pub has_sps: bool,
    pub has_pps: bool,
    pub has_idr: bool,
}

impl PayloadInfo {
    /// Whether this payload can start a keyframe for a decoder that joins here: it begins a NAL
    /// unit (not an FU-A continuation) and carries an IDR slice or the parameter sets that the
    /// reference client sends ahead of one.
    pub fn starts_keyframe(&self) -> bool {
        matches!(self.fragment, Fragment::Whole | Fragment::Start)
            && (self.has_sps || self.has_pps || self.has_idr)
    }

    /// Whether this payload begins a NAL unit (a decoder can resynchronise here).
    pub fn begins_nal(&self) -> bool {
        matches!(self.fragment, Fragment::Whole | Fragment::Start)
    }
}

/// The kind of picture a slice belongs to (`slice_type`, ITU-T H.264 Table 7-6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceType {
    /// Predicted from earlier pictures only (P, and SP).
    P,
    /// Bi-predicted: may refer to a later picture, so decode order differs from display order.
    /// Browsers' WebRTC decoders do not reorder frames, and a stream with B slices stutters.
    B,
    /// Intra only (I, and SI).
    I,
}

/// The bytes of a slice header read at most: `first_mb_in_slice` and `slice_type` are the
/// first two Exp-Golomb codes, together at most 8 bytes.
const SLICE_HEAD: usize = 16;

/// The slice type of the first slice that this payload begins (a single slice NAL unit, the
/// start fragment of an FU-A, or a slice inside a STAP-A); `None` for anything else, including
/// a slice header too short or malformed to read.
pub fn slice_type(payload: &[u8]) -> Option<SliceType> {
    let header = *payload.first()?;
    let slice_head = match NalType::from_header(header) {
        NalType::Slice | NalType::Idr => payload.get(1..)?,
        NalType::FuA => {
            let fu = *payload.get(1)?;
            let starts = fu & 0x80 != 0;
            if !starts || !matches!(NalType::from_header(fu), NalType::Slice | NalType::Idr) {
                return None;
            }
            payload.get(2..)?
        }
        NalType::StapA => {
            return stap_a_units(payload).ok()?.into_iter().find_map(|u| {
                let t = NalType::from_header(*u.first()?);
                if matches!(t, NalType::Slice | NalType::Idr) {
                    slice_type(u)
                } else {
                    None
                }
            })
        }
        _ => return None,
    };
    // Emulation prevention removed into a stack buffer: this runs on every slice packet.
    let mut buf = [0u8; SLICE_HEAD];
    let rbsp = crate::media::sps::unescape_into(slice_head, &mut buf);
    let mut r = crate::media::sps::BitReader::new(rbsp);
    r.ue_max(u32::MAX).ok()?; // first_mb_in_slice
    match r.ue_max(9).ok()? % 5 {
        0 | 3 => Some(SliceType::P),
        1 => Some(SliceType::B),
        _ => Some(SliceType::I),
    }
}

/// Inspects an H.264 RTP payload.
pub fn inspect(payload: &[u8]) -> Result<PayloadInfo, Error> {
    let header = *payload.first().ok_or(Error::BadH264("empty payload"))?;
    if header & 0x80 != 0 {
        return Err(Error::BadH264("forbidden_zero_bit set"));
    }
    let mut info = PayloadInfo {
        first_nal: NalType::from_header(header),
        fragment: Fragment::Whole,
        has_sps: false,
        has_pps: false,
        has_idr: false,
    };
    match info.first_nal {
        NalType::FuA => {
            let fu = *payload
                .get(1)
                .ok_or(Error::BadH264("FU-A without FU header"))?;
            if fu & 0xc0 == 0xc0 {
                return Err(Error::BadH264("FU-A with both start and end bits"));
            }
            info.first_nal = NalType::from_header(fu);
            info.fragment = match fu & 0xc0 {
                0x80 => Fragment::Start,
                0x40 => Fragment::End,
                _ => Fragment::Middle,
            };
            let t = info.first_nal;
            note(&mut info, t);
        }
        NalType::StapA => {
            let mut first = None;
            for nal in stap_a_units(payload)? {
                let t = NalType::from_header(u8_at(nal, 0));
                first.get_or_insert(t);
                note(&mut info, t);
            }
            info.first_nal = first.ok_or(Error::BadH264("empty STAP-A"))?;
        }
        t => note(&mut info, t),
    }
    Ok(info)
}

/// The SPS NAL unit in a payload (single NAL or inside a STAP-A), header byte included.
pub fn find_sps(payload: &[u8]) -> Option<&[u8]> {
    match NalType::from_header(*payload.first()?) {
        NalType::Sps => Some(payload),
        NalType::StapA => stap_a_units(payload)
            .ok()?
            .into_iter()
            .find(|n| NalType::from_header(u8_at(n, 0)) == NalType::Sps),
        _ => None,
    }
}

fn note(info: &mut PayloadInfo, t: NalType) {
    match t {
        NalType::Sps => info.has_sps = true,
        NalType::Pps => info.has_pps = true,
        NalType::Idr => info.has_idr = true,
        _ => {}
    }
}

/// The NAL units of a STAP-A (RFC 6184 §5.7.1): 16-bit size, unit, repeated. A size running past
/// the payload or a zero size is an error. At most one unit per three payload bytes exists, so
/// the list is bounded by the payload.
fn stap_a_units(payload: &[u8]) -> Result<Vec<&[u8]>, Error> {
    let mut out = Vec::new();
    let mut rest = payload.get(1..).unwrap_or_default();
    while !rest.is_empty() {
        let (size, tail) = match rest {
            [a, b, tail @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), tail),
            _ => return Err(Error::BadH264("STAP-A size truncated")),
        };
        if size == 0 {
            return Err(Error::BadH264("STAP-A unit of size 0"));
        }
        let unit = tail
            .get(..size)
            .ok_or(Error::BadH264("STAP-A unit runs past the payload"))?;
        out.push(unit);
        rest = tail.get(size..).unwrap_or_default();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_nal_units() {
        let sps = inspect(&[0x67, 0x42, 0xc0, 0x1e]).unwrap();
        assert_eq!(sps.first_nal, NalType::Sps);
        assert!(sps.starts_keyframe());
        assert!(inspect(&[0x68, 0xce]).unwrap().starts_keyframe());
        assert!(inspect(&[0x65, 0x88]).unwrap().starts_keyframe());
        let p = inspect(&[0x41, 0x9a]).unwrap();
        assert_eq!(p.first_nal, NalType::Slice);
        assert!(!p.starts_keyframe());
        assert_eq!(inspect(&[0x6e]).unwrap().first_nal, NalType::Other(14));
    }

    #[test]
    fn fu_a_fragments() {
        let start = inspect(&[0x7c, 0x85, 0xb8]).unwrap();
        assert_eq!(
            (start.first_nal, start.fragment),
            (NalType::Idr, Fragment::Start)
        );
        assert!(start.starts_keyframe());
        let mid = inspect(&[0x7c, 0x05, 0xb8]).unwrap();
        assert_eq!(mid.fragment, Fragment::Middle);
        assert!(!mid.starts_keyframe() && !mid.begins_nal());
        let end = inspect(&[0x7c, 0x45]).unwrap();
        assert_eq!(end.fragment, Fragment::End);
        assert!(!inspect(&[0x5c, 0x81, 0]).unwrap().starts_keyframe());
    }

    #[test]
    fn stap_a_with_parameter_sets() {
        let stap = [0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce, 0, 1, 0x65];
        let info = inspect(&stap).unwrap();
        assert_eq!(info.first_nal, NalType::Sps);
        assert!(info.has_sps && info.has_pps && info.has_idr && info.starts_keyframe());
        assert_eq!(find_sps(&stap), Some(&[0x67, 0x42][..]));
        assert_eq!(find_sps(&[0x67, 1, 2]), Some(&[0x67, 1, 2][..]));
        assert_eq!(find_sps(&[0x65, 1, 2]), None);
    }

    #[test]
    fn slice_types() {
        // first_mb_in_slice = 0 ("1"), then slice_type as Exp-Golomb.
        // slice_type 0 (P): "1" -> 0b11xx_xxxx.
        assert_eq!(slice_type(&[0x41, 0xc0]), Some(SliceType::P));
        // slice_type 1 (B): "010" -> 0b1010_xxxx.
        assert_eq!(slice_type(&[0x01, 0xa0]), Some(SliceType::B));
        // slice_type 6 (B, all slices of the picture): "00111" -> 0b1001_11xx.
        assert_eq!(slice_type(&[0x01, 0x9c]), Some(SliceType::B));
        // slice_type 7 (I): "0001000" -> 0b1000_1000.
        assert_eq!(slice_type(&[0x65, 0x88, 0x80]), Some(SliceType::I));
        // FU-A start of a B slice; a middle fragment says nothing.
        assert_eq!(slice_type(&[0x7c, 0x81, 0xa0]), Some(SliceType::B));
        assert_eq!(slice_type(&[0x7c, 0x01, 0xa0]), None);
        // STAP-A with SPS, then a B slice.
        assert_eq!(
            slice_type(&[0x78, 0, 2, 0x67, 0x42, 0, 2, 0x01, 0xa0]),
            Some(SliceType::B)
        );
        // Not slices, or too short to read.
        for p in [
            &[0x67, 0x42][..],
            &[0x41],
            &[0x41, 0x00],
            &[],
            &[0x68, 0xce],
        ] {
            assert_eq!(slice_type(p), None, "{p:02x?}");
        }
    }

    #[test]
    fn malformed_payloads() {
        for bad in [
            &[][..],
            &[0xe7],
            &[0x7c],
            &[0x7c, 0xc5],
            &[0x78],
            &[0x78, 0],
            &[0x78, 0, 0],
            &[0x78, 0, 5, 0x67],
        ] {
            assert!(inspect(bad).is_err(), "{bad:02x?}");
        }
        assert_eq!(find_sps(&[0x78, 0, 9, 0x67]), None);
    }
}
