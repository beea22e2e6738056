//! Sessions that cannot bleed into each other: an FTL session's media comes from one source,
//! a media port is not handed to the next session while the last one's encoder may still send
//! there, and a replaced WHIP publisher's packets cannot reach its successor.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use ftl_proto::media::RtpHeader;
use ftl_proto::Ssrc;
use server_mio::keys::KeyStore;
use server_mio::tools::client::stream;

/// A free UDP port on loopback, for a one-port media range.
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Rotates channel 77's key in the key file the server watches; returns the new OBS key.
fn rotate(server: &TestServer) -> String {
    let mut store = KeyStore::open(&server.data_dir).unwrap();
    store.rotate(77).unwrap().obs_key()
}

fn live_port(server: &TestServer) -> Option<u64> {
    stream_info(server, 77).and_then(|i| i["media_port"].as_u64())
}

/// The old session's client keeps sending (it never hears its `410`, from its own port) while
/// the channel's owner connects again with the new key. With `one_port` the media range has a
/// single port, so the new session is handed the very port the stray sender aims at.
fn a_stray_sender_does_not_reach_the_next_session(one_port: bool) {
    let port = free_port();
    let server = TestServer::start_with(|a| {
        a.media_ports = if one_port {
            (port, port)
        } else {
            (port, port.saturating_add(3))
        }
    });
    // Session A, which will not hear its end. VIDEO_B (160x90) tells its packets apart.
    let mut old = ftl_options(
        server.addrs.ftl,
        &server.key(77),
        VIDEO_B,
        Some(Duration::from_secs(30)),
    );
    old.deaf_to_end = true;
    let stop_old = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop_old.clone();
    let stray = std::thread::spawn(move || stream(&old, &s));
    assert!(server.wait_for(Duration::from_secs(5), |s| live_port(s).is_some()));
    let old_port = live_port(&server).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // Revoked: A's session ends, A goes on sending to its port.
    let key = rotate(&server);
    assert!(server.wait_for(Duration::from_secs(3), |s| stream_info(s, 77).is_none()));
    std::thread::sleep(Duration::from_millis(300));

    // Session B with the new key, and a viewer of it.
    let streamer = server.stream_as(&key, VIDEO_A, Some(Duration::from_secs(6)));
    assert!(server.wait_for(Duration::from_secs(5), |s| live_port(s).is_some()));
    let new_port = live_port(&server).unwrap();
    if one_port {
        assert_eq!(new_port, old_port, "one port: it is handed out again");
    } else {
        assert_ne!(
            new_port, old_port,
            "a freed port rests while others are free"
        );
    }
    let mut viewer = Viewer::whep(server.addrs.http, 77).unwrap();
    viewer.drive(Duration::from_secs(4), |v| v.video.len() > 200);
    let info = stream_info(&server, 77).unwrap();
    let stats = streamer.stop().unwrap();
    stop_old.store(true, std::sync::atomic::Ordering::SeqCst);
    let stray_stats = stray.join().unwrap().unwrap();

    eprintln!(
        "one port {one_port}: old port {old_port}, new port {new_port}; stray sent {} video \
         packets after its end ({}), dropped as foreign sources: {}; viewer got {} video, {} lost",
        stray_stats.video_packets,
        stray_stats.ended_deaf,
        info["dropped_foreign_source"],
        viewer.video.len(),
        viewer.video_lost()
    );
    assert!(stray_stats.ended_deaf, "the stray sender heard no end");
    assert!(stats.video_packets > 100);
    assert_eq!(
        viewer.video_lost(),
        0,
        "the new stream's viewer lost packets"
    );
    // What the viewer decoded is session B's picture from a keyframe on, not A's.
    assert_looping_run(&viewer, VIDEO_A, "session B");
    if one_port {
        assert!(
            info["dropped_foreign_source"].as_u64().unwrap() > 50,
            "the stray datagrams were not counted: {info}"
        );
    }
}

#[test]
fn a_stray_sender_of_a_revoked_session_reaches_no_stream_on_a_rested_port() {
    a_stray_sender_does_not_reach_the_next_session(false);
}

#[test]
fn a_stray_sender_on_a_port_handed_out_again_is_refused() {
    a_stray_sender_does_not_reach_the_next_session(true);
}

/// A second source on the live stream's port, from the same address (another program, or a
/// second client behind one NAT address), with valid datagrams of the stream's own SSRCs and
/// numbers running ahead: dropped and counted; the viewer loses nothing.
#[test]
fn a_second_source_from_the_same_address_is_dropped() {
    let server = TestServer::start_with(|a| {
        let p = free_port();
        a.media_ports = (p, p.saturating_add(3));
    });
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(6)));
    assert!(server.wait_for(Duration::from_secs(5), |s| live_port(s).is_some()));
    let port = live_port(&server).unwrap() as u16;
    let mut viewer = Viewer::whep(server.addrs.http, 77).unwrap();
    let intruder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let end = Instant::now() + Duration::from_secs(3);
    let mut sent = 0u64;
    let mut seq = 30_000u16;
    while Instant::now() < end {
        for (pt, ssrc) in [(96u8, 78u32), (97, 77)] {
            let d = RtpHeader {
                marker: true,
                payload_type: pt,
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                ssrc: Ssrc(ssrc),
            }
            .build(&[0x65, 0x88, 0x84, 0x00, 0x10]);
            intruder.send_to(&d, ("127.0.0.1", port)).unwrap();
            sent += 1;
        }
        seq = seq.wrapping_add(1);
        viewer.drive(Duration::from_millis(10), |_| false);
    }
    viewer.drive(Duration::from_secs(2), |v| v.video.len() > 200);
    let info = stream_info(&server, 77).unwrap();
    streamer.stop().unwrap();
    eprintln!(
        "intruder sent {sent}; dropped as foreign sources: {}; viewer {} video, {} lost",
        info["dropped_foreign_source"],
        viewer.video.len(),
        viewer.video_lost()
    );
    assert_eq!(info["dropped_foreign_source"].as_u64().unwrap(), sent);
    assert_eq!(viewer.video_lost(), 0);
    assert_looping_run(&viewer, VIDEO_A, "the stream");
}

/// A WHIP publisher replaced by a newer one keeps publishing (its session was ended on the
/// server; it does not know): none of its packets reaches the new stream's viewer.
#[test]
fn a_replaced_whip_publisher_cannot_reach_its_successor() {
    let server = TestServer::start();
    let old = server.publish(77, VIDEO_B, Some(Duration::from_secs(12)));
    assert!(server.wait_for(Duration::from_secs(5), |s| {
        stream_info(s, 77).is_some_and(|i| i["protocol"] == "whip")
    }));
    std::thread::sleep(Duration::from_millis(500));
    let new = server.publish(77, VIDEO_A, Some(Duration::from_secs(8)));
    // The new one owns the stream; the old one is still running on its side.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!old.is_finished(), "the old publisher stopped by itself");
    let mut viewer = Viewer::whep(server.addrs.http, 77).unwrap();
    viewer.drive(Duration::from_secs(4), |v| v.video.len() > 200);
    let _ = new.stop();
    let _ = old.stop();
    eprintln!(
        "viewer of the successor: {} video, {} lost",
        viewer.video.len(),
        viewer.video_lost()
    );
    assert_eq!(viewer.video_lost(), 0);
    assert_looping_run(&viewer, VIDEO_A, "the successor");
}
