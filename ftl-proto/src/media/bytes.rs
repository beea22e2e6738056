//! Big-endian field access for packet views. A view checks its length once at parse time; these
//! helpers then read within that checked length and can never panic (a read past the end, which
//! a checked view never does, yields zero).

pub(crate) fn u8_at(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    match b.get(off..off + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    match b.get(off..off + 4) {
        Some(&[w, x, y, z]) => u32::from_be_bytes([w, x, y, z]),
        _ => 0,
    }
}

pub(crate) fn need(what: &'static str, b: &[u8], needed: usize) -> Result<(), crate::Error> {
    if b.len() < needed {
        Err(crate::Error::Truncated {
            what,
            needed,
            got: b.len(),
        })
    } else {
        Ok(())
    }
}
