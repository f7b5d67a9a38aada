//! An auditor's replay of a training step ([`provenance::audit`] says
//! which steps): the step computed again from the state before it, and
//! compared with what the operator stated.
//!
//! - **Governance** holds the whole batch (the operator sends it) and the
//!   optimizer state before the step (whose digest the previous record's
//!   measurement states): [`replay_step`] runs [`compute_step`] on it and
//!   compares the measurement (every block's delta digest and norm, the
//!   model and optimizer states, the loss, the memorisation signals) and
//!   every example's sketch exactly. A step trained without clipping, with
//!   a forged sketch or with a memorisation signal hidden differs.
//! - **A data source** holds only its own examples' text: [`replay_examples`]
//!   recomputes their sketches at the state before the step in a batch of
//!   their own and compares each within the policy's
//!   `example_tolerance` (the same kernels on a smaller batch may round
//!   differently). It never needs another source's text.
//!
//! Sketches are stored as bf16, so a replayed sketch is compared after the
//! same rounding. Dropout makes a step depend on the operator's random
//! masks: a campaign with dropout cannot be replayed and is refused as
//! [`ReplayFault::Unreplayable`].

use half::bf16;
use provenance::{AdmitDecision, Digest, Measurement};

use crate::blobs::blob_digest;
pub use crate::material::AuditMaterial;

use crate::compute::{compute_step, probe_losses, Clipping, StepContext, StepOutcome};
use crate::lora::Adapters;
use crate::optim::AdamW;
use crate::TunerError;

/// Why a replay does not confirm a step.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplayFault {
    /// The step cannot be replayed here (something missing or failing on
    /// the auditor's side).
    #[error("the step cannot be replayed: {0}")]
    Unreplayable(String),
    /// The campaign's settings make its steps unreplayable (adapter dropout
    /// masks each step with the operator's randomness).
    #[error("the campaign cannot be replayed: {0}")]
    Unsupported(String),
    /// What the operator sent for the replay is not this record's (a window
    /// that does not hash to its example, a salt missing).
    #[error("the batch sent is not the record's: {0}")]
    Material(String),
    /// The optimizer state sent for the replay is not the one the chain
    /// committed before the step.
    #[error("the optimizer state sent hashes to {sent}, the chain committed {committed}")]
    OptimizerState {
        /// What the chain committed.
        committed: Digest,
        /// What was sent.
        sent: Digest,
    },
    /// A recomputed quantity differs from the stated one.
    #[error("replayed {what}: {found}, stated {stated}")]
    Differs {
        /// Which quantity.
        what: String,
        /// The stated value.
        stated: String,
        /// The recomputed value.
        found: String,
    },
}

impl ReplayFault {
    /// Whether the fault proves the record is not what the operator
    /// computed (a recomputed quantity differs): evidence worth committing.
    /// The others say the replay could not run, or ran on inputs that are
    /// not the record's.
    pub fn proves_the_record_wrong(&self) -> bool {
        matches!(self, ReplayFault::Differs { .. })
    }
}

impl From<TunerError> for ReplayFault {
    fn from(e: TunerError) -> Self {
        ReplayFault::Unreplayable(e.to_string())
    }
}

/// One example of the step, as the record and sketch blob state it.
#[derive(Debug, Clone, Copy)]
pub struct StatedExample<'a> {
    /// Its window (the text it trained on).
    pub window: &'a [u8],
    /// Its admission decision (routing, clip norm).
    pub decision: &'a AdmitDecision,
    /// Its stated sketch (decoded from the sketch blob).
    pub sketch: &'a [f32],
}

/// What a governance replay confirmed.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The digest of what it confirmed (the audit record's).
    pub digest: Digest,
    /// The step as recomputed (its state after, to follow the chain).
    pub outcome: StepOutcome,
}

fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| bf16::from_f32(*x).to_f32()).collect()
}

fn differs(what: impl Into<String>, stated: impl ToString, found: impl ToString) -> ReplayFault {
    ReplayFault::Differs {
        what: what.into(),
        stated: stated.to_string(),
        found: found.to_string(),
    }
}

/// The digest of what a replay confirmed: the record's stated measurement
/// (governance) in canonical bytes, then each stated sketch it compared
/// with its own recomputation, as bf16 (little-endian), under the tag
/// `govtune-replay/v2`. Only a replay that agreed with the record leaves
/// one, so anyone holding the record and its sketch blob can recompute it
/// (`govtune verify audits --recompute`): the auditor vouched for exactly
/// these quantities.
pub fn replay_digest(measurement: Option<&Measurement>, sketches: &[Vec<f32>]) -> Digest {
    let mut bytes = b"govtune-replay/v2".to_vec();
    if let Some(m) = measurement {
        let enc = provenance::codec::encode(m);
        bytes.extend_from_slice(&(enc.len() as u64).to_be_bytes());
        bytes.extend_from_slice(&enc);
    }
    for s in sketches {
        bytes.extend_from_slice(&(s.len() as u64).to_be_bytes());
        for v in s {
            bytes.extend_from_slice(&bf16::from_f32(*v).to_le_bytes());
        }
    }
    blob_digest(&bytes)
}

fn compare_measurement(stated: &Measurement, found: &Measurement) -> Result<(), ReplayFault> {
    if stated.blocks.len() != found.blocks.len() {
        return Err(differs("changed blocks", stated.blocks.len(), found.blocks.len()));
    }
    for (s, f) in stated.blocks.iter().zip(&found.blocks) {
        if s.block != f.block {
            return Err(differs("changed block", s.block, f.block));
        }
        if s.delta_digest != f.delta_digest {
            return Err(differs(
                format!("block {} delta", s.block),
                s.delta_digest,
                f.delta_digest,
            ));
        }
        if s.norm.to_bits() != f.norm.to_bits() {
            return Err(differs(format!("block {} norm", s.block), s.norm, f.norm));
        }
    }
    let sig = [
        (
            "loss_drop_z",
            stated.signals.loss_drop_z,
            found.signals.loss_drop_z,
        ),
        ("extraction", stated.signals.extraction, found.signals.extraction),
        (
            "canary_exposure",
            stated.signals.canary_exposure,
            found.signals.canary_exposure,
        ),
        ("loss", stated.loss, found.loss),
    ];
    for (what, s, f) in sig {
        if s.to_bits() != f.to_bits() {
            return Err(differs(what, s, f));
        }
    }
    if stated.model_state != found.model_state {
        return Err(differs("model state", stated.model_state, found.model_state));
    }
    if stated.optimizer_state != found.optimizer_state {
        return Err(differs(
            "optimizer state",
            stated.optimizer_state,
            found.optimizer_state,
        ));
    }
    // Anything else the encoding holds.
    if provenance::codec::encode(stated) != provenance::codec::encode(found) {
        return Err(differs("measurement", "its bytes", "other bytes"));
    }
    Ok(())
}

/// Governance's replay of a whole step: `examples` in the batch's order,
/// from `adapters` and `opt` (whose digest must be `committed_opt`, the
/// optimizer state the chain committed before the step), against the
/// stated `measurement`. `dropout` is the campaign's dropout rate.
#[allow(clippy::too_many_arguments)]
pub fn replay_step(
    ctx: &StepContext<'_>,
    dropout: f32,
    adapters: &Adapters,
    opt: &AdamW,
    committed_opt: &Digest,
    examples: &[StatedExample<'_>],
    measurement: &Measurement,
    step: u64,
) -> Result<Replay, ReplayFault> {
    if examples.is_empty() {
        return Err(ReplayFault::Unreplayable("no example".into()));
    }
    let outcome = replay_step_unmeasured(ctx, dropout, adapters, opt, committed_opt, examples, step)?;
    compare_measurement(measurement, &outcome.measurement)?;
    let stated: Vec<Vec<f32>> = examples.iter().map(|e| e.sketch.to_vec()).collect();
    let digest = replay_digest(Some(measurement), &stated);
    Ok(Replay { digest, outcome })
}

/// A data source's replay of its own examples of a step at `adapters` (the
/// state before the step), each sketch compared within `tolerance` (the
/// relative L2 difference between the replayed values, unrounded, and the
/// blob's). The blob stores bf16, which rounds each coordinate by at most
/// 2^-9 of its magnitude, so a tolerance below that refuses honest steps;
/// a batch of other shape adds differences near f32 precision. Returns the
/// replay's digest.
pub fn replay_examples(
    ctx: &StepContext<'_>,
    dropout: f32,
    adapters: &Adapters,
    examples: &[StatedExample<'_>],
    tolerance: f32,
    step: u64,
) -> Result<Digest, ReplayFault> {
    if dropout != 0.0 {
        return Err(ReplayFault::Unsupported(format!(
            "dropout {dropout} masks the step with the operator's randomness"
        )));
    }
    if examples.is_empty() {
        return Err(ReplayFault::Unreplayable("no example of this source".into()));
    }
    let windows: Vec<&[u8]> = examples.iter().map(|e| e.window).collect();
    let decisions: Vec<&AdmitDecision> = examples.iter().map(|e| e.decision).collect();
    let sketches = crate::compute::example_sketches(ctx, adapters, &windows, &decisions, step)?;
    for (i, (e, found)) in examples.iter().zip(&sketches).enumerate() {
        if found.len() != e.sketch.len() {
            return Err(differs(
                format!("sketch length of example {i}"),
                e.sketch.len(),
                found.len(),
            ));
        }
        let (mut diff, mut norm) = (0f64, 0f64);
        for (a, b) in found.iter().zip(e.sketch) {
            diff += (f64::from(*a) - f64::from(*b)).powi(2);
            norm += f64::from(*b).powi(2);
        }
        let rel = if norm > 0.0 {
            (diff / norm).sqrt()
        } else {
            diff.sqrt()
        };
        if !rel.is_finite() || rel > f64::from(tolerance) {
            return Err(differs(
                format!("sketch of its example {i} (relative L2 difference {rel:.2e})"),
                "the blob's",
                format!("values beyond the tolerance {tolerance}"),
            ));
        }
    }
    let stated: Vec<Vec<f32>> = examples.iter().map(|e| e.sketch.to_vec()).collect();
    Ok(replay_digest(None, &stated))
}

/// Governance's replay of a whole training record (a step event, or a
/// composite event's steps in turn) from `adapters` with the operator's
/// `material`: each window is checked against its record's example hash
/// with its source's salt, the optimizer against `committed_opt`, and the
/// record's measurement and sketches against the recomputed ones.
pub fn replay_record(
    ctx: &StepContext<'_>,
    dropout: f32,
    adapters: &Adapters,
    committed_opt: &Digest,
    body: &provenance::EntryBody,
    sketches: &[crate::blobs::SketchRecord],
    material: &AuditMaterial,
) -> Result<Replay, ReplayFault> {
    let ev = body.event().ok_or_else(|| {
        ReplayFault::Unreplayable(format!("a {} is not a training record", body.kind().name()))
    })?;
    let records = ev.records;
    if material.windows.len() != records.len() || sketches.len() != records.len() {
        return Err(ReplayFault::Unreplayable(format!(
            "{} records, {} windows sent, {} sketches",
            records.len(),
            material.windows.len(),
            sketches.len()
        )));
    }
    for (i, (r, w)) in records.iter().zip(&material.windows).enumerate() {
        let salt = material
            .salts
            .get(&r.source)
            .ok_or_else(|| ReplayFault::Material(format!("no salt sent for source {}", r.source)))?;
        if provenance::manifest::example_hash(salt, r.index, w) != r.example_hash {
            return Err(ReplayFault::Material(format!(
                "the window sent for example {i} does not hash to its example hash {}",
                r.example_hash
            )));
        }
        let sk = &sketches[i];
        if (sk.source, sk.index) != (r.source, r.index) {
            return Err(ReplayFault::Unreplayable(format!(
                "sketch {i} is not the record's example {i}"
            )));
        }
    }
    // The record's steps, in order: consecutive runs of one step number.
    let mut steps: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
    for (i, sk) in sketches.iter().enumerate() {
        match steps.last_mut() {
            Some((s, r)) if *s == sk.step => r.end = i + 1,
            _ => steps.push((sk.step, i..i + 1)),
        }
    }
    let (first, last) = (ev.first_step, ev.last_step);
    let numbers: Vec<u64> = steps.iter().map(|(s, _)| *s).collect();
    if numbers.first() != Some(&first)
        || numbers.last() != Some(&last)
        || numbers.windows(2).any(|w| w[1] <= w[0])
    {
        return Err(ReplayFault::Unreplayable(format!(
            "the sketches' steps {numbers:?} are not the record's {first}..={last}"
        )));
    }
    let mut state = adapters.clone();
    let mut opt = material.opt_before.clone();
    let mut losses = Vec::new();
    let mut signals = provenance::MemorisationSignals::default();
    let mut last_outcome = None;
    for (k, range) in steps {
        let ex: Vec<StatedExample<'_>> = range
            .map(|i| StatedExample {
                window: &material.windows[i],
                decision: &records[i].decision,
                sketch: &sketches[i].values,
            })
            .collect();
        let want = if k == first { *committed_opt } else { opt.digest() };
        // Each step is checked against its own recomputation; the
        // record's measurement covers the whole span (below).
        let rep = replay_step_unmeasured(ctx, dropout, &state, &opt, &want, &ex, k)?;
        losses.push(rep.measurement.loss);
        signals.loss_drop_z = signals.loss_drop_z.max(rep.measurement.signals.loss_drop_z);
        signals.extraction = signals.extraction.max(rep.measurement.signals.extraction);
        signals.canary_exposure = signals
            .canary_exposure
            .max(rep.measurement.signals.canary_exposure);
        state = rep.after.clone();
        opt = rep.opt.clone();
        last_outcome = Some(rep);
    }
    let deltas = crate::blobs::diff(adapters, &state);
    let measurement = Measurement {
        blocks: crate::campaign::block_measures(ctx.layout, &deltas, adapters, &state),
        optimizer_state: opt.digest(),
        model_state: state.state_digest(ctx.base_digest),
        loss: losses.iter().sum::<f32>() / losses.len().max(1) as f32,
        signals,
    };
    compare_measurement(ev.measurement, &measurement)?;
    let Some(mut outcome) = last_outcome else {
        return Err(ReplayFault::Unreplayable("no step".into()));
    };
    outcome.measurement = measurement;
    outcome.deltas = deltas;
    let stated: Vec<Vec<f32>> = sketches.iter().map(|s| s.values.clone()).collect();
    let digest = replay_digest(Some(ev.measurement), &stated);
    Ok(Replay { digest, outcome })
}

/// One step replayed and its sketches compared; its measurement is
/// returned, not compared (a composite record states the span's).
fn replay_step_unmeasured(
    ctx: &StepContext<'_>,
    dropout: f32,
    adapters: &Adapters,
    opt: &AdamW,
    committed_opt: &Digest,
    examples: &[StatedExample<'_>],
    step: u64,
) -> Result<StepOutcome, ReplayFault> {
    if dropout != 0.0 {
        return Err(ReplayFault::Unsupported(format!(
            "dropout {dropout} masks the step with the operator's randomness"
        )));
    }
    let sent = opt.digest();
    if sent != *committed_opt {
        return Err(ReplayFault::OptimizerState {
            committed: *committed_opt,
            sent,
        });
    }
    let probe_before = probe_losses(ctx, adapters)?;
    let windows: Vec<&[u8]> = examples.iter().map(|e| e.window).collect();
    let decisions: Vec<&AdmitDecision> = examples.iter().map(|e| e.decision).collect();
    let outcome = compute_step(
        ctx,
        adapters,
        opt,
        &probe_before,
        &windows,
        &decisions,
        None,
        Clipping::On,
        step,
    )?;
    compare_sketches(examples, &outcome.sketches).map_err(|f| match f {
        ReplayFault::Differs { what, stated, found } => ReplayFault::Differs {
            what: format!("step {step}: {what}"),
            stated,
            found,
        },
        other => other,
    })?;
    Ok(outcome)
}

fn compare_sketches(examples: &[StatedExample<'_>], found: &[Vec<f32>]) -> Result<(), ReplayFault> {
    for (i, (e, s)) in examples.iter().zip(found).enumerate() {
        let found = rounded(s);
        let same = found.len() == e.sketch.len()
            && found
                .iter()
                .zip(e.sketch)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        if !same {
            let (mut d, mut n, mut k) = (0f64, 0f64, 0usize);
            for (a, b) in found.iter().zip(e.sketch) {
                d += (f64::from(*a) - f64::from(*b)).powi(2);
                n += f64::from(*b).powi(2);
                k += usize::from(a.to_bits() != b.to_bits());
            }
            return Err(differs(
                format!("sketch of the step's example {i}"),
                "the blob's",
                format!(
                    "other values ({k} of {} coordinates, relative L2 difference {:.1e})",
                    found.len(),
                    (d / n.max(f64::MIN_POSITIVE)).sqrt()
                ),
            ));
        }
    }
    Ok(())
}
