//! Loss repair towards the FTL client: which packets are missing, when to ask for them again,
//! when to give up.
//!
//! A gap is asked for only after the reorder delay (packets overtaken by others arrive within
//! it), then at most `max_retries` times, `retry_interval` apart, until `give_up_after`. At most
//! `max_missing` numbers are tracked: a larger gap is an outage and is counted lost at once, so a
//! burst of loss never turns into a NACK storm.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::config::NackConfig;

#[derive(Debug, Clone, Copy)]
struct Missing {
    since: Instant,
    next_due: Instant,
    sent: u32,
}

/// What [`LossTracker::on_arrival`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The number was not missing.
    Expected,
    /// It was missing and had been NACKed: a retransmission recovered it.
    Recovered,
    /// It was missing but not yet NACKed: plain reordering.
    Reordered,
}

/// Missing packets of one track.
#[derive(Debug, Clone, Default)]
pub struct LossTracker {
    missing: BTreeMap<u64, Missing>,
}

impl LossTracker {
    /// Records `count` missing numbers starting at `first`. Returns how many were counted lost
    /// at once because the tracker is full.
    pub fn on_gap(&mut self, first: u64, count: u64, now: Instant, cfg: &NackConfig) -> u64 {
        let room = cfg.max_missing.saturating_sub(self.missing.len()) as u64;
        let tracked = count.min(room);
        let due = now + cfg.reorder_delay;
        // Keep the newest numbers of an oversized gap: they are the ones still worth asking for.
        for ext in first + (count - tracked)..first + count {
            self.missing.insert(
                ext,
                Missing {
                    since: now,
                    next_due: due,
                    sent: 0,
                },
            );
        }
        count - tracked
    }

    /// A packet arrived; tells whether it filled a gap.
    pub fn on_arrival(&mut self, ext: u64) -> Arrival {
        match self.missing.remove(&ext) {
            None => Arrival::Expected,
            Some(m) if m.sent > 0 => Arrival::Recovered,
            Some(_) => Arrival::Reordered,
        }
    }

    /// Collects the numbers due for a NACK at `now` into `due` (in order) and drops those given
    /// up on. Returns `(nacked, given_up)` counts.
    pub fn poll(&mut self, now: Instant, cfg: &NackConfig, due: &mut Vec<u64>) -> (u64, u64) {
        let mut given_up = 0;
        let mut nacked = 0;
        self.missing.retain(|ext, m| {
            if now.saturating_duration_since(m.since) >= cfg.give_up_after
                || (m.sent >= cfg.max_retries && m.next_due <= now)
            {
                given_up += 1;
                return false;
            }
            if m.next_due <= now {
                due.push(*ext);
                m.sent += 1;
                m.next_due = now + cfg.retry_interval;
                nacked += 1;
            }
            true
        });
        (nacked, given_up)
    }

    /// When [`LossTracker::poll`] has something to do next.
    pub fn next_due(&self, cfg: &NackConfig) -> Option<Instant> {
        self.missing
            .values()
            .map(|m| {
                if m.sent >= cfg.max_retries {
                    m.next_due.min(m.since + cfg.give_up_after)
                } else {
                    m.next_due
                }
            })
            .min()
    }

    /// Forgets everything (numbering restarted, stream ended).
    pub fn clear(&mut self) -> u64 {
        let n = self.missing.len() as u64;
        self.missing.clear();
        n
    }

    /// Numbers currently missing.
    pub fn len(&self) -> usize {
        self.missing.len()
    }

    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn schedule_retries_and_give_up() {
        let cfg = NackConfig::default();
        let t0 = Instant::now();
        let mut l = LossTracker::default();
        assert_eq!(l.on_gap(100, 2, t0, &cfg), 0);
        assert_eq!(l.next_due(&cfg), Some(ms(t0, 10)));
        let mut due = Vec::new();
        assert_eq!(l.poll(ms(t0, 9), &cfg, &mut due), (0, 0));
        assert!(due.is_empty());
        assert_eq!(l.poll(ms(t0, 10), &cfg, &mut due), (2, 0));
        assert_eq!(due, [100, 101]);
        assert_eq!(l.on_arrival(100), Arrival::Recovered);
        assert_eq!(l.on_arrival(100), Arrival::Expected);
        let mut sends = 1;
        let mut now = 10;
        while !l.is_empty() {
            now = l.next_due(&cfg).unwrap().duration_since(t0).as_millis() as u64;
            let mut due = Vec::new();
            let (n, _) = l.poll(ms(t0, now), &cfg, &mut due);
            sends += n;
        }
        assert_eq!(sends, 4, "max_retries NACKs in all");
        assert_eq!(now, 210, "given up one retry interval after the last NACK");
    }

    #[test]
    fn reordering_inside_the_delay_is_not_nacked() {
        let cfg = NackConfig::default();
        let t0 = Instant::now();
        let mut l = LossTracker::default();
        l.on_gap(5, 1, t0, &cfg);
        assert_eq!(l.on_arrival(5), Arrival::Reordered);
        let mut due = Vec::new();
        assert_eq!(l.poll(ms(t0, 100), &cfg, &mut due), (0, 0));
    }

    #[test]
    fn huge_gaps_are_bounded() {
        let cfg = NackConfig::default();
        let t0 = Instant::now();
        let mut l = LossTracker::default();
        assert_eq!(l.on_gap(0, 3000, t0, &cfg), 3000 - 512);
        assert_eq!(l.len(), 512);
        assert_eq!(l.on_arrival(2999), Arrival::Reordered);
        assert_eq!(l.on_gap(5000, 10, t0, &cfg), 9);
    }

    #[test]
    fn gives_up_after_the_deadline_even_with_retries_left() {
        let cfg = NackConfig {
            retry_interval: Duration::from_secs(1),
            ..NackConfig::default()
        };
        let t0 = Instant::now();
        let mut l = LossTracker::default();
        l.on_gap(1, 1, t0, &cfg);
        let mut due = Vec::new();
        l.poll(ms(t0, 10), &cfg, &mut due);
        assert_eq!(l.poll(ms(t0, 500), &cfg, &mut due), (0, 1));
        assert!(l.is_empty());
    }
}
