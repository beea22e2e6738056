//! The server: one `mio` poll loop on one thread drives every socket, the FTL sessions, the
//! relay and one str0m `Rtc` per viewer.
//!
//! Each iteration, in this order:
//! 1. poll with the earliest deadline of every state machine as the timeout;
//! 2. read every ready socket until `WouldBlock`, feeding each input with one `now`;
//! 3. run due timeouts (control sessions, HTTP deadlines, relay NACKs, viewers);
//! 4. drain the relay's outputs into viewers and media sockets;
//! 5. drive the viewers that got packets and send what str0m puts out.
//!
//! No call in the loop blocks: every socket is non-blocking, the only thread besides the loop
//! builds `Rtc`s (1.5-2.5 ms each) and hands them over through a `mio::Waker`.

mod addr_group;
mod api;
mod cluster;
mod control;
#[doc(hidden)]
pub mod fuzzing;
mod hooks;
mod http;
mod key_watch;
mod media_ports;
mod recording;
mod recordings_http;
mod selftest;
mod static_files;
mod thumbnails_http;
mod tls;
mod webrtc;
/// A viewer's str0m settings, for the egress benchmark.
pub use webrtc::pool::{estimating_viewer_config, viewer_config, viewer_video_tx};
mod ws;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ftl_proto::ChannelId;
use log::{info, warn};
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use relay_core::{Relay, RelayConfig};

use crate::config::ServerArgs;
use crate::keys::{KeyError, KeyStore};

pub use api::Counters;

const FTL_LISTENER: Token = Token(0);
const HTTP_LISTENER: Token = Token(1);
const WEBRTC_SOCKET: Token = Token(2);
const WAKER: Token = Token(3);
const SIGNALS: Token = Token(4);
const REDIRECT_LISTENER: Token = Token(5);
const ICE_TCP_LISTENER: Token = Token(6);
const FIRST_DYNAMIC: usize = 16;
/// How often the key file and the certificate pair are looked at.
const FILE_CHECK: Duration = Duration::from_millis(250);

/// Most datagrams read from one socket per wake-up, so one busy socket cannot starve others.
const READ_BUDGET: usize = 256;

/// What a dynamic token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Control,
    Http,
    Ws,
    Hook,
    Media(ChannelId),
    IceTcp,
    /// An edge's pull's own UDP socket (peer id).
    PullUdp(u64),
}

/// Socket buffers for the UDP sockets: one WebRTC socket carries every viewer, and a burst
/// (a keyframe fanned out, a GOP replayed to a joiner) must not overflow the kernel's default
/// ~200 KB. The kernel caps the value at `net.core.{r,w}mem_max`.
const UDP_BUFFER: usize = 4 * 1024 * 1024;

/// A non-blocking UDP socket with large buffers, bound to `addr` (both families for `::`).
fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = crate::dual_stack::socket(addr, socket2::Type::DGRAM)?;
    // Best effort: a smaller buffer is worse, not fatal.
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(UdpSocket::from_std(s.into()))
}

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    Bind(&'static str, SocketAddr, io::Error),
    Keys(KeyError),
    Hooks(crate::hooks::HookError),
    Tls(String),
    Io(io::Error),
    Cluster(String),
    Config(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Bind(what, addr, e) => write!(f, "cannot bind the {what} on {addr}: {e}"),
            StartError::Keys(e) => write!(f, "key store: {e}"),
            StartError::Hooks(e) => write!(f, "{e}"),
            StartError::Tls(e) => write!(f, "TLS: {e}"),
            StartError::Io(e) => write!(f, "{e}"),
            StartError::Cluster(e) => write!(f, "cluster: {e}"),
            StartError::Config(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The addresses the server listens on (ports resolved when 0 was asked for).
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub ftl: SocketAddr,
    pub http: SocketAddr,
    pub webrtc: SocketAddr,
    /// The plain-http listener that redirects to https, with `--http-redirect-port`.
    pub redirect: Option<SocketAddr>,
    /// ICE over TCP (passive), unless turned off.
    pub webrtc_tcp: Option<SocketAddr>,
}

/// Stops a running server from another thread.
#[derive(Clone)]
pub struct Handle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Handle {
    /// Asks the loop to shut down cleanly; returns at once.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// A live stream's media socket.
struct MediaSocket {
    token: Token,
    socket: UdpSocket,
    port: u16,
    /// The control connection that owns the stream.
    owner: Token,
}

/// The whole server state, owned by the loop thread.
pub struct Server {
    poll: Poll,
    args: ServerArgs,
    keys: KeyStore,
    /// When the watched files (the key file, the certificate pair) are next looked at.
    files_check_at: Instant,
    /// The state last noted in the data dir for the `keys` commands.
    running: crate::keys::Running,
    relay: Relay,
    ftl_listener: TcpListener,
    http_listener: TcpListener,
    /// Plain http that only redirects to https (`--http-redirect-port`).
    redirect_listener: Option<TcpListener>,
    /// The certificate pair in force, with `--tls-cert`.
    certs: Option<tls::Certs>,
    /// ICE over TCP: the listener and its connections.
    ice_tcp_listener: Option<TcpListener>,
    ice_tcp: webrtc::tcp::IceTcp,
    rtc_socket: UdpSocket,
    /// What the WebRTC peers put out, sent in batches (see `viewers_flush` and `udp_flush`).
    udp_out: crate::send_batch::SendBatch,
    /// Space for the arrival stamps of media reads (FTL media sockets, the WebRTC socket).
    stamps: crate::recv_stamp::Stamps,
    /// How long the WebRTC datagram being handled waited on this machine before it was read:
    /// what a WHIP publisher's packets tell the relay (see `Relay::handle_rtp_queued`).
    rtc_waited: Duration,
    addrs: Addrs,
    next_token: usize,
    slots: HashMap<Token, Slot>,
    controls: HashMap<Token, control::ControlConn>,
    https: HashMap<Token, http::HttpConn>,
    wss: HashMap<Token, ws::WsConn>,
    /// Sockets whose read budget ran out: read again next iteration without waiting.
    again: Vec<Token>,
    media: BTreeMap<ChannelId, MediaSocket>,
    /// Which media port the next FTL session gets.
    media_ports: media_ports::MediaPorts,
    media_tokens: HashMap<Token, ChannelId>,
    viewers: webrtc::peers::Viewers,
    pool: webrtc::pool::RtcPool,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    counters: Counters,
    /// Failed authentications per source IP: (count, start of the counting window).
    auth_failures: HashMap<std::net::IpAddr, (u32, Instant)>,
    /// Channels whose live stream a WHIP publisher owns, and which (peer id).
    whip_live: BTreeMap<ChannelId, u64>,
    /// WHIP offers waiting for the key service, by HTTP connection.
    whip_auth: HashMap<Token, webrtc::whip::WhipAuth>,
    /// The external key service and event sink, with `--auth-url`.
    hooks: Option<crate::hooks::Hooks>,
    /// Recordings of live streams and their writer thread.
    recorder: recording::Recorder,
    /// Thumbnails of live streams and the thread that makes them.
    thumbnails: crate::thumbnail::Thumbnails,
    /// Membership of a cluster (`--cluster`).
    cluster: Option<cluster::ClusterNode>,
    /// Channels this node pulls from their origins.
    pulls: webrtc::pull::Pulls,
    /// A number per start of each live stream (edges pull again when it changes).
    stream_epochs: HashMap<ChannelId, u64>,
    started: Instant,
    buf: Vec<u8>,
}

impl Server {
    /// Binds every listener and socket and opens the key store. With no channel in the key
    /// store, creates one and prints its OBS stream key and viewer URL.
    pub fn bind(args: ServerArgs, data_dir: &Path) -> Result<Server, StartError> {
        let mut keys = KeyStore::open(data_dir).map_err(StartError::Keys)?;
        let media_ports = media_ports::MediaPorts::new(args.media_ports.0, args.media_ports.1);
        let mut pulls = webrtc::pull::Pulls::default();
        if args.cluster.is_some() {
            let tls = crate::client::tls::TlsClient::new(args.cluster_ca.as_deref())
                .map_err(|e| StartError::Config(format!("--cluster-ca {e}")))?;
            pulls.tls = Some(tls);
        }
        let hooks = match &args.auth_url {
            Some(url) => Some(
                crate::hooks::Hooks::new(
                    url,
                    args.auth_ca.as_deref(),
                    Duration::from_secs(args.events_interval.max(1)),
                    Instant::now(),
                )
                .map_err(StartError::Hooks)?,
            ),
            None => None,
        };
        let poll = Poll::new().map_err(StartError::Io)?;
        let mut args = args;
        let public_ips = args.public_ips().map_err(StartError::Config)?;
        if crate::dual_stack::is_dual(args.addr) && !crate::dual_stack::ipv6_available() {
            warn!("IPv6 is off on this host: listening on IPv4 only (0.0.0.0)");
            args.addr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        }
        let bind_tcp = |what, port| {
            let addr = SocketAddr::new(args.addr, port);
            crate::dual_stack::tcp_listener(addr).map_err(|e| StartError::Bind(what, addr, e))
        };
        let mut ftl_listener = bind_tcp("FTL listener", args.ftl_port)?;
        let mut http_listener = bind_tcp("HTTP listener", args.http_port)?;
        let certs = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls::Certs::open(cert, key).map_err(StartError::Tls)?),
            _ => None,
        };
        let mut redirect_listener = match args.http_redirect_port {
            Some(port) => Some(bind_tcp("HTTP redirect listener", port)?),
            None => None,
        };
        let rtc_addr = SocketAddr::new(args.addr, args.webrtc_port);
        let mut rtc_socket =
            udp_socket(rtc_addr).map_err(|e| StartError::Bind("WebRTC socket", rtc_addr, e))?;
        let gso = !args.no_udp_gso && crate::send_batch::gso_supported(&rtc_socket);
        // Arrival stamps of WHIP publishers' media, as on FTL media sockets (overload).
        if !crate::recv_stamp::enable(&rtc_socket) {
            log::debug!("no receive timestamps on the WebRTC socket");
        }
        info!(
            "WebRTC sends: sendmmsg batches{}",
            if gso { " with UDP GSO" } else { ", no GSO" }
        );
        let udp_out = crate::send_batch::SendBatch::new(gso).for_ipv6_socket(rtc_addr.is_ipv6());
        let addrs = Addrs {
            ftl: ftl_listener.local_addr().map_err(StartError::Io)?,
            http: http_listener.local_addr().map_err(StartError::Io)?,
            webrtc: rtc_socket.local_addr().map_err(StartError::Io)?,
            redirect: match &redirect_listener {
                Some(l) => Some(l.local_addr().map_err(StartError::Io)?),
                None => None,
            },
            webrtc_tcp: None,
        };
        // ICE over TCP on the same port number as UDP unless told otherwise (0: no ICE-TCP).
        let mut addrs = addrs;
        let mut ice_tcp_listener = match args.webrtc_tcp_port.unwrap_or(addrs.webrtc.port()) {
            0 if args.webrtc_tcp_port == Some(0) => None,
            port => match bind_tcp("WebRTC TCP listener", port) {
                Ok(l) => Some(l),
                // The number of a UDP port the system picked may be taken on TCP; with no
                // port asked for either, any TCP port will do (answers name the one bound).
                Err(e) if args.webrtc_tcp_port.is_none() && args.webrtc_port == 0 => {
                    warn!("{e}; ICE over TCP takes a port of the system's choosing");
                    Some(bind_tcp("WebRTC TCP listener", 0)?)
                }
                Err(e) => return Err(e),
            },
        };
        if let Some(l) = ice_tcp_listener.as_mut() {
            addrs.webrtc_tcp = Some(l.local_addr().map_err(StartError::Io)?);
        }
        let reg = poll.registry();
        reg.register(&mut ftl_listener, FTL_LISTENER, Interest::READABLE)
            .map_err(StartError::Io)?;
        reg.register(&mut http_listener, HTTP_LISTENER, Interest::READABLE)
            .map_err(StartError::Io)?;
        if let Some(l) = redirect_listener.as_mut() {
            reg.register(l, REDIRECT_LISTENER, Interest::READABLE)
                .map_err(StartError::Io)?;
        }
        if let Some(l) = ice_tcp_listener.as_mut() {
            reg.register(l, ICE_TCP_LISTENER, Interest::READABLE)
                .map_err(StartError::Io)?;
        }
        reg.register(&mut rtc_socket, WEBRTC_SOCKET, Interest::READABLE)
            .map_err(StartError::Io)?;
        let waker = Arc::new(Waker::new(reg, WAKER).map_err(StartError::Io)?);
        let signals = match signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ]) {
            Ok(mut s) => {
                reg.register(&mut s, SIGNALS, Interest::READABLE)
                    .map_err(StartError::Io)?;
                Some(s)
            }
            Err(e) => {
                warn!("signals: {e}; shut down with the handle only");
                None
            }
        };
        if keys.channels().is_empty() && hooks.is_none() {
            let c = keys.add(None, None).map_err(StartError::Keys)?;
            println!("Created channel {} ({}).", c.id, c.name);
            println!("OBS settings: Service \"Custom\", Server \"ftl://<this host>\", Stream key:");
            println!("  {}", c.obs_key());
            println!(
                "Viewers watch at http://<this host>:{}/watch/{}",
                addrs.http.port(),
                c.id
            );
        }
        let relay = Relay::new(RelayConfig {
            max_streams: args.max_streams,
            max_viewers: args.max_viewers,
            max_viewers_per_channel: args.max_viewers_per_channel,
            gop_max_bytes: args.gop_cache_mb.saturating_mul(1024 * 1024),
            media_timeout: Duration::from_secs(args.media_timeout),
            max_viewer_backlog: args.tcp_viewer_backlog_kb.saturating_mul(1024),
            late_after: Duration::from_millis(args.late_ms),
            late_drop_after: Duration::from_millis(args.late_drop_ms.max(args.late_ms)),
            ..RelayConfig::default()
        });
        let candidates =
            webrtc::peers::host_candidates(args.addr, addrs.webrtc.port(), &public_ips);
        info!(
            "listening: FTL {} HTTP {} WebRTC {} (candidates {:?})",
            addrs.ftl, addrs.http, addrs.webrtc, candidates
        );
        if certs.is_some() {
            info!("HTTP port {} serves TLS", addrs.http);
        }
        if let Some(r) = addrs.redirect {
            info!("plain http on {r} redirects to https");
        }
        let running = crate::keys::Running {
            pid: std::process::id(),
            http: Some(addrs.http),
            ..crate::keys::Running::default()
        };
        crate::keys::note_running(data_dir, &running);
        let recorder =
            recording::Recorder::start(data_dir, &args, waker.clone()).map_err(StartError::Io)?;
        let thumbnails = crate::thumbnail::Thumbnails::start(
            Duration::from_secs(args.thumbnail_every),
            args.thumbnail_width,
            args.thumbnail_decoder(),
            waker.clone(),
        )
        .map_err(StartError::Io)?;
        let cluster = cluster::ClusterNode::start(&args, addrs.http, &candidates, waker.clone())
            .map_err(StartError::Cluster)?;
        Ok(Server {
            viewers: webrtc::peers::Viewers::new(
                candidates,
                webrtc::admission::Admission::new(args.max_pending_per_address, args.offer_rate),
            ),
            pool: webrtc::pool::RtcPool::start(waker.clone()),
            thumbnails,
            poll,
            args,
            keys,
            files_check_at: Instant::now() + FILE_CHECK,
            running,
            relay,
            ftl_listener,
            http_listener,
            redirect_listener,
            ice_tcp_listener,
            ice_tcp: webrtc::tcp::IceTcp::default(),
            certs,
            udp_out,
            stamps: crate::recv_stamp::Stamps::default(),
            rtc_waited: Duration::ZERO,
            rtc_socket,
            addrs,
            next_token: FIRST_DYNAMIC,
            slots: HashMap::new(),
            controls: HashMap::new(),
            https: HashMap::new(),
            wss: HashMap::new(),
            again: Vec::new(),
            media: BTreeMap::new(),
            media_ports,
            media_tokens: HashMap::new(),
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            signals,
            counters: Counters::default(),
            auth_failures: HashMap::new(),
            whip_live: BTreeMap::new(),
            whip_auth: HashMap::new(),
            hooks,
            recorder,
            cluster,
            pulls,
            stream_epochs: HashMap::new(),
            started: Instant::now(),
            buf: vec![0; 65536],
        })
    }

    /// Where the server listens.
    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    /// A handle to stop the server from another thread.
    pub fn handle(&self) -> Handle {
        Handle {
            stop: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Runs the loop until SIGINT, SIGTERM or [`Handle::shutdown`].
    pub fn run(mut self) -> io::Result<()> {
        self.selftest_log();
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let timeout = self
                .next_deadline(now)
                .map(|d| d.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    FTL_LISTENER => self.accept_control(now),
                    HTTP_LISTENER => self.accept_http(now, false),
                    REDIRECT_LISTENER => self.accept_http(now, true),
                    ICE_TCP_LISTENER => self.accept_ice_tcp(now),
                    WEBRTC_SOCKET => self.read_webrtc(now),
                    WAKER => {
                        self.pool_ready(now);
                        self.recordings_ready();
                        self.thumbnails.collect(&self.relay);
                        self.cluster_intake(now);
                        self.pulls_ready(now);
                    }
                    SIGNALS => {
                        if let Some(s) = self.signals.as_mut() {
                            for sig in s.pending() {
                                info!("signal {sig}: shutting down");
                                self.stop.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                    t => match self.slots.get(&t).copied() {
                        Some(Slot::Control) => self.control_event(t, ev, now),
                        Some(Slot::Http) => self.http_event(t, ev, now),
                        Some(Slot::Ws) => self.ws_event(t, now),
                        Some(Slot::Hook) => self.hook_event(t, now),
                        Some(Slot::Media(c)) => self.read_media(c, now),
                        Some(Slot::IceTcp) => self.ice_tcp_event(t, ev, now),
                        Some(Slot::PullUdp(id)) => self.pull_read(id, now),
                        None => {}
                    },
                }
            }
            // Sockets that still had data when their read budget ran out.
            for t in std::mem::take(&mut self.again) {
                match (t, self.slots.get(&t).copied()) {
                    (WEBRTC_SOCKET, _) => self.read_webrtc(now),
                    (_, Some(Slot::Media(c))) => self.read_media(c, now),
                    (_, Some(Slot::Control)) => {
                        self.control_read(t, now);
                        self.pump_control(t, now);
                    }
                    (_, Some(Slot::Ws)) => self.ws_event(t, now),
                    (_, Some(Slot::IceTcp)) => self.ice_tcp_again(t, now),
                    (_, Some(Slot::PullUdp(id))) => self.pull_read(id, now),
                    _ => {}
                }
            }
            self.timeouts(now);
            self.drain_relay(now);
            self.viewers_flush(now);
            self.udp_flush();
            if self.stop.load(Ordering::SeqCst) {
                self.shutdown(now);
                return Ok(());
            }
        }
    }

    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        if !self.again.is_empty() {
            return Some(now);
        }
        let controls = self.controls.values().filter_map(|c| c.deadline());
        let https = self.https.values().map(|h| h.deadline);
        let hooks = self.hooks.as_ref().and_then(|h| h.deadline());
        [
            self.relay.poll_timeout(),
            self.viewers.next_timeout(),
            hooks,
            Some(self.files_check_at),
            self.ice_tcp.next_deadline(),
            self.thumbnails.deadline(),
        ]
        .into_iter()
        .flatten()
        .chain(controls)
        .chain(https)
        .min()
        .map(|d| d.max(now))
    }

    fn timeouts(&mut self, now: Instant) {
        self.control_timeouts(now);
        self.http_timeouts(now);
        if self.relay.poll_timeout().is_some_and(|t| t <= now) {
            self.relay.handle_timeout(now);
        }
        self.viewers_timeouts(now);
        self.hooks_timeouts(now);
        if now >= self.files_check_at {
            // One `stat` per file: a change is read and takes effect within this period.
            self.files_check_at = now + FILE_CHECK;
            self.tls_refresh();
            self.keys_reload(now);
            self.note_running();
            self.cluster_tick(now);
        }
        self.ice_tcp_timeouts(now);
        let stale = self.thumbnails.tick(&self.relay, now);
        if let Some(every) = self.thumbnails.every() {
            for channel in stale {
                self.relay.refresh_keyframe(channel, every, now);
            }
        }
    }

    fn token(&mut self, slot: Slot) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        self.slots.insert(t, slot);
        t
    }

    fn shutdown(&mut self, now: Instant) {
        info!(
            "shutting down: {} streams, {} viewers",
            self.relay.live_streams(),
            self.relay.viewer_count()
        );
        let tokens: Vec<Token> = self.controls.keys().copied().collect();
        for t in tokens {
            if let Some(c) = self.controls.get_mut(&t) {
                c.session.refuse(
                    ftl_proto::control::StatusCode::SERVER_TERMINATE,
                    "server shutting down",
                );
            }
            self.pump_control(t, now);
            if let Some(c) = self.controls.get_mut(&t) {
                let _ = c.flush();
            }
        }
        self.viewers_close_all(now);
        self.udp_flush();
        self.pool.stop();
        self.thumbnails.stop();
        if let Some(dir) = self.keys.path().parent() {
            crate::keys::forget_running(dir);
        }
    }
}

/// Registers `source` for writable events too while `want` holds (bytes wait for the socket),
/// re-registering only when that changes; `writable` remembers the current registration.
fn want_writable(
    poll: &Poll,
    source: &mut impl mio::event::Source,
    token: Token,
    writable: &mut bool,
    want: bool,
) {
    if want != *writable {
        *writable = want;
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let _ = poll.registry().reregister(source, token, interest);
    }
}
