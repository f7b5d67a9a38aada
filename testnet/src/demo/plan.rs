//! What the demo is asked to do (`[demo]` of the campaign file, the
//! command's options) and what it reports (`demo.json`, the figures).

use std::path::{Path, PathBuf};

use provenance::Digest;
use serde::{Deserialize, Serialize};

use crate::TestnetError;

/// The `[demo]` table of the campaign file.
#[derive(Debug, Clone, Deserialize)]
pub struct DemoPlan {
    /// Title of the source revoked before the campaign.
    pub revoke_before: String,
    /// Title of the source offered with another manifest's signature.
    pub forged: String,
    /// Title of the source revoked after the campaign and audited.
    pub revoke_after: String,
    /// Authority whose node is SIGKILLed halfway.
    pub kill: String,
    /// A held-out prompt whose continuation by the fine-tuned model is traced.
    pub held_out_prompt: String,
    /// Title of the source whose canary is meant to stay below the
    /// memorisation threshold: that canary is traced.
    pub traced_canary: String,
    /// The short profile (`--short`).
    pub short: ShortProfile,
}

/// What `--short` changes.
#[derive(Debug, Clone, Deserialize)]
pub struct ShortProfile {
    /// Fine-tuning steps.
    pub max_steps: u64,
    /// Pretraining steps of the base campaign.
    pub pretrain_steps: u64,
    /// Per `[[canaries]]` entry, in order: plant it into every `n`-th
    /// window instead (a 48-step fine-tune on a weaker base needs canary A
    /// denser to memorise it). Empty: as the campaign file says.
    #[serde(default)]
    pub canaries_every: Vec<usize>,
}

#[derive(Deserialize)]
struct PlanFile {
    demo: DemoPlan,
}

impl DemoPlan {
    /// The `[demo]` table of a campaign file.
    pub fn load(config: &Path) -> Result<Self, TestnetError> {
        let text = std::fs::read_to_string(config)
            .map_err(|e| TestnetError::Io(format!("{}: {e}", config.display())))?;
        let plan: PlanFile = toml::from_str(&text)
            .map_err(|e| TestnetError::Run(format!("{}: [demo]: {e}", config.display())))?;
        Ok(plan.demo)
    }
}

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The demo's folder (testnet, answers, model, report).
    pub dir: PathBuf,
    /// The campaign file; `None`: the built-in `data/demo.toml`.
    pub config: Option<PathBuf>,
    /// The short profile.
    pub short: bool,
    /// Leave the testnet running at the end.
    pub keep_running: bool,
    /// The `govtune` binary the nodes run.
    pub binary: PathBuf,
}

/// One source of the demo, as `demo.json` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoSource {
    /// Title.
    pub title: String,
    /// Source id.
    pub id: Digest,
    /// Signing authority.
    pub authority: String,
    /// Whether its manifest is on the ledger.
    pub registered: bool,
    /// What the campaign's admission decided (`admitted` or a reason).
    pub admission: String,
    /// Examples of it that trained.
    pub admitted: u64,
    /// Examples of it refused (admission or rollback).
    pub refused: u64,
}

/// One traced output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoTrace {
    /// What it is.
    pub label: String,
    /// Prompt.
    pub prompt: String,
    /// Output.
    pub output: String,
    /// The answer file.
    pub answer: PathBuf,
    /// Title of the top-ranked source.
    pub top_source: String,
    /// The light client's verdict.
    pub verified: bool,
}

/// The node that was killed and how it came back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CatchUp {
    /// Node name.
    pub node: String,
    /// Attempted step at which it was killed.
    pub killed_at_attempt: u64,
    /// Seconds it was down.
    pub down_s: f64,
    /// The operator node's height when it was killed.
    pub height_at_kill: u64,
    /// The operator node's height when it came back.
    pub target_height: u64,
    /// Seconds from its process start until it reached the target height.
    pub caught_up_s: f64,
}

/// What the demo did (`demo.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoSummary {
    /// The genesis file.
    pub genesis: PathBuf,
    /// The testnet folder.
    pub testnet: PathBuf,
    /// The approved policy.
    pub policy: Digest,
    /// The base model's campaign.
    pub base_campaign: Digest,
    /// The fine-tuning campaign.
    pub campaign: Digest,
    /// The fine-tuned model (adapter snapshot).
    pub model: PathBuf,
    /// The sources.
    pub sources: Vec<DemoSource>,
    /// Steps committed, attempted, rolled back.
    pub steps: (u64, u64, u64),
    /// The node that was killed.
    pub catch_up: CatchUp,
    /// The traces.
    pub traces: Vec<DemoTrace>,
    /// Every predicate's verdict: (what, pass).
    pub predicates: Vec<(String, bool)>,
    /// The source revoked after the campaign.
    pub revoked: Digest,
    /// Events the revocation audit lists.
    pub audit_steps: usize,
    /// The report.
    pub report: PathBuf,
    /// Equal roots on every node at the end: (log size, root).
    pub roots: Vec<(String, u64, String)>,
    /// Seconds, start to finish.
    pub seconds: f64,
    /// Timings measured while it ran.
    pub figures: Figures,
    /// With `--keep-running`: commands that check the outcome against the
    /// live testnet, each exiting 0, the last stopping it.
    #[serde(default)]
    pub commands: Vec<String>,
}

/// Timings of one demo run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figures {
    /// Base campaign: seconds per pretraining step (through the ledger).
    pub pretrain_s_per_step: f64,
    /// Fine-tune: attempted steps per second (through the ledger).
    pub fine_tune_attempts_per_s: f64,
    /// Submit-to-commit latency of the campaign's entries: median, p99 (s).
    pub finality_p50_s: f64,
    /// See `finality_p50_s`.
    pub finality_p99_s: f64,
    /// Seconds per trace (the node's own figure), per query.
    pub trace_s: Vec<f64>,
}

pub(super) fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Samples of the fine-tune for the report's plots.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Seconds since the fine-tune started.
    pub t: f64,
    /// Committed steps.
    pub step: u64,
    /// Attempts.
    pub attempts: u64,
    /// Loss.
    pub loss: f32,
    /// Entries committed.
    pub events: u64,
    /// Rolled back so far.
    pub rolled_back: u64,
}
