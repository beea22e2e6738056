//! `itg-watch`: watch a channel from a terminal and report, every interval, what a viewer got:
//! video and audio packets, packets lost and never repaired, and freezes (stretches without
//! video). The soak's healthy viewer; also a quick check of a server.

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use server_mio::tools::probe::Viewer;

/// Joins a channel over WHEP with the probe viewer (str0m) and prints one JSON line per
/// interval; exits non-zero if it could not join or lost packets for good.
#[derive(Debug, Parser)]
#[command(name = "itg-watch", version)]
struct Args {
    /// The server's HTTP address (`host:port`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    #[arg(long, default_value_t = 1)]
    channel: u32,
    /// Stop after this many seconds (0: never).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seconds between report lines.
    #[arg(long, default_value_t = 10)]
    interval: u64,
    /// A stretch without video longer than this (milliseconds) is a freeze.
    #[arg(long, default_value_t = 300)]
    freeze_ms: u64,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let Some(http) = args.http.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        eprintln!("itg-watch: {} does not resolve", args.http);
        return ExitCode::FAILURE;
    };
    let mut viewer = match Viewer::whep(http, args.channel) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("itg-watch: {e}");
            return ExitCode::FAILURE;
        }
    };
    viewer.keep_packets = false;
    let start = Instant::now();
    let freeze = Duration::from_millis(args.freeze_ms);
    let mut last_video = Instant::now();
    let mut seen = 0u64;
    let (mut freezes, mut frozen, mut longest) = (0u64, Duration::ZERO, Duration::ZERO);
    let mut in_freeze = false;
    let mut next_report = start + Duration::from_secs(args.interval.max(1));
    let mut before = (0u64, 0u64);
    loop {
        let now = Instant::now();
        if args.duration > 0 && now.duration_since(start) >= Duration::from_secs(args.duration) {
            break;
        }
        if viewer.step().is_err() {
            eprintln!("itg-watch: the session ended");
            break;
        }
        if viewer.video_count > seen {
            seen = viewer.video_count;
            last_video = now;
            in_freeze = false;
        } else if viewer.connected.is_some() && seen > 0 {
            let gap = now.duration_since(last_video);
            longest = longest.max(gap);
            if gap > freeze && !in_freeze {
                in_freeze = true;
                freezes += 1;
            }
            if in_freeze {
                frozen = gap;
            }
        }
        if now >= next_report {
            next_report += Duration::from_secs(args.interval.max(1));
            println!(
                "{}",
                serde_json::json!({
                    "t_s": start.elapsed().as_secs(),
                    "video": viewer.video_count - before.0,
                    "audio": viewer.audio_count - before.1,
                    "lost": viewer.video_lost(),
                    "freezes": freezes,
                    "longest_gap_ms": longest.as_millis() as u64,
                    "frozen_now_ms": if in_freeze { frozen.as_millis() as u64 } else { 0 },
                })
            );
            before = (viewer.video_count, viewer.audio_count);
            longest = Duration::ZERO;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let lost = viewer.video_lost();
    println!(
        "{}",
        serde_json::json!({
            "done": true,
            "video": viewer.video_count,
            "lost": lost,
            "freezes": freezes,
        })
    );
    if viewer.video_count == 0 || lost > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
