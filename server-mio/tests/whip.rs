//! WHIP ingest through real loopback sockets: our WHIP client publishes fixtures, in-process
//! str0m viewers watch over WHEP; bad offers are refused with their status.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn drive_until(v: &mut Viewer, limit: Duration, mut f: impl FnMut(&Viewer) -> bool) -> bool {
    v.drive(limit, |v| f(v))
}

/// How many viewers each layer of a live channel has, smallest layer first.
fn viewers_per_layer(s: &TestServer, channel: u32) -> Vec<u64> {
    stream_info(s, channel).unwrap()["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["viewers"].as_u64().unwrap())
        .collect()
}

/// A minimal offer with the given video codec line (no H.264 when `codec` is not it).
fn offer(codec: &str, fmtp: &str) -> String {
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
         a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
         a=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:96 {codec}\r\n{fmtp}"
    )
}

fn h264_offer() -> String {
    offer(
        "H264/90000",
        "a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n",
    )
}

fn post(server: &TestServer, channel: &str, auth: Option<&str>, body: &str) -> HttpResponse {
    let mut h = vec![("Content-Type", "application/sdp")];
    let bearer = auth.map(|a| format!("Bearer {a}"));
    if let Some(b) = &bearer {
        h.push(("Authorization", b.as_str()));
    }
    http(
        server.addrs.http,
        "POST",
        &format!("/whip/{channel}"),
        &h,
        body.as_bytes(),
    )
}

#[test]
fn a_whip_publisher_reaches_a_whep_viewer_bit_exact() {
    let server = TestServer::start();
    let publisher = server.publish(77, VIDEO_A, None);
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    let info = stream_info(&server, 77).unwrap();
    assert_eq!(info["protocol"], "whip");
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    drive_until(&mut viewer, Duration::from_secs(12), |_| {
        publisher.is_finished()
    });
    viewer.drive(Duration::from_millis(500), |_| false);
    let stats = publisher.join().unwrap();
    assert!(stats.video_packets > 100, "{stats:?}");
    assert_run_to_the_end(&viewer, VIDEO_A, "viewer");
    let opus = fixture_opus();
    let mut audio: Vec<_> = viewer.audio.iter().collect();
    audio.sort_by_key(|p| *p.seq_no);
    let audio: Vec<Vec<u8>> = audio.iter().map(|p| p.payload.to_vec()).collect();
    assert!(audio.len() > 50, "only {} Opus packets", audio.len());
    let k = opus.iter().position(|p| *p == audio[0]).unwrap();
    assert_eq!(audio[..], opus[k..k + audio.len()], "Opus packets differ");
    let first = viewer.first_video.unwrap();
    eprintln!(
        "WHIP -> WHEP: join to first video packet {} ms; publisher connected in {:?}",
        first.duration_since(viewer.created).as_millis(),
        stats.connected_after
    );
    // DELETE at the end of the publisher's run ended the stream.
    assert!(server.wait_for(Duration::from_secs(3), |s| stream_info(s, 77).is_none()));
    assert_eq!(server.metric("itg_whip_publishers_total"), 1.0);
}

#[test]
fn a_mid_gop_joiner_gets_the_cache_and_an_empty_cache_asks_the_publisher() {
    // A tiny GOP cache: the fixture's GOPs outgrow it, so the cache is empty most of the time.
    let server = TestServer::start_with(|a| a.gop_cache_mb = 0);
    let publisher = server.publish(77, VIDEO_A, Some(Duration::from_secs(8)));
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    std::thread::sleep(Duration::from_millis(1300));
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    let t0 = Instant::now();
    assert!(
        drive_until(&mut viewer, Duration::from_secs(5), |v| v
            .first_keyframe
            .is_some()),
        "no keyframe reached the viewer"
    );
    let waited = viewer.first_keyframe.unwrap().duration_since(t0);
    viewer.drive(Duration::from_millis(300), |_| false);
    let stats = publisher.stop().unwrap();
    assert!(
        stats.keyframe_requests >= 1,
        "the publisher got no PLI: {stats:?}"
    );
    assert!(stats.keyframes_forced >= 1, "{stats:?}");
    assert!(server.metric("itg_whip_keyframe_requests_total") >= 1.0);
    eprintln!(
        "empty cache: keyframe after {} ms (PLI to the publisher)",
        waited.as_millis()
    );
    let nals = viewer.nal_units();
    assert_eq!(nals[0][0] & 0x1f, 7, "starts at an SPS");
}

#[test]
fn a_joiner_with_a_cache_gets_a_picture_at_once_without_asking() {
    let server = TestServer::start();
    let publisher = server.publish(77, VIDEO_A, Some(Duration::from_secs(6)));
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    std::thread::sleep(Duration::from_millis(1500));
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    assert!(drive_until(&mut viewer, Duration::from_secs(3), |v| v
        .first_keyframe
        .is_some()));
    let join_to_kf = viewer
        .first_keyframe
        .unwrap()
        .duration_since(viewer.created);
    viewer.drive(Duration::from_millis(300), |_| false);
    let stats = publisher.stop().unwrap();
    eprintln!(
        "WHIP stream, cached GOP: join to first keyframe packet {} ms",
        join_to_kf.as_millis()
    );
    assert_eq!(stats.keyframe_requests, 0, "the cache served the joiner");
    let fixture = fixture_nals(VIDEO_A);
    assert_run_from_keyframe(&viewer.nal_units(), &fixture);
}

#[test]
fn publishers_replace_each_other_across_protocols_and_viewers_carry_on() {
    let server = TestServer::start();
    let ftl = server.stream(77, VIDEO_A, Some(Duration::from_secs(20)));
    assert!(
        server.wait_for(Duration::from_secs(5), |s| stream_info(s, 77)
            .is_some_and(|i| i["protocol"] == "ftl"))
    );
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    assert!(drive_until(&mut viewer, Duration::from_secs(3), |v| v
        .video
        .len()
        > 30));
    // WHIP takes over from FTL.
    let whip = server.publish(77, VIDEO_B, Some(Duration::from_secs(20)));
    let switched = |v: &Viewer| {
        let n = v.nal_units();
        fixture_nals(VIDEO_B)
            .iter()
            .filter(|f| f[0] & 0x1f == 5)
            .any(|idr| n.contains(idr))
    };
    assert!(
        drive_until(&mut viewer, Duration::from_secs(8), switched),
        "the viewer never got the WHIP publisher's picture"
    );
    assert_eq!(stream_info(&server, 77).unwrap()["protocol"], "whip");
    assert!(
        ftl.join().is_err(),
        "the FTL session was told it was replaced"
    );
    // And FTL takes it back.
    let before = viewer.video.len();
    let ftl2 = server.stream(77, VIDEO_A, Some(Duration::from_secs(20)));
    assert!(drive_until(&mut viewer, Duration::from_secs(8), |v| {
        stream_info(&server, 77).is_some_and(|i| i["protocol"] == "ftl")
            && v.video.len() > before + 60
    }));
    let w = whip.join();
    assert!(w.is_err(), "the WHIP publisher was dropped: {w:?}");
    // The viewer never reconnected: one session, numbering without a restart.
    let mut seqs: Vec<u64> = viewer.video.iter().map(|p| *p.seq_no).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert!(
        seqs.windows(2).all(|w| w[1] - w[0] < 50),
        "numbering jumped"
    );
    let _ = ftl2.stop();
    assert_eq!(server.metric("itg_viewers_connected"), 1.0);
}

#[test]
fn bad_whip_requests_get_their_status_and_disturb_nothing() {
    let server = TestServer::start();
    let key = server.key(77);
    let good = h264_offer();
    // A healthy stream and viewer alongside.
    let streamer = server.stream(88, VIDEO_A, Some(Duration::from_secs(30)));
    assert!(server.wait_for(Duration::from_secs(5), |s| stream_info(s, 88).is_some()));
    let mut viewer = TestViewer::whep(&server, 88).unwrap();
    assert!(drive_until(&mut viewer, Duration::from_secs(3), |v| v
        .video
        .len()
        > 10));

    let r = post(&server, "77", None, &good);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
    assert_eq!(post(&server, "77", Some("77-wrong"), &good).status, 401);
    assert_eq!(
        post(&server, "77", Some(&server.key(88)), &good).status,
        401
    );
    let r = post(&server, "99", Some("99-whatever"), &good);
    assert_eq!(r.status, 404);
    assert_eq!(post(&server, "abc", Some(&key), &good).status, 404);
    assert_eq!(post(&server, "77", Some(&key), "garbage").status, 400);
    // Video in a codec the relay cannot pass through (here Theora) is refused by name.
    let r = post(&server, "77", Some(&key), &offer("theora/90000", ""));
    assert_eq!(r.status, 406);
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.contains("H.264") && body.contains("AV1") && body.contains("Opus"),
        "{body}"
    );
    let none = good.replace("m=video 9", "m=video 0");
    assert_eq!(post(&server, "77", Some(&key), &none).status, 400);
    let r = http(
        server.addrs.http,
        "POST",
        "/whip/77",
        &[
            ("Content-Type", "text/plain"),
            ("Authorization", &format!("Bearer {key}")),
        ],
        good.as_bytes(),
    );
    assert_eq!(r.status, 415);
    assert_eq!(
        http(
            server.addrs.http,
            "DELETE",
            "/whip/77/nosuchsession",
            &[],
            b""
        )
        .status,
        404
    );
    assert_eq!(
        http(server.addrs.http, "PATCH", "/whip/77/x", &[], b"").status,
        405
    );
    let r = http(server.addrs.http, "OPTIONS", "/whip/77", &[], b"");
    assert_eq!(r.status, 204);
    assert!(r
        .header("Access-Control-Allow-Headers")
        .unwrap()
        .contains("Authorization"));

    // Many offers that never connect: answered, then gone when they expire.
    for _ in 0..200 {
        let r = post(&server, "77", Some(&key), &good);
        assert_eq!(r.status, 201);
        assert!(r.header("Location").unwrap().starts_with("/whip/77/"));
        assert!(r.header("ETag").is_some());
    }
    assert!(stream_info(&server, 77).is_none(), "nothing went live");
    // The healthy viewer lost nothing meanwhile.
    let got = viewer.video.len();
    assert!(drive_until(&mut viewer, Duration::from_secs(2), |v| v
        .video
        .len()
        > got + 30));
    assert_eq!(viewer.video_lost(), 0);
    // viewer_connect_timeout is 5 s in tests.
    assert!(
        server.wait_for(Duration::from_secs(10), |s| s.metric("itg_viewers") <= 1.0),
        "unconnected publishers were not cleaned up: {}",
        server.metric("itg_viewers")
    );
    let _ = streamer.stop();
}

#[test]
fn repeated_wrong_keys_hit_the_per_address_limit() {
    let server = TestServer::start_with(|a| a.auth_fail_limit = 3);
    let good = h264_offer();
    for _ in 0..3 {
        assert_eq!(post(&server, "77", Some("77-wrong"), &good).status, 401);
    }
    let r = post(&server, "77", Some(&server.key(77)), &good);
    assert_eq!(r.status, 429);
    assert!(r.header("Retry-After").is_some());
}

#[test]
fn a_publisher_that_vanishes_ends_its_stream_and_viewers_wait_for_the_next() {
    let server = TestServer::start_with(|a| a.media_timeout = 2);
    let mut opts = server.whip_options(77, &server.key(77), VIDEO_A, Some(Duration::from_secs(2)));
    opts.vanish = true;
    let publisher = publish_with(opts);
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    assert!(drive_until(&mut viewer, Duration::from_secs(3), |v| v
        .video
        .len()
        > 10));
    // The encoder goes silent without a word: no DELETE, no DTLS close.
    publisher.join().unwrap();
    let silent = Instant::now();
    let mut ended = None;
    viewer.drive(Duration::from_secs(8), |_| {
        if stream_info(&server, 77).is_none() {
            ended = Some(silent.elapsed());
        }
        ended.is_some()
    });
    let ended = ended.expect("the vanished publisher's stream did not end");
    eprintln!(
        "vanished WHIP publisher: stream ended after {} ms",
        ended.as_millis()
    );
    assert!(
        ended >= Duration::from_millis(1500),
        "ended too early: {ended:?}"
    );
    assert!(
        server.wait_for(Duration::from_secs(3), |s| s.metric("itg_viewers") <= 1.0),
        "the publisher's peer is still in the table"
    );
    // The viewer stayed; the next publisher's picture reaches it without a reload.
    let got = viewer.video.len();
    let next = server.publish(77, VIDEO_B, Some(Duration::from_secs(3)));
    assert!(
        drive_until(&mut viewer, Duration::from_secs(8), |v| v.video.len()
            > got + 30),
        "the waiting viewer got nothing from the next publisher"
    );
    let _ = next.stop();
}

const VIDEO_B_FRAMES: &[u8] =
    include_bytes!("../../relay-core/tests/data/video-320x180-high-bframes-2s.h264");
const VIDEO_HIGH: &[u8] =
    include_bytes!("../../relay-core/tests/data/video-320x180-high-no-bframes-2s.h264");

/// Watches `/api/streams` while a stream of `video` runs for 3 s over FTL or WHIP; returns
/// the keyframes the relay had counted when it first said `b_frames`, if it ever did.
fn b_frames_seen(over_whip: bool, video: &'static [u8]) -> Option<u64> {
    let server = TestServer::start();
    let run = Some(Duration::from_secs(3));
    let (ftl, whip) = if over_whip {
        (None, Some(server.publish(77, video, run)))
    } else {
        (Some(server.stream(77, video, run)), None)
    };
    let mut seen = None;
    let mut was_live = false;
    let end = Instant::now() + Duration::from_secs(8);
    while Instant::now() < end {
        match stream_info(&server, 77) {
            Some(info) => {
                was_live = true;
                if info["b_frames"] == true {
                    seen = info["keyframes"].as_u64();
                    assert_eq!(server.metric("itg_stream_b_frames{channel=\"77\"}"), 1.0);
                    break;
                }
            }
            None if was_live => break,
            None => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(was_live, "the stream never went live");
    if let Some(p) = whip {
        let _ = p.stop();
    }
    if let Some(s) = ftl {
        let _ = s.stop();
    }
    seen
}

#[test]
fn ffmpeg_b_frames_are_flagged_within_the_first_gop_over_ftl_and_whip() {
    for over_whip in [false, true] {
        let keyframes = b_frames_seen(over_whip, VIDEO_B_FRAMES);
        assert_eq!(
            keyframes,
            Some(1),
            "whip {over_whip}: flagged after {keyframes:?} keyframes"
        );
        assert_eq!(
            b_frames_seen(over_whip, VIDEO_HIGH),
            None,
            "whip {over_whip}: a stream without B-frames was flagged"
        );
    }
}

/// A publisher is held to the connect deadline only until it connects: a stream runs on
/// past `--viewer-connect-timeout` (5 s in tests) without a gap.
#[test]
fn a_whip_stream_outlives_the_connect_deadline() {
    let server = TestServer::start();
    let publisher = server.publish(77, VIDEO_A, Some(Duration::from_secs(9)));
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    // Count video per second of the viewer's wall clock.
    let start = Instant::now();
    let mut per_second = vec![0usize; 8];
    let mut seen = 0;
    viewer.drive(Duration::from_secs(8), |v| {
        let s = start.elapsed().as_secs() as usize;
        if let Some(n) = per_second.get_mut(s) {
            *n += v.video.len() - seen;
        }
        seen = v.video.len();
        false
    });
    let stats = publisher.join();
    assert!(stats.is_ok(), "the publisher was cut off: {stats:?}");
    // The fixture sends ~47 video packets a second; every second after the first has media.
    assert!(
        per_second[1..].iter().all(|n| *n > 20),
        "gaps in the stream: {per_second:?}"
    );
    assert_eq!(viewer.video_lost(), 0);
}

/// Our client's offer lists every codec str0m knows (VP8 first) and it sends H.264, so its
/// answer names several and the stream waits for the first video packet to tell the codec
/// (see `codec_choice`). One whose video starts late goes live in the answer's first codec
/// after a second without waiting for it, and plays once its video comes.
#[test]
fn a_publisher_whose_video_comes_late_goes_live_in_the_answer_s_first_codec() {
    let server = TestServer::start();
    let mut opts = server.whip_options(77, &server.key(77), VIDEO_A, Some(Duration::from_secs(12)));
    opts.video_after = Some(Duration::from_secs(6));
    let publisher = publish_with(opts);
    let began = Instant::now();
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    let live_after = began.elapsed();
    let info = stream_info(&server, 77).unwrap();
    // Live before any video came: no picture size yet, the codec the answer named first.
    assert!(
        info["width"].is_null(),
        "live only once video came ({live_after:?}): {info}"
    );
    assert!(
        live_after < Duration::from_secs(5),
        "live {live_after:?} in: waited for the video"
    );
    assert_eq!(info["codec"], "H264", "{info}");
    assert!(
        info["codecs"].as_array().unwrap().contains(&"opus".into()),
        "{info}"
    );
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    assert!(drive_until(&mut viewer, Duration::from_secs(15), |v| v
        .video
        .len()
        > 100));
    let info = stream_info(&server, 77).unwrap();
    assert_eq!(
        (info["width"].as_u64(), info["height"].as_u64()),
        (Some(320), Some(180))
    );
    assert!(!viewer.audio.is_empty());
    publisher
        .stop
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(publisher.join().is_ok());
}

/// A viewer whose browser offers no H.264 (Firefox without its OpenH264 plugin) is refused by
/// name instead of getting an answer whose video is rejected and whose transport is gone.
#[test]
fn a_whep_offer_without_h264_is_refused_by_name() {
    let server = TestServer::start();
    let whep = |body: &str| {
        http(
            server.addrs.http,
            "POST",
            "/whep/77",
            &[("Content-Type", "application/sdp")],
            body.as_bytes(),
        )
    };
    let vp8 = offer("VP8/90000", "").replace("a=sendonly", "a=recvonly");
    let r = whep(&vp8);
    assert_eq!(r.status, 406);
    let why = String::from_utf8_lossy(&r.body);
    assert!(why.contains("H.264") && why.contains("OpenH264"), "{why}");
    // The same offer with H.264 is answered.
    let h264 = h264_offer().replace("a=sendonly", "a=recvonly");
    assert_eq!(whep(&h264).status, 201);
    assert!(server.metric("itg_viewers_refused_total") >= 1.0);
}

/// The WHEP layer extension on a stream of one layer: the answer names it in a `Link`; the
/// layer that exists can be chosen, `auto` given back; a layer the stream lacks, bad JSON
/// and unknown sessions get their status and change nothing.
#[test]
fn the_whep_layer_extension_answers_each_request_with_its_status() {
    let server = TestServer::start();
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(10)));
    assert!(server.wait_for(Duration::from_secs(5), |s| stream_info(s, 77).is_some()));
    let mut viewer = Viewer::whep(server.addrs.http, 77).unwrap();
    assert!(drive_until(&mut viewer, Duration::from_secs(5), |v| v
        .video
        .len()
        > 30));
    let location = viewer.whep_location.clone().unwrap();
    let layer = |body: &str| post_layer(server.addrs.http, &location, body);
    let ok = layer(r#"{"encodingId":"0"}"#);
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let v: serde_json::Value = serde_json::from_slice(&ok.body).unwrap();
    assert_eq!(v["layer"], 0);
    assert_eq!(v["auto"], false);
    let auto = layer("{}");
    assert_eq!(auto.status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&auto.body).unwrap()["auto"],
        true
    );
    assert_eq!(layer(r#"{"encodingId":"7"}"#).status, 404);
    assert_eq!(layer(r#"{"encodingId":"x"}"#).status, 400);
    assert_eq!(layer(r#"{"encodingId":70000}"#).status, 400);
    assert_eq!(layer("{not json").status, 400);
    let unknown = http(
        server.addrs.http,
        "POST",
        "/whep/77/nosuchsession/layer",
        &[],
        b"{}",
    );
    assert_eq!(unknown.status, 404);
    // The viewer played on through all of it.
    let before = viewer.video_count;
    assert!(drive_until(&mut viewer, Duration::from_secs(3), |v| v
        .video_count
        > before + 30));
    let info = stream_info(&server, 77).unwrap();
    assert_eq!(info["layers"].as_array().map(Vec::len), Some(1));
    assert_eq!(info["layers"][0]["viewers"], 1);
    let height = info["layers"][0]["height"].as_u64().unwrap();
    assert_eq!(
        server.metric(&format!(
            "itg_stream_layer_viewers{{channel=\"77\",layer=\"0\",height=\"{height}\"}}"
        )),
        1.0
    );
    let _ = streamer.stop();
}

/// A simulcast WHIP publisher with three RIDs: the relay keeps three layers ranked by size, a
/// viewer starts on the middle one and gets its file bit-exact from a keyframe, and, moved to
/// the largest through the WHEP layer extension, gets that file bit-exact from a keyframe, its
/// numbering continuous across the switch.
#[test]
fn a_simulcast_publisher_s_layers_reach_viewers_bit_exact_and_switch_at_keyframes() {
    let server = TestServer::start();
    let publisher = publish_with(simulcast_options(&server, 77, 20));
    assert!(server.wait_for(Duration::from_secs(8), |s| {
        stream_info(s, 77).is_some_and(|i| {
            i["layers"]
                .as_array()
                .is_some_and(|l| l.len() == 3 && l.iter().all(|l| l["width"].as_u64().is_some()))
        })
    }));
    let info = stream_info(&server, 77).unwrap();
    let sizes: Vec<(u64, u64)> = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["width"].as_u64().unwrap(), l["height"].as_u64().unwrap()))
        .collect();
    assert_eq!(sizes, [(160, 90), (320, 180), (640, 360)], "smallest first");
    let mut viewer = Viewer::whep(server.addrs.http, 77).unwrap();
    let location = viewer.whep_location.clone().unwrap();
    let choose = |layer: &str| {
        post_layer(
            server.addrs.http,
            &location,
            &format!(r#"{{"encodingId":"{layer}"}}"#),
        )
    };
    // Fixed on the layer it starts on (the middle one) once connected, so its link does not
    // move it.
    assert!(drive_until(&mut viewer, Duration::from_secs(5), |v| !v
        .video
        .is_empty()));
    let r = choose("1");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(drive_until(&mut viewer, Duration::from_secs(8), |v| v
        .video
        .len()
        > 300));
    let looped = |f: &[u8]| {
        let n = fixture_nals(f);
        [n.clone(), n.clone(), n.clone(), n.clone(), n].concat()
    };
    assert_run_from_keyframe(&viewer.nal_units(), &looped(VIDEO_A));
    // To the largest layer: the next keyframe of `f` on, its file.
    let r = choose("2");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let switched_at = viewer.video.len();
    assert!(drive_until(&mut viewer, Duration::from_secs(8), |v| v
        .video
        .len()
        > switched_at + 200));
    let after = nals_after(&viewer, switched_at);
    let big = looped(VIDEO_640);
    // Past the last packets of the old layer, the new layer's file from a keyframe.
    let start = after
        .iter()
        .position(|n| n.first().map(|b| b & 0x1f) == Some(7) && big.contains(n))
        .unwrap();
    let tail: Vec<Vec<u8>> = after[start..].to_vec();
    assert_run_from_keyframe(&tail, &big);
    assert_eq!(
        viewer.video_lost(),
        0,
        "numbering continuous across the switch"
    );
    let st = publisher.stop().unwrap();
    assert!(st.video_packets > 1000);
}

/// A viewer of a simulcast stream gets transport-wide feedback negotiated and its layer
/// follows str0m's bandwidth estimate: on loopback the estimate has room, so it climbs from
/// the middle layer to the largest through a clean trial (padding), never trying a layer (a
/// trial that fails moves nothing); its numbering stays continuous. A viewer of a stream of one layer negotiates none (the estimate
/// would cost every packet for nothing).
#[test]
fn a_simulcast_viewer_climbs_on_its_bandwidth_estimate_through_a_trial() {
    let server = TestServer::start();
    // Long enough for the climb's 45 s and the check after it on a busy machine.
    let publisher = publish_with(simulcast_options(&server, 77, 70));
    let single = server.publish(88, VIDEO_A, Some(Duration::from_secs(70)));
    assert!(server.wait_for(Duration::from_secs(8), |s| {
        stream_info(s, 77).is_some_and(|i| i["layers"].as_array().is_some_and(|l| l.len() == 3))
            && stream_info(s, 88).is_some()
    }));
    let twcc = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
    let mut plain = Viewer::whep(server.addrs.http, 88).unwrap();
    let answer = plain.remote_sdp.clone().unwrap();
    // (str0m lists `transport-cc` feedback for its codecs either way; without the sequence
    // number extension it is never used.)
    assert!(!answer.contains(twcc), "{answer}");
    let mut viewer = Viewer::whep(server.addrs.http, 77).unwrap();
    let answer = viewer.remote_sdp.clone().unwrap();
    assert!(answer.contains(twcc), "{answer}");
    assert!(answer.contains(" transport-cc"), "{answer}");
    let per_layer = |s: &TestServer| viewers_per_layer(s, 77);
    assert!(drive_until(&mut viewer, Duration::from_secs(5), |v| !v
        .video
        .is_empty()));
    assert_eq!(per_layer(&server), [0, 1, 0], "it starts on the middle");
    assert_eq!(stream_info(&server, 77).unwrap()["estimating_viewers"], 1);
    let joined = Instant::now();
    let mut on_top = false;
    // Room for two failed trials (5 s, then 10 s apart): on a machine busy with other tests
    // the client's feedback can come late, the estimate then dips under the padding and the
    // trial ends, which is the server doing its job, not a fault.
    while joined.elapsed() < Duration::from_secs(45) && !on_top {
        viewer.drive(Duration::from_millis(250), |_| false);
        plain.drive(Duration::from_millis(10), |_| false);
        on_top = per_layer(&server) == [0, 0, 1];
    }
    assert!(on_top, "still {:?} after 45 s", per_layer(&server));
    let climbed = joined.elapsed();
    let info = stream_info(&server, 77).unwrap();
    let trials = info["layer_trials"].as_u64().unwrap();
    let failed = info["layer_trials_failed"].as_u64().unwrap();
    assert_eq!(trials - failed, 1, "one clean trial moved it: {info}");
    assert_eq!(
        info["layer_switches"], 1,
        "one move, a failed trial moves nothing: {info}"
    );
    assert_eq!(
        server.metric("itg_stream_layer_trials_total{channel=\"77\"}"),
        trials as f64
    );
    assert_eq!(
        server.metric("itg_stream_layer_trials_failed_total{channel=\"77\"}"),
        failed as f64
    );
    // It plays the largest layer's file from a keyframe, numbering continuous.
    let from = viewer.video.len();
    assert!(drive_until(&mut viewer, Duration::from_secs(8), |v| v
        .video
        .len()
        > from + 150));
    let n = fixture_nals(VIDEO_640);
    let big = [n.clone(), n.clone(), n.clone(), n].concat();
    let after = nals_after(&viewer, from);
    let start = after
        .iter()
        .position(|n| n.first().map(|b| b & 0x1f) == Some(7) && big.contains(n))
        .unwrap();
    assert_run_from_keyframe(&after[start..], &big);
    assert_eq!(viewer.video_lost(), 0);
    eprintln!(
        "estimate: middle -> largest in {} ms, {trials} trials, {failed} failed",
        climbed.as_millis()
    );
    publisher.stop().unwrap();
    let _ = single.stop();
}

/// A viewer that arrives while a simulcast publisher still holds its upper layers back (a
/// browser sends them only once its own estimate allows, seconds in) gets an estimating `Rtc`
/// all the same, since the publisher's offer declared three layers; once they send, its
/// estimate takes it up through clean trials, each move one of them.
#[test]
fn a_viewer_arriving_before_the_upper_layers_send_still_estimates() {
    let server = TestServer::start();
    let mut opts = simulcast_options(&server, 77, 80);
    opts.upper_layers_after = Some(Duration::from_secs(4));
    let publisher = publish_with(opts);
    assert!(server.wait_for(Duration::from_secs(8), |s| stream_info(s, 77).is_some()));
    let mut viewer = Viewer::whep(server.addrs.http, 77).unwrap();
    let layers_then = stream_info(&server, 77).unwrap()["layers"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(
        layers_then <= 1,
        "the upper layers already sent: {layers_then}"
    );
    let answer = viewer.remote_sdp.clone().unwrap();
    assert!(
        answer.contains("draft-holmer-rmcat-transport-wide-cc-extensions-01"),
        "{answer}"
    );
    assert!(drive_until(&mut viewer, Duration::from_secs(5), |v| !v
        .video
        .is_empty()));
    assert_eq!(stream_info(&server, 77).unwrap()["estimating_viewers"], 1);
    let per_layer = |s: &TestServer| {
        stream_info(s, 77).unwrap()["layers"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|l| l["viewers"].as_u64().unwrap())
                    .collect::<Vec<u64>>()
            })
            .unwrap_or_default()
    };
    let joined = Instant::now();
    let mut on_top = false;
    while joined.elapsed() < Duration::from_secs(60) && !on_top {
        viewer.drive(Duration::from_millis(250), |_| false);
        on_top = per_layer(&server) == [0, 0, 1];
    }
    assert!(on_top, "still {:?} after 60 s", per_layer(&server));
    let info = stream_info(&server, 77).unwrap();
    let clean =
        info["layer_trials"].as_u64().unwrap() - info["layer_trials_failed"].as_u64().unwrap();
    assert!(clean >= 1, "no clean trial: {info}");
    assert_eq!(
        info["layer_switches"].as_u64().unwrap(),
        clean,
        "every move up came from a clean trial: {info}"
    );
    assert_eq!(viewer.video_lost(), 0, "numbering continuous");
    eprintln!(
        "declared layers: smallest -> largest in {} ms, {clean} clean trials",
        joined.elapsed().as_millis()
    );
    publisher.stop().unwrap();
}

/// A viewer whose link carried it to the largest layer leaves; the next viewer from the same
/// network starts on the largest layer (from its cache) instead of the middle one.
#[test]
fn a_returning_network_starts_on_the_layer_its_link_carried_last_time() {
    let server = TestServer::start();
    let publisher = publish_with(simulcast_options(&server, 77, 30));
    assert!(server.wait_for(Duration::from_secs(8), |s| {
        stream_info(s, 77).is_some_and(|i| i["layers"].as_array().is_some_and(|l| l.len() == 3))
    }));
    let viewers_per_layer = |s: &TestServer| viewers_per_layer(s, 77);
    let mut first = Viewer::whep(server.addrs.http, 77).unwrap();
    assert!(drive_until(&mut first, Duration::from_secs(5), |v| !v
        .video
        .is_empty()));
    assert_eq!(
        viewers_per_layer(&server),
        [0, 1, 0],
        "a first visit: the middle"
    );
    let location = first.whep_location.clone().unwrap();
    let post = |body: &str| post_layer(server.addrs.http, &location, body);
    // Up to the largest, then back in the link's hands there.
    assert_eq!(post(r#"{"encodingId":"2"}"#).status, 200);
    let from = first.video.len();
    assert!(drive_until(&mut first, Duration::from_secs(5), |v| v
        .video
        .len()
        > from + 60));
    assert_eq!(post("{}").status, 200);
    assert_eq!(viewers_per_layer(&server), [0, 0, 1]);
    let r = http(server.addrs.http, "DELETE", &location, &[], b"");
    assert_eq!(r.status, 200);
    assert!(
        server.wait_for(Duration::from_secs(3), |s| viewers_per_layer(s)
            == [0, 0, 0])
    );
    // The same network again: the largest layer at once, its file from a keyframe.
    let mut second = Viewer::whep(server.addrs.http, 77).unwrap();
    assert!(drive_until(&mut second, Duration::from_secs(5), |v| v
        .video
        .len()
        > 60));
    assert_eq!(viewers_per_layer(&server), [0, 0, 1]);
    let n = fixture_nals(VIDEO_640);
    let looped = [n.clone(), n.clone(), n.clone(), n].concat();
    assert_run_from_keyframe(&second.nal_units(), &looped);
    publisher.stop().unwrap();
}

/// Layers signalled by SSRC (`a=ssrc-group:SIM`, no RIDs), as WebRTC stacks from before RIDs
/// publish: each SSRC is its own layer, never mixed into another; a viewer fixed on the
/// smallest gets its file bit-exact.
#[test]
fn ssrc_signalled_simulcast_layers_are_kept_apart() {
    let server = TestServer::start();
    let mut opts = simulcast_options(&server, 77, 20);
    opts.ssrc_simulcast = true;
    let publisher = publish_with(opts);
    assert!(
        server.wait_for(Duration::from_secs(8), |s| {
            stream_info(s, 77).is_some_and(|i| {
                i["layers"].as_array().is_some_and(|l| {
                    l.len() == 3 && l.iter().all(|l| l["width"].as_u64().is_some())
                })
            })
        }),
        "{:?}",
        stream_info(&server, 77).map(|i| i["layers"].clone())
    );
    let info = stream_info(&server, 77).unwrap();
    let layers: Vec<(u64, u64)> = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["id"].as_u64().unwrap(), l["width"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        layers,
        [(0, 160), (1, 320), (2, 640)],
        "ids by place in the group"
    );
    let mut viewer = Viewer::whep(server.addrs.http, 77).unwrap();
    assert!(drive_until(&mut viewer, Duration::from_secs(5), |v| !v
        .video
        .is_empty()));
    let location = viewer.whep_location.clone().unwrap();
    let r = post_layer(server.addrs.http, &location, r#"{"encodingId":"0"}"#);
    assert_eq!(r.status, 200);
    let from = viewer.video.len();
    assert!(drive_until(&mut viewer, Duration::from_secs(8), |v| v
        .video
        .len()
        > from + 150));
    let after = nals_after(&viewer, from);
    let n = fixture_nals(VIDEO_B);
    let looped = [n.clone(), n.clone(), n.clone(), n.clone(), n].concat();
    let start = after
        .iter()
        .position(|x| x.first().map(|b| b & 0x1f) == Some(7) && looped.contains(x))
        .unwrap();
    assert_run_from_keyframe(&after[start..], &looped);
    assert_eq!(viewer.video_lost(), 0);
    publisher.stop().unwrap();
}
