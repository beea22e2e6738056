//! The viewer site in real browsers: headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from npm) plays the watch page against the real server; headless Firefox
//! (`firefox-esr`, driven by `puppeteer-core`) checks the path of a browser without H.264.
//! Everything runs in a fresh network namespace, so no traffic leaves the machine.
//!
//! Needs root (for `unshare -n`), `/usr/bin/chromium`, `/usr/bin/firefox-esr`, `node` and
//! `npm ci` in
//! `server-mio/tests/browser`; `.ci/install-deps` installs them. Missing pieces fail the test
//! under CI and skip it, loudly, elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

fn missing() -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !Path::new("/usr/bin/chromium").exists() {
        return Some("/usr/bin/chromium (apt-get install chromium)".into());
    }
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("redis-server (apt-get install redis-server)".into());
    }
    if Command::new("nft").arg("--version").output().is_err() {
        return Some("nft (apt-get install nftables)".into());
    }
    if !Path::new("/usr/bin/firefox-esr").exists() {
        return Some("/usr/bin/firefox-esr (apt-get install firefox-esr)".into());
    }
    for module in ["playwright-core", "puppeteer-core"] {
        if !dir.join("node_modules").join(module).exists() {
            return Some(format!("{module} (npm ci in {})", dir.display()));
        }
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node".into());
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.ok().as_deref() != Some("0") {
        return Some("root (for a private network namespace)".into());
    }
    None
}

/// Whether the browser tests can run here; fails under CI when they cannot.
fn ready() -> bool {
    if let Some(what) = missing() {
        if std::env::var_os("CI").is_some() {
            panic!("the browser test needs {what}");
        }
        eprintln!("\n\n*** SKIPPED the browser test: missing {what} ***\n\n");
        return false;
    }
    true
}

/// Runs a browser script in a fresh loopback-only network namespace.
fn run_in_namespace(script: &str) -> Command {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new("unshare");
    c.args([
        "-n",
        "--",
        "sh",
        "-c",
        &format!("ip link set lo up && exec node {script}"),
    ])
    .current_dir(manifest.join("tests/browser"))
    .env("ITG_SERVER_BIN", env!("CARGO_BIN_EXE_server-mio"))
    .env(
        "ITG_ARTIFACTS",
        manifest.join("../target/browser-artifacts"),
    );
    c
}

#[test]
fn the_publish_page_goes_live_from_a_fake_camera_and_stop_ends_it() {
    if !ready() {
        return;
    }
    let status = run_in_namespace("publish.mjs").status().unwrap();
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-artifacts");
    assert!(
        status.success(),
        "the publish test failed (screenshots in {})",
        artifacts.display()
    );
    assert!(artifacts.join("watch-whip.png").exists());
}

/// Runs a script that streams the fixture with our FTL client; checks it passed and left
/// `artifact` in the artifacts folder.
fn run_with_fixture(script: &str, what: &str, artifact: &str, extra: &[(&str, &str)]) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = manifest.join("../relay-core/tests/data");
    let artifacts = manifest.join("../target/browser-artifacts");
    let mut c = run_in_namespace(script);
    c.env("ITG_CLIENT_BIN", env!("CARGO_BIN_EXE_ftl-client"))
        .env("ITG_VIDEO", data.join("video-320x180-30fps-4s.h264"))
        .env("ITG_AUDIO", data.join("audio-opus-48k-4s.ogg"));
    for (k, file) in extra {
        c.env(k, data.join(file));
    }
    let status = c.status().unwrap();
    assert!(
        status.success(),
        "the {what} failed (screenshots in {})",
        artifacts.display()
    );
    assert!(artifacts.join(artifact).exists());
}

#[test]
fn the_watch_page_plays_in_headless_chromium() {
    if !ready() {
        return;
    }
    run_with_fixture(
        "run.mjs",
        "browser test",
        "watch.png",
        &[("ITG_VIDEO_BFRAMES", "video-320x180-high-bframes-2s.h264")],
    );
}

#[test]
fn the_watch_page_plays_over_https_with_a_certificate_made_here() {
    if !ready() {
        return;
    }
    run_with_fixture("tls.mjs", "TLS browser test", "watch-https.png", &[]);
}

#[test]
fn firefox_without_h264_is_told_why_and_gets_audio() {
    if !ready() {
        return;
    }
    run_with_fixture("firefox.mjs", "Firefox test", "firefox-summary.json", &[]);
}

#[test]
fn a_blocked_media_port_is_explained_on_the_watch_page() {
    if !ready() {
        return;
    }
    run_with_fixture(
        "icefail.mjs",
        "ICE failure test",
        "icefail-summary.json",
        &[],
    );
}

#[test]
fn a_recording_plays_and_seeks_in_headless_chromium() {
    if !ready() {
        return;
    }
    run_with_fixture(
        "recording.mjs",
        "recording playback test",
        "recording.png",
        &[],
    );
}

#[test]
fn the_watch_page_follows_placement_to_an_edge_and_back_when_the_edge_dies() {
    if !ready() {
        return;
    }
    run_with_fixture("cluster.mjs", "cluster browser test", "cluster.png", &[]);
}
