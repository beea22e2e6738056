//! Turning an H.264 Annex-B elementary stream into RTP payloads the way the FTL client does
//! (RFC 6184 packetization mode 1): access units split into NAL units, each NAL unit sent whole
//! when it fits and as FU-A fragments when it does not.

use crate::media::h264::NalType;

/// The payload size the reference client uses at most.
pub const FTL_MAX_PAYLOAD: usize = 1392;

/// Splits an Annex-B byte stream at its start codes (`00 00 01` or `00 00 00 01`) into NAL units
/// (start codes and trailing zero bytes removed; empty units skipped).
pub fn split_annexb(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data.get(i..i + 3) == Some(&[0, 0, 1]) {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &s) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(data.len(), |next| next - 3);
        let mut nal = data.get(s..end).unwrap_or_default();
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        if !nal.is_empty() {
            out.push(nal);
        }
    }
    out
}

/// Groups NAL units into access units (frames): a new one begins at a parameter set, SEI or
/// access unit delimiter that follows a slice, or at a slice whose `first_mb_in_slice` is 0
/// that follows a slice.
pub fn access_units<'a>(nals: &[&'a [u8]]) -> Vec<Vec<&'a [u8]>> {
    let mut out: Vec<Vec<&[u8]>> = Vec::new();
    let mut current: Vec<&[u8]> = Vec::new();
    let mut has_slice = false;
    for &nal in nals {
        let t = NalType::from_header(nal.first().copied().unwrap_or(0));
        let is_slice = matches!(t, NalType::Slice | NalType::Idr);
        // first_mb_in_slice is ue(v): its first bit is 1 exactly when the value is 0.
        let first_slice = is_slice && nal.get(1).is_some_and(|b| b & 0x80 != 0);
        if has_slice && (!is_slice || first_slice) {
            out.push(std::mem::take(&mut current));
            has_slice = false;
        }
        has_slice |= is_slice;
        current.push(nal);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Appends the RTP payloads of one NAL unit to `out`: the unit itself if it fits in
/// `max_payload`, else FU-A fragments (RFC 6184 §5.8).
pub fn packetize_nal(nal: &[u8], max_payload: usize, out: &mut Vec<Vec<u8>>) {
    let Some((&header, body)) = nal.split_first() else {
        return;
    };
    if nal.len() <= max_payload {
        out.push(nal.to_vec());
        return;
    }
    let indicator = (header & 0xe0) | 28;
    let chunk = max_payload.saturating_sub(2).max(1);
    let count = body.len().div_ceil(chunk);
    for (i, part) in body.chunks(chunk).enumerate() {
        let mut fu = header & 0x1f;
        if i == 0 {
            fu |= 0x80;
        }
        if i + 1 == count {
            fu |= 0x40;
        }
        let mut p = Vec::with_capacity(part.len() + 2);
        p.push(indicator);
        p.push(fu);
        p.extend_from_slice(part);
        out.push(p);
    }
}

/// Reassembles NAL units from RTP payloads in order (single NAL, STAP-A, FU-A); what a viewer
/// does before decoding. Incomplete FU-A units are dropped.
pub fn depacketize<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut fu: Option<Vec<u8>> = None;
    for p in payloads {
        let Some(&h) = p.first() else { continue };
        match NalType::from_header(h) {
            NalType::FuA => {
                let Some(&fh) = p.get(1) else { continue };
                let data = p.get(2..).unwrap_or_default();
                if fh & 0x80 != 0 {
                    let mut nal = vec![(h & 0xe0) | (fh & 0x1f)];
                    nal.extend_from_slice(data);
                    fu = Some(nal);
                } else if let Some(nal) = fu.as_mut() {
                    nal.extend_from_slice(data);
                }
                if fh & 0x40 != 0 {
                    out.extend(fu.take());
                }
            }
            NalType::StapA => {
                let mut rest = p.get(1..).unwrap_or_default();
                while let [a, b, tail @ ..] = rest {
                    let n = usize::from(u16::from_be_bytes([*a, *b]));
                    let Some(unit) = tail.get(..n) else { break };
                    out.push(unit.to_vec());
                    rest = tail.get(n..).unwrap_or_default();
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

    #[test]
    fn splits_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 0,
        ];
        assert_eq!(
            split_annexb(&data),
            [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]
        );
        assert!(split_annexb(&[1, 2, 3]).is_empty());
    }

    #[test]
    fn groups_frames() {
        let sps: &[u8] = &[0x67, 1];
        let pps: &[u8] = &[0x68, 1];
        let idr: &[u8] = &[0x65, 0x88];
        let p1: &[u8] = &[0x41, 0x9a];
        let p1b: &[u8] = &[0x41, 0x1a]; // a second slice of the same frame
        let aus = access_units(&[sps, pps, idr, p1, p1b, p1, sps, pps, idr]);
        assert_eq!(
            aus,
            vec![
                vec![sps, pps, idr],
                vec![p1, p1b],
                vec![p1],
                vec![sps, pps, idr]
            ]
        );
    }

    #[test]
    fn fragments_and_reassembles() {
        let mut nal = vec![0x65];
        nal.extend((0..5000u32).map(|i| i as u8));
        let mut out = Vec::new();
        packetize_nal(&nal, FTL_MAX_PAYLOAD, &mut out);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|p| p.len() <= FTL_MAX_PAYLOAD));
        assert_eq!(out[0][..2], [0x7c, 0x85]);
        assert_eq!(out[3][1], 0x45);
        packetize_nal(&[0x41, 1, 2], FTL_MAX_PAYLOAD, &mut out);
        assert_eq!(out[4], [0x41, 1, 2]);
        let back = depacketize(out.iter().map(Vec::as_slice));
        assert_eq!(back, vec![nal, vec![0x41, 1, 2]]);
    }
}
