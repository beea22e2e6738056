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
use std::time::Duration;

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
