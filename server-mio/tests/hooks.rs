//! The external key service and stream events, against a mock HTTP service on loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use server_mio::tools::client::{stream, ClientError, ClientOptions};

/// How the mock answers.
#[derive(Clone)]
struct Mode {
    key: Option<String>,
    delay: Duration,
    events_ok: bool,
}

/// A scripted HTTP service that records what it was asked.
struct Mock {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    requests: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Mock {
    fn start(addr: &str, mode: Mode) -> Mock {
        Self::start_tls(addr, mode, None)
    }

    fn start_tls(addr: &str, mode: Mode, tls: Option<Arc<rustls::ServerConfig>>) -> Mock {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(mode));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (m, r) = (mode.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let (m, r, tls) = (m.clone(), r.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve(conn, &m, &r),
                    Some(cfg) => {
                        let Ok(server) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(server, conn), &m, &r);
                    }
                });
            }
        });
        Mock {
            addr,
            mode,
            requests,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/ftl", self.addr)
    }

    fn events(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "POST" && p == "/ftl/events")
            .map(|(_, _, b)| serde_json::from_str(b).unwrap())
            .collect()
    }
}

fn serve(
    mut s: impl Read + Write,
    mode: &Mutex<Mode>,
    requests: &Mutex<Vec<(String, String, String)>>,
) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, body) = loop {
        let Ok(n) = s.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..i]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            while raw.len() < i + 4 + len {
                let Ok(n) = s.read(&mut buf) else { return };
                if n == 0 {
                    return;
                }
                raw.extend_from_slice(&buf[..n]);
            }
            break (
                head,
                String::from_utf8_lossy(&raw[i + 4..i + 4 + len]).into_owned(),
            );
        }
    };
    let mut words = head.split(' ');
    let (method, path) = (
        words.next().unwrap().to_owned(),
        words.next().unwrap().to_owned(),
    );
    let mode = mode.lock().unwrap().clone();
    requests
        .lock()
        .unwrap()
        .push((method.clone(), path.clone(), body));
    std::thread::sleep(mode.delay);
    let (status, body) = if method == "GET" && path.starts_with("/ftl/hmac/") {
        match mode.key {
            Some(k) => (200, format!("{{\"key\":\"{k}\"}}")),
            None => (404, "no such channel".to_owned()),
        }
    } else if method == "POST" && path == "/ftl/events" {
        if mode.events_ok {
            (200, "ok".to_owned())
        } else {
            (503, "down".to_owned())
        }
    } else {
        (404, "?".to_owned())
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn client(server: &TestServer, key: &str, duration: Option<Duration>) -> ClientOptions {
    ftl_options(server.addrs.ftl, key, VIDEO_A, duration)
}

fn refused_with(r: Result<server_mio::tools::client::ClientStats, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Protocol(ftl_proto::Error::Refused { status, reason })) => {
            (status.code(), reason)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn ok_mode(key: &str) -> Mode {
    Mode {
        key: Some(key.into()),
        delay: Duration::ZERO,
        events_ok: true,
    }
}

#[test]
fn keys_from_the_service_are_enforced_and_events_arrive_in_order() {
    let mock = Mock::start("127.0.0.1:0", ok_mode("s3cret"));
    let url = mock.url();
    let server = TestServer::start_with(|a| {
        a.auth_url = Some(url);
        a.events_interval = 1;
    });
    // The service's key works (the key file's does not matter).
    let stats = stream(
        &client(&server, "77-s3cret", Some(Duration::from_millis(2500))),
        &AtomicBool::new(false),
    )
    .unwrap();
    // A wrong key is refused with 405; a channel the service does not know with 401.
    let (code, _) = refused_with(stream(
        &client(&server, "77-wrong", None),
        &AtomicBool::new(false),
    ));
    assert_eq!(code, 405);
    mock.mode.lock().unwrap().key = None;
    let (code, _) = refused_with(stream(
        &client(&server, "5-s3cret", None),
        &AtomicBool::new(false),
    ));
    assert_eq!(code, 401);
    assert!(server.wait_for(Duration::from_secs(3), |_| mock
        .events()
        .iter()
        .any(|e| e["event"] == "stream_stop")));
    let events = mock.events();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"stream_start"));
    assert_eq!(kinds.last(), Some(&"stream_stop"));
    assert!(
        kinds.iter().filter(|k| **k == "stream_stats").count() >= 1,
        "{kinds:?}"
    );
    let start = &events[0];
    assert_eq!(start["channel"], 77);
    assert_eq!(start["media_port"], stats.media_port);
    assert_eq!(start["video"]["codec"], "H264");
    assert_eq!(start["audio"]["ssrc"], 77);
    let stop = events.last().unwrap();
    assert_eq!(stop["reason"], "disconnect");
    assert!(stop["duration_ms"].as_u64().unwrap() >= 2000);
    assert_eq!(
        stop["totals"]["video_packets"].as_u64(),
        Some(stats.video_packets)
    );
    let stat = events
        .iter()
        .rev()
        .find(|e| e["event"] == "stream_stats")
        .unwrap();
    assert!(stat["bitrate_bps"].as_f64().unwrap() > 50_000.0);
    assert_eq!(stat["width"], 320);
}

#[test]
fn a_slow_service_refuses_before_the_clients_timeout() {
    let mock = Mock::start(
        "127.0.0.1:0",
        Mode {
            delay: Duration::from_secs(8),
            ..ok_mode("k")
        },
    );
    let url = mock.url();
    let server = TestServer::start_with(|a| a.auth_url = Some(url));
    let t = Instant::now();
    let (code, reason) = refused_with(stream(
        &client(&server, "77-k", None),
        &AtomicBool::new(false),
    ));
    assert_eq!(code, 500);
    assert!(reason.contains("key service"), "{reason}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_service_down_at_start_and_back_later() {
    // A port with nothing behind it yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/ftl");
    let server = TestServer::start_with(|a| a.auth_url = Some(url));
    let (code, _) = refused_with(stream(
        &client(&server, "77-k", None),
        &AtomicBool::new(false),
    ));
    assert_eq!(code, 500, "a service that is down never lets a stream in");
    let mock = Mock::start(&format!("127.0.0.1:{port}"), ok_mode("k"));
    stream(
        &client(&server, "77-k", Some(Duration::from_millis(500))),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(server.wait_for(Duration::from_secs(3), |_| mock.events().len() >= 2));
}

#[test]
fn events_are_kept_across_an_outage() {
    let mock = Mock::start(
        "127.0.0.1:0",
        Mode {
            events_ok: false,
            ..ok_mode("k")
        },
    );
    let url = mock.url();
    let server = TestServer::start_with(|a| a.auth_url = Some(url));
    stream(
        &client(&server, "77-k", Some(Duration::from_millis(800))),
        &AtomicBool::new(false),
    )
    .unwrap();
    stream(
        &client(&server, "77-k", Some(Duration::from_millis(800))),
        &AtomicBool::new(false),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        mock.events().iter().all(|e| e["event"] == "stream_start"),
        "only the first event is being retried"
    );
    mock.mode.lock().unwrap().events_ok = true;
    // Back-off is at most a few seconds here; then all four arrive, in order.
    assert!(server.wait_for(Duration::from_secs(10), |_| {
        let ok: Vec<Value> = mock.events();
        ok.iter().filter(|e| e["event"] == "stream_stop").count() == 2
    }));
    let kinds: Vec<String> = mock
        .events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    let mut deduped = kinds.clone();
    deduped.dedup();
    assert_eq!(
        deduped,
        ["stream_start", "stream_stop", "stream_start", "stream_stop"],
        "{kinds:?}"
    );
}

#[test]
fn a_live_stream_keeps_flowing_while_the_service_hangs() {
    let mock = Mock::start("127.0.0.1:0", ok_mode("k"));
    let url = mock.url();
    let server = TestServer::start_with(|a| a.auth_url = Some(url));
    let opts = client(&server, "77-k", Some(Duration::from_secs(6)));
    let live = std::thread::spawn(move || stream(&opts, &AtomicBool::new(false)));
    assert!(server.wait_for(Duration::from_secs(5), |s| s
        .get("/api/streams")
        .1
        .contains("\"live\":true")));
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    viewer.keep_packets = false;
    viewer.drive(Duration::from_secs(1), |v| v.video_count > 10);
    // The service hangs; another streamer's lookup waits on it and is refused in time.
    mock.mode.lock().unwrap().delay = Duration::from_secs(30);
    let opts = client(&server, "88-k", None);
    let other = std::thread::spawn(move || stream(&opts, &AtomicBool::new(false)));
    let before = viewer.video_count;
    viewer.drive(Duration::from_secs(3), |_| false);
    assert!(
        viewer.video_count > before + 50,
        "media stalled while the service hung"
    );
    assert_eq!(refused_with(other.join().unwrap()).0, 500);
    viewer.drive(Duration::from_secs(8), |_| live.is_finished());
    live.join().unwrap().unwrap();
    assert_eq!(viewer.video_lost(), 0);
}

/// The WebSocket flavour of the mock: answers `key_request`s, records every message.
struct WsMock {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    messages: Arc<Mutex<Vec<Value>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl WsMock {
    fn start(addr: &str, mode: Mode) -> WsMock {
        Self::start_tls(addr, mode, None)
    }

    fn start_tls(addr: &str, mode: Mode, tls: Option<Arc<rustls::ServerConfig>>) -> WsMock {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(mode));
        let messages = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, msgs, conns) = (mode.clone(), messages.clone(), connections.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                conns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (m, msgs, tls) = (m.clone(), msgs.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => ws_serve(conn, &m, &msgs),
                    Some(cfg) => {
                        let Ok(server) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        ws_serve(rustls::StreamOwned::new(server, conn), &m, &msgs);
                    }
                });
            }
        });
        WsMock {
            addr,
            mode,
            messages,
            connections,
        }
    }

    fn events(&self) -> Vec<Value> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "event")
            .cloned()
            .collect()
    }
}

fn ws_serve(conn: impl Read + Write, m: &Mutex<Mode>, msgs: &Mutex<Vec<Value>>) {
    let Ok(mut ws) = tungstenite::accept(conn) else {
        return;
    };
    while let Ok(msg) = ws.read() {
        let Ok(text) = msg.to_text() else { continue };
        let v: Value = serde_json::from_str(text).unwrap_or_default();
        msgs.lock().unwrap().push(v.clone());
        if v["type"] != "key_request" {
            continue;
        }
        let mode = m.lock().unwrap().clone();
        std::thread::sleep(mode.delay);
        let answer = match mode.key {
            Some(k) => serde_json::json!({"type": "key", "id": v["id"], "key": k}),
            None => serde_json::json!({"type": "key", "id": v["id"], "error": "no such channel"}),
        };
        if ws
            .send(tungstenite::Message::text(answer.to_string()))
            .is_err()
        {
            return;
        }
    }
}

#[test]
fn keys_and_events_over_a_websocket() {
    let mock = WsMock::start("127.0.0.1:0", ok_mode("wskey"));
    let url = format!("ws://{}/ftl", mock.addr);
    let server = TestServer::start_with(|a| a.auth_url = Some(url));
    assert!(server.wait_for(Duration::from_secs(5), |_| mock
        .connections
        .load(std::sync::atomic::Ordering::SeqCst)
        == 1));
    std::thread::sleep(Duration::from_millis(200));
    let stats = stream(
        &client(&server, "77-wskey", Some(Duration::from_millis(1500))),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(
        refused_with(stream(
            &client(&server, "77-nope", None),
            &AtomicBool::new(false)
        ))
        .0,
        405
    );
    mock.mode.lock().unwrap().key = None;
    assert_eq!(
        refused_with(stream(
            &client(&server, "88-wskey", None),
            &AtomicBool::new(false)
        ))
        .0,
        401
    );
    assert!(server.wait_for(Duration::from_secs(3), |_| mock
        .events()
        .iter()
        .any(|e| e["event"] == "stream_stop")));
    let events = mock.events();
    assert_eq!(events[0]["event"], "stream_start");
    assert_eq!(events[0]["media_port"], stats.media_port);
    assert_eq!(events.last().unwrap()["event"], "stream_stop");
    // Requests carry correlation ids; one connection served them all.
    let ids: Vec<u64> = mock
        .messages
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "key_request")
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(
        mock.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[test]
fn a_websocket_service_down_at_start_is_reconnected() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/ftl");
    let server = TestServer::start_with(|a| a.auth_url = Some(url));
    let (code, reason) = refused_with(stream(
        &client(&server, "77-k", None),
        &AtomicBool::new(false),
    ));
    assert_eq!(code, 500, "{reason}");
    let mock = WsMock::start(&format!("127.0.0.1:{port}"), ok_mode("k"));
    // Back-off: 1 s, 2 s, 4 s ...
    assert!(server.wait_for(Duration::from_secs(10), |_| mock
        .connections
        .load(std::sync::atomic::Ordering::SeqCst)
        >= 1));
    std::thread::sleep(Duration::from_millis(300));
    stream(
        &client(&server, "77-k", Some(Duration::from_millis(500))),
        &AtomicBool::new(false),
    )
    .unwrap();
}

#[test]
fn a_slow_websocket_service_refuses_in_time() {
    let mock = WsMock::start(
        "127.0.0.1:0",
        Mode {
            delay: Duration::from_secs(8),
            ..ok_mode("k")
        },
    );
    let url = format!("ws://{}/ftl", mock.addr);
    let server = TestServer::start_with(|a| a.auth_url = Some(url));
    assert!(server.wait_for(Duration::from_secs(5), |_| mock
        .connections
        .load(std::sync::atomic::Ordering::SeqCst)
        == 1));
    let t = Instant::now();
    assert_eq!(
        refused_with(stream(
            &client(&server, "77-k", None),
            &AtomicBool::new(false)
        ))
        .0,
        500
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// A self-signed certificate for 127.0.0.1, its server config, and a CA file trusting it.
fn tls_setup() -> (Arc<rustls::ServerConfig>, std::path::PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let ca = scratch_path("itg-ca").with_extension("pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    (Arc::new(cfg), ca)
}

#[test]
fn keys_and_events_over_https() {
    let (cfg, ca) = tls_setup();
    let mock = Mock::start_tls("127.0.0.1:0", ok_mode("tls"), Some(cfg));
    let url = format!("https://{}/ftl", mock.addr);
    let server = TestServer::start_with(|a| {
        a.auth_url = Some(url);
        a.auth_ca = Some(ca.clone());
    });
    stream(
        &client(&server, "77-tls", Some(Duration::from_millis(800))),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(
        refused_with(stream(
            &client(&server, "77-bad", None),
            &AtomicBool::new(false)
        ))
        .0,
        405
    );
    assert!(server.wait_for(Duration::from_secs(5), |_| mock
        .events()
        .iter()
        .any(|e| e["event"] == "stream_stop")));
    std::fs::remove_file(ca).unwrap();
}

#[test]
fn an_untrusted_certificate_never_lets_a_stream_in() {
    let (cfg, ca) = tls_setup();
    let mock = Mock::start_tls("127.0.0.1:0", ok_mode("tls"), Some(cfg));
    let url = format!("https://{}/ftl", mock.addr);
    // No --auth-ca: the self-signed certificate is not trusted.
    let server = TestServer::start_with(|a| a.auth_url = Some(url));
    let (code, reason) = refused_with(stream(
        &client(&server, "77-tls", None),
        &AtomicBool::new(false),
    ));
    assert_eq!(code, 500, "{reason}");
    std::fs::remove_file(ca).unwrap();
}

#[test]
fn keys_and_events_over_wss() {
    let (cfg, ca) = tls_setup();
    let mock = WsMock::start_tls("127.0.0.1:0", ok_mode("wss"), Some(cfg));
    let url = format!("wss://{}/ftl", mock.addr);
    let server = TestServer::start_with(|a| {
        a.auth_url = Some(url);
        a.auth_ca = Some(ca.clone());
    });
    assert!(server.wait_for(Duration::from_secs(5), |_| mock
        .connections
        .load(std::sync::atomic::Ordering::SeqCst)
        == 1));
    std::thread::sleep(Duration::from_millis(300));
    stream(
        &client(&server, "77-wss", Some(Duration::from_millis(800))),
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(server.wait_for(Duration::from_secs(5), |_| mock
        .events()
        .iter()
        .any(|e| e["event"] == "stream_stop")));
    std::fs::remove_file(ca).unwrap();
}

#[test]
fn whip_keys_come_from_the_service_too_and_events_name_the_protocol() {
    let mock = Mock::start("127.0.0.1:0", ok_mode("s3cret"));
    let url = mock.url();
    let server = TestServer::start_with(|a| a.auth_url = Some(url));
    // The service's key goes live over WHIP (the key file's does not matter).
    let publisher = server.publish_as(77, "77-s3cret", VIDEO_A, Some(Duration::from_secs(2)));
    let stats = publisher.join().unwrap();
    assert!(stats.video_packets > 30, "{stats:?}");
    // A wrong key is refused with 401, a channel the service does not know with 404.
    let wrong = server.publish_as(77, "77-wrong", VIDEO_A, None).join();
    assert!(
        matches!(wrong, Err(WhipError::Refused(401, _))),
        "{wrong:?}"
    );
    mock.mode.lock().unwrap().key = None;
    let unknown = server.publish_as(5, "5-s3cret", VIDEO_A, None).join();
    assert!(
        matches!(unknown, Err(WhipError::Refused(404, _))),
        "{unknown:?}"
    );
    // A service that does not answer: 500, never let in.
    {
        let mut m = mock.mode.lock().unwrap();
        m.key = Some("s3cret".into());
        m.delay = Duration::from_secs(6);
    }
    let slow = server.publish_as(77, "77-s3cret", VIDEO_A, None).join();
    assert!(matches!(slow, Err(WhipError::Refused(500, _))), "{slow:?}");
    assert!(server.wait_for(Duration::from_secs(3), |_| mock
        .events()
        .iter()
        .any(|e| e["event"] == "stream_stop")));
    let events = mock.events();
    let start = events
        .iter()
        .find(|e| e["event"] == "stream_start")
        .unwrap();
    assert_eq!(start["protocol"], "whip");
    assert_eq!(start["video"]["codec"], "H264");
    let stop = events.iter().find(|e| e["event"] == "stream_stop").unwrap();
    assert_eq!(stop["reason"], "disconnect", "the publisher's DELETE");
}

/// `DELETE` of a recording when a key service decides keys: the service's key deletes it, the
/// key file's (which the service overrides) does not, and wrong keys count toward the
/// address's limit of failed authentications.
#[test]
fn deleting_a_recording_asks_the_key_service() {
    let mock = Mock::start("127.0.0.1:0", ok_mode("s3cret"));
    let url = mock.url();
    let server = TestServer::start_with(|a| {
        a.auth_url = Some(url);
        a.auth_fail_limit = 3;
    });
    let dir = server.data_dir.join("recordings").join("77");
    std::fs::create_dir_all(&dir).unwrap();
    let name = "20261206T101500Z.mp4";
    std::fs::write(dir.join(name), b"not really mp4").unwrap();
    let path = format!("/recordings/77/{name}");
    let delete = |key: &str| {
        let auth = format!("Bearer {key}");
        http(
            server.addrs.http,
            "DELETE",
            &path,
            &[("Authorization", &auth)],
            b"",
        )
        .status
    };
    // The key file's key for 77 is not the service's.
    assert_eq!(delete(&server.key(77)), 401);
    assert_eq!(delete("77-wrong"), 401);
    assert!(dir.join(name).exists());
    assert!(mock
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|(m, p, _)| m == "GET" && p == "/ftl/hmac/77"));
    assert_eq!(delete("77-s3cret"), 200);
    assert!(
        !dir.join(name).exists(),
        "the service's key did not delete it"
    );
    assert_eq!(delete("77-s3cret"), 404);
    // A third wrong key reaches the limit; then even the right one waits.
    assert_eq!(delete("77-wrong-again"), 401);
    assert_eq!(delete("77-s3cret"), 429);
}
