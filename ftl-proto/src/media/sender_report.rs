//! RTCP sender reports (RFC 3550 §6.4.1) as the FTL client sends them: 28 bytes, no report
//! blocks, about once a second per SSRC. They map each track's RTP time to a shared NTP clock.

use crate::media::bytes::{need, u16_at, u32_at, u8_at};
use crate::types::Ssrc;
use crate::Error;

/// RTCP packet type of a sender report.
pub const SR_TYPE: u8 = 200;
/// Size of a sender report without report blocks.
pub const SR_LEN: usize = 28;

/// The fields of a sender report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport {
    pub ssrc: Ssrc,
    /// NTP timestamp: seconds since 1900 in the upper 32 bits, fraction in the lower.
    pub ntp: u64,
    /// The RTP timestamp corresponding to `ntp`.
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

impl SenderReport {
    /// Parses a sender report: version 2, type 200, length field at least 6 words and covered by
    /// the buffer. Report blocks, if any, are ignored.
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        need("RTCP sender report", buf, SR_LEN)?;
        let version = u8_at(buf, 0) >> 6;
        if version != 2 {
            return Err(Error::BadVersion(version));
        }
        if u8_at(buf, 1) != SR_TYPE {
            return Err(Error::WrongPacketType {
                what: "RTCP sender report",
                got: u8_at(buf, 1),
            });
        }
        let words = usize::from(u16_at(buf, 2));
        if words < 6 {
            return Err(Error::Truncated {
                what: "RTCP sender report length field",
                needed: SR_LEN,
                got: (words + 1) * 4,
            });
        }
        need("RTCP sender report", buf, (words + 1) * 4)?;
        Ok(SenderReport {
            ssrc: Ssrc(u32_at(buf, 4)),
            ntp: u64::from(u32_at(buf, 8)) << 32 | u64::from(u32_at(buf, 12)),
            rtp_timestamp: u32_at(buf, 16),
            packet_count: u32_at(buf, 20),
            octet_count: u32_at(buf, 24),
        })
    }

    /// The 28-byte datagram the FTL client sends.
    pub fn build(&self) -> [u8; SR_LEN] {
        let mut out = [0u8; SR_LEN];
        let fields: [&[u8]; 8] = [
            &[0x80, SR_TYPE],
            &6u16.to_be_bytes(),
            &self.ssrc.0.to_be_bytes(),
            &((self.ntp >> 32) as u32).to_be_bytes(),
            &(self.ntp as u32).to_be_bytes(),
            &self.rtp_timestamp.to_be_bytes(),
            &self.packet_count.to_be_bytes(),
            &self.octet_count.to_be_bytes(),
        ];
        let mut at = 0;
        for f in fields {
            if let Some(dst) = out.get_mut(at..at + f.len()) {
                dst.copy_from_slice(f);
            }
            at += f.len();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let sr = SenderReport {
            ssrc: Ssrc(77),
            ntp: 0x0102_0304_0506_0708,
            rtp_timestamp: 90_000,
            packet_count: 10,
            octet_count: 12_000,
        };
        let bytes = sr.build();
        assert_eq!(&bytes[..4], [0x80, 200, 0, 6]);
        assert_eq!(SenderReport::parse(&bytes), Ok(sr));
    }

    #[test]
    fn malformed() {
        let good = SenderReport {
            ssrc: Ssrc(1),
            ntp: 0,
            rtp_timestamp: 0,
            packet_count: 0,
            octet_count: 0,
        }
        .build();
        assert!(matches!(
            SenderReport::parse(&good[..27]),
            Err(Error::Truncated { .. })
        ));
        let mut v1 = good;
        v1[0] = 0x40;
        assert_eq!(SenderReport::parse(&v1), Err(Error::BadVersion(1)));
        let mut rr = good;
        rr[1] = 201;
        assert!(matches!(
            SenderReport::parse(&rr),
            Err(Error::WrongPacketType { .. })
        ));
        let mut long = good;
        long[3] = 12; // claims 52 bytes
        assert!(matches!(
            SenderReport::parse(&long),
            Err(Error::Truncated { .. })
        ));
        let mut short = good;
        short[3] = 1;
        assert!(matches!(
            SenderReport::parse(&short),
            Err(Error::Truncated { .. })
        ));
    }
}
