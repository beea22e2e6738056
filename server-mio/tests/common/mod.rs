//! Shared harness for the socket tests: the real server on ephemeral loopback ports, the
//! project's FTL client streaming fixtures, and in-process str0m viewers over WHEP or the
//! WebSocket protocol. Every wait is bounded: a broken test fails, it never hangs.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ftl_proto::media::packetize::split_annexb;
pub use server_mio::client::http::{request as try_http, HttpResponse};
use server_mio::config::ServerArgs;
use server_mio::keys::KeyStore;
use server_mio::server::{Addrs, Handle, Server};
use server_mio::tools::client::{stream, ClientError, ClientOptions, ClientStats, PACE_BURST_MS};
pub use server_mio::tools::probe::Viewer;
pub use server_mio::tools::whip_client::{publish, WhipError, WhipOptions, WhipStats};

pub const VIDEO_A: &[u8] =
    include_bytes!("../../../relay-core/tests/data/video-320x180-30fps-4s.h264");
pub const VIDEO_B: &[u8] =
    include_bytes!("../../../relay-core/tests/data/video-160x90-main-4s.h264");
pub const AUDIO: &[u8] = include_bytes!("../../../relay-core/tests/data/audio-opus-48k-4s.ogg");

/// A fresh path under the system's temporary folder, unique to this process and call.
pub fn scratch_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

/// The server binary on loopback with ports the system picks (the HTTP port given, `0` for
/// any) and `data_dir`; add flags and spawn.
pub fn server_command(data_dir: &std::path::Path, http_port: u16) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_server-mio"));
    c.args([
        "--addr",
        "127.0.0.1",
        "--ftl-port",
        "0",
        "--webrtc-port",
        "0",
    ])
    .args(["--media-ports", "0", "--http-port", &http_port.to_string()])
    .arg("--data-dir")
    .arg(data_dir);
    c
}

/// Runs the calling test again inside a fresh network namespace with only loopback up (IPv4
/// `127.0.0.1` and IPv6 `::1`), so it can add addresses and bind wildcards without reaching
/// anything but itself. Returns whether the caller is inside and should go on; outside, it
/// asserts the inner run passed. Needs root and `unshare`: elsewhere the test is skipped
/// loudly, and fails under CI.
pub fn in_private_netns(test: &str) -> bool {
    if std::env::var_os("ITG_TEST_NETNS").is_some() {
        return true;
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test} needs root for a network namespace"
        );
        eprintln!("\n*** SKIPPED {test}: needs root for a network namespace ***\n");
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new("unshare")
        .args([
            "-n",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env("ITG_TEST_NETNS", "1")
        .status()
        .unwrap();
    assert!(status.success(), "{test} failed in its network namespace");
    false
}

pub fn init() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A server running on its own thread.
pub struct TestServer {
    pub addrs: Addrs,
    pub handle: Handle,
    pub keys: Vec<(u32, String)>,
    pub data_dir: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut ServerArgs)) -> TestServer {
        Self::start_in(&scratch_path("itg-test"), tweak)
    }

    /// A server on `data_dir` as it is, with channels 77 and 88 added if missing.
    pub fn start_in(data_dir: &std::path::Path, tweak: impl FnOnce(&mut ServerArgs)) -> TestServer {
        init();
        let data_dir = data_dir.to_owned();
        let mut store = KeyStore::open(&data_dir).unwrap();
        let keys = [77, 88]
            .iter()
            .map(|c| {
                let existing = store.channels().iter().find(|k| k.id == *c).cloned();
                let k = existing.unwrap_or_else(|| store.add(Some(*c), None).unwrap());
                (*c, k.obs_key())
            })
            .collect();
        let mut args = ServerArgs {
            addr: "127.0.0.1".parse().unwrap(),
            ftl_port: 0,
            http_port: 0,
            webrtc_port: 0,
            media_ports: (0, 0),
            viewer_connect_timeout: 5,
            // An in-process server shares a loaded test machine with its clients and other
            // servers, whose scheduling can hold a loop for a few hundred milliseconds; the
            // overload policy is tested against the binary in a process of its own (egress.rs)
            // and in relay-core, so here it acts only on stalls of seconds.
            late_ms: 2000,
            late_drop_ms: 4000,
            // Every client of these tests is on 127.0.0.1: no per-address offer limits (they
            // are tested against the binary with its defaults, in hostile.rs).
            offer_rate: 0.0,
            max_pending_per_address: 10_000,
            ..ServerArgs::default()
        };
        tweak(&mut args);
        let server = Server::bind(args, &data_dir).unwrap();
        let addrs = server.addrs();
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run().unwrap());
        TestServer {
            addrs,
            handle,
            keys,
            data_dir,
            thread: Some(thread),
        }
    }

    pub fn key(&self, channel: u32) -> String {
        self.keys
            .iter()
            .find(|(c, _)| *c == channel)
            .unwrap()
            .1
            .clone()
    }

    /// Streams a fixture on a thread; returns its handle and stop flag.
    pub fn stream(
        &self,
        channel: u32,
        video: &'static [u8],
        duration: Option<Duration>,
    ) -> Streamer {
        self.stream_as(&self.key(channel), video, duration)
    }

    /// Streams over FTL with a given OBS stream key.
    pub fn stream_as(
        &self,
        key: &str,
        video: &'static [u8],
        duration: Option<Duration>,
    ) -> Streamer {
        stream_to(self.addrs.ftl, key, video, duration)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let r = http(self.addrs.http, "GET", path, &[], b"");
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    /// The value of one metric line (`name` or `name{labels}`).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            // NaN when the metric (or the request, e.g. refused at a limit) is not there: every
            // comparison fails, so waits go on and assertions report it.
            .unwrap_or(f64::NAN)
    }

    /// Waits until `f` holds, checking every 20 ms, for at most `limit`.
    pub fn wait_for(&self, limit: Duration, mut f: impl FnMut(&TestServer) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if f(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

impl TestServer {
    /// Publishes a fixture over WHIP on a thread (our WHIP client); returns its handle.
    pub fn publish(
        &self,
        channel: u32,
        video: &'static [u8],
        duration: Option<Duration>,
    ) -> Publisher {
        self.publish_as(channel, &self.key(channel), video, duration)
    }

    /// Publishes with a given Bearer token.
    pub fn publish_as(
        &self,
        channel: u32,
        token: &str,
        video: &'static [u8],
        duration: Option<Duration>,
    ) -> Publisher {
        publish_with(self.whip_options(channel, token, video, duration))
    }

    /// What `publish_as` publishes with (the fixture's audio; repeating when timed).
    pub fn whip_options(
        &self,
        channel: u32,
        token: &str,
        video: &[u8],
        duration: Option<Duration>,
    ) -> WhipOptions {
        whip_options(self.addrs.http, channel, token, video, duration)
    }
}

/// WHIP to `http` (any server's HTTP address) with the fixture's audio, repeating when timed.
pub fn whip_options(
    http: SocketAddr,
    channel: u32,
    token: &str,
    video: &[u8],
    duration: Option<Duration>,
) -> WhipOptions {
    WhipOptions {
        url: format!("http://{http}/whip/{channel}"),
        token: token.to_owned(),
        video: Some(video.to_vec()),
        audio: Some(AUDIO.to_vec()),
        fps: 30,
        repeat: duration.is_some(),
        duration,
        sent_log: None,
        vanish: false,
        tcp: false,
        simulcast: Vec::new(),
        ssrc_simulcast: false,
        upper_layers_after: None,
        video_after: None,
    }
}

/// Streams a fixture over FTL to a server's control address on a thread (looping when timed).
pub fn stream_to(
    ftl: SocketAddr,
    key: &str,
    video: &'static [u8],
    duration: Option<Duration>,
) -> Streamer {
    let opts = ftl_options(ftl, key, video, duration);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || stream(&opts, &s));
    Streamer {
        stop,
        thread: Some(thread),
    }
}

/// What the FTL client streams with: the fixture's audio, real time, looping when timed.
pub fn ftl_options(
    ftl: SocketAddr,
    key: &str,
    video: &[u8],
    duration: Option<Duration>,
) -> ClientOptions {
    ClientOptions {
        server: ftl.to_string(),
        stream_key: key.to_owned(),
        video: Some(video.to_vec()),
        audio: Some(AUDIO.to_vec()),
        fps: 30,
        repeat: duration.is_some(),
        duration,
        speed: 1.0,
        drop_every: None,
        speed_test: false,
        sent_log: None,
        peak_kbps: None,
        pace_burst_ms: PACE_BURST_MS,
        deaf_to_end: false,
        frame_log: None,
    }
}

/// Publishes over WHIP with the given options on a thread.
pub fn publish_with(opts: WhipOptions) -> Publisher {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || publish(&opts, &s));
    Publisher {
        stop,
        thread: Some(thread),
    }
}

/// The `/api/streams` entry of a live channel.
pub fn stream_info(server: &TestServer, channel: u32) -> Option<serde_json::Value> {
    let (_, body) = server.get("/api/streams");
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["streams"]
        .as_array()?
        .iter()
        .find(|s| s["channel"] == channel && s["live"] == true)
        .cloned()
}

/// A WHIP publisher on its own thread.
pub struct Publisher {
    pub stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<WhipStats, WhipError>>>,
}

impl Publisher {
    pub fn join(mut self) -> Result<WhipStats, WhipError> {
        self.thread.take().unwrap().join().unwrap()
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    pub fn stop(self) -> Result<WhipStats, WhipError> {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }
}

/// An FTL client streaming on its own thread.
pub struct Streamer {
    pub stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<ClientStats, ClientError>>>,
}

impl Streamer {
    /// Waits for the stream to end by itself (bounded by the fixture's length plus slack).
    pub fn join(mut self) -> Result<ClientStats, ClientError> {
        self.thread.take().unwrap().join().unwrap()
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    pub fn stop(self) -> Result<ClientStats, ClientError> {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }
}

/// The NAL units of a fixture.
pub fn fixture_nals(video: &[u8]) -> Vec<Vec<u8>> {
    split_annexb(video)
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect()
}

/// Checks that `got` is a run of `fixture` that starts at an SPS (a keyframe); returns where.
pub fn assert_run_from_keyframe(got: &[Vec<u8>], fixture: &[Vec<u8>]) -> usize {
    assert!(!got.is_empty(), "no NAL units received");
    assert_eq!(got[0][0] & 0x1f, 7, "the first NAL unit is not an SPS");
    let start = (0..fixture.len())
        .find(|&k| fixture.len() - k >= got.len() && fixture[k..k + got.len()] == *got)
        .unwrap_or_else(|| {
            // Locate the first difference for the message.
            let k = (0..fixture.len()).find(|&k| fixture[k] == got[0]).unwrap_or(0);
            let diff = got.iter().zip(&fixture[k..]).position(|(a, b)| a != b);
            panic!("received NAL units are not a run of the fixture (from {k}, first difference at {diff:?}, {} received)", got.len())
        });
    start
}

/// Checks that `viewer` got a run of the looping fixture `video` from a keyframe on: every NAL
/// unit it decoded is the fixture's next one, across the loop's restart; nothing else got in.
pub fn assert_looping_run(viewer: &Viewer, video: &[u8], name: &str) {
    let fixture = fixture_nals(video);
    let got = viewer.nal_units();
    let laps = got.len() / fixture.len().max(1) + 2;
    let looped: Vec<Vec<u8>> = fixture
        .iter()
        .cycle()
        .take(fixture.len() * laps)
        .cloned()
        .collect();
    assert!(!got.is_empty(), "{name}: no NAL units received");
    let from = assert_run_from_keyframe(&got, &looped);
    assert!(from < fixture.len() + 1, "{name}");
}

/// Checks that `viewer` got the fixture `video` from a keyframe to its very end.
pub fn assert_run_to_the_end(viewer: &Viewer, video: &[u8], name: &str) {
    let fixture = fixture_nals(video);
    let nals = viewer.nal_units();
    let start = assert_run_from_keyframe(&nals, &fixture);
    assert_eq!(
        start + nals.len(),
        fixture.len(),
        "{name}: the stream's end is missing"
    );
}

/// The Opus packets of the fixture.
pub fn fixture_opus() -> Vec<Vec<u8>> {
    let mut r = ogg::PacketReader::new(std::io::Cursor::new(AUDIO));
    let mut out = Vec::new();
    while let Some(p) = r.read_packet().unwrap() {
        if !p.data.starts_with(b"OpusHead") && !p.data.starts_with(b"OpusTags") {
            out.push(p.data);
        }
    }
    out
}

/// One HTTP request; panics on I/O errors (tests only).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    try_http(addr, method, path, headers, body).unwrap()
}

/// Test shorthands over the library viewer.
pub struct TestViewer;

impl TestViewer {
    pub fn whep(
        server: &TestServer,
        channel: u32,
    ) -> Result<Viewer, server_mio::tools::probe::JoinError> {
        Viewer::whep(server.addrs.http, channel)
    }

    pub fn websocket(server: &TestServer, query: &str) -> Viewer {
        Viewer::websocket(server.addrs.http, query).unwrap()
    }
}

pub const VIDEO_640: &[u8] =
    include_bytes!("../../../relay-core/tests/data/video-640x360-30fps-4s.h264");

/// Three layers of a simulcast publisher (the project's WHIP client sending a file per RID,
/// as str0m declares them): `q` 160x90, `h` 320x180, `f` 640x360.
pub fn simulcast_options(server: &TestServer, channel: u32, secs: u64) -> WhipOptions {
    let mut o = server.whip_options(
        channel,
        &server.key(channel),
        VIDEO_A,
        Some(Duration::from_secs(secs)),
    );
    o.video = None;
    o.simulcast = vec![
        ("q".into(), VIDEO_B.to_vec()),
        ("h".into(), VIDEO_A.to_vec()),
        ("f".into(), VIDEO_640.to_vec()),
    ];
    o
}

/// The NAL units a viewer got after its `n`-th video packet.
pub fn nals_after(v: &Viewer, n: usize) -> Vec<Vec<u8>> {
    let mut pkts: Vec<_> = v.video.iter().skip(n).collect();
    pkts.sort_by_key(|p| *p.seq_no);
    ftl_proto::media::packetize::depacketize(pkts.iter().map(|p| &p.payload[..]))
}

/// `POST {location}/layer` (the WHEP layer extension) on the node at `http` with `body`.
pub fn post_layer(http_addr: SocketAddr, location: &str, body: &str) -> HttpResponse {
    http(
        http_addr,
        "POST",
        &format!("{location}/layer"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}
