//! `ftl-client`: stream H.264 and Opus files to an FTL server, as OBS would.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use server_mio::tools::client::{rtp_sender, stream, ClientOptions, MediaArgs, PACE_BURST_MS};

/// Streams an H.264 Annex-B file and an Opus (Ogg) file to an FTL server with real-time pacing.
#[derive(Debug, Parser)]
#[command(name = "ftl-client", version)]
struct Args {
    /// The server's FTL address.
    #[arg(long, default_value = "127.0.0.1:8084")]
    server: String,
    /// The OBS stream key, `<channel>-<secret>` (FTL; not with `--rtp-video`).
    #[arg(long, env = "ITG_STREAM_KEY", required_unless_present = "rtp_video")]
    key: Option<String>,
    /// Send plain RTP (video PT 96, audio PT 111) to this address instead of FTL, looping:
    /// the same media for a relay without FTL (a Janus streaming mountpoint).
    #[arg(long, requires = "rtp_audio")]
    rtp_video: Option<std::net::SocketAddr>,
    /// Where the plain RTP audio goes (with `--rtp-video`).
    #[arg(long)]
    rtp_audio: Option<std::net::SocketAddr>,
    /// Append `<frame> <unix µs>` as each video frame's last packet is first sent (the
    /// latency benchmark's wire instants).
    #[arg(long)]
    frame_log: Option<std::path::PathBuf>,
    /// How far the paced sender may run ahead of its peak, in milliseconds of it.
    #[arg(long, default_value_t = PACE_BURST_MS)]
    burst_ms: u64,
    #[command(flatten)]
    media: MediaArgs,
    /// Pacing factor (1 = real time).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Loss simulation: skip every n-th media packet (resent when the server NACKs it).
    #[arg(long)]
    drop_every: Option<u32>,
    /// Begin with OBS's one-second bandwidth test (junk on the audio SSRC).
    #[arg(long)]
    speed_test: bool,
    /// Pace video at this peak, as the FTL library does (bursts of at most 100 ms of it);
    /// 0 sends each frame's packets at once. Default: 1.2x the file's average, as OBS sets it.
    #[arg(long)]
    peak_kbps: Option<u32>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let (video, audio) = match args.media.read() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("ftl-client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = ClientOptions {
        server: args.server,
        stream_key: args.key.unwrap_or_default(),
        video,
        audio,
        fps: args.media.fps,
        repeat: args.media.repeat,
        duration: args.media.duration(),
        speed: args.speed,
        drop_every: args.drop_every,
        speed_test: args.speed_test,
        sent_log: None,
        peak_kbps: None,
        pace_burst_ms: args.burst_ms,
        deaf_to_end: false,
        frame_log: args.frame_log,
    }
    .paced_at(args.peak_kbps);
    // SIGINT/SIGTERM end the stream politely (DISCONNECT), as closing OBS's stream does.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("ftl-client: cannot handle signal {sig}: {e}");
        }
    }
    if let (Some(video), Some(audio)) = (args.rtp_video, args.rtp_audio) {
        return match rtp_sender(&opts, video, audio, &stop) {
            Ok(n) => {
                println!("sent {n} RTP packets to {video} and {audio}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ftl-client: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match stream(&opts, &stop) {
        Ok(s) => {
            println!(
                "streamed to UDP port {}: {} video, {} audio packets; {} NACKs, {} resent; {}/{} pings answered",
                s.media_port, s.video_packets, s.audio_packets, s.nacks, s.retransmitted, s.pongs, s.pings
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ftl-client: {e}");
            ExitCode::FAILURE
        }
    }
}
