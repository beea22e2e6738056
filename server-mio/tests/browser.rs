//! The viewer site in real browsers: headless Chromium (Debian's `chromium`, driven by
//! `playwright-core` from npm) plays the watch page against the real server; headless Firefox
//! (`firefox-esr`, driven by `puppeteer-core`) checks the path of a browser without H.264;
//! GStreamer's `webrtcbin` (from Python, `tests/gst/itg_gst.py`) publishes and watches in the
//! tested-clients matrix; Pion (Go, `tests/pion/itg_pion.go`, built against Debian's packages)
//! publishes and watches. Everything runs in a fresh network namespace, so no traffic leaves
//! the machine. The tests take turns (one browser at a time): they measure what a browser's
//! congestion control does, which a second browser encoding on the same two cores would skew.
//!
//! Needs root (for `unshare -n`), `/usr/bin/chromium`, `/usr/bin/firefox-esr`, `node` and
//! `npm ci` in `server-mio/tests/browser`, `ffmpeg`, GStreamer 1.22 with `webrtcbin`, x264,
//! libav and libnice, and Python's `gi`; `.ci/install-deps` installs them. Missing pieces fail
//! the test under CI and skip it, loudly, elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// One browser test at a time.
static TURN: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether GStreamer's WebRTC stack and the elements the clients use are installed.
fn gstreamer_missing() -> Option<String> {
    let gi = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0'); \
             from gi.repository import Gst, GstWebRTC",
        ])
        .output();
    if !gi.is_ok_and(|o| o.status.success()) {
        return Some("python3-gi with gir1.2-gst-plugins-bad-1.0".into());
    }
    for element in [
        "webrtcbin",
        "nicesrc",
        "x264enc",
        "avdec_h264",
        "opusenc",
        "rtph264pay",
    ] {
        let found = Command::new("gst-inspect-1.0")
            .arg(element)
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("the GStreamer element {element}"));
        }
    }
    None
}

/// The Python of the virtualenv `.ci/install-deps` makes for aiortc.
fn aiortc_python() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aiortc/venv/bin/python")
}

/// Builds the Pion client (`tests/pion/itg_pion.go`) with Go against the Pion Debian packages,
/// offline; returns the binary, or what is missing.
fn pion_client() -> Result<std::path::PathBuf, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pion/itg_pion");
    let built = Command::new(manifest.join("tests/pion/build.sh"))
        .arg(&out)
        .output()
        .map_err(|e| format!("tests/pion/build.sh: {e}"))?;
    if !built.status.success() {
        return Err(format!(
            "the Pion client (golang-go and golang-github-pion-webrtc.v3-dev): {}",
            String::from_utf8_lossy(&built.stderr)
        ));
    }
    Ok(out)
}

fn missing() -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if Command::new("go").arg("version").output().is_err()
        || !Path::new("/usr/share/gocode/src/github.com/pion/webrtc").exists()
    {
        return Some(
            "Go with Pion (apt-get install golang-go golang-github-pion-webrtc.v3-dev)".into(),
        );
    }
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
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        return Some("ffmpeg (apt-get install ffmpeg)".into());
    }
    if let Some(what) = gstreamer_missing() {
        return Some(what);
    }
    let aiortc = Command::new(aiortc_python())
        .args(["-c", "import aiortc"])
        .output();
    if !aiortc.is_ok_and(|o| o.status.success()) {
        return Some(
            "aiortc (python3 -m venv server-mio/tests/aiortc/venv, then its pip install -r \
             requirements.txt)"
                .into(),
        );
    }
    if !Path::new("/usr/bin/firefox-esr").exists() {
        return Some("/usr/bin/firefox-esr (apt-get install firefox-esr)".into());
    }
    for module in ["playwright-core", "puppeteer-core", "node-datachannel"] {
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

/// Runs a script that needs no fixture in its namespace; checks it passed and left
/// `artifact` in the artifacts folder.
fn run_script(script: &str, what: &str, artifact: &str) {
    let status = run_in_namespace(script).status().unwrap();
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-artifacts");
    assert!(
        status.success(),
        "the {what} failed (screenshots in {})",
        artifacts.display()
    );
    assert!(artifacts.join(artifact).exists(), "no {artifact}");
}

#[test]
fn the_publish_page_goes_live_from_a_fake_camera_and_stop_ends_it() {
    if !ready() {
        return;
    }
    let _turn = turn();
    run_script("publish.mjs", "publish test", "watch-whip.png");
}

/// Chromium publishes three simulcast layers over WHIP: a clean viewer climbs to the top one,
/// the quality menu fixes the smallest, a viewer whose link nftables polices below the top
/// layer's rate moves down within 5 s, plays on without freezing and climbs back when the
/// limit goes; the recording is of the top layer.
#[test]
fn simulcast_layers_follow_each_viewers_link_and_choice() {
    if !ready() {
        return;
    }
    let _turn = turn();
    run_script("simulcast.mjs", "simulcast test", "simulcast-summary.json");
}

/// Simulcast through an edge: Chromium publishes three layers to the origin, a Chromium viewer
/// whose watch page is served by the origin is placed on the edge, which pulls every layer
/// under the origin's ids; the viewer climbs to 1280x720 on its estimate there and the quality
/// menu fixes it on 320x180 at the edge.
#[test]
fn an_edge_viewer_of_a_simulcast_climbs_and_chooses_among_the_origin_s_layers() {
    if !ready() {
        return;
    }
    let _turn = turn();
    run_script(
        "cluster_simulcast.mjs",
        "cluster simulcast test",
        "cluster-simulcast-summary.json",
    );
}

/// Firefox publishes three VP8 simulcast layers over WHIP (its own offer and RID handling):
/// Chromium viewers climb to the largest and take the smallest from the menu, and a Firefox
/// viewer switches to it too.
#[test]
fn firefox_simulcast_is_ranked_by_size_and_switched_in_both_browsers() {
    if !ready() {
        return;
    }
    let _turn = turn();
    run_script(
        "simulcast_firefox.mjs",
        "Firefox simulcast test",
        "simulcast-firefox-summary.json",
    );
}

/// Chromium publishes VP8, VP9 and AV1 over WHIP; Chromium watches each at the published size
/// (a late viewer at once), Firefox without OpenH264 plays VP8 and AV1.
#[test]
fn every_codec_chromium_publishes_is_watched_as_it_is() {
    if !ready() {
        return;
    }
    let _turn = turn();
    run_script("codecs.mjs", "codecs test", "codecs-summary.json");
}

/// Runs a script that streams the fixture with our FTL client; checks it passed and left
/// `artifact` in the artifacts folder.
fn run_with_fixture(
    script: &str,
    what: &str,
    artifact: &str,
    extra: &[(&str, &str)],
    env: &[(&str, String)],
) {
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
    for (k, v) in env {
        c.env(k, v);
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
    let _turn = turn();
    run_with_fixture(
        "run.mjs",
        "browser test",
        "watch.png",
        &[("ITG_VIDEO_BFRAMES", "video-320x180-high-bframes-2s.h264")],
        &[],
    );
}

#[test]
fn the_watch_page_plays_over_https_with_a_certificate_made_here() {
    if !ready() {
        return;
    }
    let _turn = turn();
    run_with_fixture("tls.mjs", "TLS browser test", "watch-https.png", &[], &[]);
}

#[test]
fn firefox_without_h264_is_told_why_and_gets_audio() {
    if !ready() {
        return;
    }
    let _turn = turn();
    run_with_fixture(
        "firefox.mjs",
        "Firefox test",
        "firefox-summary.json",
        &[],
        &[],
    );
}

#[test]
fn a_blocked_media_port_is_explained_on_the_watch_page() {
    if !ready() {
        return;
    }
    let _turn = turn();
    run_with_fixture(
        "icefail.mjs",
        "ICE failure test",
        "icefail-summary.json",
        &[],
        &[],
    );
}

#[test]
fn a_recording_plays_and_seeks_in_headless_chromium() {
    if !ready() {
        return;
    }
    let _turn = turn();
    run_with_fixture(
        "recording.mjs",
        "recording playback test",
        "recording.png",
        &[],
        &[],
    );
}

#[test]
fn the_watch_page_follows_placement_to_an_edge_and_back_when_the_edge_dies() {
    if !ready() {
        return;
    }
    let _turn = turn();
    run_with_fixture(
        "cluster.mjs",
        "cluster browser test",
        "cluster.png",
        &[],
        &[],
    );
}

#[test]
fn a_browser_publisher_ramps_on_congestion_feedback_and_keeps_under_the_cap() {
    if !ready() {
        return;
    }
    let _turn = turn();
    // A camera that needs bits: noisy 1280x720 (Chromium's own fake camera is a flat
    // animation its encoder codes in ~250 kbit/s, whatever it is allowed).
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let camera = artifacts.join("noisy-1280x720.mjpeg");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=1280x720:rate=30,noise=alls=40:allf=t+u")
        .args(["-t", "2", "-q:v", "6", "-f", "mjpeg"])
        .arg(&camera)
        .status()
        .unwrap();
    assert!(made.success(), "ffmpeg could not make the camera file");
    // Chromium takes the camera file by a plain path (no `..`).
    let camera = std::fs::canonicalize(&camera).unwrap();
    let status = run_in_namespace("publish_bitrate.mjs")
        .env("ITG_FAKE_VIDEO", &camera)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the publisher bitrate test failed (screenshots in {})",
        artifacts.display()
    );
    assert!(artifacts.join("publish-bitrate-summary.json").exists());
}

#[test]
fn gstreamer_publishes_over_whip_and_watches_over_whep() {
    if !ready() {
        return;
    }
    let _turn = turn();
    let gst = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gst/itg_gst.py");
    run_with_fixture(
        "gstreamer.mjs",
        "GStreamer test",
        "gstreamer-summary.json",
        &[],
        &[("ITG_GST", gst.display().to_string())],
    );
}

#[test]
fn the_tested_clients_matrix_plays_every_row() {
    if !ready() {
        return;
    }
    let _turn = turn();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    run_with_fixture(
        "matrix.mjs",
        "tested-clients matrix",
        "matrix.json",
        &[("ITG_VIDEO_640", "video-640x360-30fps-4s.h264")],
        &[
            ("ITG_REPLAY_BIN", env!("CARGO_BIN_EXE_itg-replay").into()),
            (
                "ITG_CAPTURES",
                manifest.join("tests/data/captures").display().to_string(),
            ),
            (
                "ITG_GST",
                manifest.join("tests/gst/itg_gst.py").display().to_string(),
            ),
            ("ITG_AIORTC_PY", aiortc_python().display().to_string()),
            (
                "ITG_AIORTC",
                manifest
                    .join("tests/aiortc/itg_aiortc.py")
                    .display()
                    .to_string(),
            ),
        ],
    );
}

/// Pion, the Go stack under most Go streaming tools, publishes (H.264, and VP8 from an offer
/// that lists every codec it knows) and watches through the server, a simulcast too (see
/// `browser/pion.mjs`).
#[test]
fn pion_publishes_and_watches_through_the_server() {
    if !ready() {
        return;
    }
    let pion = match pion_client() {
        Ok(p) => p,
        Err(what) if std::env::var_os("CI").is_some() => panic!("the Pion test needs {what}"),
        Err(what) => {
            eprintln!("\n\n*** SKIPPED the Pion test: {what} ***\n\n");
            return;
        }
    };
    let _turn = turn();
    run_with_fixture(
        "pion.mjs",
        "Pion test",
        "pion-summary.json",
        &[
            ("ITG_VIDEO_640", "video-640x360-30fps-4s.h264"),
            ("ITG_VIDEO_160", "video-160x90-main-4s.h264"),
        ],
        &[
            ("ITG_PION", pion.display().to_string()),
            (
                "ITG_WHIP_CLIENT_BIN",
                env!("CARGO_BIN_EXE_whip-client").into(),
            ),
        ],
    );
}

/// The home page shows a live thumbnail per channel (an FTL stream and a browser's WHIP
/// stream), at each stream's aspect ratio, swapped for newer ones as the streams go on.
#[test]
fn the_home_page_shows_a_live_thumbnail_per_channel() {
    if !ready() {
        return;
    }
    let _turn = turn();
    run_with_fixture(
        "thumbnails.mjs",
        "thumbnails test",
        "home-thumbnails.png",
        &[("ITG_VIDEO_640", "video-640x360-30fps-4s.h264")],
        &[],
    );
}
