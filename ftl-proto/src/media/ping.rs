//! FTL ping packets: the client's RTT probe, echoed back unchanged by the server.
//!
//! Layout (reference client, 64-bit Linux): `81 fa 00 18`, 4 bytes of alignment padding, then a C
//! `struct timeval` (8-byte seconds, 8-byte microseconds, host byte order). 32-bit builds send
//! 8 bytes of timeval instead, so only the first two bytes identify a ping.

use crate::media::bytes::{need, u8_at};
use crate::Error;

/// First byte of a ping: V=2, FMT=1.
pub const PING_BYTE0: u8 = 0x81;
/// Second byte of a ping: 250.
pub const PING_TYPE: u8 = 250;
/// Size of the ping the reference client sends on 64-bit platforms.
pub const PING_LEN: usize = 24;

/// A checked view of an FTL ping datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FtlPing<'a> {
    buf: &'a [u8],
}

impl<'a> FtlPing<'a> {
    /// Checks that `buf` is a ping: at least the 4-byte header, first bytes `81 fa`.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        need("FTL ping", buf, 4)?;
        if u8_at(buf, 0) != PING_BYTE0 || u8_at(buf, 1) != PING_TYPE {
            return Err(Error::WrongPacketType {
                what: "FTL ping",
                got: u8_at(buf, 1),
            });
        }
        Ok(FtlPing { buf })
    }

    /// The bytes to send back: the datagram unchanged (the client computes RTT from the echo).
    pub fn echo(&self) -> &'a [u8] {
        self.buf
    }

    /// The send time in microseconds, for a 24-byte ping in the 64-bit little-endian layout
    /// (what [`build_ping`] writes); `None` for other layouts.
    pub fn sent_at_micros(&self) -> Option<u64> {
        if self.buf.len() != PING_LEN {
            return None;
        }
        let sec = u64::from_le_bytes(self.buf.get(8..16)?.try_into().ok()?);
        let usec = u64::from_le_bytes(self.buf.get(16..24)?.try_into().ok()?);
        sec.checked_mul(1_000_000)?.checked_add(usec)
    }
}

/// Builds a ping as the 64-bit reference client does, carrying `sent_at_micros` (any clock the
/// sender chooses; only the sender reads it back).
pub fn build_ping(sent_at_micros: u64) -> [u8; PING_LEN] {
    let mut p = [0u8; PING_LEN];
    let mut w = |at: usize, bytes: &[u8]| {
        if let Some(dst) = p.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    w(0, &[PING_BYTE0, PING_TYPE]);
    w(2, &(PING_LEN as u16).to_be_bytes());
    w(8, &(sent_at_micros / 1_000_000).to_le_bytes());
    w(16, &(sent_at_micros % 1_000_000).to_le_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = build_ping(3_000_123);
        assert_eq!(&p[..4], [0x81, 0xfa, 0x00, 0x18]);
        let v = FtlPing::parse(&p).unwrap();
        assert_eq!(v.echo(), p);
        assert_eq!(v.sent_at_micros(), Some(3_000_123));
    }

    #[test]
    fn short_and_foreign() {
        assert!(matches!(
            FtlPing::parse(&[0x81, 0xfa, 0]),
            Err(Error::Truncated { .. })
        ));
        assert!(FtlPing::parse(&[0x80, 0xfa, 0, 0]).is_err());
        let v = FtlPing::parse(&[0x81, 0xfa, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(v.sent_at_micros(), None);
    }
}
