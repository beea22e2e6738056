//! `ftl-client`: stream H.264 and Opus files to an FTL server, as OBS would.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Parser;
use server_mio::client::{stream, ClientOptions};

/// Streams an H.264 Annex-B file and an Opus (Ogg) file to an FTL server with real-time pacing.
#[derive(Debug, Parser)]
#[command(name = "ftl-client", version)]
struct Args {
    /// The server's FTL address.
    #[arg(long, default_value = "127.0.0.1:8084")]
    server: String,
    /// The OBS stream key, `<channel>-<secret>`.
    #[arg(long, env = "ITG_STREAM_KEY")]
    key: String,
    /// H.264 Annex-B file (`ffmpeg ... -c:v libx264 -bsf:v h264_mp4toannexb -f h264`).
    #[arg(long)]
    video: Option<PathBuf>,
    /// Opus in Ogg (`ffmpeg ... -c:a libopus -frame_duration 20`).
    #[arg(long)]
    audio: Option<PathBuf>,
    /// Frame rate of the video file.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Start over at the end of the files.
    #[arg(long = "loop")]
    repeat: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Pacing factor (1 = real time).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Loss simulation: skip every n-th media packet (resent when the server NACKs it).
    #[arg(long)]
    drop_every: Option<u32>,
    /// Begin with OBS's one-second bandwidth test (junk on the audio SSRC).
    #[arg(long)]
    speed_test: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let (video, audio) =
        match server_mio::client::read_media_files(args.video.as_deref(), args.audio.as_deref()) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("ftl-client: {e}");
                return ExitCode::FAILURE;
            }
        };
    let opts = ClientOptions {
        server: args.server,
        stream_key: args.key,
        video,
        audio,
        fps: args.fps,
        repeat: args.repeat,
        duration: args.duration.map(Duration::from_secs_f64),
        speed: args.speed,
        drop_every: args.drop_every,
        speed_test: args.speed_test,
        sent_log: None,
    };
    // SIGINT/SIGTERM end the stream politely (DISCONNECT), as closing OBS's stream does.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("ftl-client: cannot handle signal {sig}: {e}");
        }
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
