//! Shared harness for the relay tests: the fixtures packetized as the FTL client sends them, a
//! virtual clock, and a driver that collects every output per viewer.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ftl_proto::control::Metadata;
use ftl_proto::media::packetize::{access_units, packetize_nal, split_annexb, FTL_MAX_PAYLOAD};
use ftl_proto::media::{build_ping, MediaParams, RtpHeader, SenderReport};
use ftl_proto::{ChannelId, Ssrc};
use relay_core::*;

pub const VIDEO: &[u8] = include_bytes!("../data/video-320x180-30fps-4s.h264");
pub const AUDIO: &[u8] = include_bytes!("../data/audio-opus-48k-4s.ogg");
/// x264 High profile with its default 2 B-frames, and the same without (2 s, GOP 30).
pub const VIDEO_B_FRAMES: &[u8] = include_bytes!("../data/video-320x180-high-bframes-2s.h264");
pub const VIDEO_HIGH: &[u8] = include_bytes!("../data/video-320x180-high-no-bframes-2s.h264");
/// Simulcast layers: 160x90, 320x180 (`VIDEO`) and 640x360.
pub const VIDEO_SMALL: &[u8] = include_bytes!("../data/video-160x90-main-4s.h264");
pub const VIDEO_LARGE: &[u8] = include_bytes!("../data/video-640x360-30fps-4s.h264");

/// One datagram of a synthetic session, `at` after the session's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub at: Duration,
    pub bytes: Vec<u8>,
    pub kind: Option<MediaKind>,
    /// For media: the wire sequence number.
    pub seq: u16,
}

/// How to build a session.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub channel: u32,
    pub first_video_seq: u16,
    pub first_audio_seq: u16,
    pub first_video_ts: u32,
    pub first_audio_ts: u32,
    pub audio: bool,
    pub pings: bool,
    pub sender_reports: bool,
    /// Repeat the fixture this many times (timestamps continue).
    pub loops: u32,
    /// The H.264 Annex-B file (30 fps).
    pub video: &'static [u8],
}

impl Default for SessionSpec {
    fn default() -> Self {
        SessionSpec {
            channel: 77,
            first_video_seq: 0,
            first_audio_seq: 0,
            first_video_ts: 0,
            first_audio_ts: 0,
            audio: true,
            pings: true,
            sender_reports: true,
            loops: 1,
            video: VIDEO,
        }
    }
}

/// The Opus packets of the fixture (Ogg header packets skipped).
pub fn opus_packets() -> Vec<Vec<u8>> {
    let mut r = ogg::PacketReader::new(std::io::Cursor::new(AUDIO));
    let mut out = Vec::new();
    while let Some(p) = r.read_packet().unwrap() {
        if p.data.starts_with(b"OpusHead") || p.data.starts_with(b"OpusTags") {
            continue;
        }
        out.push(p.data);
    }
    out
}

/// A video fixture as RTP payload lists, one list per frame.
pub fn video_frames(video: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let nals = split_annexb(video);
    access_units(&nals)
        .iter()
        .map(|au| {
            let mut payloads = Vec::new();
            for nal in au {
                packetize_nal(nal, FTL_MAX_PAYLOAD, &mut payloads);
            }
            payloads
        })
        .collect()
}

/// Builds the datagrams an FTL client sends for the fixtures, in send order.
pub fn session(spec: &SessionSpec) -> Vec<Sent> {
    let video_ssrc = Ssrc(spec.channel + 1);
    let audio_ssrc = Ssrc(spec.channel);
    let mut out = Vec::new();
    let frames = video_frames(spec.video);
    let mut vseq = spec.first_video_seq;
    let frame_count = frames.len() as u32;
    for lap in 0..spec.loops {
        for (i, frame) in frames.iter().enumerate() {
            let n = lap * frame_count + i as u32;
            let at = Duration::from_micros(u64::from(n) * 1_000_000 / 30);
            let ts = spec.first_video_ts.wrapping_add(n * 3000);
            for (j, p) in frame.iter().enumerate() {
                let h = RtpHeader {
                    marker: j + 1 == frame.len(),
                    payload_type: 96,
                    sequence_number: vseq,
                    timestamp: ts,
                    ssrc: video_ssrc,
                };
                out.push(Sent {
                    at,
                    bytes: h.build(p),
                    kind: Some(MediaKind::Video),
                    seq: vseq,
                });
                vseq = vseq.wrapping_add(1);
            }
        }
    }
    let total = Duration::from_micros(u64::from(frame_count * spec.loops) * 1_000_000 / 30);
    if spec.audio {
        let packets = opus_packets();
        let mut aseq = spec.first_audio_seq;
        let mut n = 0u32;
        'laps: for _ in 0..spec.loops {
            for p in &packets {
                // Audio starts a frame after video, as a real client's would.
                let at = Duration::from_millis(u64::from(n) * 20 + 5);
                if at >= total {
                    break 'laps;
                }
                let h = RtpHeader {
                    marker: false,
                    payload_type: 97,
                    sequence_number: aseq,
                    timestamp: spec.first_audio_ts.wrapping_add(n * 960),
                    ssrc: audio_ssrc,
                };
                out.push(Sent {
                    at,
                    bytes: h.build(p),
                    kind: Some(MediaKind::Audio),
                    seq: aseq,
                });
                aseq = aseq.wrapping_add(1);
                n += 1;
            }
        }
    }
    let mut t = Duration::ZERO;
    while t < total {
        if spec.pings {
            out.push(Sent {
                at: t + Duration::from_millis(1),
                bytes: build_ping(t.as_micros() as u64).to_vec(),
                kind: None,
                seq: 0,
            });
        }
        if spec.sender_reports && t.as_millis() % 1000 == 0 {
            let ntp = (3_900_000_000u64 << 32) + ((t.as_micros() as u64) << 32) / 1_000_000;
            for (ssrc, rtp) in [
                (
                    video_ssrc,
                    spec.first_video_ts
                        .wrapping_add((t.as_micros() * 90 / 1000) as u32),
                ),
                (
                    audio_ssrc,
                    spec.first_audio_ts
                        .wrapping_add((t.as_micros() * 48 / 1000) as u32),
                ),
            ] {
                let sr = SenderReport {
                    ssrc,
                    ntp,
                    rtp_timestamp: rtp,
                    packet_count: 0,
                    octet_count: 0,
                };
                out.push(Sent {
                    at: t + Duration::from_millis(2),
                    bytes: sr.build().to_vec(),
                    kind: None,
                    seq: 0,
                });
            }
        }
        t += Duration::from_millis(25);
    }
    out.sort_by_key(|s| s.at);
    out
}

pub fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

pub fn params(channel: u32) -> StreamParams {
    StreamParams::Ftl {
        media: MediaParams::from_metadata(&Metadata::reference(channel)),
        peer_ip: peer().ip(),
    }
}

/// A relay on a virtual clock with everything it put out, sorted by kind.
pub struct Harness {
    pub relay: Relay,
    pub t0: Instant,
    pub now: Instant,
    pub forwards: BTreeMap<ViewerId, Vec<Forward>>,
    pub transmits: Vec<(Duration, ChannelId, SocketAddr, Vec<u8>)>,
    pub events: Vec<(Duration, Event)>,
    pub ingests: Vec<Ingest>,
    /// Keyframes asked of the encoder: when, of which channel, of which layer.
    pub keyframe_requests: Vec<(Duration, ChannelId, LayerId)>,
}

impl Harness {
    pub fn new(config: RelayConfig) -> Self {
        let t0 = Instant::now();
        Harness {
            relay: Relay::new(config),
            t0,
            now: t0,
            forwards: BTreeMap::new(),
            transmits: Vec::new(),
            events: Vec::new(),
            ingests: Vec::new(),
            keyframe_requests: Vec::new(),
        }
    }

    pub fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    /// Moves the clock to `t0 + d`, running every timeout due on the way.
    pub fn advance_to(&mut self, d: Duration) {
        let target = self.t0 + d;
        // Bounded: each round runs a due timeout or stops.
        for _ in 0..100_000 {
            match self.relay.poll_timeout() {
                Some(t) if t <= target => {
                    self.now = t.max(self.now);
                    self.relay.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = target.max(self.now);
    }

    pub fn feed(&mut self, channel: u32, from: SocketAddr, bytes: &[u8], at: Duration) -> Ingest {
        self.advance_to(at);
        let r = self
            .relay
            .handle_datagram(ChannelId(channel), from, bytes, self.now);
        self.ingests.push(r.clone());
        self.drain();
        r
    }

    pub fn start(&mut self, channel: u32) {
        self.relay
            .start_stream(ChannelId(channel), params(channel), self.now)
            .unwrap();
        self.drain();
    }

    /// Starts a stream fed by a WebRTC peer (H.264 and Opus).
    pub fn start_rtp(&mut self, channel: u32) {
        let params = StreamParams::Rtp {
            video: Some(VideoCodec::H264),
            audio: true,
        };
        self.relay
            .start_stream(ChannelId(channel), params, self.now)
            .unwrap();
        self.drain();
    }

    /// Feeds a session's media datagram as a WebRTC peer hands it over (parsed RTP, shared
    /// payload); pings and sender reports are FTL's and are skipped (`None`).
    pub fn feed_rtp(&mut self, channel: u32, sent: &Sent) -> Option<Ingest> {
        self.feed_rtp_layer(channel, LayerId(0), sent)
    }

    /// [`Harness::feed_rtp`] as one video layer of a simulcast.
    pub fn feed_rtp_layer(&mut self, channel: u32, layer: LayerId, sent: &Sent) -> Option<Ingest> {
        let kind = sent.kind?;
        let rtp = ftl_proto::media::RtpPacket::parse(&sent.bytes).unwrap();
        let input = RtpIn {
            kind,
            layer,
            seq: rtp.sequence_number(),
            timestamp: rtp.timestamp(),
            marker: rtp.marker(),
            payload: rtp.payload().into(),
        };
        self.advance_to(sent.at);
        let r = self.relay.handle_rtp(ChannelId(channel), input, self.now);
        self.ingests.push(r.clone());
        self.drain();
        Some(r)
    }

    pub fn join(&mut self, channel: u32) -> ViewerId {
        let v = self.relay.add_viewer(ChannelId(channel), self.now).unwrap();
        self.forwards.entry(v).or_default();
        self.drain();
        v
    }

    pub fn drain(&mut self) {
        while let Some(o) = self.relay.poll_output() {
            let at = self.now.duration_since(self.t0);
            match o {
                Output::Forward(f) => self.forwards.entry(f.viewer).or_default().push(f),
                Output::Transmit { channel, to, bytes } => {
                    self.transmits.push((at, channel, to, bytes))
                }
                Output::Event(e) => self.events.push((at, e)),
                Output::RequestKeyframe { channel, layer } => {
                    self.keyframe_requests.push((at, channel, layer))
                }
            }
        }
    }

    /// The video forwards of a viewer.
    pub fn video(&self, v: ViewerId) -> Vec<&Forward> {
        self.forwards[&v]
            .iter()
            .filter(|f| f.kind == MediaKind::Video)
            .collect()
    }

    pub fn audio(&self, v: ViewerId) -> Vec<&Forward> {
        self.forwards[&v]
            .iter()
            .filter(|f| f.kind == MediaKind::Audio)
            .collect()
    }

    /// NACKed wire sequence numbers, per media SSRC, in send order.
    pub fn nacked(&self) -> Vec<(Ssrc, u16)> {
        self.transmits
            .iter()
            .filter_map(|(_, _, _, b)| ftl_proto::media::Nack::parse(b).ok())
            .flat_map(|n| n.lost().map(move |s| (n.media_ssrc, s)).collect::<Vec<_>>())
            .collect()
    }
}

/// The video payloads of a session from the `k`-th keyframe (0-based) on.
pub fn video_payloads_from_keyframe(sent: &[Sent], k: usize) -> Vec<Vec<u8>> {
    let video: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.kind == Some(MediaKind::Video))
        .collect();
    let starts: Vec<usize> = video
        .iter()
        .enumerate()
        .filter(|(_, s)| s.bytes[12] & 0x1f == 7)
        .map(|(i, _)| i)
        .collect();
    video[starts[k]..]
        .iter()
        .map(|s| s.bytes[12..].to_vec())
        .collect()
}
