//! `itg-load`: N receive-only WebRTC viewers in one process against a running server, joined
//! over WHEP at a given rate; prints join-to-first-video times, delivered rate and loss.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use server_mio::probe::Viewer;

/// Joins N viewers to a channel over WHEP and measures what they receive.
#[derive(Debug, Parser)]
#[command(name = "itg-load", version)]
struct Args {
    /// The server's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    #[arg(long, default_value_t = 77)]
    channel: u32,
    #[arg(long, default_value_t = 50)]
    viewers: usize,
    /// Joins per second.
    #[arg(long, default_value_t = 20.0)]
    join_rate: f64,
    /// Seconds to run after the last join.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn main() {
    let args = Args::parse();
    let start = Instant::now();
    let mut viewers: Vec<Viewer> = Vec::new();
    let mut failed = 0;
    let gap = Duration::from_secs_f64(1.0 / args.join_rate.max(0.01));
    let mut next_join = start;
    let mut all_joined: Option<Instant> = None;
    let mut measure_from: Option<(Instant, u64)> = None;
    loop {
        let now = Instant::now();
        if viewers.len() + failed < args.viewers && now >= next_join {
            match Viewer::whep(args.http, args.channel) {
                Ok(mut v) => {
                    v.keep_packets = false;
                    viewers.push(v);
                }
                Err(e) => {
                    eprintln!("join failed: {e}");
                    failed += 1;
                }
            }
            next_join += gap;
        }
        if all_joined.is_none() && viewers.len() + failed >= args.viewers {
            all_joined = Some(now);
        }
        if let Some(t) = all_joined {
            if measure_from.is_none() && now >= t + Duration::from_secs(2) {
                measure_from = Some((now, viewers.iter().map(|v| v.bytes).sum()));
            }
            if now >= t + Duration::from_secs_f64(args.duration) {
                break;
            }
        }
        let mut busy = false;
        for v in &mut viewers {
            busy |= v.step().unwrap_or(false);
        }
        if !busy {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    let mut first: Vec<f64> = viewers
        .iter()
        .filter_map(|v| {
            v.first_video
                .map(|t| t.duration_since(v.created).as_secs_f64() * 1000.0)
        })
        .collect();
    let connected = viewers.iter().filter(|v| v.connected.is_some()).count();
    let packets: u64 = viewers.iter().map(|v| v.video_count + v.audio_count).sum();
    let lost: u64 = viewers.iter().map(Viewer::video_lost).sum();
    let video: u64 = viewers.iter().map(|v| v.video_count).sum();
    let mbps = measure_from.map_or(0.0, |(t, b0)| {
        let b1: u64 = viewers.iter().map(|v| v.bytes).sum();
        (b1 - b0) as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e6
    });
    println!(
        "viewers: {} joined, {} connected, {} failed",
        viewers.len(),
        connected,
        failed
    );
    println!(
        "join to first video packet: p50 {:.0} ms, p99 {:.0} ms",
        percentile(&mut first.clone(), 0.5),
        percentile(&mut first, 0.99)
    );
    println!(
        "received: {packets} packets, delivered payload {mbps:.2} Mbit/s, video loss {:.3}%",
        if video + lost > 0 {
            lost as f64 * 100.0 / (video + lost) as f64
        } else {
            0.0
        }
    );
}
