//! `itg-load`: a sender and N receive-only WebRTC viewers in one process, against ITG (FTL or
//! WHIP in, WHEP out) or Janus (plain RTP in, Janus HTTP API out). Sender and viewers share one
//! clock, so each received payload's latency is measured from the moment the sender sent that
//! payload (matched by content, whatever the server rewrites). With `--server-pid`, the
//! server's CPU time is read over exactly the window the delivered rate is measured in. Prints a
//! summary, and one machine-readable `RESULT` line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use server_mio::tools::client::{rtp_sender, stream, ClientOptions, SentLog, PACE_BURST_MS};
use server_mio::tools::probe::Viewer;
use server_mio::tools::whip_client::{publish, WhipOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Itg,
    Janus,
}

/// How the sender reaches ITG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Ingest {
    /// FTL to `--ftl` (the in-process FTL client).
    Ftl,
    /// WHIP to `--http` (the in-process WHIP client: str0m, DTLS-SRTP).
    Whip,
    /// No sender: the viewers watch `--channel`, which someone else streams (the soak).
    None,
}

/// Load generator for ITG and, for comparison, Janus.
#[derive(Debug, Parser)]
#[command(name = "itg-load", version)]
struct Args {
    #[arg(long, value_enum, default_value = "itg")]
    target: Target,
    /// ITG: the server's HTTP address; Janus: the Janus HTTP API address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// ITG: the FTL address the sender streams to.
    #[arg(long, default_value = "127.0.0.1:8084")]
    ftl: String,
    /// ITG: the OBS stream key (`<channel>-<secret>`); the channel is watched.
    #[arg(long)]
    key: Option<String>,
    /// ITG: the channel to watch when it is not the key's (`--ingest none`).
    #[arg(long)]
    channel: Option<u32>,
    /// ITG: stream over FTL or WHIP (same media either way).
    #[arg(long, value_enum, default_value = "ftl")]
    ingest: Ingest,
    /// The server's process id: its CPU seconds over the measurement window are reported.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Janus: the API base path.
    #[arg(long, default_value = "/janus")]
    janus_base: String,
    /// Janus: the streaming mountpoint id.
    #[arg(long, default_value_t = 1)]
    mountpoint: u64,
    /// Janus: where the mountpoint takes video and audio RTP.
    #[arg(long, default_value = "127.0.0.1:15004")]
    rtp_video: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:15002")]
    rtp_audio: SocketAddr,
    /// H.264 Annex-B and Ogg Opus files to send (default: the test fixtures).
    #[arg(long)]
    video: Option<std::path::PathBuf>,
    #[arg(long)]
    audio: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 50)]
    viewers: usize,
    /// Every n-th viewer decrypts all it receives and measures latency; the others count
    /// media from the clear RTP header once their first keyframe arrived (packets, bytes,
    /// sequence gaps), so the generator keeps up with the server. 1: every viewer decrypts.
    #[arg(long, default_value_t = 10)]
    full_every: usize,
    /// Pace the sender's video at this peak as the FTL library does (Janus's RTP input too);
    /// 0 sends each frame's packets at once. Default: 1.2x the file's average, as OBS sets it.
    #[arg(long)]
    peak_kbps: Option<u32>,
    /// How far the paced sender may run ahead of its peak, in milliseconds of it: 100 as the
    /// FTL library (a keyframe leaves as a burst of ~30 packets); less stands for a smoother
    /// encoder, showing the server's own latency apart from the input's bursts.
    #[arg(long, default_value_t = PACE_BURST_MS)]
    burst_ms: u64,
    /// Joins per second.
    #[arg(long, default_value_t = 50.0)]
    join_rate: f64,
    /// Seconds of measurement after the last join.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
}

const FIXTURE_VIDEO: &[u8] =
    include_bytes!("../../../relay-core/tests/data/video-320x180-30fps-4s.h264");
const FIXTURE_AUDIO: &[u8] = include_bytes!("../../../relay-core/tests/data/audio-opus-48k-4s.ogg");

/// User plus system CPU seconds of a process, from `/proc/<pid>/stat` (in USER_HZ, which
/// Linux fixes at 100 for this file).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are fixed.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Context switches of a process so far, summed over its threads (voluntary and not): its
/// wake-ups, give or take. A multi-threaded server (Janus) sleeps in its main thread.
fn context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for t in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue; // a thread that just ended
        };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Some(total)
}

/// What is measured at the start and end of the window: the server's CPU seconds and context
/// switches, and this generator's own CPU seconds.
#[derive(Clone, Copy)]
struct Meters {
    server_cpu: Option<f64>,
    server_switches: Option<u64>,
    own_cpu: Option<f64>,
}

/// ITG's drop counters for the watched channel (`/api/streams`): late skips, skips after a
/// refused send, packets skipped. `None` for Janus or when the stream is not listed.
fn drops(target: Target, http: SocketAddr, channel: u32) -> Option<[u64; 3]> {
    if target != Target::Itg {
        return None;
    }
    let r = server_mio::client::http::request(http, "GET", "/api/streams", &[], b"").ok()?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    let s = v["streams"]
        .as_array()?
        .iter()
        .find(|s| s["channel"].as_u64() == Some(u64::from(channel)))?;
    // A server without these counters (an older build) has no figures to give.
    s.get("viewer_skips_late")?;
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    Some([
        n("viewer_skips_late"),
        n("viewer_skips_send_failed"),
        n("viewer_skipped_packets"),
    ])
}

fn meters(server: Option<u32>) -> Meters {
    Meters {
        server_cpu: server.and_then(cpu_seconds),
        server_switches: server.and_then(context_switches),
        own_cpu: cpu_seconds(std::process::id()),
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[(((v.len() - 1) as f64) * p).round() as usize]
}

fn main() {
    let args = Args::parse();
    let read = |p: &Option<std::path::PathBuf>, d: &[u8]| {
        p.as_ref()
            .map_or_else(|| d.to_vec(), |p| std::fs::read(p).expect("media file"))
    };
    let log: SentLog = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let opts = ClientOptions {
        server: args.ftl.clone(),
        stream_key: args.key.clone().unwrap_or_default(),
        video: Some(read(&args.video, FIXTURE_VIDEO)),
        audio: Some(read(&args.audio, FIXTURE_AUDIO)),
        fps: 30,
        repeat: true,
        duration: None,
        speed: 1.0,
        drop_every: None,
        speed_test: false,
        sent_log: Some(log.clone()),
        peak_kbps: None,
        pace_burst_ms: args.burst_ms,
        deaf_to_end: false,
        frame_log: None,
    }
    .paced_at(args.peak_kbps);
    let opts_peak = opts.peak_kbps;
    let channel: u32 = args.channel.unwrap_or_else(|| {
        args.key
            .as_deref()
            .and_then(|k| k.split(['-', '_', ',']).next()?.parse().ok())
            .unwrap_or(0)
    });
    let s = stop.clone();
    let (v_addr, a_addr, target) = (args.rtp_video, args.rtp_audio, args.target);
    let whip = WhipOptions {
        url: format!("http://{}/whip/{channel}", args.http),
        token: opts.stream_key.clone(),
        video: opts.video.clone(),
        audio: opts.audio.clone(),
        fps: opts.fps,
        repeat: true,
        duration: None,
        sent_log: Some(log.clone()),
        vanish: false,
        tcp: false,
        simulcast: Vec::new(),
        ssrc_simulcast: false,
        upper_layers_after: None,
        video_after: None,
    };
    let ingest = args.ingest;
    let sender = std::thread::spawn(move || match (target, ingest) {
        (Target::Itg, Ingest::Ftl) => stream(&opts, &s)
            .map(|st| st.video_packets + st.audio_packets)
            .map_err(|e| e.to_string()),
        (Target::Itg, Ingest::Whip) => publish(&whip, &s)
            .map(|st| st.video_packets + st.audio_packets)
            .map_err(|e| e.to_string()),
        (Target::Itg, Ingest::None) => {
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(0)
        }
        (Target::Janus, _) => rtp_sender(&opts, v_addr, a_addr, &s).map_err(|e| e.to_string()),
    });
    std::thread::sleep(Duration::from_millis(1500));

    let start = Instant::now();
    let mut viewers: Vec<Viewer> = Vec::new();
    let mut failed = 0;
    let gap = Duration::from_secs_f64(1.0 / args.join_rate.max(0.01));
    let mut next_join = start;
    let mut all_joined: Option<Instant> = None;
    // Start of the measurement: when, bytes delivered so far, the meters.
    let mut window: Option<(Instant, u64, Meters)> = None;
    let mut drops_start: Option<std::thread::JoinHandle<Option<[u64; 3]>>> = None;
    loop {
        let now = Instant::now();
        if viewers.len() + failed < args.viewers && now >= next_join {
            let joined = match args.target {
                Target::Itg => Viewer::whep(args.http, channel),
                Target::Janus => Viewer::janus(args.http, &args.janus_base, args.mountpoint),
            };
            match joined {
                Ok(mut v) => {
                    v.keep_packets = false;
                    if viewers.len() % args.full_every.max(1) == 0 {
                        v.sent_log = Some(log.clone());
                    } else {
                        v.light = true;
                    }
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
            if window.is_none() && now >= t + Duration::from_secs(2) {
                for v in &mut viewers {
                    v.latency_us.clear();
                }
                let m = meters(args.server_pid);
                window = Some((now, viewers.iter().map(|v| v.bytes).sum(), m));
                // On a thread of its own: an overloaded server may take seconds to answer,
                // and the viewers must be read meanwhile.
                let (target, http) = (args.target, args.http);
                drops_start = Some(std::thread::spawn(move || drops(target, http, channel)));
            }
            if now >= t + Duration::from_secs(2) + Duration::from_secs_f64(args.duration) {
                break;
            }
        }
        let mut busy = false;
        for v in &mut viewers {
            busy |= v.step().unwrap_or(false);
        }
        if !busy {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    // The window ends here, before the sender and viewers are torn down.
    let end = meters(args.server_pid);
    let window_end = Instant::now();
    let delivered_end: u64 = viewers.iter().map(|v| v.bytes).sum();
    // After the window: the answer may take a while from an overloaded server.
    let drops_end = drops(args.target, args.http, channel);
    stop.store(true, Ordering::SeqCst);
    let sent = sender.join().ok().and_then(Result::ok).unwrap_or(0);
    // Leave cleanly, so the next run does not pay for viewers that are gone.
    for v in &viewers {
        v.leave(args.http);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut first_key: Vec<f64> = viewers
        .iter()
        .filter_map(|v| v.first_keyframe.map(|t| ms(t - v.created)))
        .collect();
    let mut latency: Vec<f64> = viewers
        .iter()
        .flat_map(|v| v.latency_us.iter().map(|u| f64::from(*u) / 1000.0))
        .collect();
    let connected = viewers.iter().filter(|v| v.connected.is_some()).count();
    let lost: u64 = viewers.iter().map(Viewer::video_lost).sum();
    let video: u64 = viewers.iter().map(|v| v.video_count).sum();
    let loss_pct = if video + lost > 0 {
        lost as f64 * 100.0 / (video + lost) as f64
    } else {
        0.0
    };
    let nan = f64::NAN;
    let (mbps, secs, server_cpu, wakeups, own_cpu) =
        window.map_or((0.0, 0.0, nan, nan, nan), |(t, b0, m0)| {
            let secs = window_end.duration_since(t).as_secs_f64();
            let diff = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => b - a,
                _ => nan,
            };
            let switches = match (m0.server_switches, end.server_switches) {
                (Some(a), Some(b)) => b.saturating_sub(a) as f64 / secs,
                _ => nan,
            };
            (
                delivered_end.saturating_sub(b0) as f64 * 8.0 / secs / 1e6,
                secs,
                diff(m0.server_cpu, end.server_cpu),
                switches,
                diff(m0.own_cpu, end.own_cpu),
            )
        });
    // A generator that used most of a core may have been the limit, not the server.
    let own_pct = own_cpu * 100.0 / secs;
    let generator_limited = own_pct >= 90.0;
    let (l50, l99) = (
        percentile(&mut latency.clone(), 0.5),
        percentile(&mut latency, 0.99),
    );
    let (k50, k99) = (
        percentile(&mut first_key.clone(), 0.5),
        percentile(&mut first_key, 0.99),
    );
    println!(
        "target {:?}: {} viewers joined, {} connected, {} failed; sender sent {sent} packets",
        args.target,
        viewers.len(),
        connected,
        failed
    );
    match opts_peak {
        Some(k) => println!(
            "sender video paced at a {k} kbit/s peak, bursts of at most {} ms",
            args.burst_ms
        ),
        None => println!("sender video not paced: each frame's packets at once"),
    }
    println!("delivered payload {mbps:.2} Mbit/s over {secs:.1} s; video loss {loss_pct:.3}%");
    if server_cpu.is_finite() {
        println!(
            "server CPU {:.1}% of a core over the same {secs:.1} s: {:.2} CPU-s per delivered Gbit",
            server_cpu * 100.0 / secs,
            server_cpu / (mbps * secs / 1000.0)
        );
    }
    println!("latency send->receive p50 {l50:.2} ms, p99 {l99:.2} ms; join->first keyframe p50 {k50:.0} ms, p99 {k99:.0} ms");
    if wakeups.is_finite() {
        println!("server context switches (wake-ups): {wakeups:.0} per second");
    }
    println!("this generator used {own_pct:.0}% of a core over the window");
    if generator_limited {
        println!("WARNING: the generator was near a full core; these figures may measure it, not the server");
    }
    // Drops in the window, by reason (ITG): what could not be sent in time was skipped, so
    // the sequence numbers stay gap-free and `loss` does not show it.
    let drops_start = drops_start.and_then(|h| h.join().ok()).flatten();
    let dropped = match (drops_start, drops_end) {
        (Some([a0, a1, a2]), Some([b0, b1, b2])) => {
            let (late, send, skipped) = (
                b0.saturating_sub(a0),
                b1.saturating_sub(a1),
                b2.saturating_sub(a2),
            );
            println!(
                "drops in the window: {late} late skips, {send} skips after a refused send, {skipped} packets skipped"
            );
            format!(" skips_late={late} skips_send={send} skipped_packets={skipped}")
        }
        _ => String::new(),
    };
    println!(
        "RESULT viewers={} connected={connected} mbps={mbps:.3} secs={secs:.2} server_cpu_s={server_cpu:.3} loss_pct={loss_pct:.4} lat_p50_ms={l50:.3} lat_p99_ms={l99:.3} key_p50_ms={k50:.1} key_p99_ms={k99:.1} wakeups_per_s={wakeups:.1} load_cpu_pct={own_pct:.1} generator_limited={}{dropped}",
        viewers.len(),
        u8::from(generator_limited)
    );
}
