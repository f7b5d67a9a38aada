//! `govtune`: the consortium node binary and its command-line tools.
//!
//! This round it carries the key ceremony (`govtune genesis new`) and the
//! genesis checker (`govtune genesis verify`); the node itself (libp2p,
//! co-signing, consensus, HTTP API) arrives with the node crate's issue.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

use genesis::{ceremony, load_genesis, parse_description, write_ceremony, ConsortiumDescription};
use provenance::{Canonical, Timestamp};

#[derive(Parser)]
#[command(
    name = "govtune",
    version,
    about = "Governed fine-tuning with verifiable provenance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consortium definition and key ceremony.
    Genesis {
        #[command(subcommand)]
        command: GenesisCommand,
    },
}

#[derive(Subcommand)]
enum GenesisCommand {
    /// Run the trusted-dealer key ceremony: write genesis.json and one
    /// 0600 key file and admin token per node.
    New {
        /// Consortium description (TOML). Omit to use the default 4-node
        /// local testnet.
        #[arg(long)]
        consortium: Option<PathBuf>,
        /// Output directory (files in it are never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a genesis file: digest, keys, proofs of possession, n/f/q and
    /// the per-authority validator bound.
    Verify {
        /// The genesis file.
        #[arg(long)]
        genesis: PathBuf,
    },
}

fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Genesis { command } => match command {
            GenesisCommand::New { consortium, out } => {
                let desc = match consortium {
                    Some(path) => {
                        let text =
                            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                        parse_description(&text).map_err(|e| format!("{}: {e}", path.display()))?
                    }
                    None => ConsortiumDescription::local_testnet(7100, 8100),
                };
                let c = ceremony(&desc, now(), &mut rand::rngs::OsRng).map_err(|e| e.to_string())?;
                write_ceremony(&out, &c).map_err(|e| e.to_string())?;
                let g = &c.dealt.genesis;
                println!("wrote {}", out.join("genesis.json").display());
                println!("genesis digest {}", g.digest());
                println!(
                    "n = {}, f = {}, q = {}",
                    g.consortium.n, g.consortium.f, g.consortium.q
                );
                for node in &g.nodes {
                    println!(
                        "  validator {} {:<12} {:<18} {}  keys: {}",
                        node.validator,
                        node.name,
                        node.authority,
                        node.peer_id,
                        out.join("nodes").join(&node.name).join("node.key").display()
                    );
                }
                Ok(())
            }
            GenesisCommand::Verify { genesis } => {
                let (g, keyring) = load_genesis(&genesis).map_err(|e| e.to_string())?;
                println!("genesis {} is valid", g.digest());
                println!(
                    "consortium {:?}: n = {}, f = {}, q = {}",
                    g.consortium_name, g.consortium.n, g.consortium.f, g.consortium.q
                );
                for a in keyring.authorities() {
                    println!(
                        "  {:<18} {:<12} BLS threshold {}",
                        a.id,
                        a.role,
                        a.bls_threshold()
                    );
                }
                Ok(())
            }
        },
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
