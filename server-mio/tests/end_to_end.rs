//! The real server through real loopback sockets: the FTL client streams fixtures, in-process
//! str0m viewers watch over WHEP and over the WebSocket protocol.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn live(server: &TestServer, channel: u32) -> Option<Value> {
    stream_info(server, channel)
}

/// Drives several viewers side by side until `until` holds (bounded by `limit`).
fn drive_all(
    viewers: &mut [&mut Viewer],
    limit: Duration,
    mut until: impl FnMut(&[&mut Viewer]) -> bool,
) {
    let end = Instant::now() + limit;
    while Instant::now() < end && !until(viewers) {
        for v in viewers.iter_mut() {
            v.drive(Duration::from_millis(5), |_| false);
        }
    }
}

#[test]
fn whep_and_websocket_viewers_get_the_fixture_bit_exact() {
    let server = TestServer::start();
    let streamer = server.stream(77, VIDEO_A, None);
    assert!(server.wait_for(Duration::from_secs(5), |s| live(s, 77).is_some()));
    let mut whep = TestViewer::whep(&server, 77).unwrap();
    let mut ws = TestViewer::websocket(&server, "channel=77");
    drive_all(&mut [&mut whep, &mut ws], Duration::from_secs(10), |_| {
        streamer.is_finished()
    });
    drive_all(
        &mut [&mut whep, &mut ws],
        Duration::from_millis(500),
        |_| false,
    );
    streamer.join().unwrap();
    let opus = fixture_opus();
    for (name, v) in [("WHEP", &whep), ("WebSocket", &ws)] {
        assert!(v.connected.is_some(), "{name} viewer never connected");
        assert_run_to_the_end(v, VIDEO_A, name);
        let audio: Vec<Vec<u8>> = {
            let mut a: Vec<_> = v.audio.iter().collect();
            a.sort_by_key(|p| *p.seq_no);
            a.iter().map(|p| p.payload.to_vec()).collect()
        };
        assert!(
            audio.len() > 50,
            "{name}: only {} Opus packets",
            audio.len()
        );
        let k = opus.iter().position(|p| *p == audio[0]).unwrap();
        assert_eq!(
            audio[..],
            opus[k..k + audio.len()],
            "{name}: Opus packets differ"
        );
        let first_video = v.video.iter().map(|p| p.timestamp).min().unwrap();
        eprintln!(
            "{name}: first video packet {} ms after the first request; {} NAL units, {} Opus packets",
            first_video.duration_since(v.created).as_millis(),
            v.nal_units().len(),
            audio.len()
        );
    }
    // The WebSocket viewer heard the viewer count.
    assert!(ws
        .ws_events
        .iter()
        .any(|e| e["event"] == "info" && e["data"]["no_connections"].as_u64() >= Some(1)));
}

#[test]
fn two_channels_are_isolated() {
    let server = TestServer::start();
    let a = server.stream(77, VIDEO_A, None);
    let b = server.stream(88, VIDEO_B, None);
    assert!(
        server.wait_for(Duration::from_secs(5), |s| live(s, 77).is_some()
            && live(s, 88).is_some())
    );
    let mut va = TestViewer::whep(&server, 77).unwrap();
    let mut vb = TestViewer::whep(&server, 88).unwrap();
    drive_all(&mut [&mut va, &mut vb], Duration::from_secs(10), |_| {
        a.is_finished() && b.is_finished()
    });
    drive_all(&mut [&mut va, &mut vb], Duration::from_millis(300), |_| {
        false
    });
    assert_run_from_keyframe(&va.nal_units(), &fixture_nals(VIDEO_A));
    assert_run_from_keyframe(&vb.nal_units(), &fixture_nals(VIDEO_B));
    a.join().unwrap();
    b.join().unwrap();
}

#[test]
fn a_wrong_key_is_refused_with_405() {
    let server = TestServer::start();
    let opts = server_mio::tools::client::ClientOptions {
        server: server.addrs.ftl.to_string(),
        stream_key: "77-not-the-key".into(),
        video: Some(VIDEO_A.to_vec()),
        audio: None,
        fps: 30,
        repeat: false,
        duration: None,
        speed: 1.0,
        drop_every: None,
        speed_test: false,
        sent_log: None,
        peak_kbps: None,
        pace_burst_ms: server_mio::tools::client::PACE_BURST_MS,
        deaf_to_end: false,
        frame_log: None,
    };
    let err = server_mio::tools::client::stream(&opts, &std::sync::atomic::AtomicBool::new(false))
        .unwrap_err();
    match err {
        server_mio::tools::client::ClientError::Protocol(ftl_proto::Error::Refused {
            status,
            ..
        }) => {
            assert_eq!(status.code(), 405)
        }
        other => panic!("{other:?}"),
    }
    let unknown = server_mio::tools::client::ClientOptions {
        stream_key: "5-abc".into(),
        ..opts
    };
    let err =
        server_mio::tools::client::stream(&unknown, &std::sync::atomic::AtomicBool::new(false))
            .unwrap_err();
    assert!(matches!(
        err,
        server_mio::tools::client::ClientError::Protocol(ftl_proto::Error::Refused { .. })
    ));
    assert_eq!(server.metric("itg_auth_failures_total"), 2.0);
    assert!(live(&server, 77).is_none());
}

#[test]
fn datagrams_from_a_foreign_address_change_nothing() {
    let server = TestServer::start();
    let streamer = server.stream(77, VIDEO_A, None);
    assert!(server.wait_for(Duration::from_secs(5), |s| live(s, 77).is_some()));
    let port = live(&server, 77).unwrap()["media_port"].as_u64().unwrap() as u16;
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    // Another loopback address sends junk and well-formed packets on the stream's SSRCs.
    let spoofer = UdpSocket::bind("127.0.0.2:0").unwrap();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut forged = ftl_proto::media::RtpHeader {
        marker: true,
        payload_type: 96,
        sequence_number: 3,
        timestamp: 0,
        ssrc: ftl_proto::Ssrc(78),
    }
    .build(&[0x65, 0xde, 0xad]);
    let mut sent = 0;
    while !streamer.is_finished() {
        let _ = spoofer.send_to(b"\x80\x60garbage", target);
        let _ = spoofer.send_to(&forged, target);
        forged[3] = forged[3].wrapping_add(1);
        sent += 2;
        viewer.drive(Duration::from_millis(10), |_| false);
    }
    viewer.drive(Duration::from_millis(500), |_| false);
    streamer.join().unwrap();
    assert_run_to_the_end(&viewer, VIDEO_A, "viewer");
    assert!(sent > 50);
}

#[test]
fn disconnect_frees_the_port_and_a_restart_resumes_viewers() {
    let server = TestServer::start();
    let first = server.stream(77, VIDEO_A, Some(Duration::from_secs(2)));
    assert!(server.wait_for(Duration::from_secs(5), |s| live(s, 77).is_some()));
    let port = live(&server, 77).unwrap()["media_port"].as_u64().unwrap() as u16;
    let mut whep = TestViewer::whep(&server, 77).unwrap();
    let mut ws = TestViewer::websocket(&server, &format!("port={port}"));
    drive_all(&mut [&mut whep, &mut ws], Duration::from_secs(6), |_| {
        first.is_finished()
    });
    first.join().unwrap();
    drive_all(&mut [&mut whep, &mut ws], Duration::from_secs(2), |v| {
        v[1].ws_events
            .iter()
            .any(|e| e["event"] == "stream" && e["data"]["live"] == false)
    });
    assert!(ws
        .ws_events
        .iter()
        .any(|e| e["event"] == "stream" && e["data"]["live"] == false));
    assert!(live(&server, 77).is_none());
    assert_eq!(server.metric("itg_streams_live"), 0.0);
    // The port is free again.
    UdpSocket::bind(("127.0.0.1", port)).expect("the media port was freed");
    let before = whep.video.len();
    assert!(before > 0);
    // The same channel streams again; the viewers stay and get the new stream.
    let second = server.stream(77, VIDEO_A, Some(Duration::from_secs(2)));
    drive_all(&mut [&mut whep, &mut ws], Duration::from_secs(6), |_| {
        second.is_finished()
    });
    second.join().unwrap();
    drive_all(
        &mut [&mut whep, &mut ws],
        Duration::from_millis(300),
        |_| false,
    );
    assert!(
        whep.video.len() > before + 30,
        "{} -> {}",
        before,
        whep.video.len()
    );
    assert!(
        ws.ws_events
            .iter()
            .filter(|e| e["event"] == "stream" && e["data"]["live"] == true)
            .count()
            >= 1
    );
    // Sequence numbers ran on without a jump backwards across the restart.
    let mut seqs: Vec<u64> = whep.video.iter().map(|p| *p.seq_no).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), whep.video.len(), "no number was used twice");
}

#[test]
fn viewer_churn_leaves_no_state_behind() {
    let server = TestServer::start();
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(30)));
    assert!(server.wait_for(Duration::from_secs(5), |s| live(s, 77).is_some()));
    // Hundreds of offers that never connect, each ended with DELETE.
    for _ in 0..200 {
        let v = TestViewer::whep(&server, 77).unwrap();
        assert_eq!(v.whep_delete(server.addrs.http).unwrap(), 200);
    }
    // Connected viewers that leave.
    for _ in 0..10 {
        let mut v = TestViewer::whep(&server, 77).unwrap();
        assert!(v.drive(Duration::from_secs(5), |v| !v.video.is_empty()));
        assert_eq!(v.whep_delete(server.addrs.http).unwrap(), 200);
        assert_eq!(v.whep_delete(server.addrs.http).unwrap(), 404);
    }
    assert!(server.wait_for(Duration::from_secs(2), |s| s.metric("itg_viewers") == 0.0));
    assert_eq!(server.metric("itg_viewers_connected"), 0.0);
    assert_eq!(live(&server, 77).unwrap()["viewers"], 0);
    assert_eq!(server.metric("itg_viewers_created_total"), 210.0);
    streamer.stop().unwrap();
}

#[test]
fn viewers_that_never_connect_expire() {
    let server = TestServer::start_with(|a| a.viewer_connect_timeout = 3);
    TestViewer::whep(&server, 77).unwrap();
    assert!(
        server.metric("itg_viewers") >= 1.0,
        "the viewer exists until its deadline"
    );
    for _ in 0..19 {
        TestViewer::whep(&server, 77).unwrap();
    }
    assert_eq!(server.metric("itg_viewers_created_total"), 20.0);
    assert!(server.wait_for(Duration::from_secs(8), |s| s.metric("itg_viewers") == 0.0));
    assert_eq!(server.metric("itg_viewers_dropped_total"), 20.0);
}

#[test]
fn whep_refusals_are_clear() {
    let server = TestServer::start();
    let post = |path: &str, ct: &str, body: &[u8]| {
        http(
            server.addrs.http,
            "POST",
            path,
            &[("Content-Type", ct)],
            body,
        )
        .status
    };
    assert_eq!(post("/whep/5", "application/sdp", b"v=0"), 404);
    assert_eq!(post("/whep/x", "application/sdp", b"v=0"), 404);
    assert_eq!(post("/whep/77", "text/plain", b"v=0"), 415);
    assert_eq!(post("/whep/77", "application/sdp", b"not sdp at all"), 400);
    let preflight = http(server.addrs.http, "OPTIONS", "/whep/77", &[], b"");
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("Access-Control-Allow-Origin"), Some("*"));
    assert_eq!(
        http(server.addrs.http, "DELETE", "/whep/77/nope", &[], b"").status,
        404
    );
    assert_eq!(server.metric("itg_viewers"), 0.0);
}

#[test]
fn pages_api_and_metrics_are_served() {
    let server = TestServer::start();
    let (status, body) = server.get("/");
    assert_eq!(status, 200);
    assert!(body.contains("<html"));
    assert_eq!(server.get("/watch/77").0, 200);
    assert_eq!(server.get("/../Cargo.toml").0, 404);
    assert_eq!(server.get("/nope.js").0, 404);
    let (status, body) = server.get("/api/streams");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let channels: Vec<u64> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["channel"].as_u64().unwrap())
        .collect();
    assert_eq!(channels, [77, 88]);
    assert!(server
        .get("/metrics")
        .1
        .contains("# TYPE itg_viewers gauge"));
}

#[test]
fn viewer_loss_is_repaired_from_the_send_buffer() {
    let server = TestServer::start();
    let streamer = server.stream(77, VIDEO_A, None);
    assert!(server.wait_for(Duration::from_secs(5), |s| live(s, 77).is_some()));
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    viewer.drop_every = Some(25);
    viewer.drive(Duration::from_secs(10), |_| streamer.is_finished());
    viewer.drive(Duration::from_millis(800), |_| false);
    streamer.join().unwrap();
    assert!(viewer.dropped > 10, "only {} dropped", viewer.dropped);
    // Every dropped video packet came back (over RTX): the NAL units are complete.
    assert_run_to_the_end(&viewer, VIDEO_A, "viewer");
    assert_eq!(viewer.video_lost(), 0);
}

#[test]
fn hostile_input_is_refused_and_the_server_keeps_serving() {
    use std::io::{Read, Write};
    let server = TestServer::start();
    let raw = |bytes: &[u8]| {
        let mut s = std::net::TcpStream::connect(server.addrs.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(raw(b"\x00\x01\x02 garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    let huge_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100_000));
    let r = raw(huge_head.as_bytes());
    assert!(
        r.starts_with("HTTP/1.1 413") || r.starts_with("HTTP/1.1 431"),
        "{r}"
    );
    let huge_body = format!(
        "POST /whep/77 HTTP/1.1\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
        10_000_000
    );
    assert!(raw(huge_body.as_bytes()).starts_with("HTTP/1.1 413"));
    assert!(raw(b"GET /websocket HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400"));
    // Random datagrams and STUN with unknown credentials on the WebRTC port.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..500u32 {
        let junk: Vec<u8> = (0..(i % 200))
            .map(|j| (i.wrapping_mul(31) ^ j) as u8)
            .collect();
        udp.send_to(&junk, server.addrs.webrtc).unwrap();
    }
    let mut stun = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]);
    stun.extend_from_slice(b"nope:bad");
    udp.send_to(&stun, server.addrs.webrtc).unwrap();
    // A WebSocket that sends garbage is answered with errors, then closed.
    let mut ws = TestViewer::websocket(&server, "channel=77");
    let sock = ws.ws.as_mut().unwrap();
    for _ in 0..20 {
        let _ = sock.send(tungstenite::Message::text("{not json"));
    }
    let closed = ws.drive(Duration::from_secs(3), |v| {
        v.ws_events.iter().filter(|e| e["event"] == "error").count() >= 10
    });
    assert!(closed, "garbage was not answered");
    let routed = server.wait_for(Duration::from_secs(2), |s| {
        s.metric("itg_webrtc_unrouted_total") >= 400.0
    });
    assert!(
        routed,
        "unrouted {} of {} datagrams",
        server.metric("itg_webrtc_unrouted_total"),
        server.metric("itg_webrtc_datagrams_total")
    );
    // Through all of it, a stream still reaches a viewer.
    let streamer = server.stream(77, VIDEO_A, None);
    assert!(server.wait_for(Duration::from_secs(5), |s| live(s, 77).is_some()));
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    viewer.drive(Duration::from_secs(10), |_| streamer.is_finished());
    streamer.join().unwrap();
    viewer.drive(Duration::from_millis(300), |_| false);
    assert_run_from_keyframe(&viewer.nal_units(), &fixture_nals(VIDEO_A));
}

#[test]
fn the_network_self_test_reports_each_check() {
    let check = |v: &serde_json::Value, name: &str| -> (bool, String) {
        let c = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {v}"));
        (c["ok"] == true, c["detail"].as_str().unwrap().to_owned())
    };
    // Loopback only: not reachable from elsewhere, and the fix is named.
    let server = TestServer::start();
    let (status, body) = server.get("/api/selftest");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], false);
    let (ok, why) = check(&v, "reachable");
    assert!(!ok && why.contains("--ip"), "{why}");
    let (ok, why) = check(&v, "candidates");
    assert!(ok && why.contains("127.0.0.1"), "{why}");
    assert!(check(&v, "webrtc_udp").0);
    assert!(check(&v, "webrtc_tcp").0);
    assert!(check(&v, "ice_servers").0);
    assert!(v["urls"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u.as_str().unwrap().starts_with("watch: http://127.0.0.1:")));
    drop(server);
    // A public --ip passes; a malformed ICE server is named.
    let server = TestServer::start_with(|a| {
        a.ip = vec!["203.0.113.7".parse().unwrap()];
        a.ice_servers = vec![
            "stun:stun.example.org:3478".into(),
            "stun.example.org".into(),
        ];
    });
    let v: serde_json::Value = serde_json::from_str(&server.get("/api/selftest").1).unwrap();
    assert!(check(&v, "reachable").0);
    let (ok, why) = check(&v, "ice_servers");
    assert!(
        !ok && why.contains("stun.example.org") && !why.contains("stun:stun"),
        "{why}"
    );
    assert!(v["urls"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u.as_str().unwrap().contains("203.0.113.7")));
}
