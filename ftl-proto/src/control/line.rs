//! Line framing for the control channel, with a bounded buffer.
//!
//! TCP delivers the control stream in arbitrary chunks. The client ends each command with
//! `\r\n\r\n` and the server each reply with `\n`; both sides split at `\n`, strip one trailing
//! `\r` and skip empty lines, which reads the reference client's doubled line endings and a bare
//! `\n` alike. Both limits are enforced as bytes arrive, so a peer can never make the buffer grow
//! past `max_buffered` or hold a partial line longer than `max_line`.

use crate::Error;

/// Splits a byte stream into text lines.
#[derive(Debug, Clone)]
pub struct LineFramer {
    buf: Vec<u8>,
    /// Length of the unterminated line at the end of `buf`.
    partial: usize,
    max_line: usize,
    max_buffered: usize,
}

impl LineFramer {
    /// A framer allowing lines of up to `max_line` bytes (terminator excluded) and up to
    /// `max_buffered` bytes received but not yet taken as lines.
    pub fn new(max_line: usize, max_buffered: usize) -> Self {
        LineFramer {
            buf: Vec::new(),
            partial: 0,
            max_line,
            max_buffered: max_buffered.max(max_line + 2),
        }
    }

    /// Appends received bytes. Fails, keeping nothing of `bytes`, when a line would exceed
    /// `max_line` or the pending bytes `max_buffered`.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut partial = self.partial;
        for &b in bytes {
            if b == b'\n' {
                partial = 0;
            } else {
                partial += 1;
                // One extra byte of slack for the `\r` of a `\r\n` terminator.
                if partial > self.max_line + 1 {
                    return Err(Error::LineTooLong {
                        limit: self.max_line,
                    });
                }
            }
        }
        if self.buf.len() + bytes.len() > self.max_buffered {
            return Err(Error::BufferFull {
                limit: self.max_buffered,
            });
        }
        self.buf.extend_from_slice(bytes);
        self.partial = partial;
        Ok(())
    }

    /// Takes the next complete, non-empty line, without its terminator.
    pub fn next_line(&mut self) -> Result<Option<String>, Error> {
        loop {
            let Some(pos) = self.buf.iter().position(|&b| b == b'\n') else {
                return Ok(None);
            };
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > self.max_line {
                return Err(Error::LineTooLong {
                    limit: self.max_line,
                });
            }
            if line.is_empty() {
                continue;
            }
            return String::from_utf8(line)
                .map(Some)
                .map_err(|_| Error::NotUtf8);
        }
    }

    /// Bytes received and not yet taken as lines.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(f: &mut LineFramer) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = f.next_line().unwrap() {
            out.push(l);
        }
        out
    }

    #[test]
    fn splits_doubled_crlf_and_bare_lf() {
        let mut f = LineFramer::new(64, 256);
        f.push(b"HMAC\r\n\r\nCONN").unwrap();
        assert_eq!(lines(&mut f), ["HMAC"]);
        f.push(b"ECT 1 $ab\r\n\r\n.\n").unwrap();
        assert_eq!(lines(&mut f), ["CONNECT 1 $ab", "."]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_lines() {
        let input = b"A: 1\r\n\r\nB: 2\r\n\r\n.\r\n\r\n";
        let mut f = LineFramer::new(64, 256);
        let mut out = Vec::new();
        for b in input {
            f.push(&[*b]).unwrap();
            out.extend(lines(&mut f));
        }
        assert_eq!(out, ["A: 1", "B: 2", "."]);
    }

    #[test]
    fn long_line_is_refused_as_it_arrives() {
        let mut f = LineFramer::new(8, 1024);
        f.push(b"12345678\r\n").unwrap();
        assert_eq!(lines(&mut f), ["12345678"]);
        f.push(b"12345").unwrap();
        assert_eq!(f.push(b"6789x"), Err(Error::LineTooLong { limit: 8 }));
        // Nothing of the refused chunk was kept.
        assert_eq!(f.pending(), 5);
    }

    #[test]
    fn pipelined_bytes_are_bounded() {
        let mut f = LineFramer::new(8, 32);
        f.push(&b"abc\n".repeat(8)).unwrap();
        assert_eq!(f.push(b"d"), Err(Error::BufferFull { limit: 32 }));
    }

    #[test]
    fn non_utf8_is_an_error() {
        let mut f = LineFramer::new(8, 32);
        f.push(b"\xff\xfe\n").unwrap();
        assert_eq!(f.next_line(), Err(Error::NotUtf8));
    }
}
