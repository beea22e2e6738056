//! One viewer: how the relay's packets map onto the viewer's own outgoing tracks.
//!
//! Each viewer track has its own sequence numbering and RTP timestamp base:
//! - **Sequence numbers** are `ingest_ext + delta`. A track (re)starts right after the last
//!   number it sent (or below 2^15 for a new viewer), so skipped stretches leave no gap; only a
//!   packet lost upstream for good leaves one, which lets the browser see the loss.
//! - **Timestamps** are `ingest_ts + delta`, with `delta` chosen when the track starts so that
//!   time runs on from what the viewer last got.
//!
//! **Joining from the GOP cache.** A joining viewer gets the cached GOP at once, so its first
//! picture is decodable immediately. Sent with their real timestamps, the cached frames would
//! be played at their real pace and the viewer would stay as far behind live as the GOP is
//! long. Instead the cached frames get timestamps `catch_up_ticks` apart (1 ms by default):
//! the decoder runs through them as fast as it can decode and shows the newest at once; live
//! frames then follow with their real spacing from there. Latency is live within the time it
//! takes to decode one GOP. A keyframe request (PLI/FIR) is answered the same way, continuing
//! from the viewer's last timestamp. Audio does not come from the cache: it starts live.
//!
//! **Falling behind.** When the caller reports a backlog over the bound, or asks for a skip
//! (its socket refused the viewer's datagrams), or the stream's packets waited too long on this
//! machine before their turn (see `Relay::handle_datagram_queued`), the viewer's video skips to
//! the next keyframe instead of queueing more: delay never grows under overload.
//!
//! **Video layers (simulcast).** A viewer is on one of the stream's layers and gets only its
//! packets. A move to another layer (its link changed, it chose one, its layer stopped) names
//! a target; the viewer switches at the target's next keyframe and restarts its video track
//! there as after a skip: numbering runs on from the last number sent and time from the last
//! timestamp plus the real time since, so the browser sees one continuous stream.

use std::time::Instant;

use crate::layers::{LayerChooser, LayerId, Quality};
use crate::packet::Packet;
use crate::stats::ViewerStats;
use crate::types::{Forward, MediaKind, SkipReason, ViewerId};

/// Where a viewer's track is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrackState {
    /// Waits for a starting point (a keyframe for video, any packet for audio).
    Waiting,
    /// Sending.
    Live,
    /// Was behind: drops video until the next keyframe, keeping its timestamp mapping.
    Skipping,
}

/// The mapping of one viewer track.
#[derive(Debug, Clone)]
pub(crate) struct TrackOut {
    pub(crate) state: TrackState,
    seq_delta: i64,
    ts_delta: u32,
    /// Ingest packets before this one precede the track's start and are not sent.
    live_from_ext: u64,
    /// The highest sequence number sent, its timestamp, and when.
    last: Option<(u64, u32, Instant)>,
    /// Ingest-to-viewer timestamps of frames replayed from the cache, for late packets of
    /// those frames; cleared at the next keyframe.
    burst: Vec<(u32, u32)>,
    burst_end_ext: u64,
    rate: u32,
}

impl TrackOut {
    pub(crate) fn new(rate: u32) -> Self {
        TrackOut {
            state: TrackState::Waiting,
            seq_delta: 0,
            ts_delta: 0,
            live_from_ext: 0,
            last: None,
            burst: Vec::new(),
            burst_end_ext: 0,
            rate,
        }
    }

    /// The viewer's first sequence number when (re)starting at ingest number `ext`.
    fn next_seq(&self, ext: u64) -> u64 {
        self.last.map_or(ext & 0x7fff, |(s, _, _)| s + 1)
    }

    /// Starts sending at `pkt`. `keep_ts` keeps the timestamp mapping (resuming after a skip).
    pub(crate) fn begin(&mut self, pkt: &Packet, keep_ts: bool, now: Instant) {
        self.seq_delta = self.next_seq(pkt.ext) as i64 - pkt.ext as i64;
        if !keep_ts {
            let first_ts = match self.last {
                // Time runs on from the last packet sent: the gap in real time, at least a tick.
                Some((_, ts, at)) => {
                    let elapsed = now.saturating_duration_since(at);
                    let ticks = (elapsed.as_micros() * u128::from(self.rate) / 1_000_000) as u32;
                    ts.wrapping_add(ticks.max(1))
                }
                None => pkt.ts,
            };
            self.ts_delta = first_ts.wrapping_sub(pkt.ts);
        }
        self.live_from_ext = pkt.ext;
        self.burst.clear();
        self.state = TrackState::Live;
    }

    /// Maps a packet for sending, or `None` if it precedes the track's start.
    pub(crate) fn map(&mut self, pkt: &Packet, now: Instant) -> Option<(u64, u32)> {
        if pkt.ext < self.live_from_ext {
            return None;
        }
        let seq = (pkt.ext as i64).wrapping_add(self.seq_delta) as u64;
        let ts = if pkt.ext <= self.burst_end_ext && !self.burst.is_empty() {
            self.burst
                .iter()
                .find(|(ingest, _)| *ingest == pkt.ts)
                .map_or(pkt.ts.wrapping_add(self.ts_delta), |(_, out)| *out)
        } else {
            pkt.ts.wrapping_add(self.ts_delta)
        };
        if self.last.is_none_or(|(s, _, _)| seq > s) {
            self.last = Some((seq, ts, now));
        }
        Some((seq, ts))
    }

    /// Replays cached packets (a GOP, keyframe first) with compressed timestamps; returns each
    /// packet's `(seq, ts)`. The track is live afterwards.
    pub(crate) fn replay<'a>(
        &mut self,
        cached: impl Iterator<Item = &'a Packet>,
        catch_up_ticks: u32,
        now: Instant,
        mut emit: impl FnMut(&'a Packet, u64, u32),
    ) {
        let mut cached = cached.peekable();
        let Some(first) = cached.peek() else {
            return;
        };
        let first_seq = self.next_seq(first.ext);
        self.seq_delta = first_seq as i64 - first.ext as i64;
        let mut ts_out = match self.last {
            Some((_, ts, _)) => ts.wrapping_add(catch_up_ticks),
            None => first.ts,
        };
        self.live_from_ext = first.ext;
        self.burst.clear();
        let mut frame_ts: Option<u32> = None;
        for pkt in cached {
            match frame_ts {
                Some(ts) if ts == pkt.ts => {}
                Some(_) => {
                    ts_out = ts_out.wrapping_add(catch_up_ticks);
                    frame_ts = Some(pkt.ts);
                    self.burst.push((pkt.ts, ts_out));
                }
                None => {
                    frame_ts = Some(pkt.ts);
                    self.burst.push((pkt.ts, ts_out));
                }
            }
            let seq = (pkt.ext as i64).wrapping_add(self.seq_delta) as u64;
            self.burst_end_ext = pkt.ext;
            self.ts_delta = ts_out.wrapping_sub(pkt.ts);
            self.last = Some((seq, ts_out, now));
            emit(pkt, seq, ts_out);
        }
        self.state = TrackState::Live;
    }

    /// The stream restarted or ended: wait for a new start, keep numbering on.
    pub(crate) fn reset(&mut self) {
        self.state = TrackState::Waiting;
        self.burst.clear();
        self.live_from_ext = 0;
        self.burst_end_ext = 0;
    }

    /// A keyframe passed: replayed frames are history.
    pub(crate) fn forget_burst(&mut self) {
        self.burst.clear();
    }
}

/// One viewer attached to a channel.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub(crate) id: ViewerId,
    pub(crate) video: TrackOut,
    pub(crate) audio: TrackOut,
    pub(crate) backlog: usize,
    /// A skip the caller or the relay decided on, taken at the next video packet.
    pub(crate) skip: Option<SkipReason>,
    pub(crate) last_keyframe_request: Option<Instant>,
    pub(crate) stats: ViewerStats,
    /// The video layer it gets.
    pub(crate) layer: LayerId,
    /// The layer it moves to at that layer's next keyframe.
    pub(crate) target: Option<LayerId>,
    pub(crate) quality: Quality,
    pub(crate) chooser: LayerChooser,
    /// A tap that carries the largest layer there is and never moves down (a recording).
    pub(crate) largest_only: bool,
}

impl Viewer {
    pub(crate) fn new(id: ViewerId) -> Self {
        Viewer {
            id,
            video: TrackOut::new(90_000),
            audio: TrackOut::new(48_000),
            backlog: 0,
            skip: None,
            last_keyframe_request: None,
            stats: ViewerStats::default(),
            layer: LayerId(0),
            target: None,
            quality: Quality::Auto,
            chooser: LayerChooser::new(),
            largest_only: false,
        }
    }

    /// Moves the viewer to `layer` at that layer's next keyframe (or stays, if on it already).
    /// Whether a move is now pending.
    pub(crate) fn retarget(&mut self, layer: LayerId) -> bool {
        self.target = (layer != self.layer).then_some(layer);
        self.target.is_some()
    }

    /// Decides what this viewer gets of a live packet.
    pub(crate) fn on_packet(
        &mut self,
        kind: MediaKind,
        pkt: &Packet,
        max_backlog: usize,
        too_late: bool,
        now: Instant,
    ) -> Option<Forward> {
        let track = match kind {
            MediaKind::Video => &mut self.video,
            MediaKind::Audio => &mut self.audio,
        };
        if kind == MediaKind::Video && pkt.layer != self.layer {
            // Another layer's: the one it moves to starts here, at a keyframe it can take.
            let can_take = self.backlog <= max_backlog && !too_late;
            if self.target != Some(pkt.layer) || !pkt.keyframe || !can_take {
                return None;
            }
            self.layer = pkt.layer;
            self.target = None;
            self.skip = None;
            self.stats.layer_switches += 1;
            self.chooser.switched(now);
            track.begin(pkt, false, now);
        }
        if kind == MediaKind::Video && pkt.keyframe {
            track.forget_burst();
        }
        if kind == MediaKind::Audio && too_late {
            // Past the deadline (see `RelayConfig::late_drop_after`): a gap in the sound
            // rather than sound that keeps the viewer behind.
            self.stats.skipped_packets += 1;
            return None;
        }
        let over_backlog = self.backlog > max_backlog;
        // A packet past the deadline is never delivered, not even a keyframe to restart at.
        let behind = over_backlog || too_late;
        match (kind, track.state) {
            (MediaKind::Video, TrackState::Live) if behind || self.skip.is_some() => {
                track.state = TrackState::Skipping;
                self.stats.skips += 1;
                match self.skip.take() {
                    Some(SkipReason::Late) if !over_backlog => self.stats.skips_late += 1,
                    Some(SkipReason::SendFailed) if !over_backlog => {
                        self.stats.skips_send_failed += 1;
                    }
                    None if too_late && !over_backlog => self.stats.skips_late += 1,
                    _ => {}
                }
                if !pkt.keyframe || too_late {
                    self.stats.skipped_packets += 1;
                    return None;
                }
                // Behind, but this is a keyframe already: restart right here.
                track.begin(pkt, true, now);
            }
            (MediaKind::Video, TrackState::Waiting | TrackState::Skipping) => {
                // Already not sending: a skip asked for now has nothing left to skip.
                self.skip = None;
                if !pkt.keyframe || behind {
                    if track.state == TrackState::Skipping {
                        self.stats.skipped_packets += 1;
                    }
                    return None;
                }
                let keep_ts = track.state == TrackState::Skipping;
                track.begin(pkt, keep_ts, now);
            }
            (MediaKind::Audio, TrackState::Waiting | TrackState::Skipping) => {
                track.begin(pkt, false, now);
            }
            (_, TrackState::Live) => {}
        }
        let (seq, timestamp) = track.map(pkt, now)?;
        self.stats.sent_packets += 1;
        self.stats.sent_bytes += pkt.payload.len() as u64;
        Some(Forward {
            viewer: self.id,
            kind,
            seq,
            timestamp,
            wallclock: pkt.wallclock,
            marker: pkt.marker,
            keyframe: pkt.keyframe,
            cached: false,
            payload: pkt.payload.clone(),
        })
    }
}
