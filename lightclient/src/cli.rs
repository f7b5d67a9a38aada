//! The light client's commands, shared by `govtune-verify` and `govtune`:
//! `trace` (ask a node, optionally verify the answer), `verify ...` (one
//! predicate or proof) and `audit revocation`. Everything they print about
//! the ledger comes from [`Verifier`], which holds only the genesis file
//! and checks every answer. Exit status: 0 holds, 1 does not hold, 2 could
//! not check.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use provenance::api::{TraceAnswer, TraceRequest};
use provenance::Digest;

use crate::client::Client;
use crate::light::VerifyError;
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
}

/// `verify`'s arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The genesis file.
    #[arg(long)]
    pub genesis: PathBuf,
    /// A node's API address.
    #[arg(long)]
    pub node: String,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// What to verify.
    #[command(subcommand)]
    pub command: VerifyCommand,
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
        /// Download the whole log (checked against the checkpoint's root)
        /// so that no campaign can be left out of the node's listing.
        #[arg(long)]
        scan: bool,
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
    Revocation {
        /// The genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// A node's API address.
        #[arg(long)]
        node: String,
        /// The source id.
        #[arg(long)]
        source: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
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
    let req = TraceRequest {
        campaign: *campaign,
        prompt: prompt.to_string(),
        output: output.to_string(),
        method: method.map(str::to_string),
        top_examples: None,
        top_events: None,
    };
    crate::light::answer(node.trace(&req))
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

/// A verifier of `node` from the genesis file.
pub fn verifier(genesis: &Path, node: &str) -> Result<Verifier, VerifyError> {
    Verifier::new(genesis, Client::new(node))
}

/// Parses a digest argument.
pub fn digest_arg(s: &str) -> Result<Digest, VerifyError> {
    Digest::from_hex(s.trim()).map_err(|e| VerifyError::Input(format!("{s:?} is not a digest: {e}")))
}

/// Runs a light-client command and maps its outcome to the exit status.
pub fn run(command: LightCommand) -> ExitCode {
    let outcome = match command {
        LightCommand::Trace(a) => run_trace(a),
        LightCommand::Verify(a) => run_verify(a),
        LightCommand::Audit {
            command:
                AuditCommand::Revocation {
                    genesis,
                    node,
                    source,
                    json,
                },
        } => run_audit(&genesis, &node, &source, json),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, VerifyError> {
    std::fs::read(path).map_err(|e| VerifyError::Input(format!("{}: {e}", path.display())))
}

/// `trace`: asks, prints the lineage, writes and verifies the answer.
fn run_trace(a: TraceArgs) -> Result<bool, VerifyError> {
    let c = digest_arg(&a.campaign)?;
    let client = Client::new(&a.node);
    let answer = ask_trace(&client, &c, &a.prompt, &a.output, a.method.as_deref())?;
    print!("{}", render_trace(&answer));
    if let Some(path) = &a.out {
        let text = serde_json::to_string_pretty(&answer).map_err(|e| VerifyError::Input(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| VerifyError::Input(format!("{}: {e}", path.display())))?;
        println!("answer written to {}", path.display());
    }
    if let Some(g) = &a.genesis {
        let mut v = verifier(g, &a.node)?;
        let verdict = match v.trace(&answer, false) {
            Ok(verdict) => verdict,
            Err(err) if err.is_violation() => {
                println!("FAIL trace: {err}");
                return Ok(false);
            }
            Err(err) => return Err(err),
        };
        print!("{}", verdict.render());
        return Ok(verdict.pass);
    }
    Ok(true)
}

/// `audit revocation`.
fn run_audit(genesis: &Path, node: &str, source: &str, json: bool) -> Result<bool, VerifyError> {
    let s = digest_arg(source)?;
    let mut v = verifier(genesis, node)?;
    let a = v.revocation_audit(&s)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&a).map_err(|e| VerifyError::Input(e.to_string()))?
        );
    } else {
        print!("{}", a.render());
    }
    Ok(true)
}

/// `verify ...`: a predicate's own failure is a verdict (exit 1); a
/// failure to set up (genesis, node, arguments) is an error (exit 2).
fn run_verify(args: VerifyArgs) -> Result<bool, VerifyError> {
    let VerifyArgs {
        genesis,
        node,
        json,
        command,
    } = args;
    let mut v = verifier(&genesis, &node)?;
    let verdict = |name: &str, r: Result<Verdict, VerifyError>| match r {
        Ok(verdict) => Ok(report(&verdict, json)),
        Err(err) if err.is_violation() => {
            println!("FAIL {name}: {err}");
            Ok(false)
        }
        Err(err) => Err(err),
    };
    Ok(match command {
        VerifyCommand::Checkpoint => {
            let cp = v.light().latest_checkpoint(v.node())?;
            println!(
                "PASS checkpoint: height {} log size {} root {} signed by the consortium of this genesis",
                cp.checkpoint.height, cp.checkpoint.size, cp.checkpoint.root
            );
            true
        }
        VerifyCommand::Consistency { first, second } => {
            let a = v.light().checkpoint_at(v.node(), first)?;
            let b = match second {
                Some(h) => v.light().checkpoint_at(v.node(), h)?,
                None => v.light().latest_checkpoint(v.node())?,
            };
            v.light().verify_extends(v.node(), &a, &b)?;
            println!(
                "PASS consistency: the log of size {} at height {} extends the log of size {} at height {}",
                b.checkpoint.size, b.checkpoint.height, a.checkpoint.size, a.checkpoint.height
            );
            true
        }
        VerifyCommand::Trace { answer, recompute } => {
            let text = read_file(&answer)?;
            let a: TraceAnswer = serde_json::from_slice(&text)
                .map_err(|e| VerifyError::Input(format!("{}: {e}", answer.display())))?;
            verdict("trace", v.trace(&a, recompute))?
        }
        VerifyCommand::Policy { campaign, approved } => {
            let c = digest_arg(&campaign)?;
            let p = digest_arg(&approved)?;
            verdict("policy", v.policy(&c, &p))?
        }
        VerifyCommand::Source { id, scan } => {
            let s = digest_arg(&id)?;
            verdict("source", v.source(&s, scan))?
        }
        VerifyCommand::Model { campaign, weights } => {
            let c = digest_arg(&campaign)?;
            let bytes = read_file(&weights)?;
            verdict("model", v.model(&c, &bytes))?
        }
    })
}
