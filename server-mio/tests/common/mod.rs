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

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ftl_proto::media::packetize::{depacketize, split_annexb};
use server_mio::client::{stream, ClientError, ClientOptions, ClientStats};
use server_mio::config::ServerArgs;
use server_mio::keys::KeyStore;
use server_mio::server::{Addrs, Handle, Server};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpPacket;
use str0m::{Candidate, Event, Input, Output, Rtc};

pub const VIDEO_A: &[u8] =
    include_bytes!("../../../relay-core/tests/data/video-320x180-30fps-4s.h264");
pub const VIDEO_B: &[u8] =
    include_bytes!("../../../relay-core/tests/data/video-160x90-main-4s.h264");
pub const AUDIO: &[u8] = include_bytes!("../../../relay-core/tests/data/audio-opus-48k-4s.ogg");

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
        init();
        let data_dir = std::env::temp_dir().join(format!(
            "itg-test-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut store = KeyStore::open(&data_dir).unwrap();
        let keys = [77, 88]
            .iter()
            .map(|c| (*c, store.add(Some(*c), None).unwrap().obs_key()))
            .collect();
        let mut args = ServerArgs {
            addr: "127.0.0.1".parse().unwrap(),
            ftl_port: 0,
            http_port: 0,
            webrtc_port: 0,
            media_ports: (0, 0),
            viewer_connect_timeout: 5,
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
        let opts = ClientOptions {
            server: self.addrs.ftl.to_string(),
            stream_key: self.key(channel),
            video: Some(video.to_vec()),
            audio: Some(AUDIO.to_vec()),
            fps: 30,
            repeat: duration.is_some(),
            duration,
            speed: 1.0,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || stream(&opts, &s));
        Streamer {
            stop,
            thread: Some(thread),
        }
    }

    /// `GET` a path; returns status and body.
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
            .unwrap_or_else(|| panic!("no metric {name}"))
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

/// A minimal HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (the server closes after each response).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// An in-process str0m viewer (RTP mode: it sees the raw packets).
pub struct TestViewer {
    pub rtc: Rtc,
    sock: UdpSocket,
    pub video: Vec<RtpPacket>,
    pub audio: Vec<RtpPacket>,
    pub connected: Option<Instant>,
    pub created: Instant,
    pub whep_location: Option<String>,
    pub ws: Option<tungstenite::WebSocket<TcpStream>>,
    pub ws_events: Vec<serde_json::Value>,
}

fn viewer_rtc() -> (Rtc, UdpSocket) {
    let rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    (rtc, sock)
}

impl TestViewer {
    /// Joins a channel over WHEP.
    pub fn whep(server: &TestServer, channel: u32) -> Result<TestViewer, HttpResponse> {
        let created = Instant::now();
        let (mut rtc, sock) = viewer_rtc();
        rtc.add_local_candidate(Candidate::host(sock.local_addr().unwrap(), "udp").unwrap());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending): (SdpOffer, SdpPendingOffer) = api.apply().unwrap();
        let r = http(
            server.addrs.http,
            "POST",
            &format!("/whep/{channel}"),
            &[("Content-Type", "application/sdp")],
            offer.to_sdp_string().as_bytes(),
        );
        if r.status != 201 {
            return Err(r);
        }
        let answer = SdpAnswer::from_sdp_string(std::str::from_utf8(&r.body).unwrap()).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        Ok(TestViewer {
            rtc,
            sock,
            video: Vec::new(),
            audio: Vec::new(),
            connected: None,
            created,
            whep_location: r.header("Location").map(str::to_owned),
            ws: None,
            ws_events: Vec::new(),
        })
    }

    /// Joins over the seed's WebSocket protocol (`query` like `channel=77` or `port=9000`).
    pub fn websocket(server: &TestServer, query: &str) -> TestViewer {
        let created = Instant::now();
        let tcp = TcpStream::connect(server.addrs.http).unwrap();
        let url = format!("ws://{}/websocket?{query}", server.addrs.http);
        let (mut ws, _) = tungstenite::client::client(url.as_str(), tcp).unwrap();
        ws.get_mut()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut events = Vec::new();
        let offer = loop {
            let msg = ws.read().unwrap();
            let v: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
            if v["event"] == "offer" {
                break v["data"]["sdp"].as_str().unwrap().to_owned();
            }
            events.push(v);
        };
        let (mut rtc, sock) = viewer_rtc();
        rtc.add_local_candidate(Candidate::host(sock.local_addr().unwrap(), "udp").unwrap());
        let answer = rtc
            .sdp_api()
            .accept_offer(SdpOffer::from_sdp_string(&offer).unwrap())
            .unwrap();
        let msg = serde_json::json!({"event": "answer", "data": {"type": "answer", "sdp": answer.to_sdp_string()}});
        ws.send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        ws.get_mut().set_nonblocking(true).unwrap();
        TestViewer {
            rtc,
            sock,
            video: Vec::new(),
            audio: Vec::new(),
            connected: None,
            created,
            whep_location: None,
            ws: Some(ws),
            ws_events: events,
        }
    }

    /// Drives the viewer until `done` holds or `limit` passes; returns whether `done` held.
    pub fn drive(&mut self, limit: Duration, mut done: impl FnMut(&TestViewer) -> bool) -> bool {
        let end = Instant::now() + limit;
        let mut buf = vec![0u8; 2000];
        while Instant::now() < end {
            if done(self) {
                return true;
            }
            loop {
                match self.rtc.poll_output().unwrap() {
                    Output::Transmit(t) => {
                        let _ = self.sock.send_to(&t.contents, t.destination);
                    }
                    Output::Event(e) => self.event(e),
                    Output::Timeout(_) => break,
                }
            }
            if let Some(ws) = self.ws.as_mut() {
                while let Ok(m) = ws.read() {
                    if let Ok(v) =
                        serde_json::from_str::<serde_json::Value>(m.to_text().unwrap_or_default())
                    {
                        self.ws_events.push(v);
                    }
                }
            }
            match self.sock.recv_from(&mut buf) {
                Ok((n, source)) => {
                    let input = Input::Receive(
                        Instant::now(),
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: self.sock.local_addr().unwrap(),
                            contents: buf[..n].try_into().unwrap(),
                        },
                    );
                    self.rtc.handle_input(input).unwrap();
                }
                Err(_) => self
                    .rtc
                    .handle_input(Input::Timeout(Instant::now()))
                    .unwrap(),
            }
        }
        done(self)
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Connected => self.connected = Some(Instant::now()),
            Event::RtpPacket(p) => {
                let pt = p.header.payload_type;
                let codec = self
                    .rtc
                    .codec_config()
                    .params()
                    .iter()
                    .find(|c| c.pt() == pt)
                    .map(|c| c.spec().codec);
                match codec {
                    Some(Codec::H264) => self.video.push(p),
                    Some(Codec::Opus) => self.audio.push(p),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// The H.264 NAL units received, in sequence-number order.
    pub fn nal_units(&self) -> Vec<Vec<u8>> {
        let mut v: Vec<&RtpPacket> = self.video.iter().collect();
        v.sort_by_key(|p| *p.seq_no);
        depacketize(v.iter().map(|p| &p.payload[..]))
    }

    /// Ends a WHEP session with DELETE.
    pub fn whep_delete(&self, server: &TestServer) -> u16 {
        http(
            server.addrs.http,
            "DELETE",
            self.whep_location.as_deref().unwrap(),
            &[],
            b"",
        )
        .status
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
