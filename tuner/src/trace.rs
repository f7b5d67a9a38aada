//! What tracing (issue 7) needs from the tuner: the projected gradient of
//! an arbitrary (prompt, output) text on a given model, with the same
//! projection as the campaign's sketches, and model-state snapshots.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};

use crate::error::{Result, TunerError};
use crate::lora::{Adapters, LoraForward};
use crate::model::{forward, ModelConfig};
use crate::pergrad::{Projection, SiteTensors};

/// The projected gradient (sketch coordinates, all pieces routed) of the
/// summed next-token loss of `output` given `prompt`, on the model made of
/// `base` and `adapters`. Only the output's tokens contribute to the loss; the text
/// is cut to the last `context + 1` bytes.
pub fn project_text_gradient(
    cfg: &ModelConfig,
    base: &BTreeMap<String, Tensor>,
    adapters: &Adapters,
    proj: &Projection,
    prompt: &[u8],
    output: &[u8],
) -> Result<Vec<f32>> {
    if output.is_empty() {
        return Err(TunerError::Config("the output to trace is empty".into()));
    }
    let text = [prompt, output].concat();
    let start = text.len().saturating_sub(cfg.context + 1);
    let text = &text[start..];
    if text.len() < 2 {
        return Err(TunerError::Config(
            "the text to trace is shorter than 2 bytes".into(),
        ));
    }
    let dev = Device::Cpu;
    let t = text.len() - 1;
    let inp = Tensor::from_vec(
        text[..t].iter().map(|&c| u32::from(c)).collect::<Vec<_>>(),
        (1, t),
        &dev,
    )?;
    let tgt = Tensor::from_vec(
        text[1..].iter().map(|&c| u32::from(c)).collect::<Vec<_>>(),
        (t, 1),
        &dev,
    )?;
    let out_from = t.saturating_sub(output.len());
    let weights: Vec<f32> = (0..t).map(|i| if i >= out_from { 1.0 } else { 0.0 }).collect();
    let mut f = LoraForward::probing(adapters, 1, t, None, &dev)?;
    let logits = forward(cfg, base, &inp, Some(&mut f))?;
    let lsm =
        candle_nn::ops::log_softmax(&logits.reshape((t, crate::model::VOCAB))?, candle_core::D::Minus1)?;
    let nll = (lsm.gather(&tgt, 1)?.reshape(t)? * -1.0)?;
    let loss = (nll * Tensor::from_vec(weights, t, &dev)?)?.sum_all()?;
    let g = loss.backward()?;
    let st = SiteTensors::collect(&f, &g)?;
    let routed = vec![vec![true]; adapters.layout.pieces.len()];
    let mut sk = proj.sketches(&adapters.layout, &st, &routed)?;
    Ok(sk.pop().unwrap_or_default())
}

/// Loads a model-state snapshot blob and checks it against the recorded
/// model-state digest.
pub fn load_snapshot(
    layout: std::sync::Arc<crate::lora::AdapterLayout>,
    base_digest: &provenance::Digest,
    bytes: &[u8],
    expected: &provenance::Digest,
) -> Result<Adapters> {
    let a = Adapters::from_snapshot(layout, bytes)?;
    let found = a.state_digest(base_digest);
    if &found != expected {
        return Err(TunerError::DigestMismatch {
            what: "model-state snapshot".into(),
            expected: *expected,
            found,
        });
    }
    Ok(a)
}

/// The query's projected gradients on each given model state
/// (`(committed steps, adapters)`, e.g. the step-0 adapters, every checkpoint
/// snapshot and the final model), in the order given: the input of
/// [`crate::score::score`].
pub fn query_gradients(
    cfg: &ModelConfig,
    base: &BTreeMap<String, Tensor>,
    states: &[(u64, &Adapters)],
    proj: &Projection,
    prompt: &[u8],
    output: &[u8],
) -> Result<Vec<crate::score::QueryGradient>> {
    states
        .iter()
        .map(|(step, a)| {
            Ok(crate::score::QueryGradient {
                step: *step,
                values: project_text_gradient(cfg, base, a, proj, prompt, output)?,
            })
        })
        .collect()
}

/// The summed next-token loss (nats) of `output` given `prompt` on the
/// model made of `base` and `adapters`, over the same tokens as
/// [`project_text_gradient`] (forward pass only).
pub fn text_loss(
    cfg: &ModelConfig,
    base: &BTreeMap<String, Tensor>,
    adapters: &Adapters,
    prompt: &[u8],
    output: &[u8],
) -> Result<f32> {
    if output.is_empty() {
        return Err(TunerError::Config("the output to score is empty".into()));
    }
    let text = [prompt, output].concat();
    let start = text.len().saturating_sub(cfg.context + 1);
    let text = &text[start..];
    if text.len() < 2 {
        return Err(TunerError::Config(
            "the text to score is shorter than 2 bytes".into(),
        ));
    }
    let dev = Device::Cpu;
    let t = text.len() - 1;
    let inp = Tensor::from_vec(
        text[..t].iter().map(|&c| u32::from(c)).collect::<Vec<_>>(),
        (1, t),
        &dev,
    )?;
    let tgt = Tensor::from_vec(
        text[1..].iter().map(|&c| u32::from(c)).collect::<Vec<_>>(),
        (t, 1),
        &dev,
    )?;
    let out_from = t.saturating_sub(output.len());
    let mut f = LoraForward::plain(adapters, &dev)?;
    let logits = forward(cfg, base, &inp, Some(&mut f))?;
    let lsm =
        candle_nn::ops::log_softmax(&logits.reshape((t, crate::model::VOCAB))?, candle_core::D::Minus1)?;
    let nll = lsm.gather(&tgt, 1)?.reshape(t)?.to_vec1::<f32>()?;
    Ok(-nll[out_from..].iter().sum::<f32>())
}

/// Everything one trace needs besides the query: the entry point of the
/// node's `POST /v1/trace` and of `govtune verify trace --recompute`.
pub struct TraceContext<'a> {
    /// The base model's architecture.
    pub cfg: &'a ModelConfig,
    /// The base weights' tensors.
    pub base: &'a BTreeMap<String, Tensor>,
    /// The query model states, `(committed steps, adapters)`: the step-0
    /// adapters, each checkpoint snapshot ([`load_snapshot`]) and the final
    /// model (rebuilt from the delta blobs or the last snapshot).
    pub states: Vec<(u64, &'a Adapters)>,
    /// The campaign's sketch projection.
    pub proj: &'a Projection,
    /// The logged examples ([`crate::score::logged_examples`] per event).
    pub examples: &'a [crate::score::LoggedExample],
    /// The learning rate per step.
    pub lr: crate::score::LrSchedule,
}

impl TraceContext<'_> {
    /// The preconditioner `method` needs (None for TracIn without Adam
    /// normalisation or common directions). It does
    /// not depend on the query: fit once, pass it to every
    /// [`TraceContext::trace`].
    pub fn preconditioner(
        &self,
        method: crate::score::Method,
    ) -> Result<Option<crate::score::Preconditioner>> {
        use crate::score::{BlockCoords, Method, Preconditioner};
        let coords = BlockCoords::new(self.proj.layout(), self.proj.side);
        Ok(match method {
            Method::TracIn {
                unit: true, common, ..
            } if common > 0 => Some(Preconditioner::fit_common(&coords, self.examples, common)?),
            Method::TracIn { adam: false, .. } => None,
            Method::TracIn { adam: true, .. } => Some(Preconditioner::fit_adam(&coords, self.examples)?),
            Method::Trak { lambda, unit } => Some(Preconditioner::fit(&coords, self.examples, lambda, unit)?),
        })
    }

    /// Traces `output` (after `prompt`): query gradients on every state,
    /// then [`crate::score::score`]. Deterministic: the same context and
    /// query give a bit-identical report ([`crate::score::TraceReport::digest`]).
    pub fn trace(
        &self,
        prompt: &[u8],
        output: &[u8],
        method: crate::score::Method,
        pre: Option<&crate::score::Preconditioner>,
    ) -> Result<crate::score::TraceReport> {
        let coords = crate::score::BlockCoords::new(self.proj.layout(), self.proj.side);
        let q = query_gradients(self.cfg, self.base, &self.states, self.proj, prompt, output)?;
        crate::score::score(&coords, &q, self.examples, &self.lr, method, pre)
    }
}
