//! Sequence numbers: extending 16-bit RTP numbers to 64 bits once, at ingest, and remembering
//! which recent ones arrived.
//!
//! Everything downstream (loss tracking, the GOP cache, per-viewer numbering, str0m's SRTP
//! index) works on extended numbers, so wrap-around is handled here and nowhere else.

/// How far ahead a sequence number may jump and still count as the same series. A larger jump
/// is a restart of the sender's numbering (OBS resets audio after its speed test) or garbage.
pub const MAX_JUMP: i64 = 3000;
/// How far back a late packet may be and still be placed.
pub const MAX_LATE: i64 = WINDOW as i64;

/// What the tracker made of one sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extended {
    /// Newer than anything before; `gap` numbers between it and the previous highest are missing.
    Ahead { ext: u64, gap: u64 },
    /// Not newer than the highest: a late, retransmitted or duplicate packet.
    Behind { ext: u64 },
    /// The numbering restarted (confirmed by two consecutive packets); this packet continues
    /// right after the previous highest, with no gap.
    Restarted { ext: u64 },
    /// A large jump not (yet) confirmed by a following packet: not used.
    Probation,
    /// Older than [`MAX_LATE`] behind the highest.
    TooOld,
}

/// Extends one SSRC's 16-bit sequence numbers.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    /// The highest extended number and the wire number it came from (they differ by more than
    /// a multiple of 2^16 after a restart).
    highest: Option<(u64, u16)>,
    probation: Option<u16>,
}

/// Extended numbers start here so that packets slightly older than the first never go below 0.
const FIRST_EXT: u64 = 1 << 16;

impl SeqTracker {
    /// Extends `seq`.
    pub fn extend(&mut self, seq: u16) -> Extended {
        let Some((highest, wire)) = self.highest else {
            let ext = FIRST_EXT + u64::from(seq);
            self.highest = Some((ext, seq));
            return Extended::Ahead { ext, gap: 0 };
        };
        let delta = i64::from(seq.wrapping_sub(wire) as i16);
        if delta > 0 && delta <= MAX_JUMP {
            self.probation = None;
            let ext = highest + delta as u64;
            self.highest = Some((ext, seq));
            return Extended::Ahead {
                ext,
                gap: delta as u64 - 1,
            };
        }
        if delta <= 0 && -delta < MAX_LATE {
            return Extended::Behind {
                ext: highest - (-delta) as u64,
            };
        }
        // A large jump: accept it only when the next packet follows it.
        match self.probation {
            Some(p) if p.wrapping_add(1) == seq => {
                self.probation = None;
                let ext = highest + 1;
                self.highest = Some((ext, seq));
                Extended::Restarted { ext }
            }
            _ => {
                self.probation = Some(seq);
                if delta <= 0 {
                    Extended::TooOld
                } else {
                    Extended::Probation
                }
            }
        }
    }

    /// The highest extended number so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest.map(|(ext, _)| ext)
    }
}

const WINDOW: usize = 2048;
const WORDS: usize = WINDOW / 64;

/// Which of the last [`WINDOW`] extended numbers arrived: duplicate detection.
#[derive(Debug, Clone)]
pub struct ReceivedWindow {
    bits: [u64; WORDS],
    highest: Option<u64>,
}

impl Default for ReceivedWindow {
    fn default() -> Self {
        ReceivedWindow {
            bits: [0; WORDS],
            highest: None,
        }
    }
}

impl ReceivedWindow {
    /// Marks `ext` received. Returns `false` if it was already marked or is older than the
    /// window.
    pub fn insert(&mut self, ext: u64) -> bool {
        match self.highest {
            None => self.highest = Some(ext),
            Some(h) if ext > h => {
                // Clear the slots between the old highest and `ext`: they are new numbers.
                let clear = (ext - h).min(WINDOW as u64);
                for i in 1..=clear {
                    self.set(h + i, false);
                }
                self.highest = Some(ext);
            }
            Some(h) if h - ext >= WINDOW as u64 => return false,
            Some(_) => {}
        }
        if self.get(ext) {
            return false;
        }
        self.set(ext, true);
        true
    }

    /// Forgets everything (the numbering restarted).
    pub fn reset(&mut self) {
        *self = ReceivedWindow::default();
    }

    fn get(&self, ext: u64) -> bool {
        let i = (ext % WINDOW as u64) as usize;
        self.bits
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn set(&mut self, ext: u64, on: bool) {
        let i = (ext % WINDOW as u64) as usize;
        if let Some(w) = self.bits.get_mut(i / 64) {
            if on {
                *w |= 1 << (i % 64);
            } else {
                *w &= !(1 << (i % 64));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_around() {
        let mut t = SeqTracker::default();
        assert_eq!(
            t.extend(65534),
            Extended::Ahead {
                ext: FIRST_EXT + 65534,
                gap: 0
            }
        );
        assert_eq!(
            t.extend(65535),
            Extended::Ahead {
                ext: FIRST_EXT + 65535,
                gap: 0
            }
        );
        assert_eq!(
            t.extend(1),
            Extended::Ahead {
                ext: FIRST_EXT + 65537,
                gap: 1
            }
        );
        assert_eq!(
            t.extend(0),
            Extended::Behind {
                ext: FIRST_EXT + 65536
            }
        );
        assert_eq!(
            t.extend(65530),
            Extended::Behind {
                ext: FIRST_EXT + 65530
            }
        );
    }

    #[test]
    fn a_restart_needs_two_packets() {
        let mut t = SeqTracker::default();
        for s in 5000..5010 {
            t.extend(s);
        }
        assert_eq!(t.extend(0), Extended::TooOld);
        assert_eq!(
            t.extend(1),
            Extended::Restarted {
                ext: FIRST_EXT + 5010
            }
        );
        assert_eq!(
            t.extend(2),
            Extended::Ahead {
                ext: FIRST_EXT + 5011,
                gap: 0
            }
        );
        // One stray far-ahead number changes nothing.
        assert_eq!(t.extend(20000), Extended::Probation);
        assert_eq!(
            t.extend(3),
            Extended::Ahead {
                ext: FIRST_EXT + 5012,
                gap: 0
            }
        );
    }

    #[test]
    fn late_packets_within_the_window() {
        let mut t = SeqTracker::default();
        t.extend(10_000);
        assert_eq!(
            t.extend(10_000 - 2047),
            Extended::Behind {
                ext: FIRST_EXT + 10_000 - 2047
            }
        );
        assert_eq!(t.extend(10_000 - 2048), Extended::TooOld);
    }

    #[test]
    fn window_detects_duplicates() {
        let mut w = ReceivedWindow::default();
        assert!(w.insert(100));
        assert!(!w.insert(100));
        assert!(w.insert(105));
        assert!(w.insert(103));
        assert!(!w.insert(103));
        assert!(w.insert(100 + 5000));
        assert!(!w.insert(105), "older than the window");
        assert!(w.insert(100 + 4999));
    }
}
