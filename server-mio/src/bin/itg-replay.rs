//! `itg-replay`: what is in a capture, what the relay makes of it, and re-streaming it.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ftl_proto::StreamKey;
use relay_core::RelayConfig;
use server_mio::capture::read_sessions;
use server_mio::tools::replay::{replay, restream, ReplayOptions};

/// Replays ingest sessions recorded as pcap: FTL (by `server-mio --capture` or `tcpdump -i lo`)
/// and WHIP (by `server-mio --capture`, which records the decrypted RTP).
#[derive(Debug, Parser)]
#[command(name = "itg-replay", version)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Drive each session through the protocol and relay cores on a virtual clock; print a
    /// summary (or the whole transcript).
    Summary {
        file: PathBuf,
        /// Key for the fresh handshake (any: both sides get it).
        #[arg(long, default_value = "replay")]
        key: String,
        /// Viewers join at these offsets, in milliseconds from the session's start.
        #[arg(long = "viewer-at", value_delimiter = ',')]
        viewers: Vec<u64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print every output line instead of the summary.
        #[arg(long)]
        transcript: bool,
    },
    /// Send a recorded session to a live FTL server with a fresh handshake.
    Restream {
        file: PathBuf,
        /// The server's FTL address.
        #[arg(long)]
        to: String,
        /// The OBS stream key for that server, `<channel>-<secret>`.
        #[arg(long)]
        key: String,
        /// Pacing factor: 1 keeps the recorded timing, 2 sends twice as fast.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Which session of the file (0 is the first).
        #[arg(long, default_value_t = 0)]
        session: usize,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Args::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("itg-replay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<(), Box<dyn std::error::Error>> {
    match cmd {
        Cmd::Summary {
            file,
            key,
            viewers,
            seed,
            transcript,
        } => {
            let sessions = read_sessions(&std::fs::read(&file)?)?;
            let opts = ReplayOptions {
                key: StreamKey::new(key.as_bytes()),
                seed,
                viewers: viewers.into_iter().map(Duration::from_millis).collect(),
                relay: RelayConfig::default(),
            };
            for (i, s) in sessions.iter().enumerate() {
                let out = replay(s, &opts)?;
                println!(
                    "# session {i}: {:?} -> {:?}, media port {:?}",
                    s.client, s.server, s.media_port
                );
                if transcript {
                    for l in &out.transcript {
                        println!("{l}");
                    }
                } else {
                    print!("{}", out.summary());
                }
            }
        }
        Cmd::Restream {
            file,
            to,
            key,
            speed,
            session,
        } => {
            let sessions = read_sessions(&std::fs::read(&file)?)?;
            let rec = sessions.get(session).ok_or("no such session in the file")?;
            let to = to.to_socket_addrs()?.next().ok_or("bad --to")?;
            let stats = restream(rec, to, &key, speed, &AtomicBool::new(false))?;
            println!(
                "re-streamed {} datagrams to UDP port {}; {} NACKs, {} resent",
                stats.sent, stats.media_port, stats.nacks, stats.resent
            );
        }
    }
    Ok(())
}
