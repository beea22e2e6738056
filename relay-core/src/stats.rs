//! Counters and rates of streams and viewers. Updating them is a few additions per packet, so
//! they are always on.

use std::time::{Duration, Instant};

/// Rates over the last completed one-second window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub bits_per_second: f64,
    pub packets_per_second: f64,
    pub frames_per_second: f64,
}

/// Counts into one-second windows; reading gives the last full window.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    packets: u64,
    frames: u64,
    last: Rates,
}

const WINDOW: Duration = Duration::from_secs(1);

impl RateMeter {
    /// Counts a packet of `bytes`, `frame_end` if it closes a frame.
    pub fn add(&mut self, bytes: usize, frame_end: bool, now: Instant) {
        self.roll(now);
        self.bytes += bytes as u64;
        self.packets += 1;
        self.frames += u64::from(frame_end);
    }

    /// The rates of the last full window (zero if the stream went quiet since).
    pub fn rates(&self, now: Instant) -> Rates {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < 2 * WINDOW => self.last,
            _ => Rates::default(),
        }
    }

    fn roll(&mut self, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed < WINDOW {
            return;
        }
        let secs = elapsed.as_secs_f64();
        self.last = if elapsed < 2 * WINDOW {
            Rates {
                bits_per_second: self.bytes as f64 * 8.0 / secs,
                packets_per_second: self.packets as f64 / secs,
                frames_per_second: self.frames as f64 / secs,
            }
        } else {
            Rates::default()
        };
        self.window_start = Some(now);
        self.bytes = 0;
        self.packets = 0;
        self.frames = 0;
    }
}

/// Per-stream counters, all since the stream started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCounters {
    pub video_packets: u64,
    pub audio_packets: u64,
    pub bytes: u64,
    pub frames: u64,
    pub keyframes: u64,
    pub pings: u64,
    pub sender_reports: u64,
    /// Packets found missing (gaps).
    pub missing: u64,
    /// NACK requests sent (one per missing packet per try).
    pub nacked: u64,
    /// Missing packets that arrived after a NACK.
    pub recovered: u64,
    /// Missing packets that arrived before any NACK (reordering).
    pub reordered: u64,
    /// Missing packets given up on.
    pub lost: u64,
    pub duplicates: u64,
    pub dropped_foreign_source: u64,
    pub dropped_foreign_ssrc: u64,
    pub dropped_invalid: u64,
    pub dropped_speed_test: u64,
    /// Video of a layer past the most a stream keeps.
    pub dropped_extra_layer: u64,
    /// Viewers moved from one video layer to another (simulcast).
    pub layer_switches: u64,
    /// Trials of the layer above by padding a viewer's link (see `layers`), and those that
    /// showed loss (the viewer stayed).
    pub layer_trials: u64,
    pub layer_trials_failed: u64,
    pub dropped_too_old: u64,
    /// Packets dropped while a sequence jump waited for confirmation.
    pub dropped_sequence_jump: u64,
    /// Times the sender's numbering restarted.
    pub sequence_restarts: u64,
    /// GOPs too large or long for the cache.
    pub gop_overflows: u64,
    /// Keyframes asked of the encoder (sources that can be asked: WebRTC peers).
    pub keyframe_requests: u64,
    /// Viewers' keyframe requests answered from the GOP cache (a viewer whose decoder lost
    /// its footing restarted from the cached keyframe), summed over the stream's viewers.
    pub viewer_restarts: u64,
    /// Times a viewer fell behind (its caller reported a backlog over the bound) and its
    /// video skipped to the next keyframe, summed over the stream's viewers.
    pub viewer_skips: u64,
    /// Packets those viewers did not get: video while skipping, audio past the drop deadline.
    pub viewer_skipped_packets: u64,
    /// Of `viewer_skips`: skips because the stream's packets waited on this machine past the
    /// deadline (overload), and because the socket refused a viewer's datagrams.
    pub viewer_skips_late: u64,
    pub viewer_skips_send_failed: u64,
    /// Video packets that had waited on this machine past the deadline when read.
    pub late_packets: u64,
}

/// A snapshot of one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStats {
    pub uptime: Duration,
    pub video: Rates,
    pub audio: Rates,
    pub counters: StreamCounters,
    /// Time between the last two keyframes.
    pub keyframe_interval: Option<Duration>,
    /// From the SPS: the real picture size.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The video codec, and its profile as its SDP parameters spell it (see
    /// [`crate::VideoFormat::profile`]).
    pub codec: Option<crate::VideoCodec>,
    pub profile: Option<String>,
    pub has_video: bool,
    pub has_audio: bool,
    pub viewers: usize,
    /// Bytes held by the GOP cache.
    pub gop_bytes: usize,
    /// The encoder sends B-frames (bi-predicted pictures), which browsers play as a stutter.
    pub b_frames: bool,
    /// The video layers, smallest picture first (one without simulcast).
    pub layers: Vec<LayerStats>,
}

/// One video layer's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStats {
    pub id: crate::layers::LayerId,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub video: Rates,
    pub keyframe_interval: Option<Duration>,
    /// Whether it is sending (a publisher stops its upper layers when its uplink narrows).
    pub active: bool,
    /// Viewers on it.
    pub viewers: usize,
}

/// Per-viewer counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewerStats {
    pub sent_packets: u64,
    pub sent_bytes: u64,
    /// Video packets not sent because the viewer was behind (skipped to the next keyframe).
    pub skipped_packets: u64,
    /// Times the viewer fell behind and skipped.
    pub skips: u64,
    /// Of `skips`: because the machine was late, because its datagrams were refused.
    pub skips_late: u64,
    pub skips_send_failed: u64,
    /// Keyframe requests answered from the GOP cache.
    pub keyframes_from_cache: u64,
    /// Keyframe requests passed on to the encoder (nothing cached, a WebRTC publisher).
    pub keyframes_from_encoder: u64,
    /// Keyframe requests not answered (rate-limited or nothing cached).
    pub keyframe_requests_ignored: u64,
    /// Moves from one video layer to another.
    pub layer_switches: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_full_windows() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        for i in 0..100 {
            m.add(1000, i % 4 == 3, t0 + Duration::from_millis(i * 10));
        }
        assert_eq!(m.rates(t0 + Duration::from_millis(990)), Rates::default());
        m.add(1000, false, t0 + Duration::from_millis(1000));
        let r = m.rates(t0 + Duration::from_millis(1000));
        assert_eq!(r.packets_per_second, 100.0);
        assert_eq!(r.bits_per_second, 800_000.0);
        assert_eq!(r.frames_per_second, 25.0);
        assert_eq!(m.rates(t0 + Duration::from_secs(5)), Rates::default());
    }
}
