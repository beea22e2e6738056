//! Command line and environment: every flag has an `ITG_*` variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// ITG: sub-second live streaming. OBS streams in over FTL; browsers watch over WebRTC.
#[derive(Debug, Parser)]
#[command(name = "server-mio", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Directory for the stream key file (created on first start).
    #[arg(
        long,
        global = true,
        env = "ITG_DATA_DIR",
        default_value = "./itg-data"
    )]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands. Without one, the server runs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage channels and their stream keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// Key store subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a channel; prints its OBS stream key (`<channel>-<secret>`) as the last line.
    Add {
        /// Channel id (1 to 2147483647); random when omitted.
        #[arg(long)]
        channel: Option<u32>,
        /// A display name.
        #[arg(long)]
        name: Option<String>,
        /// Record this channel's streams (`on`/`off`), whatever `--record` says.
        #[arg(long, value_enum)]
        record: Option<RecordSetting>,
    },
    /// Change a channel's settings.
    Set {
        #[arg(long)]
        channel: u32,
        /// Record this channel's streams: `on`, `off`, or `default` (as `--record` says).
        #[arg(long, value_enum)]
        record: Option<RecordSetting>,
    },
    /// List channels and their OBS stream keys.
    List,
    /// Give a channel a new secret; prints the new OBS stream key as the last line.
    Rotate {
        #[arg(long)]
        channel: u32,
    },
    /// Remove a channel.
    Remove {
        #[arg(long)]
        channel: u32,
    },
}

/// The server's flags.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to bind every listener and socket to. `::` (the default) takes both families
    /// on each port (IPv6 sockets that also take IPv4; just `0.0.0.0` where IPv6 is off), and
    /// viewers are offered candidates of both; `0.0.0.0` is IPv4 only.
    #[arg(long, env = "ITG_ADDR", default_value = "::")]
    pub addr: IpAddr,
    /// Public IPs to advertise to viewers as extra ICE host candidates (behind 1:1 NAT): one
    /// IPv4 and one IPv6 at most, comma-separated.
    #[arg(long, env = "ITG_IP", value_delimiter = ',', value_parser = parse_ip)]
    pub ip: Vec<IpAddr>,
    /// TCP port of the FTL control channel (OBS's "server").
    #[arg(long, env = "ITG_FTL_PORT", default_value_t = 8084)]
    pub ftl_port: u16,
    /// HTTP port: viewer pages, WHEP, WebSocket signalling, JSON API, metrics.
    #[arg(long, env = "ITG_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    /// UDP port shared by all WebRTC viewers.
    #[arg(long, env = "ITG_WEBRTC_PORT", default_value_t = 20000)]
    pub webrtc_port: u16,
    /// TCP port for ICE over TCP (RFC 6544), for viewers whose networks block UDP; default the
    /// same number as the WebRTC UDP port, `0` turns it off.
    #[arg(long, env = "ITG_WEBRTC_TCP_PORT")]
    pub webrtc_tcp_port: Option<u16>,
    /// KiB queued towards an ICE-TCP viewer after which its video skips to the next keyframe
    /// instead of falling further behind (counted in the server's queue; the connection's
    /// kernel send buffer is set to the same size). 256 KiB is about 0.8 s of a 2.5 Mbit/s
    /// stream.
    #[arg(long, env = "ITG_TCP_VIEWER_BACKLOG_KB", default_value_t = 256)]
    pub tcp_viewer_backlog_kb: usize,
    /// Send every WebRTC datagram as a message of its own, without UDP GSO (`sendmmsg` still
    /// batches them). For a network path that mishandles segmentation offload.
    #[arg(long, env = "ITG_NO_UDP_GSO")]
    pub no_udp_gso: bool,
    /// Milliseconds a video packet (FTL or WHIP) may wait on this server (from the kernel's
    /// arrival stamp to the loop reading it) before viewers start skipping to the next
    /// keyframe: when the machine cannot send what its viewers need, a share of them skips a
    /// stretch, in turn, instead of every viewer's delay growing without end.
    #[arg(long, env = "ITG_LATE_MS", default_value_t = 200)]
    pub late_ms: u64,
    /// Milliseconds after which a packet that waited on this server is sent to no viewer at
    /// all (every viewer restarts at the next keyframe that is on time; late audio is dropped):
    /// a bound on the delay of what viewers are sent, however overloaded the machine.
    #[arg(long, env = "ITG_LATE_DROP_MS", default_value_t = 300)]
    pub late_drop_ms: u64,
    /// UDP port range for FTL media, one port per live stream: `A-B`, or `0` for ports the
    /// system picks.
    #[arg(long, env = "ITG_MEDIA_PORTS", default_value = "9000-9100", value_parser = parse_port_range)]
    pub media_ports: (u16, u16),
    /// ICE servers for viewers, comma separated (`stun:host:port,turn:...`); given to
    /// browsers in the WHEP `Link` header. None by default.
    #[arg(long, env = "ITG_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Vec<String>,
    /// Serve the viewer site from this folder instead of the embedded copy (development).
    #[arg(long, env = "ITG_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// Most live streams at once.
    #[arg(long, env = "ITG_MAX_STREAMS", default_value_t = 100)]
    pub max_streams: usize,
    /// Most viewers in total.
    #[arg(long, env = "ITG_MAX_VIEWERS", default_value_t = 2000)]
    pub max_viewers: usize,
    /// Most viewers on one channel.
    #[arg(long, env = "ITG_MAX_VIEWERS_PER_CHANNEL", default_value_t = 2000)]
    pub max_viewers_per_channel: usize,
    /// Most open HTTP connections (WebSockets included).
    #[arg(long, env = "ITG_MAX_HTTP_CONNECTIONS", default_value_t = 1024)]
    pub max_http_connections: usize,
    /// Most open FTL control connections. When full, the oldest connection that has not
    /// authenticated is closed to make room; an authenticated stream never is.
    #[arg(long, env = "ITG_MAX_CONTROL_CONNECTIONS", default_value_t = 128)]
    pub max_control_connections: usize,
    /// Most FTL control connections from one IP address that have not authenticated yet.
    #[arg(long, env = "ITG_MAX_FTL_PER_ADDRESS", default_value_t = 8)]
    pub max_ftl_per_address: usize,
    /// Most HTTP connections from one IP address whose request is still being read (TLS
    /// handshakes included). When the HTTP table is full, the oldest such connection is closed
    /// to make room; WebSockets and answered requests never are.
    #[arg(long, env = "ITG_MAX_HTTP_PER_ADDRESS", default_value_t = 32)]
    pub max_http_per_address: usize,
    /// Join a cluster whose directory is this Redis, e.g. `redis://127.0.0.1:6379/0`: the
    /// node registers itself and its streams there, and sees every other node's.
    #[arg(long, env = "ITG_CLUSTER")]
    pub cluster: Option<String>,
    /// This node's public base URL in a cluster (where viewers and other nodes reach its HTTP
    /// port), e.g. `https://edge1.example.com:8080`.
    #[arg(long, env = "ITG_NODE_URL")]
    pub node_url: Option<String>,
    /// The secret nodes of a cluster present to each other (`Authorization: Bearer`).
    #[arg(long, env = "ITG_CLUSTER_TOKEN")]
    pub cluster_token: Option<String>,
    /// A PEM file of CA certificates to trust, besides the public roots, for other nodes'
    /// `https://` URLs (a private cluster's own CA).
    #[arg(long, env = "ITG_CLUSTER_CA")]
    pub cluster_ca: Option<std::path::PathBuf>,
    /// What this node does in a cluster: `any` (ingest and viewers), `origin`, `edge`.
    #[arg(long, env = "ITG_ROLE", value_enum, default_value_t = crate::cluster::Role::Any)]
    pub role: crate::cluster::Role,
    /// Record every channel's streams as fragmented MP4 under `DATA/recordings/<channel>/`
    /// (a channel's own setting, `keys set --record on|off`, overrides this).
    #[arg(long, env = "ITG_RECORD")]
    pub record: bool,
    /// Delete the oldest recordings once all of them together exceed this many GB (10^9
    /// bytes); never the ones being written.
    #[arg(long, env = "ITG_RECORD_MAX_GB")]
    pub record_max_gb: Option<f64>,
    /// Delete recordings older than this many days (since their last write).
    #[arg(long, env = "ITG_RECORD_MAX_DAYS")]
    pub record_max_days: Option<f64>,
    /// KiB of recording data that may wait for the disk; past it whole GOPs are dropped from
    /// the recording (counted in `itg_recording_dropped_gops_total`), never from the stream.
    #[arg(long, env = "ITG_RECORD_QUEUE_KB", default_value_t = 65536)]
    pub record_queue_kb: usize,
    /// Seconds between two thumbnails of a live stream (its latest keyframe, decoded off the
    /// media loop, at `/thumbnails/<channel>.jpg`); 0 turns thumbnails off.
    #[arg(long, env = "ITG_THUMBNAIL_EVERY", default_value_t = 10)]
    pub thumbnail_every: u64,
    /// Widest thumbnail in pixels (the aspect ratio is kept; smaller pictures stay as they are).
    #[arg(long, env = "ITG_THUMBNAIL_WIDTH", default_value_t = 640)]
    pub thumbnail_width: u32,
    /// The `ffmpeg` that decodes keyframes of H.265, VP8, VP9 and AV1 streams for their
    /// thumbnails (H.264 is decoded in the server); `none` for H.264 thumbnails only.
    #[arg(long, env = "ITG_THUMBNAIL_FFMPEG", default_value = "ffmpeg")]
    pub thumbnail_ffmpeg: String,
    /// The address viewers reach this server at (`https://live.example.com`): link previews
    /// (Open Graph tags of the watch page) need absolute URLs. Without it they are built
    /// from the request's `Host`.
    #[arg(long, env = "ITG_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Slows every recording write by this many milliseconds (tests of a disk that stalls).
    #[arg(long, hide = true, default_value_t = 0)]
    pub record_write_delay_ms: u64,
    /// Slows every recording read, listing and delete by this many milliseconds (tests of a
    /// disk that stalls).
    #[arg(long, hide = true, default_value_t = 0)]
    pub record_read_delay_ms: u64,
    /// Seconds an FTL client may stay silent on its control connection before its stream ends.
    #[arg(long, env = "ITG_KEEPALIVE_TIMEOUT", default_value_t = 30)]
    pub keepalive_timeout: u64,
    /// Seconds without media before a stream ends.
    #[arg(long, env = "ITG_MEDIA_TIMEOUT", default_value_t = 15)]
    pub media_timeout: u64,
    /// Most megabytes the GOP cache of one stream holds.
    #[arg(long, env = "ITG_GOP_CACHE_MB", default_value_t = 16)]
    pub gop_cache_mb: usize,
    /// Ask this service for stream keys instead of the key file, and send it stream events:
    /// `GET <url>/hmac/<channel>` answers the key (4xx: no such channel), `POST <url>/events`
    /// receives JSON events (stream_start, stream_stop, stream_stats).
    #[arg(long, env = "ITG_AUTH_URL")]
    pub auth_url: Option<String>,
    /// Extra CA certificates (PEM) to trust for an https:// or wss:// `--auth-url`, besides the
    /// bundled Mozilla roots.
    #[arg(long, env = "ITG_AUTH_CA")]
    pub auth_ca: Option<PathBuf>,
    /// Seconds between `stream_stats` events to the service.
    #[arg(long, env = "ITG_EVENTS_INTERVAL", default_value_t = 5)]
    pub events_interval: u64,
    /// Failed FTL authentications from one IP address within `--auth-fail-window` after which
    /// its new control connections are refused at once.
    #[arg(long, env = "ITG_AUTH_FAIL_LIMIT", default_value_t = 10)]
    pub auth_fail_limit: u32,
    /// Seconds over which failed authentications are counted.
    #[arg(long, env = "ITG_AUTH_FAIL_WINDOW", default_value_t = 60)]
    pub auth_fail_window: u64,
    /// Record every ingest session as pcap files in this folder: FTL control and media both
    /// ways; a WHIP session's offer, answer and decrypted RTP.
    #[arg(long, env = "ITG_CAPTURE")]
    pub capture: Option<PathBuf>,
    /// Serve the HTTP port over TLS with this certificate chain (PEM; with `--tls-key`). The
    /// pair is re-read when either file changes.
    #[arg(long, env = "ITG_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM: PKCS#8, RSA or EC).
    #[arg(long, env = "ITG_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With TLS: also listen for plain http on this port and redirect every request to https.
    #[arg(long, env = "ITG_HTTP_REDIRECT_PORT", requires = "tls_cert")]
    pub http_redirect_port: Option<u16>,
    /// Start a new capture file past this many megabytes.
    #[arg(long, env = "ITG_CAPTURE_MAX_MB", default_value_t = 64)]
    pub capture_max_mb: u64,
    /// Keep at most this many capture files per session (the oldest is deleted).
    #[arg(long, env = "ITG_CAPTURE_FILES", default_value_t = 4)]
    pub capture_files: u32,
    /// Seconds a viewer may take to connect (ICE and DTLS) before it is dropped.
    #[arg(long, env = "ITG_VIEWER_CONNECT_TIMEOUT", default_value_t = 15)]
    pub viewer_connect_timeout: u64,
    /// WebRTC sessions (WHEP, WHIP, WebSocket) not yet connected per address (IPv4, or an
    /// IPv6 /64); past it offers get `429`.
    #[arg(long, env = "ITG_MAX_PENDING_PER_ADDRESS", default_value_t = 32)]
    pub max_pending_per_address: u32,
    /// WebRTC offers a second per address (IPv4, or an IPv6 /64), with bursts of twice that;
    /// past it `429` with `Retry-After`. 0: no limit.
    #[arg(long, env = "ITG_OFFER_RATE", default_value_t = 20.0)]
    pub offer_rate: f64,
    /// Most a WHIP publisher may send, in kbit/s (0: no cap): told to it in the answer
    /// (`b=AS`) and in its congestion feedback (REMB).
    #[arg(long, env = "ITG_WHIP_MAX_BITRATE", default_value_t = 10_000)]
    pub whip_max_bitrate: u64,
    /// The most a viewer's browser may hold video back to smooth jitter, in milliseconds,
    /// told to it on every keyframe (the playout-delay header extension, minimum 0): at 500
    /// or less Chromium renders each frame as soon as it is decoded; more lets its jitter
    /// buffer grow to this on a rough network, at that much more delay.
    #[arg(long, env = "ITG_PLAYOUT_DELAY_MAX_MS", default_value_t = 400,
          value_parser = clap::value_parser!(u16).range(0..=40950))]
    pub playout_delay_max_ms: u16,
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address"))
}

impl ServerArgs {
    /// The `ffmpeg` thumbnails of codecs other than H.264 are decoded with (`None`: off).
    pub fn thumbnail_decoder(&self) -> Option<std::path::PathBuf> {
        let f = self.thumbnail_ffmpeg.trim();
        (!f.is_empty() && f != "none").then(|| f.into())
    }

    /// The public IPs, one of each family at most: a second of a family is an error.
    pub fn public_ips(&self) -> Result<Vec<IpAddr>, String> {
        let v4 = self.ip.iter().filter(|i| i.is_ipv4()).count();
        let v6 = self.ip.len() - v4;
        if v4 > 1 || v6 > 1 {
            return Err("--ip takes one IPv4 and one IPv6 address at most".into());
        }
        Ok(self.ip.clone())
    }

    /// The keepalive timeout as a duration.
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_timeout)
    }
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    if s == "0" {
        return Ok((0, 0));
    }
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not A-B or 0"))?;
    let a: u16 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if a == 0 || b < a {
        return Err(format!("{s:?}: need 1 <= A <= B"));
    }
    Ok((a, b))
}

/// A channel's recording setting on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordSetting {
    On,
    Off,
    /// As the server's `--record` says.
    Default,
}

impl RecordSetting {
    /// What the key store keeps: `None` follows `--record`.
    pub fn stored(self) -> Option<bool> {
        match self {
            RecordSetting::On => Some(true),
            RecordSetting::Off => Some(false),
            RecordSetting::Default => None,
        }
    }
}

impl Default for ServerArgs {
    fn default() -> Self {
        let cli = Cli::parse_from(["server-mio"]);
        cli.server
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("9000-9100"), Ok((9000, 9100)));
        assert_eq!(parse_port_range("0"), Ok((0, 0)));
        assert!(parse_port_range("9100-9000").is_err());
        assert!(parse_port_range("x-1").is_err());
        assert!(parse_port_range("0-5").is_err());
    }

    #[test]
    fn defaults_match_the_design() {
        let a = ServerArgs::default();
        assert_eq!(
            (a.ftl_port, a.http_port, a.webrtc_port),
            (8084, 8080, 20000)
        );
        assert_eq!(a.media_ports, (9000, 9100));
        assert!(a.ip.is_empty() && a.ice_servers.is_empty());
        assert_eq!(a.addr, "::".parse::<std::net::IpAddr>().unwrap());
    }

    #[test]
    fn public_ips_are_one_of_each_family_at_most() {
        let parse = |ips: &str| {
            Cli::parse_from(["server-mio", "--ip", ips])
                .server
                .public_ips()
        };
        assert_eq!(parse("203.0.113.5,2001:db8::5").unwrap().len(), 2);
        assert!(parse("203.0.113.5,203.0.113.6").is_err());
        assert!(parse("2001:db8::5,2001:db8::6").is_err());
        assert!(Cli::try_parse_from(["server-mio", "--ip", "not-an-ip"]).is_err());
    }
}
