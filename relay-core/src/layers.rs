//! Simulcast: which of a stream's video layers a viewer gets.
//!
//! A publisher that sends simulcast (a browser's `sendEncodings`, OBS's WHIP layers) sends the
//! same picture at up to [`MAX_LAYERS`] sizes, each an RTP stream of its own. The relay keeps
//! each as a layer with its own sequence space and GOP cache (see `stream`), and each viewer
//! is on one of them: [`LayerChooser`] moves it down when its link shows it cannot carry the
//! layer and up again when it can, and the fan-out switches it only at a keyframe of the
//! target layer, keeping its numbering and timing continuous (see `viewer`).
//!
//! The chooser reads what a viewer's receiver reports (loss before repair: a link that cannot
//! carry a layer drops a share of it at its bottleneck) and, where the caller has one, a
//! bandwidth estimate. Without an estimate, the only way to learn that a link has room again
//! is to try the layer above: it tries after a calm spell, and a try that fails at once
//! (loss again within [`LayerChooser::TRY_FAILS_WITHIN`]) doubles the wait before the next,
//! so a viewer on a link that stays narrow is disturbed less and less often.

use std::time::{Duration, Instant};

/// The most video layers a stream keeps (a publisher's further layers are dropped).
pub const MAX_LAYERS: usize = 3;

/// A video layer as its source names it: 0 for a stream without simulcast, and a WebRTC
/// publisher's RIDs numbered in the order its offer lists them. Which layer is better is
/// decided by the picture size the layer carries (see `Stream::ranked_layers`), not by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LayerId(pub u8);

impl std::fmt::Display for LayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which layer a viewer wants: the best its link carries, or one it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quality {
    #[default]
    Auto,
    /// This layer, whatever the link (where the stream has it).
    Fixed(LayerId),
}

/// What a viewer's link showed over its last reporting interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkReport {
    /// The loss its receiver reported, 0 to 1 (before repair, as browsers count it).
    pub loss: Option<f32>,
    /// A bandwidth estimate of the path to it, bits per second, where one is known.
    pub estimate_bps: Option<u64>,
}

/// What the chooser decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Stay,
    /// One layer down.
    Down,
    /// One layer up.
    Up,
}

/// One viewer's layer decisions (see the module documentation).
#[derive(Debug, Clone)]
pub struct LayerChooser {
    /// No move before this: the last move's effect has not shown in reports yet.
    settle_until: Option<Instant>,
    /// No try upwards (without an estimate) before this.
    try_after: Option<Instant>,
    /// The wait after a failed try, doubled by each failure.
    try_wait: Duration,
    /// When the last move up was, for telling a failed try.
    up_at: Option<Instant>,
    /// Consecutive reports whose estimate would carry the layer above.
    room: u8,
}

impl Default for LayerChooser {
    fn default() -> Self {
        LayerChooser {
            settle_until: None,
            try_after: None,
            try_wait: Self::FIRST_TRY_AFTER,
            up_at: None,
            room: 0,
        }
    }
}

impl LayerChooser {
    /// Reported loss at or over this moves a viewer down: more than repair can make up for
    /// without its picture breaking, and what a bottleneck below the layer's rate shows.
    pub const DOWN_AT_LOSS: f32 = 0.10;
    /// A try upwards needs reports this clean.
    pub const CALM_LOSS: f32 = 0.02;
    /// After a move, reports still show the time before it for about an interval.
    pub const SETTLE: Duration = Duration::from_millis(2500);
    /// The calm before the first try upwards after a move down.
    pub const FIRST_TRY_AFTER: Duration = Duration::from_secs(10);
    /// The longest wait between tries.
    pub const MAX_TRY_AFTER: Duration = Duration::from_secs(80);
    /// A move down this soon after a move up means the try failed.
    pub const TRY_FAILS_WITHIN: Duration = Duration::from_secs(6);
    /// An estimate carries a layer when it is this much over the layer's rate (headroom for
    /// the keyframes' bursts and the repair).
    pub const ESTIMATE_HEADROOM: f32 = 1.25;

    pub fn new() -> LayerChooser {
        LayerChooser::default()
    }

    /// Takes one report. `rate` is the bits per second of the layer the viewer is on, `above`
    /// that of the next layer up (`None` at the top), `below` whether there is one down.
    pub fn report(
        &mut self,
        r: LinkReport,
        rate: u64,
        above: Option<u64>,
        below: bool,
        now: Instant,
    ) -> Move {
        if self.settle_until.is_some_and(|t| now < t) {
            return Move::Stay;
        }
        let loss = r.loss.filter(|l| l.is_finite()).unwrap_or(0.0);
        let short = r
            .estimate_bps
            .is_some_and(|e| (e as f32) < rate as f32 * 0.9);
        if below && (loss >= Self::DOWN_AT_LOSS || short) {
            let failed_try = self
                .up_at
                .is_some_and(|t| now.saturating_duration_since(t) < Self::TRY_FAILS_WITHIN);
            self.try_wait = if failed_try {
                (self.try_wait * 2).min(Self::MAX_TRY_AFTER)
            } else {
                Self::FIRST_TRY_AFTER
            };
            self.try_after = Some(now + self.try_wait);
            self.settle_until = Some(now + Self::SETTLE);
            self.up_at = None;
            self.room = 0;
            return Move::Down;
        }
        let Some(above) = above else {
            self.room = 0;
            return Move::Stay;
        };
        let up = match r.estimate_bps {
            // An estimate tells room without trying: two reports in a row.
            Some(e) => {
                let fits = e as f32 >= above as f32 * Self::ESTIMATE_HEADROOM;
                self.room = if fits { self.room.saturating_add(1) } else { 0 };
                self.room >= 2
            }
            None => loss < Self::CALM_LOSS && self.try_after.is_none_or(|t| now >= t),
        };
        if !up {
            if loss >= Self::CALM_LOSS {
                // The calm has to be unbroken.
                self.try_after = Some(now + self.try_wait);
            }
            return Move::Stay;
        }
        self.room = 0;
        self.up_at = Some(now);
        self.settle_until = Some(now + Self::SETTLE);
        Move::Up
    }

    /// The viewer's switch took effect (at the target's keyframe, a while after the decision):
    /// the reports that follow still cover time on the old layer and its repair.
    pub fn switched(&mut self, now: Instant) {
        let until = now + Self::SETTLE;
        self.settle_until = Some(self.settle_until.map_or(until, |t| t.max(until)));
    }

    /// The viewer moved for another reason (its layer stopped, it chose one): reports from
    /// before do not describe where it is now.
    pub fn moved(&mut self, now: Instant) {
        self.settle_until = Some(now + Self::SETTLE);
        self.room = 0;
        self.up_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(l: f32) -> LinkReport {
        LinkReport {
            loss: Some(l),
            estimate_bps: None,
        }
    }

    const RATE: u64 = 600_000;
    const ABOVE: Option<u64> = Some(1_500_000);

    #[test]
    fn heavy_loss_moves_down_and_a_fresh_move_settles_first() {
        let t = Instant::now();
        let mut c = LayerChooser::new();
        assert_eq!(c.report(loss(0.3), RATE, ABOVE, true, t), Move::Down);
        // The next report still shows the old layer's loss.
        let t1 = t + Duration::from_secs(1);
        assert_eq!(c.report(loss(0.3), RATE, ABOVE, true, t1), Move::Stay);
        let t3 = t + Duration::from_secs(3);
        assert_eq!(c.report(loss(0.3), RATE, ABOVE, true, t3), Move::Down);
    }

    #[test]
    fn nothing_below_the_lowest_and_nothing_above_the_top() {
        let t = Instant::now();
        let mut c = LayerChooser::new();
        assert_eq!(c.report(loss(0.5), RATE, ABOVE, false, t), Move::Stay);
        let mut c = LayerChooser::new();
        assert_eq!(c.report(loss(0.0), RATE, None, true, t), Move::Stay);
    }

    #[test]
    fn tries_upwards_after_calm_and_backs_off_when_the_try_fails() {
        let t = Instant::now();
        let mut c = LayerChooser::new();
        assert_eq!(c.report(loss(0.4), RATE, ABOVE, true, t), Move::Down);
        let s = |n: u64| t + Duration::from_secs(n);
        for n in 3..10 {
            assert_eq!(c.report(loss(0.0), RATE, ABOVE, true, s(n)), Move::Stay);
        }
        assert_eq!(c.report(loss(0.0), RATE, ABOVE, true, s(10)), Move::Up);
        // The layer above does not fit: down again, and the next try waits twice as long.
        assert_eq!(c.report(loss(0.3), RATE, ABOVE, true, s(13)), Move::Down);
        for n in 14..33 {
            assert_eq!(
                c.report(loss(0.0), RATE, ABOVE, true, s(n)),
                Move::Stay,
                "{n}"
            );
        }
        assert_eq!(c.report(loss(0.0), RATE, ABOVE, true, s(33)), Move::Up);
    }

    #[test]
    fn loss_during_the_calm_starts_it_again() {
        let t = Instant::now();
        let s = |n: u64| t + Duration::from_secs(n);
        let mut c = LayerChooser::new();
        assert_eq!(c.report(loss(0.4), RATE, ABOVE, true, t), Move::Down);
        assert_eq!(c.report(loss(0.05), RATE, ABOVE, true, s(8)), Move::Stay);
        assert_eq!(c.report(loss(0.0), RATE, ABOVE, true, s(12)), Move::Stay);
        assert_eq!(c.report(loss(0.0), RATE, ABOVE, true, s(18)), Move::Up);
    }

    #[test]
    fn a_held_layer_resets_the_wait() {
        let t = Instant::now();
        let s = |n: u64| t + Duration::from_secs(n);
        let mut c = LayerChooser::new();
        c.report(loss(0.4), RATE, ABOVE, true, t);
        assert_eq!(c.report(loss(0.0), RATE, ABOVE, true, s(10)), Move::Up);
        // Loss long after the move up is the link changing, not a failed try.
        assert_eq!(c.report(loss(0.4), RATE, ABOVE, true, s(30)), Move::Down);
        assert_eq!(c.report(loss(0.0), RATE, ABOVE, true, s(40)), Move::Up);
    }

    #[test]
    fn an_estimate_moves_without_trying() {
        let t = Instant::now();
        let s = |n: u64| t + Duration::from_secs(n);
        let est = |e: u64| LinkReport {
            loss: Some(0.0),
            estimate_bps: Some(e),
        };
        let mut c = LayerChooser::new();
        // Under the layer's own rate: down, without any loss.
        assert_eq!(c.report(est(400_000), RATE, ABOVE, true, t), Move::Down);
        // Short of the layer above: stays, however calm.
        for n in 3..30 {
            assert_eq!(
                c.report(est(1_200_000), RATE, ABOVE, true, s(n)),
                Move::Stay
            );
        }
        // Room for it, twice in a row: up, long before a try would be due.
        assert_eq!(
            c.report(est(2_000_000), RATE, ABOVE, true, s(30)),
            Move::Stay
        );
        assert_eq!(c.report(est(2_000_000), RATE, ABOVE, true, s(31)), Move::Up);
    }

    #[test]
    fn a_switch_that_lands_later_settles_from_when_it_landed() {
        let t = Instant::now();
        let s = |ms: u64| t + Duration::from_millis(ms);
        let mut c = LayerChooser::new();
        assert_eq!(c.report(loss(0.3), RATE, ABOVE, true, t), Move::Down);
        // The target's keyframe came 800 ms later; 2.6 s after the decision the report still
        // covers the old layer.
        c.switched(s(800));
        assert_eq!(c.report(loss(0.4), RATE, ABOVE, true, s(2600)), Move::Stay);
        assert_eq!(c.report(loss(0.4), RATE, ABOVE, true, s(3400)), Move::Down);
    }

    #[test]
    fn reports_that_make_no_sense_are_read_as_no_loss() {
        let t = Instant::now();
        let mut c = LayerChooser::new();
        assert_eq!(c.report(loss(f32::NAN), RATE, ABOVE, true, t), Move::Up);
    }
}
