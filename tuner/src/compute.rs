//! What one governed step computes from the state before it and its
//! admitted batch: the batched pass, per-example norms, clip factors and
//! sketches, the clipped update, the optimizer step, the measurement and
//! the memorisation signals.
//!
//! The campaign session and the auditors' replay ([`crate::replay`]) both
//! call [`compute_step`], so an honest step and its replay run the same
//! kernels on the same batch and agree bit for bit.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use provenance::{AdmitDecision, Digest, Measurement, MemorisationSignals};

use crate::blobs::{diff, PieceDelta};
use crate::campaign::block_measures;
use crate::campaign::TrainSettings;
use crate::error::{Result, TunerError};
use crate::lora::{adapter_init_seed, AdapterLayout, Adapters, LoraForward};
use crate::memo::{self, Canary};
use crate::model::{batch_tensors, forward, per_example_loss, ModelConfig, Weights};
use crate::optim::{AdamW, AdamWConfig};
use crate::pergrad::{sq_norms, weighted_sum, Projection, SiteTensors};

/// The fixed context of a campaign's steps.
pub struct StepContext<'a> {
    /// The model.
    pub cfg: &'a ModelConfig,
    /// The base weights.
    pub base: &'a BTreeMap<String, Tensor>,
    /// The base weights' digest (the model-state digest covers it).
    pub base_digest: &'a Digest,
    /// The adapters' layout.
    pub layout: &'a AdapterLayout,
    /// The sketch projection.
    pub proj: &'a Projection,
    /// The held-out probe windows.
    pub probe: &'a [Vec<u8>],
    /// The planted canaries and their candidate secrets.
    pub canaries: &'a [Canary],
    /// One candidate list per canary.
    pub candidates: &'a [Vec<Vec<u8>>],
}

/// Most candidate secrets an auditor draws for one canary of an audit
/// context it is sent.
pub const MAX_CANDIDATES: usize = 4096;

/// A campaign's step context, owned: built once from its settings, base
/// weights, probe set and canaries.
pub struct Prepared {
    /// The model.
    pub cfg: ModelConfig,
    /// The base weights.
    pub base: BTreeMap<String, Tensor>,
    /// Their digest.
    pub base_digest: Digest,
    /// The adapters' layout.
    pub layout: Arc<AdapterLayout>,
    /// The sketch projection.
    pub proj: Projection,
    /// The probe windows.
    pub probe: Vec<Vec<u8>>,
    /// The canaries.
    pub canaries: Vec<Canary>,
    /// One candidate list per canary.
    pub candidates: Vec<Vec<Vec<u8>>>,
    adapter_seed: u64,
    optim: AdamWConfig,
}

impl Prepared {
    /// The context of a campaign with these settings over `base`.
    pub fn new(
        settings: &TrainSettings,
        base: &Weights,
        probe: Vec<Vec<u8>>,
        canaries: Vec<Canary>,
    ) -> Result<Self> {
        let layout = Arc::new(settings.layout()?);
        let candidates = canaries
            .iter()
            .map(|c| memo::candidates(c, settings.sketch_seed))
            .collect();
        Ok(Self {
            cfg: settings.model,
            base: base.to_tensors(&Device::Cpu)?,
            base_digest: base.digest(),
            proj: Projection::new(&layout, settings.sketch_seed, settings.sketch_side)?,
            layout,
            probe,
            canaries,
            candidates,
            adapter_seed: adapter_init_seed(settings.sketch_seed),
            optim: settings.optim,
        })
    }

    /// The context of a campaign as an auditor rebuilds it: from its
    /// recipe (checked against the campaign), the base weights' blob bytes
    /// (checked against the recipe and the campaign's base state) and the
    /// audit context the operator sent (checked against the recipe's
    /// `audit_context`).
    pub fn from_recipe(
        recipe: &crate::recipe::Recipe,
        campaign: &provenance::Campaign,
        base_bytes: &[u8],
        context: &crate::material::AuditContext,
    ) -> Result<Self> {
        recipe.check_against(campaign)?;
        let base = recipe.base(campaign, base_bytes)?;
        let found = context.digest();
        if found != recipe.audit_context {
            return Err(TunerError::DigestMismatch {
                what: "audit context".into(),
                expected: recipe.audit_context,
                found,
            });
        }
        let window = recipe.settings.model.window();
        if context.probe.len() < 2 || context.probe.iter().any(|p| p.len() != window) {
            return Err(TunerError::Config(format!(
                "the audit context's probe set must hold at least 2 windows of {window} bytes"
            )));
        }
        for c in &context.canaries {
            if c.candidates > MAX_CANDIDATES || c.text().len() > window || c.secret.is_empty() {
                return Err(TunerError::Config(format!(
                    "the audit context's canary {:?} does not fit a window of {window} bytes with at most {MAX_CANDIDATES} candidates",
                    c.prefix
                )));
            }
        }
        Self::new(
            &recipe.settings,
            &base,
            context.probe.clone(),
            context.canaries.clone(),
        )
    }

    /// The context a data source rebuilds to replay its own examples: the
    /// recipe and base weights as in [`Self::from_recipe`], without the
    /// probe set and canaries (per-example quantities do not read them).
    pub fn for_examples(
        recipe: &crate::recipe::Recipe,
        campaign: &provenance::Campaign,
        base_bytes: &[u8],
    ) -> Result<Self> {
        recipe.check_against(campaign)?;
        let base = recipe.base(campaign, base_bytes)?;
        Self::new(&recipe.settings, &base, Vec::new(), Vec::new())
    }

    /// The borrowed context [`compute_step`] takes.
    pub fn ctx(&self) -> StepContext<'_> {
        StepContext {
            cfg: &self.cfg,
            base: &self.base,
            base_digest: &self.base_digest,
            layout: &self.layout,
            proj: &self.proj,
            probe: &self.probe,
            canaries: &self.canaries,
            candidates: &self.candidates,
        }
    }

    /// The campaign's initial adapters and optimizer.
    pub fn initial(&self) -> (Adapters, AdamW) {
        let adapters = Adapters::init(self.layout.clone(), self.adapter_seed);
        let opt = AdamW::new(self.optim, self.layout.pieces.iter().map(|p| p.len()));
        (adapters, opt)
    }
}

/// Whether the per-example clip applies (a cheating operator's test mode
/// turns it off; nothing else does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clipping {
    /// Each example's gradient is clipped per block to its clip norm.
    On,
    /// Unclipped.
    Off,
}

/// What a step computed.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// Per-example loss before the update.
    pub losses: Vec<f32>,
    /// Per-example sketches `[example][dim]`.
    pub sketches: Vec<Vec<f32>>,
    /// Per-example, per-block clip factors `[example][block]` (1 where the
    /// block is not clipped or not routed).
    pub clip: Vec<Vec<f32>>,
    /// The adapters after the update.
    pub after: Adapters,
    /// The optimizer after the update.
    pub opt: AdamW,
    /// What the update changed.
    pub deltas: Vec<PieceDelta>,
    /// The probe losses after the update.
    pub probe_after: Vec<f32>,
    /// The measurement an event states.
    pub measurement: Measurement,
}

/// The probe losses at `adapters` (the `probe_before` of the next step).
pub fn probe_losses(ctx: &StepContext<'_>, adapters: &Adapters) -> Result<Vec<f32>> {
    let refs: Vec<&[u8]> = ctx.probe.iter().map(|p| p.as_slice()).collect();
    Ok(memo::evaluate(ctx.cfg, ctx.base, adapters, &refs)?.0)
}

/// The batched forward and backward pass: per-example losses, site
/// tensors, squared norms `[piece][example]` and routing `[piece][example]`.
struct Pass {
    losses: Vec<f32>,
    site: SiteTensors,
    norms: Vec<Vec<f32>>,
    routed: Vec<Vec<bool>>,
}

fn pass(
    ctx: &StepContext<'_>,
    adapters: &Adapters,
    windows: &[&[u8]],
    decisions: &[&AdmitDecision],
    masks: Option<Vec<Tensor>>,
    step: u64,
) -> Result<Pass> {
    let dev = Device::Cpu;
    let (inp, tgt) = batch_tensors(windows, &dev)?;
    let (b, t) = inp.dims2()?;
    let mut f = LoraForward::probing(adapters, b, t, masks, &dev)?;
    let logits = forward(ctx.cfg, ctx.base, &inp, Some(&mut f))?;
    let losses_t = per_example_loss(&logits, &tgt)?;
    let grads = losses_t.sum_all()?.backward()?;
    let losses = losses_t.to_vec1::<f32>()?;
    if losses.iter().any(|l| !l.is_finite()) {
        return Err(TunerError::NonFinite { step, what: "loss" });
    }
    let site = SiteTensors::collect(&f, &grads)?;
    drop(f);
    let norms = sq_norms(ctx.layout, &site)?;
    let heads = ctx.cfg.heads;
    let routed: Vec<Vec<bool>> = ctx
        .layout
        .pieces
        .iter()
        .map(|p| {
            decisions
                .iter()
                .map(|d| d.routing.allows(p.unit(d.routing.granularity, heads)))
                .collect()
        })
        .collect();
    Ok(Pass {
        losses,
        site,
        norms,
        routed,
    })
}

/// The sketches of `windows` (with their decisions) at `adapters`, from a
/// batched pass over them alone: what a data source replays of its own
/// examples.
pub fn example_sketches(
    ctx: &StepContext<'_>,
    adapters: &Adapters,
    windows: &[&[u8]],
    decisions: &[&AdmitDecision],
    step: u64,
) -> Result<Vec<Vec<f32>>> {
    let p = pass(ctx, adapters, windows, decisions, None, step)?;
    ctx.proj.sketches(ctx.layout, &p.site, &p.routed)
}

/// One step on `windows` (each with its admission decision) from
/// `adapters` and `opt`; `masks` are the dropout masks, if any;
/// `probe_before` the probe losses at `adapters`. `step` names the step in
/// errors.
#[allow(clippy::too_many_arguments)]
pub fn compute_step(
    ctx: &StepContext<'_>,
    adapters: &Adapters,
    opt: &AdamW,
    probe_before: &[f32],
    windows: &[&[u8]],
    decisions: &[&AdmitDecision],
    masks: Option<Vec<Tensor>>,
    clipping: Clipping,
    step: u64,
) -> Result<StepOutcome> {
    let cfg = ctx.cfg;
    let Pass {
        losses,
        site,
        norms,
        routed,
    } = pass(ctx, adapters, windows, decisions, masks, step)?;
    let b = windows.len();
    // Per (example, block) clip factors over the routed pieces.
    let nb = ctx.layout.blocks() as usize;
    let mut block_sq = vec![vec![0f64; nb]; b];
    for (pi, p) in ctx.layout.pieces.iter().enumerate() {
        for i in 0..b {
            if routed[pi][i] {
                block_sq[i][p.block() as usize] += f64::from(norms[pi][i]);
            }
        }
    }
    let clip: Vec<Vec<f32>> = (0..b)
        .map(|i| {
            (0..nb)
                .map(|blk| match clipping {
                    Clipping::On => {
                        let c = f64::from(decisions[i].depth.clip_norm);
                        (c / (block_sq[i][blk].sqrt() + 1e-6)).min(1.0) as f32
                    }
                    Clipping::Off => 1.0,
                })
                .collect()
        })
        .collect();
    let weights: Vec<Vec<f32>> = ctx
        .layout
        .pieces
        .iter()
        .enumerate()
        .map(|(pi, p)| {
            (0..b)
                .map(|i| {
                    if !routed[pi][i] {
                        return 0.0;
                    }
                    let c = f64::from(decisions[i].depth.clip_norm);
                    let n = block_sq[i][p.block() as usize].sqrt();
                    let factor = match clipping {
                        Clipping::On => (c / (n + 1e-6)).min(1.0),
                        Clipping::Off => 1.0,
                    };
                    (factor / b as f64) as f32
                })
                .collect()
        })
        .collect();
    let applied = weighted_sum(ctx.layout, &site, &weights)?;
    if applied.iter().flatten().flatten().any(|g| !g.is_finite()) {
        return Err(TunerError::NonFinite {
            step,
            what: "gradient",
        });
    }
    let sketches = ctx.proj.sketches(ctx.layout, &site, &routed)?;
    drop(site);
    // Optimizer step.
    let mut after = adapters.clone();
    let mut opt = opt.clone();
    opt.apply(&mut after.values, &applied);
    let deltas = diff(adapters, &after);
    // Measurement and memorisation signals.
    let (losses_after, extraction) = memo::evaluate(cfg, ctx.base, &after, windows)?;
    let probe_after = probe_losses(ctx, &after)?;
    let mut canary_exposure = 0.0f32;
    for (c, cands) in ctx.canaries.iter().zip(ctx.candidates) {
        if windows.iter().any(|w| c.in_window(w)) {
            let x = memo::exposure(cfg, ctx.base, &after, c, cands)?;
            canary_exposure = canary_exposure.max(x);
        }
    }
    let signals = MemorisationSignals {
        loss_drop_z: memo::loss_drop_z(&losses, &losses_after, probe_before, &probe_after),
        extraction: extraction.iter().copied().fold(0.0, f32::max),
        canary_exposure,
    };
    let loss = losses.iter().sum::<f32>() / b as f32;
    let measurement = Measurement {
        blocks: block_measures(ctx.layout, &deltas, adapters, &after),
        optimizer_state: opt.digest(),
        model_state: after.state_digest(ctx.base_digest),
        loss,
        signals,
    };
    Ok(StepOutcome {
        losses,
        sketches,
        clip,
        after,
        opt,
        deltas,
        probe_after,
        measurement,
    })
}
