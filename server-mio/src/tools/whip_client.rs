//! The project's WHIP client: publishes an H.264 Annex-B file and an Ogg Opus file to any WHIP
//! endpoint (RFC 9725) with real-time pacing, str0m as the sending peer. It is the FTL
//! client's sibling, for tests, the load generator and users without OBS.
//!
//! It behaves like an encoder towards the server: a PLI or FIR makes it jump to the file's next
//! keyframe and send it at once (timestamps run on), so "the encoder made a keyframe on
//! request" can be tested with files.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ftl_proto::media::h264;
use log::{debug, info};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::Receive;
use str0m::rtp::RtpWrite;
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use crate::client::http::request as http;
use crate::client::link::{local_ip_towards, Link};
use crate::client::sdp::tcp_candidate;
use crate::client::url::{split_url, UrlError};
use crate::tools::client::{schedule, ClientOptions, Scheduled, SentLog, PACE_BURST_MS};

/// How long the server may stay silent before the session counts as ended.
const SILENCE: Duration = Duration::from_secs(4);

/// What to publish and where.
#[derive(Debug, Clone)]
pub struct WhipOptions {
    /// The endpoint, e.g. `http://127.0.0.1:8080/whip/77`.
    pub url: String,
    /// The Bearer token (for this server, the OBS stream key `<channel>-<secret>`).
    pub token: String,
    /// H.264 Annex-B elementary stream.
    pub video: Option<Vec<u8>>,
    /// Opus in Ogg.
    pub audio: Option<Vec<u8>>,
    /// Frames per second of the video file.
    pub fps: u32,
    /// Start again at the end (timestamps and numbers continue).
    pub repeat: bool,
    /// Stop after this long (default: at the end of the files, or never when repeating).
    pub duration: Option<Duration>,
    /// Records when each media payload was sent (by content hash), for latency measurements.
    pub sent_log: Option<SentLog>,
    /// At the end, go silent without a `DELETE` or a DTLS close, as a crashed encoder or a
    /// pulled cable would (for tests of the server's timeouts).
    pub vanish: bool,
    /// ICE over TCP only, to the passive TCP candidate of the server's answer (as an encoder
    /// behind a UDP-blocking firewall would reach it).
    pub tcp: bool,
    /// Simulcast: the video as several layers, each a file of its own sent on its RID
    /// (`a=simulcast:send q;h;f`), as a browser with `sendEncodings` publishes. Replaces
    /// `video` when not empty.
    pub simulcast: Vec<(String, Vec<u8>)>,
    /// Signal the simulcast layers as an SSRC group (`a=ssrc-group:SIM`, no RIDs), as WebRTC
    /// stacks from before RIDs do.
    pub ssrc_simulcast: bool,
    /// Simulcast: hold every layer but the first (smallest) this long after connecting, as a
    /// browser does while its bandwidth estimate is still low.
    pub upper_layers_after: Option<Duration>,
    /// Send no video for this long after connecting (audio goes out), as an encoder whose
    /// camera starts late does; the first video sent is then where the file has got to.
    pub video_after: Option<Duration>,
}

/// An offer's simulcast signalled by SSRC instead of RIDs: the RID and simulcast lines and
/// the RID header extensions out, `a=ssrc-group:SIM` with each layer's SSRC (the first of
/// each retransmission pair, in layer order) in.
pub fn as_ssrc_simulcast(offer: &str) -> String {
    let pairs: Vec<&str> = offer
        .lines()
        .filter(|l| l.starts_with("a=ssrc-group:FID "))
        .collect();
    let layers: Vec<&str> = pairs
        .iter()
        .filter_map(|l| l.split_ascii_whitespace().nth(1))
        .collect();
    let last_pair = pairs.last().copied();
    let mut out = String::new();
    for line in offer.lines() {
        let drop = line.starts_with("a=rid:")
            || line.starts_with("a=simulcast:")
            || (line.starts_with("a=extmap:") && line.contains("rtp-stream-id"));
        if drop {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
        // After the last retransmission pair, once.
        if Some(line) == last_pair && layers.len() > 1 {
            out.push_str(&format!("a=ssrc-group:SIM {}\r\n", layers.join(" ")));
        }
    }
    out
}

/// What a publishing session did.
#[derive(Debug, Clone, Default)]
pub struct WhipStats {
    pub video_packets: u64,
    pub audio_packets: u64,
    /// PLIs and FIRs received from the server.
    pub keyframe_requests: u64,
    /// Keyframes sent ahead of their time because of a request.
    pub keyframes_forced: u64,
    /// From the POST to ICE and DTLS up.
    pub connected_after: Option<Duration>,
    /// The session's URL (for `DELETE`).
    pub location: Option<String>,
}

/// Why publishing failed.
#[derive(Debug)]
pub enum WhipError {
    /// The URL is not `http://host[:port]/path`.
    BadUrl(String),
    Io(io::Error),
    /// The server refused the offer: status and body.
    Refused(u16, String),
    /// WebRTC failed (negotiation, ICE, DTLS).
    WebRtc(String),
}

impl std::fmt::Display for WhipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WhipError::BadUrl(u) => write!(f, "not an http:// WHIP URL: {u}"),
            WhipError::Io(e) => write!(f, "{e}"),
            WhipError::Refused(s, b) => write!(f, "the server refused the offer: {s} {}", b.trim()),
            WhipError::WebRtc(e) => write!(f, "WebRTC: {e}"),
        }
    }
}

impl std::error::Error for WhipError {}

impl From<io::Error> for WhipError {
    fn from(e: io::Error) -> Self {
        WhipError::Io(e)
    }
}

impl From<UrlError> for WhipError {
    fn from(e: UrlError) -> Self {
        match e {
            UrlError::Bad(u) => WhipError::BadUrl(u),
            UrlError::Resolve(e) => WhipError::Io(e),
        }
    }
}

fn webrtc(e: impl std::fmt::Display) -> WhipError {
    WhipError::WebRtc(e.to_string())
}

/// One negotiated outgoing track.
struct Track {
    mid: Mid,
    pt: Pt,
}

/// A position in the looping schedule.
struct Cursor {
    packets: Vec<Scheduled>,
    length: Duration,
    pos: usize,
    /// When packet 0 of the current pass is due.
    base: Instant,
    video_ts_offset: u32,
    audio_ts_offset: u32,
    last_video_ts: Option<u32>,
    last_audio_ts: Option<u32>,
    frame_ticks: u32,
}

impl Cursor {
    /// The next packet if it is due, with its timestamp offset applied.
    fn next_due(&mut self, now: Instant, repeat: bool) -> Option<(bool, bool, u32, usize)> {
        if self.pos >= self.packets.len() {
            if !repeat || self.packets.is_empty() {
                return None;
            }
            self.pos = 0;
            self.base += self.length;
            let ticks = |rate: u64| (self.length.as_micros() as u64 * rate / 1_000_000) as u32;
            self.video_ts_offset = self.video_ts_offset.wrapping_add(ticks(90_000));
            self.audio_ts_offset = self.audio_ts_offset.wrapping_add(ticks(48_000));
        }
        let p = self.packets.get(self.pos)?;
        if self.base + p.at > now {
            return None;
        }
        let ts = if p.video {
            p.ts.wrapping_add(self.video_ts_offset)
        } else {
            p.ts.wrapping_add(self.audio_ts_offset)
        };
        let i = self.pos;
        self.pos += 1;
        if p.video {
            self.last_video_ts = Some(ts);
        } else {
            self.last_audio_ts = Some(ts);
        }
        Some((p.video, p.marker, ts, i))
    }

    /// When the next packet is due.
    fn next_at(&self) -> Option<Instant> {
        self.packets.get(self.pos).map(|p| self.base + p.at)
    }

    /// Jumps to the next keyframe of the file and makes it due now, timestamps running on.
    /// Returns whether it jumped.
    fn jump_to_keyframe(&mut self, now: Instant) -> bool {
        let is_kf =
            |p: &Scheduled| p.video && h264::inspect(&p.payload).is_ok_and(|i| i.starts_keyframe());
        let Some(k) =
            (self.pos..self.packets.len()).find(|&i| self.packets.get(i).is_some_and(is_kf))
        else {
            return false;
        };
        if k == self.pos {
            return false; // a keyframe is next anyway
        }
        let Some(kp) = self.packets.get(k) else {
            return false;
        };
        let (k_at, k_ts) = (kp.at, kp.ts);
        if let Some(last) = self.last_video_ts {
            self.video_ts_offset = last.wrapping_add(self.frame_ticks).wrapping_sub(k_ts);
        }
        // Audio runs on from where it was, too.
        if let (Some(last), Some(next)) = (
            self.last_audio_ts,
            self.packets
                .get(k..)
                .and_then(|r| r.iter().find(|p| !p.video)),
        ) {
            self.audio_ts_offset = last.wrapping_add(960).wrapping_sub(next.ts);
        }
        self.pos = k;
        self.base = now.checked_sub(k_at).unwrap_or(now);
        true
    }
}

/// Publishes until the files end (or `duration`, or `stop`), then ends the session with
/// `DELETE`.
pub fn publish(opts: &WhipOptions, stop: &AtomicBool) -> Result<WhipStats, WhipError> {
    let (server, path) = split_url(&opts.url)?;
    let local_ip = local_ip_towards(server)?;
    let started = Instant::now();
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(started);
    let udp = if opts.tcp {
        None
    } else {
        let l = Link::udp(UdpSocket::bind(SocketAddr::new(local_ip, 0))?)?;
        l.set_wait(Some(Duration::from_millis(2)))?;
        rtc.add_local_candidate(l.candidate().map_err(webrtc)?);
        Some(l)
    };
    let mut api = rtc.sdp_api();
    let simulcast = (!opts.simulcast.is_empty()).then(|| {
        let mut s = Simulcast::new();
        for (rid, _) in &opts.simulcast {
            s.add_send_layer(SimulcastLayer::new(rid));
        }
        s
    });
    let vmid = (opts.video.is_some() || simulcast.is_some())
        .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast));
    let amid = opts
        .audio
        .as_ref()
        .map(|_| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
    let (offer, pending) = api.apply().ok_or_else(|| webrtc("nothing to publish"))?;
    let mut offer_sdp = offer.to_sdp_string();
    if opts.ssrc_simulcast && !opts.simulcast.is_empty() {
        offer_sdp = as_ssrc_simulcast(&offer_sdp);
    }
    let auth = format!("Bearer {}", opts.token);
    let r = http(
        server,
        "POST",
        &path,
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        offer_sdp.as_bytes(),
    )?;
    if r.status != 201 {
        return Err(WhipError::Refused(
            r.status,
            String::from_utf8_lossy(&r.body).into_owned(),
        ));
    }
    let location = r.header("Location").map(str::to_owned);
    let sdp = std::str::from_utf8(&r.body).map_err(webrtc)?;
    let answer = SdpAnswer::from_sdp_string(sdp).map_err(webrtc)?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(webrtc)?;
    let mut link = match udp {
        Some(l) => l,
        None => {
            let server = tcp_candidate(sdp)
                .ok_or_else(|| webrtc("the answer has no passive TCP candidate"))?;
            let l = Link::tcp(server, None)?;
            l.set_wait(Some(Duration::from_millis(2)))?;
            rtc.add_local_candidate(l.candidate().map_err(webrtc)?);
            l
        }
    };
    let codecs = rtc.codec_config().params().to_vec();
    let track = |rtc: &Rtc, mid: Option<Mid>, want: Codec| -> Option<Track> {
        let mid = mid?;
        let remote = rtc.media(mid)?.remote_pts().to_vec();
        codecs
            .iter()
            .filter(|p| remote.contains(&p.pt()) && p.spec().codec == want)
            .find(|p| want != Codec::H264 || p.spec().format.packetization_mode == Some(1))
            .map(|p| Track { mid, pt: p.pt() })
    };
    let video = track(&rtc, vmid, Codec::H264);
    let audio = track(&rtc, amid, Codec::Opus);
    info!(
        "WHIP: {} answered; video {:?} audio {:?}",
        opts.url,
        video.as_ref().map(|t| *t.pt),
        audio.as_ref().map(|t| *t.pt)
    );
    let plan = |video: Option<Vec<u8>>, audio: Option<Vec<u8>>| ClientOptions {
        server: String::new(),
        stream_key: String::new(),
        video,
        audio,
        fps: opts.fps,
        repeat: opts.repeat,
        duration: opts.duration,
        speed: 1.0,
        drop_every: None,
        speed_test: false,
        sent_log: None,
        peak_kbps: None,
        pace_burst_ms: PACE_BURST_MS,
        deaf_to_end: false,
        frame_log: None,
    };
    // One schedule per RTP stream group: the main one (video unless simulcast, and audio),
    // then one per simulcast layer (video only), each with its own RID and numbering.
    let main_video = opts
        .video
        .clone()
        .filter(|_| video.is_some() && opts.simulcast.is_empty());
    let main_audio = opts.audio.clone().filter(|_| audio.is_some());
    let mut plans: Vec<(Option<Rid>, Vec<Scheduled>, Duration)> = Vec::new();
    let (packets, length) = schedule(&plan(main_video, main_audio));
    plans.push((None, packets, length));
    if video.is_some() {
        for (rid, file) in &opts.simulcast {
            let (packets, length) = schedule(&plan(Some(file.clone()), None));
            plans.push((Some(Rid::from(rid.as_str())), packets, length));
        }
    }
    let mut plans = Some(plans);
    let mut stats = WhipStats {
        location: location.clone(),
        ..WhipStats::default()
    };
    let mut cursors: Vec<(Option<Rid>, Cursor)> = Vec::new();
    let mut connected = false;
    let mut video_from: Option<Instant> = None;
    // Sequence numbers: per layer for video (main first), then audio.
    let mut seq = vec![0u64; 2 + opts.simulcast.len()];
    let end = opts.duration.map(|d| started + d);
    let mut buf = vec![0u8; 2048];
    let mut last_rx = started;
    let result = loop {
        let now = Instant::now();
        if stop.load(Ordering::SeqCst) || end.is_some_and(|e| now >= e) {
            break Ok(());
        }
        // Media, once connected.
        let mut all_done = connected;
        for (layer, (rid, c)) in cursors.iter_mut().enumerate() {
            while let Some((is_video, marker, ts, i)) = c.next_due(now, opts.repeat) {
                let Some(p) = c.packets.get(i) else { break };
                if is_video && video_from.is_some_and(|t| now < t) {
                    continue;
                }
                let (t, slot) = match (is_video, &video, &audio) {
                    (true, Some(t), _) => (t, layer),
                    (false, _, Some(t)) => (t, seq.len() - 1),
                    _ => continue,
                };
                let payload = p.payload.clone();
                if let Some(log) = &opts.sent_log {
                    if let Ok(mut m) = log.lock() {
                        m.insert(crate::tools::client::payload_hash(&payload), now);
                    }
                }
                let n = seq.get_mut(slot).map_or(0, |s| {
                    *s += 1;
                    *s
                });
                let mut d = rtc.direct_api();
                let rid = if is_video { *rid } else { None };
                if let Some(tx) = d.stream_tx_by_mid(t.mid, rid) {
                    let w = RtpWrite::new(t.pt, n.into(), ts, now, payload)
                        .marker(marker)
                        .nackable(is_video);
                    tx.write_rtp(w);
                }
                if is_video {
                    stats.video_packets += 1;
                } else {
                    stats.audio_packets += 1;
                }
            }
            all_done &= c.next_at().is_none() && !opts.repeat;
        }
        if all_done {
            break Ok(());
        }
        if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
            break Err(webrtc(e));
        }
        // Drain str0m.
        let mut failed = None;
        loop {
            match rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let _ = link.send(t.destination, &t.contents);
                }
                Ok(Output::Timeout(_)) => break,
                Ok(Output::Event(e)) => match e {
                    Event::Connected => {
                        stats.connected_after = Some(now.saturating_duration_since(started));
                        info!("WHIP: connected in {:?}", stats.connected_after);
                        connected = true;
                        video_from = Some(now + opts.video_after.unwrap_or_default());
                        let plans = plans.take().unwrap_or_default();
                        for (k, (rid, packets, length)) in plans.into_iter().enumerate() {
                            // The main schedule (audio, with simulcast), then the layers.
                            let held = if k >= 2 {
                                opts.upper_layers_after.unwrap_or_default()
                            } else {
                                Duration::ZERO
                            };
                            let c = Cursor {
                                packets,
                                length,
                                pos: 0,
                                base: now + held,
                                video_ts_offset: 0,
                                audio_ts_offset: 0,
                                last_video_ts: None,
                                last_audio_ts: None,
                                frame_ticks: 90_000 / opts.fps.max(1),
                            };
                            cursors.push((rid, c));
                        }
                    }
                    Event::KeyframeRequest(r) => {
                        stats.keyframe_requests += 1;
                        debug!("WHIP: keyframe request {:?} for {:?}", r.kind, r.rid);
                        if let Some((_, c)) = cursors.iter_mut().find(|(rid, _)| *rid == r.rid) {
                            if c.jump_to_keyframe(now) {
                                stats.keyframes_forced += 1;
                            }
                        }
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        failed = Some(webrtc("ICE disconnected"));
                    }
                    _ => {}
                },
                Err(e) => {
                    failed = Some(webrtc(e));
                    break;
                }
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
        if !connected && now.saturating_duration_since(started) > Duration::from_secs(10) {
            break Err(webrtc("did not connect within 10 s"));
        }
        // A live server sends receiver reports every second or so; silence means the session
        // is gone (ended, replaced, or the server went away).
        if connected && now.saturating_duration_since(last_rx) > SILENCE {
            break Err(webrtc(format!(
                "nothing from the server for {} s: the session ended",
                SILENCE.as_secs()
            )));
        }
        if !rtc.is_alive() {
            break Err(webrtc("the session was closed"));
        }
        // Receive until the next thing is due (at most a few ms).
        match link.recv(&mut buf) {
            Ok((n, source)) => {
                last_rx = Instant::now();
                let Some(data) = buf.get(..n) else { continue };
                let Ok(contents) = data.try_into() else {
                    continue;
                };
                let input = Input::Receive(
                    Instant::now(),
                    Receive {
                        proto: link.protocol(),
                        source,
                        destination: link.local(),
                        contents,
                    },
                );
                if let Err(e) = rtc.handle_input(input) {
                    debug!("WHIP: input: {e}");
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => break Err(e.into()),
        }
    };
    if opts.vanish {
        return result.map(|()| stats);
    }
    if let Some(loc) = &location {
        let _ = http(server, "DELETE", loc, &[], &[]);
    }
    result.map(|()| stats)
}
