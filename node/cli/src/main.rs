//! `govtune`: the consortium node binary and its command-line tools: the
//! key ceremony (`genesis new|verify`), the node (`node --config`,
//! `node init|status`), each role's commands against its own node
//! (`source register|revoke`, `policy publish|supersede`, the operator's
//! `campaign run`), the local testnet runner
//! (`testnet up|status|down|kill|restart|pause|resume`), the demo, the
//! network benchmark, and the light client's `trace`, `verify` and `audit`.

mod role;

use std::path::PathBuf;
use std::process::ExitCode;

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
    /// The main job end to end: a 4-node testnet on loopback, sources with
    /// varied terms, a base campaign and a governed fine-tune (one node
    /// killed and restarted midway), three traces verified as a light
    /// client, every predicate, a revocation audit and an HTML report.
    Demo {
        /// The demo's folder (a testnet an earlier run left in it is
        /// stopped and replaced).
        #[arg(long, default_value = "govtune-demo")]
        dir: PathBuf,
        /// The campaign file (default: the built-in copy of the repository's
        /// data/demo.toml and its plays, written into DIR/data).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The short profile of the campaign file's [demo.short] (CI).
        #[arg(long)]
        short: bool,
        /// Leave the testnet running (stop it with `testnet down`).
        #[arg(long)]
        keep_running: bool,
    },
    /// Consortium definition and key ceremony.
    Genesis {
        #[command(subcommand)]
        command: GenesisCommand,
    },
    /// Run a consortium node (`--config`), write its configuration
    /// (`init`) or ask its health (`status`).
    #[command(args_conflicts_with_subcommands = true)]
    Node {
        #[command(subcommand)]
        command: Option<role::NodeCommand>,
        /// The node's configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A rights-holder's sources: register, revoke.
    Source {
        #[command(subcommand)]
        command: role::SourceCommand,
    },
    /// Governance's policies: publish, supersede.
    Policy {
        #[command(subcommand)]
        command: role::PolicyCommand,
    },
    /// Governed fine-tuning campaigns (the operator's tuner).
    Campaign {
        #[command(subcommand)]
        command: CampaignCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// A local multi-node testnet on loopback.
    Testnet {
        #[command(subcommand)]
        command: TestnetCommand,
    },
    /// The light client's commands (`trace`, `verify ...`, `audit ...`),
    /// the same as `govtune-verify`'s.
    #[command(flatten)]
    Light(lightclient::cli::LightCommand),
}

#[derive(Subcommand)]
enum CampaignCommand {
    /// Run a campaign: the operator's against its own node (`--node`, the
    /// sources from the rights-holders' packages), against the operator
    /// node of a local testnet (which also registers the file's policy and
    /// sources through their authorities' nodes), or with no node, writing
    /// entries to a file.
    #[command(
        after_help = "Example (the operator's machine):\n  govtune campaign run --node https://203.0.113.13:8100 --token-file admin.token \\\n    --genesis genesis.json --config campaign.toml \\\n    --package as_you_like_it.txt.package --package twelfth_night.txt.package\n\nExit status with --node: 0 the campaign finished, 1 a co-signer refused a step\n(it closed at its last committed step), 2 it could not run."
    )]
    Run {
        /// The campaign file: with --node the operator's (docs/multi-machine.md),
        /// else the demo's kind (data/campaign.toml).
        #[arg(long)]
        config: PathBuf,
        /// The operator's own node (`https://host:port`).
        #[arg(long, env = "GOVTUNE_NODE", conflicts_with_all = ["testnet", "events_out"], requires_all = ["token_file", "genesis"])]
        node: Option<String>,
        /// The node's admin token file (with --node).
        #[arg(long, env = "GOVTUNE_TOKEN_FILE", requires = "node")]
        token_file: Option<PathBuf>,
        /// The genesis file (with --node).
        #[arg(long, env = "GOVTUNE_GENESIS", requires = "node")]
        genesis: Option<PathBuf>,
        /// A rights-holder's source package (`source register` writes it);
        /// repeat for each source (with --node).
        #[arg(long, requires = "node")]
        package: Vec<PathBuf>,
        /// A testnet folder (`govtune testnet up --dir`).
        #[arg(long, conflicts_with = "events_out")]
        testnet: Option<PathBuf>,
        /// No node: write entries here (blobs beside it) under the file's
        /// own demo consortium keys.
        #[arg(long)]
        events_out: Option<PathBuf>,
        /// Write the fine-tuned model (adapter snapshot, safetensors) here
        /// (default with --testnet: DIR/model.safetensors; with --node:
        /// model.safetensors).
        #[arg(long)]
        model_out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// What replay audits cost a running consortium: the campaign file's
    /// campaign, cut to STEPS steps, on a fresh 4-node testnet at each audit
    /// rate; wall time and each node's CPU per step, as ratios to the first
    /// rate.
    Audit {
        /// The campaign file (its policy gets an `[audit]` per rate).
        #[arg(long, default_value = "data/campaign.toml")]
        config: PathBuf,
        /// Steps per campaign.
        #[arg(long, default_value_t = 20)]
        steps: u64,
        /// Audit rates, in millionths.
        #[arg(long, value_delimiter = ',', default_value = "0,100000,1000000")]
        rates: Vec<u32>,
    },
    /// A 4-node loopback testnet under load: committed events/s and
    /// examples/s, submit-to-finality latency, and the signature floor.
    Network {
        /// Events per run.
        #[arg(long, default_value_t = 1000)]
        events: usize,
        /// Concurrent submitting clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Examples per composite event in the composite run.
        #[arg(long, default_value_t = 16)]
        examples: usize,
    },
    /// What replicating a blob costs: a 4-node testnet; each blob put at
    /// the operator's node, then fetched by another node from its peers
    /// over p2p in parts, then read from that node's own store.
    Blobs {
        /// Blob sizes in MiB.
        #[arg(long, value_delimiter = ',', default_value = "1,8,24")]
        mib: Vec<u64>,
    },
    /// What a witness's add-checkpoint costs, in process, beside the
    /// primitives it is made of (signature checks, consistency proof,
    /// cosignature, synced state write).
    Witness {
        /// Checkpoints submitted.
        #[arg(long, default_value_t = 500)]
        checkpoints: usize,
        /// Leaves the log grows by between two.
        #[arg(long, default_value_t = 100)]
        step: u64,
    },
    /// What https costs API clients: a 4-node testnet over http, then one
    /// over https; checkpoint reads on a kept-alive connection, on a new
    /// connection each, and a light client's verified checkpoint.
    Api {
        /// Reads of each kind.
        #[arg(long, default_value_t = 500)]
        requests: usize,
    },
}

#[derive(Subcommand)]
enum TestnetCommand {
    /// Write a genesis for N local nodes, start each as its own process,
    /// wait until all are healthy and print their API addresses.
    Up {
        /// Number of nodes (4: two data-source authorities, governance,
        /// operator).
        #[arg(long, default_value_t = 4)]
        nodes: u16,
        /// The testnet's folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Height, log size and root of every node.
    Status {
        /// The testnet's folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Stop every node.
    Down {
        /// The testnet's folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// SIGKILL a node.
    Kill {
        /// Node name or number.
        node: String,
        /// The testnet's folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Start a node again (killing it first if it runs).
    Restart {
        /// Node name or number.
        node: String,
        /// The testnet's folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// SIGSTOP a node.
    Pause {
        /// Node name or number.
        node: String,
        /// The testnet's folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// SIGCONT a node.
    Resume {
        /// Node name or number.
        node: String,
        /// The testnet's folder.
        #[arg(long)]
        dir: PathBuf,
    },
}

fn run_node(config: PathBuf) -> Result<(), String> {
    node::serve(&config).map_err(|e| e.to_string())
}

fn run_testnet(command: TestnetCommand) -> Result<(), String> {
    use std::time::Duration;
    use testnet::Testnet;
    let e = |e: testnet::TestnetError| e.to_string();
    match command {
        TestnetCommand::Up { nodes, dir } => {
            let binary = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut t = Testnet::create(&dir, nodes, &binary, &Default::default()).map_err(e)?;
            t.start_all().map_err(e)?;
            t.wait_all_healthy(Duration::from_secs(120)).map_err(e)?;
            t.detach();
            println!("testnet of {} nodes is up in {}", t.nodes.len(), dir.display());
            println!("genesis: {}", t.genesis_path().display());
            for n in &t.nodes {
                println!(
                    "  {:<8} {:<16} {:<12} http://{}  (admin token: {})",
                    n.name,
                    n.authority,
                    n.role,
                    n.api,
                    n.token.display()
                );
            }
            Ok(())
        }
        TestnetCommand::Status { dir } => {
            let t = Testnet::load(&dir).map_err(e)?;
            for (n, s) in t.nodes.iter().zip(t.status()) {
                match s {
                    Some((h, size, root)) => {
                        println!("{:<8} height {h:>6}  log size {size:>7}  root {root}", n.name)
                    }
                    None => println!("{:<8} not answering", n.name),
                }
            }
            Ok(())
        }
        TestnetCommand::Down { dir } => {
            let mut t = Testnet::load(&dir).map_err(e)?;
            t.down().map_err(e)?;
            println!("stopped");
            Ok(())
        }
        TestnetCommand::Kill { node, dir } => {
            let mut t = Testnet::load(&dir).map_err(e)?;
            let i = t.find(&node).map_err(e)?;
            t.kill(i).map_err(e)
        }
        TestnetCommand::Restart { node, dir } => {
            let mut t = Testnet::load(&dir).map_err(e)?;
            let i = t.find(&node).map_err(e)?;
            t.restart(i).map_err(e)?;
            t.wait_healthy(i, Duration::from_secs(60)).map_err(e)?;
            t.detach();
            Ok(())
        }
        TestnetCommand::Pause { node, dir } => {
            let mut t = Testnet::load(&dir).map_err(e)?;
            let i = t.find(&node).map_err(e)?;
            t.pause(i).map_err(e)
        }
        TestnetCommand::Resume { node, dir } => {
            let mut t = Testnet::load(&dir).map_err(e)?;
            let i = t.find(&node).map_err(e)?;
            t.resume(i).map_err(e)
        }
    }
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
    Timestamp(roles::now_ms())
}

/// Why a command did not succeed, and its exit status. Commands that check
/// something (`demo`, `genesis verify` and the light client's) exit 1 when
/// the claim does not hold and 2 when it could not be checked; every other
/// command exits 1 on any error.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn violated(message: String) -> Self {
        Self { code: 1, message }
    }

    fn unchecked(message: String) -> Self {
        Self { code: 2, message }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self { code: 1, message }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Self::from(message.to_string())
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Light(_) => unreachable!("handled in main"),
        Command::Node {
            command: Some(command),
            ..
        } => role::run_node_command(command),
        Command::Node {
            command: None,
            config: Some(config),
        } => Ok(run_node(config)?),
        Command::Node {
            command: None,
            config: None,
        } => Err(Failure::unchecked(
            "give --config FILE, or `node init` or `node status`".into(),
        )),
        Command::Source { command } => role::run_source(command),
        Command::Policy { command } => role::run_policy(command),
        Command::Campaign {
            command:
                CampaignCommand::Run {
                    config,
                    node: Some(node),
                    token_file,
                    genesis,
                    package,
                    model_out,
                    ..
                },
        } => {
            let args = role::NodeArgs {
                node: vec![node],
                token_file: vec![
                    token_file.ok_or_else(|| Failure::unchecked("--node needs --token-file".into()))?
                ],
                genesis: genesis.ok_or_else(|| Failure::unchecked("--node needs --genesis".into()))?,
            };
            role::run_campaign(
                &args,
                &config,
                &package,
                &model_out.unwrap_or_else(|| PathBuf::from("model.safetensors")),
            )
        }
        Command::Demo {
            dir,
            config,
            short,
            keep_running,
        } => {
            let binary = std::env::current_exe().map_err(|e| Failure::unchecked(e.to_string()))?;
            let summary = testnet::demo::run(&testnet::demo::DemoOptions {
                dir,
                config,
                short,
                keep_running,
                binary,
            })
            .map_err(|e| Failure::unchecked(format!("the demo could not run its checks: {e}")))?;
            // Every check it printed must hold: a FAIL line fails the run.
            let failed: Vec<&str> = summary
                .predicates
                .iter()
                .filter(|(_, ok)| !ok)
                .map(|(what, _)| what.as_str())
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(Failure::violated(format!(
                    "{} of {} checks failed: {}",
                    failed.len(),
                    summary.predicates.len(),
                    failed.join("; ")
                )))
            }
        }
        Command::Testnet { command } => Ok(run_testnet(command)?),
        Command::Campaign {
            command:
                CampaignCommand::Run {
                    config,
                    testnet,
                    events_out,
                    model_out,
                    ..
                },
        } => {
            let model_out = model_out.or_else(|| testnet.as_ref().map(|d| d.join("model.safetensors")));
            let events_file = events_out.clone();
            let op_client = match &testnet {
                Some(dir) => {
                    let t = testnet::Testnet::load(dir).map_err(|e| e.to_string())?;
                    let op = t
                        .nodes
                        .iter()
                        .position(|n| n.role == "operator")
                        .ok_or("the testnet has no operator node")?;
                    Some(t.client(op))
                }
                None => None,
            };
            let out = match (testnet, events_out) {
                (Some(dir), None) => {
                    let steps = tuner::demo::DemoConfig::load(&config)
                        .map_err(|e| e.to_string())?
                        .settings
                        .max_steps;
                    let mut bar = roles::progress::BarProgress::new(steps);
                    let out = testnet::campaign::run_on_testnet(&config, &dir, &mut bar);
                    bar.finish();
                    out.map_err(|e| e.to_string())?
                }
                (None, Some(file)) => {
                    let cfg = tuner::demo::DemoConfig::load(&config).map_err(|e| e.to_string())?;
                    let mut sink = tuner::sink::FileSink::create(&file).map_err(|e| e.to_string())?;
                    let w = tuner::demo::build(&cfg, &mut sink, &mut |_, _| {}).map_err(|e| e.to_string())?;
                    let clock = tuner::campaign::SimClock {
                        next: cfg.start_ms + 1_000_000,
                        step_ms: cfg.step_ms,
                    };
                    let mut bar = roles::progress::BarProgress::new(cfg.settings.max_steps);
                    let out = tuner::campaign::run(w.spec, Box::new(clock), &mut sink, &mut bar);
                    bar.finish();
                    let out = out.map_err(|e| e.to_string())?;
                    sink.flush().map_err(|e| e.to_string())?;
                    out
                }
                _ => return Err("give --testnet DIR or --events-out FILE".into()),
            };
            print_outcome(&out);
            if let (Some(path), Some(snap)) = (&model_out, out.snapshots.last()) {
                let bytes = match &op_client {
                    Some(c) => c
                        .get_bytes(&format!("/v1/blobs/{}", snap.blob.to_hex()))
                        .map_err(|e| e.to_string())?,
                    None => match &events_file {
                        Some(f) => tuner::sink::read_blob(f, &snap.blob).map_err(|e| e.to_string())?,
                        None => Vec::new(),
                    },
                };
                if !bytes.is_empty() && out.stop == tuner::campaign::Stop::Finished {
                    std::fs::write(path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
                    println!("fine-tuned model written to {}", path.display());
                }
            }
            stop_verdict(&out.stop).map_err(|e| Failure::from(e.message))
        }
        Command::Bench {
            command: BenchCommand::Audit { config, steps, rates },
        } => {
            let binary = std::env::current_exe().map_err(|e| e.to_string())?;
            let figures = testnet::audit_bench::run_audit(&binary, &config, steps, &rates)
                .map_err(|e| e.to_string())?;
            println!("| audit rate | steps (records) | s/step | vs first | governance CPU s/step | data sources' CPU s/step | operator node CPU s/step | tuner CPU s/step | co-signers' CPU vs first |");
            println!("|---|---|---|---|---|---|---|---|---|");
            let cosigners = |f: &testnet::audit_bench::AuditFigures| {
                f.cpu_per_step
                    .iter()
                    .filter(|(_, role, _)| role != "operator")
                    .map(|x| x.2)
                    .sum::<f64>()
            };
            let role_cpu = |f: &testnet::audit_bench::AuditFigures, role: &str| {
                f.cpu_per_step
                    .iter()
                    .filter(|(_, r, _)| r == role)
                    .map(|x| x.2)
                    .sum::<f64>()
            };
            let first = figures.first().cloned();
            for f in &figures {
                let (wall0, co0) = first
                    .as_ref()
                    .map(|b| (b.wall_per_step, cosigners(b)))
                    .unwrap_or((f.wall_per_step, cosigners(f)));
                println!(
                    "| {:.1} % | {} ({}) | {:.3} | {:.2}x | {:.3} | {:.3} | {:.3} | {:.3} | {:.2}x |",
                    f64::from(f.rate_millionths) / 10_000.0,
                    f.steps,
                    f.records,
                    f.wall_per_step,
                    f.wall_per_step / wall0.max(f64::MIN_POSITIVE),
                    role_cpu(f, "governance"),
                    role_cpu(f, "data-source"),
                    role_cpu(f, "operator"),
                    f.tuner_cpu_per_step,
                    cosigners(f) / co0.max(f64::MIN_POSITIVE),
                );
            }
            Ok(())
        }
        Command::Bench {
            command: BenchCommand::Blobs { mib },
        } => {
            let binary = std::env::current_exe().map_err(|e| e.to_string())?;
            let figures = testnet::bench::run_blobs(&binary, &mib).map_err(|e| e.to_string())?;
            println!("| blob | put at the operator's node (HTTP) | fetched by another node (p2p, in parts) | read again there | replication / put |");
            println!("|---|---|---|---|---|");
            for f in &figures {
                let mib = f.bytes as f64 / f64::from(1u32 << 20);
                println!(
                    "| {mib:.0} MiB | {:.2} s ({:.0} MiB/s) | {:.2} s ({:.0} MiB/s) | {:.2} s | {:.2}x |",
                    f.put_s,
                    mib / f.put_s.max(f64::MIN_POSITIVE),
                    f.replicate_s,
                    mib / f.replicate_s.max(f64::MIN_POSITIVE),
                    f.local_s,
                    f.replicate_s / f.put_s.max(f64::MIN_POSITIVE)
                );
            }
            Ok(())
        }
        Command::Bench {
            command: BenchCommand::Witness { checkpoints, step },
        } => Ok(testnet::witness_bench::run(checkpoints, step).map_err(|e| e.to_string())?),
        Command::Bench {
            command: BenchCommand::Api { requests },
        } => {
            let binary = std::env::current_exe().map_err(|e| e.to_string())?;
            let figures = testnet::bench::run_transport(&binary, requests).map_err(|e| e.to_string())?;
            println!("| scheme | ms per read, kept-alive | ms per read, new connection | ms per verified checkpoint, new client |");
            println!("|---|---|---|---|");
            for f in &figures {
                println!(
                    "| {} | {:.2} | {:.2} | {:.2} |",
                    f.scheme, f.pooled_ms, f.fresh_ms, f.verified_ms
                );
            }
            if let [http, https] = figures.as_slice() {
                println!(
                    "https / http: {:.2}x kept-alive, {:.2}x per new connection, {:.2}x per verified checkpoint",
                    https.pooled_ms / http.pooled_ms.max(f64::MIN_POSITIVE),
                    https.fresh_ms / http.fresh_ms.max(f64::MIN_POSITIVE),
                    https.verified_ms / http.verified_ms.max(f64::MIN_POSITIVE)
                );
            }
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Network {
                    events,
                    clients,
                    examples,
                },
        } => {
            let binary = std::env::current_exe().map_err(|e| e.to_string())?;
            println!("| events | examples/event | clients | events/s | examples/s | p50 ms | p99 ms | signature floor events/s | ratio to floor |");
            println!("|---|---|---|---|---|---|---|---|---|");
            let mut light = None;
            for (k, composite) in [(2usize, false), (examples, true)] {
                let f = testnet::bench::run_network(
                    &binary,
                    testnet::bench::NetworkBench {
                        events,
                        examples: k,
                        composite,
                        clients,
                        light: !composite,
                    },
                )
                .map_err(|e| e.to_string())?;
                light = light.or(f.light.clone());
                println!(
                    "| {} | {k} | {clients} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} | {:.2} |",
                    if composite { "composite" } else { "step" },
                    f.events_per_sec,
                    f.examples_per_sec,
                    f.p50_ms,
                    f.p99_ms,
                    f.floor_events_per_sec,
                    f.events_per_sec / f.floor_events_per_sec
                );
            }
            if let Some(l) = light {
                println!();
                println!(
                    "One view for a light client holding the checkpoint from before the step run (log size {}, {} runs each):",
                    l.log_size, l.runs
                );
                println!("| check | ms per run | bytes fetched | bytes the run appended | ratio |");
                println!("|---|---|---|---|---|");
                for (what, ms, bytes) in [
                    (
                        "latest checkpoint from 1 node, proved to extend the held one".to_string(),
                        l.one_ms,
                        l.one_bytes,
                    ),
                    (
                        format!("the same, and compared with {} more nodes", l.nodes - 1),
                        l.all_ms,
                        l.all_bytes,
                    ),
                ] {
                    println!(
                        "| {what} | {ms:.1} | {bytes} | {} | {:.5} |",
                        l.appended_bytes,
                        bytes as f64 / l.appended_bytes.max(1) as f64
                    );
                }
                println!(
                    "comparing {} nodes costs {:.2}x the time and {:.2}x the bytes of asking one",
                    l.nodes,
                    l.all_ms / l.one_ms.max(f64::MIN_POSITIVE),
                    l.all_bytes as f64 / l.one_bytes.max(1) as f64
                );
            }
            Ok(())
        }
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
                        "  {} {:<12} {:<18} {}  keys: {}",
                        node.validator
                            .map_or_else(|| "signing member".to_string(), |v| format!("validator {v}")),
                        node.name,
                        node.authority,
                        node.peer_id,
                        out.join("nodes").join(&node.name).join("node.key").display()
                    );
                }
                Ok(())
            }
            GenesisCommand::Verify { genesis } => {
                let (g, keyring) = load_genesis(&genesis).map_err(|e| {
                    if e.is_violation() {
                        Failure::violated(format!("FAIL genesis: {e}"))
                    } else {
                        Failure::unchecked(format!("genesis could not be checked: {e}"))
                    }
                })?;
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

/// Prints what a campaign did.
fn print_outcome(out: &tuner::campaign::CampaignOutcome) {
    println!("campaign {}", out.campaign);
    println!("stop: {:?}", out.stop);
    println!(
        "steps {} (attempts {}), examples admitted {}, refused {}, steps rolled back {}, entries {}",
        out.steps, out.attempts, out.admitted, out.refused, out.rolled_back, out.entries
    );
    println!("final model state {}", out.final_state);
}

/// A campaign that did not finish failed its claim (exit 1).
fn stop_verdict(stop: &tuner::campaign::Stop) -> Result<(), Failure> {
    match stop {
        tuner::campaign::Stop::Finished => Ok(()),
        tuner::campaign::Stop::CoSignerRefused { kind, reason } => Err(Failure::violated(format!(
            "stopped at the last committed step: a co-signer refused a {kind}: {reason}"
        ))),
        tuner::campaign::Stop::PolicySuperseded { reason } => Err(Failure::violated(format!(
            "the campaign's policy was superseded; closed at its last committed step: {reason}"
        ))),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Light(command) = cli.command {
        return lightclient::cli::run(command);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
