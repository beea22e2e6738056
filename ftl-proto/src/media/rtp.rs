//! RTP packets (RFC 3550 §5.1): a zero-copy view and a builder.

use crate::media::bytes::{need, u16_at, u32_at, u8_at};
use crate::types::Ssrc;
use crate::Error;

/// Size of the fixed RTP header.
pub const HEADER_LEN: usize = 12;

/// Whether a datagram whose second byte is `second` is RTCP rather than RTP on a multiplexed
/// port: RTCP packet types 192-223 (RFC 5761 §4) are payload types no RTP stream may use.
pub fn is_rtcp(second: u8) -> bool {
    (192..=223).contains(&second)
}

/// A checked view of an RTP packet. Parsing validates version, CSRC list, header extension and
/// padding against the buffer's length once; every accessor is then infallible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    payload_start: usize,
    payload_end: usize,
}

impl<'a> RtpPacket<'a> {
    /// Parses and checks a datagram as RTP.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        need("RTP header", buf, HEADER_LEN)?;
        let b0 = u8_at(buf, 0);
        let version = b0 >> 6;
        if version != 2 {
            return Err(Error::BadVersion(version));
        }
        let csrc_count = usize::from(b0 & 0x0f);
        let mut start = HEADER_LEN + 4 * csrc_count;
        need("RTP CSRC list", buf, start)?;
        if b0 & 0x10 != 0 {
            need("RTP extension header", buf, start + 4)?;
            let words = usize::from(u16_at(buf, start + 2));
            start += 4 + 4 * words;
            need("RTP extension", buf, start)?;
        }
        let mut end = buf.len();
        if b0 & 0x20 != 0 {
            let pad = u8_at(buf, buf.len() - 1);
            if pad == 0 || usize::from(pad) > end - start {
                return Err(Error::BadPadding(pad));
            }
            end -= usize::from(pad);
        }
        Ok(RtpPacket {
            buf,
            payload_start: start,
            payload_end: end,
        })
    }

    /// The whole datagram.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Whether the padding bit is set.
    pub fn has_padding(&self) -> bool {
        u8_at(self.buf, 0) & 0x20 != 0
    }

    /// Whether a header extension is present.
    pub fn has_extension(&self) -> bool {
        u8_at(self.buf, 0) & 0x10 != 0
    }

    /// Number of CSRCs.
    pub fn csrc_count(&self) -> u8 {
        u8_at(self.buf, 0) & 0x0f
    }

    /// The CSRC list.
    pub fn csrcs(&self) -> impl Iterator<Item = Ssrc> + 'a {
        let buf = self.buf;
        (0..usize::from(self.csrc_count())).map(move |i| Ssrc(u32_at(buf, HEADER_LEN + 4 * i)))
    }

    /// The marker bit: for H.264 (RFC 6184 §5.1) the last packet of an access unit.
    pub fn marker(&self) -> bool {
        u8_at(self.buf, 1) & 0x80 != 0
    }

    /// The payload type (7 bits).
    pub fn payload_type(&self) -> u8 {
        u8_at(self.buf, 1) & 0x7f
    }

    /// The 16-bit sequence number.
    pub fn sequence_number(&self) -> u16 {
        u16_at(self.buf, 2)
    }

    /// The RTP timestamp.
    pub fn timestamp(&self) -> u32 {
        u32_at(self.buf, 4)
    }

    /// The synchronisation source.
    pub fn ssrc(&self) -> Ssrc {
        Ssrc(u32_at(self.buf, 8))
    }

    /// The header extension's profile id and data, if present.
    pub fn extension(&self) -> Option<(u16, &'a [u8])> {
        if !self.has_extension() {
            return None;
        }
        let at = HEADER_LEN + 4 * usize::from(self.csrc_count());
        Some((
            u16_at(self.buf, at),
            self.buf.get(at + 4..self.payload_start)?,
        ))
    }

    /// Offset of the payload in the datagram.
    pub fn payload_offset(&self) -> usize {
        self.payload_start
    }

    /// The payload, padding removed.
    pub fn payload(&self) -> &'a [u8] {
        self.buf
            .get(self.payload_start..self.payload_end)
            .unwrap_or_default()
    }
}

/// The fields of an RTP header to build (no CSRCs, no extension, no padding: what FTL sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: Ssrc,
}

impl RtpHeader {
    /// Appends this header and `payload` to `out`.
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.reserve(HEADER_LEN + payload.len());
        out.push(0x80);
        out.push(u8::from(self.marker) << 7 | (self.payload_type & 0x7f));
        out.extend_from_slice(&self.sequence_number.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.0.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// A new datagram of this header and `payload`.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(payload, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: 96,
            sequence_number: 0xfffe,
            timestamp: 0x0102_0304,
            ssrc: Ssrc(78),
        }
    }

    #[test]
    fn builds_and_parses() {
        let pkt = header().build(&[0x67, 0x42]);
        assert_eq!(
            pkt,
            [0x80, 0xe0, 0xff, 0xfe, 1, 2, 3, 4, 0, 0, 0, 78, 0x67, 0x42]
        );
        let p = RtpPacket::parse(&pkt).unwrap();
        assert!(p.marker());
        assert_eq!(p.payload_type(), 96);
        assert_eq!(p.sequence_number(), 0xfffe);
        assert_eq!(p.timestamp(), 0x0102_0304);
        assert_eq!(p.ssrc(), Ssrc(78));
        assert_eq!(p.payload(), [0x67, 0x42]);
        assert_eq!(p.payload_offset(), 12);
        assert_eq!(p.extension(), None);
    }

    #[test]
    fn the_reference_clients_first_packet() {
        // `80 60 00 00 00 00 00 00 <ssrc> 67 42 ...`: SPS as a single NAL, seq and ts at 0.
        let pkt = [
            0x80, 0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 78, 0x67, 0x42, 0xc0, 0x1e,
        ];
        let p = RtpPacket::parse(&pkt).unwrap();
        assert!(!p.marker());
        assert_eq!((p.sequence_number(), p.timestamp()), (0, 0));
        assert_eq!(p.payload().first(), Some(&0x67));
    }

    #[test]
    fn csrcs_extension_and_padding() {
        let mut pkt = vec![0x80 | 0x20 | 0x10 | 2, 96, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1];
        pkt.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 6]); // two CSRCs
        pkt.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // one-word extension
        pkt.extend_from_slice(&[0xaa, 0xbb]); // payload
        pkt.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let p = RtpPacket::parse(&pkt).unwrap();
        assert_eq!(p.csrcs().collect::<Vec<_>>(), [Ssrc(5), Ssrc(6)]);
        assert_eq!(p.extension(), Some((0xbede, &[1, 2, 3, 4][..])));
        assert_eq!(p.payload(), [0xaa, 0xbb]);
    }

    #[test]
    fn every_bad_length_is_an_error() {
        assert!(matches!(
            RtpPacket::parse(&[0x80; 11]),
            Err(Error::Truncated { .. })
        ));
        assert_eq!(RtpPacket::parse(&[0x40; 12]), Err(Error::BadVersion(1)));
        // CSRC count 15 needs 72 bytes.
        let mut p = vec![0x8f; 12];
        p.resize(40, 0);
        assert!(matches!(
            RtpPacket::parse(&p),
            Err(Error::Truncated {
                what: "RTP CSRC list",
                ..
            })
        ));
        // Extension header missing, then extension length running past the end.
        assert!(matches!(
            RtpPacket::parse(&[0x90, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::Truncated {
                what: "RTP extension header",
                ..
            })
        ));
        assert!(matches!(
            RtpPacket::parse(&[0x90, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            Err(Error::Truncated {
                what: "RTP extension",
                ..
            })
        ));
        // Padding count zero, or more than the payload.
        assert_eq!(
            RtpPacket::parse(&[0xa0, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::BadPadding(0))
        );
        assert_eq!(
            RtpPacket::parse(&[0xa0, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 5]),
            Err(Error::BadPadding(5))
        );
    }

    #[test]
    fn no_length_panics() {
        let base = header().build(&[0xab; 64]);
        for b0 in [0x80u8, 0x9f, 0xbf, 0xaf, 0xb0] {
            for len in 0..=base.len() {
                let mut p = base[..len].to_vec();
                if let Some(first) = p.first_mut() {
                    *first = b0;
                }
                if let Ok(v) = RtpPacket::parse(&p) {
                    let _ = (v.payload(), v.extension(), v.csrcs().count());
                }
            }
        }
    }
}
