//! A receive-only WebRTC viewer built on str0m, for tests, the load generator and anyone who
//! wants to check a server from a terminal: it joins over WHEP or the WebSocket protocol and
//! records the raw RTP packets it receives.
//!
//! It runs on the caller's thread with a non-blocking socket: [`Viewer::step`] does the work
//! that is ready without waiting, [`Viewer::drive`] steps until a condition holds or time runs
//! out.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ftl_proto::media::packetize::depacketize;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::net::Receive;
use str0m::rtp::RtpPacket;
use str0m::{Event, Input, Output, Rtc, RtcConfig};

use crate::client::http::{request as http, HttpResponse};
use crate::client::link::Link;
use crate::client::sdp::tcp_candidate;

/// Why joining failed.
#[derive(Debug)]
pub enum JoinError {
    /// The server answered with this response.
    Refused(HttpResponse),
    Io(io::Error),
    Protocol(String),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::Refused(r) => {
                write!(
                    f,
                    "refused with {}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body).trim()
                )
            }
            JoinError::Io(e) => write!(f, "{e}"),
            JoinError::Protocol(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for JoinError {}

impl From<io::Error> for JoinError {
    fn from(e: io::Error) -> Self {
        JoinError::Io(e)
    }
}

fn protocol(e: impl std::fmt::Display) -> JoinError {
    JoinError::Protocol(e.to_string())
}

/// Decides, for each SRTP media datagram a probe receives, whether to drop it.
pub type DropFilter = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// A viewer and what it received.
pub struct Viewer {
    pub rtc: Rtc,
    link: Link,
    /// Video RTP packets in arrival order.
    pub video: Vec<RtpPacket>,
    /// Audio RTP packets in arrival order.
    pub audio: Vec<RtpPacket>,
    /// When ICE and DTLS completed.
    pub connected: Option<Instant>,
    /// When the join started (the first request).
    pub created: Instant,
    /// The node that answered a WHEP offer (another one than asked, after a redirect).
    pub served_by: Option<SocketAddr>,
    /// The server's SDP: the WHEP answer, or the offer over the WebSocket.
    pub remote_sdp: Option<String>,
    /// The WHEP session's URL path, for DELETE.
    pub whep_location: Option<String>,
    /// The Janus session's API path, for `destroy`.
    pub janus_session: Option<String>,
    /// The signalling WebSocket, for viewers that joined over it.
    pub ws: Option<tungstenite::WebSocket<TcpStream>>,
    /// Every JSON message received on the WebSocket.
    pub ws_events: Vec<serde_json::Value>,
    /// Keep the packets (tests) or only count them (load).
    pub keep_packets: bool,
    pub video_count: u64,
    pub audio_count: u64,
    pub bytes: u64,
    /// When the first video packet arrived.
    pub first_video: Option<Instant>,
    /// When the first packet that starts a keyframe arrived.
    pub first_keyframe: Option<Instant>,
    /// Lowest and highest video sequence numbers seen (for loss: span minus count).
    pub video_seq_range: Option<(u64, u64)>,
    /// Drop every n-th incoming RTP datagram (loss simulation, after connecting).
    pub drop_every: Option<u32>,
    /// Datagrams dropped by `drop_every`.
    pub dropped: u64,
    /// Loss by rule: drops each SRTP media datagram (clear header and all) for which it
    /// returns true, once connected; counted in `dropped`.
    pub drop_filter: Option<DropFilter>,
    /// The sender's log of send instants: set it to measure per-packet latency.
    pub sent_log: Option<crate::tools::client::SentLog>,
    /// Per-packet latency samples in microseconds (from the sender's send to this arrival).
    pub latency_us: Vec<u32>,
    /// Count media from the clear RTP header instead of decrypting it, once the first keyframe
    /// arrived (see [`Light`]): the load generator's many viewers cost it a fraction of a full
    /// receiver, so that it measures the server and not itself.
    pub light: bool,
    /// Media datagrams a light viewer counted without decrypting.
    pub light_packets: u64,
    light_state: Light,
    /// When str0m next wants time to pass.
    next_timeout: Option<Instant>,
    rtp_seen: u32,
    buf: Vec<u8>,
}

/// What a light viewer learns from its first decrypted packet: the SRTP overhead of a packet
/// (its authentication tag), and then which payload types are video and audio.
#[derive(Debug, Default, Clone)]
struct Light {
    /// Wire length and RTP header length of the last SRTP datagram handed to str0m.
    last_wire: Option<(usize, usize)>,
    /// Wire length minus header minus decrypted payload.
    overhead: Option<usize>,
    /// Payload type and whether it is video (H.264) rather than audio (Opus).
    pts: Vec<(u8, bool)>,
}

/// Whether a datagram is SRTP media (RTP, not RTCP: RFC 5761 §4 and RFC 7983's first byte).
fn is_srtp_media(b: &[u8]) -> bool {
    matches!(b.first(), Some(0x80..=0xbf))
        && b.get(1)
            .is_some_and(|t| !ftl_proto::media::rtp::is_rtcp(*t))
}

/// The RTP header's length (fixed part, CSRCs, extension), which SRTP leaves in the clear.
fn rtp_header_len(b: &[u8]) -> Option<usize> {
    let first = *b.first()?;
    let mut len = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = u16::from_be_bytes([*b.get(len + 2)?, *b.get(len + 3)?]);
        len += 4 + 4 * usize::from(words);
    }
    (len <= b.len()).then_some(len)
}

/// The extended sequence number nearest to `last` whose low 16 bits are `seq`.
fn extend_seq(last: u64, seq: u16) -> u64 {
    let candidate = (last & !0xffff) | u64::from(seq);
    if candidate + 0x8000 < last {
        candidate + 0x1_0000
    } else if candidate > last + 0x8000 && candidate >= 0x1_0000 {
        candidate - 0x1_0000
    } else {
        candidate
    }
}

fn viewer_rtc(bind: SocketAddr) -> Result<(Rtc, Link), JoinError> {
    // Chromium's extensions, with playout delay as Chromium offers it too.
    let mut exts = str0m::rtp::ExtensionMap::standard();
    exts.set(12, str0m::rtp::Extension::PlayoutDelay);
    viewer_rtc_with(
        bind,
        Rtc::builder().set_rtp_mode(true).set_extension_map(exts),
    )
}

fn viewer_rtc_with(bind: SocketAddr, config: RtcConfig) -> Result<(Rtc, Link), JoinError> {
    let mut rtc = config.build(Instant::now());
    // A large receive buffer: many viewers in one thread must not lose a keyframe burst in the
    // kernel before their turn comes (that would measure the load generator, not the server).
    let s = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::DGRAM,
        None,
    )?;
    let _ = s.set_recv_buffer_size(4 * 1024 * 1024);
    s.bind(&bind.into())?;
    let link = Link::udp(s.into())?;
    link.set_wait(None)?;
    rtc.add_local_candidate(link.candidate().map_err(protocol)?);
    Ok((rtc, link))
}

impl Viewer {
    fn new(rtc: Rtc, link: Link, created: Instant) -> Viewer {
        Viewer {
            rtc,
            link,
            video: Vec::new(),
            audio: Vec::new(),
            connected: None,
            created,
            served_by: None,
            remote_sdp: None,
            whep_location: None,
            janus_session: None,
            ws: None,
            ws_events: Vec::new(),
            keep_packets: true,
            video_count: 0,
            audio_count: 0,
            bytes: 0,
            first_video: None,
            first_keyframe: None,
            video_seq_range: None,
            drop_every: None,
            dropped: 0,
            drop_filter: None,
            sent_log: None,
            latency_us: Vec::new(),
            light: false,
            light_packets: 0,
            light_state: Light::default(),
            next_timeout: None,
            rtp_seen: 0,
            buf: vec![0; 4096],
        }
    }

    /// Joins `channel` over WHEP at the server's HTTP address.
    pub fn whep(http_addr: SocketAddr, channel: u32) -> Result<Viewer, JoinError> {
        let (rtc, link) = viewer_rtc(SocketAddr::new(http_addr.ip(), 0))?;
        Self::whep_with(http_addr, channel, rtc, Some(link), None)
    }

    /// Joins `channel` over WHEP with ICE over TCP only: the viewer connects to the passive TCP
    /// candidate of the server's answer, as a browser behind a UDP-blocking firewall does.
    /// `recv_buffer` sets the connection's receive buffer (small: a paused reader backs the
    /// server up quickly).
    pub fn whep_over_tcp(
        http_addr: SocketAddr,
        channel: u32,
        recv_buffer: Option<usize>,
    ) -> Result<Viewer, JoinError> {
        let rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        Self::whep_with(http_addr, channel, rtc, None, recv_buffer)
    }

    fn whep_with(
        http_addr: SocketAddr,
        channel: u32,
        mut rtc: Rtc,
        link: Option<Link>,
        recv_buffer: Option<usize>,
    ) -> Result<Viewer, JoinError> {
        let created = Instant::now();
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().ok_or_else(|| protocol("no offer"))?;
        // A node of a cluster may send the viewer to another one (307, RFC 9725 §4.5).
        let mut node = http_addr;
        let mut path = format!("/whep/{channel}");
        let mut hops = 0;
        let r = loop {
            let r = http(
                node,
                "POST",
                &path,
                &[("Content-Type", "application/sdp")],
                offer.to_sdp_string().as_bytes(),
            )?;
            match (r.status, r.header("Location")) {
                (307 | 308, Some(to)) if hops < 3 => {
                    (node, path) = crate::client::url::split_url(to).map_err(protocol)?;
                    hops += 1;
                }
                _ => break r,
            }
        };
        if r.status != 201 {
            return Err(JoinError::Refused(r));
        }
        let sdp = std::str::from_utf8(&r.body).map_err(protocol)?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(protocol)?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(protocol)?;
        let link = match link {
            Some(l) => l,
            None => {
                let server = tcp_candidate(sdp)
                    .ok_or_else(|| protocol("the answer has no passive TCP candidate"))?;
                let l = Link::tcp(server, recv_buffer)?;
                l.set_wait(None)?;
                rtc.add_local_candidate(l.candidate().map_err(protocol)?);
                l
            }
        };
        let mut v = Viewer::new(rtc, link, created);
        v.served_by = Some(node);
        v.remote_sdp = Some(sdp.to_owned());
        v.whep_location = r.header("Location").map(str::to_owned);
        Ok(v)
    }

    /// Joins over the seed's WebSocket protocol; `query` is like `channel=77` or `port=9000`.
    pub fn websocket(http_addr: SocketAddr, query: &str) -> Result<Viewer, JoinError> {
        Self::websocket_with(http_addr, query, Rtc::builder().set_rtp_mode(true))
    }

    /// [`Viewer::websocket`] with the given str0m configuration (its codecs answer the
    /// server's offer: one without H.264 plays a browser that has no H.264 decoder).
    pub fn websocket_with(
        http_addr: SocketAddr,
        query: &str,
        config: RtcConfig,
    ) -> Result<Viewer, JoinError> {
        let created = Instant::now();
        let tcp = TcpStream::connect(http_addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let url = format!("ws://{http_addr}/websocket?{query}");
        let (mut ws, _) = tungstenite::client::client(url.as_str(), tcp).map_err(protocol)?;
        let mut events = Vec::new();
        let offer = loop {
            let msg = ws.read().map_err(protocol)?;
            let v: serde_json::Value =
                serde_json::from_str(msg.to_text().map_err(protocol)?).map_err(protocol)?;
            if v["event"] == "offer" {
                break v["data"]["sdp"].as_str().unwrap_or_default().to_owned();
            }
            if v["event"] == "error" {
                return Err(protocol(v["data"]["message"].to_string()));
            }
            events.push(v);
        };
        let (mut rtc, link) = viewer_rtc_with(SocketAddr::new(http_addr.ip(), 0), config)?;
        let offer_sdp = offer;
        let offer = SdpOffer::from_sdp_string(&offer_sdp).map_err(protocol)?;
        let answer = rtc.sdp_api().accept_offer(offer).map_err(protocol)?;
        let msg = serde_json::json!({"event": "answer", "data": {"type": "answer", "sdp": answer.to_sdp_string()}});
        ws.send(tungstenite::Message::text(msg.to_string()))
            .map_err(protocol)?;
        ws.get_mut().set_nonblocking(true)?;
        let mut v = Viewer::new(rtc, link, created);
        v.remote_sdp = Some(offer_sdp);
        v.ws = Some(ws);
        v.ws_events = events;
        Ok(v)
    }

    /// Watches a Janus streaming mountpoint over Janus's HTTP API (`base` like
    /// `http://127.0.0.1:8088/janus`): create a session, attach the streaming plugin, `watch`,
    /// take Janus's offer from the long poll, answer with `start`.
    pub fn janus(api: SocketAddr, base: &str, mountpoint: u64) -> Result<Viewer, JoinError> {
        let created = Instant::now();
        let post = |path: &str, body: serde_json::Value| -> Result<serde_json::Value, JoinError> {
            let r = http(
                api,
                "POST",
                path,
                &[("Content-Type", "application/json")],
                body.to_string().as_bytes(),
            )?;
            serde_json::from_slice(&r.body).map_err(protocol)
        };
        let session = post(
            base,
            serde_json::json!({"janus": "create", "transaction": "c"}),
        )?["data"]["id"]
            .as_u64()
            .ok_or_else(|| protocol("janus: no session"))?;
        let spath = format!("{base}/{session}");
        let handle = post(&spath, serde_json::json!({"janus": "attach", "plugin": "janus.plugin.streaming", "transaction": "a"}))?
            ["data"]["id"]
            .as_u64()
            .ok_or_else(|| protocol("janus: no handle"))?;
        let hpath = format!("{spath}/{handle}");
        post(
            &hpath,
            serde_json::json!({"janus": "message", "transaction": "w", "body": {"request": "watch", "id": mountpoint}}),
        )?;
        let offer = loop {
            if created.elapsed() > Duration::from_secs(20) {
                return Err(protocol("janus: no offer"));
            }
            let r = http(
                api,
                "GET",
                &format!("{spath}?maxev=1&rid={}", created.elapsed().as_micros()),
                &[],
                b"",
            )?;
            let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(protocol)?;
            let events = if v.is_array() {
                v.as_array().cloned().unwrap_or_default()
            } else {
                vec![v]
            };
            if let Some(sdp) = events
                .iter()
                .find_map(|e| e["jsep"]["sdp"].as_str().map(str::to_owned))
            {
                break sdp;
            }
        };
        let (mut rtc, link) = viewer_rtc(SocketAddr::new(api.ip(), 0))?;
        let answer = rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&offer).map_err(protocol)?)
            .map_err(protocol)?;
        post(
            &hpath,
            serde_json::json!({"janus": "message", "transaction": "s", "body": {"request": "start"},
                "jsep": {"type": "answer", "sdp": answer.to_sdp_string()}}),
        )?;
        let mut v = Viewer::new(rtc, link, created);
        v.janus_session = Some(spath);
        Ok(v)
    }

    /// Ends the viewer's session on the server (WHEP DELETE, or Janus `destroy`).
    pub fn leave(&self, api: SocketAddr) {
        if let Some(path) = &self.janus_session {
            let body = serde_json::json!({"janus": "destroy", "transaction": "d"}).to_string();
            let _ = http(
                api,
                "POST",
                path,
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            );
        } else if self.whep_location.is_some() {
            let _ = self.whep_delete(api);
        }
    }

    /// Does what is ready: sends str0m's datagrams, reads what arrived, handles timeouts.
    /// Returns whether any datagram arrived.
    pub fn step(&mut self) -> Result<bool, JoinError> {
        let mut got = false;
        for _ in 0..256 {
            match self.link.recv(&mut self.buf) {
                Ok((n, source)) => {
                    got = true;
                    if self.should_drop(n) {
                        continue;
                    }
                    if self.count_light(n) {
                        continue;
                    }
                    let contents = self
                        .buf
                        .get(..n)
                        .unwrap_or_default()
                        .try_into()
                        .map_err(protocol)?;
                    let input = Input::Receive(
                        Instant::now(),
                        Receive {
                            proto: self.link.protocol(),
                            source,
                            destination: self.link.local(),
                            contents,
                        },
                    );
                    self.rtc.handle_input(input).map_err(protocol)?;
                    self.poll()?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        // str0m's timers only when one is due or something arrived (a load of many viewers in
        // one thread would otherwise spend its time asking idle viewers for nothing).
        let now = Instant::now();
        if got || self.next_timeout.is_none_or(|t| t <= now) {
            self.rtc
                .handle_input(Input::Timeout(now))
                .map_err(protocol)?;
            self.poll()?;
        }
        self.link.flush()?;
        if let Some(ws) = self.ws.as_mut() {
            while let Ok(m) = ws.read() {
                if let Ok(v) =
                    serde_json::from_str::<serde_json::Value>(m.to_text().unwrap_or_default())
                {
                    self.ws_events.push(v);
                }
            }
        }
        Ok(got)
    }

    /// A light viewer's media once it knows the SRTP overhead and its payload types: counted
    /// from the clear header (payload bytes, video sequence numbers), not decrypted. Returns
    /// whether the datagram was taken; otherwise it goes to str0m and its header is noted.
    fn count_light(&mut self, n: usize) -> bool {
        let b = self.buf.get(..n).unwrap_or_default();
        if !self.light || !is_srtp_media(b) {
            return false;
        }
        let Some(hdr) = rtp_header_len(b) else {
            return false;
        };
        let l = &mut self.light_state;
        let (Some(overhead), Some(_)) = (l.overhead, self.first_keyframe) else {
            l.last_wire = Some((n, hdr));
            return false;
        };
        let pt = b.get(1).map_or(0, |x| x & 0x7f);
        let kind = l
            .pts
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, video)| *video);
        let seq = u16::from_be_bytes([
            b.get(2).copied().unwrap_or(0),
            b.get(3).copied().unwrap_or(0),
        ]);
        let payload = n.saturating_sub(hdr + overhead) as u64;
        self.light_packets += 1;
        if kind == Some(true) {
            self.bytes += payload;
            self.video_count += 1;
            self.video_seq_range = Some(match self.video_seq_range {
                None => (u64::from(seq), u64::from(seq)),
                Some((lo, hi)) => {
                    let s = extend_seq(hi, seq);
                    (lo.min(s), hi.max(s))
                }
            });
        } else if kind == Some(false) {
            self.bytes += payload;
            self.audio_count += 1;
        }
        true
    }

    /// Loss simulation: SRTP media (not STUN, DTLS or RTCP) once connected.
    fn should_drop(&mut self, n: usize) -> bool {
        if self.connected.is_none() || !is_srtp_media(self.buf.get(..n).unwrap_or_default()) {
            return false;
        }
        if let Some(f) = self.drop_filter.as_mut() {
            if f(self.buf.get(..n).unwrap_or_default()) {
                self.dropped += 1;
                return true;
            }
        }
        let Some(every) = self.drop_every else {
            return false;
        };
        self.rtp_seen += 1;
        if self.rtp_seen % every.max(2) == 0 {
            self.dropped += 1;
            return true;
        }
        false
    }

    fn poll(&mut self) -> Result<(), JoinError> {
        loop {
            match self.rtc.poll_output().map_err(protocol)? {
                Output::Transmit(t) => {
                    let _ = self.link.send(t.destination, &t.contents);
                }
                Output::Event(e) => self.event(e),
                Output::Timeout(t) => {
                    self.next_timeout = Some(t);
                    return Ok(());
                }
            }
        }
    }

    /// Steps until `done` holds or `limit` passes; returns whether `done` held.
    pub fn drive(&mut self, limit: Duration, mut done: impl FnMut(&Viewer) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if done(self) {
                return true;
            }
            match self.step() {
                Ok(true) => {}
                Ok(false) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => return done(self),
            }
        }
        done(self)
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Connected => self.connected = Some(Instant::now()),
            Event::RtpPacket(p) => {
                if let Some(log) = &self.sent_log {
                    let sent = log.lock().ok().and_then(|m| {
                        m.get(&crate::tools::client::payload_hash(&p.payload))
                            .copied()
                    });
                    if let Some(t) = sent {
                        if self.latency_us.len() < 200_000 {
                            self.latency_us
                                .push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        }
                    }
                }
                let pt = p.header.payload_type;
                let codec = self
                    .rtc
                    .codec_config()
                    .params()
                    .iter()
                    .find(|c| c.pt() == pt)
                    .map(|c| c.spec().codec);
                self.bytes += p.payload.len() as u64;
                if let Some((n, hdr)) = self.light_state.last_wire.take() {
                    if self.light_state.overhead.is_none() {
                        self.light_state.overhead = n.checked_sub(hdr + p.payload.len());
                        self.light_state.pts = self
                            .rtc
                            .codec_config()
                            .params()
                            .iter()
                            .filter_map(|c| match c.spec().codec {
                                Codec::H264 => Some((*c.pt(), true)),
                                Codec::Opus => Some((*c.pt(), false)),
                                _ => None,
                            })
                            .collect();
                    }
                }
                match codec {
                    Some(Codec::H264) => {
                        self.video_count += 1;
                        self.first_video.get_or_insert_with(Instant::now);
                        if self.first_keyframe.is_none()
                            && ftl_proto::media::h264::inspect(&p.payload)
                                .is_ok_and(|i| i.starts_keyframe())
                        {
                            self.first_keyframe = Some(Instant::now());
                        }
                        let seq = *p.seq_no;
                        self.video_seq_range = Some(match self.video_seq_range {
                            None => (seq, seq),
                            Some((lo, hi)) => (lo.min(seq), hi.max(seq)),
                        });
                        if self.keep_packets {
                            self.video.push(p);
                        }
                    }
                    Some(Codec::Opus) => {
                        self.audio_count += 1;
                        if self.keep_packets {
                            self.audio.push(p);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// The local address its media arrives on.
    pub fn local_addr(&self) -> SocketAddr {
        self.link.local()
    }

    /// Video packets missing between the lowest and highest sequence number seen.
    pub fn video_lost(&self) -> u64 {
        self.video_seq_range
            .map_or(0, |(lo, hi)| (hi - lo + 1).saturating_sub(self.video_count))
    }

    /// The H.264 NAL units received, in sequence-number order.
    pub fn nal_units(&self) -> Vec<Vec<u8>> {
        let mut v: Vec<&RtpPacket> = self.video.iter().collect();
        v.sort_by_key(|p| *p.seq_no);
        depacketize(v.iter().map(|p| &p.payload[..]))
    }

    /// Ends a WHEP session with DELETE; returns the status.
    pub fn whep_delete(&self, http_addr: SocketAddr) -> io::Result<u16> {
        let path = self.whep_location.as_deref().unwrap_or("/whep/none");
        let node = self.served_by.unwrap_or(http_addr);
        Ok(http(node, "DELETE", path, &[], b"")?.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_length_counts_csrcs_and_the_extension() {
        let mut p = vec![0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        p.extend_from_slice(&[0; 20]);
        assert_eq!(rtp_header_len(&p), Some(12));
        p[0] = 0x82; // two CSRCs
        assert_eq!(rtp_header_len(&p), Some(20));
        p[0] = 0x90; // an extension of one word after the fixed header
        p[14] = 0;
        p[15] = 1;
        assert_eq!(rtp_header_len(&p), Some(20));
        p[15] = 200; // an extension longer than the datagram
        assert_eq!(rtp_header_len(&p), None);
        assert_eq!(rtp_header_len(&[0x80, 96]), None);
    }

    #[test]
    fn sequence_numbers_extend_across_wraps_both_ways() {
        assert_eq!(extend_seq(10, 11), 11);
        assert_eq!(extend_seq(0xfffe, 2), 0x1_0002);
        assert_eq!(extend_seq(0x1_0002, 0xfffe), 0xfffe);
        assert_eq!(extend_seq(5, 0xfff0), 0xfff0, "no step below zero");
        assert_eq!(extend_seq(0x3_0000, 0x7000), 0x3_7000);
    }

    #[test]
    fn media_is_told_from_rtcp_stun_and_dtls() {
        assert!(is_srtp_media(&[0x80, 96]));
        assert!(is_srtp_media(&[0x80, 0xe0])); // PT 96 with the marker bit
        assert!(!is_srtp_media(&[0x80, 200])); // sender report
        assert!(!is_srtp_media(&[0x00, 0x01])); // STUN
        assert!(!is_srtp_media(&[22, 0xfe])); // DTLS
    }
}
