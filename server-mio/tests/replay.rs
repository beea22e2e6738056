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
    let dir = std::env::temp_dir().join(format!(
        "itg-capture-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
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
