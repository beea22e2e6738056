//! Captures and replays: the server's captures open in tshark, replays of committed captures
//! are deterministic and match their golden summaries, and a capture re-streams to a live
//! server whose viewer decodes it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use ftl_proto::StreamKey;
use relay_core::RelayConfig;
use server_mio::capture::read_sessions;
use server_mio::tools::replay::{replay, restream, ReplayOptions};

fn captures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/captures")
}

/// Each committed capture with the viewer join times its golden summary was made with.
fn fixtures() -> Vec<(&'static str, Vec<u64>)> {
    vec![
        ("session-320x180", vec![0, 700, 1500]),
        ("session-loss", vec![0, 1200]),
        ("tcpdump-two-streams", vec![500]),
        // Real clients: OBS 29's one IDR comes after its speed test, so a late viewer is served
        // from a GOP cache several seconds deep; ftl_app sends an IDR every second.
        ("obs-29.0.2-1280x720-8s", vec![0, 3000]),
        ("ftl_app-640x360-6s", vec![0, 2500]),
        // A WHIP session: decrypted RTP through the relay's RTP source.
        ("whip-320x180", vec![0, 1000]),
        // Chromium publishing VP8, VP9 and AV1 over WHIP: the codec seam finds their
        // keyframes and sizes; a late viewer starts from the cache.
        ("whip-vp8-640x360", vec![0, 3000]),
        ("whip-vp9-640x360", vec![0, 3000]),
        ("whip-av1-640x360", vec![0, 3000]),
    ]
}

fn options(viewers: &[u64]) -> ReplayOptions {
    ReplayOptions {
        key: StreamKey::new("replay-key"),
        seed: 7,
        viewers: viewers.iter().map(|m| Duration::from_millis(*m)).collect(),
        relay: RelayConfig::default(),
    }
}

#[test]
fn replaying_a_capture_twice_gives_identical_outputs() {
    for (name, viewers) in fixtures() {
        let bytes = std::fs::read(captures().join(format!("{name}.pcap"))).unwrap();
        let sessions = read_sessions(&bytes).unwrap();
        assert!(!sessions.is_empty(), "{name}: no session found");
        for s in &sessions {
            let a = replay(s, &options(&viewers)).unwrap();
            let b = replay(s, &options(&viewers)).unwrap();
            assert!(a.authenticated, "{name}: the fresh handshake failed");
            assert!(
                a.transcript
                    .iter()
                    .filter(|l| l.contains(" forward "))
                    .count()
                    > 100,
                "{name}: nothing forwarded"
            );
            assert_eq!(a.transcript, b.transcript, "{name}: replays differ");
            // Another seed changes the nonce, not what the relay does.
            let mut other = options(&viewers);
            other.seed = 8;
            assert_eq!(replay(s, &other).unwrap().summary(), a.summary());
        }
    }
}

/// The relay's behaviour on each capture, checked against a committed summary. After an
/// intended change, run with `ITG_BLESS=1` and review the diff of the `.summary.txt` files.
#[test]
fn replays_match_their_golden_summaries() {
    let bless = std::env::var_os("ITG_BLESS").is_some();
    for (name, viewers) in fixtures() {
        let bytes = std::fs::read(captures().join(format!("{name}.pcap"))).unwrap();
        let mut summary = String::new();
        for (i, s) in read_sessions(&bytes).unwrap().iter().enumerate() {
            summary.push_str(&format!("# session {i}\n"));
            summary.push_str(&replay(s, &options(&viewers)).unwrap().summary());
        }
        let golden = captures().join(format!("{name}.summary.txt"));
        if bless {
            std::fs::write(&golden, &summary).unwrap();
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        assert_eq!(
            summary, expected,
            "{name}: the relay's behaviour changed (ITG_BLESS=1 to accept)"
        );
    }
}

#[test]
fn the_loss_capture_is_repaired_by_nacks() {
    let bytes = std::fs::read(captures().join("session-loss.pcap")).unwrap();
    let s = &read_sessions(&bytes).unwrap()[0];
    let out = replay(s, &options(&[0])).unwrap();
    let c = out.counters.unwrap();
    assert!(
        c.missing > 0 && c.recovered == c.missing && c.lost == 0,
        "{c:?}"
    );
    assert_eq!(out.nacked.len() as u64, c.nacked);
    // The recorded client answered those NACKs; the replay asked for the same numbers.
    let recorded_nacks: Vec<u16> = s
        .media_out
        .iter()
        .filter_map(|(_, _, d)| ftl_proto::media::Nack::parse(d).ok())
        .flat_map(|n| n.lost().collect::<Vec<_>>())
        .collect();
    assert_eq!(out.nacked, recorded_nacks);
}

fn tshark_lines(file: &Path) -> Option<usize> {
    let out = Command::new("tshark").arg("-r").arg(file).output().ok()?;
    assert!(
        out.status.success(),
        "tshark -r {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).lines().count())
}

#[test]
fn the_servers_captures_open_in_tshark_and_replay() {
    let dir = scratch_path("itg-capture");
    let server = TestServer::start_with(|a| a.capture = Some(dir.clone()));
    let stats = server
        .stream(77, VIDEO_A, Some(Duration::from_secs(2)))
        .join()
        .unwrap();
    // The file is complete once the session closed.
    assert!(
        server.wait_for(Duration::from_secs(5), |_| std::fs::read_dir(&dir)
            .map(|d| d.count())
            .unwrap_or(0)
            == 1)
    );
    std::thread::sleep(Duration::from_millis(200));
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    match tshark_lines(&file) {
        Some(lines) => assert!(
            lines as u64 > stats.video_packets + stats.audio_packets,
            "{lines} lines"
        ),
        None if std::env::var_os("CI").is_some() => panic!("tshark is missing"),
        None => eprintln!("\n*** tshark is missing: the capture was not checked with it ***\n"),
    }
    for f in captures().read_dir().unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "pcap") {
            if let Some(lines) = tshark_lines(&f) {
                assert!(lines > 100, "{}", f.display());
            }
        }
    }
    let sessions = read_sessions(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.media_port, Some(stats.media_port));
    let media = s
        .media_in
        .iter()
        .filter(|(_, _, d)| d.get(1).is_some_and(|b| b & 0x7f == 96 || b & 0x7f == 97))
        .count();
    assert_eq!(media as u64, stats.video_packets + stats.audio_packets);
    let out = replay(s, &options(&[0])).unwrap();
    assert_eq!(out.counters.unwrap().video_packets, stats.video_packets);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_capture_restreams_to_a_live_server_whose_viewer_decodes_it() {
    let server = TestServer::start();
    let bytes = std::fs::read(captures().join("session-320x180.pcap")).unwrap();
    let rec = read_sessions(&bytes).unwrap().remove(0);
    let key = server.key(77);
    let addr = server.addrs.ftl;
    let thread =
        std::thread::spawn(move || restream(&rec, addr, &key, 1.0, &AtomicBool::new(false)));
    assert!(server.wait_for(Duration::from_secs(5), |s| s
        .get("/api/streams")
        .1
        .contains("\"live\":true")));
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    viewer.drive(Duration::from_secs(6), |_| thread.is_finished());
    let stats = thread.join().unwrap().unwrap();
    viewer.drive(Duration::from_millis(300), |_| false);
    assert!(stats.sent > 200);
    let nals = viewer.nal_units();
    assert!(nals.len() > 20);
    assert_run_from_keyframe(&nals, &fixture_nals(VIDEO_A));
}

/// The newest capture file in `dir` once there are `n`, after the server closed it.
fn captured_file(server: &TestServer, dir: &Path, prefix: &str) -> PathBuf {
    let find = || {
        std::fs::read_dir(dir).ok()?.find_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.to_owned();
            name.starts_with(prefix).then_some(p)
        })
    };
    assert!(
        server.wait_for(Duration::from_secs(5), |_| find().is_some()),
        "no {prefix} capture in {}",
        dir.display()
    );
    find().unwrap()
}

#[test]
fn a_whip_session_is_captured_decrypted_and_replays_and_restreams() {
    let dir = scratch_path("itg-capture-whip");
    let server = TestServer::start_with(|a| a.capture = Some(dir.clone()));
    let stats = server
        .publish(77, VIDEO_A, Some(Duration::from_secs(2)))
        .join()
        .unwrap();
    // The stream ended (the client's DELETE): the capture is complete.
    assert!(
        server.wait_for(Duration::from_secs(5), |_| stream_info(&server, 77)
            .is_none())
    );
    std::thread::sleep(Duration::from_millis(200));
    let file = captured_file(&server, &dir, "whip-");
    let bytes = std::fs::read(&file).unwrap();
    let key = server.key(77);
    let secret = key.split_once('-').unwrap().1;
    assert!(
        !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the stream key is in the capture"
    );

    // tshark reads the offer and answer as HTTP and every packet as UDP.
    if let Ok(out) = Command::new("tshark")
        .args(["-r"])
        .arg(&file)
        .args([
            "-Y",
            "http.request.method == \"POST\" || http.response.code == 201",
        ])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("POST /whip/77"), "{text}");
    } else if std::env::var_os("CI").is_some() {
        panic!("tshark is missing");
    }

    let sessions = read_sessions(&bytes).unwrap();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    let w = s.whip.as_ref().expect("not read as a WHIP session");
    assert_eq!((w.channel, w.status), (Some(77), 201));
    assert!(!w.video_pts.is_empty() && !w.audio_pts.is_empty(), "{w:?}");
    let rtp = s
        .media_in
        .iter()
        .filter(|(_, _, d)| {
            ftl_proto::media::RtpPacket::parse(d)
                .is_ok_and(|p| !(72..=76).contains(&p.payload_type()))
        })
        .count() as u64;
    assert_eq!(rtp, stats.video_packets + stats.audio_packets);

    // The replay feeds the relay's RTP source: the same packets, a picture, deterministic.
    let a = replay(s, &options(&[0, 1000])).unwrap();
    let b = replay(s, &options(&[0, 1000])).unwrap();
    assert_eq!(a.transcript, b.transcript);
    let c = a.counters.as_ref().unwrap();
    assert_eq!(c.video_packets, stats.video_packets);
    assert_eq!(c.audio_packets, stats.audio_packets);
    assert_eq!(a.picture, Some((320, 180)));
    assert!(c.sender_reports > 0, "{c:?}");
    assert!(
        a.viewers.iter().all(|v| v.first_keyframe.is_some()),
        "{:?}",
        a.viewers
    );
    assert!(
        a.summary().starts_with("whip 201 channel 77"),
        "{}",
        a.summary()
    );

    // Re-streamed over FTL, the same packets reach a viewer that decodes the fixture.
    let rec = s.clone();
    let addr = server.addrs.ftl;
    let thread =
        std::thread::spawn(move || restream(&rec, addr, &key, 1.0, &AtomicBool::new(false)));
    assert!(
        server.wait_for(Duration::from_secs(5), |_| stream_info(&server, 77)
            .is_some_and(|i| i["protocol"] == "ftl"))
    );
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    viewer.drive(Duration::from_secs(6), |_| thread.is_finished());
    thread.join().unwrap().unwrap();
    viewer.drive(Duration::from_millis(300), |_| false);
    assert_run_from_keyframe(&viewer.nal_units(), &fixture_nals(VIDEO_A));
    std::fs::remove_dir_all(dir).unwrap();
}

/// What real clients send (OBS 29's FTL output, Mixer's ftl_app), as the relay sees it.
#[test]
fn real_clients_captures_replay_cleanly() {
    let read = |name: &str| {
        let bytes = std::fs::read(captures().join(format!("{name}.pcap"))).unwrap();
        read_sessions(&bytes).unwrap().remove(0)
    };
    // OBS: a one-second speed test of junk on the audio SSRC before the stream, dropped as
    // such; one IDR for the whole capture, so a viewer joining 3 s in is served from a deep
    // GOP cache at once.
    let obs = replay(&read("obs-29.0.2-1280x720-8s"), &options(&[0, 3000])).unwrap();
    let c = obs.counters.unwrap();
    assert!(obs.authenticated);
    assert_eq!(c.dropped_speed_test, 1337, "{c:?}");
    assert_eq!(
        (c.dropped_invalid, c.dropped_foreign_ssrc, c.lost),
        (0, 0, 0),
        "{c:?}"
    );
    assert_eq!((obs.picture, obs.b_frames), (Some((1280, 720)), false));
    assert_eq!(c.keyframes, 1);
    let late = &obs.viewers[1];
    assert_eq!(late.first_keyframe, Some(late.joined_at));
    assert!(late.cached > 300, "{late:?}");
    assert_eq!(late.video, c.video_packets, "the late viewer missed video");

    // ftl_app announces 1280x720 whatever it sends: the picture comes from the SPS.
    let rec = read("ftl_app-640x360-6s");
    let announced = server_mio::tools::replay::recorded_metadata(&rec).unwrap();
    assert_eq!(
        announced.video.as_ref().map(|v| (v.width, v.height)),
        Some((1280, 720))
    );
    let app = replay(&rec, &options(&[0, 2500])).unwrap();
    let c = app.counters.unwrap();
    assert_eq!((app.picture, app.b_frames), (Some((640, 360)), false));
    assert!(c.keyframes >= 6, "{c:?}");
    assert_eq!((c.dropped_invalid, c.lost), (0, 0), "{c:?}");
    assert!(app
        .viewers
        .iter()
        .all(|v| v.first_keyframe == Some(v.joined_at) || v.joined_at.is_zero()));
}

/// OBS's capture re-streamed to a live server: the speed test burst is dropped there too,
/// and a viewer gets the stream from its keyframe.
#[test]
fn obs_capture_restreams_with_its_speed_test_to_a_live_server() {
    let server = TestServer::start();
    let bytes = std::fs::read(captures().join("obs-29.0.2-1280x720-8s.pcap")).unwrap();
    let rec = read_sessions(&bytes).unwrap().remove(0);
    let key = server.key(77);
    let addr = server.addrs.ftl;
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    let thread =
        std::thread::spawn(move || restream(&rec, addr, &key, 1.0, &AtomicBool::new(false)));
    // The stream's drop counter lives as long as the stream: read it while it runs.
    let mut dropped = 0.0f64;
    let mut next = std::time::Instant::now();
    viewer.drive(Duration::from_secs(15), |_| {
        if std::time::Instant::now() >= next {
            dropped = dropped.max(server.metric("itg_stream_dropped_total{channel=\"77\"}"));
            next += Duration::from_millis(250);
        }
        thread.is_finished()
    });
    let stats = thread.join().unwrap().unwrap();
    assert!(stats.sent > 3000, "{stats:?}");
    assert!(
        dropped >= 1337.0,
        "the speed test was not dropped: {dropped}"
    );
    let nals = viewer.nal_units();
    assert_eq!(nals.first().map(|n| n[0] & 0x1f), Some(7), "no SPS first");
    assert!(nals.iter().any(|n| n[0] & 0x1f == 5), "no IDR");
    assert!(
        nals.len() > 140,
        "{} NAL units from {} video packets ({} lost, {:?})",
        nals.len(),
        viewer.video_count,
        viewer.video_lost(),
        viewer.video_seq_range
    );
}
