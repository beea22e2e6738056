//! `server-mio`: the ITG server. Without a subcommand it serves; `keys ...` manages channels.

use std::process::ExitCode;

use clap::Parser;
use server_mio::config::{Cli, Command, KeysCommand};
use server_mio::keys::KeyStore;
use server_mio::server::Server;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        None => match Server::bind(cli.server, &cli.data_dir) {
            Ok(server) => match server.run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("server-mio: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("server-mio: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Keys(cmd)) => match keys(cmd, &cli.data_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("server-mio: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// How many key file changes the running server has taken (`None`: no server).
fn reloads(data_dir: &std::path::Path) -> Option<u64> {
    server_mio::keys::running(data_dir).map(|r| r.key_reloads)
}

/// After a change: waits (at most 3 s) until the running server has taken it, so the key works
/// (or no longer works) when the command returns.
fn wait_for_server(data_dir: &std::path::Path, before: Option<u64>) {
    let Some(before) = before else { return };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < end {
        if reloads(data_dir).is_some_and(|n| n > before) {
            eprintln!("the running server took the change");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("warning: the running server has not taken the change yet (see its log)");
}

/// The live channels and their protocols, as the server running on `data_dir` noted them.
fn live_channels(data_dir: &std::path::Path) -> Option<Vec<(u32, String)>> {
    server_mio::keys::running(data_dir).map(|r| r.live)
}

fn keys(cmd: KeysCommand, data_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut store = KeyStore::open(data_dir)?;
    let before = match cmd {
        KeysCommand::List => None,
        _ => reloads(data_dir),
    };
    match cmd {
        KeysCommand::Add {
            channel,
            name,
            record,
        } => {
            let mut c = store.add(channel, name)?;
            if let Some(r) = record {
                c = store.set_record(c.id, r.stored())?;
            }
            wait_for_server(data_dir, before);
            println!("added channel {} ({})", c.id, c.name);
            println!("{}", c.obs_key());
        }
        KeysCommand::List => {
            let live = live_channels(data_dir);
            for c in store.channels() {
                let state = match &live {
                    Some(l) => match l.iter().find(|(id, _)| *id == c.id) {
                        Some((_, protocol)) => format!("\tlive ({protocol})"),
                        None => "\toffline".to_owned(),
                    },
                    None => String::new(),
                };
                println!("{}\t{}\t{}{state}", c.id, c.name, c.obs_key());
            }
            if live.is_none() {
                eprintln!("(no server is running on this data dir: live state unknown)");
            }
        }
        KeysCommand::Rotate { channel } => {
            let c = store.rotate(channel)?;
            wait_for_server(data_dir, before);
            println!("new key for channel {}", c.id);
            println!("{}", c.obs_key());
        }
        KeysCommand::Set { channel, record } => {
            let Some(record) = record else {
                return Err("nothing to set: give --record on|off|default".into());
            };
            let c = store.set_record(channel, record.stored())?;
            wait_for_server(data_dir, before);
            let how = match c.record {
                Some(true) => "on",
                Some(false) => "off",
                None => "as --record says",
            };
            println!("channel {}: recording {how}", c.id);
        }
        KeysCommand::Remove { channel } => {
            let c = store.remove(channel)?;
            wait_for_server(data_dir, before);
            println!("removed channel {} ({})", c.id, c.name);
        }
    }
    Ok(())
}
