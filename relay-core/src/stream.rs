//! One live stream's ingest: validating datagrams, ordering, loss tracking, keyframes, the GOP
//! cache and A/V timing. What survives becomes a [`Packet`] for the fan-out.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ftl_proto::media::{classify, h264, MediaDatagram, MediaParams, Nack, RtpPacket, Sps};
use ftl_proto::{ChannelId, Ssrc};
use log::debug;

use crate::clock::{NtpAnchor, TrackClock};
use crate::config::{NackConfig, RelayConfig};
use crate::gop::GopCache;
use crate::nack::{Arrival, LossTracker};
use crate::packet::Packet;
use crate::seq::{Extended, ReceivedWindow, SeqTracker};
use crate::stats::{RateMeter, StreamCounters, StreamStats};
use crate::types::{Drop, Event, Ingest, MediaKind, Output};

/// The largest Opus packet (RFC 6716 §3.4, R5). OBS's speed-test payloads are 1392 bytes.
pub const MAX_OPUS_PACKET: usize = 1275;

/// What a stream is started with.
#[derive(Debug, Clone)]
pub struct StreamParams {
    /// The negotiated payload types and SSRCs.
    pub media: MediaParams,
    /// The control connection's peer: media is accepted only from this address.
    pub peer_ip: IpAddr,
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

/// How a packet's sequence number placed it.
enum Placed {
    New { ext: u64, recovered: bool },
    Rejected(Drop),
}

/// One live stream.
#[derive(Debug)]
pub(crate) struct Stream {
    channel: ChannelId,
    params: StreamParams,
    started_at: Instant,
    last_media: Instant,
    /// Where the client sends from; NACKs go here.
    ingest_addr: Option<SocketAddr>,
    video: Option<Track>,
    audio: Option<Track>,
    anchor: NtpAnchor,
    pub(crate) gop: GopCache,
    seen_video: bool,
    last_keyframe: Option<(u32, Instant)>,
    keyframe_interval: Option<Duration>,
    format: Option<(u32, u32, String)>,
    pub(crate) counters: StreamCounters,
    nack: NackConfig,
    media_timeout: Duration,
}

impl Stream {
    pub(crate) fn new(
        channel: ChannelId,
        params: StreamParams,
        config: &RelayConfig,
        now: Instant,
    ) -> Self {
        Stream {
            channel,
            video: params.media.video.map(|t| Track::new(t.ssrc, 90_000)),
            audio: params.media.audio.map(|t| Track::new(t.ssrc, 48_000)),
            params,
            started_at: now,
            last_media: now,
            ingest_addr: None,
            anchor: NtpAnchor::default(),
            gop: GopCache::new(config.gop_max_bytes, config.gop_max_duration),
            seen_video: false,
            last_keyframe: None,
            keyframe_interval: None,
            format: None,
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
        if from.ip() != self.params.peer_ip {
            self.counters.dropped_foreign_source += 1;
            return (Ingest::Dropped(Drop::ForeignSource), None);
        }
        match classify(datagram, &self.params.media) {
            MediaDatagram::Video(rtp) => self.on_media(MediaKind::Video, &rtp, from, now, out),
            MediaDatagram::Audio(rtp) => self.on_media(MediaKind::Audio, &rtp, from, now, out),
            MediaDatagram::Ping(p) => {
                self.counters.pings += 1;
                self.ingest_addr = Some(from);
                out.push_back(Output::Transmit {
                    channel: self.channel,
                    to: from,
                    bytes: p.echo().to_vec(),
                });
                (Ingest::Ping, None)
            }
            MediaDatagram::SenderReport(sr) => {
                self.counters.sender_reports += 1;
                let at = self.anchor.instant(sr.ntp, now);
                for t in [self.video.as_mut(), self.audio.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    if t.ssrc == sr.ssrc {
                        t.clock.on_report(sr.rtp_timestamp, at);
                    }
                }
                (Ingest::SenderReport, None)
            }
            MediaDatagram::Foreign { .. } => {
                self.counters.dropped_foreign_ssrc += 1;
                (Ingest::Dropped(Drop::ForeignSsrc), None)
            }
            MediaDatagram::Invalid(e) => {
                self.counters.dropped_invalid += 1;
                (Ingest::Dropped(Drop::Invalid(e)), None)
            }
        }
    }

    fn on_media(
        &mut self,
        kind: MediaKind,
        rtp: &RtpPacket<'_>,
        from: SocketAddr,
        now: Instant,
        out: &mut VecDeque<Output>,
    ) -> (Ingest, Option<(MediaKind, Packet)>) {
        if kind == MediaKind::Audio
            && ((self.video.is_some() && !self.seen_video) || rtp.payload().len() > MAX_OPUS_PACKET)
        {
            // OBS's speed test: garbage on the audio SSRC before the stream proper. Never
            // forwarded, never NACKed, and it does not count as the stream being alive.
            self.counters.dropped_speed_test += 1;
            return (Ingest::Dropped(Drop::SpeedTest), None);
        }
        self.last_media = now;
        self.ingest_addr = Some(from);
        let (ext, recovered) = match self.place(kind, rtp.sequence_number(), now) {
            Placed::New { ext, recovered } => (ext, recovered),
            Placed::Rejected(d) => return (Ingest::Dropped(d), None),
        };
        let payload: Arc<[u8]> = Arc::from(rtp.payload());
        let ts = rtp.timestamp();
        let marker = rtp.marker();
        let track = match kind {
            MediaKind::Video => self.video.as_mut(),
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
                self.seen_video = true;
                self.on_video(&mut pkt, now, out);
            }
        }
        let ingest = if recovered {
            Ingest::Recovered(kind)
        } else {
            Ingest::Media(kind)
        };
        (ingest, Some((kind, pkt)))
    }

    /// Keyframe detection, format changes and the GOP cache.
    fn on_video(&mut self, pkt: &mut Packet, now: Instant, out: &mut VecDeque<Output>) {
        let Ok(info) = h264::inspect(&pkt.payload) else {
            // Forwarded as it is (the decoder judges); it just never starts a keyframe.
            self.gop.insert(pkt, now);
            return;
        };
        if info.has_sps {
            self.note_sps(&pkt.payload.clone(), out);
        }
        let newest = self.video.as_ref().and_then(|t| t.seq.highest()) == Some(pkt.ext);
        let new_frame = self.last_keyframe.is_none_or(|(ts, _)| ts != pkt.ts);
        // Only the newest packet can open a GOP: a late keyframe packet belongs to an old one.
        if info.starts_keyframe() && new_frame && newest {
            pkt.keyframe = true;
            self.counters.keyframes += 1;
            if let Some((_, at)) = self.last_keyframe {
                self.keyframe_interval = Some(now.saturating_duration_since(at));
            }
            self.last_keyframe = Some((pkt.ts, now));
            let overflows = self.gop.overflows;
            self.gop.start(pkt, now);
            self.counters.gop_overflows += self.gop.overflows - overflows;
        } else {
            let overflows = self.gop.overflows;
            self.gop.insert(pkt, now);
            if self.gop.overflows > overflows {
                self.counters.gop_overflows += 1;
                debug!("channel {}: GOP outgrew the cache", self.channel);
            }
        }
    }

    fn note_sps(&mut self, payload: &[u8], out: &mut VecDeque<Output>) {
        let Some(Ok(sps)) = h264::find_sps(payload).map(Sps::parse) else {
            return;
        };
        let format = (sps.width, sps.height, sps.profile_level_id());
        if self.format.as_ref() != Some(&format) {
            out.push_back(Output::Event(Event::VideoFormat {
                channel: self.channel,
                width: format.0,
                height: format.1,
                profile_level_id: format.2.clone(),
            }));
            self.format = Some(format);
        }
    }

    /// Extends the sequence number, detects duplicates and gaps.
    fn place(&mut self, kind: MediaKind, seq: u16, now: Instant) -> Placed {
        let Self {
            video,
            audio,
            counters: c,
            nack,
            ..
        } = self;
        let Some(t) = (match kind {
            MediaKind::Video => video.as_mut(),
            MediaKind::Audio => audio.as_mut(),
        }) else {
            return Placed::Rejected(Drop::ForeignSsrc);
        };
        match t.seq.extend(seq) {
            Extended::Ahead { ext, gap } => {
                if gap > 0 {
                    c.missing += gap;
                    c.lost += t.loss.on_gap(ext - gap, gap, now, nack);
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

    /// Sends due NACKs. Returns whether the stream timed out (no media for too long).
    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut VecDeque<Output>) -> bool {
        let mut due = Vec::new();
        for t in [self.video.as_mut(), self.audio.as_mut()]
            .into_iter()
            .flatten()
        {
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
        [self.video.as_ref(), self.audio.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|t| t.loss.next_due(&self.nack))
            .fold(media, Instant::min)
    }

    /// A snapshot of the stream's statistics.
    pub(crate) fn stats(&self, viewers: usize, now: Instant) -> StreamStats {
        let rates = |t: Option<&Track>| t.map(|t| t.meter.rates(now)).unwrap_or_default();
        StreamStats {
            uptime: now.saturating_duration_since(self.started_at),
            video: rates(self.video.as_ref()),
            audio: rates(self.audio.as_ref()),
            counters: self.counters.clone(),
            keyframe_interval: self.keyframe_interval,
            width: self.format.as_ref().map(|f| f.0),
            height: self.format.as_ref().map(|f| f.1),
            profile_level_id: self.format.as_ref().map(|f| f.2.clone()),
            has_video: self.video.is_some(),
            has_audio: self.audio.is_some(),
            viewers,
            gop_bytes: self.gop.bytes(),
        }
    }

    /// The SDP `profile-level-id` of the video, once an SPS was seen.
    pub(crate) fn profile_level_id(&self) -> Option<&str> {
        self.format.as_ref().map(|f| f.2.as_str())
    }
}
