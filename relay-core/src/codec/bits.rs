//! Reading bit fields MSB first, as every video bitstream header is written. Running out of
//! bits is `None`, never a panic: headers come from the network.

/// A reader over a byte slice.
pub(crate) struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Bits<'a> {
        Bits { data, pos: 0 }
    }

    pub(crate) fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    pub(crate) fn flag(&mut self) -> Option<bool> {
        Some(self.bit()? == 1)
    }

    /// `n` bits (at most 32) as an unsigned number.
    pub(crate) fn bits(&mut self, n: u32) -> Option<u32> {
        if n > 32 {
            return None;
        }
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        u32::try_from(v).ok()
    }

    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        if end > self.data.len() * 8 {
            return None;
        }
        self.pos = end;
        Some(())
    }

    /// Exp-Golomb `ue(v)` (H.264, H.265), refused past `max`.
    pub(crate) fn ue(&mut self, max: u32) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let v = ((1u64 << zeros) - 1) + u64::from(self.bits(zeros)?);
        u32::try_from(v).ok().filter(|v| *v <= max)
    }

    /// AV1's `uvlc()`: like `ue(v)`, up to 32 leading zeros.
    pub(crate) fn uvlc(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros >= 32 {
                return Some(u32::MAX);
            }
        }
        let v = ((1u64 << zeros) - 1) + u64::from(self.bits(zeros)?);
        u32::try_from(v).ok()
    }
}

/// Fields written MSB first, each `(value, bits)`, zero-padded to whole bytes: the inverse of
/// [`Bits`], for building the headers the readers here take (tests, test tools).
pub fn pack_bits(fields: &[(u32, u32)]) -> Vec<u8> {
    let mut bits = Vec::new();
    for (value, n) in fields {
        for i in (0..*n).rev() {
            bits.push(((value >> i) & 1) as u8);
        }
    }
    bits.resize(bits.len().div_ceil(8) * 8, 0);
    bits.chunks(8)
        .map(|c| c.iter().fold(0u8, |a, b| (a << 1) | b))
        .collect()
}

/// AV1's `leb128()`: a little-endian base-128 length; returns it and the bytes it took.
pub(crate) fn leb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in data.iter().take(8).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Removes emulation prevention bytes (`00 00 03` -> `00 00`) of H.264/H.265 NAL units from as
/// much of `data` as fits in `out` (the same rule for both codecs).
pub(crate) use ftl_proto::media::sps::unescape_into as unescape;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_stops_at_the_end() {
        let mut b = Bits::new(&[0b1010_0000, 0xff]);
        assert_eq!(b.bits(3), Some(0b101));
        assert_eq!(b.flag(), Some(false));
        assert_eq!(b.bits(12), Some(0x0ff));
        assert_eq!(b.bit(), None);
        assert_eq!(Bits::new(&[0xff; 8]).bits(33), None);
        assert_eq!(
            Bits::new(&[0x00]).ue(100),
            None,
            "runs out inside the prefix"
        );
        // ue: 1 -> 0, 010 -> 1, 011 -> 2, 00100 -> 3
        let mut b = Bits::new(&[0b1010_0110, 0b0100_0000]);
        assert_eq!(
            (b.ue(9), b.ue(9), b.ue(9), b.ue(9)),
            (Some(0), Some(1), Some(2), Some(3))
        );
        assert_eq!(Bits::new(&[0b0010_0000]).ue(2), None, "past the maximum");
    }

    #[test]
    fn leb128_lengths() {
        assert_eq!(leb128(&[0x05]), Some((5, 1)));
        assert_eq!(leb128(&[0x80 | 0x2c, 0x02]), Some((300, 2)));
        assert_eq!(leb128(&[0x80, 0x80]), None);
        assert_eq!(leb128(&[0xff; 9]), None);
    }

    #[test]
    fn unescapes() {
        let mut out = [0u8; 8];
        assert_eq!(unescape(&[0, 0, 3, 1, 0, 0, 3], &mut out), &[0, 0, 1, 0, 0]);
        let mut small = [0u8; 2];
        assert_eq!(unescape(&[1, 2, 3, 4], &mut small), &[1, 2]);
    }
}
