//! RFC 4571 framing, how ICE over TCP (RFC 6544) carries STUN, DTLS and SRTP packets on a
//! stream: each packet is a 16-bit big-endian length and that many bytes. The reassembler
//! holds at most one packet's worth of bytes per connection, so a peer that announces 65535
//! bytes and then stalls costs 64 KiB and a deadline, never more.

/// Why a connection's framing is unusable (the connection is closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// A frame of length zero: no ICE-TCP peer sends one.
    Empty,
    /// A packet to send is longer than a frame can say.
    TooLong(usize),
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FramingError::Empty => f.write_str("an empty RFC 4571 frame"),
            FramingError::TooLong(n) => write!(f, "a {n}-byte packet does not fit a frame"),
        }
    }
}

impl std::error::Error for FramingError {}

/// The largest packet a frame carries.
pub const MAX_FRAME: usize = u16::MAX as usize;

/// Reassembles frames from stream bytes as they arrive, in any chunking.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
    /// Bytes before this offset were already handed out.
    start: usize,
}

impl Deframer {
    /// The next complete frame from `input`, taking only what that frame needs; `Ok(None)`
    /// when `input` ran out first (its bytes are kept for the next call). Call again with the
    /// rest of `input` (what was not consumed) until it returns `Ok(None)`: the second value
    /// is how many bytes of `input` were consumed.
    pub fn next<'a>(&'a mut self, input: &[u8]) -> (Result<Option<&'a [u8]>, FramingError>, usize) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        let pending = self.buf.len() - self.start;
        // The length prefix first.
        let mut used = 0;
        if pending < 2 {
            let want = 2 - pending;
            let take = want.min(input.len());
            self.buf
                .extend_from_slice(input.get(..take).unwrap_or_default());
            used += take;
            if take < want {
                return (Ok(None), used);
            }
        }
        let head = self.buf.get(self.start..self.start + 2).unwrap_or_default();
        let len = usize::from(u16::from_be_bytes([
            head.first().copied().unwrap_or(0),
            head.get(1).copied().unwrap_or(0),
        ]));
        if len == 0 {
            return (Err(FramingError::Empty), used);
        }
        let have = self.buf.len() - self.start - 2;
        let take = (len - have).min(input.len() - used);
        self.buf
            .extend_from_slice(input.get(used..used + take).unwrap_or_default());
        used += take;
        if have + take < len {
            return (Ok(None), used);
        }
        let frame_start = self.start + 2;
        self.start = frame_start + len;
        (Ok(self.buf.get(frame_start..self.start)), used)
    }

    /// Bytes held for a frame not yet complete.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Appends `packet` as one frame to `out`.
pub fn frame(packet: &[u8], out: &mut Vec<u8>) -> Result<(), FramingError> {
    let len = u16::try_from(packet.len()).map_err(|_| FramingError::TooLong(packet.len()))?;
    if len == 0 {
        return Err(FramingError::Empty);
    }
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame in `stream`, fed in chunks of `chunk` bytes.
    fn frames(stream: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut d = Deframer::default();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            let mut rest = piece;
            loop {
                let (r, used) = d.next(rest);
                let got = r?.map(<[u8]>::to_vec);
                rest = rest.get(used..).unwrap_or_default();
                match got {
                    Some(f) => out.push(f),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn frames_come_out_whole_in_any_chunking() {
        let packets: Vec<Vec<u8>> = (1..40u32)
            .map(|i| (0..i * 97 % 1500 + 1).map(|j| (i ^ j) as u8).collect())
            .chain([vec![7u8; MAX_FRAME]])
            .collect();
        let mut stream = Vec::new();
        for p in &packets {
            frame(p, &mut stream).unwrap();
        }
        for chunk in [1, 2, 3, 7, 1400, 65537, stream.len()] {
            assert_eq!(frames(&stream, chunk).unwrap(), packets, "chunk {chunk}");
        }
    }

    #[test]
    fn bad_frames_are_errors_and_buffers_stay_bounded() {
        assert_eq!(frames(&[0, 0, 1, 2], 4), Err(FramingError::Empty));
        assert_eq!(frame(&[], &mut Vec::new()), Err(FramingError::Empty));
        assert_eq!(
            frame(&vec![0; MAX_FRAME + 1], &mut Vec::new()),
            Err(FramingError::TooLong(MAX_FRAME + 1))
        );
        // A 65535-byte frame announced, then a trickle: held, at most one frame's worth.
        let mut d = Deframer::default();
        let mut input = vec![0xff, 0xff];
        input.extend(vec![1u8; 1000]);
        let (r, used) = d.next(&input);
        assert_eq!((r, used), (Ok(None), 1002));
        assert_eq!(d.buffered(), 1002);
        // Bytes past a frame are left to the caller, not buffered.
        let mut d = Deframer::default();
        let (r, used) = d.next(&[0, 2, 9, 9, 0, 1]);
        assert_eq!(r, Ok(Some(&[9u8, 9][..])));
        assert_eq!(used, 4);
    }
}
