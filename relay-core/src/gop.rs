//! The GOP cache: every video packet from the latest keyframe on, so that a viewer who joins
//! gets a decodable picture at once instead of waiting up to a keyframe interval (FTL has no
//! way to ask the encoder for a keyframe).
//!
//! Packets sit in slots indexed by extended sequence number, so a late or retransmitted packet
//! lands where it belongs. The cache is bounded in bytes (each slot counts [`SLOT_OVERHEAD`]
//! besides its payload) and in time; a GOP that outgrows either is dropped whole, because a cut
//! GOP cannot be decoded, and the cache fills again from the next keyframe.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::packet::Packet;

/// What a slot costs besides its payload.
pub const SLOT_OVERHEAD: usize = 64;
/// How far before the keyframe packet a late packet of the same frame may still be placed
/// (e.g. an SPS overtaken by its PPS).
const MAX_PREPEND: u64 = 16;

/// The packets of the current GOP.
#[derive(Debug, Clone)]
pub struct GopCache {
    slots: VecDeque<Option<Packet>>,
    start_ext: u64,
    keyframe_ts: u32,
    started_at: Option<Instant>,
    bytes: usize,
    max_bytes: usize,
    max_duration: Duration,
    /// GOPs dropped for outgrowing the bounds.
    pub overflows: u64,
}

impl GopCache {
    /// An empty cache with its bounds.
    pub fn new(max_bytes: usize, max_duration: Duration) -> Self {
        GopCache {
            slots: VecDeque::new(),
            start_ext: 0,
            keyframe_ts: 0,
            started_at: None,
            bytes: 0,
            max_bytes,
            max_duration,
            overflows: 0,
        }
    }

    /// Starts a new GOP at this keyframe packet, dropping the previous one.
    pub fn start(&mut self, pkt: &Packet, now: Instant) {
        self.clear();
        self.start_ext = pkt.ext;
        self.keyframe_ts = pkt.ts;
        self.started_at = Some(now);
        self.bytes = SLOT_OVERHEAD + pkt.payload.len();
        self.slots.push_back(Some(pkt.clone()));
        self.check_bounds(now);
    }

    /// Adds a packet of the current GOP (ignored when no GOP is cached or it is older).
    pub fn insert(&mut self, pkt: &Packet, now: Instant) {
        if self.started_at.is_none() {
            return;
        }
        if pkt.ext < self.start_ext {
            let before = self.start_ext - pkt.ext;
            if pkt.ts != self.keyframe_ts || before > MAX_PREPEND {
                return;
            }
            for _ in 1..before {
                self.slots.push_front(None);
            }
            self.slots.push_front(Some(pkt.clone()));
            self.start_ext = pkt.ext;
            self.bytes += before as usize * SLOT_OVERHEAD + pkt.payload.len();
        } else {
            let idx = (pkt.ext - self.start_ext) as usize;
            if idx >= self.slots.len() {
                let added = idx + 1 - self.slots.len();
                self.slots.resize(idx, None);
                self.slots.push_back(Some(pkt.clone()));
                self.bytes += added * SLOT_OVERHEAD + pkt.payload.len();
            } else if let Some(slot @ None) = self.slots.get_mut(idx) {
                *slot = Some(pkt.clone());
                self.bytes += pkt.payload.len();
            }
        }
        self.check_bounds(now);
    }

    /// Whether a GOP is cached.
    pub fn is_valid(&self) -> bool {
        self.started_at.is_some()
    }

    /// The cached packets in sequence order (gaps skipped).
    pub fn packets(&self) -> impl Iterator<Item = &Packet> {
        self.slots.iter().flatten()
    }

    /// The payloads of the cached keyframe, in order, when that whole frame is here: every
    /// packet from the first of the GOP up to the one with the marker bit, without a gap and
    /// all with the keyframe's timestamp. What a still picture of the stream is made from
    /// (thumbnails): one frame, decodable on its own.
    pub fn keyframe(&self) -> Option<Vec<Arc<[u8]>>> {
        self.started_at?;
        let mut out = Vec::new();
        for slot in &self.slots {
            let pkt = slot.as_ref()?;
            if pkt.ts != self.keyframe_ts {
                return None;
            }
            out.push(pkt.payload.clone());
            if pkt.marker {
                return Some(out);
            }
        }
        None
    }

    /// The RTP timestamp of the cached keyframe (tells one GOP from the next).
    pub fn keyframe_ts(&self) -> Option<u32> {
        self.started_at.map(|_| self.keyframe_ts)
    }

    /// How long ago the cached GOP's keyframe came: a replay of it sends that much of the
    /// stream at once.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.started_at.map(|t| now.saturating_duration_since(t))
    }

    /// Bytes held, slot overhead included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops the cached GOP.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.bytes = 0;
        self.started_at = None;
    }

    fn check_bounds(&mut self, now: Instant) {
        let too_old = self
            .started_at
            .is_some_and(|t| now.saturating_duration_since(t) > self.max_duration);
        if self.bytes > self.max_bytes || too_old {
            self.overflows += 1;
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn pkt(ext: u64, ts: u32, len: usize) -> Packet {
        Packet {
            layer: crate::layers::LayerId(0),
            ext,
            ts,
            marker: false,
            keyframe: false,
            wallclock: Instant::now(),
            payload: Arc::from(vec![ext as u8; len]),
        }
    }

    fn exts(g: &GopCache) -> Vec<u64> {
        g.packets().map(|p| p.ext).collect()
    }

    #[test]
    fn keeps_order_and_fills_gaps() {
        let now = Instant::now();
        let mut g = GopCache::new(1 << 20, Duration::from_secs(10));
        g.insert(&pkt(1, 0, 10), now);
        assert!(!g.is_valid(), "nothing before a keyframe");
        g.start(&pkt(10, 900, 10), now);
        g.insert(&pkt(13, 900, 10), now);
        g.insert(&pkt(11, 900, 10), now);
        assert_eq!(exts(&g), [10, 11, 13]);
        g.insert(&pkt(12, 900, 10), now);
        g.insert(&pkt(12, 900, 10), now);
        assert_eq!(exts(&g), [10, 11, 12, 13]);
        // A late packet of the keyframe's frame goes in front; an older frame's does not.
        g.insert(&pkt(8, 900, 10), now);
        g.insert(&pkt(7, 0, 10), now);
        assert_eq!(exts(&g), [8, 10, 11, 12, 13]);
        assert_eq!(g.bytes(), 6 * SLOT_OVERHEAD + 50);
        g.start(&pkt(20, 1800, 10), now);
        assert_eq!(exts(&g), [20]);
    }

    fn marked(ext: u64, ts: u32) -> Packet {
        Packet {
            marker: true,
            ..pkt(ext, ts, 4)
        }
    }

    #[test]
    fn keyframe_is_the_whole_first_frame_or_nothing() {
        let now = Instant::now();
        let mut g = GopCache::new(1 << 20, Duration::from_secs(10));
        assert_eq!(g.keyframe(), None);
        assert_eq!(g.keyframe_ts(), None);
        g.start(&pkt(10, 900, 4), now);
        assert_eq!(g.keyframe(), None, "no marker yet");
        g.insert(&marked(12, 900), now);
        assert_eq!(g.keyframe(), None, "a gap in the frame");
        g.insert(&pkt(11, 900, 4), now);
        g.insert(&pkt(13, 1800, 4), now);
        let frame = g.keyframe().unwrap_or_default();
        let firsts: Vec<u8> = frame.iter().map(|p| p[0]).collect();
        assert_eq!(firsts, [10, 11, 12], "stops at the marker");
        assert_eq!(g.keyframe_ts(), Some(900));
        // A frame whose marker was lost runs into the next timestamp: not a picture.
        g.start(&pkt(20, 2700, 4), now);
        g.insert(&pkt(21, 3600, 4), now);
        assert_eq!(g.keyframe(), None);
    }

    #[test]
    fn outgrowing_a_bound_drops_the_gop() {
        let now = Instant::now();
        let mut g = GopCache::new(1000, Duration::from_secs(2));
        g.start(&pkt(0, 0, 100), now);
        for e in 1..6 {
            g.insert(&pkt(e, 0, 100), now);
        }
        assert!(g.is_valid());
        g.insert(&pkt(6, 0, 100), now);
        assert!(!g.is_valid());
        assert_eq!(g.overflows, 1);
        g.start(&pkt(10, 0, 10), now);
        g.insert(&pkt(11, 0, 10), now + Duration::from_secs(3));
        assert!(!g.is_valid());
        assert_eq!(g.packets().count(), 0);
    }
}
