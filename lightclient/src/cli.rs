//! The light client's commands, shared by `govtune-verify` and `govtune`:
//! `trace` (ask a node, optionally verify the answer), `verify ...` (one
//! predicate or proof) and `audit revocation`. Everything they print about
//! the ledger comes from [`Verifier`], which holds only the genesis file
//! and checks every answer. Exit status: 0 holds, 1 does not hold, 2 could
//! not check.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser as _, Subcommand};
use provenance::api::{TraceAnswer, TraceRequest};
use provenance::Digest;

use crate::bundle::Bundle;
use crate::client::{Client, ClientError};
use crate::light::{LightClient, VerifyError};
use crate::state::TrustState;
use crate::verify::{Verdict, Verifier};

/// The light client's commands.
#[derive(Debug, Subcommand)]
pub enum LightCommand {
    /// Trace a model output back to the sources, events and policy that
    /// shaped it (`POST /v1/trace` on any node), and verify the answer.
    Trace(TraceArgs),
    /// A light client: holds only the genesis file, trusts no node, and
    /// checks what a node serves. Exit status 0: pass, 1: fail, 2: error.
    Verify(VerifyArgs),
    /// Audits.
    Audit {
        /// Which audit.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print the verifier keys of a consortium's checkpoint notes (C2SP
    /// signed-note format): its validators' (q of them sign for the
    /// consortium) and its witnesses', for standard note verifiers.
    NoteKeys {
        /// The consortium's genesis file.
        #[arg(long)]
        genesis: PathBuf,
    },
    /// A witness of consortium logs, run outside the consortium (C2SP
    /// tlog-witness): it cosigns only checkpoints consistent with every one
    /// it cosigned before.
    Witness {
        /// What to do.
        #[command(subcommand)]
        command: WitnessCommand,
    },
}

/// `witness` subcommands.
#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// Make the witness's key (DIR/witness.key, mode 0600) and print its
    /// verifier key for the consortium's genesis description.
    Init {
        /// The witness's folder.
        #[arg(long)]
        dir: PathBuf,
        /// Its name, a scheme-less URL-like key name (e.g.
        /// witness.example.org/w1).
        #[arg(long)]
        name: String,
    },
    /// Serve add-checkpoint for the logs of the given genesis files.
    Serve {
        /// The witness's folder (its key and, per log, the last checkpoint
        /// it cosigned).
        #[arg(long)]
        dir: PathBuf,
        /// `host:port` to listen on.
        #[arg(long)]
        listen: String,
        /// A consortium's genesis file (repeat for several logs).
        #[arg(long, required = true)]
        genesis: Vec<PathBuf>,
    },
}

fn note_keys(genesis: &Path) -> Result<bool, VerifyError> {
    let (g, keyring) = genesis::load_genesis(genesis)?;
    let log = keyring.log();
    println!("origin {}", log.origin());
    println!(
        "validators {} (q = {} sign for the consortium)",
        g.consortium.n,
        log.q()
    );
    for (i, k) in log.validator_verifier_keys().iter().enumerate() {
        println!("validator {i} {k}");
    }
    println!(
        "witnesses {} (quorum {}, every {} ms)",
        g.witnessing.witnesses.len(),
        log.witness_quorum(),
        log.witness_interval_ms()
    );
    for w in &g.witnessing.witnesses {
        let key: [u8; 32] = w.key.as_slice().try_into().unwrap_or([0; 32]);
        println!(
            "witness {} {}",
            provenance::note::verifier_key(&w.name, provenance::note::COSIGNATURE_V1, &key),
            w.url
        );
    }
    Ok(true)
}

fn run_witness(command: WitnessCommand) -> Result<bool, VerifyError> {
    let err = |e: crate::witness::WitnessError| VerifyError::Input(e.to_string());
    match command {
        WitnessCommand::Init { dir, name } => {
            println!("{}", crate::witness::init(&dir, &name).map_err(err)?);
            Ok(true)
        }
        WitnessCommand::Serve { dir, listen, genesis } => {
            let w = crate::witness::Witness::open(&dir, &genesis).map_err(err)?;
            let listener = std::net::TcpListener::bind(&listen)
                .map_err(|e| VerifyError::Input(format!("listen address {listen}: {e}")))?;
            println!("witness {} ({}) on {listen}", w.name(), w.verifier_key());
            for o in w.origins() {
                println!("  log {o}");
            }
            crate::witness::serve(std::sync::Arc::new(w), listener).map_err(err)?;
            Ok(true)
        }
    }
}

/// `trace`'s arguments.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// A node's API address.
    #[arg(long)]
    pub node: String,
    /// The (closed) campaign whose model produced the output.
    #[arg(long)]
    pub campaign: String,
    /// The prompt.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// The output to trace.
    #[arg(long)]
    pub output: String,
    /// Scoring method: tracin-routed-common (default), tracin (plain
    /// cosine), tracin-adam or trak (docs/tracing.md).
    #[arg(long)]
    pub method: Option<String>,
    /// Also write the answer (JSON) here, for `govtune verify trace`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Verify the answer with this genesis file as a light client.
    #[arg(long)]
    pub genesis: Option<PathBuf>,
    /// Also write the answer and everything its verification read to this
    /// bundle (`govtune verify --genesis G --bundle FILE` checks it
    /// offline). Needs --genesis.
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
}

/// How a verifier reaches the consortium and what it remembers, shared by
/// `verify` and `audit`: global, so they may come before or after the
/// predicate's name.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The genesis file (required).
    #[arg(long, global = true)]
    pub genesis: Option<PathBuf>,
    /// A node's API address (required). Repeat it to compare nodes: the
    /// first answers the question, and every other node's latest
    /// checkpoint must be consistent with it (two consortium-signed roots
    /// for one log size are printed as a split view).
    #[arg(long, global = true)]
    pub node: Vec<String>,
    /// Print the outcome as JSON, failures included.
    #[arg(long, global = true)]
    pub json: bool,
    /// Remember the newest checkpoint accepted, per consortium, in this
    /// folder: every later run with it must be consistent with that
    /// checkpoint and may not fall back to an older one.
    #[arg(long, global = true)]
    pub state: Option<PathBuf>,
    /// Refuse (exit 2) answers proved under a checkpoint the consortium
    /// signed, and genesis's quorum of witnesses last cosigned, more than
    /// this many seconds ago (at least twice genesis's witnessing interval).
    #[arg(long, global = true, value_name = "SECONDS")]
    pub max_age: Option<u64>,
    /// Give up (exit 2) when the nodes have not answered everything within
    /// this many seconds (each request also has at most 20 s).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 600)]
    pub timeout: u64,
    /// With --node: also write everything the check read (answers, proofs,
    /// checkpoints with their signatures and cosignatures, blobs, input
    /// files) to this file. Without --node: check that file instead, with
    /// no network (the predicate is the bundle's; one given must match).
    #[arg(long, global = true, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// The bundle being checked, once read (not an argument).
    #[arg(skip)]
    pub replay: Option<Bundle>,
}

/// `verify`'s arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The nodes, the genesis file and the verifier's state.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// What to verify (with `--bundle FILE` and no `--node`: the bundle's).
    #[command(subcommand)]
    pub command: Option<VerifyCommand>,
}

/// `verify ...`: one predicate or proof.
#[derive(Debug, Subcommand)]
pub enum VerifyCommand {
    /// The node's latest checkpoint: consortium signature under genesis.
    Checkpoint,
    /// The log at checkpoint height SECOND extends the one at FIRST.
    Consistency {
        /// Earlier checkpoint height.
        #[arg(long)]
        first: u64,
        /// Later checkpoint height (default: latest).
        #[arg(long)]
        second: Option<u64>,
    },
    /// A trace answer (from `govtune trace --out`): every cited entry's
    /// proof and signatures, and the citations' consistency.
    Trace {
        /// The answer file.
        #[arg(long)]
        answer: PathBuf,
        /// Also recompute the scores from the model and sketch blobs.
        #[arg(long)]
        recompute: bool,
    },
    /// Regulator: every step ran under the approved policy or a successor
    /// governance signed.
    Policy {
        /// The campaign.
        #[arg(long)]
        campaign: String,
        /// The approved policy's digest.
        #[arg(long)]
        approved: String,
    },
    /// Rights-holder: every use of the source was within its window and
    /// purposes, every refusal is listed, nothing admitted after its
    /// revocation.
    Source {
        /// The source id.
        #[arg(long)]
        id: String,
        /// Also download the whole log (checked against the checkpoint's
        /// root) as a brute-force cross-check of the listing the index
        /// already proves complete.
        #[arg(long)]
        scan: bool,
        /// Also recompute each campaign's data order (every example of the
        /// source it drew was trained or refused, for the reason admission
        /// gives): reads each campaign whole.
        #[arg(long)]
        order: bool,
    },
    /// Auditor: every co-signer left its audit ticket on each of the
    /// campaign's training records, and a replay on exactly the records
    /// its ticket selects.
    Audits {
        /// The campaign.
        #[arg(long)]
        campaign: String,
        /// Also recompute each replay's digest from the record's
        /// measurement and sketch blob (what the replay confirmed).
        #[arg(long)]
        recompute: bool,
    },
    /// Operator: the weights file (adapter snapshot) is exactly the base
    /// plus the recorded deltas.
    Model {
        /// The campaign.
        #[arg(long)]
        campaign: String,
        /// The weights file.
        #[arg(long)]
        weights: PathBuf,
    },
}

/// `audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The steps admitted under a (since-revoked) source's signature and
    /// the share of each campaign's update they carry.
    Revocation(RevocationArgs),
}

/// `audit revocation`'s arguments.
#[derive(Debug, Args)]
pub struct RevocationArgs {
    /// The nodes, the genesis file and the verifier's state.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// The source id.
    #[arg(long)]
    pub source: String,
    /// Also download the whole log (checked against the checkpoint's
    /// root) as a brute-force cross-check of the listing the index already
    /// proves complete.
    #[arg(long)]
    pub scan: bool,
}

/// Each request a verifier makes may take at most this long, from
/// connecting to the answer's last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The question `trace` asks.
pub fn trace_request(campaign: &Digest, prompt: &str, output: &str, method: Option<&str>) -> TraceRequest {
    TraceRequest {
        campaign: *campaign,
        prompt: prompt.to_string(),
        output: output.to_string(),
        method: method.map(str::to_string),
        top_examples: None,
        top_events: None,
    }
}

/// Asks `node` to trace `output` after `prompt` in `campaign`.
pub fn ask_trace(
    node: &Client,
    campaign: &Digest,
    prompt: &str,
    output: &str,
    method: Option<&str>,
) -> Result<TraceAnswer, VerifyError> {
    let node = node.clone().with_timeout(Duration::from_secs(600));
    crate::light::answer(node.trace(&trace_request(campaign, prompt, output, method)))
}

/// The answer as a lineage: output → sources → examples → events → policy
/// → authorities, and the parameter blocks.
pub fn render_trace(a: &TraceAnswer) -> String {
    let mut s = format!(
        "trace of {:?} after {:?}\ncampaign {} · method {} · {} examples scored in {:.1} s · report {}\n\nsources (ranked):\n",
        a.output,
        a.prompt,
        a.campaign.short(),
        a.method,
        a.examples_scored,
        a.seconds,
        a.report_digest.short()
    );
    for src in &a.sources {
        s.push_str(&format!(
            "  {}. {} [{}] signed by {} · salient {:.4} · sum {:.4} over {} examples (log index {})\n",
            src.rank,
            src.title,
            src.source.short(),
            src.authority,
            src.salient,
            src.score,
            src.examples,
            src.manifest.index
        ));
        for x in &src.top_examples {
            s.push_str(&format!(
                "       example {} · step {} · event #{} · score {:.4}\n",
                x.index, x.step, x.event_seq, x.score
            ));
        }
    }
    s.push_str("events:\n");
    for e in &a.events {
        s.push_str(&format!(
            "  #{} (log index {}) · {} examples · score {:.4}\n",
            e.seq, e.entry.index, e.examples, e.score
        ));
    }
    s.push_str("policies:\n");
    for p in &a.policies {
        s.push_str(&format!("  {} (log index {})\n", p.digest.short(), p.index));
    }
    if let Some(b) = &a.base {
        s.push_str(&format!(
            "base model: campaign {} (log index {}), closed at index {}, {} sources\n",
            b.campaign.digest.short(),
            b.campaign.index,
            b.close.index,
            b.sources.len()
        ));
    }
    s.push_str("parameter blocks by share of the score:\n");
    for b in a.blocks.iter().take(6) {
        s.push_str(&format!("  block {} · {:.1}%\n", b.block, 100.0 * b.share));
    }
    s
}

/// Prints a verdict (text or JSON) and returns whether it passed.
pub fn report(v: &Verdict, json: bool) -> bool {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        print!("{}", v.render());
    }
    v.pass
}

/// What a check that did not pass prints: `FAIL` with the evidence (exit 1)
/// or an error saying why it could not be checked (exit 2), as text or as
/// one JSON object `{predicate, pass: false, checked, reason}`.
fn report_failure(predicate: &str, err: &VerifyError, json: bool) {
    let checked = err.is_violation();
    if json {
        let v = serde_json::json!({
            "predicate": predicate,
            "pass": false,
            "checked": checked,
            "reason": err.to_string(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if checked {
        println!("FAIL {predicate}: {err}");
    } else {
        eprintln!("error: {predicate} could not be checked: {err}");
    }
}

/// A verifier of `node` from the genesis file (the API client's default
/// timeouts).
pub fn verifier(genesis: &Path, node: &str) -> Result<Verifier, VerifyError> {
    Verifier::new(genesis, Client::new(node))
}

/// An input file's bytes (an unreadable file is a bad argument).
fn answer_of(r: Result<Vec<u8>, ClientError>) -> Result<Vec<u8>, VerifyError> {
    r.map_err(|e| VerifyError::Input(e.to_string()))
}

/// Parses a digest argument.
pub fn digest_arg(s: &str) -> Result<Digest, VerifyError> {
    Digest::from_hex(s.trim()).map_err(|e| VerifyError::Input(format!("{s:?} is not a digest: {e}")))
}

/// Runs a light-client command and maps its outcome to the exit status:
/// 0 the claim holds, 1 it does not (the evidence is printed), 2 it could
/// not be checked (an unreachable node, a checkpoint not signed by this
/// consortium, an unusable argument or file).
pub fn run(command: LightCommand) -> ExitCode {
    let command = match from_bundle(command) {
        Ok(c) => c,
        Err(e) => {
            report_failure("bundle", &e, false);
            return ExitCode::from(2);
        }
    };
    let (predicate, json, outcome) = match command {
        LightCommand::Trace(a) => ("trace", false, run_trace(a)),
        LightCommand::Verify(VerifyArgs {
            trust,
            command: Some(command),
        }) => {
            let (name, json) = (command.name(), trust.json);
            let args = [vec!["verify".to_string()], command.args()].concat();
            (
                name,
                json,
                with_verifier(trust, name, args, |v| verify_command(v, command, json)),
            )
        }
        LightCommand::Verify(VerifyArgs { command: None, .. }) => (
            "verify",
            false,
            Err(VerifyError::Input(
                "name a predicate, or give --bundle FILE without --node to check a bundle".into(),
            )),
        ),
        LightCommand::Audit {
            command: AuditCommand::Revocation(a),
        } => {
            let json = a.trust.json;
            let (source, scan) = (a.source, a.scan);
            let mut args = vec![
                "audit".to_string(),
                "revocation".into(),
                "--source".into(),
                source.clone(),
            ];
            if scan {
                args.push("--scan".into());
            }
            (
                "revocation audit",
                json,
                with_verifier(a.trust, "revocation audit", args, |v| {
                    run_audit(v, &source, scan, json)
                }),
            )
        }
        LightCommand::Witness { command } => ("witness", false, run_witness(command)),
        LightCommand::NoteKeys { genesis } => ("note-keys", false, note_keys(&genesis)),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            report_failure(predicate, &e, json);
            ExitCode::from(if e.is_violation() { 1 } else { 2 })
        }
    }
}

/// A predicate's command line, as a bundle keeps it.
#[derive(Debug, clap::Parser)]
#[command(no_binary_name = true)]
struct Predicate {
    #[command(subcommand)]
    command: LightCommand,
}

/// Reads the bundle a `verify --bundle FILE` without `--node` names, and
/// turns the command into the bundle's predicate run on it (a predicate
/// given on the command line must be the bundle's).
fn from_bundle(command: LightCommand) -> Result<LightCommand, VerifyError> {
    let (mut trust, given) = match command {
        LightCommand::Verify(VerifyArgs { trust, command })
            if trust.bundle.is_some() && trust.node.is_empty() =>
        {
            (trust, command)
        }
        other => return Ok(other),
    };
    let path = trust.bundle.clone().unwrap_or_default();
    let genesis = trust
        .genesis
        .clone()
        .ok_or_else(|| VerifyError::Input("needs --genesis FILE: a bundle is checked against it".into()))?;
    let b = read_bundle(&path, &genesis)?;
    let parsed = Predicate::try_parse_from(&b.predicate)
        .map_err(|e| VerifyError::Input(format!("{}: its predicate does not parse: {e}", path.display())))?;
    let malformed = || VerifyError::Input(format!("{}: not a predicate of verify or audit", path.display()));
    match parsed.command {
        LightCommand::Verify(VerifyArgs { command: Some(c), .. }) => {
            if let Some(g) = given {
                if g.args() != c.args() {
                    return Err(VerifyError::Input(format!(
                        "{} holds `{}`, not `{}`",
                        path.display(),
                        b.predicate.join(" "),
                        ["verify".to_string()]
                            .into_iter()
                            .chain(g.args())
                            .collect::<Vec<_>>()
                            .join(" ")
                    )));
                }
            }
            trust.replay = Some(b);
            Ok(LightCommand::Verify(VerifyArgs {
                trust,
                command: Some(c),
            }))
        }
        LightCommand::Audit {
            command: AuditCommand::Revocation(a),
        } if given.is_none() => {
            trust.replay = Some(b);
            Ok(LightCommand::Audit {
                command: AuditCommand::Revocation(RevocationArgs { trust, ..a }),
            })
        }
        _ => Err(malformed()),
    }
}

/// Reads and decodes a bundle, which must be of the consortium of
/// `genesis`.
pub fn read_bundle(path: &Path, genesis: &Path) -> Result<Bundle, VerifyError> {
    let len = std::fs::metadata(path)
        .map_err(|e| VerifyError::Input(format!("{}: {e}", path.display())))?
        .len();
    if len > crate::bundle::MAX_BUNDLE_BYTES as u64 {
        return Err(VerifyError::Input(format!(
            "{}: larger than 1 GiB",
            path.display()
        )));
    }
    let bytes = read_file(path)?;
    check_bundle_of(
        Bundle::decode(&bytes).map_err(|e| VerifyError::Input(format!("{}: {e}", path.display())))?,
        genesis,
    )
}

fn check_bundle_of(b: Bundle, genesis: &Path) -> Result<Bundle, VerifyError> {
    let digest = provenance::Canonical::digest(&genesis::load_genesis(genesis)?.0);
    if b.genesis != digest {
        return Err(VerifyError::Input(format!(
            "the bundle is of genesis {}, not of {} ({digest})",
            b.genesis,
            genesis.display()
        )));
    }
    Ok(b)
}

/// Checks a bundle's bytes offline against `genesis`, as `verify --bundle`
/// does: Ok(true) the predicate holds, Ok(false) it does not, Err when it
/// could not be checked (a malformed bundle, a missing answer) or a proof
/// or signature failed.
pub fn check_bundle(genesis: &Path, bytes: &[u8]) -> Result<bool, VerifyError> {
    let b = check_bundle_of(
        Bundle::decode(bytes).map_err(|e| VerifyError::Input(e.to_string()))?,
        genesis,
    )?;
    let parsed = Predicate::try_parse_from(&b.predicate)
        .map_err(|e| VerifyError::Input(format!("the bundle's predicate does not parse: {e}")))?;
    let trust = TrustArgs {
        genesis: Some(genesis.to_path_buf()),
        node: Vec::new(),
        json: true,
        state: None,
        max_age: None,
        timeout: 600,
        bundle: None,
        replay: Some(b),
    };
    match parsed.command {
        LightCommand::Verify(VerifyArgs { command: Some(c), .. }) => {
            with_verifier(trust, c.name(), Vec::new(), |v| verify_command(v, c, true))
        }
        LightCommand::Audit {
            command: AuditCommand::Revocation(a),
        } => with_verifier(trust, "revocation audit", Vec::new(), |v| {
            run_audit(v, &a.source, a.scan, true)
        }),
        _ => Err(VerifyError::Input("not a predicate of verify or audit".into())),
    }
}

impl VerifyCommand {
    /// Its command line after `verify` (what a bundle keeps).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![self.name().to_string()];
        let mut flag = |name: &str, value: String| {
            a.push(format!("--{name}"));
            a.push(value);
        };
        let mut switches = Vec::new();
        match self {
            VerifyCommand::Checkpoint => {}
            VerifyCommand::Consistency { first, second } => {
                flag("first", first.to_string());
                if let Some(s) = second {
                    flag("second", s.to_string());
                }
            }
            VerifyCommand::Trace { answer, recompute } => {
                flag("answer", answer.to_string_lossy().to_string());
                switches.push(("recompute", *recompute));
            }
            VerifyCommand::Policy { campaign, approved } => {
                flag("campaign", campaign.clone());
                flag("approved", approved.clone());
            }
            VerifyCommand::Source { id, scan, order } => {
                flag("id", id.clone());
                switches.extend([("scan", *scan), ("order", *order)]);
            }
            VerifyCommand::Audits { campaign, recompute } => {
                flag("campaign", campaign.clone());
                switches.push(("recompute", *recompute));
            }
            VerifyCommand::Model { campaign, weights } => {
                flag("campaign", campaign.clone());
                flag("weights", weights.to_string_lossy().to_string());
            }
        }
        a.extend(
            switches
                .into_iter()
                .filter(|(_, on)| *on)
                .map(|(n, _)| format!("--{n}")),
        );
        a
    }

    /// The predicate's name, as verdicts name it.
    pub fn name(&self) -> &'static str {
        match self {
            VerifyCommand::Checkpoint => "checkpoint",
            VerifyCommand::Consistency { .. } => "consistency",
            VerifyCommand::Trace { .. } => "trace",
            VerifyCommand::Policy { .. } => "policy",
            VerifyCommand::Source { .. } => "source",
            VerifyCommand::Model { .. } => "model",
            VerifyCommand::Audits { .. } => "audits",
        }
    }
}

/// Writes what a client recorded as a bundle of the predicate `args`.
fn write_bundle(
    path: &Path,
    genesis: &Path,
    args: Vec<String>,
    recorded: Option<Bundle>,
) -> Result<(), VerifyError> {
    let mut b = recorded.ok_or_else(|| VerifyError::Input("nothing was recorded".into()))?;
    b.genesis = provenance::Canonical::digest(&genesis::load_genesis(genesis)?.0);
    b.predicate = args;
    std::fs::write(path, b.encode()).map_err(|e| VerifyError::Input(format!("{}: {e}", path.display())))
}

fn read_file(path: &Path) -> Result<Vec<u8>, VerifyError> {
    std::fs::read(path).map_err(|e| VerifyError::Input(format!("{}: {e}", path.display())))
}

/// `trace`: asks, prints the lineage, writes and verifies the answer.
fn run_trace(a: TraceArgs) -> Result<bool, VerifyError> {
    let c = digest_arg(&a.campaign)?;
    let client = match &a.genesis {
        Some(g) => LightClient::from_genesis_file(g)?.trust(Client::new(&a.node)),
        None => Client::new(&a.node),
    };
    let answer = ask_trace(&client, &c, &a.prompt, &a.output, a.method.as_deref())?;
    print!("{}", render_trace(&answer));
    if let Some(path) = &a.out {
        let text = serde_json::to_string_pretty(&answer).map_err(|e| VerifyError::Input(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| VerifyError::Input(format!("{}: {e}", path.display())))?;
        println!("answer written to {}", path.display());
    }
    if a.bundle.is_some() && a.genesis.is_none() {
        return Err(VerifyError::Input(
            "--bundle needs --genesis: the bundle holds what the verification read".into(),
        ));
    }
    if let Some(g) = &a.genesis {
        let mut node = Client::new(&a.node)
            .with_timeout(REQUEST_TIMEOUT)
            .with_deadline(Instant::now() + Duration::from_secs(600));
        if a.bundle.is_some() {
            node = node.recording();
        }
        let mut v = Verifier::new(g, node)?;
        let mut verdict = v.trace(&answer, false)?;
        let asked = trace_request(&c, &a.prompt, &a.output, a.method.as_deref());
        for m in crate::verify::unasked(&answer, &asked) {
            verdict.violation(m);
        }
        print!("{}", verdict.render());
        if let Some(path) = &a.bundle {
            let name = "trace-answer.json";
            let text = serde_json::to_vec_pretty(&answer).map_err(|e| VerifyError::Input(e.to_string()))?;
            let args: Vec<String> = ["verify", "trace", "--answer", name].map(String::from).to_vec();
            let recorded = v.node().recorded().map(|mut b| {
                b.inputs.insert(name.to_string(), text);
                b
            });
            write_bundle(path, g, args, recorded)?;
            println!("bundle written to {}", path.display());
        }
        return Ok(verdict.pass);
    }
    Ok(true)
}

/// `audit revocation`: lists every event that admitted the source's
/// examples; it fails (exit 1) when one committed after the revocation,
/// the scan finds an entry the listing left out, or a campaign is open.
fn run_audit(v: &mut Verifier, source: &str, scan: bool, json: bool) -> Result<bool, VerifyError> {
    let s = digest_arg(source)?;
    let a = v.audit_revocation(&s, scan)?;
    let violations = a.violations();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&a).map_err(|e| VerifyError::Input(e.to_string()))?
        );
    } else {
        print!("{}", a.render());
        for x in &violations {
            println!("FAIL revocation audit: {x}");
        }
    }
    Ok(violations.is_empty())
}

/// Runs `check` (which prints its verdict) with a verifier of the first
/// node, then holds the run to what the flags ask: every other node's
/// checkpoint consistent with the newest accepted, the answers' checkpoints
/// no older than `--max-age`, and with `--state` the newest checkpoint
/// accepted saved. A violation (exit 1) outranks everything; a check that
/// held can still end in "could not check" (exit 2): a node not reached,
/// a checkpoint too old, a state that cannot be written.
fn with_verifier(
    mut t: TrustArgs,
    predicate: &str,
    args: Vec<String>,
    check: impl FnOnce(&mut Verifier) -> Result<bool, VerifyError>,
) -> Result<bool, VerifyError> {
    let genesis = t
        .genesis
        .clone()
        .ok_or_else(|| VerifyError::Input("needs --genesis FILE".into()))?;
    let deadline = Instant::now() + Duration::from_secs(t.timeout);
    let client = |addr: &str| {
        Client::new(addr)
            .with_timeout(REQUEST_TIMEOUT)
            .with_deadline(deadline)
    };
    let (node, others, record) = match t.replay.take() {
        Some(b) => (Client::from_bundle(b), &[][..], None),
        None => {
            let (first, others) = t.node.split_first().ok_or_else(|| {
                VerifyError::Input("needs --node ADDRESS (or --bundle FILE to check a bundle)".into())
            })?;
            match &t.bundle {
                Some(path) => (client(first).recording(), others, Some(path.clone())),
                None => (client(first), others, None),
            }
        }
    };
    let first = node.base().to_string();
    let mut v = Verifier::new(&genesis, node)?;
    if let Some(max) = t.max_age {
        let log = v.light().keyring().log();
        let floor_s = 2 * log.witness_interval_ms().div_ceil(1000);
        if log.witness_quorum() > 0 && max < floor_s {
            return Err(VerifyError::Input(format!(
                "--max-age {max} s cannot be met: genesis's witnesses cosign every {} ms, so a checkpoint may be {floor_s} s old (twice that) before it is witnessed again",
                log.witness_interval_ms()
            )));
        }
    }
    let mut state = match &t.state {
        Some(dir) => {
            let digest = provenance::Canonical::digest(&genesis::load_genesis(&genesis)?.0);
            let s = TrustState::open(dir, digest, v.light())?;
            if let Some(held) = s.held() {
                v.hold(held.clone());
            }
            Some(s)
        }
        None => None,
    };
    let mut outcome = check(&mut v);
    // Only a check that held can still be lost: a violation stands.
    let json = t.json;
    let also = |outcome: &mut Result<bool, VerifyError>, e: VerifyError| match outcome {
        Ok(true) => *outcome = Err(e),
        Ok(false) => report_failure(predicate, &e, json),
        Err(_) => {}
    };
    if outcome.is_ok() {
        for addr in others {
            match v.compare(&client(addr)) {
                Ok(cp) if !json => println!(
                    "  - {addr}'s checkpoint (height {}, log size {}) is consistent with {first}'s",
                    cp.checkpoint.height, cp.checkpoint.size
                ),
                Ok(_) => {}
                Err(e) => {
                    let violation = e.is_violation();
                    also(&mut outcome, e);
                    if violation {
                        break;
                    }
                }
            }
        }
    }
    if let (Some(max), Some(cp)) = (t.max_age, v.oldest_used()) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let fresh = v.light().freshness(cp);
        let age_s = now.saturating_sub(fresh.ms()) / 1000;
        let k = &cp.checkpoint;
        if age_s > max {
            also(
                &mut outcome,
                VerifyError::TooOld {
                    height: k.height,
                    size: k.size,
                    time: fresh.ms(),
                    basis: fresh.source(),
                    age_s,
                    max_age_s: max,
                },
            );
        } else if !json {
            println!(
                "  - fresh: checkpoint at height {} is {age_s} s old by {} (--max-age {max} s)",
                k.height,
                fresh.source()
            );
        }
    }
    // The bundle of a check that was made (it held, or its violation is
    // shown): everything it read, to check again offline.
    if let Some(path) = record {
        let made = match &outcome {
            Ok(_) => true,
            Err(e) => e.is_violation(),
        };
        if made {
            if let Err(e) = write_bundle(&path, &genesis, args, v.node().recorded()) {
                also(&mut outcome, e);
            } else if !json {
                println!("  - bundle written to {}", path.display());
            }
        }
    }
    // Whatever the verdict, a newer checkpoint this run accepted (checked
    // to extend the held one) is held from now on.
    if let (Some(s), Some(newest)) = (state.as_mut(), v.newest()) {
        if let Err(e) = s.advance(newest) {
            eprintln!("error: the verifier state was not written");
            also(&mut outcome, e);
        }
    }
    outcome
}

fn verify_command(v: &mut Verifier, command: VerifyCommand, json: bool) -> Result<bool, VerifyError> {
    let plain = |verdict: serde_json::Value, text: String| {
        if json {
            println!("{}", serde_json::to_string_pretty(&verdict).unwrap_or_default());
        } else {
            println!("{text}");
        }
        true
    };
    Ok(match command {
        VerifyCommand::Checkpoint => {
            let cp = v.latest()?;
            let c = &cp.checkpoint;
            plain(
                serde_json::json!({
                    "predicate": "checkpoint", "pass": true,
                    "height": c.height, "log_size": c.size, "root": c.root.to_string(),
                }),
                format!(
                    "PASS checkpoint: height {} log size {} root {} signed by the consortium of this genesis",
                    c.height, c.size, c.root
                ),
            )
        }
        VerifyCommand::Consistency { first, second } => {
            let a = v.light().checkpoint_at(v.node(), first)?;
            // The latest is the witnessed one; a past one named by height is
            // checked to be in its log, never held on its own signatures.
            let latest = v.latest()?;
            let b = match second {
                Some(h) => {
                    let b = v.light().checkpoint_at(v.node(), h)?;
                    if b.checkpoint.size <= latest.checkpoint.size {
                        v.light().verify_extends(v.node(), &b, &latest)?;
                    } else {
                        return Err(VerifyError::Input(format!(
                            "height {h} is past the node's latest witnessed checkpoint (height {})",
                            latest.checkpoint.height
                        )));
                    }
                    b
                }
                None => latest,
            };
            v.light().verify_extends(v.node(), &a, &b)?;
            let (a, b) = (&a.checkpoint, &b.checkpoint);
            plain(
                serde_json::json!({
                    "predicate": "consistency", "pass": true,
                    "first": {"height": a.height, "log_size": a.size, "root": a.root.to_string()},
                    "second": {"height": b.height, "log_size": b.size, "root": b.root.to_string()},
                }),
                format!(
                    "PASS consistency: the log of size {} at height {} extends the log of size {} at height {}",
                    b.size, b.height, a.size, a.height
                ),
            )
        }
        VerifyCommand::Trace { answer, recompute } => {
            let text = answer_of(v.node().input(&answer))?;
            let a: TraceAnswer = serde_json::from_slice(&text)
                .map_err(|e| VerifyError::Input(format!("{}: {e}", answer.display())))?;
            report(&v.trace(&a, recompute)?, json)
        }
        VerifyCommand::Policy { campaign, approved } => {
            let c = digest_arg(&campaign)?;
            let p = digest_arg(&approved)?;
            report(&v.policy(&c, &p)?, json)
        }
        VerifyCommand::Source { id, scan, order } => {
            let s = digest_arg(&id)?;
            let verdict = if order {
                v.source_and_order(&s, scan)?
            } else {
                v.source(&s, scan)?
            };
            report(&verdict, json)
        }
        VerifyCommand::Audits { campaign, recompute } => {
            let c = digest_arg(&campaign)?;
            report(&v.audits(&c, recompute)?, json)
        }
        VerifyCommand::Model { campaign, weights } => {
            let c = digest_arg(&campaign)?;
            let bytes = answer_of(v.node().input(&weights))?;
            report(&v.model(&c, &bytes)?, json)
        }
    })
}
