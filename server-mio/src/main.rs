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

fn keys(cmd: KeysCommand, data_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut store = KeyStore::open(data_dir)?;
    match cmd {
        KeysCommand::Add { channel, name } => {
            let c = store.add(channel, name)?;
            println!("added channel {} ({})", c.id, c.name);
            println!("{}", c.obs_key());
        }
        KeysCommand::List => {
            for c in store.channels() {
                println!("{}\t{}\t{}", c.id, c.name, c.obs_key());
            }
        }
        KeysCommand::Rotate { channel } => {
            let c = store.rotate(channel)?;
            println!("new key for channel {}", c.id);
            println!("{}", c.obs_key());
        }
        KeysCommand::Remove { channel } => {
            let c = store.remove(channel)?;
            println!("removed channel {} ({})", c.id, c.name);
        }
    }
    Ok(())
}
