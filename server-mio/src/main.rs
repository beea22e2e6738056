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

/// `GET path` of the server running on `data_dir`, if any.
fn ask_server(data_dir: &std::path::Path, path: &str) -> Option<Vec<u8>> {
    let r = server_mio::keys::running(data_dir)?;
    let mut addr = r.http;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let resp = server_mio::tools::probe::http(addr, "GET", path, &[], b"").ok()?;
    (resp.status == 200).then_some(resp.body)
}

/// How many key file changes the running server has taken (`None`: no server).
fn reloads(data_dir: &std::path::Path) -> Option<u64> {
    let body = String::from_utf8(ask_server(data_dir, "/metrics")?).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("itg_key_reloads_total "))
        .and_then(|v| v.trim().parse().ok())
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

/// The live channels and their protocols, asked of the server running on `data_dir`.
fn live_channels(data_dir: &std::path::Path) -> Option<Vec<(u32, String)>> {
    let body = ask_server(data_dir, "/api/streams")?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    Some(
        v["streams"]
            .as_array()?
            .iter()
            .filter(|s| s["live"] == true)
            .filter_map(|s| {
                let id = u32::try_from(s["channel"].as_u64()?).ok()?;
                Some((id, s["protocol"].as_str().unwrap_or("ftl").to_owned()))
            })
            .collect(),
    )
}

fn keys(cmd: KeysCommand, data_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut store = KeyStore::open(data_dir)?;
    let before = match cmd {
        KeysCommand::List => None,
        _ => reloads(data_dir),
    };
    match cmd {
        KeysCommand::Add { channel, name } => {
            let c = store.add(channel, name)?;
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
        KeysCommand::Remove { channel } => {
            let c = store.remove(channel)?;
            wait_for_server(data_dir, before);
            println!("removed channel {} ({})", c.id, c.name);
        }
    }
    Ok(())
}
