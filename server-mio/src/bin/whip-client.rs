//! `whip-client`: publish H.264 and Opus files to a WHIP endpoint with real-time pacing.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use server_mio::tools::client::MediaArgs;
use server_mio::tools::whip_client::{publish, WhipOptions};

/// Publishes an H.264 Annex-B file and an Opus (Ogg) file to a WHIP endpoint (RFC 9725), as a
/// WebRTC encoder would: real-time pacing, NACK answers over RTX, a keyframe on request.
#[derive(Debug, Parser)]
#[command(name = "whip-client", version)]
struct Args {
    /// The WHIP endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080/whip/1")]
    url: String,
    /// The Bearer token: for ITG, the OBS stream key `<channel>-<secret>`.
    #[arg(long, env = "ITG_STREAM_KEY")]
    key: String,
    /// ICE over TCP only (the server's passive TCP candidate), as behind a UDP-blocking firewall.
    #[arg(long)]
    tcp: bool,
    /// Simulcast: a video layer as `RID=FILE` (an H.264 Annex-B file), repeatable, smallest
    /// first (`--layer q=small.h264 --layer h=mid.h264 --layer f=big.h264`); replaces `--video`.
    #[arg(long = "layer", value_name = "RID=FILE")]
    layers: Vec<String>,
    /// Signal the layers as an SSRC group (`a=ssrc-group:SIM`) instead of RIDs.
    #[arg(long)]
    ssrc_simulcast: bool,
    #[command(flatten)]
    media: MediaArgs,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let (video, audio) = match args.media.read() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("whip-client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut simulcast = Vec::new();
    for l in &args.layers {
        let Some((rid, file)) = l.split_once('=').filter(|(r, _)| {
            !r.is_empty() && r.len() <= 16 && r.bytes().all(|b| b.is_ascii_alphanumeric())
        }) else {
            eprintln!("whip-client: --layer {l}: expected RID=FILE (an alphanumeric RID)");
            return ExitCode::FAILURE;
        };
        match std::fs::read(file) {
            Ok(bytes) => simulcast.push((rid.to_owned(), bytes)),
            Err(e) => {
                eprintln!("whip-client: --layer {l}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let opts = WhipOptions {
        url: args.url,
        token: args.key,
        video,
        audio,
        fps: args.media.fps,
        repeat: args.media.repeat,
        duration: args.media.duration(),
        sent_log: None,
        vanish: false,
        tcp: args.tcp,
        simulcast,
        ssrc_simulcast: args.ssrc_simulcast,
        upper_layers_after: None,
        video_after: None,
    };
    // SIGINT/SIGTERM end the session politely (DELETE).
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("whip-client: cannot handle signal {sig}: {e}");
        }
    }
    match publish(&opts, &stop) {
        Ok(s) => {
            println!(
                "published {} video and {} audio packets; {} keyframe requests ({} keyframes sent early)",
                s.video_packets, s.audio_packets, s.keyframe_requests, s.keyframes_forced
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("whip-client: {e}");
            ExitCode::FAILURE
        }
    }
}
