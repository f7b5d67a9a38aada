//! `govtune-verify`: the light client alone. It holds only the genesis
//! file and builds without RocksDB, libp2p or (by default) the tuner.

use std::process::ExitCode;

use clap::Parser;

/// Verify what a govtune consortium's nodes serve, trusting none of them.
#[derive(Parser)]
#[command(name = "govtune-verify", version, about)]
struct Cli {
    #[command(subcommand)]
    command: lightclient::cli::LightCommand,
}

fn main() -> ExitCode {
    lightclient::cli::run(Cli::parse().command)
}
