//! Recording through the real server: fixtures streamed over FTL and WHIP with recording on,
//! the files read back by ffprobe and ffmpeg, served with byte ranges, deleted with the key;
//! a disk that stalls, a full disk, retention, and hostile paths.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn recordings(server: &TestServer, query: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/api/recordings{query}"));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["recordings"].as_array().cloned().unwrap_or_default()
}

/// Waits for `n` finished recordings of channel 77 and returns them (newest first).
fn finished(server: &TestServer, n: usize) -> Vec<Value> {
    let mut list = Vec::new();
    let ok = server.wait_for(Duration::from_secs(15), |s| {
        list = recordings(s, "?channel=77");
        list.len() >= n && list.iter().all(|r| r["recording"] == false)
    });
    assert!(ok, "recordings: {list:?}");
    list
}

fn file_of(server: &TestServer, r: &Value) -> PathBuf {
    server
        .data_dir
        .join("recordings")
        .join(r["channel"].to_string())
        .join(r["file"].as_str().unwrap())
}

fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (Debian package ffmpeg) is needed");
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The H.264 of a recording as Annex-B NAL units, through `ffmpeg -c copy`.
fn recorded_nals(path: &Path) -> Vec<Vec<u8>> {
    let out = scratch_path("itg-rec").with_extension("h264");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v",
            "-c",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
            "-f",
            "h264",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    fixture_nals(&bytes)
}

/// Every frame of the recording decodes (`ffmpeg -f null`), and how many there are.
fn decoded_frames(path: &Path) -> usize {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v", "-f", "framemd5", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "decode errors: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count()
}

fn stream_info_of(probe: &Value, kind: &str) -> Value {
    probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} stream: {probe}"))
}

fn secs(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn an_ftl_stream_is_recorded_as_an_mp4_that_ffmpeg_reads_bit_exact() {
    let server = TestServer::start_with(|a| a.record = true);
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(10)));
    let stats = streamer.join().unwrap();
    let list = finished(&server, 1);
    assert_eq!(list.len(), 1);
    let r = &list[0];
    let path = file_of(&server, r);
    let probe = ffprobe(&path);
    let v = stream_info_of(&probe, "video");
    let a = stream_info_of(&probe, "audio");
    assert_eq!(v["codec_name"], "h264");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(320), Some(180))
    );
    assert_eq!(a["codec_name"], "opus");
    assert_eq!(a["sample_rate"], "48000");
    // Every frame the client sent is in the file (it starts at the first keyframe, which is
    // the first frame), and the duration is theirs within one frame.
    let frames = decoded_frames(&path);
    let fixture = fixture_nals(VIDEO_A);
    let per_loop = ftl_proto::media::packetize::access_units(
        &fixture.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    )
    .len();
    let video_duration = secs(&v["duration"]);
    eprintln!(
        "recorded {frames} frames, {video_duration:.3} s of video ({} video packets sent, {per_loop} frames a loop); audio {} s from {} s, video from {} s; API says {} s, {} bytes",
        stats.video_packets,
        a["duration"],
        a["start_time"],
        v["start_time"],
        r["duration_s"],
        r["size"]
    );
    assert!((290..=301).contains(&frames), "{frames} frames");
    // The client streamed for 10 s of its clock (the file keeps its timestamps, including the
    // 20 ms its loop adds where the audio fixture outlasts the video).
    assert!(
        (video_duration - 10.0).abs() <= 1.0 / 30.0,
        "{video_duration} s of video for 10 s streamed"
    );
    let api_duration = r["duration_s"].as_f64().unwrap();
    assert!((api_duration - video_duration).abs() <= 1.0 / 30.0 + 1e-3);
    // Audio and video start together.
    let skew = (secs(&a["start_time"]) - secs(&v["start_time"])).abs();
    assert!(skew <= 0.020, "audio and video start {skew} s apart");
    // The H.264 comes back bit-exact: the fixture, looped, from its first NAL unit.
    let nals = recorded_nals(&path);
    let looped: Vec<Vec<u8>> = fixture.iter().cycle().take(nals.len()).cloned().collect();
    assert_eq!(nals.len(), looped.len());
    assert!(
        nals == looped,
        "the recorded H.264 differs from the fixture"
    );
    assert_eq!(server.metric("itg_recordings_total"), 1.0);
    assert_eq!(server.metric("itg_recording_dropped_gops_total"), 0.0);
    assert!(r["start"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        r["size"].as_u64(),
        Some(std::fs::metadata(&path).unwrap().len())
    );
}

#[test]
fn recordings_are_served_with_ranges_and_deleted_only_with_the_key() {
    let server = TestServer::start_with(|a| a.record = true);
    server
        .stream(77, VIDEO_A, Some(Duration::from_secs(3)))
        .join()
        .unwrap();
    let r = finished(&server, 1).remove(0);
    let url = r["url"].as_str().unwrap().to_owned();
    let path = file_of(&server, &r);
    let bytes = std::fs::read(&path).unwrap();
    let size = bytes.len();
    let h = server.addrs.http;
    // The whole file.
    let full = http(h, "GET", &url, &[], b"");
    assert_eq!(full.status, 200);
    assert_eq!(full.body, bytes);
    assert_eq!(full.header("Accept-Ranges"), Some("bytes"));
    assert_eq!(full.header("Content-Type"), Some("video/mp4"));
    // Byte ranges, as a <video> element seeks.
    for (range, from, to) in [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, size - 1),
        ("bytes=-500", size - 500, size - 1),
        (&format!("bytes=100-{}", size + 50)[..], 100, size - 1),
    ] {
        let part = http(h, "GET", &url, &[("Range", range)], b"");
        assert_eq!(part.status, 206, "{range}");
        assert_eq!(part.body, bytes[from..=to], "{range}");
        assert_eq!(
            part.header("Content-Range"),
            Some(format!("bytes {from}-{to}/{size}").as_str()),
            "{range}"
        );
    }
    let past = http(h, "GET", &url, &[("Range", &format!("bytes={size}-"))], b"");
    assert_eq!(past.status, 416);
    assert_eq!(
        past.header("Content-Range"),
        Some(format!("bytes */{size}").as_str())
    );
    // HEAD: the length, no body.
    let head = server_mio::client::http::request(h, "HEAD", &url, &[], b"").unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(size.to_string().as_str())
    );
    assert!(head.body.is_empty());
    // The poster: the recording's first keyframe as a JPEG at the stream's size, listed and
    // served beside it.
    let poster_url = r["poster"].as_str().unwrap().to_owned();
    assert_eq!(poster_url, url.replace(".mp4", ".jpg"));
    let poster = http(h, "GET", &poster_url, &[], b"");
    assert_eq!(poster.status, 200);
    assert_eq!(poster.header("Content-Type"), Some("image/jpeg"));
    let img = image::load_from_memory(&poster.body).unwrap();
    assert_eq!((img.width(), img.height()), (320, 180));
    let poster_path = path.with_extension("jpg");
    assert!(poster_path.exists());
    // Nothing but recordings is reachable: traversal, other names, other channels.
    for bad in [
        "/recordings/77/../../keys.json",
        "/recordings/77/..%2F..%2Fkeys.json",
        "/recordings/../keys.json/x",
        "/recordings/77/keys.json",
        "/recordings/77/20261201T214512Z.mp4",
        "/recordings/88/",
        &format!("/recordings/088/{}", r["file"].as_str().unwrap()),
        "/recordings/%2e%2e/20261201T214512Z.mp4",
        "/recordings/77/20261201T214512Z.jpg",
        "/recordings/77/keys.jpg",
        "/recordings/77/..jpg",
    ] {
        let resp = http(h, "GET", bad, &[], b"");
        assert_eq!(resp.status, 404, "{bad}: {}", resp.status);
        assert!(!String::from_utf8_lossy(&resp.body).contains("channels"));
    }
    let (status, _) = server.get("/api/recordings?channel=x");
    assert_eq!(status, 400);
    // DELETE needs the channel's key: none, a wrong one, another channel's are refused.
    for auth in [
        None,
        Some("Bearer 77-wrong".to_owned()),
        Some(format!("Bearer {}", server.key(88))),
    ] {
        let mut hdrs = Vec::new();
        if let Some(a) = &auth {
            hdrs.push(("Authorization", a.as_str()));
        }
        let resp = http(h, "DELETE", &url, &hdrs, b"");
        assert_eq!(resp.status, 401, "{auth:?}");
    }
    assert!(path.exists());
    let auth = format!("Bearer {}", server.key(77));
    let resp = http(h, "DELETE", &url, &[("Authorization", &auth)], b"");
    assert_eq!(resp.status, 200);
    assert!(!path.exists());
    assert!(!poster_path.exists(), "the poster goes with its recording");
    assert!(recordings(&server, "").is_empty());
    let again = http(h, "DELETE", &url, &[("Authorization", &auth)], b"");
    assert_eq!(again.status, 404);
}

#[test]
fn a_whip_stream_is_recorded_and_a_replacement_starts_a_new_file() {
    let server = TestServer::start_with(|a| a.record = true);
    // FTL first, then a WHIP publisher takes the channel over: two streams, two files.
    let ftl = server.stream(77, VIDEO_A, Some(Duration::from_secs(20)));
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    std::thread::sleep(Duration::from_secs(3));
    let publisher = server.publish(77, VIDEO_A, Some(Duration::from_secs(5)));
    assert!(server.wait_for(Duration::from_secs(10), |s| {
        stream_info(s, 77).is_some_and(|i| i["protocol"] == "whip")
    }));
    // The FTL client was told its stream was replaced.
    let _ = ftl.stop();
    publisher.join().unwrap();
    let list = finished(&server, 2);
    assert_eq!(list.len(), 2, "{list:?}");
    for r in &list {
        let path = file_of(&server, r);
        let probe = ffprobe(&path);
        assert_eq!(stream_info_of(&probe, "video")["codec_name"], "h264");
        assert_eq!(stream_info_of(&probe, "audio")["codec_name"], "opus");
        let frames = decoded_frames(&path);
        eprintln!("{}: {frames} frames, {} s", r["file"], r["duration_s"]);
        assert!(frames > 60, "{frames} frames in {}", r["file"]);
    }
    // The WHIP file (newest) holds the publisher's 5 s, from a keyframe, bit-exact.
    let whip = file_of(&server, &list[0]);
    let nals = recorded_nals(&whip);
    let fixture = fixture_nals(VIDEO_A);
    let looped: Vec<Vec<u8>> = fixture.iter().cycle().take(nals.len()).cloned().collect();
    assert!(
        nals == looped,
        "the WHIP recording differs from the fixture"
    );
    let d = list[0]["duration_s"].as_f64().unwrap();
    assert!((d - 5.0).abs() < 0.2, "{d} s for a 5 s publisher");
}

#[test]
fn a_disk_that_stalls_loses_recording_gops_and_the_viewer_loses_nothing() {
    // Every fragment write takes 1.5 s, and only 48 KiB may wait: about every other GOP of
    // the fixture's 1 s GOPs has to go.
    let server = TestServer::start_with(|a| {
        a.record = true;
        a.record_write_delay_ms = 1500;
        a.record_queue_kb = 48;
    });
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(10)));
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    viewer.drive(Duration::from_secs(15), |_| streamer.is_finished());
    viewer.drive(Duration::from_millis(300), |_| false);
    streamer.join().unwrap();
    // The live viewer got every packet from its first keyframe on.
    assert_eq!(viewer.video_lost(), 0);
    assert!(viewer.video_count > 500, "{}", viewer.video_count);
    let f = fixture_nals(VIDEO_A);
    let looped = [f.clone(), f.clone(), f.clone(), f].concat();
    assert_run_from_keyframe(&viewer.nal_units(), &looped);
    let dropped = server.metric("itg_recording_dropped_gops_total");
    assert!(dropped >= 2.0, "{dropped} GOPs dropped");
    // What was written plays: whole GOPs only, with gaps where the dropped ones were.
    let r = finished(&server, 1).remove(0);
    let frames = decoded_frames(&file_of(&server, &r));
    eprintln!("stalled disk: {dropped} GOPs dropped, {frames} frames recorded");
    // Whole GOPs of 30 frames went: at most what was streamed (~300 frames) less them.
    assert!(frames >= 60, "{frames}");
    assert!(
        frames as f64 <= 301.0 - 30.0 * dropped,
        "{frames} frames with {dropped} GOPs dropped"
    );
}

/// A small tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount (util-linux)");
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Every read of the recordings' disk takes 2 s (a stalled or network disk): listings and
/// downloads are slow, and those not answered by the HTTP deadline (10 s) are told `503`,
/// while the live viewer's packets never wait on them (no gap over 250 ms, nothing lost).
#[test]
fn a_listing_on_a_stalled_disk_does_not_stall_a_live_viewer() {
    let server = TestServer::start_with(|a| {
        a.record = true;
        a.record_read_delay_ms = 2000;
    });
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(10)));
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    viewer.drive(Duration::from_secs(2), |v| v.video_count > 30);
    // Listings and a download from other threads, all at once.
    let http_addr = server.addrs.http;
    let askers: Vec<std::thread::JoinHandle<(u16, Duration)>> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let t = Instant::now();
                let path = if i == 0 {
                    "/recordings/77/20261206T000000Z.mp4".to_owned()
                } else {
                    "/api/recordings".to_owned()
                };
                let status = server_mio::client::http::request(http_addr, "GET", &path, &[], b"")
                    .map_or(0, |r| r.status);
                (status, t.elapsed())
            })
        })
        .collect();
    // Meanwhile the viewer's packets keep coming: the longest silence is measured.
    let mut longest = Duration::ZERO;
    let mut last = Instant::now();
    let mut count = viewer.video_count;
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        viewer.drive(Duration::from_millis(5), |_| false);
        if viewer.video_count > count {
            count = viewer.video_count;
            last = Instant::now();
        }
        longest = longest.max(last.elapsed());
    }
    let answers: Vec<(u16, Duration)> = askers.into_iter().map(|t| t.join().unwrap()).collect();
    streamer.stop().unwrap();
    eprintln!("stalled reads: answers {answers:?}; the viewer's longest silence {longest:?}");
    assert!(
        answers
            .iter()
            .all(|(s, took)| [200, 404, 503].contains(s) && *took >= Duration::from_secs(2)),
        "{answers:?}"
    );
    assert!(answers.iter().any(|(s, _)| *s == 503), "{answers:?}");
    assert!(
        longest < Duration::from_millis(250),
        "the viewer waited {longest:?}"
    );
    assert_eq!(viewer.video_lost(), 0);
}

#[test]
fn a_full_disk_ends_the_recording_and_nothing_else() {
    // The recordings folder is a 64 KiB disk (the recording of 8 s needs ~200 KB).
    let data_dir = scratch_path("itg-full-disk");
    let mount = Tmpfs::mount(&data_dir.join("recordings"), "64k");
    let server = TestServer::start_in(&data_dir, |a| a.record = true);
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(8)));
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    let mut viewer = TestViewer::whep(&server, 77).unwrap();
    viewer.drive(Duration::from_secs(12), |_| streamer.is_finished());
    streamer.join().unwrap();
    assert!(server.wait_for(Duration::from_secs(5), |s| {
        s.metric("itg_recording_errors_total") == 1.0
    }));
    // The stream and its viewer went on to the end.
    assert_eq!(viewer.video_lost(), 0);
    assert!(viewer.video_count > 400, "{}", viewer.video_count);
    // What fit is a playable file up to its last whole fragment.
    let r = finished(&server, 1).remove(0);
    assert!(r["size"].as_u64().unwrap() <= 64 * 1024);
    let frames = decoded_frames(&file_of(&server, &r));
    eprintln!("full disk: {frames} frames recorded in {} bytes", r["size"]);
    assert!(frames >= 30, "{frames}");
    // The server still serves.
    assert_eq!(server.get("/api/streams").0, 200);
    drop(server);
    drop(mount);
}

#[test]
fn retention_deletes_the_oldest_first_and_never_a_file_being_written() {
    let data_dir = scratch_path("itg-retention");
    let dir = data_dir.join("recordings/77");
    std::fs::create_dir_all(&dir).unwrap();
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    for (name, age) in [
        ("20200101T000000Z.mp4", 10 * day),
        ("20260101T000000Z.mp4", Duration::from_secs(7200)),
        ("20260102T000000Z.mp4", Duration::ZERO),
    ] {
        let f = std::fs::File::create(dir.join(name)).unwrap();
        f.set_len(5000).unwrap();
        f.set_modified(now - age).unwrap();
    }
    // Not a recording: never touched.
    std::fs::write(dir.join("notes.txt"), b"keep").unwrap();
    let mut keys = server_mio::keys::KeyStore::open(&data_dir).unwrap();
    keys.add(Some(77), None).unwrap();
    keys.add(Some(88), None).unwrap();
    let server = TestServer::start_in(&data_dir, |a| {
        a.record = true;
        a.record_max_days = Some(1.0);
        a.record_max_gb = Some(8000.0 / 1e9);
    });
    // At start: the 10-day-old file goes by age, then the older of the two left by size.
    assert!(server.wait_for(Duration::from_secs(5), |_| {
        !dir.join("20200101T000000Z.mp4").exists() && !dir.join("20260101T000000Z.mp4").exists()
    }));
    assert!(dir.join("20260102T000000Z.mp4").exists());
    // Channel 88 records on while 77's short stream ends: its end runs retention, which
    // deletes everything finished (over 8 kB) and not 88's file, being written.
    let long = server.stream(88, VIDEO_B, Some(Duration::from_secs(12)));
    assert!(server.wait_for(Duration::from_secs(10), |s| stream_info(s, 88).is_some()));
    server
        .stream(77, VIDEO_A, Some(Duration::from_secs(4)))
        .join()
        .unwrap();
    let writing = || {
        let list = recordings(&server, "?channel=88");
        list.iter()
            .find(|r| r["recording"] == true)
            .map(|r| (file_of(&server, r), r["size"].as_u64().unwrap()))
    };
    assert!(server.wait_for(Duration::from_secs(5), |_| {
        !dir.join("20260102T000000Z.mp4").exists() && recordings(&server, "?channel=77").is_empty()
    }));
    let (open, size) = writing().expect("88's recording is listed as being written");
    assert!(open.exists() && size > 8000, "{size}");
    assert!(dir.join("notes.txt").exists());
    assert!(server.metric("itg_recordings_deleted_total") >= 4.0);
    let _ = long.stop();
}

#[test]
fn a_server_killed_mid_stream_leaves_a_file_that_plays_to_its_last_fragment() {
    let data_dir = scratch_path("itg-kill");
    let key = server_mio::keys::KeyStore::open(&data_dir)
        .unwrap()
        .add(Some(77), None)
        .unwrap()
        .obs_key();
    let mut child = Command::new(env!("CARGO_BIN_EXE_server-mio"))
        .args([
            "--addr",
            "127.0.0.1",
            "--ftl-port",
            "18484",
            "--http-port",
            "18480",
            "--webrtc-port",
            "0",
            "--media-ports",
            "19480-19490",
            "--record",
            "--data-dir",
        ])
        .arg(&data_dir)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http_addr: std::net::SocketAddr = "127.0.0.1:18480".parse().unwrap();
    let up = (0..250).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        try_http(http_addr, "GET", "/api/streams", &[], b"").is_ok()
    });
    assert!(up, "the server did not start");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let opts = server_mio::tools::client::ClientOptions {
        server: "127.0.0.1:18484".into(),
        stream_key: key,
        video: Some(VIDEO_A.to_vec()),
        audio: Some(AUDIO.to_vec()),
        fps: 30,
        repeat: true,
        duration: Some(Duration::from_secs(20)),
        speed: 1.0,
        drop_every: None,
        speed_test: false,
        sent_log: None,
        peak_kbps: None,
        pace_burst_ms: server_mio::tools::client::PACE_BURST_MS,
        deaf_to_end: false,
        frame_log: None,
    };
    let client = std::thread::spawn(move || server_mio::tools::client::stream(&opts, &s));
    std::thread::sleep(Duration::from_millis(5500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = client.join();
    let dir = data_dir.join("recordings/77");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mp4"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].with_extension("jpg").exists(), "its poster");
    let probe = ffprobe(&files[0]);
    assert_eq!(stream_info_of(&probe, "video")["codec_name"], "h264");
    // Killed 5.5 s in, with a fragment per 1 s GOP: 4 or 5 whole GOPs are in the file.
    let frames = decoded_frames(&files[0]);
    let duration = server_mio::record::index::duration(&files[0]).unwrap();
    eprintln!("killed after 5.5 s: {frames} frames, {duration:.3} s in the file");
    assert!((120..=150).contains(&frames), "{frames} frames");
    assert_eq!(frames % 30, 0, "whole fragments (GOPs of 30 frames) only");
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn a_channel_setting_overrides_the_flag_and_takes_effect_on_a_live_stream() {
    // --record is off; channel 77 says on, 88 says nothing.
    let data_dir = scratch_path("itg-record-setting");
    let mut store = server_mio::keys::KeyStore::open(&data_dir).unwrap();
    store.add(Some(77), None).unwrap();
    store.add(Some(88), None).unwrap();
    store.set_record(77, Some(true)).unwrap();
    let server = TestServer::start_in(&data_dir, |_| {});
    let a = server.stream(77, VIDEO_A, Some(Duration::from_secs(12)));
    let b = server.stream(88, VIDEO_B, Some(Duration::from_secs(12)));
    assert!(server.wait_for(Duration::from_secs(10), |s| {
        stream_info(s, 77).is_some() && stream_info(s, 88).is_some()
    }));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(recordings(&server, "?channel=77").len(), 1);
    assert!(recordings(&server, "?channel=88").is_empty());
    assert_eq!(stream_info(&server, 77).unwrap()["recording"], true);
    assert_eq!(stream_info(&server, 88).unwrap()["recording"], false);
    // Switched while live: 88 starts recording now, 77 stops now (its file is finished).
    let mut store = server_mio::keys::KeyStore::open(&data_dir).unwrap();
    store.set_record(88, Some(true)).unwrap();
    store.set_record(77, Some(false)).unwrap();
    assert!(server.wait_for(Duration::from_secs(5), |s| {
        let r77 = recordings(s, "?channel=77");
        let r88 = recordings(s, "?channel=88");
        r77.len() == 1 && r77[0]["recording"] == false && r88.len() == 1
    }));
    a.join().unwrap();
    b.join().unwrap();
    let r88 = finished_of(&server, 88);
    let d = r88["duration_s"].as_f64().unwrap();
    assert!(
        d > 3.0 && d < 10.0,
        "{d} s: 88 was recorded from the switch on"
    );
    let frames = decoded_frames(&file_of(&server, &r88));
    assert!(frames > 90, "{frames}");
    let r77 = recordings(&server, "?channel=77");
    assert_eq!(r77.len(), 1);
    assert!(r77[0]["duration_s"].as_f64().unwrap() < 6.0);
    // The API lists both channels without a filter.
    assert_eq!(recordings(&server, "").len(), 2);
}

fn finished_of(server: &TestServer, channel: u32) -> Value {
    let mut list = Vec::new();
    assert!(server.wait_for(Duration::from_secs(10), |s| {
        list = recordings(s, &format!("?channel={channel}"));
        list.len() == 1 && list[0]["recording"] == false
    }));
    list.remove(0)
}
