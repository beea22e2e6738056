//! A simulcast viewer's bandwidth estimate: what str0m's estimator (Google congestion control
//! on the viewer's transport-wide feedback, with its probes) says the path to the viewer
//! carries, read so the relay's layer choice can use it (`relay_core::LayerChooser`).
//!
//! Without it a viewer learns that its link has room only by trying the layer above and
//! losing packets when it does not. With it the server asks str0m to probe for the next
//! layer's rate on a schedule that backs off ([`Estimate::desired`]); when the estimate shows
//! room, the relay holds a trial: the link is padded up to that layer's rate for two reports
//! while the viewer stays where it is ([`Estimate::pad`]), and only a clean trial moves it up
//! (see `relay_core::layers`). The estimate also moves a viewer down at the first loss when it
//! is short of the viewer's layer.
//!
//! An estimate is only believed once the viewer's feedback has been arriving for a while:
//! str0m reports its starting figure at once, and a viewer that negotiated transport-wide
//! feedback but never sends it would otherwise be judged on that guess.

use std::time::{Duration, Instant};

use ftl_proto::ChannelId;
use str0m::bwe::{Bitrate, BweKind};

use super::peers::guarded;
use super::pool::ViewerKind;
use crate::server::Server;

/// How long feedback has to arrive before the estimate counts: the starting probes (3x and 6x
/// the start) are answered within the first second, and a second more lets the estimate settle.
pub(in crate::server) const TRUST_AFTER: Duration = Duration::from_secs(2);
/// The estimate probes for the next layer up's rate with this much over it (the chooser wants
/// headroom for keyframes and repair, `relay_core::LayerChooser::ESTIMATE_HEADROOM`).
const DESIRED_HEADROOM: f64 = 1.5;
/// A new next layer is one whose rate moved by more than this share.
const DESIRED_STEP: f64 = 0.2;
/// The wait after a probe that found no room before the next, at first; each doubles it up to
/// [`REPROBE_MAX`]. Probes go out only while a trial could follow (the relay says when: not
/// right after a move, nor soon after a failed trial), the first at once. A probe is a few
/// packets above the estimate for some milliseconds (str0m's allocation probe), so a link that
/// stays narrow loses a packet or two per probe at most.
const REPROBE_FIRST: Duration = Duration::from_secs(4);
const REPROBE_MAX: Duration = Duration::from_secs(16);

/// One viewer's estimate, as its `Rtc` reports it.
#[derive(Debug, Clone, Default)]
pub(in crate::server) struct Estimate {
    /// The latest estimate while str0m can probe (bits per second).
    bps: Option<u64>,
    /// Since when the viewer's transport-wide feedback has been arriving without a break.
    feedback_since: Option<Instant>,
    /// The share of everything sent to it over the last second that its feedback says was
    /// lost: padding and probes included, which its receiver reports (media only) leave out.
    loss: Option<f32>,
    /// The rate to probe for (the next layer's with headroom); `None` at the top.
    target: Option<u64>,
    /// When the next probe is due, and the wait after it.
    probe_at: Option<Instant>,
    reprobe: Duration,
    /// The desired rate stands raised (a probe went out): the next report lowers it again, so
    /// that the next raise is an increase, which is what makes str0m probe.
    raised: bool,
    /// The desired rate given to str0m.
    current: u64,
    /// The rate the link is filled to with padding during a trial of the layer above (see
    /// `relay_core::layers`); 0 outside one.
    pad: u64,
}

impl Estimate {
    /// Takes str0m's `EgressBitrateEstimate`. A REMB from the viewer is not this estimate.
    pub(in crate::server) fn on_event(&mut self, kind: &BweKind) {
        if let BweKind::Twcc {
            estimate,
            can_probe,
        } = kind
        {
            self.bps = can_probe.then(|| estimate.as_u64());
        }
    }

    /// Takes the loss str0m computed from the viewer's transport-wide feedback over the last
    /// second (`None`: no feedback arrived for that second).
    pub(in crate::server) fn on_feedback(&mut self, loss: Option<f32>, now: Instant) {
        self.loss = loss.filter(|l| l.is_finite());
        if loss.is_none() {
            self.feedback_since = None;
        } else if self.feedback_since.is_none() {
            self.feedback_since = Some(now);
        }
    }

    /// The loss to judge the link by: the receiver's report (media only), or during a trial
    /// what transport-wide feedback showed lost when that is more: the trial's padding lost
    /// says as much about the link as media lost. (Outside trials the media's own loss decides:
    /// a probe's few packets lost to a policer are not the picture's.)
    pub(in crate::server) fn loss(&self, reported: Option<f32>, now: Instant) -> Option<f32> {
        let twcc = self.usable(now).and(self.loss).filter(|_| self.padding());
        match (reported, twcc) {
            (Some(r), Some(t)) => Some(r.max(t)),
            (r, t) => r.or(t),
        }
    }

    /// The estimate the layer choice may use now, if any.
    pub(in crate::server) fn usable(&self, now: Instant) -> Option<u64> {
        let since = self.feedback_since?;
        (now.saturating_duration_since(since) >= TRUST_AFTER)
            .then_some(self.bps)
            .flatten()
    }

    /// The desired rate to give str0m now, if it is to change (`None` otherwise), for a viewer
    /// whose next layer up runs at `next_bps` (`None` when there is nothing to probe for now;
    /// see `Relay::viewer_next_rate`), called once per report. str0m probes when the desired rate
    /// rises above its estimate (an allocation probe), so the desired rate stays at or under
    /// the estimate and is raised to the target only when a probe is due, then lowered at the
    /// next report: a link that widened is found within seconds (str0m's own probe of a
    /// stagnant estimate comes after 15 s), one that did not is probed less and less often.
    pub(in crate::server) fn desired(
        &mut self,
        next_bps: Option<u64>,
        now: Instant,
    ) -> Option<Bitrate> {
        let d = self.next_desired(next_bps, now)?;
        self.current = d.as_u64();
        Some(d)
    }

    fn next_desired(&mut self, next_bps: Option<u64>, now: Instant) -> Option<Bitrate> {
        let want = next_bps.map(|b| (b as f64 * DESIRED_HEADROOM) as u64);
        let Some(want) = want.filter(|w| *w > 0) else {
            // Nothing to probe for now (at the top, or no trial could follow).
            self.target = None;
            self.probe_at = None;
            return self.lower(self.current);
        };
        let new = self
            .target
            .is_none_or(|d| (want as f64 - d as f64).abs() > d as f64 * DESIRED_STEP);
        if new {
            // Something to probe for (again): at once, then on the schedule.
            self.target = Some(want);
            self.reprobe = REPROBE_FIRST;
            self.probe_at = None;
        }
        if self.raised {
            return self.lower(want);
        }
        let room = self.bps.is_some_and(|e| e >= want);
        if room {
            self.reprobe = REPROBE_FIRST;
            return None;
        }
        if self.probe_at.is_some_and(|t| now < t) {
            return None;
        }
        self.probe_at = Some(now + self.reprobe);
        self.reprobe = (self.reprobe * 2).min(REPROBE_MAX);
        self.raised = true;
        Some(Bitrate::bps(want))
    }

    /// The desired rate back at or under the estimate (no more than `cap`), when it stands
    /// raised.
    fn lower(&mut self, cap: u64) -> Option<Bitrate> {
        if !std::mem::take(&mut self.raised) {
            return None;
        }
        let low = self.bps.unwrap_or(cap / 2).min(cap);
        Some(Bitrate::bps(low.max(1)))
    }

    /// Sets the padding of a trial (0 ends it); whether it changed.
    pub(in crate::server) fn pad(&mut self, bps: u64) -> bool {
        std::mem::replace(&mut self.pad, bps) != bps
    }

    /// Whether a trial is padding the link and the estimate fell under the padding's rate: the
    /// link gave way.
    pub(in crate::server) fn gave_way(&self) -> bool {
        self.padding() && self.bps.is_some_and(|e| e < self.pad)
    }

    /// Whether a trial is padding the link.
    pub(in crate::server) fn padding(&self) -> bool {
        self.pad > 0
    }

    /// What str0m's estimator is to be given: the rate to sustain with padding, and the
    /// desired rate (never under the padding: str0m clamps the one to the other).
    pub(in crate::server) fn bitrates(&self) -> (Bitrate, Bitrate) {
        (
            Bitrate::bps(self.pad),
            Bitrate::bps(self.current.max(self.pad).max(1)),
        )
    }

    /// The latest estimate, believed or not (for the statistics).
    pub(in crate::server) fn last(&self) -> Option<u64> {
        self.bps
    }
}

/// What a viewer's report says of its link, for its layer choice: the receiver's loss, and
/// with an estimate the estimate and (during a trial) the loss its feedback shows.
pub(in crate::server) fn link_report(
    estimate: Option<&Estimate>,
    loss: Option<f32>,
    now: Instant,
) -> relay_core::LinkReport {
    match estimate {
        Some(e) => relay_core::LinkReport {
            loss: e.loss(loss, now),
            estimate_bps: e.usable(now),
        },
        None => relay_core::LinkReport {
            loss,
            estimate_bps: None,
        },
    }
}

impl Server {
    /// Which `Rtc` a viewer of `channel` gets: one that estimates its bandwidth where the
    /// stream has layers to choose between (an edge's pull is pinned to its layer: plain):
    /// layers seen, or declared by its WHIP publisher's offer before they send (a browser
    /// sends its upper layers only once its own estimate allows them, seconds in; a viewer
    /// arriving before would otherwise keep a plain `Rtc` for good). A stream live on another
    /// node and not yet here (an edge's first viewers, while its pull starts) may have layers:
    /// those get one too, at the estimate's cost if it has not.
    pub(in crate::server) fn viewer_kind(&self, channel: ChannelId, pull: bool) -> ViewerKind {
        let layers = self.relay.layer_count(channel);
        let declared = self
            .whip_live
            .get(&channel)
            .and_then(|id| self.viewers.map.get(id))
            .map_or(0, |p| match &p.role {
                super::peers::Role::Publisher(p) => p.declared_layers(),
                _ => 0,
            });
        let estimating = layers > 1
            || declared > 1
            || (layers == 0 && self.cluster_channels().contains(&channel));
        if !pull && estimating {
            ViewerKind::Estimating
        } else {
            ViewerKind::Plain
        }
    }

    /// Marks a new viewer whose `Rtc` estimates its bandwidth.
    pub(in crate::server) fn viewer_estimating(&mut self, id: u64, kind: ViewerKind) {
        if kind == ViewerKind::Estimating {
            if let Some(v) = self.viewers.map.get_mut(&id) {
                v.estimate = Some(Estimate::default());
            }
        }
    }

    /// A viewer's `Rtc` estimated its bandwidth again (after each feedback, every ~100 ms): one
    /// that falls under a trial's padding ends the trial now, not at the next report, before
    /// the padding starves the media it shares the link with.
    pub(in crate::server) fn viewer_estimate(&mut self, id: u64, kind: &BweKind, now: Instant) {
        let Some(v) = self.viewers.map.get_mut(&id) else {
            return;
        };
        let Some(e) = v.estimate.as_mut() else {
            return;
        };
        e.on_event(kind);
        let failed = e.gave_way()
            && v.relay_id()
                .is_some_and(|rid| self.relay.viewer_trial_failed(rid, now));
        if failed {
            self.viewer_probe_for(id, Some(0), now);
        }
    }

    /// Tells an estimating viewer's `Rtc` how far to probe (the rate of the layer it would
    /// move up to, with headroom, re-armed on a schedule while there is no room) and what to
    /// pad its link to (a trial of that layer, `pad`), when either changed.
    pub(in crate::server) fn viewer_probe_for(&mut self, id: u64, pad: Option<u64>, now: Instant) {
        let Some(v) = self.viewers.map.get_mut(&id) else {
            return;
        };
        let Some(rid) = v.relay_id() else {
            return;
        };
        let Some(e) = v.estimate.as_mut() else {
            return;
        };
        let padded = pad.is_some_and(|p| e.pad(p));
        let next = self.relay.viewer_next_rate(rid, now);
        let desired = e.desired(next, now).is_some();
        let padding = e.padding();
        if padded || desired {
            let (minimum, desired) = e.bitrates();
            log::debug!("viewer {id}: padding to {minimum}, probing for {desired}");
            let _ = guarded(|| v.rtc.bwe().set_bitrate(minimum, desired));
        }
        if padded {
            if padding {
                // The trial's allowance at once (this starts the RTX history afresh: the
                // link was clean, so little in it could be asked for).
                v.renew_video_tx();
            } else {
                // Back to the budget once what the trial lost has been repaired.
                v.renew_video_tx_at(now + super::pool::RTX_RESET_AFTER_REPLAY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twcc(bps: u64, can_probe: bool) -> BweKind {
        BweKind::Twcc {
            estimate: Bitrate::bps(bps),
            can_probe,
        }
    }

    #[test]
    fn an_estimate_counts_only_after_feedback_kept_arriving() {
        let t = Instant::now();
        let mut e = Estimate::default();
        e.on_event(&twcc(1_000_000, true));
        // The starting figure, before any feedback: not believed.
        assert_eq!(e.usable(t), None);
        e.on_feedback(Some(0.0), t);
        assert_eq!(e.usable(t + Duration::from_secs(1)), None);
        assert_eq!(e.usable(t + TRUST_AFTER), Some(1_000_000));
        // Its loss counts with the receiver's during a trial, the larger of the two.
        e.on_feedback(Some(0.2), t + TRUST_AFTER);
        assert_eq!(e.loss(Some(0.05), t + TRUST_AFTER), Some(0.05));
        e.pad(500_000);
        assert_eq!(e.loss(Some(0.05), t + TRUST_AFTER), Some(0.2));
        assert_eq!(e.loss(Some(0.3), t + TRUST_AFTER), Some(0.3));
        assert_eq!(e.loss(None, t + TRUST_AFTER), Some(0.2));
        assert_eq!(
            e.loss(Some(0.05), t + Duration::from_millis(500)),
            Some(0.05)
        );
        // Feedback stops: the estimate is a guess again until it has been back a while.
        e.on_feedback(None, t + Duration::from_secs(3));
        assert_eq!(e.usable(t + Duration::from_secs(3)), None);
        e.on_feedback(Some(0.0), t + Duration::from_secs(4));
        assert_eq!(e.usable(t + Duration::from_secs(5)), None);
        assert_eq!(e.usable(t + Duration::from_secs(6)), Some(1_000_000));
    }

    #[test]
    fn no_estimate_while_str0m_cannot_probe_and_remb_is_not_one() {
        let t = Instant::now();
        let mut e = Estimate::default();
        e.on_feedback(Some(0.0), t);
        e.on_event(&twcc(2_000_000, true));
        e.on_event(&twcc(2_000_000, false));
        assert_eq!(e.usable(t + TRUST_AFTER), None);
        e.on_event(&BweKind::Remb {
            estimate: Bitrate::bps(5_000_000),
            mid: str0m::media::Mid::from("0"),
        });
        assert_eq!(e.last(), None);
    }

    #[test]
    fn probes_for_the_next_layer_on_a_schedule_that_backs_off() {
        let t = Instant::now();
        let s = |n: u64| t + Duration::from_secs(n);
        let mut e = Estimate::default();
        e.on_feedback(Some(0.0), t);
        e.on_event(&twcc(300_000, true));
        // Nothing to probe for (at the top, or no trial could follow).
        assert_eq!(e.desired(None, t), None);
        // A next layer: a probe at once (the raise to 1.5x its rate), lowered at the next
        // report, then again 4, 8 and at most 16 s apart.
        let mut asked = Vec::new();
        for n in 1..130 {
            if let Some(b) = e.desired(Some(400_000), s(n)) {
                asked.push((n, b.as_u64()));
            }
        }
        assert_eq!(
            &asked[..8],
            &[
                (1, 600_000),
                (2, 300_000),
                (5, 600_000),
                (6, 300_000),
                (13, 600_000),
                (14, 300_000),
                (29, 600_000),
                (30, 300_000)
            ]
        );
        assert_eq!(asked[8].0, 45);
        assert_eq!(asked[10].0, 61);
        // A small move of the next layer's rate is not a new one.
        assert_eq!(e.desired(Some(440_000), s(130)), None);
        // A new next layer: a probe at once, and the schedule starts over.
        assert_eq!(
            e.desired(Some(800_000), s(131)),
            Some(Bitrate::bps(1_200_000))
        );
        assert_eq!(
            e.desired(Some(800_000), s(132)),
            Some(Bitrate::bps(300_000))
        );
        assert_eq!(e.desired(Some(800_000), s(134)), None);
        assert_eq!(
            e.desired(Some(800_000), s(135)),
            Some(Bitrate::bps(1_200_000))
        );
        // Room found: lowered once more, then no probes.
        e.on_event(&twcc(1_500_000, true));
        assert_eq!(
            e.desired(Some(800_000), s(136)),
            Some(Bitrate::bps(1_200_000))
        );
        for n in 137..200 {
            assert_eq!(e.desired(Some(800_000), s(n)), None, "{n}");
        }
        // Nothing to probe for while raised (a move, a trial that may not start): lowered,
        // then quiet; probing starts again at once when there is.
        e.on_event(&twcc(900_000, true));
        assert_eq!(
            e.desired(Some(800_000), s(205)),
            Some(Bitrate::bps(1_200_000))
        );
        assert_eq!(e.desired(None, s(206)), Some(Bitrate::bps(900_000)));
        assert_eq!(e.desired(None, s(207)), None);
        assert_eq!(
            e.desired(Some(800_000), s(208)),
            Some(Bitrate::bps(1_200_000))
        );
    }

    #[test]
    fn a_trial_pads_under_a_desired_rate_at_least_as_high() {
        let t = Instant::now();
        let mut e = Estimate::default();
        e.on_feedback(Some(0.0), t);
        e.on_event(&twcc(2_000_000, true));
        assert_eq!(e.desired(Some(2_000_000), t), Some(Bitrate::bps(3_000_000)));
        assert_eq!(e.bitrates(), (Bitrate::bps(0), Bitrate::bps(3_000_000)));
        assert!(e.pad(1_100_000));
        assert!(!e.pad(1_100_000));
        assert_eq!(
            e.bitrates(),
            (Bitrate::bps(1_100_000), Bitrate::bps(3_000_000))
        );
        // Lowered under the padding: the desired rate stays at the padding's.
        assert_eq!(e.desired(Some(2_000_000), t), Some(Bitrate::bps(2_000_000)));
        assert!(e.pad(1_500_000));
        assert_eq!(
            e.bitrates(),
            (Bitrate::bps(1_500_000), Bitrate::bps(2_000_000))
        );
        assert!(e.pad(2_200_000));
        assert_eq!(
            e.bitrates(),
            (Bitrate::bps(2_200_000), Bitrate::bps(2_200_000))
        );
        assert!(e.gave_way(), "the estimate is under the padding");
        assert!(e.pad(1_500_000));
        assert!(!e.gave_way());
        e.on_event(&twcc(1_000_000, true));
        assert!(e.gave_way(), "the estimate fell under the padding");
        assert!(e.pad(0));
        assert!(!e.gave_way());
        assert_eq!(e.bitrates(), (Bitrate::bps(0), Bitrate::bps(2_000_000)));
    }
}
