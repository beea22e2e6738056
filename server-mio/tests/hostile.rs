//! Hostile input, limits and faults, against the real server binary through real sockets.
//! Each attack runs while a healthy stream reaches a viewer; afterwards the healthy stream must
//! have lost nothing and the server's memory and connection counts must be back near baseline.
//! Each test prints a row of the summary table (`--nocapture` shows them).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use server_mio::client::http::request as http;
use server_mio::keys::KeyStore;
use server_mio::tools::client::{stream, ClientError, ClientOptions, ClientStats, PACE_BURST_MS};
use server_mio::tools::probe::Viewer;

const VIDEO: &[u8] = include_bytes!("../../relay-core/tests/data/video-320x180-30fps-4s.h264");
const AUDIO: &[u8] = include_bytes!("../../relay-core/tests/data/audio-opus-48k-4s.ogg");

struct Spawned {
    child: Child,
    ftl: SocketAddr,
    http: SocketAddr,
    webrtc: SocketAddr,
    keys: Vec<(u32, String)>,
    log: Arc<Mutex<Vec<String>>>,
    data_dir: std::path::PathBuf,
}

fn parse_addr(line: &str, label: &str) -> SocketAddr {
    line.split(label)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

impl Spawned {
    fn start(extra: &[&str]) -> Spawned {
        let data_dir = std::env::temp_dir().join(format!(
            "itg-hostile-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut store = KeyStore::open(&data_dir).unwrap();
        let keys = [77, 88]
            .iter()
            .map(|c| (*c, store.add(Some(*c), None).unwrap().obs_key()))
            .collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_server-mio"))
            .args([
                "--addr",
                "127.0.0.1",
                "--ftl-port",
                "0",
                "--http-port",
                "0",
                "--webrtc-port",
                "0",
                "--media-ports",
                "0",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening: FTL") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the server did not start");
        Spawned {
            ftl: parse_addr(&line, "FTL "),
            http: parse_addr(&line, "HTTP "),
            webrtc: parse_addr(&line, "WebRTC "),
            child,
            keys,
            log,
            data_dir,
        }
    }

    fn key(&self, channel: u32) -> String {
        self.keys
            .iter()
            .find(|(c, _)| *c == channel)
            .unwrap()
            .1
            .clone()
    }

    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap()
    }

    fn metric(&self, name: &str) -> f64 {
        let body =
            String::from_utf8(http(self.http, "GET", "/metrics", &[], b"").unwrap().body).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            // NaN when the metric (or the request, e.g. refused at a limit) is not there: every
            // comparison fails, so waits go on and assertions report it.
            .unwrap_or(f64::NAN)
    }

    fn wait_for(&self, limit: Duration, mut f: impl FnMut(&Spawned) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if f(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn live(&self, channel: u32) -> Option<serde_json::Value> {
        let body = http(self.http, "GET", "/api/streams", &[], b"").ok()?.body;
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        v["streams"]
            .as_array()?
            .iter()
            .find(|s| s["channel"] == channel && s["live"] == true)
            .cloned()
    }

    fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    fn options(&self, channel: u32, video: bool) -> ClientOptions {
        ClientOptions {
            server: self.ftl.to_string(),
            stream_key: self.key(channel),
            video: video.then(|| VIDEO.to_vec()),
            audio: Some(AUDIO.to_vec()),
            fps: 30,
            repeat: true,
            duration: None,
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
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A stream on channel 77 and a viewer watching it, each on its own thread.
struct Healthy {
    stop: Arc<AtomicBool>,
    client: JoinHandle<Result<ClientStats, ClientError>>,
    viewer: JoinHandle<Viewer>,
}

fn healthy(srv: &Spawned) -> Healthy {
    let stop = Arc::new(AtomicBool::new(false));
    let opts = srv.options(77, true);
    let s = stop.clone();
    let client = std::thread::spawn(move || stream(&opts, &s));
    assert!(
        srv.wait_for(Duration::from_secs(5), |s| s.live(77).is_some()),
        "the healthy stream did not start"
    );
    let http_addr = srv.http;
    let s = stop.clone();
    let viewer = std::thread::spawn(move || {
        let mut v = Viewer::whep(http_addr, 77).unwrap();
        v.keep_packets = false;
        v.drive(Duration::from_secs(300), |_| s.load(Ordering::SeqCst));
        // Let repairs (NACK answers) arrive.
        v.drive(Duration::from_millis(700), |_| false);
        v
    });
    // Let the viewer connect and settle.
    assert!(srv.wait_for(Duration::from_secs(5), |s| s
        .metric("itg_viewers_connected")
        >= 1.0));
    std::thread::sleep(Duration::from_millis(500));
    Healthy {
        stop,
        client,
        viewer,
    }
}

/// Stops the healthy stream; returns the viewer's video packets and how many it lost.
fn finish(h: Healthy) -> (u64, u64) {
    // Stop the viewer first, then the stream, so the end of the stream is not counted as loss.
    h.stop.store(true, Ordering::SeqCst);
    let v = h.viewer.join().unwrap();
    h.client.join().unwrap().unwrap();
    (v.video_count, v.video_lost())
}

/// Runs `attack` with a healthy stream alongside; checks and reports.
fn under_attack(name: &str, extra: &[&str], attack: impl FnOnce(&Spawned) -> String) {
    let srv = Spawned::start(extra);
    let h = healthy(&srv);
    // The baseline is the server in its usual state with a live stream: its thumbnail thread
    // has made a picture (its decoder's one-time allocation, ~7 MB, is not the attack's).
    assert!(
        srv.wait_for(Duration::from_secs(15), |s| s
            .metric("itg_thumbnails_total")
            >= 1.0),
        "{name}: no thumbnail of the healthy stream"
    );
    let rss_before = srv.rss_kb();
    let controls = srv.metric("itg_control_connections");
    let started = Instant::now();
    let response = attack(&srv);
    // The healthy stream runs on a while after the attack, so late damage would show.
    std::thread::sleep(Duration::from_secs(2));
    // Connections and viewers the attack opened go away; memory settles.
    assert!(
        srv.wait_for(Duration::from_secs(15), |s| s
            .metric("itg_control_connections")
            <= controls
            && s.metric("itg_viewers") <= 1.0
            && s.metric("itg_http_connections") <= 1.0),
        "{name}: connections did not return to baseline"
    );
    let rss_after = srv.rss_kb();
    let (video, lost) = finish(h);
    eprintln!(
        "| {name} | {response} | {rss_before} kB | {rss_after} kB | {video} video packets, {lost} lost | {:.1} s |",
        started.elapsed().as_secs_f64()
    );
    assert!(
        video > 100,
        "{name}: the healthy viewer got only {video} packets"
    );
    assert_eq!(lost, 0, "{name}: the healthy stream lost packets");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "{name}: memory grew from {rss_before} to {rss_after} kB"
    );
}

fn read_reply(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&format!("{ip}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.connect(&to.into()).unwrap();
    sock.into()
}

#[test]
fn ftl_control_attacks() {
    under_attack(
        "FTL control: garbage, 1 MB line, PING flood, DISCONNECT mid-handshake",
        &[],
        |srv| {
            for i in 0..50u8 {
                let mut s = TcpStream::connect(srv.ftl).unwrap();
                let junk: Vec<u8> = (0..200)
                    .map(|j: u8| j.wrapping_mul(i).wrapping_add(7))
                    .collect();
                let _ = s.write_all(&junk);
                let _ = s.write_all(b"\n");
                assert!(
                    read_reply(&mut s).starts_with("400 "),
                    "garbage was not refused with 400"
                );
            }
            let mut s = TcpStream::connect(srv.ftl).unwrap();
            let _ = s.write_all(&vec![b'A'; 1 << 20]);
            assert!(read_reply(&mut s).starts_with("400 line longer than"));
            let mut s = TcpStream::connect(srv.ftl).unwrap();
            s.write_all(b"HMAC\r\n\r\nDISCONNECT\r\n\r\n").unwrap();
            assert!(
                read_reply(&mut s).starts_with("200 "),
                "nonce, then a quiet close"
            );
            // A PING flood from a client that never authenticated.
            let mut s = TcpStream::connect(srv.ftl).unwrap();
            let _ = s.write_all(&b"PING 77\r\n\r\n".repeat(20_000));
            assert!(read_reply(&mut s).starts_with("400 "));
            "400 and close for each".into()
        },
    );
}

#[test]
fn thousands_of_half_open_control_connections() {
    under_attack(
        "FTL control: 1000 idle connections",
        &["--max-control-connections", "200"],
        |srv| {
            let mut idle = Vec::new();
            for _ in 0..1000 {
                if let Ok(s) = TcpStream::connect(srv.ftl) {
                    idle.push(s);
                }
            }
            assert!(srv.wait_for(Duration::from_secs(5), |s| s
                .metric("itg_control_refused_total")
                >= 700.0));
            // Those past the per-address cap were told so; the others are cut at the first-line
            // deadline.
            assert!(srv.wait_for(Duration::from_secs(6), |s| s
                .metric("itg_control_connections")
                <= 1.0));
            drop(idle);
            "8 held (per-address cap), 992 refused; the 8 closed at the 3 s first-line deadline"
                .into()
        },
    );
}

#[test]
fn wrong_keys_are_rate_limited_per_address() {
    under_attack(
        "FTL control: wrong keys, repeatedly",
        &["--auth-fail-limit", "5"],
        |srv| {
            let mut refused_early = 0;
            for i in 0..20 {
                let opts = ClientOptions {
                    stream_key: format!("77-wrong{i}"),
                    ..srv.options(77, true)
                };
                // From 127.0.0.2, so the limit does not touch the healthy client on 127.0.0.1.
                let mut s = connect_from("127.0.0.2", srv.ftl);
                s.write_all(b"HMAC\r\n\r\n").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).unwrap();
                let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
                if reply.starts_with("401 too many") {
                    refused_early += 1;
                    continue;
                }
                let hexed = reply.trim().strip_prefix("200 ").unwrap().to_owned();
                let nonce: Vec<u8> = (0..hexed.len() / 2)
                    .map(|k| u8::from_str_radix(&hexed[2 * k..2 * k + 2], 16).unwrap())
                    .collect();
                let (_, key) = ftl_proto::StreamKey::parse_obs(&opts.stream_key).unwrap();
                let digest = ftl_proto::control::auth::digest(&key, &nonce);
                let connect = ftl_proto::control::Command::Connect {
                    channel: ftl_proto::ChannelId(77),
                    digest,
                };
                s.write_all(&connect.to_bytes()).unwrap();
                assert!(read_reply(&mut s).starts_with("405 "));
            }
            assert_eq!(
                refused_early, 15,
                "after 5 failures the address is refused at once"
            );
            assert!(srv.logged("failed authentications; refusing it"));
            // The live stream on the same channel was never disturbed (checked by the caller).
            "405 each; after 5, 401 at connect for that address".into()
        },
    );
}

#[test]
fn media_port_attacks() {
    under_attack(
        "FTL media: junk, truncated, foreign SSRC, spoofed flood",
        &[],
        |srv| {
            let port = srv.live(77).unwrap()["media_port"].as_u64().unwrap() as u16;
            let target = SocketAddr::from(([127, 0, 0, 1], port));
            let local = UdpSocket::bind("127.0.0.1:0").unwrap();
            let spoof = UdpSocket::bind("127.0.0.2:0").unwrap();
            let rtp = |ssrc: u32, seq: u16| {
                ftl_proto::media::RtpHeader {
                    marker: false,
                    payload_type: 96,
                    sequence_number: seq,
                    timestamp: 0,
                    ssrc: ftl_proto::Ssrc(ssrc),
                }
                .build(&[0x65, 1, 2, 3])
            };
            for i in 0..2000u32 {
                let junk: Vec<u8> = (0..(i % 300)).map(|j| (i ^ j) as u8).collect();
                let _ = local.send_to(&junk, target);
                let _ = local.send_to(&rtp(78, 0)[..(i as usize % 12)], target);
                let _ = local.send_to(&rtp(12345, i as u16), target);
            }
            // A spoofed source at full speed for two seconds, on the stream's own SSRC.
            let end = Instant::now() + Duration::from_secs(2);
            let mut sent = 0u64;
            while Instant::now() < end {
                for _ in 0..100 {
                    let _ = spoof.send_to(&rtp(78, sent as u16), target);
                    sent += 1;
                }
            }
            let stats = srv.live(77).unwrap();
            assert_eq!(stats["lost"], 0);
            format!("all counted and dropped ({sent} spoofed in 2 s)")
        },
    );
}

#[test]
fn http_websocket_and_whep_attacks() {
    under_attack(
        "HTTP / WebSocket / WHEP",
        // The thousand offers below come from the healthy viewer's address: no per-address
        // offer limits here (they have their own test).
        &[
            "--viewer-connect-timeout",
            "2",
            "--offer-rate",
            "0",
            "--max-pending-per-address",
            "2000",
        ],
        |srv| {
            let raw = |bytes: &[u8]| {
                let mut s = TcpStream::connect(srv.http).unwrap();
                let _ = s.write_all(bytes);
                read_reply(&mut s)
            };
            assert!(raw(b"\x16\x03\x01 not http\r\n\r\n").starts_with("HTTP/1.1 400"));
            assert!(raw(
                format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(200_000)).as_bytes()
            )
            .starts_with("HTTP/1.1 4"));
            assert!(raw(b"GET /../../etc/passwd HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
            assert!(raw(b"GET /%2e%2e/Cargo.toml HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
            // Slowloris: a byte a second is cut at the 10 s request deadline with 408.
            let http_addr = srv.http;
            let slow = std::thread::spawn(move || {
                let mut s = TcpStream::connect(http_addr).unwrap();
                let started = Instant::now();
                for b in b"GET /api/streams HTTP/1.1\r\nX: yyyyyyyyyyyyyyyyyyyy" {
                    if s.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    if started.elapsed() > Duration::from_secs(14) {
                        break;
                    }
                }
                let reply = read_reply(&mut s);
                (started.elapsed(), reply)
            });
            let sdp = |body: &str| {
                http(
                    srv.http,
                    "POST",
                    "/whep/77",
                    &[("Content-Type", "application/sdp")],
                    body.as_bytes(),
                )
                .unwrap()
                .status
            };
            assert_eq!(sdp("v=0\r\nthis is not sdp"), 400);
            let no_media = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
            assert_eq!(sdp(no_media), 400);
            // A thousand offers that never complete ICE expire by themselves.
            for _ in 0..1000 {
                let v = Viewer::whep(srv.http, 77).unwrap();
                drop(v);
            }
            assert!(srv.metric("itg_viewers_created_total") >= 1000.0);
            assert!(srv.wait_for(Duration::from_secs(10), |s| s.metric("itg_viewers") <= 1.0));
            assert!(
                srv.metric("itg_ice_failures_total") >= 1000.0,
                "expired offers are ICE failures"
            );
            // WebSocket garbage and an oversized message.
            let mut ws = Viewer::websocket(srv.http, "channel=77").unwrap();
            let sock = ws.ws.as_mut().unwrap();
            let _ = sock.send(tungstenite::Message::binary(vec![0u8; 1000]));
            let _ = sock.send(tungstenite::Message::text("x".repeat(200_000)));
            let _ = sock.flush();
            let closed = ws.drive(Duration::from_secs(3), |v| {
                v.ws.as_ref().is_some_and(|_| false)
            });
            assert!(!closed);
            drop(ws);
            let (took, reply) = slow.join().unwrap();
            assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
            assert!(took < Duration::from_secs(13), "{took:?}");
            "400/404/408/413/431 and close; unconnected viewers expire".into()
        },
    );
}

#[test]
fn webrtc_port_attacks() {
    under_attack(
        "WebRTC UDP: random, STUN with wrong credentials, DTLS garbage",
        &[],
        |srv| {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            for i in 0..3000u32 {
                let junk: Vec<u8> = (0..(i % 500))
                    .map(|j| (i.wrapping_mul(7) ^ j) as u8)
                    .collect();
                let _ = udp.send_to(&junk, srv.webrtc);
                // A DTLS record header and a STUN binding request with an unknown username.
                let _ = udp.send_to(
                    &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4],
                    srv.webrtc,
                );
                let mut stun = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
                stun.extend_from_slice(&i.to_be_bytes().repeat(3));
                stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]);
                stun.extend_from_slice(b"nope:bad");
                let _ = udp.send_to(&stun, srv.webrtc);
                if i % 500 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            assert!(srv.wait_for(Duration::from_secs(3), |s| s
                .metric("itg_webrtc_unrouted_total")
                >= 8000.0));
            "counted as unrouted, dropped".into()
        },
    );
}

#[test]
fn limits_are_refused_with_a_clear_status() {
    let srv = Spawned::start(&[
        "--max-streams",
        "1",
        "--max-viewers",
        "2",
        "--max-viewers-per-channel",
        "1",
        "--max-http-connections",
        "50",
    ]);
    let h = healthy(&srv);
    // A second stream: the stream limit.
    let opts = srv.options(88, true);
    match stream(&opts, &AtomicBool::new(false)) {
        Err(ClientError::Protocol(ftl_proto::Error::Refused { status, reason })) => {
            assert_eq!(status.code(), 500);
            assert!(reason.contains("stream limit"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // A second viewer: the per-channel limit.
    match Viewer::whep(srv.http, 77) {
        Err(server_mio::tools::probe::JoinError::Refused(r)) => assert_eq!(r.status, 503),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a second viewer was let in"),
    }
    // The total limit: one more viewer (on the offline channel 88) fits, the next does not
    // once the table is all connected peers (an unconnected one would give way instead).
    let mut waiting = Viewer::whep(srv.http, 88).unwrap();
    assert!(waiting.drive(Duration::from_secs(5), |v| v.connected.is_some()));
    match Viewer::whep(srv.http, 88) {
        Err(server_mio::tools::probe::JoinError::Refused(r)) => {
            assert_eq!(r.status, 503);
            assert!(String::from_utf8_lossy(&r.body).contains("viewer limit"));
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("the total viewer limit let a viewer in"),
    }
    // Idle HTTP connections past the per-address cap (32) get 429; that address's next
    // request too, while another address is served.
    let idle: Vec<TcpStream> = (0..60)
        .map(|_| connect_from("127.0.0.3", srv.http))
        .collect();
    assert!(srv.wait_for(Duration::from_secs(3), |s| s
        .metric("itg_http_refused_total")
        >= 28.0));
    let ask = |ip: &str| {
        let mut s = connect_from(ip, srv.http);
        s.write_all(b"GET /api/streams HTTP/1.1\r\n\r\n").unwrap();
        read_reply(&mut s)
    };
    let reply = ask("127.0.0.3");
    assert!(reply.starts_with("HTTP/1.1 429"), "{reply}");
    let reply = ask("127.0.0.2");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    drop(idle);
    let (video, lost) = finish(h);
    eprintln!("| limits | 500 stream limit, 503 viewer limits, 429 per-address connection cap | - | - | {video} video packets, {lost} lost | - |");
    assert_eq!(lost, 0);
}

/// A browser-like WHEP offer (str0m's, receive-only video and audio) that is never followed up.
fn whep_offer() -> String {
    let mut rtc = str0m::Rtc::builder()
        .set_rtp_mode(true)
        .build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(
        str0m::media::MediaKind::Video,
        str0m::media::Direction::RecvOnly,
        None,
        None,
        None,
    );
    api.add_media(
        str0m::media::MediaKind::Audio,
        str0m::media::Direction::RecvOnly,
        None,
        None,
        None,
    );
    let (offer, _) = api.apply().unwrap();
    offer.to_sdp_string()
}

/// A WHEP `POST` from `ip` over a fresh connection; returns the status line.
fn whep_post_from(ip: &str, to: SocketAddr, channel: u32, body: &str) -> String {
    let mut s = connect_from(ip, to);
    let req = format!(
        "POST /whep/{channel} HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    read_reply(&mut s)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Eight clients on 127.0.0.2 post valid WHEP offers that never connect, as fast as they can,
/// for 10 s. Its share of the table fills and the rest is refused with `429`; an honest viewer
/// from another address joins in the middle of it and plays; the connected viewer loses
/// nothing; memory 30 s after the flood is back within 20 MB of where it started.
#[test]
fn a_whep_flood_from_one_address_locks_nobody_out() {
    let srv = Spawned::start(&[]);
    let h = healthy(&srv);
    let rss_before = srv.rss_kb();
    let offer = Arc::new(whep_offer());
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<JoinHandle<Vec<String>>> = (0..8)
        .map(|_| {
            let (offer, stop, http_addr) = (offer.clone(), stop.clone(), srv.http);
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    statuses.push(whep_post_from("127.0.0.2", http_addr, 77, &offer));
                }
                statuses
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    let rss_during = srv.rss_kb();
    let joined = Instant::now();
    let mut honest = Viewer::whep(srv.http, 77).expect("the honest viewer was refused");
    let got_video = honest.drive(Duration::from_secs(5), |v| v.video_count > 30);
    let first_video = joined.elapsed();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::SeqCst);
    let statuses: Vec<String> = flooders
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let count = |code: &str| statuses.iter().filter(|s| s.contains(code)).count();
    let (created, limited, full) = (count(" 201 "), count(" 429 "), count(" 503 "));
    // The flood's sessions expire (--viewer-connect-timeout 15 s), then memory settles.
    assert!(srv.wait_for(Duration::from_secs(25), |s| s.metric("itg_viewers") <= 2.0));
    std::thread::sleep(Duration::from_secs(12));
    let rss_after = srv.rss_kb();
    drop(honest);
    let (video, lost) = finish(h);
    eprintln!(
        "| WHEP flood from one address, 8 clients, 10 s | {} offers: {created} 201, {limited} 429, \
         {full} 503; honest viewer's video after {} ms | {rss_before} kB | during {rss_during} kB, \
         30 s after {rss_after} kB | {video} video packets, {lost} lost | - |",
        statuses.len(),
        first_video.as_millis()
    );
    assert!(got_video, "the honest viewer got no video during the flood");
    // How many offers the flooders get out depends on the machine; what the server owes is
    // a refusal for every one past the address's share.
    assert!(
        statuses.len() >= 200,
        "the flood was too thin to show anything: {} offers",
        statuses.len()
    );
    assert!(
        limited + 64 >= statuses.len(),
        "the flood was not refused: {limited} 429s of {} offers",
        statuses.len()
    );
    assert!(
        created <= 64,
        "{created} unconnected sessions for one address"
    );
    assert_eq!(full, 0, "the flood filled the table: {full} 503s");
    assert!(
        srv.metric("itg_offers_pending_capped_total") + srv.metric("itg_offers_rate_limited_total")
            > 1000.0
    );
    assert!(video > 100);
    assert_eq!(lost, 0, "the connected viewer lost packets");
    assert!(
        rss_after < rss_before + 20 * 1024,
        "memory grew from {rss_before} to {rss_after} kB"
    );
}

/// A full table (`--max-viewers 4`: one connected viewer, three offers from other addresses
/// that never connect) lets its oldest unconnected session go for a newcomer, who plays;
/// a table of connected peers refuses with `503`.
#[test]
fn a_full_table_lets_its_oldest_unconnected_session_go() {
    let srv = Spawned::start(&["--max-viewers", "4"]);
    let h = healthy(&srv);
    let offer = whep_offer();
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let status = whep_post_from(ip, srv.http, 77, &offer);
        assert!(status.contains(" 201 "), "{status}");
    }
    assert!(srv.metric("itg_viewers") >= 4.0);
    let mut newcomer = Viewer::whep(srv.http, 77).expect("the newcomer was refused");
    assert!(newcomer.drive(Duration::from_secs(5), |v| v.video_count > 30));
    assert_eq!(srv.metric("itg_unconnected_evicted_total"), 1.0);
    // Two more connect; the table is four connected peers and refuses the next.
    let mut more: Vec<Viewer> = (0..2)
        .map(|_| Viewer::whep(srv.http, 77).unwrap())
        .collect();
    for v in &mut more {
        assert!(v.drive(Duration::from_secs(5), |v| v.connected.is_some()));
    }
    let status = whep_post_from("127.0.0.5", srv.http, 77, &offer);
    assert!(status.contains(" 503 "), "{status}");
    assert_eq!(srv.metric("itg_unconnected_evicted_total"), 3.0);
    drop(newcomer);
    drop(more);
    let (video, lost) = finish(h);
    eprintln!("| full table | the oldest unconnected session gives way, 503 when all are connected | - | - | {video} video packets, {lost} lost | - |");
    assert_eq!(lost, 0);
}

#[test]
fn a_vanished_client_that_returns_resumes_its_viewers() {
    let srv = Spawned::start(&["--keepalive-timeout", "3"]);
    let stop = Arc::new(AtomicBool::new(false));
    let opts = srv.options(77, true);
    let s = stop.clone();
    let first = std::thread::spawn(move || stream(&opts, &s));
    assert!(srv.wait_for(Duration::from_secs(5), |s| s.live(77).is_some()));
    let mut v = Viewer::whep(srv.http, 77).unwrap();
    v.drive(Duration::from_secs(3), |v| v.video_count > 60);
    // The client vanishes: its thread stops without DISCONNECT... (the socket closes with it).
    stop.store(true, Ordering::SeqCst);
    let _ = first.join();
    let before = v.video_count;
    // ...and is back within a second.
    let stop2 = Arc::new(AtomicBool::new(false));
    let opts = srv.options(77, true);
    let s = stop2.clone();
    let second = std::thread::spawn(move || stream(&opts, &s));
    assert!(
        v.drive(Duration::from_secs(8), |v| v.video_count > before + 60),
        "the viewer did not resume"
    );
    stop2.store(true, Ordering::SeqCst);
    second.join().unwrap().unwrap();
    // A control connection that goes silent (no PING) ends its stream after the keepalive
    // timeout and frees the port.
    let mut s = TcpStream::connect(srv.ftl).unwrap();
    s.write_all(b"HMAC\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = s.read(&mut buf).unwrap();
    let hexed = String::from_utf8_lossy(&buf[..n])
        .trim()
        .strip_prefix("200 ")
        .unwrap()
        .to_owned();
    let nonce: Vec<u8> = (0..hexed.len() / 2)
        .map(|k| u8::from_str_radix(&hexed[2 * k..2 * k + 2], 16).unwrap())
        .collect();
    let (channel, key) = ftl_proto::StreamKey::parse_obs(&srv.key(88)).unwrap();
    let digest = ftl_proto::control::auth::digest(&key, &nonce);
    s.write_all(&ftl_proto::control::Command::Connect { channel, digest }.to_bytes())
        .unwrap();
    for l in ftl_proto::control::Metadata::reference(88).to_lines() {
        s.write_all(format!("{l}\r\n\r\n").as_bytes()).unwrap();
    }
    s.write_all(b".\r\n\r\n").unwrap();
    assert!(srv.wait_for(Duration::from_secs(3), |s| s.live(88).is_some()));
    assert!(
        srv.wait_for(Duration::from_secs(8), |s| s.live(88).is_none()),
        "the silent stream did not end"
    );
    assert!(read_reply(&mut s).contains("408 "));
    eprintln!(
        "| fault: client vanishes and returns | viewer resumes, no reload | - | - | resumed | - |"
    );
}

#[test]
fn an_unusable_data_dir_is_a_clear_error() {
    // Root ignores permission bits, so the unusable dir is a path through a regular file.
    let file = std::env::temp_dir().join(format!(
        "itg-notadir-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::write(&file, b"not a directory").unwrap();
    let dir = file.join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_server-mio"))
        .args([
            "--addr",
            "127.0.0.1",
            "--ftl-port",
            "0",
            "--http-port",
            "0",
            "--webrtc-port",
            "0",
            "--data-dir",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < end,
            "the server started on an unusable data dir"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success());
    assert!(stderr.contains("keys.json"), "{stderr}");
    std::fs::remove_file(file).unwrap();
}

#[test]
fn a_second_authenticated_session_replaces_the_live_one_and_a_vanished_viewer_is_freed() {
    let srv = Spawned::start(&[]);
    let h = healthy(&srv);
    let old_port = srv.live(77).unwrap()["media_port"].as_u64().unwrap() as u16;
    // The same channel, authenticated: the newest session wins; the old one is told 410.
    let stop = Arc::new(AtomicBool::new(false));
    let opts = srv.options(77, true);
    let s = stop.clone();
    let second = std::thread::spawn(move || stream(&opts, &s));
    assert!(srv.wait_for(Duration::from_secs(5), |s| s
        .live(77)
        .is_some_and(|l| l["media_port"].as_u64() != Some(u64::from(old_port)))));
    match h.client.join().unwrap() {
        Err(ClientError::Protocol(ftl_proto::Error::Refused { status, .. })) => {
            assert_eq!(status.code(), 410)
        }
        other => panic!("the replaced session ended with {other:?}"),
    }
    // The old media port is free again; datagrams to it reach nothing.
    UdpSocket::bind(("127.0.0.1", old_port)).expect("the replaced stream's port was freed");
    // The viewer goes on with the new session's media.
    std::thread::sleep(Duration::from_secs(3));
    h.stop.store(true, Ordering::SeqCst);
    let v = h.viewer.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    second.join().unwrap().unwrap();
    assert!(v.video_count > 150, "{}", v.video_count);
    // A viewer that vanishes without a word is dropped once ICE notices.
    let mut gone = Viewer::whep(srv.http, 77).unwrap();
    gone.drive(Duration::from_secs(3), |v| v.connected.is_some());
    assert!(gone.connected.is_some());
    drop(gone);
    assert!(
        srv.wait_for(Duration::from_secs(30), |s| s.metric("itg_viewers") == 0.0),
        "the vanished viewer was not freed"
    );
    eprintln!("| fault: second session, viewer vanishes | 410 to the old session; viewer freed after ICE timeout | - | - | viewer continued | - |");
}

#[test]
fn obs_speed_test_never_reaches_a_viewer() {
    let srv = Spawned::start(&[]);
    // A viewer waits on channel 88 before its stream starts.
    let mut viewer = Viewer::whep(srv.http, 88).unwrap();
    let opts = ClientOptions {
        speed_test: true,
        repeat: false,
        ..srv.options(88, true)
    };
    let client = std::thread::spawn(move || stream(&opts, &AtomicBool::new(false)));
    viewer.drive(Duration::from_secs(3), |v| v.video_count > 30);
    let dropped = srv.metric("itg_stream_dropped_total{channel=\"88\"}");
    viewer.drive(Duration::from_secs(12), |_| client.is_finished());
    let stats = client.join().unwrap().unwrap();
    viewer.drive(Duration::from_millis(300), |_| false);
    assert!(dropped > 500.0, "only {dropped} datagrams dropped");
    assert!(
        viewer.audio.len() > 50,
        "{} audio packets",
        viewer.audio.len()
    );
    assert!(
        viewer.audio.iter().all(|p| p.payload.len() < 1000),
        "speed-test junk reached the viewer"
    );
    assert!(viewer.video_count > 50);
    eprintln!("| OBS speed test burst | dropped ({dropped} datagrams), never NACKed, never forwarded | - | - | {} audio packets clean | - |", viewer.audio.len());
    assert!(stats.nacks == 0, "the burst was NACKed");
}

/// A WHIP offer with H.264 (or `codec` instead) that nobody will ever complete ICE for.
fn whip_offer(codec: &str) -> String {
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
         a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
         a=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:96 {codec}\r\n\
         a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
    )
}

/// A WHIP `POST` from `ip`; returns the status line.
fn whip_post_from(ip: &str, to: SocketAddr, channel: &str, key: &str, body: &str) -> String {
    let mut s = connect_from(ip, to);
    let req = format!(
        "POST /whip/{channel} HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
         Authorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    read_reply(&mut s)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn whip_attacks() {
    under_attack(
        "WHIP: bad offers and keys, 1000 offers never connected, a junk publisher, wrong keys from one address",
        &[
            "--viewer-connect-timeout",
            "2",
            "--auth-fail-limit",
            "5",
            "--offer-rate",
            "0",
            "--max-pending-per-address",
            "2000",
        ],
        |srv| {
            let good = whip_offer("H264/90000");
            let key88 = srv.key(88);
            let post = |channel: &str, auth: Option<&str>, ct: &str, body: &[u8]| {
                let bearer = auth.map(|a| format!("Bearer {a}"));
                let mut h = vec![("Content-Type", ct)];
                if let Some(b) = &bearer {
                    h.push(("Authorization", b.as_str()));
                }
                http(srv.http, "POST", &format!("/whip/{channel}"), &h, body)
                    .unwrap()
                    .status
            };
            let sdp = "application/sdp";
            // Two failed keys from 127.0.0.1, below its limit of 5.
            assert_eq!(post("88", None, sdp, good.as_bytes()), 401);
            assert_eq!(post("88", Some("88-wrong"), sdp, good.as_bytes()), 401);
            assert_eq!(post("88", Some(&srv.key(77)), sdp, good.as_bytes()), 401);
            assert_eq!(post("999", Some("999-x"), sdp, good.as_bytes()), 404);
            assert_eq!(post("88x", Some(&key88), sdp, good.as_bytes()), 404);
            assert_eq!(post("88", Some(&key88), sdp, b"v=0\r\nnot sdp"), 400);
            assert_eq!(post("88", Some(&key88), sdp, b"\xff\xfe\x00garbage"), 400);
            let vp8 = whip_offer("VP8/90000");
            assert_eq!(post("88", Some(&key88), sdp, vp8.as_bytes()), 406);
            let none = good.replace("m=video 9", "m=video 0");
            assert_eq!(post("88", Some(&key88), sdp, none.as_bytes()), 400);
            assert_eq!(post("88", Some(&key88), "text/plain", good.as_bytes()), 415);
            let huge = format!("{good}{}", "a=x:y\r\n".repeat(20_000));
            assert_eq!(post("88", Some(&key88), sdp, huge.as_bytes()), 413);
            let other = |method: &str, path: &str| http(srv.http, method, path, &[], b"").unwrap().status;
            assert_eq!(other("DELETE", "/whip/88/nosuchsession"), 404);
            assert_eq!(other("PATCH", "/whip/88/nosuchsession"), 405);
            assert_eq!(other("OPTIONS", "/whip/88"), 204);

            // A thousand authorized offers that never connect: answered, then expired with
            // nothing left in the peer table. In rounds of 250, as a burst of real publishers
            // would come; the memory check is the caller's (pending peers at the peak of a
            // round stay mapped by the allocator: ~30 KB each, flat after a few rounds).
            let mut rss = Vec::new();
            for _ in 0..4 {
                for _ in 0..250 {
                    assert_eq!(post("88", Some(&key88), sdp, good.as_bytes()), 201);
                }
                assert!(srv.wait_for(Duration::from_secs(10), |s| s.metric("itg_viewers") <= 1.0));
                rss.push(srv.rss_kb());
            }
            eprintln!("RSS after each round of 250 expired offers: {rss:?} kB");
            assert!(srv.metric("itg_whip_publishers_total") >= 1000.0);
            assert!(srv.live(88).is_none(), "an unconnected offer went live");

            // Wrong keys from 127.0.0.2: 401 until its limit, then 429 with no key check;
            // 127.0.0.1 is still let in.
            let mut statuses = Vec::new();
            for i in 0..8 {
                statuses.push(whip_post_from("127.0.0.2", srv.http, "88", &format!("88-bad{i}"), &good));
            }
            assert!(statuses[..5].iter().all(|s| s.starts_with("HTTP/1.1 401")), "{statuses:?}");
            assert!(statuses[5..].iter().all(|s| s.starts_with("HTTP/1.1 429")), "{statuses:?}");
            assert!(whip_post_from("127.0.0.2", srv.http, "88", &key88, &good).starts_with("HTTP/1.1 429"));
            assert!(whip_post_from("127.0.0.1", srv.http, "88", &key88, &good).starts_with("HTTP/1.1 201"));

            // A real publisher whose "H.264" is junk between start codes: the server relays
            // what it can and the stream ends cleanly when the publisher leaves.
            let mut junk = Vec::new();
            for i in 0..400u32 {
                junk.extend_from_slice(&[0, 0, 0, 1]);
                junk.extend((0..(i * 37 % 1400 + 1)).map(|j| (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8));
            }
            let opts = server_mio::tools::whip_client::WhipOptions {
                url: format!("http://{}/whip/88", srv.http),
                token: key88.clone(),
                video: Some(junk),
                audio: Some(AUDIO.to_vec()),
                fps: 30,
                repeat: true,
                duration: Some(Duration::from_secs(3)),
                sent_log: None,
                vanish: false,
                tcp: false,
                simulcast: Vec::new(),
                ssrc_simulcast: false,
                upper_layers_after: None,
                video_after: None,
            };
            let stats = server_mio::tools::whip_client::publish(&opts, &AtomicBool::new(false)).unwrap();
            assert!(stats.video_packets > 50, "{stats:?}");
            assert!(srv.metric("itg_whip_packets_total") > 50.0, "the junk never reached the relay");
            assert!(srv.wait_for(Duration::from_secs(5), |s| s.live(88).is_none()));
            assert!(srv.logged("WHIP publisher"), "no WHIP log lines");
            "401/404/400/406/415/413/405/204; 1000 offers expire; junk relayed; 429 per address".into()
        },
    );
}

/// Idle connections from 127.0.0.2, held open and renewed until `stop`: up to `hold` each to
/// the FTL and HTTP ports, a few new ones every 10 ms. Returns how many were opened.
fn idle_flood(srv: &Spawned, hold: usize, stop: Arc<AtomicBool>) -> JoinHandle<(u64, u64)> {
    let (ftl, http_addr) = (srv.ftl, srv.http);
    std::thread::spawn(move || {
        let mut held: (Vec<TcpStream>, Vec<TcpStream>) = (Vec::new(), Vec::new());
        let mut opened = (0u64, 0u64);
        while !stop.load(Ordering::SeqCst) {
            for _ in 0..10 {
                held.0.push(connect_from("127.0.0.2", ftl));
                held.1.push(connect_from("127.0.0.2", http_addr));
                opened.0 += 1;
                opened.1 += 1;
            }
            for v in [&mut held.0, &mut held.1] {
                if v.len() > hold {
                    v.drain(..v.len() - hold);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        opened
    })
}

/// While the flood runs: an honest FTL client from 127.0.0.1 goes live on channel 88 and an
/// honest viewer joins it and plays. Returns (ms to live, ms to the viewer's first keyframe).
fn honest_newcomers(srv: &Spawned) -> (u128, u128) {
    let t = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let opts = srv.options(88, true);
    let s = stop.clone();
    let client = std::thread::spawn(move || stream(&opts, &s));
    assert!(
        srv.wait_for(Duration::from_secs(10), |s| s.live(88).is_some()),
        "the honest streamer could not go live during the flood"
    );
    let live = t.elapsed().as_millis();
    let t = Instant::now();
    let mut v = Viewer::whep(srv.http, 88).expect("the honest viewer could not join");
    assert!(
        v.drive(Duration::from_secs(10), |v| v.video_count > 30),
        "the honest viewer got no picture during the flood"
    );
    let first = v
        .first_keyframe
        .map_or(0, |k| k.duration_since(t).as_millis());
    let _ = v.whep_delete(srv.http);
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap().unwrap();
    (live, first)
}

#[test]
fn idle_floods_from_one_address_lock_nobody_out() {
    under_attack(
        "Idle FTL and HTTP connections from 127.0.0.2 (300 each held, 1000/s new)",
        &[],
        |srv| {
            let stop = Arc::new(AtomicBool::new(false));
            let flood = idle_flood(srv, 300, stop.clone());
            std::thread::sleep(Duration::from_secs(2));
            let (live, first) = honest_newcomers(srv);
            stop.store(true, Ordering::SeqCst);
            let (ftl, http_opened) = flood.join().unwrap();
            let refused = (
                srv.metric("itg_control_refused_total"),
                srv.metric("itg_http_refused_total"),
            );
            assert!(refused.0 > 0.0 && refused.1 > 0.0, "{refused:?}");
            format!(
                "{ftl} FTL / {http_opened} HTTP opened, {} / {} refused at the per-address caps; \
                 honest streamer live in {live} ms, honest viewer's first keyframe in {first} ms",
                refused.0, refused.1
            )
        },
    );
}

#[test]
fn a_full_table_recycles_the_oldest_unauthenticated_connection() {
    under_attack(
        "Idle connections from 127.0.0.2 fill both tables (per-address caps off)",
        &[
            "--max-control-connections",
            "40",
            "--max-ftl-per-address",
            "100000",
            "--max-http-connections",
            "60",
            "--max-http-per-address",
            "100000",
        ],
        |srv| {
            let stop = Arc::new(AtomicBool::new(false));
            let flood = idle_flood(srv, 200, stop.clone());
            assert!(srv.wait_for(Duration::from_secs(5), |s| s
                .metric("itg_control_evicted_total")
                > 100.0
                && s.metric("itg_http_evicted_total") > 100.0));
            let (live, first) = honest_newcomers(srv);
            stop.store(true, Ordering::SeqCst);
            let (ftl, http_opened) = flood.join().unwrap();
            let evicted = (
                srv.metric("itg_control_evicted_total"),
                srv.metric("itg_http_evicted_total"),
            );
            format!(
                "{ftl} FTL / {http_opened} HTTP opened, {} / {} unauthenticated ones recycled; \
                 honest streamer live in {live} ms, honest viewer's first keyframe in {first} ms",
                evicted.0, evicted.1
            )
        },
    );
}

#[test]
fn ice_tcp_port_attacks() {
    under_attack(
        "ICE-TCP: garbage, a 65535-byte frame then silence, 1000 idle connections",
        &[],
        |srv| {
            // The TCP listener has the UDP port's number.
            let port = srv.webrtc;
            // Garbage (a frame that is no STUN request): closed at once.
            let mut g = TcpStream::connect(port).unwrap();
            g.write_all(&[0, 8, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
            assert_eq!(read_reply(&mut g), "", "garbage was answered");
            // An empty frame: closed.
            let mut e = TcpStream::connect(port).unwrap();
            e.write_all(&[0, 0]).unwrap();
            assert_eq!(read_reply(&mut e), "");
            // A 65535-byte frame announced, a little sent, then silence: closed at the 10 s
            // routing deadline.
            let t = Instant::now();
            let mut big = TcpStream::connect(port).unwrap();
            big.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
            big.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let mut sink = Vec::new();
            let _ = big.read_to_end(&mut sink);
            let took = t.elapsed();
            assert!(
                took >= Duration::from_secs(9) && took < Duration::from_secs(14),
                "{took:?}"
            );
            // 1000 idle connections from 127.0.0.2: 32 held (the per-address cap), the rest
            // closed at once; the held ones at the deadline.
            let idle: Vec<TcpStream> = (0..1000).map(|_| connect_from("127.0.0.2", port)).collect();
            assert!(srv.wait_for(Duration::from_secs(5), |s| s
                .metric("itg_ice_tcp_refused_total")
                >= 968.0));
            drop(idle);
            format!(
                "garbage and empty frames closed at once; the stalled frame closed after {:.1} s; 968 of 1000 idle refused",
                took.as_secs_f64()
            )
        },
    );
}
