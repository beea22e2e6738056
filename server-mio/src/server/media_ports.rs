//! Which UDP port an FTL session's media goes to.
//!
//! A port is handed out round-robin over `--media-ports`, and a port freed less than
//! [`QUIET`] ago is passed over while another is free: a session that ended (revoked, replaced,
//! reconnecting after a network blip) may still have an encoder sending to its old port, and
//! those datagrams must find no stream rather than the next session's. Only when every free
//! port is still quiet is the one freed longest ago taken; then the ended session's source
//! address and port are refused by the new stream (`Relay::refuse_source`), so the stray
//! sender cannot become the new stream's source even if it speaks first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a freed port rests before it is handed out again (while others are free). OBS
/// stops sending within a second of a `410`; a client that never hears it stops when its
/// own pings go unanswered (ftl-sdk: 5 s).
pub(super) const QUIET: Duration = Duration::from_secs(30);

/// The media port range and what became of each port.
#[derive(Debug)]
pub(super) struct MediaPorts {
    lo: u16,
    hi: u16,
    /// The port handed out last; the next search starts after it.
    cursor: u16,
    /// When ports were last freed, and where the ended session's media came from.
    freed: HashMap<u16, (Instant, Option<SocketAddr>)>,
}

impl MediaPorts {
    /// The range `lo..=hi` (`lo` 0: the system picks, and this hands out nothing).
    pub(super) fn new(lo: u16, hi: u16) -> MediaPorts {
        MediaPorts {
            lo,
            hi,
            cursor: hi,
            freed: HashMap::new(),
        }
    }

    /// Whether ports come from the system instead (`--media-ports 0`).
    pub(super) fn any(&self) -> bool {
        self.lo == 0
    }

    /// The ports to try, best first: round-robin from the last one handed out, those that
    /// rested for [`QUIET`] before those freed more recently (oldest first). `in_use` are taken.
    pub(super) fn candidates(&self, in_use: &[u16], now: Instant) -> Vec<u16> {
        if self.any() || self.hi < self.lo {
            return Vec::new();
        }
        let span = u32::from(self.hi - self.lo) + 1;
        let start = u32::from(self.cursor.saturating_sub(self.lo)) + 1;
        let order = (0..span).filter_map(|i| {
            let p = self.lo + u16::try_from((start + i) % span).ok()?;
            (!in_use.contains(&p)).then_some(p)
        });
        let (mut rested, mut quiet): (Vec<u16>, Vec<u16>) = order.partition(|p| {
            self.freed
                .get(p)
                .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= QUIET)
        });
        quiet.sort_by_key(|p| self.freed.get(p).map(|(t, _)| *t));
        rested.extend(quiet);
        rested
    }

    /// `port` was handed out.
    pub(super) fn taken(&mut self, port: u16) {
        if (self.lo..=self.hi).contains(&port) {
            self.cursor = port;
        }
    }

    /// `port`'s session ended now; its media came from `source`.
    pub(super) fn freed(&mut self, port: u16, now: Instant, source: Option<SocketAddr>) {
        if self.any() {
            return;
        }
        self.freed.insert(port, (now, source));
        // Forget what rested long enough: the map stays as small as the recent churn.
        self.freed
            .retain(|_, (t, _)| now.saturating_duration_since(*t) < QUIET);
    }

    /// The source of the session that ended on `port` less than [`QUIET`] ago, if any.
    pub(super) fn stale_source(&self, port: u16, now: Instant) -> Option<SocketAddr> {
        let (t, source) = self.freed.get(&port)?;
        (now.saturating_duration_since(*t) < QUIET).then_some(*source)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_go_round_robin_and_a_freed_one_rests() {
        let t0 = Instant::now();
        let mut m = MediaPorts::new(9000, 9003);
        assert_eq!(m.candidates(&[], t0), vec![9000, 9001, 9002, 9003]);
        m.taken(9000);
        // The next session gets the next port, not the lowest free one.
        assert_eq!(m.candidates(&[9000], t0)[0], 9001);
        m.taken(9001);
        let old: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        m.freed(9000, t0, Some(old));
        m.freed(9001, t0, None);
        assert_eq!(m.stale_source(9000, t0), Some(old));
        assert_eq!(m.stale_source(9000, t0 + QUIET), None);
        assert_eq!(m.stale_source(9002, t0), None);
        // 9000 and 9001 rest: 9002 and 9003 first, then the quiet ones.
        assert_eq!(m.candidates(&[], t0), vec![9002, 9003, 9000, 9001]);
        m.taken(9002);
        m.taken(9003);
        // All in use but the quiet ones: the one freed longest ago.
        m.freed(9001, t0 + Duration::from_secs(1), None);
        assert_eq!(
            m.candidates(&[9002, 9003], t0 + Duration::from_secs(2)),
            vec![9000, 9001]
        );
        // After the quiet period they are plain candidates again, in round-robin order.
        let later = t0 + QUIET + Duration::from_secs(2);
        assert_eq!(m.candidates(&[9002], later), vec![9000, 9001, 9003]);
    }

    #[test]
    fn a_system_range_hands_out_nothing() {
        let m = MediaPorts::new(0, 0);
        assert!(m.any());
        assert!(m.candidates(&[], Instant::now()).is_empty());
        let one = MediaPorts::new(7000, 7000);
        assert_eq!(one.candidates(&[], Instant::now()), vec![7000]);
        assert!(one.candidates(&[7000], Instant::now()).is_empty());
    }
}
