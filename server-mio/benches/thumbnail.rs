//! What one thumbnail costs: a 1280x720 and a 1920x1080 H.264 keyframe (x264 as OBS sets it:
//! veryfast, CBR with a half-second buffer, a camera-like grainy picture, 3 and 6 Mbit/s) decoded, scaled to 640 wide and
//! written as JPEG, as the thumbnail thread does; CPU time of the thread per stage (medians of
//! many runs), and the same picture made by ffmpeg (one process per picture, its CPU counted
//! through the children's usage) as a peer. Ends with the share of one core that 20 live
//! streams take at the default interval. Needs `ffmpeg` (to make the keyframes).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ftl_proto::media::packetize::split_annexb;
use nix::sys::resource::{getrusage, UsageWho};
use nix::time::{clock_gettime, ClockId};
use relay_core::VideoCodec;
use server_mio::thumbnail::picture;

const RUNS: usize = 40;
const PEER_RUNS: usize = 12;
const STREAMS: f64 = 20.0;
const INTERVAL_S: f64 = 10.0;

fn cpu() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

fn children_cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(u.user_time()) + tv(u.system_time())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The last keyframe of a 3 s encode (rate control settled), as NAL units and as a file.
fn keyframe(dir: &Path, w: u32, h: u32, kbps: u32) -> (Vec<Vec<u8>>, std::path::PathBuf) {
    let all = dir.join(format!("{w}x{h}.h264"));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc2=size={w}x{h}:rate=30,noise=alls=10:allf=t"
        ))
        .args([
            "-t", "3", "-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-g", "30",
        ])
        .args(["-sc_threshold", "0", "-b:v", &format!("{kbps}k")])
        .args([
            "-maxrate",
            &format!("{kbps}k"),
            "-bufsize",
            &format!("{}k", kbps / 2),
        ])
        .args(["-pix_fmt", "yuv420p", "-f", "h264"])
        .arg(&all)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let data = std::fs::read(&all).unwrap();
    let nals: Vec<&[u8]> = split_annexb(&data);
    let last_sps = nals.iter().rposition(|n| n[0] & 0x1f == 7).unwrap();
    let unit: Vec<Vec<u8>> = nals[last_sps..]
        .iter()
        .take_while(|n| n[0] & 0x1f != 1)
        .map(|n| n.to_vec())
        .collect();
    let file = dir.join(format!("{w}x{h}-keyframe.h264"));
    let mut annexb = Vec::new();
    for n in &unit {
        annexb.extend_from_slice(&[0, 0, 0, 1]);
        annexb.extend_from_slice(n);
    }
    std::fs::write(&file, annexb).unwrap();
    (unit, file)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("thumbnail: bench");
        return;
    }
    let dir = std::env::temp_dir().join(format!("itg-thumbnail-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!("| picture | keyframe KB | decode ms | scale ms | JPEG ms | total CPU ms | wall ms | JPEG KB | ffmpeg CPU ms | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut per_1080 = Duration::ZERO;
    for (w, h, kbps) in [(1280, 720, 3000), (1920, 1080, 6000)] {
        let (unit, file) = keyframe(&dir, w, h, kbps);
        let bytes: usize = unit.iter().map(|n| n.len() + 4).sum();
        let (mut dec, mut sc, mut enc, mut total, mut wall) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut jpeg_len = 0;
        for _ in 0..RUNS {
            let (w0, c0) = (Instant::now(), cpu());
            let full = picture::decode(VideoCodec::H264, &unit).unwrap();
            let c1 = cpu();
            let small = picture::scale(full, 640);
            let c2 = cpu();
            let jpeg = picture::encode(&small).unwrap();
            let c3 = cpu();
            wall.push(w0.elapsed());
            jpeg_len = jpeg.len();
            dec.push(c1 - c0);
            sc.push(c2 - c1);
            enc.push(c3 - c2);
            total.push(c3 - c0);
        }
        // The peer: ffmpeg makes the same picture from the same keyframe.
        let out = dir.join("peer.jpg");
        let mut peer = Vec::new();
        for _ in 0..PEER_RUNS {
            let before = children_cpu();
            let ok = Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-threads", "1", "-i"])
                .arg(&file)
                .args(["-vf", "scale=640:-2", "-frames:v", "1", "-q:v", "4"])
                .arg(&out)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            peer.push(children_cpu() - before);
        }
        let ours = median(total.clone());
        let theirs = median(peer);
        if h == 1080 {
            per_1080 = ours;
        }
        println!(
            "| {w}x{h} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2}x |",
            bytes as f64 / 1024.0,
            ms(median(dec)),
            ms(median(sc)),
            ms(median(enc)),
            ms(ours),
            ms(median(wall)),
            jpeg_len as f64 / 1024.0,
            ms(theirs),
            theirs.as_secs_f64() / ours.as_secs_f64(),
        );
    }
    let share = STREAMS * per_1080.as_secs_f64() / INTERVAL_S;
    println!(
        "{STREAMS} streams at 1080p, one thumbnail each every {INTERVAL_S} s: {:.2} % of one core",
        share * 100.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
