//! Replaying recorded ingest sessions.
//!
//! - [`replay`] drives `ftl-proto` and `relay-core` with a recording's timings on a virtual
//!   clock and a seeded RNG, with viewers joining at chosen times. The same recording, options
//!   and seed always give the same transcript, line for line.
//! - [`restream`] sends a recording to a live FTL server, as the original client did.
//!
//! The recorded HMAC exchange cannot be reused (the nonce differs each time), so the client's
//! `CONNECT` line is replaced by one computed with the given key for the fresh nonce.
//!
//! A WHIP recording holds decrypted RTP: its replay feeds the relay's RTP source from the
//! instant the server answered, and its re-stream goes over FTL, announcing the recorded
//! payload types and SSRCs.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ftl_proto::control::metadata::MetadataBuilder;
use ftl_proto::control::{
    auth, ClientConfig, ClientEvent, ClientSession, Command, Metadata, ServerConfig, ServerEvent,
    ServerSession, NONCE_LEN,
};
use ftl_proto::media::{MediaParams, Nack, RtpPacket, SenderReport};
use ftl_proto::{ChannelId, StreamKey};
use rand::{RngCore, SeedableRng};
use relay_core::{
    LayerId, MediaKind, Output, Relay, RelayConfig, RtpIn, StreamParams, VideoCodec, ViewerId,
};

use crate::capture::{Recorded, WhipExchange};

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The key the fresh handshake uses (the server side is given the same).
    pub key: StreamKey,
    /// Seeds the nonce.
    pub seed: u64,
    /// When viewers join, from the session's start.
    pub viewers: Vec<Duration>,
    pub relay: RelayConfig,
}

/// What a viewer got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewerSummary {
    pub joined_at: Duration,
    pub video: u64,
    pub audio: u64,
    pub cached: u64,
    /// Offset of the first keyframe packet it was sent.
    pub first_keyframe: Option<Duration>,
}

/// The outcome of a replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOutput {
    /// One line per output of the cores, in order, with virtual times.
    pub transcript: Vec<String>,
    pub channel: Option<ChannelId>,
    pub authenticated: bool,
    pub media_port: Option<u16>,
    pub datagrams: u64,
    pub nacks_sent: u64,
    pub nacked: Vec<u16>,
    pub counters: Option<relay_core::StreamCounters>,
    /// The picture size read from the stream's SPS, and whether it has B-frames.
    pub picture: Option<(u32, u32)>,
    pub b_frames: bool,
    pub viewers: Vec<ViewerSummary>,
    /// `Some(status)` for a WHIP recording: how the server answered its offer.
    pub whip_status: Option<u16>,
}

impl ReplayOutput {
    /// A short, stable text for golden files.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if let Some(status) = self.whip_status {
            let _ = write!(s, "whip {status} ");
        }
        let _ = writeln!(
            s,
            "channel {} authenticated {} datagrams {}",
            self.channel.map_or(0, |c| c.0),
            self.authenticated,
            self.datagrams
        );
        if let Some((w, h)) = self.picture {
            let _ = writeln!(s, "picture {w}x{h} b_frames {}", self.b_frames);
        }
        if let Some(c) = &self.counters {
            let _ = writeln!(
                s,
                "video {} audio {} frames {} keyframes {} pings {} sender_reports {}",
                c.video_packets, c.audio_packets, c.frames, c.keyframes, c.pings, c.sender_reports
            );
            let _ = writeln!(
                s,
                "missing {} nacked {} recovered {} reordered {} lost {} duplicates {}",
                c.missing, c.nacked, c.recovered, c.reordered, c.lost, c.duplicates
            );
            let _ = writeln!(
                s,
                "dropped foreign_source {} foreign_ssrc {} invalid {} speed_test {} too_old {}",
                c.dropped_foreign_source,
                c.dropped_foreign_ssrc,
                c.dropped_invalid,
                c.dropped_speed_test,
                c.dropped_too_old
            );
            if self.whip_status.is_some() {
                let _ = writeln!(s, "keyframe_requests {}", c.keyframe_requests);
            }
        }
        let _ = writeln!(
            s,
            "nack_datagrams {} nacked_seqs {:?}",
            self.nacks_sent, self.nacked
        );
        for (i, v) in self.viewers.iter().enumerate() {
            let _ = writeln!(
                s,
                "viewer {i} joined {} ms: video {} (cached {}) audio {} first_keyframe {:?} ms",
                v.joined_at.as_millis(),
                v.video,
                v.cached,
                v.audio,
                v.first_keyframe.map(|d| d.as_millis())
            );
        }
        s
    }
}

/// Why a replay could not run.
#[derive(Debug)]
pub struct ReplayError(pub String);

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "replay: {}", self.0)
    }
}

impl std::error::Error for ReplayError {}

/// The client's control lines with the time each completed, terminators kept.
fn client_lines(rec: &Recorded) -> Vec<(Duration, Vec<u8>)> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    for (t, chunk) in &rec.control_in {
        for &b in chunk {
            line.push(b);
            if b == b'\n' {
                out.push((*t, std::mem::take(&mut line)));
            }
        }
    }
    if !line.is_empty() {
        let t = rec.control_in.last().map_or(Duration::ZERO, |(t, _)| *t);
        out.push((t, line));
    }
    out
}

/// `CONNECT <channel> $<digest>` for `nonce`, keeping the recorded channel.
fn fresh_connect(line: &[u8], key: &StreamKey, nonce: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(line);
    let channel = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.trim().parse::<ChannelId>().ok());
    match channel {
        Some(channel) => Command::Connect {
            channel,
            digest: auth::digest(key, nonce),
        }
        .to_bytes(),
        None => line.to_vec(),
    }
}

enum Step {
    Control(Vec<u8>),
    /// A WHIP recording's stream goes live.
    WhipStart,
    Media(SocketAddr, Vec<u8>),
    Join(usize),
}

/// Replays a recorded session through the cores. Deterministic for equal inputs.
pub fn replay(rec: &Recorded, opts: &ReplayOptions) -> Result<ReplayOutput, ReplayError> {
    let client = rec
        .client
        .ok_or_else(|| ReplayError("no client address".into()))?;
    let mut steps: Vec<(Duration, u8, Step)> = Vec::new();
    if let Some(w) = &rec.whip {
        // The stream starts when the server answered (ICE and DTLS took a few round trips
        // more; the recording starts with the first decrypted packet).
        if w.status == 201 {
            let answered = rec.control_out.first().map_or(Duration::ZERO, |(t, _)| *t);
            steps.push((answered, 0, Step::WhipStart));
        }
    } else {
        for (t, l) in client_lines(rec) {
            steps.push((t, 0, Step::Control(l)));
        }
    }
    for (t, from, d) in &rec.media_in {
        steps.push((*t, 1, Step::Media(*from, d.clone())));
    }
    for (i, t) in opts.viewers.iter().enumerate() {
        steps.push((*t, 2, Step::Join(i)));
    }
    steps.sort_by_key(|(t, order, _)| (*t, *order));

    let t0 = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let mut out = ReplayOutput {
        media_port: rec.media_port,
        whip_status: rec.whip.as_ref().map(|w| w.status),
        ..ReplayOutput::default()
    };
    out.viewers = opts
        .viewers
        .iter()
        .map(|t| ViewerSummary {
            joined_at: *t,
            ..ViewerSummary::default()
        })
        .collect();
    let mut r = Replay {
        session: rec
            .whip
            .is_none()
            .then(|| ServerSession::new(ServerConfig::default(), nonce, t0)),
        whip: rec.whip.as_ref().map(WhipFeed::new),
        relay: Relay::new(opts.relay.clone()),
        out,
        viewers: BTreeMap::new(),
        opts,
        client,
        port: rec.media_port.unwrap_or(9000),
        t0,
    };
    let mut now = t0;
    let end = steps.last().map_or(Duration::ZERO, |(t, _, _)| *t) + Duration::from_secs(1);

    // Viewers that asked to join before the session named its channel join as soon as it does.
    let mut waiting: Vec<usize> = Vec::new();
    for (t, _, step) in
        steps
            .into_iter()
            .chain(std::iter::once((end, 3, Step::Control(Vec::new()))))
    {
        r.run_timers(t0 + t, &mut now);
        r.drain(now)?;
        if let Step::Join(i) = step {
            waiting.push(i);
        }
        if let Some(c) = r.out.channel {
            for i in waiting.drain(..) {
                if let Ok(id) = r.relay.add_viewer(c, now) {
                    r.viewers.insert(id, i);
                    r.out
                        .transcript
                        .push(format!("{:?} viewer {i} joins as {id}", now - t0));
                }
            }
        }
        match step {
            Step::Control(line) if line.is_empty() => {}
            Step::Control(line) => {
                let line = if line.starts_with(b"CONNECT ") {
                    fresh_connect(&line, &opts.key, &nonce)
                } else {
                    line
                };
                if let Some(session) = r.session.as_mut() {
                    let _ = session.handle_input(&line, now);
                }
            }
            Step::WhipStart => {
                let channel = rec
                    .whip
                    .as_ref()
                    .and_then(|w| w.channel)
                    .map(ChannelId)
                    .ok_or_else(|| ReplayError("the WHIP request names no channel".into()))?;
                let params = r.whip.as_ref().map_or(
                    StreamParams::Rtp {
                        video: None,
                        audio: false,
                    },
                    WhipFeed::params,
                );
                r.out.channel = Some(channel);
                r.out.authenticated = true;
                r.relay
                    .start_stream(channel, params, now)
                    .map_err(|e| ReplayError(e.to_string()))?;
                r.out
                    .transcript
                    .push(format!("{:?} whip stream starts", now - t0));
            }
            Step::Media(from, d) => {
                if let Some(c) = r.out.channel {
                    r.out.datagrams += 1;
                    match r.whip.as_mut() {
                        Some(feed) => feed.datagram(&mut r.relay, c, &d, now),
                        None => {
                            r.relay.handle_datagram(c, from, &d, now);
                        }
                    }
                }
            }
            Step::Join(_) => {}
        }
        r.drain(now)?;
    }
    if let Some(stats) = r.out.channel.and_then(|c| r.relay.stream_stats(c, now)) {
        r.out.picture = stats.width.zip(stats.height);
        r.out.b_frames = stats.b_frames;
        r.out.counters = Some(stats.counters);
    }
    Ok(r.out)
}

/// Feeds a WHIP recording's datagrams to the relay's RTP source, as the server does with
/// what str0m decrypted: RTP by the answer's payload types, sender reports by the SSRCs seen.
struct WhipFeed {
    video: Option<VideoCodec>,
    video_pts: Vec<u8>,
    audio_pts: Vec<u8>,
    ssrcs: BTreeMap<u32, (MediaKind, LayerId)>,
}

impl WhipFeed {
    fn new(w: &WhipExchange) -> WhipFeed {
        WhipFeed {
            video: w.video_codec,
            video_pts: w.video_pts.clone(),
            audio_pts: w.audio_pts.clone(),
            ssrcs: BTreeMap::new(),
        }
    }

    fn params(&self) -> StreamParams {
        StreamParams::Rtp {
            video: self.video.filter(|_| !self.video_pts.is_empty()),
            audio: !self.audio_pts.is_empty(),
        }
    }

    fn datagram(&mut self, relay: &mut Relay, channel: ChannelId, d: &[u8], now: Instant) {
        if let Ok(sr) = SenderReport::parse(d) {
            if let Some((kind, layer)) = self.ssrcs.get(&sr.ssrc.0) {
                relay.handle_sender_report(channel, *kind, *layer, sr.ntp, sr.rtp_timestamp, now);
            }
            return;
        }
        let Ok(p) = RtpPacket::parse(d) else {
            return;
        };
        let pt = p.payload_type();
        let kind = if self.video_pts.contains(&pt) {
            MediaKind::Video
        } else if self.audio_pts.contains(&pt) {
            MediaKind::Audio
        } else {
            return;
        };
        // A simulcast's video layers are told apart by SSRC: numbered in order of appearance.
        let layers = self
            .ssrcs
            .values()
            .filter(|(k, _)| *k == MediaKind::Video)
            .count();
        let known = self.ssrcs.get(&p.ssrc().0).map(|(_, l)| *l);
        let layer = match known {
            Some(l) => l,
            None if kind == MediaKind::Video => LayerId(layers.min(255) as u8),
            None => LayerId(0),
        };
        if known.is_none() && self.ssrcs.len() < 16 {
            self.ssrcs.insert(p.ssrc().0, (kind, layer));
        }
        let rtp = RtpIn {
            kind,
            layer,
            seq: p.sequence_number(),
            timestamp: p.timestamp(),
            marker: p.marker(),
            payload: Arc::from(p.payload()),
        };
        relay.handle_rtp(channel, rtp, now);
    }
}

/// The cores being replayed and what came out of them.
struct Replay<'a> {
    /// The FTL control session; none for a WHIP recording.
    session: Option<ServerSession>,
    whip: Option<WhipFeed>,
    relay: Relay,
    out: ReplayOutput,
    /// Which requested viewer each relay viewer is.
    viewers: BTreeMap<ViewerId, usize>,
    opts: &'a ReplayOptions,
    client: SocketAddr,
    port: u16,
    t0: Instant,
}

impl Replay<'_> {
    /// Runs the session's and the relay's timers up to `until`.
    fn run_timers(&mut self, until: Instant, now: &mut Instant) {
        for _ in 0..100_000 {
            let session = self.session.as_ref().and_then(ServerSession::poll_timeout);
            let next = [session, self.relay.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    *now = t.max(*now);
                    if let Some(s) = self.session.as_mut() {
                        s.handle_timeout(*now);
                    }
                    self.relay.handle_timeout(*now);
                }
                _ => break,
            }
        }
        *now = until.max(*now);
    }

    /// Takes every output of the cores into the transcript and answers the session's decisions.
    fn drain(&mut self, now: Instant) -> Result<(), ReplayError> {
        let Replay {
            session,
            relay,
            out,
            viewers,
            opts,
            client,
            port,
            t0,
            ..
        } = self;
        let (opts, client, port, t0) = (*opts, *client, *port, *t0);
        let at = now - t0;
        while let Some(ev) = session.as_mut().and_then(ServerSession::poll_event) {
            out.transcript.push(format!("{at:?} session {ev:?}"));
            match ev {
                ServerEvent::KeyRequested { channel } => {
                    out.channel = Some(channel);
                    if let Some(s) = session.as_mut() {
                        let _ = s.provide_key(&opts.key, now);
                    }
                }
                ServerEvent::Authenticated { .. } => out.authenticated = true,
                ServerEvent::MetadataReady { channel, metadata } => {
                    let params = StreamParams::Ftl {
                        media: MediaParams::from_metadata(&metadata),
                        peer_ip: client.ip(),
                    };
                    relay
                        .start_stream(channel, params, now)
                        .map_err(|e| ReplayError(e.to_string()))?;
                    if let Some(s) = session.as_mut() {
                        let _ = s.assign_port(port, now);
                    }
                }
                _ => {}
            }
        }
        while let Some(b) = session.as_mut().and_then(ServerSession::poll_transmit) {
            out.transcript
                .push(format!("{at:?} reply {:?}", String::from_utf8_lossy(&b)));
        }
        while let Some(o) = relay.poll_output() {
            match o {
                Output::Forward(f) => {
                    if let Some(v) = viewers.get(&f.viewer).and_then(|i| out.viewers.get_mut(*i)) {
                        match f.kind {
                            relay_core::MediaKind::Video => v.video += 1,
                            relay_core::MediaKind::Audio => v.audio += 1,
                        }
                        v.cached += u64::from(f.cached);
                        if f.keyframe && v.first_keyframe.is_none() {
                            v.first_keyframe = Some(at);
                        }
                    }
                    out.transcript.push(format!(
                        "{at:?} forward {} {:?} seq {} ts {} wall {:?} m {} k {} c {} len {} hash {:016x}",
                        f.viewer,
                        f.kind,
                        f.seq,
                        f.timestamp,
                        f.wallclock.saturating_duration_since(t0),
                        f.marker,
                        f.keyframe,
                        f.cached,
                        f.payload.len(),
                        fnv(&f.payload)
                    ));
                }
                Output::Transmit { to, bytes, .. } => {
                    if let Ok(n) = Nack::parse(&bytes) {
                        out.nacks_sent += 1;
                        out.nacked.extend(n.lost());
                    }
                    out.transcript
                        .push(format!("{at:?} transmit to {to} {}", hex(&bytes)));
                }
                Output::Event(e) => out.transcript.push(format!("{at:?} event {e:?}")),
                // Only WHIP recordings are asked (their publisher would get a PLI).
                Output::RequestKeyframe { channel, layer } if layer.0 == 0 => out
                    .transcript
                    .push(format!("{at:?} keyframe request {channel}")),
                Output::RequestKeyframe { channel, layer } => out
                    .transcript
                    .push(format!("{at:?} keyframe request {channel} layer {layer}")),
            }
        }
        Ok(())
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The metadata the recorded client announced; for a WHIP recording, the reference client's
/// with the recorded payload types and SSRCs (the first of each track), so the same packets
/// re-stream over FTL.
pub fn recorded_metadata(rec: &Recorded) -> Option<Metadata> {
    if let Some(w) = &rec.whip {
        let mut m = Metadata::reference(w.channel.unwrap_or(0));
        let first = |pts: &[u8]| {
            rec.media_in.iter().find_map(|(_, _, d)| {
                let p = RtpPacket::parse(d).ok()?;
                pts.contains(&p.payload_type())
                    .then(|| (p.payload_type(), p.ssrc()))
            })
        };
        match (m.video.as_mut(), first(&w.video_pts)) {
            (Some(v), Some((pt, ssrc))) => {
                v.payload_type = pt;
                v.ssrc = ssrc;
            }
            _ => m.video = None,
        }
        match (m.audio.as_mut(), first(&w.audio_pts)) {
            (Some(a), Some((pt, ssrc))) => {
                a.payload_type = pt;
                a.ssrc = ssrc;
            }
            _ => m.audio = None,
        }
        return Some(m);
    }
    let mut b = MetadataBuilder::default();
    for (_, line) in client_lines(rec) {
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if let Ok(Command::Attribute { name, value }) = Command::parse(text) {
            b.add(name, value, 64).ok()?;
        }
    }
    b.finish().ok()
}

/// What a re-stream did.
#[derive(Debug, Clone, Default)]
pub struct RestreamStats {
    pub media_port: u16,
    pub sent: u64,
    pub nacks: u64,
    pub resent: u64,
}

/// Sends a recorded session to a live FTL server: a fresh handshake with `obs_key` and the
/// recorded metadata, then the recorded media datagrams at their original pace divided by
/// `speed`, answering NACKs from the recording.
pub fn restream(
    rec: &Recorded,
    to: SocketAddr,
    obs_key: &str,
    speed: f64,
    stop: &AtomicBool,
) -> io::Result<RestreamStats> {
    let (channel, key) = StreamKey::parse_obs(obs_key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let metadata = recorded_metadata(rec).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the recording has no complete metadata",
        )
    })?;
    let mut tcp = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_millis(2)))?;
    let mut session = ClientSession::new(ClientConfig::new(channel, key, metadata), Instant::now());
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = loop {
        let now = Instant::now();
        if now > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "handshake"));
        }
        session.handle_timeout(now);
        while let Some(b) = session.poll_transmit() {
            tcp.write_all(&b)?;
        }
        match tcp.read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "server closed",
                ))
            }
            Ok(n) => {
                let _ = session.handle_input(buf.get(..n).unwrap_or_default(), now);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
        match session.poll_event() {
            Some(ClientEvent::Connected { port }) => break port,
            Some(ClientEvent::Closed { reason }) => {
                return Err(io::Error::other(format!("{reason:?}")))
            }
            None => {}
        }
    };
    let udp = UdpSocket::bind(SocketAddr::new(
        if to.is_ipv4() {
            [0, 0, 0, 0].into()
        } else {
            [0u16; 8].into()
        },
        0,
    ))?;
    udp.connect(SocketAddr::new(to.ip(), port))?;
    udp.set_nonblocking(true)?;
    // From here the control connection is only polled between datagrams: a read must not
    // wait, or a burst (OBS's speed test: 1337 datagrams in a second) would be stretched.
    tcp.set_nonblocking(true)?;
    let mut stats = RestreamStats {
        media_port: port,
        ..RestreamStats::default()
    };
    // Sent datagrams by (SSRC, sequence number), for NACK answers.
    let mut ring: VecDeque<((u32, u16), Vec<u8>)> = VecDeque::new();
    let speed = if speed > 0.0 { speed } else { 1.0 };
    let first = rec.media_in.first().map_or(Duration::ZERO, |(t, _, _)| *t);
    let start = Instant::now();
    for (t, _, d) in &rec.media_in {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let due = start + (t.saturating_sub(first)).div_f64(speed);
        loop {
            answer_nacks(&udp, &ring, &mut buf, &mut stats);
            session.handle_timeout(Instant::now());
            while let Some(b) = session.poll_transmit() {
                tcp.write_all(&b)?;
            }
            let _ = tcp.read(&mut buf);
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(2)));
        }
        let _ = udp.send(d);
        stats.sent += 1;
        if d.len() >= 12
            && d.get(1)
                .is_some_and(|b| !(192..=223).contains(&(b | 0x80)) && *b != 250)
        {
            let seq = u16::from_be_bytes([d[2], d[3]]);
            let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
            ring.push_back(((ssrc, seq), d.clone()));
            if ring.len() > 4096 {
                ring.pop_front();
            }
        }
    }
    let linger = Instant::now() + Duration::from_millis(300);
    while Instant::now() < linger {
        answer_nacks(&udp, &ring, &mut buf, &mut stats);
        std::thread::sleep(Duration::from_millis(5));
    }
    session.disconnect();
    while let Some(b) = session.poll_transmit() {
        let _ = tcp.write_all(&b);
    }
    Ok(stats)
}

fn answer_nacks(
    udp: &UdpSocket,
    ring: &VecDeque<((u32, u16), Vec<u8>)>,
    buf: &mut [u8],
    stats: &mut RestreamStats,
) {
    while let Ok(n) = udp.recv(buf) {
        let Ok(nack) = Nack::parse(buf.get(..n).unwrap_or_default()) else {
            continue;
        };
        stats.nacks += 1;
        for seq in nack.lost() {
            if let Some((_, d)) = ring
                .iter()
                .rev()
                .find(|(k, _)| *k == (nack.media_ssrc.0, seq))
            {
                let _ = udp.send(d);
                stats.resent += 1;
            }
        }
    }
}
