//! ICE over TCP end to end with str0m peers on real loopback sockets: a WHIP publisher and a
//! viewer that reach the server over TCP only, and a TCP viewer whose connection backs up
//! (it stops reading): its video skips to the next keyframe and it is live again when it
//! reads again; one that never reads again is closed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Splits NAL units into runs that each start at an SPS (what comes before the first is
/// dropped).
fn gops(nals: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<Vec<u8>>> = Vec::new();
    for n in nals {
        if n[0] & 0x1f == 7 {
            out.push(Vec::new());
        }
        if let Some(g) = out.last_mut() {
            g.push(n.clone());
        }
    }
    out
}

/// Drives both viewers for `d`.
fn drive_both(a: &mut Viewer, b: &mut Viewer, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        let got = a.step().unwrap_or(false) | b.step().unwrap_or(false);
        if !got {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A live stream with a UDP viewer and a TCP viewer (a small receive buffer) that both
/// received for 2 s. A small backlog bound, so that the fixture's 200 kbit/s backs the TCP
/// viewer up within a few seconds of not reading.
fn udp_and_tcp_viewers() -> (TestServer, Streamer, Viewer, Viewer) {
    let server = TestServer::start_with(|a| a.tcp_viewer_backlog_kb = 16);
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(40)));
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    let mut fast = TestViewer::whep(&server, 77).unwrap();
    let mut slow = Viewer::whep_over_tcp(server.addrs.http, 77, Some(4096)).unwrap();
    drive_both(&mut fast, &mut slow, Duration::from_secs(2));
    (server, streamer, fast, slow)
}

#[test]
fn a_whip_publisher_and_a_viewer_over_tcp_only() {
    let server = TestServer::start();
    let mut opts = server.whip_options(77, &server.key(77), VIDEO_A, None);
    opts.tcp = true;
    let publisher = publish_with(opts);
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    let mut viewer = Viewer::whep_over_tcp(server.addrs.http, 77, None).unwrap();
    viewer.drive(Duration::from_secs(12), |_| publisher.is_finished());
    viewer.drive(Duration::from_millis(500), |_| false);
    let stats = publisher.join().unwrap();
    assert!(stats.video_packets > 100, "{stats:?}");
    assert_run_to_the_end(&viewer, VIDEO_A, "viewer");
    assert!(
        viewer.audio.len() > 50,
        "only {} Opus packets",
        viewer.audio.len()
    );
    // Both sessions went over TCP: every packet of the publisher's and the viewer's.
    assert!(server.metric("itg_ice_tcp_packets_total") > stats.video_packets as f64);
    assert_eq!(server.metric("itg_webrtc_datagrams_total"), 0.0);
}

#[test]
fn a_tcp_viewer_that_stops_reading_skips_to_the_next_keyframe_and_is_live_again() {
    let (server, _streamer, mut fast, mut slow) = udp_and_tcp_viewers();
    assert!(slow.connected.is_some() && slow.first_keyframe.is_some());
    let before = slow.video_count;
    let audio_before = slow.audio_count;

    // The TCP viewer reads nothing for 5 s (under the 10 s stall limit).
    fast.drive(Duration::from_secs(5), |_| false);
    let info = stream_info(&server, 77).unwrap();
    assert!(
        info["viewer_skips"].as_u64().unwrap() >= 1,
        "no skip while the TCP viewer was behind: {info}"
    );
    // It reads again, and catches up.
    drive_both(&mut fast, &mut slow, Duration::from_secs(4));
    let info = stream_info(&server, 77).unwrap();
    let skipped = info["viewer_skipped_packets"].as_u64().unwrap();
    eprintln!(
        "TCP viewer: {} video packets before the pause, {} after; {} skips, {skipped} packets skipped; UDP viewer {}",
        before,
        slow.video_count - before,
        info["viewer_skips"],
        fast.video_count
    );
    assert!(skipped > 0);
    // What it got plus what it skipped is what the UDP viewer beside it got (both joined at
    // the same cached keyframe, give or take a GOP of ~66 packets if one came in between).
    let accounted = (slow.video_count + skipped) as i64;
    assert!(
        (accounted - fast.video_count as i64).abs() <= 70,
        "{accounted} packets received or skipped, the UDP viewer got {}",
        fast.video_count
    );
    assert!(
        slow.video_count > before + 60,
        "the TCP viewer did not resume"
    );
    assert!(slow.audio_count > audio_before + 100, "audio did not go on");
    // No gap in its numbering: the skipped stretch was cut out, nothing was lost in between.
    assert_eq!(slow.video_lost(), 0);
    // Every run it got starts at an SPS and is a run of the fixture: the picture was whole
    // up to the skip and whole again from the keyframe it resumed at.
    let f = fixture_nals(VIDEO_A);
    let fixture = [f.clone(), f].concat();
    let runs = gops(&slow.nal_units());
    assert!(runs.len() >= 4, "{} runs", runs.len());
    for (i, g) in runs.iter().enumerate() {
        assert!(
            fixture.windows(g.len()).any(|w| w == &g[..]),
            "run {i} ({} NAL units) is not a run of the fixture",
            g.len()
        );
    }
    // Live again: its newest packet is among the UDP viewer's newest.
    let newest = &slow.video.last().unwrap().payload;
    let tail = &fast.video[fast.video.len().saturating_sub(30)..];
    assert!(
        tail.iter().any(|p| &p.payload == newest),
        "the TCP viewer is still behind after catching up"
    );
    assert_eq!(server.metric("itg_ice_tcp_stalled_total"), 0.0);
    assert_eq!(server.metric("itg_viewers_connected_tcp"), 1.0);
}

#[test]
fn a_tcp_viewer_that_never_reads_again_is_closed_and_the_others_lose_nothing() {
    let (server, _streamer, mut fast, slow) = udp_and_tcp_viewers();
    assert!(slow.connected.is_some());
    assert_eq!(server.metric("itg_viewers_connected_tcp"), 1.0);
    let t0 = Instant::now();
    let gone = fast.drive(Duration::from_secs(25), |_| {
        server.metric("itg_viewers_connected_tcp") == 0.0
    });
    assert!(gone, "the stuck TCP viewer was never dropped");
    eprintln!(
        "stuck TCP viewer dropped after {} ms (stalled connections closed: {})",
        t0.elapsed().as_millis(),
        server.metric("itg_ice_tcp_stalled_total")
    );
    fast.drive(Duration::from_secs(1), |_| false);
    assert_eq!(fast.video_lost(), 0);
    assert_eq!(server.metric("itg_viewers_connected"), 1.0);
    let f = fixture_nals(VIDEO_A);
    let twice = [f.clone(), f].concat();
    assert_run_from_keyframe(&fast.nal_units()[..60], &twice);
}

#[test]
fn the_websocket_offer_carries_tcp_and_an_answer_without_h264_is_refused_by_name() {
    let server = TestServer::start();
    let _streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(20)));
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    // A browser with H.264: the offer names the passive TCP candidate beside UDP, and it plays.
    let mut v = TestViewer::websocket(&server, "channel=77");
    let offer = v.remote_sdp.clone().unwrap();
    let tcp = server_mio::client::sdp::tcp_candidate(&offer).expect("no TCP candidate");
    assert_eq!(tcp.port(), server.addrs.webrtc_tcp.unwrap().port());
    assert!(v.drive(Duration::from_secs(5), |v| v.video_count > 30));
    // A browser without H.264 (VP8 and Opus only, like Firefox without its plugin): told why,
    // by name, and the session is closed rather than left with a black picture.
    let no_h264 = str0m::Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_vp8(true)
        .enable_opus(true, false);
    let mut f = Viewer::websocket_with(server.addrs.http, "channel=77", no_h264).unwrap();
    let told = f.drive(Duration::from_secs(5), |f| {
        f.ws_events.iter().any(|e| e["event"] == "error")
    });
    assert!(told, "no error event: {:?}", f.ws_events);
    let e = f.ws_events.iter().find(|e| e["event"] == "error").unwrap();
    let msg = e["data"]["message"].as_str().unwrap();
    assert!(msg.contains("H.264") && msg.contains("OpenH264"), "{msg}");
    assert_eq!(e["data"]["codec"], "H264");
    assert!(f.video_count == 0 && f.connected.is_none());
    assert_eq!(server.metric("itg_viewers_refused_total"), 1.0);
    assert_eq!(server.metric("itg_viewers"), 1.0);
    // The first viewer plays on.
    let n = v.video_count;
    assert!(v.drive(Duration::from_secs(3), |v| v.video_count > n + 30));
}
