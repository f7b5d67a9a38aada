//! `govtune-tuner eval trace`: how well traces find what a model learned
//! from, measured against planted canaries and against retraining.
//!
//! Method (details and the measured table: `docs/tracing.md`, README):
//!
//! 1. **Data.** Every source of the config (one play each) is cut into a
//!    training part (its first `train_windows` windows) and a held-out part
//!    (the following windows, never trained on). Distinct random canaries
//!    `prefix ‖ secret` (random letters) are planted into `canary_copies`
//!    random windows each of their source (round-robin over sources).
//! 2. **Governed fine-tune** with the full pipeline into a
//!    [`MemorySink`](crate::sink::MemorySink) (no node), checkpoints
//!    every `steps / checkpoints` steps; sketches, routing masks and
//!    snapshots come from the sink exactly as a node would serve them.
//! 3. **Canary recall.** Query: prompt = canary prefix, output = secret.
//!    Top-1 / top-3 source recall by per-source sum and by salient score
//!    ([`crate::score::SourceScore::salient`]) of TracIn (cosine), TracIn
//!    with Adam-normalised sketches, TRAK, and an 8-gram overlap baseline.
//! 4. **Linear datamodeling score** (source level). `subsets` random
//!    half-subsets of the sources are retrained from scratch with the same
//!    governed recipe; for each held-out query (prompt = first half of a
//!    held-out window, output = second half) the predicted effect of a
//!    subset is the sum of its sources' scores from the full run, the
//!    actual effect minus the query loss of the retrained model; LDS is the
//!    Spearman correlation across subsets, averaged over queries, with a
//!    95% bootstrap interval (resampling subsets and queries). The full run
//!    also retrains with each source left out (Spearman across sources
//!    between score and loss increase).
//! 5. **Event granularity.** The same fine-tune at example, batch and
//!    epoch granularity: log bytes per example against the precision of
//!    the top-ranked event for each canary (fraction of its examples that
//!    carry the canary) and example-level precision@copies.

mod canary;
mod metrics;
mod report;
mod run;
mod scoring;
mod settings;
#[cfg(test)]
mod tests;
mod train;
mod world;

pub use canary::{plant, PlantedCanary};
pub use metrics::{lds_with_ci, ngram_overlap, spearman};
pub use report::{EvalReport, GranularityRow, MethodRow};
pub use run::run_eval;
pub use settings::EvalSettings;
