//! Generic NACK (RFC 4585 §6.2.1): the server asks the FTL client to resend lost packets.
//!
//! The client resends each requested packet from a ring of its last 2048 per SSRC, with the
//! original sequence number.

use crate::media::bytes::{need, u16_at, u32_at, u8_at};
use crate::types::Ssrc;
use crate::Error;

/// RTCP packet type of transport-layer feedback.
pub const RTPFB_TYPE: u8 = 205;
/// Feedback message type of a generic NACK.
pub const NACK_FMT: u8 = 1;

/// One FCI entry: a lost packet and a bitmask of the next 16 (bit i: `pid + i + 1` lost too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackEntry {
    pub pid: u16,
    pub blp: u16,
}

impl NackEntry {
    /// The sequence numbers this entry names, in order.
    pub fn lost(&self) -> impl Iterator<Item = u16> {
        let (pid, blp) = (self.pid, self.blp);
        std::iter::once(pid).chain(
            (0..16u16)
                .filter(move |i| blp & (1 << i) != 0)
                .map(move |i| pid.wrapping_add(i + 1)),
        )
    }
}

/// Groups lost sequence numbers, given in send order, into FCI entries. Each entry covers its
/// `pid` and the 16 numbers after it (wrap-around included).
pub fn entries_for(lost: &[u16]) -> Vec<NackEntry> {
    let mut out: Vec<NackEntry> = Vec::new();
    for &seq in lost {
        if let Some(last) = out.last_mut() {
            let d = seq.wrapping_sub(last.pid);
            if d == 0 {
                continue;
            }
            if (1..=16).contains(&d) {
                last.blp |= 1 << (d - 1);
                continue;
            }
        }
        out.push(NackEntry { pid: seq, blp: 0 });
    }
    out
}

/// A parsed generic NACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    pub sender_ssrc: Ssrc,
    pub media_ssrc: Ssrc,
    pub entries: Vec<NackEntry>,
}

impl Nack {
    /// Builds a NACK for `lost` (send order) of `media_ssrc`.
    pub fn new(sender_ssrc: Ssrc, media_ssrc: Ssrc, lost: &[u16]) -> Self {
        Nack {
            sender_ssrc,
            media_ssrc,
            entries: entries_for(lost),
        }
    }

    /// Every sequence number the NACK asks for.
    pub fn lost(&self) -> impl Iterator<Item = u16> + '_ {
        self.entries.iter().flat_map(NackEntry::lost)
    }

    /// Parses a generic NACK: version 2, FMT 1, type 205, length covered by the buffer. Entries
    /// beyond the length field are ignored; a NACK with no entry is an error.
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        need("RTCP NACK", buf, 16)?;
        let b0 = u8_at(buf, 0);
        if b0 >> 6 != 2 {
            return Err(Error::BadVersion(b0 >> 6));
        }
        if u8_at(buf, 1) != RTPFB_TYPE || b0 & 0x1f != NACK_FMT {
            return Err(Error::WrongPacketType {
                what: "RTCP NACK",
                got: u8_at(buf, 1),
            });
        }
        let len = (usize::from(u16_at(buf, 2)) + 1) * 4;
        need("RTCP NACK", buf, len)?;
        let entries = (12..len)
            .step_by(4)
            .filter(|at| at + 4 <= len)
            .map(|at| NackEntry {
                pid: u16_at(buf, at),
                blp: u16_at(buf, at + 2),
            })
            .collect::<Vec<_>>();
        if entries.is_empty() {
            return Err(Error::Truncated {
                what: "RTCP NACK entries",
                needed: 16,
                got: len,
            });
        }
        Ok(Nack {
            sender_ssrc: Ssrc(u32_at(buf, 4)),
            media_ssrc: Ssrc(u32_at(buf, 8)),
            entries,
        })
    }

    /// The datagram: `81 cd <len> <sender ssrc> <media ssrc> (<pid> <blp>)*`.
    pub fn build(&self) -> Vec<u8> {
        let words = 2 + self.entries.len();
        let mut out = Vec::with_capacity(4 + 4 * words);
        out.push(0x80 | NACK_FMT);
        out.push(RTPFB_TYPE);
        out.extend_from_slice(&(words as u16).to_be_bytes());
        out.extend_from_slice(&self.sender_ssrc.0.to_be_bytes());
        out.extend_from_slice(&self.media_ssrc.0.to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.pid.to_be_bytes());
            out.extend_from_slice(&e.blp.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_round_trips() {
        let lost = [10, 11, 26, 27, 40, 65535, 0, 1];
        let n = Nack::new(Ssrc(1), Ssrc(78), &lost);
        assert_eq!(
            n.entries,
            [
                NackEntry {
                    pid: 10,
                    blp: 0b1000_0000_0000_0001
                },
                NackEntry {
                    pid: 27,
                    blp: 1 << 12
                },
                NackEntry {
                    pid: 65535,
                    blp: 0b11
                },
            ]
        );
        let bytes = n.build();
        assert_eq!(&bytes[..4], [0x81, 205, 0, 5]);
        let back = Nack::parse(&bytes).unwrap();
        assert_eq!(back, n);
        assert_eq!(back.lost().collect::<Vec<_>>(), lost);
    }

    #[test]
    fn malformed() {
        let good = Nack::new(Ssrc(1), Ssrc(2), &[5]).build();
        assert!(matches!(
            Nack::parse(&good[..15]),
            Err(Error::Truncated { .. })
        ));
        let mut pli = good.clone();
        pli[0] = 0x81;
        pli[1] = 206;
        assert!(matches!(
            Nack::parse(&pli),
            Err(Error::WrongPacketType { .. })
        ));
        let mut fmt = good.clone();
        fmt[0] = 0x83;
        assert!(matches!(
            Nack::parse(&fmt),
            Err(Error::WrongPacketType { .. })
        ));
        let mut long = good.clone();
        long[3] = 9;
        assert!(matches!(Nack::parse(&long), Err(Error::Truncated { .. })));
        let mut empty = good;
        empty[3] = 2;
        assert!(matches!(Nack::parse(&empty), Err(Error::Truncated { .. })));
    }
}
