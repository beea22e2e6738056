//! How much repair a viewer may ask for: the share of what it is sent that may be
//! retransmissions (RTX), from the loss its receiver reports and the repair it takes.
//!
//! A fixed share cannot serve both ends: a clean viewer that NACKs everything (a bug, an
//! attack) must not make the server send its stream twice, while a viewer on 20 % loss needs
//! about a fifth of its bytes as retransmissions, and more where retransmissions are lost
//! again at the same rate and asked for a second time. So the budget follows the viewer:
//!
//! - the loss its receiver reports (RTCP receiver reports: browsers count loss on the wire,
//!   before repair), mapped to the share that repairs it ([`RepairBudget::step_for`]);
//! - the repair it actually takes: a viewer whose retransmissions reach the budget is asking
//!   for more than it gets (some receivers report loss after repair, which hides the need),
//!   so the budget rises two steps, since how much more it needs cannot be seen past the cap
//!   and every rise costs the viewer its retransmission history; it does not fall while its
//!   repair would come near the lower step.
//!
//! It rises at once and falls a step only after [`RepairBudget::FALL_AFTER`] of calm, so a
//! burst of loss does not make it swing. It moves in a few steps ([`RTX_SHARES`]) rather than
//! continuously because applying one starts the viewer's retransmission history afresh (the
//! WebRTC stack keeps the share with the history): the caller applies a change only where
//! that costs nothing, at the first packet of a keyframe, where nothing sent before can still
//! be needed for long.

use std::time::{Duration, Instant};

/// The budget's steps: the most the retransmissions may be of what a viewer is sent (over
/// the last second), from a clean viewer's to the most a viewer on heavy loss gets.
pub const RTX_SHARES: [f32; 4] = [0.15, 0.30, 0.45, 0.60];

/// Retransmissions at this fraction of the budget or more count as reaching it.
const AT_THE_CAP: f32 = 0.8;

/// Retransmissions at this fraction of the step below or more hold the budget where it is:
/// lower than [`AT_THE_CAP`], so that a viewer whose repair sits near a step's cap does not
/// go down, hit the cap and come back up (each move costs it its retransmission history).
const NEAR_THE_STEP_BELOW: f32 = 0.6;

/// What a viewer's last reporting interval showed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RepairReport {
    /// The loss its receiver reported (0 to 1), if it reported any.
    pub loss: Option<f32>,
    /// Video packets sent to it in the interval, first sends.
    pub sent: u64,
    /// Retransmissions sent to it in the interval.
    pub resent: u64,
}

impl RepairReport {
    /// The share of retransmissions in what it was sent.
    pub fn rtx_share(&self) -> f32 {
        let total = self.sent + self.resent;
        if total == 0 {
            0.0
        } else {
            self.resent as f32 / total as f32
        }
    }
}

/// One viewer's repair budget.
#[derive(Debug, Clone, Default)]
pub struct RepairBudget {
    /// The step in force (an index into [`RTX_SHARES`]).
    applied: usize,
    /// The step the reports ask for.
    wanted: usize,
    /// Since when the reports have asked for less than the step in force.
    low_since: Option<Instant>,
    /// The latest loss reported, 0 to 1.
    loss: f32,
}

impl RepairBudget {
    /// How long the need must stay low before the budget falls a step.
    pub const FALL_AFTER: Duration = Duration::from_secs(10);

    /// The step a joining viewer starts at (see [`RepairBudget::joining`]).
    pub const JOIN_STEP: usize = 1;

    /// A budget at the lowest step.
    pub fn new() -> RepairBudget {
        RepairBudget::default()
    }

    /// A new viewer's budget: a step above the clean share. Its first GOP (the replay from the
    /// cache, a burst) is what it needs most and arrives before any receiver report could
    /// raise the budget, and a keyframe that cannot be repaired costs a viewer on heavy loss
    /// seconds of waiting for the next. A clean viewer comes down to the lowest step after the
    /// first calm period, as any other.
    pub fn joining() -> RepairBudget {
        RepairBudget {
            applied: Self::JOIN_STEP,
            wanted: Self::JOIN_STEP,
            ..RepairBudget::default()
        }
    }

    /// The step the loss `loss` (0 to 1, before repair) needs: each lost packet is sent again,
    /// and again when the retransmission is lost too, so the retransmissions come to about
    /// `loss / (1 - loss)` of the stream (a share of `loss` of what is sent); twice that
    /// leaves room for a receiver that asks again before the first answer arrives, plus a
    /// floor for bursts.
    pub fn step_for(loss: f32) -> usize {
        let loss = if loss.is_finite() {
            loss.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // (Less a rounding margin: 20 % loss needs exactly the 45 % step.)
        let need = 2.0 * loss + 0.05 - 1e-4;
        RTX_SHARES
            .iter()
            .position(|s| *s >= need)
            .unwrap_or(RTX_SHARES.len() - 1)
    }

    /// Takes a reporting interval's figures.
    pub fn report(&mut self, r: RepairReport, now: Instant) {
        if let Some(loss) = r.loss {
            self.loss = if loss.is_finite() {
                loss.clamp(0.0, 1.0)
            } else {
                0.0
            };
        }
        let top = RTX_SHARES.len() - 1;
        let share = r.rtx_share();
        let at = |step: usize, fraction: f32| {
            RTX_SHARES.get(step).is_some_and(|s| share >= fraction * s)
        };
        let mut need = r.loss.map_or(0, Self::step_for);
        if at(self.applied, AT_THE_CAP) {
            need = need.max((self.applied + 2).min(top));
        } else if self.applied > 0 && at(self.applied - 1, NEAR_THE_STEP_BELOW) {
            need = need.max(self.applied); // would come near the step below: stay
        }
        if need >= self.applied {
            self.wanted = need;
            self.low_since = None;
            return;
        }
        let since = *self.low_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= Self::FALL_AFTER {
            // One step down per calm period: a viewer that recovers gets back to the clean
            // share gradually.
            self.wanted = self.applied - 1;
            self.low_since = Some(now);
        }
    }

    /// The share to apply now, if it differs from the one in force (call where the history
    /// may start afresh: the first packet of a keyframe); it is then in force.
    pub fn take_change(&mut self) -> Option<f32> {
        if self.wanted == self.applied {
            return None;
        }
        self.applied = self.wanted;
        RTX_SHARES.get(self.applied).copied()
    }

    /// The share in force.
    pub fn share(&self) -> f32 {
        RTX_SHARES
            .get(self.applied)
            .copied()
            .unwrap_or(RTX_SHARES[0])
    }

    /// The latest loss reported, 0 to 1.
    pub fn loss(&self) -> f32 {
        self.loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An interval with this reported loss and no repair taken.
    fn loss(l: f32) -> RepairReport {
        RepairReport {
            loss: Some(l),
            sent: 100,
            resent: 0,
        }
    }

    /// An interval without a receiver report in which `resent` of 100 packets were resent.
    fn resent(resent: u64) -> RepairReport {
        RepairReport {
            loss: None,
            sent: 100,
            resent,
        }
    }

    #[test]
    fn loss_maps_to_steps() {
        assert_eq!(RepairBudget::step_for(0.0), 0);
        assert_eq!(RepairBudget::step_for(0.05), 0);
        assert_eq!(RepairBudget::step_for(0.10), 1);
        assert_eq!(RepairBudget::step_for(0.20), 2);
        assert_eq!(RepairBudget::step_for(0.30), 3);
        assert_eq!(RepairBudget::step_for(1.0), 3);
        assert_eq!(RepairBudget::step_for(f32::NAN), 0);
        assert_eq!(RepairBudget::step_for(-3.0), 0);
    }

    #[test]
    fn rises_at_once_and_applies_only_when_taken() {
        let t = Instant::now();
        let mut b = RepairBudget::new();
        assert_eq!(b.take_change(), None, "a clean viewer keeps the default");
        b.report(loss(0.2), t);
        assert_eq!(b.share(), RTX_SHARES[0], "not in force before it is taken");
        assert_eq!(b.take_change(), Some(0.45));
        assert_eq!(b.share(), 0.45);
        assert_eq!(b.take_change(), None, "taken once");
    }

    #[test]
    fn falls_a_step_per_quiet_period() {
        let t = Instant::now();
        let mut b = RepairBudget::new();
        b.report(loss(0.3), t);
        assert_eq!(b.take_change(), Some(0.60));
        // The loss is gone, but a short quiet spell changes nothing.
        for s in 1..10 {
            b.report(loss(0.0), t + Duration::from_secs(s));
            assert_eq!(b.take_change(), None, "fell after {s} s");
        }
        b.report(loss(0.0), t + Duration::from_secs(11));
        assert_eq!(b.take_change(), Some(0.45));
        b.report(loss(0.0), t + Duration::from_secs(16));
        assert_eq!(b.take_change(), None);
        b.report(loss(0.0), t + Duration::from_secs(21));
        assert_eq!(b.take_change(), Some(0.30));
        b.report(loss(0.0), t + Duration::from_secs(31));
        assert_eq!(b.take_change(), Some(0.15));
        b.report(loss(0.0), t + Duration::from_secs(60));
        assert_eq!(b.take_change(), None, "never below the clean share");
    }

    #[test]
    fn a_loss_burst_during_the_quiet_period_starts_it_again() {
        let t = Instant::now();
        let mut b = RepairBudget::new();
        b.report(loss(0.2), t);
        b.take_change();
        b.report(loss(0.0), t + Duration::from_secs(1));
        b.report(loss(0.2), t + Duration::from_secs(8));
        b.report(loss(0.0), t + Duration::from_secs(9));
        b.report(loss(0.0), t + Duration::from_secs(15));
        assert_eq!(b.take_change(), None, "the burst at 8 s restarted the wait");
        b.report(loss(0.0), t + Duration::from_secs(19));
        assert_eq!(b.take_change(), Some(0.30));
    }

    #[test]
    fn repair_that_reaches_the_budget_raises_it_even_when_the_receiver_reports_no_loss() {
        let t = Instant::now();
        let mut b = RepairBudget::new();
        // 10 resends of 110 sent: 9 %, under 80 % of the clean 15 %.
        b.report(resent(10), t);
        assert_eq!(b.take_change(), None);
        // 20 of 120 (17 %): at the clean budget (asking for more than it gets), and how
        // much more cannot be seen: two steps up.
        b.report(resent(20), t);
        assert_eq!(b.take_change(), Some(0.45));
        // 60 of 160 (38 %): at this one too; the top step is as far as it goes.
        b.report(resent(60), t);
        assert_eq!(b.take_change(), Some(0.60));
        b.report(resent(150), t);
        assert_eq!(b.take_change(), None);
        // Repair now takes 13 % (15 of 115): under 60 % of the step below (18 %), so after
        // a calm period the budget falls a step.
        for s in 1..=11 {
            b.report(resent(15), t + Duration::from_secs(s));
        }
        assert_eq!(b.take_change(), Some(0.45));
    }

    #[test]
    fn repair_that_would_reach_the_step_below_holds_the_budget() {
        let t = Instant::now();
        let mut b = RepairBudget::new();
        b.report(loss(0.2), t);
        assert_eq!(b.take_change(), Some(0.45));
        // The receiver reports no loss (it counts after repair), but the repair takes 20 %
        // (25 of 125), what 20 % loss costs: past 60 % of the 30 % step below (and under
        // 80 % of this one), so the budget stays.
        for s in 1..=30 {
            b.report(
                RepairReport {
                    loss: Some(0.0),
                    sent: 100,
                    resent: 25,
                },
                t + Duration::from_secs(s),
            );
            assert_eq!(b.take_change(), None, "fell after {s} s");
        }
    }

    #[test]
    fn a_joining_viewer_starts_a_step_up_and_comes_down_when_calm() {
        let t = Instant::now();
        let mut b = RepairBudget::joining();
        assert_eq!(b.share(), RTX_SHARES[RepairBudget::JOIN_STEP]);
        assert_eq!(b.take_change(), None, "in force from the start");
        for s in 1..10 {
            b.report(loss(0.0), t + Duration::from_secs(s));
            assert_eq!(b.take_change(), None, "fell after {s} s");
        }
        b.report(loss(0.0), t + Duration::from_secs(11));
        assert_eq!(b.take_change(), Some(RTX_SHARES[0]));
        // One on heavy loss rises from there at once.
        let mut b = RepairBudget::joining();
        b.report(loss(0.2), t);
        assert_eq!(b.take_change(), Some(0.45));
    }

    #[test]
    fn the_rtx_share_of_an_empty_interval_is_zero() {
        assert_eq!(RepairReport::default().rtx_share(), 0.0);
    }
}
