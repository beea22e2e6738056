//! Capture time of media: mapping each track's RTP timestamps to the relay's clock.
//!
//! The FTL client sends a sender report per SSRC about once a second, pairing an RTP timestamp
//! with its NTP wall clock. The first report of a stream anchors NTP time to the relay's
//! `Instant` (one offset for the whole stream), so both tracks map through the same clock and
//! stay in sync downstream. Before any report a track anchors on its first packet's arrival.

use std::time::{Duration, Instant};

/// The stream-wide anchor from NTP time to the relay's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct NtpAnchor(Option<(u64, Instant)>);

impl NtpAnchor {
    /// The relay instant of an NTP timestamp, anchoring on the first one seen.
    pub fn instant(&mut self, ntp: u64, now: Instant) -> Instant {
        let (ntp0, t0) = *self.0.get_or_insert((ntp, now));
        let diff = ntp.wrapping_sub(ntp0) as i64;
        shift(t0, diff.signum(), ntp_to_duration(diff.unsigned_abs()))
    }
}

/// One track's RTP-to-relay-clock mapping.
#[derive(Debug, Clone, Copy)]
pub struct TrackClock {
    rate: u32,
    anchor: Option<(u32, Instant)>,
}

impl TrackClock {
    /// A clock for a track at `rate` Hz (90 000 video, 48 000 Opus).
    pub fn new(rate: u32) -> Self {
        TrackClock { rate, anchor: None }
    }

    /// A sender report: `rtp_ts` was captured at `at`.
    pub fn on_report(&mut self, rtp_ts: u32, at: Instant) {
        self.anchor = Some((rtp_ts, at));
    }

    /// A packet arrived: anchors the clock if nothing else did.
    pub fn on_packet(&mut self, rtp_ts: u32, now: Instant) {
        self.anchor.get_or_insert((rtp_ts, now));
    }

    /// The capture instant of `rtp_ts` (`now` if the clock has no anchor yet).
    pub fn wallclock(&self, rtp_ts: u32, now: Instant) -> Instant {
        let Some((ts0, t0)) = self.anchor else {
            return now;
        };
        let ticks = i64::from(rtp_ts.wrapping_sub(ts0) as i32);
        let nanos = ticks.unsigned_abs() * 1_000_000_000 / u64::from(self.rate.max(1));
        shift(t0, ticks.signum(), Duration::from_nanos(nanos))
    }

    /// Ticks of this clock in `d`.
    pub fn ticks(&self, d: Duration) -> u32 {
        (d.as_micros() * u128::from(self.rate) / 1_000_000) as u32
    }
}

fn ntp_to_duration(ntp: u64) -> Duration {
    Duration::from_nanos(((u128::from(ntp) * 1_000_000_000) >> 32) as u64)
}

fn shift(t: Instant, sign: i64, d: Duration) -> Instant {
    if sign < 0 {
        t.checked_sub(d).unwrap_or(t)
    } else {
        t.checked_add(d).unwrap_or(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_through_reports() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let mut anchor = NtpAnchor::default();
        let mut video = TrackClock::new(90_000);
        let mut audio = TrackClock::new(48_000);
        // Video report at NTP 1000.0 s for ts 9000; audio report half a second later in NTP.
        video.on_report(9000, anchor.instant(1000 << 32, t0));
        audio.on_report(
            0,
            anchor.instant((1000 << 32) + (1 << 31), t0 + Duration::from_secs(7)),
        );
        assert_eq!(
            video.wallclock(9000 + 90_000, t0),
            t0 + Duration::from_secs(1)
        );
        assert_eq!(video.wallclock(0, t0), t0 - Duration::from_millis(100));
        // Audio maps through the same anchor, not its own arrival time.
        assert_eq!(audio.wallclock(24_000, t0), t0 + Duration::from_secs(1));
    }

    #[test]
    fn falls_back_to_arrival_and_wraps() {
        let t0 = Instant::now();
        let mut c = TrackClock::new(90_000);
        assert_eq!(c.wallclock(5, t0), t0);
        c.on_packet(u32::MAX - 89_999, t0);
        c.on_packet(0, t0 + Duration::from_secs(9));
        assert_eq!(c.wallclock(90_000, t0), t0 + Duration::from_secs(2));
        assert_eq!(c.ticks(Duration::from_millis(20)), 1800);
    }
}
