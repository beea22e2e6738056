//! Fair shares of the peer table: WebRTC sessions that have not connected yet cost memory (an
//! `Rtc`, ~40 KB) and a place in `--max-viewers` until they connect or time out, and watching
//! needs no key, so one address could otherwise fill the table with offers that never connect.
//!
//! - **Per address** (IPv4, or an IPv6 /64; see `addr_group`): at most
//!   `--max-pending-per-address` sessions not yet connected (WHEP and WHIP offers, WebSocket
//!   viewers), and offers at `--offer-rate` a second with a burst of twice that (a token
//!   bucket). Past either: `429` with `Retry-After`.
//! - **When the table is full**, the oldest session that has not connected gives way to the
//!   newcomer; a connected viewer or publisher never does (the peer table does this, see
//!   `Server::viewer_admission`).
//!
//! Edge pulls (cluster token) are not counted: nodes of the cluster are not strangers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most addresses whose offer rate is remembered: past it, those full again (idle) go first,
/// then all (an attacker spread over that many addresses is not slowed per address anyway).
const MAX_BUCKETS: usize = 16_384;

/// Why an offer is refused before any WebRTC state is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum Refusal {
    /// Offers from this address came faster than `--offer-rate`: retry after this long.
    Rate(Duration),
    /// This address has `--max-pending-per-address` sessions that have not connected.
    Pending,
}

impl Refusal {
    /// Its `Retry-After`, in whole seconds (at least 1).
    pub(in crate::server) fn retry_after(self) -> u64 {
        match self {
            Refusal::Rate(d) => d.as_secs_f64().ceil().max(1.0) as u64,
            Refusal::Pending => 1,
        }
    }

    /// What the refused client is told.
    pub(in crate::server) fn reason(self) -> &'static str {
        match self {
            Refusal::Rate(_) => "too many offers from your address, retry later",
            Refusal::Pending => {
                "too many sessions from your address are still connecting, retry later"
            }
        }
    }
}

/// The per-address counts.
#[derive(Debug)]
pub(in crate::server) struct Admission {
    max_pending: u32,
    rate: f64,
    burst: f64,
    /// Sessions not yet connected, by address group.
    unconnected: HashMap<IpAddr, u32>,
    /// Offer tokens left and when they were counted, by address group.
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl Admission {
    /// `max_pending` unconnected sessions and `rate` offers a second per address group
    /// (`rate` 0: no rate limit).
    pub(in crate::server) fn new(max_pending: u32, rate: f64) -> Admission {
        Admission {
            max_pending,
            rate,
            burst: (rate * 2.0).max(1.0),
            unconnected: HashMap::new(),
            buckets: HashMap::new(),
        }
    }

    /// An offer from `group`: takes one of its tokens, or says why not.
    pub(in crate::server) fn offer(&mut self, group: IpAddr, now: Instant) -> Result<(), Refusal> {
        if self.unconnected.get(&group).copied().unwrap_or(0) >= self.max_pending {
            return Err(Refusal::Pending);
        }
        if self.rate <= 0.0 {
            return Ok(());
        }
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(&group) {
            let (rate, burst) = (self.rate, self.burst);
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= MAX_BUCKETS {
                self.buckets.clear();
            }
        }
        let (tokens, at) = self.buckets.entry(group).or_insert((self.burst, now));
        let refilled = *tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate;
        *tokens = refilled.min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Refusal::Rate(Duration::from_secs_f64(
                (1.0 - *tokens) / self.rate,
            )))
        }
    }

    /// A session of `group` exists and has not connected.
    pub(in crate::server) fn opened(&mut self, group: IpAddr) {
        *self.unconnected.entry(group).or_insert(0) += 1;
    }

    /// A session `opened` for `group` connected or went away.
    pub(in crate::server) fn settled(&mut self, group: IpAddr) {
        if let Some(n) = self.unconnected.get_mut(&group) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.unconnected.remove(&group);
            }
        }
    }

    /// Unconnected sessions of `group`.
    #[cfg(test)]
    fn unconnected(&self, group: IpAddr) -> u32 {
        self.unconnected.get(&group).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn offers_are_rate_limited_per_address_with_a_burst() {
        let t0 = Instant::now();
        let mut a = Admission::new(100, 10.0);
        let (x, y) = (ip("127.0.0.2"), ip("127.0.0.1"));
        for _ in 0..20 {
            assert_eq!(a.offer(x, t0), Ok(()));
        }
        let Err(Refusal::Rate(wait)) = a.offer(x, t0) else {
            panic!("the 21st offer of the burst passed");
        };
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert_eq!(Refusal::Rate(wait).retry_after(), 1);
        // Another address is not affected; the first refills at its rate.
        assert_eq!(a.offer(y, t0), Ok(()));
        assert_eq!(a.offer(x, t0 + Duration::from_millis(100)), Ok(()));
        assert!(a.offer(x, t0 + Duration::from_millis(100)).is_err());
        // No rate limit at 0.
        let mut free = Admission::new(100, 0.0);
        for _ in 0..1000 {
            assert_eq!(free.offer(x, t0), Ok(()));
        }
    }

    #[test]
    fn unconnected_sessions_are_capped_per_address() {
        let t0 = Instant::now();
        let mut a = Admission::new(2, 0.0);
        let x = ip("2001:db8::1");
        a.opened(x);
        a.opened(x);
        assert_eq!(a.offer(x, t0), Err(Refusal::Pending));
        assert_eq!(a.offer(ip("2001:db8:0:1::1"), t0), Ok(()));
        a.settled(x);
        assert_eq!(a.unconnected(x), 1);
        assert_eq!(a.offer(x, t0), Ok(()));
        a.settled(x);
        a.settled(x);
        assert_eq!(a.unconnected(x), 0);
        assert!(
            a.unconnected.is_empty(),
            "the map forgets settled addresses"
        );
    }

    #[test]
    fn the_rate_table_stays_bounded() {
        let t0 = Instant::now();
        let mut a = Admission::new(100, 1.0);
        for i in 0..(MAX_BUCKETS as u32 + 10) {
            let _ = a.offer(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(a.buckets.len() <= MAX_BUCKETS);
    }
}
