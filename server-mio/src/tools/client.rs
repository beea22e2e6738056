//! The project's own FTL client: streams an H.264 Annex-B file and an Opus (Ogg) file to any
//! FTL server as OBS does, with real-time pacing, pings, sender reports and NACK answers from a
//! retransmit ring. Tests, benchmarks and users without OBS stream with it.
//!
//! It runs on the calling thread with blocking sockets and short timeouts; it is a client, not
//! part of the server's loop.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ftl_proto::control::{ClientConfig, ClientEvent, ClientSession, Metadata};
use ftl_proto::media::packetize::{access_units, packetize_nal, split_annexb, FTL_MAX_PAYLOAD};
use ftl_proto::media::{build_ping, Nack, RtpHeader, SenderReport};
use ftl_proto::{ChannelId, Ssrc, StreamKey};

/// What to stream and how.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The server's FTL control address (`host:8084`).
    pub server: String,
    /// The OBS stream key, `<channel>-<secret>`.
    pub stream_key: String,
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
    /// Pacing factor: 1.0 is real time, 2.0 twice as fast.
    pub speed: f64,
    /// Loss simulation: do not send every n-th media packet the first time (it stays in the
    /// retransmit ring, so a NACK brings it).
    pub drop_every: Option<u32>,
    /// Start like OBS: about a second of 1392-byte junk on the audio SSRC (its bandwidth
    /// test), then the stream with numbering from 0.
    pub speed_test: bool,
    /// Records when each media payload was sent (by content hash), for latency measurements.
    pub sent_log: Option<SentLog>,
    /// Pace video as the FTL library does (see [`pace_video`]) at this peak rate; `None` sends
    /// each frame's packets at the frame's instant.
    pub peak_kbps: Option<u32>,
    /// The most the paced sender runs ahead of its peak rate, in milliseconds of it:
    /// [`PACE_BURST_MS`] as the FTL library; less stands for a smoother encoder.
    pub pace_burst_ms: u64,
    /// Go on sending media after the server ended the session (a `410`, a closed control
    /// connection), as an encoder that never hears it would: the stray sender of the session
    /// isolation tests. Stops at `duration` or when told to.
    pub deaf_to_end: bool,
    /// Appends `<frame> <unix µs>` when each video frame's last packet is first sent (frame:
    /// its number in the file, counted from 0 on every pass): the wire instants the latency
    /// benchmark matches to the frame numbers a viewer reads back from the picture.
    pub frame_log: Option<std::path::PathBuf>,
}

/// The send instants of video frames (see [`ClientOptions::frame_log`]).
struct FrameLog(Option<std::fs::File>);

impl FrameLog {
    fn open(path: Option<&std::path::Path>) -> io::Result<FrameLog> {
        let file = match path {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => None,
        };
        Ok(FrameLog(file))
    }

    /// Notes that `p` was sent now, if it ends a frame.
    fn sent(&mut self, p: &Scheduled) {
        use std::io::Write;
        let Some(f) = self.0.as_mut() else { return };
        if !(p.video && p.marker) {
            return;
        }
        let us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        // One short line per frame, written at once (30 a second): a reader sees whole lines.
        let _ = f.write_all(format!("{} {us}\n", p.frame).as_bytes());
    }
}

/// Send instants of media payloads, keyed by [`payload_hash`]; shared between a sender and the
/// viewers of a load test in one process (one clock).
pub type SentLog = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>>;

/// FNV-1a of a payload: how a receiver finds the send time of what it got, whatever the server
/// rewrote in the headers.
pub fn payload_hash(p: &[u8]) -> u64 {
    p.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The media options the FTL and WHIP client binaries share.
#[derive(Debug, Clone, clap::Args)]
pub struct MediaArgs {
    /// H.264 Annex-B file, without B-frames (`ffmpeg ... -c:v libx264 -bf 0 -f h264`).
    #[arg(long)]
    pub video: Option<std::path::PathBuf>,
    /// Opus in Ogg (`ffmpeg ... -c:a libopus -frame_duration 20`).
    #[arg(long)]
    pub audio: Option<std::path::PathBuf>,
    /// Frame rate of the video file.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Start over at the end of the files.
    #[arg(long = "loop")]
    pub repeat: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
}

/// The contents of the optional video and audio files.
pub type MediaFiles = (Option<Vec<u8>>, Option<Vec<u8>>);

impl MediaArgs {
    /// Reads the files.
    pub fn read(&self) -> Result<MediaFiles, String> {
        let read = |p: Option<&std::path::Path>| -> Result<Option<Vec<u8>>, String> {
            p.map(|p| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())))
                .transpose()
        };
        Ok((read(self.video.as_deref())?, read(self.audio.as_deref())?))
    }

    /// How long to stream, if limited.
    pub fn duration(&self) -> Option<Duration> {
        self.duration.map(Duration::from_secs_f64)
    }
}

/// What a streaming session did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub media_port: u16,
    pub video_packets: u64,
    pub audio_packets: u64,
    pub pings: u64,
    pub pongs: u64,
    pub nacks: u64,
    pub retransmitted: u64,
    /// The server ended the session while media went on (`deaf_to_end`).
    pub ended_deaf: bool,
}

/// Why streaming stopped early.
#[derive(Debug)]
pub enum ClientError {
    BadKey,
    Io(io::Error),
    Protocol(ftl_proto::Error),
    NoMedia,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::BadKey => f.write_str("stream key must be <channel>-<secret>"),
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Protocol(e) => write!(f, "{e}"),
            ClientError::NoMedia => f.write_str("nothing to stream: give a video or an audio file"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// One packet ready to send at an offset from the start.
pub struct Scheduled {
    pub at: Duration,
    pub video: bool,
    pub marker: bool,
    pub ts: u32,
    /// The video frame's number in the file (0 for audio).
    pub frame: u32,
    pub payload: Vec<u8>,
}

/// The packets of one pass over the files, in send order.
pub fn schedule(opts: &ClientOptions) -> (Vec<Scheduled>, Duration) {
    let mut out = Vec::new();
    let mut length = Duration::ZERO;
    if let Some(v) = &opts.video {
        let nals = split_annexb(v);
        let fps = opts.fps.max(1);
        for (i, au) in access_units(&nals).iter().enumerate() {
            let at = Duration::from_micros(i as u64 * 1_000_000 / u64::from(fps));
            let mut payloads = Vec::new();
            for nal in au {
                packetize_nal(nal, FTL_MAX_PAYLOAD, &mut payloads);
            }
            let n = payloads.len();
            for (j, p) in payloads.into_iter().enumerate() {
                out.push(Scheduled {
                    at,
                    video: true,
                    marker: j + 1 == n,
                    ts: (i as u64 * 90_000 / u64::from(fps)) as u32,
                    frame: i as u32,
                    payload: p,
                });
            }
            length = length.max(at + Duration::from_micros(1_000_000 / u64::from(fps)));
        }
    }
    if let Some(a) = &opts.audio {
        let mut r = ogg::PacketReader::new(io::Cursor::new(a));
        let mut samples: u64 = 0;
        while let Ok(Some(p)) = r.read_packet() {
            if p.data.starts_with(b"OpusHead") || p.data.starts_with(b"OpusTags") {
                continue;
            }
            let at = Duration::from_micros(samples * 1_000_000 / 48_000);
            let n = opus_samples(&p.data);
            out.push(Scheduled {
                at,
                video: false,
                marker: false,
                ts: samples as u32,
                frame: 0,
                payload: p.data,
            });
            samples += n;
        }
        length = length.max(Duration::from_micros(samples * 1_000_000 / 48_000));
    }
    out.sort_by_key(|s| s.at);
    (out, length)
}

/// How much the FTL library lets its video sender run ahead of its peak rate: a burst of up
/// to 100 ms of it (the wire reference; OBS 29's capture shows its steady ~4 ms spacing of
/// full packets).
pub const PACE_BURST_MS: u64 = 100;
/// The level a stream starts with, so that it does not open with a burst.
const PACE_START_MS: u64 = 5;

/// Moves video packets to the instants the FTL library's sender would send them: a token
/// bucket filled at `peak_kbps` (OBS sets it to 1.2x the encoder's bitrate), holding at most
/// `burst_ms` of it ([`PACE_BURST_MS`] in the library); a packet leaves once the level is
/// above zero, and takes its size from it. Audio has its own sender in the library and keeps
/// its instants. The order of video packets is kept; the result is sorted by instant again.
pub fn pace_video(packets: &mut [Scheduled], peak_kbps: u32, burst_ms: u64) {
    let per_ms = f64::from(peak_kbps.max(1)) / 8.0; // bytes per millisecond
    let cap = per_ms * burst_ms as f64;
    let mut level = per_ms * PACE_START_MS.min(burst_ms) as f64;
    let mut clock = Duration::ZERO;
    for p in packets.iter_mut().filter(|p| p.video) {
        let mut t = p.at.max(clock);
        level = (level + per_ms * (t - clock).as_secs_f64() * 1000.0).min(cap);
        if level <= 0.0 {
            // Wait until the bucket is above zero again.
            let wait_ms = -level / per_ms + 0.001;
            t += Duration::from_secs_f64(wait_ms / 1000.0);
            level += per_ms * wait_ms;
        }
        level -= (p.payload.len() + 12) as f64;
        clock = t;
        p.at = t;
    }
    packets.sort_by_key(|p| p.at);
}

/// The peak OBS gives the FTL library for these files: 1.2x their average video bitrate.
pub fn obs_peak_kbps(opts: &ClientOptions) -> u32 {
    let (packets, length) = schedule(opts);
    video_kbps(&packets, length).saturating_mul(12) / 10
}

impl ClientOptions {
    /// Video paced at `peak` kbit/s, as a command line gives it: absent, OBS's peak for these
    /// files ([`obs_peak_kbps`]); 0, not paced.
    pub fn paced_at(self, peak: Option<u32>) -> ClientOptions {
        let peak = peak.unwrap_or_else(|| obs_peak_kbps(&self));
        ClientOptions {
            peak_kbps: (peak > 0).then_some(peak),
            ..self
        }
    }
}

/// The average video bitrate of one pass over the files, in kbit/s.
pub fn video_kbps(packets: &[Scheduled], length: Duration) -> u32 {
    let bytes: usize = packets
        .iter()
        .filter(|p| p.video)
        .map(|p| p.payload.len() + 12)
        .sum();
    (bytes as f64 * 8.0 / length.as_secs_f64().max(0.001) / 1000.0) as u32
}

/// Samples at 48 kHz in an Opus packet (RFC 6716 §3.1), 960 when unreadable.
fn opus_samples(p: &[u8]) -> u64 {
    let Some(&toc) = p.first() else { return 960 };
    let config = toc >> 3;
    let frame: u64 = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => p.get(1).map_or(1, |b| u64::from(b & 0x3f)),
    };
    frame * frames.max(1)
}

/// A ring of recently sent packets per SSRC, for NACK answers (the reference client keeps 2048).
struct Ring {
    packets: VecDeque<(u16, Vec<u8>)>,
}

impl Ring {
    const SIZE: usize = 2048;
    fn push(&mut self, seq: u16, datagram: Vec<u8>) {
        if self.packets.len() == Self::SIZE {
            self.packets.pop_front();
        }
        self.packets.push_back((seq, datagram));
    }
    fn get(&self, seq: u16) -> Option<&[u8]> {
        self.packets
            .iter()
            .rev()
            .find(|(s, _)| *s == seq)
            .map(|(_, d)| d.as_slice())
    }
}

/// Connects, streams until the files end (or `duration`, or `stop`), then disconnects.
pub fn stream(opts: &ClientOptions, stop: &AtomicBool) -> Result<ClientStats, ClientError> {
    let (channel, key) = StreamKey::parse_obs(&opts.stream_key).map_err(|_| ClientError::BadKey)?;
    if opts.video.is_none() && opts.audio.is_none() {
        return Err(ClientError::NoMedia);
    }
    let server: SocketAddr = opts
        .server
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "server address"))?;
    let mut control = Control::connect(server, channel, key, opts)?;
    let port = control.handshake()?;
    let mut stats = ClientStats {
        media_port: port,
        ..ClientStats::default()
    };
    let bind = SocketAddr::new(
        if server.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        },
        0,
    );
    let udp = UdpSocket::bind(bind)?;
    udp.connect(SocketAddr::new(server.ip(), port))?;
    udp.set_nonblocking(true)?;

    if opts.speed_test {
        // OBS sends ~15 Mbit/s for a second: 1392-byte payloads, timestamp 0, PT 97.
        let junk = vec![0xa5u8; 1392];
        let t = Instant::now();
        let mut seq: u16 = 0;
        while t.elapsed() < Duration::from_secs(1) {
            for _ in 0..14 {
                let d = RtpHeader {
                    marker: false,
                    payload_type: 97,
                    sequence_number: seq,
                    timestamp: 0,
                    ssrc: Ssrc(channel.0),
                }
                .build(&junk);
                let _ = udp.send(&d);
                seq = seq.wrapping_add(1);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let (mut packets, length) = schedule(opts);
    if let Some(kbps) = opts.peak_kbps {
        pace_video(&mut packets, kbps, opts.pace_burst_ms);
    }
    let mut frame_log = FrameLog::open(opts.frame_log.as_deref())?;
    let audio_ssrc = Ssrc(channel.0);
    let video_ssrc = Ssrc(channel.0.wrapping_add(1));
    let (mut vseq, mut aseq) = (0u16, 0u16);
    let mut vring = Ring {
        packets: VecDeque::new(),
    };
    let mut aring = Ring {
        packets: VecDeque::new(),
    };
    let speed = if opts.speed > 0.0 { opts.speed } else { 1.0 };
    let start = Instant::now();
    let scaled = |d: Duration| start + d.div_f64(speed);
    let mut lap: u32 = 0;
    let mut i = 0usize;
    let mut next_ping = start;
    let mut next_sr = start;
    let (mut vcount, mut vbytes, mut acount, mut abytes) = (0u32, 0u32, 0u32, 0u32);
    let lap_ticks_v = (length.as_micros() * 90 / 1000) as u32;
    let lap_ticks_a = (length.as_micros() * 48 / 1000) as u32;
    let mut buf = [0u8; 2048];
    loop {
        let now = Instant::now();
        let elapsed = now - start;
        if stop.load(Ordering::SeqCst) || opts.duration.is_some_and(|d| elapsed.mul_f64(speed) >= d)
        {
            break;
        }
        // Media due now.
        while let Some(p) = packets.get(i) {
            let at = length * lap + p.at;
            if scaled(at) > now {
                break;
            }
            let (seq, ssrc, pt, ts) = if p.video {
                (
                    &mut vseq,
                    video_ssrc,
                    96,
                    p.ts.wrapping_add(lap_ticks_v.wrapping_mul(lap)),
                )
            } else {
                (
                    &mut aseq,
                    audio_ssrc,
                    97,
                    p.ts.wrapping_add(lap_ticks_a.wrapping_mul(lap)),
                )
            };
            let datagram = RtpHeader {
                marker: p.marker,
                payload_type: pt,
                sequence_number: *seq,
                timestamp: ts,
                ssrc,
            }
            .build(&p.payload);
            let dropped = opts.drop_every.is_some_and(|n| {
                (stats.video_packets + stats.audio_packets + 1) % u64::from(n.max(2)) == 0
            });
            if !dropped {
                // Logged before sending: a receiver must never look up a packet before its entry.
                if let Some(log) = &opts.sent_log {
                    if let Ok(mut m) = log.lock() {
                        m.insert(payload_hash(&p.payload), Instant::now());
                    }
                }
                let _ = udp.send(&datagram);
                frame_log.sent(p);
            }
            if p.video {
                stats.video_packets += 1;
                vcount += 1;
                vbytes = vbytes.wrapping_add(p.payload.len() as u32);
                vring.push(*seq, datagram);
            } else {
                stats.audio_packets += 1;
                acount += 1;
                abytes = abytes.wrapping_add(p.payload.len() as u32);
                aring.push(*seq, datagram);
            }
            *seq = seq.wrapping_add(1);
            i += 1;
        }
        if i >= packets.len() {
            if !opts.repeat {
                break;
            }
            i = 0;
            lap += 1;
        }
        if now >= next_ping {
            let _ = udp.send(&build_ping(elapsed.as_micros() as u64));
            stats.pings += 1;
            next_ping = now + Duration::from_millis(25);
        }
        if now >= next_sr {
            let ntp = ntp_now();
            let media_t = elapsed.mul_f64(speed);
            for (ssrc, rate, count, bytes) in [
                (video_ssrc, 90u128, vcount, vbytes),
                (audio_ssrc, 48, acount, abytes),
            ] {
                let sr = SenderReport {
                    ssrc,
                    ntp,
                    rtp_timestamp: (media_t.as_micros() * rate / 1000) as u32,
                    packet_count: count,
                    octet_count: bytes,
                };
                let _ = udp.send(&sr.build());
            }
            next_sr = now + Duration::from_secs(1);
        }
        // NACKs and ping echoes from the server.
        while let Ok(n) = udp.recv(&mut buf) {
            let data = buf.get(..n).unwrap_or_default();
            if data.get(1) == Some(&250) {
                stats.pongs += 1;
            } else if let Ok(nack) = Nack::parse(data) {
                stats.nacks += 1;
                let ring = if nack.media_ssrc == video_ssrc {
                    &vring
                } else {
                    &aring
                };
                for seq in nack.lost() {
                    if let Some(d) = ring.get(seq) {
                        let _ = udp.send(d);
                        stats.retransmitted += 1;
                    }
                }
            }
        }
        if let Err(e) = control.pump() {
            if !opts.deaf_to_end {
                return Err(e);
            }
            if !stats.ended_deaf {
                log::debug!("FTL: the session ended ({e}); media goes on");
                stats.ended_deaf = true;
            }
        }
        let next_media = packets
            .get(i)
            .map(|p| scaled(length * lap + p.at))
            .unwrap_or(now);
        let wake = next_media.min(next_ping).min(next_sr);
        let sleep = wake
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(5));
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
    }
    control.disconnect();
    Ok(stats)
}

fn ntp_now() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() + 2_208_988_800;
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The control connection, pumped between media sends.
struct Control {
    tcp: TcpStream,
    session: ClientSession,
}

impl Control {
    fn connect(
        server: SocketAddr,
        channel: ChannelId,
        key: StreamKey,
        _opts: &ClientOptions,
    ) -> Result<Control, ClientError> {
        let tcp = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_millis(2)))?;
        let session = ClientSession::new(
            ClientConfig::new(channel, key, Metadata::reference(channel.0)),
            Instant::now(),
        );
        Ok(Control { tcp, session })
    }

    /// Runs the handshake; returns the media port.
    fn handshake(&mut self) -> Result<u16, ClientError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(ev) = self.pump_events()? {
                return Ok(ev);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(ClientError::Protocol(ftl_proto::Error::ReplyTimeout))
    }

    fn pump_events(&mut self) -> Result<Option<u16>, ClientError> {
        self.pump()?;
        if let Some(ev) = self.session.poll_event() {
            match ev {
                ClientEvent::Connected { port } => return Ok(Some(port)),
                ClientEvent::Closed { reason } => {
                    return Err(match reason {
                        ftl_proto::control::ClientCloseReason::Error(e) => ClientError::Protocol(e),
                        other => ClientError::Io(io::Error::other(format!("{other:?}"))),
                    })
                }
            }
        }
        Ok(None)
    }

    fn pump(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        self.session.handle_timeout(now);
        while let Some(b) = self.session.poll_transmit() {
            self.tcp.write_all(&b)?;
        }
        let mut buf = [0u8; 1024];
        match self.tcp.read(&mut buf) {
            Ok(0) => self.session.handle_eof(),
            Ok(n) => {
                let _ = self
                    .session
                    .handle_input(buf.get(..n).unwrap_or_default(), now);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
        while let Some(b) = self.session.poll_transmit() {
            self.tcp.write_all(&b)?;
        }
        if self.session.is_closed() {
            while let Some(ev) = self.session.poll_event() {
                if let ClientEvent::Closed {
                    reason: ftl_proto::control::ClientCloseReason::Error(e),
                } = ev
                {
                    return Err(ClientError::Protocol(e));
                }
            }
        }
        Ok(())
    }

    fn disconnect(&mut self) {
        self.session.disconnect();
        while let Some(b) = self.session.poll_transmit() {
            let _ = self.tcp.write_all(&b);
        }
        let _ = self.tcp.flush();
    }
}

/// Sends the files as plain RTP (video PT 96, audio PT 111) to two UDP addresses with real-time
/// pacing, looping until `stop`: the input for relays without FTL (a Janus streaming
/// mountpoint). Returns the packets sent.
pub fn rtp_sender(
    opts: &ClientOptions,
    video: SocketAddr,
    audio: SocketAddr,
    stop: &AtomicBool,
) -> io::Result<u64> {
    let udp = UdpSocket::bind(SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0))?;
    let (mut packets, length) = schedule(opts);
    if let Some(kbps) = opts.peak_kbps {
        pace_video(&mut packets, kbps, opts.pace_burst_ms);
    }
    let mut frame_log = FrameLog::open(opts.frame_log.as_deref())?;
    let start = Instant::now();
    let (mut vseq, mut aseq) = (0u16, 0u16);
    let mut sent = 0u64;
    let lap_v = (length.as_micros() * 90 / 1000) as u32;
    let lap_a = (length.as_micros() * 48 / 1000) as u32;
    let mut lap = 0u32;
    while !stop.load(Ordering::SeqCst) && opts.duration.is_none_or(|d| start.elapsed() < d) {
        for p in &packets {
            let due = start + length * lap + p.at;
            while Instant::now() < due {
                if stop.load(Ordering::SeqCst) {
                    return Ok(sent);
                }
                std::thread::sleep(
                    due.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(2)),
                );
            }
            let (seq, ssrc, pt, ts, to) = if p.video {
                (
                    &mut vseq,
                    Ssrc(2),
                    96,
                    p.ts.wrapping_add(lap_v.wrapping_mul(lap)),
                    video,
                )
            } else {
                (
                    &mut aseq,
                    Ssrc(1),
                    111,
                    p.ts.wrapping_add(lap_a.wrapping_mul(lap)),
                    audio,
                )
            };
            let d = RtpHeader {
                marker: p.marker,
                payload_type: pt,
                sequence_number: *seq,
                timestamp: ts,
                ssrc,
            }
            .build(&p.payload);
            *seq = seq.wrapping_add(1);
            if let Some(log) = &opts.sent_log {
                if let Ok(mut m) = log.lock() {
                    m.insert(payload_hash(&p.payload), Instant::now());
                }
            }
            let _ = udp.send_to(&d, to);
            frame_log.sent(p);
            sent += 1;
        }
        if !opts.repeat {
            break;
        }
        lap += 1;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_durations() {
        assert_eq!(opus_samples(&[0xfc]), 960); // config 31 (CELT FB 20 ms), one frame
        assert_eq!(opus_samples(&[0x78]), 960); // config 15 (hybrid FB 20 ms)
        assert_eq!(opus_samples(&[0xfd]), 1920); // two frames
        assert_eq!(opus_samples(&[]), 960);
    }

    fn packet(at_ms: u64, video: bool, size: usize) -> Scheduled {
        Scheduled {
            at: Duration::from_millis(at_ms),
            frame: 0,
            video,
            marker: false,
            ts: at_ms as u32,
            payload: vec![video as u8; size],
        }
    }

    /// 3000 kbit/s is 375 bytes per millisecond; a full packet is 1200 + 12 bytes.
    #[test]
    fn pacing_spreads_a_burst_at_the_peak_rate_and_leaves_audio_alone() {
        let mut p: Vec<Scheduled> = (0..40).map(|_| packet(0, true, 1200)).collect();
        p.push(packet(3, false, 100));
        pace_video(&mut p, 3000, PACE_BURST_MS);
        let video: Vec<Duration> = p.iter().filter(|p| p.video).map(|p| p.at).collect();
        assert_eq!(video.len(), 40);
        assert!(video.windows(2).all(|w| w[0] <= w[1]));
        // The 5 ms start level lets two packets go at once, then the bucket sets the pace.
        assert_eq!(video[0], Duration::ZERO);
        assert_eq!(video[1], Duration::ZERO);
        assert!(video[2] > Duration::ZERO);
        let spread = (video[39] - video[2]).as_secs_f64() * 1000.0;
        let expected = 37.0 * 1212.0 / 375.0;
        assert!(
            (spread - expected).abs() < 1.0,
            "{spread} ms, not {expected}"
        );
        let audio: Vec<&Scheduled> = p.iter().filter(|p| !p.video).collect();
        assert_eq!(audio[0].at, Duration::from_millis(3));
        assert!(p.windows(2).all(|w| w[0].at <= w[1].at), "sorted again");
    }

    #[test]
    fn a_rested_bucket_allows_a_burst_of_100_ms_of_the_peak() {
        let mut p = vec![packet(0, true, 100)];
        p.extend((0..40).map(|_| packet(10_000, true, 1200)));
        pace_video(&mut p, 3000, PACE_BURST_MS);
        let at_once = p
            .iter()
            .filter(|p| p.at == Duration::from_millis(10_000))
            .count();
        // 37 500 bytes of level: 31 packets take it to zero (the 31st below), then the pace.
        assert_eq!(at_once, 31);
    }

    #[test]
    fn a_smaller_burst_allowance_lets_fewer_packets_go_at_once() {
        let mut p = vec![packet(0, true, 100)];
        p.extend((0..40).map(|_| packet(10_000, true, 1200)));
        pace_video(&mut p, 3000, 5);
        let at_once = p
            .iter()
            .filter(|p| p.at == Duration::from_millis(10_000))
            .count();
        // 1875 bytes of level: the second packet takes it below zero, the rest are paced.
        assert_eq!(at_once, 2);
        let last = p.last().map(|p| p.at).unwrap_or_default();
        // The 40th packet leaves once the bucket refilled what the first 39 took beyond the
        // 1875 bytes it started with.
        let expected = 10_000.0 + (39.0 * 1212.0 - 1875.0) / 375.0;
        let got = last.as_secs_f64() * 1000.0;
        assert!((got - expected).abs() < 1.0, "{got} ms, not {expected}");
    }

    #[test]
    fn the_obs_peak_is_a_fifth_above_the_average() {
        let p: Vec<Scheduled> = (0..100).map(|i| packet(i * 10, true, 113)).collect();
        // 100 packets of 125 bytes in 1 s: 100 kbit/s.
        assert_eq!(video_kbps(&p, Duration::from_secs(1)), 100);
    }
}
