//! One live stream's ingest: validating datagrams, ordering, loss tracking, keyframes, the GOP
//! cache and A/V timing. What survives becomes a [`Packet`] for the fan-out.
//!
//! A stream's media comes from one of two sources ([`StreamParams`]):
//! - **FTL**: raw RTP datagrams from the client's address on the stream's media port. The relay
//!   checks the peer, echoes pings, reads sender reports and NACKs gaps itself.
//! - **RTP from a WebRTC peer** (a WHIP publisher, an edge's pull of an origin): packets that the
//!   peer's stack already decrypted and repaired (NACK/RTX happen there). The relay only orders
//!   them, and it can ask the encoder for a keyframe ([`Output::RequestKeyframe`]), which FTL
//!   cannot.
//!
//! Everything after that (keyframes through the codec seam, the GOP cache, fan-out, stats) is
//! the same for both.
//!
//! **Video layers.** A WebRTC publisher may send simulcast: the same picture at up to
//! [`MAX_LAYERS`] sizes, each its own RTP stream. Each is a [`VideoLayer`] here, with its own
//! sequence space, loss tracking, keyframes, format and GOP cache, so a viewer can start on and
//! switch to any of them (see [`crate::layers`]); all share the stream's audio and clock
//! anchor. A stream without simulcast (all of FTL) has the one layer 0.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ftl_proto::media::{classify, MediaDatagram, MediaParams, Nack};
use ftl_proto::{ChannelId, Ssrc};
use log::{debug, info};

use crate::clock::{NtpAnchor, TrackClock};
use crate::codec::VideoCodec;
use crate::config::{NackConfig, RelayConfig};
use crate::gop::GopCache;
use crate::layers::{LayerId, MAX_LAYERS};
use crate::nack::{Arrival, LossTracker};
use crate::packet::Packet;
use crate::seq::{Extended, ReceivedWindow, SeqTracker};
use crate::stats::{LayerStats, RateMeter, StreamCounters, StreamStats};
use crate::types::{Drop, Event, Ingest, MediaKind, Output};

/// The largest Opus packet (RFC 6716 §3.4, R5). OBS's speed-test payloads are 1392 bytes.
pub const MAX_OPUS_PACKET: usize = 1275;

/// What a stream is started with: where its media comes from.
#[derive(Debug, Clone)]
pub enum StreamParams {
    /// An FTL session: datagrams from the client on the stream's media port, fed with
    /// [`crate::Relay::handle_datagram`].
    Ftl {
        /// The negotiated payload types and SSRCs.
        media: MediaParams,
        /// The control connection's peer: media is accepted only from this address.
        peer_ip: IpAddr,
    },
    /// RTP already decrypted and repaired by a WebRTC peer, fed with
    /// [`crate::Relay::handle_rtp`]. The encoder can be asked for keyframes.
    Rtp {
        /// The video track's codec, if there is video.
        video: Option<VideoCodec>,
        /// Whether there is an Opus audio track.
        audio: bool,
    },
}

impl StreamParams {
    /// Whether the stream has a video and an audio track.
    fn tracks(&self) -> (bool, bool) {
        match self {
            StreamParams::Ftl { media, .. } => (media.video.is_some(), media.audio.is_some()),
            StreamParams::Rtp { video, audio } => (video.is_some(), *audio),
        }
    }

    pub(crate) fn has_tracks(&self) -> bool {
        let (v, a) = self.tracks();
        v || a
    }

    /// The source kind's name, for logs.
    pub fn source_name(&self) -> &'static str {
        match self {
            StreamParams::Ftl { .. } => "FTL",
            StreamParams::Rtp { .. } => "RTP",
        }
    }
}

/// One RTP packet from a WebRTC peer (see [`StreamParams::Rtp`]).
#[derive(Debug, Clone)]
pub struct RtpIn {
    pub kind: MediaKind,
    /// The video layer (simulcast), 0 without; ignored for audio.
    pub layer: LayerId,
    /// The wire sequence number (16 bits; the relay extends it).
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    /// The payload, shared as it is with the GOP cache and every viewer.
    pub payload: Arc<[u8]>,
}

/// Per-track ingest state.
#[derive(Debug, Clone)]
struct Track {
    ssrc: Ssrc,
    seq: SeqTracker,
    received: ReceivedWindow,
    loss: LossTracker,
    clock: TrackClock,
    meter: RateMeter,
}

impl Track {
    fn new(ssrc: Ssrc, rate: u32) -> Self {
        Track {
            ssrc,
            seq: SeqTracker::default(),
            received: ReceivedWindow::default(),
            loss: LossTracker::default(),
            clock: TrackClock::new(rate),
            meter: RateMeter::default(),
        }
    }
}

/// A layer without a packet for this long is taken as stopped (a browser stops sending its
/// upper layers when its bandwidth estimate falls): its viewers move to one that is sending.
pub(crate) const LAYER_IDLE: Duration = Duration::from_millis(1000);

/// One video layer: its own RTP stream from the source, so its own sequence space, loss
/// tracking, keyframes, format and GOP cache.
#[derive(Debug)]
pub(crate) struct VideoLayer {
    pub(crate) id: LayerId,
    track: Track,
    pub(crate) gop: GopCache,
    last_keyframe: Option<(u32, Instant)>,
    keyframe_interval: Option<Duration>,
    format: Option<(u32, u32, String)>,
    /// A keyframe is wanted from the encoder (only for sources that can be asked).
    keyframe_wanted: bool,
    last_keyframe_request: Option<Instant>,
    last_packet: Option<Instant>,
}

impl VideoLayer {
    fn new(id: LayerId, ssrc: Ssrc, (max_bytes, max_duration): (usize, Duration)) -> Self {
        VideoLayer {
            id,
            track: Track::new(ssrc, 90_000),
            gop: GopCache::new(max_bytes, max_duration),
            last_keyframe: None,
            keyframe_interval: None,
            format: None,
            keyframe_wanted: false,
            last_keyframe_request: None,
            last_packet: None,
        }
    }

    /// Whether the layer is sending.
    pub(crate) fn active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }

    /// Its bits per second over the last full second.
    pub(crate) fn bitrate(&self, now: Instant) -> u64 {
        self.track.meter.rates(now).bits_per_second as u64
    }

    fn pixels(&self) -> u64 {
        self.format
            .as_ref()
            .map_or(0, |f| u64::from(f.0) * u64::from(f.1))
    }
}

/// How a packet's sequence number placed it.
enum Placed {
    New { ext: u64, recovered: bool },
    Rejected(Drop),
}

/// One RTP packet's fields, whichever source it came from.
struct MediaIn<'a> {
    layer: LayerId,
    seq: u16,
    ts: u32,
    marker: bool,
    payload: Payload<'a>,
}

/// A payload as a source hands it over: FTL's still in the receive buffer (copied once, only if
/// the packet is kept), a WebRTC peer's already shared.
enum Payload<'a> {
    Borrowed(&'a [u8]),
    Shared(Arc<[u8]>),
}

impl Payload<'_> {
    fn len(&self) -> usize {
        match self {
            Payload::Borrowed(b) => b.len(),
            Payload::Shared(a) => a.len(),
        }
    }

    fn into_shared(self) -> Arc<[u8]> {
        match self {
            Payload::Borrowed(b) => Arc::from(b),
            Payload::Shared(a) => a,
        }
    }
}

/// One live stream.
#[derive(Debug)]
pub(crate) struct Stream {
    channel: ChannelId,
    params: StreamParams,
    started_at: Instant,
    last_media: Instant,
    /// Where the client sends from, once it sent a valid datagram (media, ping or sender
    /// report): the stream's one source from then on. NACKs go here.
    ingest_addr: Option<SocketAddr>,
    /// A source that may never become this stream's (an ended session's, on the same port).
    refused_source: Option<SocketAddr>,
    /// Video layers, in the order they first sent (layer 0 first, made at the start).
    pub(crate) layers: Vec<VideoLayer>,
    /// The layers' ids from the smallest picture to the largest (ties: by id).
    ranked: Vec<LayerId>,
    audio: Option<Track>,
    anchor: NtpAnchor,
    pub(crate) counters: StreamCounters,
    nack: NackConfig,
    media_timeout: Duration,
    codec: VideoCodec,
    /// Whether the stream's video has shown a bi-predicted frame.
    b_frames: bool,
    keyframe_request_interval: Duration,
    /// The GOP cache's bounds, for layers made later.
    gop_limits: (usize, Duration),
}

impl Stream {
    pub(crate) fn new(
        channel: ChannelId,
        params: StreamParams,
        config: &RelayConfig,
        now: Instant,
    ) -> Self {
        let (video, audio, codec) = match &params {
            StreamParams::Ftl { media, .. } => (
                media.video.map(|t| t.ssrc),
                media.audio.map(|t| t.ssrc),
                VideoCodec::H264,
            ),
            // The peer's stack knows the SSRCs; the relay only needs the tracks.
            StreamParams::Rtp { video, audio } => (
                video.map(|_| Ssrc(0)),
                audio.then_some(Ssrc(0)),
                video.unwrap_or_default(),
            ),
        };
        let layers: Vec<VideoLayer> = video
            .map(|ssrc| {
                VideoLayer::new(
                    LayerId(0),
                    ssrc,
                    (config.gop_max_bytes, config.gop_max_duration),
                )
            })
            .into_iter()
            .collect();
        let ranked = layers.iter().map(|l| l.id).collect();
        Stream {
            channel,
            layers,
            ranked,
            audio: audio.map(|ssrc| Track::new(ssrc, 48_000)),
            params,
            codec,
            b_frames: false,
            keyframe_request_interval: config.upstream_keyframe_interval,
            gop_limits: (config.gop_max_bytes, config.gop_max_duration),
            started_at: now,
            last_media: now,
            ingest_addr: None,
            refused_source: None,
            anchor: NtpAnchor::default(),
            counters: StreamCounters::default(),
            nack: config.nack.clone(),
            media_timeout: config.media_timeout,
        }
    }

    /// Takes one datagram from the media port. Pings are echoed into `out`; media comes back
    /// as a packet to fan out.
    pub(crate) fn ingest(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        out: &mut VecDeque<Output>,
    ) -> (Ingest, Option<(MediaKind, Packet)>) {
        let StreamParams::Ftl { media, peer_ip } = &self.params else {
            self.counters.dropped_foreign_source += 1;
            return (Ingest::Dropped(Drop::ForeignSource), None);
        };
        // The session's media comes from one source: the control connection's address, and the
        // first port of it that sent something valid (a stray sender of an ended session, or a
        // second client behind the same address, is dropped and counted).
        let other = self.ingest_addr.is_some_and(|a| a != from);
        if from.ip() != *peer_ip || other || self.refused_source == Some(from) {
            self.counters.dropped_foreign_source += 1;
            return (Ingest::Dropped(Drop::ForeignSource), None);
        }
        let (kind, rtp) = match classify(datagram, media) {
            MediaDatagram::Video(rtp) => (MediaKind::Video, rtp),
            MediaDatagram::Audio(rtp) => (MediaKind::Audio, rtp),
            MediaDatagram::Ping(p) => {
                self.counters.pings += 1;
                self.ingest_addr = Some(from);
                out.push_back(Output::Transmit {
                    channel: self.channel,
                    to: from,
                    bytes: p.echo().to_vec(),
                });
                return (Ingest::Ping, None);
            }
            MediaDatagram::SenderReport(sr) => {
                self.counters.sender_reports += 1;
                self.ingest_addr = Some(from);
                let at = self.anchor.instant(sr.ntp, now);
                let video = self.layers.first_mut().map(|l| &mut l.track);
                for t in [video, self.audio.as_mut()].into_iter().flatten() {
                    if t.ssrc == sr.ssrc {
                        t.clock.on_report(sr.rtp_timestamp, at);
                    }
                }
                return (Ingest::SenderReport, None);
            }
            MediaDatagram::Foreign { .. } => {
                self.counters.dropped_foreign_ssrc += 1;
                return (Ingest::Dropped(Drop::ForeignSsrc), None);
            }
            MediaDatagram::Invalid(e) => {
                self.counters.dropped_invalid += 1;
                return (Ingest::Dropped(Drop::Invalid(e)), None);
            }
        };
        self.ingest_addr = Some(from);
        let m = MediaIn {
            layer: LayerId(0),
            seq: rtp.sequence_number(),
            ts: rtp.timestamp(),
            marker: rtp.marker(),
            payload: Payload::Borrowed(rtp.payload()),
        };
        self.on_media(kind, m, now, out)
    }

    /// The FTL source, once bound.
    pub(crate) fn source(&self) -> Option<SocketAddr> {
        self.ingest_addr
    }

    /// See [`crate::Relay::refuse_source`].
    pub(crate) fn refuse_source(&mut self, from: SocketAddr) {
        if self.ingest_addr != Some(from) {
            self.refused_source = Some(from);
        }
    }

    /// Takes one RTP packet from a WebRTC peer.
    pub(crate) fn ingest_rtp(
        &mut self,
        rtp: RtpIn,
        now: Instant,
        out: &mut VecDeque<Output>,
    ) -> (Ingest, Option<(MediaKind, Packet)>) {
        if !matches!(self.params, StreamParams::Rtp { .. }) {
            self.counters.dropped_foreign_source += 1;
            return (Ingest::Dropped(Drop::ForeignSource), None);
        }
        let m = MediaIn {
            layer: rtp.layer,
            seq: rtp.seq,
            ts: rtp.timestamp,
            marker: rtp.marker,
            payload: Payload::Shared(rtp.payload),
        };
        self.on_media(rtp.kind, m, now, out)
    }

    /// A sender report from a WebRTC peer's track: `rtp_ts` was captured at NTP time `ntp`.
    pub(crate) fn sender_report(
        &mut self,
        kind: MediaKind,
        layer: LayerId,
        ntp: u64,
        rtp_ts: u32,
        now: Instant,
    ) {
        let at = self.anchor.instant(ntp, now);
        let track = match kind {
            MediaKind::Video => self
                .layers
                .iter_mut()
                .find(|l| l.id == layer)
                .map(|l| &mut l.track),
            MediaKind::Audio => self.audio.as_mut(),
        };
        if let Some(t) = track {
            self.counters.sender_reports += 1;
            t.clock.on_report(rtp_ts, at);
        }
    }

    fn on_media(
        &mut self,
        kind: MediaKind,
        m: MediaIn<'_>,
        now: Instant,
        out: &mut VecDeque<Output>,
    ) -> (Ingest, Option<(MediaKind, Packet)>) {
        let ftl = matches!(self.params, StreamParams::Ftl { .. });
        if kind == MediaKind::Audio
            && ((ftl && !self.layers.is_empty() && !self.seen_video())
                || m.payload.len() > MAX_OPUS_PACKET)
        {
            // OBS's speed test: garbage on the audio SSRC before the stream proper. Never
            // forwarded, never NACKed, and it does not count as the stream being alive. (Over
            // WebRTC audio may well come first; only the size rule applies there.)
            self.counters.dropped_speed_test += 1;
            return (Ingest::Dropped(Drop::SpeedTest), None);
        }
        let layer = match kind {
            MediaKind::Video => match self.layer_index_or_new(m.layer) {
                Some(i) => i,
                None => {
                    self.counters.dropped_extra_layer += 1;
                    return (Ingest::Dropped(Drop::ExtraLayer), None);
                }
            },
            MediaKind::Audio => 0,
        };
        self.last_media = now;
        let (ext, recovered) = match self.place(kind, layer, m.seq, now) {
            Placed::New { ext, recovered } => (ext, recovered),
            Placed::Rejected(d) => return (Ingest::Dropped(d), None),
        };
        let MediaIn {
            ts,
            marker,
            payload,
            ..
        } = m;
        let payload = payload.into_shared();
        let track = match kind {
            MediaKind::Video => self.layers.get_mut(layer).map(|l| {
                l.last_packet = Some(now);
                &mut l.track
            }),
            MediaKind::Audio => self.audio.as_mut(),
        };
        let Some(track) = track else {
            return (Ingest::Dropped(Drop::ForeignSsrc), None);
        };
        track.clock.on_packet(ts, now);
        track.meter.add(payload.len(), marker, now);
        let wallclock = track.clock.wallclock(ts, now);
        self.counters.bytes += payload.len() as u64;
        let mut pkt = Packet {
            layer: self.layers.get(layer).map_or(LayerId(0), |l| l.id),
            ext,
            ts,
            marker,
            keyframe: false,
            wallclock,
            payload,
        };
        match kind {
            MediaKind::Audio => self.counters.audio_packets += 1,
            MediaKind::Video => {
                self.counters.video_packets += 1;
                self.counters.frames += u64::from(marker);
                self.on_video(layer, &mut pkt, now, out);
            }
        }
        let ingest = if recovered {
            Ingest::Recovered(kind)
        } else {
            Ingest::Media(kind)
        };
        (ingest, Some((kind, pkt)))
    }

    /// The index of layer `id`, made if the stream has room for another (a WebRTC peer's
    /// simulcast; FTL's one layer is made at the start).
    fn layer_index_or_new(&mut self, id: LayerId) -> Option<usize> {
        if let Some(i) = self.layers.iter().position(|l| l.id == id) {
            return Some(i);
        }
        if !matches!(self.params, StreamParams::Rtp { video: Some(_), .. })
            || self.layers.len() >= MAX_LAYERS
        {
            return None;
        }
        info!("channel {}: video layer {id} started", self.channel);
        self.layers
            .push(VideoLayer::new(id, Ssrc(0), self.gop_limits));
        self.rerank();
        Some(self.layers.len() - 1)
    }

    pub(crate) fn layer(&self, id: LayerId) -> Option<&VideoLayer> {
        self.layers.iter().find(|l| l.id == id)
    }

    fn layer_mut(&mut self, id: LayerId) -> Option<&mut VideoLayer> {
        self.layers.iter_mut().find(|l| l.id == id)
    }

    /// Whether any video has been accepted yet.
    fn seen_video(&self) -> bool {
        self.layers.iter().any(|l| l.last_packet.is_some())
    }

    /// The layers from the smallest picture to the largest.
    pub(crate) fn ranked(&self) -> &[LayerId] {
        &self.ranked
    }

    /// The layer with the largest picture (what recordings and edges take).
    pub(crate) fn top(&self) -> Option<LayerId> {
        self.ranked.last().copied()
    }

    fn rerank(&mut self) {
        let mut ranked: Vec<(u64, LayerId)> =
            self.layers.iter().map(|l| (l.pixels(), l.id)).collect();
        ranked.sort_unstable();
        self.ranked = ranked.into_iter().map(|(_, id)| id).collect();
    }

    /// Keyframe detection, format changes, B-frames and the GOP cache of the layer at `index`.
    fn on_video(
        &mut self,
        index: usize,
        pkt: &mut Packet,
        now: Instant,
        out: &mut VecDeque<Output>,
    ) {
        let Some(layer) = self.layers.get_mut(index) else {
            return;
        };
        let Some(info) = self.codec.inspect(&pkt.payload) else {
            // Forwarded as it is (the decoder judges); it just never starts a keyframe.
            layer.gop.insert(pkt, now);
            self.flush_keyframe_request(now, out);
            return;
        };
        if info.bidirectional && !self.b_frames {
            self.b_frames = true;
            info!(
                "channel {}: the encoder sends B-frames, which browsers play as a stutter; \
                 turn them off (OBS: x264 option bframes=0, or \"Max B-frames\" 0)",
                self.channel
            );
            out.push_back(Output::Event(Event::BFrames {
                channel: self.channel,
            }));
        }
        let newest = layer.track.seq.highest() == Some(pkt.ext);
        let new_frame = layer.last_keyframe.is_none_or(|(ts, _)| ts != pkt.ts);
        // Only the newest packet can open a GOP: a late keyframe packet belongs to an old one.
        if info.starts_keyframe && new_frame && newest {
            pkt.keyframe = true;
            layer.keyframe_wanted = false;
            self.counters.keyframes += 1;
            if let Some((_, at)) = layer.last_keyframe {
                layer.keyframe_interval = Some(now.saturating_duration_since(at));
            }
            layer.last_keyframe = Some((pkt.ts, now));
            let overflows = layer.gop.overflows;
            layer.gop.start(pkt, now);
            self.counters.gop_overflows += layer.gop.overflows - overflows;
        } else {
            let overflows = layer.gop.overflows;
            layer.gop.insert(pkt, now);
            if layer.gop.overflows > overflows {
                self.counters.gop_overflows += 1;
                debug!("channel {}: GOP outgrew the cache", self.channel);
            }
        }
        if let Some(f) = info.format {
            self.note_format(index, (f.width, f.height, f.profile), out);
        }
        self.flush_keyframe_request(now, out);
    }

    /// Asks the encoder for a keyframe of every layer, if the source can be asked: now, or as
    /// soon as the rate limit allows, and again every interval until one arrives.
    pub(crate) fn want_keyframe(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        if self.keyframes_on_demand() {
            for l in &mut self.layers {
                l.keyframe_wanted = true;
            }
            self.flush_keyframe_request(now, out);
        }
    }

    /// [`Stream::want_keyframe`] for one layer.
    pub(crate) fn want_keyframe_of(
        &mut self,
        layer: LayerId,
        now: Instant,
        out: &mut VecDeque<Output>,
    ) {
        if self.keyframes_on_demand() {
            if let Some(l) = self.layer_mut(layer) {
                l.keyframe_wanted = true;
            }
            self.flush_keyframe_request(now, out);
        }
    }

    /// Asks the encoder for a keyframe of the top layer if its latest is older than
    /// `older_than` (see [`crate::Relay::refresh_keyframe`]); whether one was asked for.
    pub(crate) fn refresh_keyframe(
        &mut self,
        older_than: Duration,
        now: Instant,
        out: &mut VecDeque<Output>,
    ) -> bool {
        let Some(top) = self.top() else {
            return false;
        };
        let fresh = self.layer(top).is_some_and(|l| {
            l.last_keyframe
                .is_some_and(|(_, at)| now.saturating_duration_since(at) < older_than)
        });
        if fresh || !self.keyframes_on_demand() {
            return false;
        }
        self.want_keyframe_of(top, now, out);
        true
    }

    /// Whether the encoder can be asked for keyframes.
    pub(crate) fn keyframes_on_demand(&self) -> bool {
        matches!(self.params, StreamParams::Rtp { video: Some(_), .. })
    }

    /// When the next keyframe request of `layer` may go out, if one is wanted. Waits for the
    /// layer's first packet: before it there is no video stream upstream to ask.
    fn keyframe_request_due(&self, layer: &VideoLayer) -> Option<Instant> {
        if !layer.keyframe_wanted || layer.last_packet.is_none() {
            return None;
        }
        Some(
            layer
                .last_keyframe_request
                .map_or(self.started_at, |t| t + self.keyframe_request_interval),
        )
    }

    fn flush_keyframe_request(&mut self, now: Instant, out: &mut VecDeque<Output>) {
        for i in 0..self.layers.len() {
            let due = self
                .layers
                .get(i)
                .and_then(|l| self.keyframe_request_due(l))
                .is_some_and(|t| t <= now);
            let Some(l) = self.layers.get_mut(i).filter(|_| due) else {
                continue;
            };
            l.last_keyframe_request = Some(now);
            self.counters.keyframe_requests += 1;
            out.push_back(Output::RequestKeyframe {
                channel: self.channel,
                layer: l.id,
            });
        }
    }

    fn note_format(
        &mut self,
        index: usize,
        format: (u32, u32, String),
        out: &mut VecDeque<Output>,
    ) {
        let Some(l) = self.layers.get_mut(index) else {
            return;
        };
        if l.format.as_ref() != Some(&format) {
            out.push_back(Output::Event(Event::VideoFormat {
                channel: self.channel,
                layer: l.id,
                width: format.0,
                height: format.1,
                codec: self.codec,
                profile: format.2.clone(),
            }));
            let resized = l.format.as_ref().map(|f| (f.0, f.1)) != Some((format.0, format.1));
            l.format = Some(format);
            if resized {
                self.rerank();
            }
        }
    }

    /// Extends the sequence number, detects duplicates and gaps.
    fn place(&mut self, kind: MediaKind, layer: usize, seq: u16, now: Instant) -> Placed {
        let repairs = &matches!(self.params, StreamParams::Ftl { .. });
        let Self {
            layers,
            audio,
            counters: c,
            nack,
            ..
        } = self;
        let Some(t) = (match kind {
            MediaKind::Video => layers.get_mut(layer).map(|l| &mut l.track),
            MediaKind::Audio => audio.as_mut(),
        }) else {
            return Placed::Rejected(Drop::ForeignSsrc);
        };
        match t.seq.extend(seq) {
            Extended::Ahead { ext, gap } => {
                if gap > 0 {
                    c.missing += gap;
                    // A WebRTC peer repairs loss itself; only FTL gaps are tracked and NACKed.
                    if *repairs {
                        c.lost += t.loss.on_gap(ext - gap, gap, now, nack);
                    }
                }
                t.received.insert(ext);
                Placed::New {
                    ext,
                    recovered: false,
                }
            }
            Extended::Behind { ext } => {
                if !t.received.insert(ext) {
                    c.duplicates += 1;
                    return Placed::Rejected(Drop::Duplicate);
                }
                let recovered = match t.loss.on_arrival(ext) {
                    Arrival::Recovered => {
                        c.recovered += 1;
                        true
                    }
                    Arrival::Reordered => {
                        c.reordered += 1;
                        false
                    }
                    Arrival::Expected => false,
                };
                Placed::New { ext, recovered }
            }
            Extended::Restarted { ext } => {
                c.sequence_restarts += 1;
                c.lost += t.loss.clear();
                t.received.reset();
                t.received.insert(ext);
                Placed::New {
                    ext,
                    recovered: false,
                }
            }
            Extended::Probation => {
                c.dropped_sequence_jump += 1;
                Placed::Rejected(Drop::SequenceJump)
            }
            Extended::TooOld => {
                c.dropped_too_old += 1;
                Placed::Rejected(Drop::TooOld)
            }
        }
    }

    /// Sends due NACKs and keyframe requests. Returns whether the stream timed out (no media
    /// for too long).
    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut VecDeque<Output>) -> bool {
        self.flush_keyframe_request(now, out);
        let mut due = Vec::new();
        let video = self.layers.iter_mut().map(|l| &mut l.track);
        for t in video.chain(self.audio.as_mut()) {
            due.clear();
            let (nacked, given_up) = t.loss.poll(now, &self.nack, &mut due);
            self.counters.nacked += nacked;
            self.counters.lost += given_up;
            if due.is_empty() {
                continue;
            }
            let Some(to) = self.ingest_addr else {
                continue;
            };
            // The low 16 bits are the wire numbers; entries_for groups them 17 to an entry.
            let seqs: Vec<u16> = due.iter().map(|e| *e as u16).collect();
            // Sender SSRC: FTL clients ignore it; 0 marks the relay.
            let nack = Nack::new(Ssrc(0), t.ssrc, &seqs);
            out.push_back(Output::Transmit {
                channel: self.channel,
                to,
                bytes: nack.build(),
            });
        }
        now.saturating_duration_since(self.last_media) >= self.media_timeout
    }

    /// When [`Stream::handle_timeout`] has something to do.
    pub(crate) fn poll_timeout(&self) -> Instant {
        let media = self.last_media + self.media_timeout;
        let video = self.layers.iter().map(|l| &l.track);
        video
            .chain(self.audio.as_ref())
            .filter_map(|t| t.loss.next_due(&self.nack))
            .chain(
                self.layers
                    .iter()
                    .filter_map(|l| self.keyframe_request_due(l)),
            )
            .fold(media, Instant::min)
    }

    /// A snapshot of the stream's statistics; the video's figures are the top layer's.
    pub(crate) fn stats(&self, viewers: usize, now: Instant) -> StreamStats {
        let rates = |t: Option<&Track>| t.map(|t| t.meter.rates(now)).unwrap_or_default();
        let top = self.top().and_then(|id| self.layer(id));
        let format = top.and_then(|l| l.format.as_ref());
        let layers = self
            .ranked
            .iter()
            .filter_map(|id| self.layer(*id))
            .map(|l| LayerStats {
                id: l.id,
                width: l.format.as_ref().map(|f| f.0),
                height: l.format.as_ref().map(|f| f.1),
                video: l.track.meter.rates(now),
                keyframe_interval: l.keyframe_interval,
                active: l.active(now),
                viewers: 0,
            })
            .collect();
        StreamStats {
            uptime: now.saturating_duration_since(self.started_at),
            video: rates(top.map(|l| &l.track)),
            audio: rates(self.audio.as_ref()),
            counters: self.counters.clone(),
            keyframe_interval: top.and_then(|l| l.keyframe_interval),
            width: format.map(|f| f.0),
            height: format.map(|f| f.1),
            codec: (!self.layers.is_empty()).then_some(self.codec),
            profile: format.map(|f| f.2.clone()),
            has_video: !self.layers.is_empty(),
            has_audio: self.audio.is_some(),
            viewers,
            gop_bytes: self.layers.iter().map(|l| l.gop.bytes()).sum(),
            b_frames: self.b_frames,
            layers,
        }
    }

    /// The cached keyframe of the top layer, whole (see [`GopCache::keyframe`]).
    pub(crate) fn keyframe(&self) -> Option<crate::types::Keyframe> {
        let top = self.top().and_then(|id| self.layer(id))?;
        Some(crate::types::Keyframe {
            codec: self.codec,
            layer: top.id,
            ts: top.gop.keyframe_ts()?,
            size: top.format.as_ref().map(|f| (f.0, f.1)),
            payloads: top.gop.keyframe()?,
        })
    }

    /// The video's codec and its profile, once a parameter set was seen.
    pub(crate) fn video_codec(&self) -> Option<(VideoCodec, Option<&str>)> {
        let top = self.top().and_then(|id| self.layer(id))?;
        Some((self.codec, top.format.as_ref().map(|f| f.2.as_str())))
    }
}
