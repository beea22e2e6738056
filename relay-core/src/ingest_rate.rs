//! How much a WebRTC publisher may send: the receive-side estimate the server tells a
//! publisher that does its congestion control on REMB (RFC draft-alvestrand-rmcat-remb).
//!
//! A browser or library that negotiates transport-wide congestion control (TWCC) estimates its
//! own bandwidth from the per-packet arrival times the server reports (str0m writes that
//! feedback); it needs nothing from here but the cap. A publisher that negotiated only
//! `goog-remb` sends what the receiver's REMB allows, and without one it stays at its start
//! rate (a browser: ~300 kbit/s, a postage stamp). This is the loss-based half of Google
//! Congestion Control (draft-ietf-rmcat-gcc-02, section 6) run at the receiver on what the
//! receiver reports see:
//!
//! - loss under 2 %: the estimate grows by [`GROWTH`] a sample, but never past 1.5 times what
//!   actually arrived (an encoder that sends less than allowed does not earn more);
//! - loss over 10 %: it falls to `(1 - loss / 2)` of itself;
//! - in between: it holds.
//!
//! The operator's cap (`--whip-max-bitrate`) bounds it always. Time comes in with each sample;
//! nothing here reads a clock.

use std::time::{Duration, Instant};

/// Growth a sample while the path is clean (samples come every ~500 ms: ~30 % a second, so a
/// publisher goes from 300 kbit/s to 2.5 Mbit/s in ~8 s once it follows).
pub const GROWTH: f64 = 1.15;
/// Where the estimate starts: a little above a browser's start rate, so the first REMB
/// already lets it go up.
pub const START_BPS: u64 = 500_000;
/// The estimate never falls below this (audio and a small picture still pass).
pub const FLOOR_BPS: u64 = 100_000;
/// Samples closer together than this are merged into the next (a rate over a few
/// milliseconds says nothing).
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// One publisher's estimate.
#[derive(Debug, Clone)]
pub struct IngestRate {
    cap_bps: Option<u64>,
    estimate_bps: f64,
    /// The previous sample: when, and the bytes received up to then.
    last: Option<(Instant, u64)>,
}

impl IngestRate {
    /// A new estimate, bounded by `cap_bps` when the operator set one.
    pub fn new(cap_bps: Option<u64>) -> IngestRate {
        let start = cap_bps.map_or(START_BPS, |c| c.min(START_BPS)) as f64;
        IngestRate {
            cap_bps,
            estimate_bps: start,
            last: None,
        }
    }

    /// The current estimate in bit/s (what a REMB would say now).
    pub fn estimate_bps(&self) -> u64 {
        self.estimate_bps as u64
    }

    /// A receiver statistics sample: `bytes` received on the video stream so far (with
    /// retransmissions), and the fraction lost that the latest receiver report carried.
    /// Returns the bitrate to announce in a REMB, once there is a rate to base it on.
    pub fn on_sample(&mut self, bytes: u64, loss: Option<f32>, now: Instant) -> Option<u64> {
        let Some((then, before)) = self.last else {
            self.last = Some((now, bytes));
            return Some(self.estimate_bps());
        };
        let elapsed = now.saturating_duration_since(then);
        if elapsed < MIN_INTERVAL {
            return None;
        }
        self.last = Some((now, bytes));
        let arrived_bps = bytes.saturating_sub(before) as f64 * 8.0 / elapsed.as_secs_f64();
        let loss = f64::from(loss.unwrap_or(0.0)).clamp(0.0, 1.0);
        let mut next = self.estimate_bps;
        if loss > 0.10 {
            next *= 1.0 - loss / 2.0;
        } else if loss < 0.02 {
            next = (next * GROWTH).min((arrived_bps * 1.5).max(next));
        }
        let mut next = next.max(FLOOR_BPS as f64);
        if let Some(cap) = self.cap_bps {
            next = next.min(cap as f64);
        }
        self.estimate_bps = next;
        Some(self.estimate_bps())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A publisher that sends what it is allowed, on a clean path, sampled every 500 ms.
    fn follow(rate: &mut IngestRate, t0: Instant, secs: u64, loss: f32) -> Vec<u64> {
        // Bytes so far, as str0m counts them (from the previous sample on).
        let mut bytes = rate.last.map_or(0, |(_, b)| b);
        let mut allowed = rate.estimate_bps();
        let mut seen = Vec::new();
        for i in 0..secs * 2 {
            bytes += allowed / 8 / 2;
            if let Some(b) = rate.on_sample(bytes, Some(loss), t0 + Duration::from_millis(500 * i))
            {
                allowed = b;
                seen.push(b);
            }
        }
        seen
    }

    #[test]
    fn a_clean_path_lets_a_following_publisher_grow_to_the_cap() {
        let t0 = Instant::now();
        let mut r = IngestRate::new(Some(2_500_000));
        let seen = follow(&mut r, t0, 12, 0.0);
        assert_eq!(seen[0], START_BPS);
        assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
        assert_eq!(r.estimate_bps(), 2_500_000, "{seen:?}");
        let at_8s = seen[16];
        assert!(at_8s >= 2_000_000, "{seen:?}");
    }

    #[test]
    fn heavy_loss_brings_it_down_and_moderate_loss_holds_it() {
        let t0 = Instant::now();
        let mut r = IngestRate::new(None);
        follow(&mut r, t0, 4, 0.0);
        let before = r.estimate_bps();
        let t1 = t0 + Duration::from_secs(10);
        follow(&mut r, t1, 1, 0.05);
        assert_eq!(r.estimate_bps(), before, "5 % loss holds");
        follow(&mut r, t1 + Duration::from_secs(5), 3, 0.3);
        assert!(r.estimate_bps() < before / 2, "30 % loss for 3 s");
        follow(&mut r, t1 + Duration::from_secs(20), 30, 0.9);
        assert_eq!(r.estimate_bps(), FLOOR_BPS);
    }

    #[test]
    fn an_encoder_that_sends_less_does_not_earn_more() {
        let t0 = Instant::now();
        let mut r = IngestRate::new(None);
        // 400 kbit/s steadily, whatever is allowed.
        for i in 0..40u64 {
            r.on_sample(i * 25_000, Some(0.0), t0 + Duration::from_millis(500 * i));
        }
        assert!(r.estimate_bps() <= 600_000, "{}", r.estimate_bps());
        // No cap below what is sent, and samples too close together are no rate.
        assert_eq!(
            r.on_sample(1_000_000, None, t0 + Duration::from_millis(19_550)),
            None
        );
    }

    #[test]
    fn a_low_cap_bounds_the_start_and_every_step() {
        let t0 = Instant::now();
        let mut r = IngestRate::new(Some(300_000));
        let seen = follow(&mut r, t0, 10, 0.0);
        assert!(seen.iter().all(|&b| b <= 300_000), "{seen:?}");
    }
}
