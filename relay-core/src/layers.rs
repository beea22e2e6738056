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
//!
//! With an estimate (the caller probes the link for the layer above) it never tries a layer:
//! it moves down at the first loss when the estimate is short of its layer as well as on heavy
//! loss, and when the estimate has room for the layer above it first holds a trial: the caller
//! fills the viewer's link with padding up to that layer's rate for [`LayerChooser::TRIAL`]
//! while the viewer stays where it is, and only clean reports through it move the viewer up.
//! A probe is a few packets: a policer with a bucket of a few kilobytes lets it through at
//! any rate, so an estimate from probes alone can promise a rate the link cannot hold. Padding
//! lost in a trial costs no picture; a trial that shows loss ends at once and doubles the wait
//! before the next, as a failed try does.

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
    /// Fill the viewer's link with padding up to the rate of the layer above, as a trial of
    /// whether it carries that layer (with an estimate only; see the module documentation).
    Trial,
    /// The trial showed loss: stop the padding; the viewer stays.
    EndTrial,
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
    /// Consecutive reports whose estimate is far under the layer's rate.
    starved: u8,
    /// Since when a trial of the layer above has been padding the link.
    trial: Option<Instant>,
    /// No trial before this, and the wait after a failed one (doubled by each failure).
    trial_after: Option<Instant>,
    trial_wait: Duration,
}

impl Default for LayerChooser {
    fn default() -> Self {
        LayerChooser {
            settle_until: None,
            try_after: None,
            try_wait: Self::FIRST_TRY_AFTER,
            up_at: None,
            room: 0,
            starved: 0,
            trial: None,
            trial_after: None,
            trial_wait: Self::FIRST_TRIAL_AFTER,
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
    /// An estimate under this share of the layer's rate for three reports in a row moves a
    /// viewer down without loss (after a loss the estimate undershoots, but not this far for
    /// long).
    pub const STARVED_AT: f32 = 0.6;
    /// A trial pads the viewer's link to the layer above's rate and this share more (its audio,
    /// its keyframes). Not the whole headroom the estimate had to show: on a link that cannot
    /// carry the layer, every bit over its capacity is lost from the media too.
    pub const TRIAL_PADDING: f32 = 1.1;
    /// How long a trial pads the link before the viewer moves up: three clean seconds (a
    /// policer's loss shows in the first second only partly).
    pub const TRIAL: Duration = Duration::from_millis(2900);
    /// The wait after a failed trial before the next, at first; doubled by each failure up to
    /// [`LayerChooser::MAX_TRY_AFTER`].
    pub const FIRST_TRIAL_AFTER: Duration = Duration::from_secs(5);
    /// The wait after a move down before a trial of the layer left. A trial on a link that
    /// still cannot carry that layer costs its picture a freeze of a few hundred milliseconds
    /// (measured on a policed link: its bucket holds about a second of the rate, so the loss
    /// shows only once the trial has spent it, and the media loses its share before the trial
    /// ends), so trials there stay rare; probes (a few packets) go on meanwhile, and a clean
    /// trial resets the wait.
    pub const TRIAL_AFTER_DOWN: Duration = Duration::from_secs(30);

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
        if let Some(since) = self.trial {
            // The estimate may settle anywhere over the padding: the trial itself tests the
            // headroom, and an estimate under the padding is the link giving way.
            let holds = above.is_some_and(|a| {
                r.estimate_bps
                    .is_some_and(|e| e as f32 >= a as f32 * Self::TRIAL_PADDING)
            });
            if loss >= Self::CALM_LOSS || !holds {
                self.trial_failed(now);
                return Move::EndTrial;
            }
            if now.saturating_duration_since(since) < Self::TRIAL {
                return Move::Stay;
            }
            self.trial = None;
            self.trial_wait = Self::FIRST_TRIAL_AFTER;
            self.room = 0;
            self.up_at = Some(now);
            self.settle_until = Some(now + Self::SETTLE);
            return Move::Up;
        }
        // An estimate under the layer's rate moves down at the first loss, before repair falls
        // behind; without loss it is the estimator's caution (after a loss it undershoots, and
        // it grows no faster than what the viewer receives), not a link that drops the layer.
        // Far under it for three reports in a row, loss or not: a queue building up on the path
        // (the estimator sees the delay grow before anything is lost; the undershoot after a
        // loss does not stay that deep that long, it grows back by some 8 % a second).
        let short = loss >= Self::CALM_LOSS
            && r.estimate_bps
                .is_some_and(|e| (e as f32) < rate as f32 * 0.9);
        let starved = r
            .estimate_bps
            .is_some_and(|e| (e as f32) < rate as f32 * Self::STARVED_AT);
        self.starved = if starved {
            self.starved.saturating_add(1)
        } else {
            0
        };
        if below && (loss >= Self::DOWN_AT_LOSS || short || self.starved >= 3) {
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
            self.starved = 0;
            // The link just showed it cannot carry the layer left: a trial of it (which
            // overloads the link if it still cannot) waits, longer after each failed one.
            self.trial_wait = self.trial_wait.max(Self::TRIAL_AFTER_DOWN);
            self.trial_after = Some(now + self.trial_wait);
            return Move::Down;
        }
        let Some(above) = above else {
            self.room = 0;
            return Move::Stay;
        };
        let up = match r.estimate_bps {
            // An estimate tells room without trying a layer: two reports in a row, then a
            // trial with padding (unless the last one failed only a while ago).
            Some(e) => {
                let fits = e as f32 >= above as f32 * Self::ESTIMATE_HEADROOM;
                self.room = if fits { self.room.saturating_add(1) } else { 0 };
                if self.room >= 2
                    && loss < Self::CALM_LOSS
                    && self.trial_after.is_none_or(|t| now >= t)
                {
                    self.trial = Some(now);
                    return Move::Trial;
                }
                false
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
        self.trial = None;
    }

    /// Whether a trial is padding the link.
    pub fn in_trial(&self) -> bool {
        self.trial.is_some()
    }

    /// Whether a trial could start now if the estimate showed room: what the caller's probes
    /// are for, so it probes only then (no trial running, none failed or moved down lately,
    /// the last move settled).
    pub fn may_trial(&self, now: Instant) -> bool {
        self.trial.is_none()
            && self.trial_after.is_none_or(|t| now >= t)
            && self.settle_until.is_none_or(|t| now >= t)
    }

    /// Ends a running trial as failed, between reports: the caller saw the link give way
    /// sooner (its estimate fell under the padding) than the next report would say. Whether
    /// one was running.
    pub fn abort_trial(&mut self, now: Instant) -> bool {
        if self.trial.is_none() {
            return false;
        }
        self.trial_failed(now);
        true
    }

    fn trial_failed(&mut self, now: Instant) {
        self.trial = None;
        self.room = 0;
        self.trial_wait = (self.trial_wait * 2).min(Self::MAX_TRY_AFTER);
        self.trial_after = Some(now + self.trial_wait);
        // The next report still covers the padding's loss: not the layer's.
        self.settle_until = Some(now + Self::SETTLE);
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
        // Under the layer's own rate without loss: the estimator's caution, not a move.
        assert_eq!(c.report(est(400_000), RATE, ABOVE, true, t), Move::Stay);
        // Far under it, three reports in a row: down without loss (a queue building up).
        let mut q = LayerChooser::new();
        assert_eq!(q.report(est(300_000), RATE, ABOVE, true, t), Move::Stay);
        assert_eq!(q.report(est(300_000), RATE, ABOVE, true, s(1)), Move::Stay);
        assert_eq!(q.report(est(300_000), RATE, ABOVE, true, s(2)), Move::Down);
        // With the first loss (under the 10 % that moves a viewer without an estimate): down.
        let short = LinkReport {
            loss: Some(0.03),
            estimate_bps: Some(400_000),
        };
        assert_eq!(c.report(short, RATE, ABOVE, true, t), Move::Down);
        // Short of the layer above: stays, however calm.
        for n in 3..30 {
            assert_eq!(
                c.report(est(1_200_000), RATE, ABOVE, true, s(n)),
                Move::Stay
            );
        }
        // Room for it, twice in a row: a trial (padding) long before a try would be due, and
        // up after two clean reports through it.
        assert_eq!(
            c.report(est(2_000_000), RATE, ABOVE, true, s(30)),
            Move::Stay
        );
        assert_eq!(
            c.report(est(2_000_000), RATE, ABOVE, true, s(31)),
            Move::Trial
        );
        assert!(c.in_trial());
        for n in 32..34 {
            assert_eq!(
                c.report(est(2_000_000), RATE, ABOVE, true, s(n)),
                Move::Stay
            );
        }
        assert_eq!(c.report(est(2_000_000), RATE, ABOVE, true, s(34)), Move::Up);
        assert!(!c.in_trial());
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

    #[test]
    fn a_trial_that_shows_loss_ends_at_once_and_the_next_waits_longer() {
        let t = Instant::now();
        let s = |n: u64| t + Duration::from_secs(n);
        let est = |e: u64, l: f32| LinkReport {
            loss: Some(l),
            estimate_bps: Some(e),
        };
        let mut c = LayerChooser::new();
        // A probe through a policer's bucket promised room the link does not have.
        assert_eq!(
            c.report(est(2_000_000, 0.0), RATE, ABOVE, true, s(0)),
            Move::Stay
        );
        assert_eq!(
            c.report(est(2_000_000, 0.0), RATE, ABOVE, true, s(1)),
            Move::Trial
        );
        // The padding is lost: the trial ends, the viewer stays (no move, no keyframe).
        assert_eq!(
            c.report(est(2_000_000, 0.15), RATE, ABOVE, true, s(2)),
            Move::EndTrial
        );
        // The estimate still says room: the next trial waits 10 s, the one after 20 s.
        let mut trials = Vec::new();
        for n in 3..60 {
            match c.report(est(2_000_000, 0.0), RATE, ABOVE, true, s(n)) {
                Move::Trial => {
                    trials.push(n);
                    // It fails as well.
                    let end = c.report(
                        est(2_000_000, 0.2),
                        RATE,
                        ABOVE,
                        true,
                        s(n) + Duration::from_millis(500),
                    );
                    assert_eq!(end, Move::EndTrial);
                }
                Move::Stay => {}
                m => panic!("{m:?} at {n}"),
            }
        }
        assert_eq!(trials, [12, 33]);
        // Aborted between reports: the same as a failed one.
        let mut c = LayerChooser::new();
        assert!(!c.abort_trial(s(0)));
        c.report(est(2_000_000, 0.0), RATE, ABOVE, true, s(0));
        assert_eq!(
            c.report(est(2_000_000, 0.0), RATE, ABOVE, true, s(1)),
            Move::Trial
        );
        assert!(c.abort_trial(s(1) + Duration::from_millis(300)));
        assert!(!c.in_trial());
        // The next 10 s after it (at 11.3 s).
        for n in 2..12 {
            assert_eq!(
                c.report(est(2_000_000, 0.0), RATE, ABOVE, true, s(n)),
                Move::Stay
            );
        }
        assert_eq!(
            c.report(est(2_000_000, 0.0), RATE, ABOVE, true, s(12)),
            Move::Trial
        );
        // An estimate that falls back during a trial ends it too.
        let mut c = LayerChooser::new();
        c.report(est(2_000_000, 0.0), RATE, ABOVE, true, s(0));
        assert_eq!(
            c.report(est(2_000_000, 0.0), RATE, ABOVE, true, s(1)),
            Move::Trial
        );
        assert_eq!(
            c.report(est(1_000_000, 0.0), RATE, ABOVE, true, s(2)),
            Move::EndTrial
        );
    }

    #[test]
    fn after_a_move_down_the_layer_left_waits_for_its_trial() {
        let t = Instant::now();
        let s = |n: u64| t + Duration::from_secs(n);
        let room = LinkReport {
            loss: Some(0.0),
            estimate_bps: Some(5_000_000),
        };
        let mut c = LayerChooser::new();
        assert_eq!(c.report(loss(0.3), RATE, ABOVE, true, s(0)), Move::Down);
        assert!(!c.may_trial(s(29)));
        assert!(c.may_trial(s(30)));
        // The estimate shows room at once (a probe through a policer's bucket): no trial for
        // 30 s.
        for n in 3..30 {
            assert_eq!(c.report(room, RATE, ABOVE, true, s(n)), Move::Stay, "{n}");
        }
        assert_eq!(c.report(room, RATE, ABOVE, true, s(30)), Move::Trial);
    }
}
