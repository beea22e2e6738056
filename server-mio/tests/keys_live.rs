//! The key file changes under a running server: `keys add`, `rotate` and `remove` (the real
//! command) take effect within a second, without a restart, while another channel's stream and
//! viewer lose nothing; a corrupt file keeps the keys in force.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use server_mio::tools::client::ClientError;

/// Runs `server-mio keys ...` on the server's data dir; returns stdout.
fn keys(server: &TestServer, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_server-mio"))
        .arg("keys")
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn last_line(s: &str) -> String {
    s.trim().lines().last().unwrap().trim().to_owned()
}

/// The FTL status a session with `key` gets, when it is refused.
fn refused_with(server: &TestServer, key: &str) -> String {
    match server
        .stream_as(key, VIDEO_A, Some(Duration::from_secs(1)))
        .join()
    {
        Err(ClientError::Protocol(e)) => e.to_string(),
        other => panic!("the key was not refused: {other:?}"),
    }
}

#[test]
fn key_changes_take_effect_live_without_disturbing_other_channels() {
    let server = TestServer::start();
    let healthy = server.stream(88, VIDEO_B, Some(Duration::from_secs(60)));
    assert!(server.wait_for(Duration::from_secs(5), |s| stream_info(s, 88).is_some()));
    let mut viewer = TestViewer::whep(&server, 88).unwrap();
    assert!(viewer.drive(Duration::from_secs(3), |v| v.video.len() > 10));
    let mut watch = |limit: Duration, f: &mut dyn FnMut() -> bool| -> Option<Duration> {
        let t = Instant::now();
        let done = viewer.drive(limit, |_| f());
        done.then(|| t.elapsed())
    };

    // A channel added while running goes live at once.
    let added = Instant::now();
    let key = last_line(&keys(&server, &["add", "--channel", "99"]));
    let first = server.stream_as(&key, VIDEO_A, Some(Duration::from_secs(30)));
    watch(Duration::from_secs(5), &mut || {
        stream_info(&server, 99).is_some()
    })
    .expect("the added channel did not go live");
    eprintln!("keys add -> live in {} ms", added.elapsed().as_millis());
    // `keys list` reads the state the server notes (at most 250 ms old).
    let shows_99 = |list: &str| {
        list.lines()
            .any(|l| l.starts_with("99\t") && l.ends_with("live (ftl)"))
    };
    let mut list = keys(&server, &["list"]);
    for _ in 0..20 {
        if shows_99(&list) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        list = keys(&server, &["list"]);
    }
    assert!(shows_99(&list), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("77\t") && l.ends_with("offline")),
        "{list}"
    );

    // Rotated: the session on the old key ends within a second; the old key is refused, the
    // new one works.
    let t = Instant::now();
    let new_key = last_line(&keys(&server, &["rotate", "--channel", "99"]));
    watch(Duration::from_secs(3), &mut || {
        stream_info(&server, 99).is_none()
    })
    .expect("the stream on the rotated key went on");
    let ended = t.elapsed();
    eprintln!(
        "keys rotate -> old session ended {} ms after the command started",
        ended.as_millis()
    );
    assert!(ended < Duration::from_secs(1), "{ended:?}");
    let err = first.join().expect_err("the old session was not ended");
    assert!(err.to_string().contains("410"), "{err}");
    assert!(refused_with(&server, &key).contains("405"));
    // The new key works, over WHIP too.
    let second = server.publish_as(99, &new_key, VIDEO_A, Some(Duration::from_secs(30)));
    watch(Duration::from_secs(5), &mut || {
        stream_info(&server, 99).is_some_and(|i| i["protocol"] == "whip")
    })
    .expect("the new key does not work");

    // Removed: its stream ends; the channel is unknown.
    let t = Instant::now();
    keys(&server, &["remove", "--channel", "99"]);
    watch(Duration::from_secs(3), &mut || {
        stream_info(&server, 99).is_none()
    })
    .expect("the removed channel's stream went on");
    let ended = t.elapsed();
    eprintln!(
        "keys remove -> WHIP stream ended {} ms after the command started",
        ended.as_millis()
    );
    assert!(ended < Duration::from_secs(1), "{ended:?}");
    assert!(second.join().is_err(), "the WHIP publisher was not let go");
    assert!(refused_with(&server, &new_key).contains("401"));
    assert_eq!(server.metric("itg_key_reloads_total"), 3.0);

    // A corrupt file (a half write) keeps the keys in force, and says so.
    let path = server.data_dir.join("keys.json");
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    watch(Duration::from_secs(3), &mut || {
        server.metric("itg_key_file_errors_total") == 1.0
    })
    .expect("the corrupt file was not noticed");
    let key77 = server.key(77);
    let s77 = server.stream_as(&key77, VIDEO_A, Some(Duration::from_secs(2)));
    watch(Duration::from_secs(5), &mut || {
        stream_info(&server, 77).is_some()
    })
    .expect("a key in force stopped working with a corrupt file");
    s77.join().unwrap();

    // The other channel's viewer lost nothing throughout.
    let got = viewer.video.len();
    assert!(viewer.drive(Duration::from_secs(2), |v| v.video.len() > got + 30));
    assert_eq!(viewer.video_lost(), 0);
    assert!(stream_info(&server, 88).is_some());
    let _ = healthy.stop();
}
