//! From the relay's packets to what a file holds: H.264 access units and Opus packets with
//! times from the start of the recording, grouped by GOP (one GOP is one MP4 fragment).
//!
//! The recorder is a relay tap, so its packets come numbered without gaps from a keyframe on;
//! a gap means a packet lost upstream for good, and the video waits for the next keyframe
//! rather than record a broken picture. Times: the video track counts its RTP clock from the
//! first keyframe; the audio track is placed against it through the capture times the relay
//! derives from the sender reports (one clock for both tracks), so they stay in sync.

use std::sync::Arc;
use std::time::{Duration, Instant};

use relay_core::{Forward, MediaKind, VideoCodec};

/// A GOP that grew past these is cut into more than one fragment (memory stays bounded).
const MAX_GOP_BYTES: usize = 16 * 1024 * 1024;
const MAX_GOP_TIME: i64 = 10 * 90_000;
/// An audio-only stream is cut into fragments of this many 48 kHz ticks (2 s).
const AUDIO_ONLY_FRAGMENT: i64 = 2 * 48_000;
/// Audio with no video for this long (48 kHz ticks) is an audio-only recording.
const AUDIO_ONLY_AFTER: i64 = 3 * 48_000;

/// One video access unit: its presentation time (90 kHz from the recording's start) and what
/// the file takes of it (see [`VideoCodec::frame_units`]: NAL units, a VP9 frame, AV1 OBUs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    pub pts: i64,
    pub keyframe: bool,
    pub nals: Vec<Vec<u8>>,
}

/// One Opus packet and its time (48 kHz from the recording's start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    pub time: i64,
    pub data: Vec<u8>,
}

/// What one fragment holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gop {
    pub video: Vec<VideoFrame>,
    pub audio: Vec<AudioFrame>,
    /// The presentation time of the frame after the last one, when known (the keyframe that
    /// closed this GOP): the last frame's duration.
    pub next_video: Option<i64>,
}

impl Gop {
    /// Bytes of media held.
    pub fn bytes(&self) -> usize {
        let v: usize = self
            .video
            .iter()
            .flat_map(|f| &f.nals)
            .map(|n| n.len() + 4)
            .sum();
        v + self.audio.iter().map(|a| a.data.len()).sum::<usize>()
    }

    fn is_empty(&self) -> bool {
        self.video.is_empty() && self.audio.is_empty()
    }
}

/// An RTP timestamp made monotonic (32-bit wrap unfolded).
#[derive(Debug, Clone, Copy)]
struct Unwrap {
    last: u32,
    ext: i64,
}

impl Unwrap {
    fn new(ts: u32) -> Unwrap {
        Unwrap {
            last: ts,
            ext: i64::from(ts),
        }
    }

    fn at(&mut self, ts: u32) -> i64 {
        self.ext += i64::from(ts.wrapping_sub(self.last) as i32);
        self.last = ts;
        self.ext
    }
}

/// The frame being put together from packets of one timestamp.
#[derive(Debug, Default)]
struct Partial {
    ts: Option<u32>,
    keyframe: bool,
    payloads: Vec<Arc<[u8]>>,
}

/// Packets in, GOPs out.
#[derive(Debug, Default)]
pub struct Assembler {
    /// The video's codec: how a frame's payloads become its units.
    codec: VideoCodec,
    /// When the recording's time 0 was captured, and the video clock there.
    t0: Option<Instant>,
    video_clock: Option<(Unwrap, i64)>,
    audio_clock: Option<(Unwrap, i64)>,
    partial: Partial,
    last_video_seq: Option<u64>,
    /// A video packet was lost: frames wait for the next keyframe.
    broken: bool,
    audio_only: bool,
    gop: Gop,
    bytes: usize,
    /// Audio packets held before the first keyframe (to tell an audio-only stream).
    early_audio: Vec<(Instant, u32, Vec<u8>)>,
    /// Video frames left out (broken GOPs), for the log.
    pub frames_dropped: u64,
}

impl Assembler {
    /// An assembler of a stream whose video is in `codec`.
    pub fn new(codec: VideoCodec) -> Assembler {
        Assembler {
            codec,
            ..Assembler::default()
        }
    }

    /// Takes one packet; returns a GOP when one is complete.
    pub fn push(&mut self, f: &Forward) -> Option<Gop> {
        match f.kind {
            MediaKind::Video => self.video(f),
            MediaKind::Audio => self.audio(f),
        }
    }

    /// The stream ended: what is left.
    pub fn finish(&mut self) -> Option<Gop> {
        self.end_frame();
        let gop = std::mem::take(&mut self.gop);
        self.bytes = 0;
        (!gop.is_empty()).then_some(gop)
    }

    fn video(&mut self, f: &Forward) -> Option<Gop> {
        if self.audio_only {
            return None;
        }
        let gap = self.last_video_seq.is_some_and(|s| f.seq != s + 1);
        self.last_video_seq = Some(f.seq);
        let mut out = None;
        if gap {
            self.partial = Partial::default();
            self.broken = true;
            self.frames_dropped += 1;
        }
        if self.partial.ts.is_some_and(|ts| ts != f.timestamp) {
            out = self.end_frame();
        }
        if f.keyframe {
            out = self.start_gop(f).or(out);
        }
        if self.t0.is_none() || self.broken {
            return out;
        }
        if self.partial.ts.is_none() {
            self.partial.ts = Some(f.timestamp);
            self.partial.keyframe = f.keyframe;
        }
        self.partial.payloads.push(f.payload.clone());
        if f.marker {
            out = self.end_frame().or(out);
        }
        out
    }

    /// A keyframe begins: the GOP so far is complete.
    fn start_gop(&mut self, f: &Forward) -> Option<Gop> {
        self.broken = false;
        self.partial = Partial::default();
        let first = self.t0.is_none();
        if first {
            self.t0 = Some(f.wallclock);
            self.video_clock = Some((Unwrap::new(f.timestamp), i64::from(f.timestamp)));
            self.place_early_audio();
            return None;
        }
        let pts = self.video_pts(f.timestamp)?;
        let mut gop = std::mem::take(&mut self.gop);
        self.bytes = 0;
        gop.next_video = Some(pts);
        (!gop.is_empty()).then_some(gop)
    }

    fn video_pts(&mut self, ts: u32) -> Option<i64> {
        let (clock, base) = self.video_clock.as_mut()?;
        Some(clock.at(ts) - *base)
    }

    /// The frame being put together is complete (marker, or the next timestamp began).
    fn end_frame(&mut self) -> Option<Gop> {
        let p = std::mem::take(&mut self.partial);
        let ts = p.ts?;
        if self.broken {
            return None;
        }
        let pts = self.video_pts(ts)?;
        let nals = self.codec.frame_units(p.payloads.iter().map(|x| &x[..]));
        if nals.is_empty() {
            return None;
        }
        self.bytes += nals.iter().map(|n| n.len() + 4).sum::<usize>();
        self.gop.video.push(VideoFrame {
            pts,
            keyframe: p.keyframe,
            nals,
        });
        // A GOP too long to hold: cut here (the next fragment starts without a keyframe,
        // which MP4 allows).
        let start = self.gop.video.first().map_or(pts, |v| v.pts);
        if self.bytes > MAX_GOP_BYTES || pts - start > MAX_GOP_TIME {
            self.bytes = 0;
            let mut gop = std::mem::take(&mut self.gop);
            gop.next_video = None;
            return Some(gop);
        }
        None
    }

    fn audio(&mut self, f: &Forward) -> Option<Gop> {
        if self.t0.is_none() {
            // Before the first keyframe: held briefly, to tell an audio-only stream.
            if self.early_audio.len() < 1000 {
                self.early_audio
                    .push((f.wallclock, f.timestamp, f.payload.to_vec()));
            }
            let span = self
                .early_audio
                .first()
                .map(|(_, ts, _)| i64::from(f.timestamp.wrapping_sub(*ts) as i32));
            if span.is_some_and(|s| s >= AUDIO_ONLY_AFTER) {
                self.audio_only = true;
                self.t0 = self.early_audio.first().map(|(w, _, _)| *w);
                self.place_early_audio();
            }
            return None;
        }
        self.add_audio(f.wallclock, f.timestamp, f.payload.to_vec());
        if self.audio_only {
            let span = match (self.gop.audio.first(), self.gop.audio.last()) {
                (Some(a), Some(b)) => b.time - a.time,
                _ => 0,
            };
            if span >= AUDIO_ONLY_FRAGMENT {
                self.bytes = 0;
                return Some(std::mem::take(&mut self.gop));
            }
        }
        None
    }

    /// Audio held before time 0 was known: placed now, what came before time 0 dropped.
    fn place_early_audio(&mut self) {
        for (w, ts, data) in std::mem::take(&mut self.early_audio) {
            self.add_audio(w, ts, data);
        }
    }

    fn add_audio(&mut self, wallclock: Instant, ts: u32, data: Vec<u8>) {
        let Some(t0) = self.t0 else { return };
        if self.audio_clock.is_none() {
            // Where this packet sits against time 0, in 48 kHz ticks.
            let ahead = signed_ticks(wallclock, t0, 48_000);
            self.audio_clock = Some((Unwrap::new(ts), i64::from(ts) - ahead));
        }
        let Some((clock, base)) = self.audio_clock.as_mut() else {
            return;
        };
        let time = clock.at(ts) - *base;
        if time < 0 {
            return;
        }
        self.bytes += data.len();
        self.gop.audio.push(AudioFrame { time, data });
    }
}

/// `a - b` in ticks of `rate` Hz, signed.
fn signed_ticks(a: Instant, b: Instant, rate: u32) -> i64 {
    let (d, sign) = match a.checked_duration_since(b) {
        Some(d) => (d, 1),
        None => (b.saturating_duration_since(a), -1),
    };
    sign * ticks(d, rate)
}

fn ticks(d: Duration, rate: u32) -> i64 {
    i64::try_from(d.as_micros() * u128::from(rate) / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::ViewerId;

    fn fwd(kind: MediaKind, seq: u64, ts: u32, at: Instant, key: bool, marker: bool) -> Forward {
        let payload: Arc<[u8]> = match (kind, key) {
            (MediaKind::Video, true) => Arc::from(&[0x65u8, 1, 2][..]),
            (MediaKind::Video, false) => Arc::from(&[0x41u8, 3][..]),
            (MediaKind::Audio, _) => Arc::from(&[0xf8u8, 9][..]),
        };
        Forward {
            viewer: ViewerId(1),
            kind,
            seq,
            timestamp: ts,
            wallclock: at,
            marker,
            keyframe: key,
            cached: false,
            payload,
        }
    }

    /// 30 fps video with a keyframe every `gop` frames, and 20 ms audio that starts
    /// `audio_lead` ms before the video's capture time.
    fn feed(a: &mut Assembler, frames: u32, gop: u32, audio_lead_ms: u64) -> Vec<Gop> {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        let mut events: Vec<(Instant, Forward)> = Vec::new();
        for i in 0..frames {
            let at = t0 + Duration::from_micros(u64::from(i) * 33_333);
            let ts = 1_000_000u32.wrapping_add(i * 3000);
            let seq = 100 + u64::from(i);
            events.push((at, fwd(MediaKind::Video, seq, ts, at, i % gop == 0, true)));
        }
        let audio_start = t0 - Duration::from_millis(audio_lead_ms);
        for k in 0..(frames * 33 / 20) {
            let at = audio_start + Duration::from_millis(u64::from(k) * 20);
            let ts = (u32::MAX - 5000).wrapping_add(k * 960); // wraps
            events.push((
                at,
                fwd(MediaKind::Audio, u64::from(k), ts, at, false, false),
            ));
        }
        events.sort_by_key(|(at, _)| *at);
        for (_, f) in events {
            out.extend(a.push(&f));
        }
        out.extend(a.finish());
        out
    }

    #[test]
    fn gops_start_at_keyframes_and_audio_lines_up() {
        let mut a = Assembler::default();
        let gops = feed(&mut a, 90, 30, 100);
        assert_eq!(gops.len(), 3);
        for (i, g) in gops.iter().enumerate() {
            assert!(g.video[0].keyframe);
            assert_eq!(g.video.len(), 30);
            assert_eq!(g.video[0].pts, i as i64 * 90_000);
        }
        assert_eq!(gops[0].next_video, Some(90_000));
        assert_eq!(gops[2].next_video, None);
        // Audio captured before the first keyframe is not recorded; the first kept packet is
        // at the keyframe's capture time (within a packet), across the RTP timestamp wrap.
        let first_audio = gops[0].audio[0].time;
        assert!((0..960).contains(&first_audio), "{first_audio}");
        let times: Vec<i64> = gops.iter().flat_map(|g| &g.audio).map(|a| a.time).collect();
        assert!(times.windows(2).all(|w| w[1] - w[0] == 960));
    }

    #[test]
    fn a_lost_packet_drops_video_to_the_next_keyframe() {
        let mut a = Assembler::default();
        let t = Instant::now();
        let mut gops = Vec::new();
        let mut push = |f: Forward| gops.extend(a.push(&f));
        push(fwd(MediaKind::Video, 1, 0, t, true, true));
        push(fwd(MediaKind::Video, 2, 3000, t, false, true));
        // seq 3 lost
        push(fwd(MediaKind::Video, 4, 6000, t, false, true));
        push(fwd(MediaKind::Video, 5, 9000, t, false, true));
        push(fwd(MediaKind::Video, 6, 12000, t, true, true));
        push(fwd(MediaKind::Video, 7, 15000, t, false, true));
        gops.extend(a.finish());
        assert_eq!(gops.len(), 2);
        assert_eq!(gops[0].video.len(), 2);
        assert_eq!(gops[1].video.len(), 2);
        assert_eq!(gops[1].video[0].pts, 12000);
        assert_eq!(a.frames_dropped, 1);
    }

    #[test]
    fn audio_alone_is_recorded_in_two_second_fragments() {
        let mut a = Assembler::default();
        let t = Instant::now();
        let mut gops = Vec::new();
        for k in 0..500u32 {
            let at = t + Duration::from_millis(u64::from(k) * 20);
            gops.extend(a.push(&fwd(
                MediaKind::Audio,
                u64::from(k),
                k * 960,
                at,
                false,
                false,
            )));
        }
        gops.extend(a.finish());
        assert!(gops.iter().all(|g| g.video.is_empty()));
        let n: usize = gops.iter().map(|g| g.audio.len()).sum();
        assert_eq!(n, 500);
        assert_eq!(gops[0].audio[0].time, 0);
        assert!(gops.len() >= 4);
    }
}
