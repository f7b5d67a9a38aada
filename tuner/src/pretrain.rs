//! The base model's own campaign: full-parameter pretraining on signed
//! sources, disjoint from any fine-tuning source.
//!
//! Every parameter trains (no adapters, no routing: the policy of a base
//! campaign must give its data class full depth). Each span of
//! `event_every` steps becomes one [`CompositeEvent`] with its admitted
//! examples, a measurement (per-block XOR-delta digest and norm, optimizer
//! and weights digests, loss) and a delta blob (XOR of every changed
//! weight tensor, in name order); the campaign closes with the final
//! weights digest, which the fine-tuning campaign names as its base state.
//! Memorisation signals and gradient sketches are not measured in the
//! base campaign (its signals are recorded as zero).

use std::collections::BTreeMap;

use candle_core::{Device, Var};
use provenance::admission::{admit, Admission, AdmissionContext};
use provenance::event::composite_root;
use provenance::order::ConsideredSource;
use provenance::{
    BaseModel, BlockMeasure, Campaign, CampaignClose, Canonical, ChainLink, CompositeEvent, Digest,
    EntryBody, ExampleRecord, KeyRing, Measurement, MemorisationSignals, OrderSpan, PolicyArtifact,
    RefusalAggregate, RefusalReason, SketchSpec, SourceCount, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::blobs::{blob_digest, encode_delta, encode_sketches, PieceDelta};
use crate::campaign::Clock;
use crate::data::{PreparedSource, Schedule, SignedSource};
use crate::error::{Result, TunerError};
use crate::model::{batch_tensors, forward, per_example_loss, ModelConfig, Weights};
use crate::optim::{AdamW, AdamWConfig};
use crate::sink::{EventSink, Verdict};

/// Pretraining hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainSettings {
    /// Architecture.
    pub model: ModelConfig,
    /// Optimizer.
    pub optim: AdamWConfig,
    /// Sequences per step.
    pub batch_size: usize,
    /// Steps.
    pub steps: u64,
    /// Seed of initialisation and data order.
    pub seed: u64,
    /// Steps per event.
    pub event_every: u64,
}

/// The result of pretraining.
#[derive(Debug, Clone)]
pub struct BaseOutcome {
    /// The trained weights.
    pub weights: Weights,
    /// The base campaign's digest.
    pub campaign: Digest,
    /// Final weights digest.
    pub state: Digest,
    /// Mean loss of the last event span.
    pub last_loss: f32,
}

/// The base campaign's recipe blob: what a co-signer needs to follow its
/// weights (`tuner::witness`): the architecture and the initialisation
/// seed, from which [`Weights::init`] gives the campaign's starting state,
/// and the considered set its data order is drawn over
/// ([`provenance::order`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRecipe {
    /// Always [`BASE_RECIPE_FORMAT`].
    pub format: String,
    /// The architecture.
    pub model: ModelConfig,
    /// The initialisation seed.
    pub init_seed: u64,
    /// The candidate sources and their example counts.
    pub considered: Vec<ConsideredSource>,
}

/// The format tag of a base recipe blob.
pub const BASE_RECIPE_FORMAT: &str = "govtune-base-recipe/v2";

impl BaseRecipe {
    /// The blob bytes (canonical JSON, as [`crate::recipe::Recipe`]'s).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a base recipe blob (it must re-encode to itself).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| TunerError::Blob {
            kind: "base recipe",
            reason,
        };
        if bytes.len() > crate::recipe::MAX_RECIPE_BYTES {
            return Err(bad(format!("{} bytes", bytes.len())));
        }
        let r: BaseRecipe = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if r.format != BASE_RECIPE_FORMAT {
            return Err(bad(format!("format {:?}", r.format)));
        }
        r.model.validate()?;
        provenance::order::Order::new(&r.considered, provenance::OrderSeed(Digest::ZERO))
            .map_err(|e| bad(e.to_string()))?;
        if r.to_bytes() != bytes {
            return Err(bad("not in canonical form".into()));
        }
        Ok(r)
    }
}

/// Per parameter block of the base model: the digest of its tensors' XOR
/// deltas and the L2 norm of its change (tensors in name order, as the
/// delta blob numbers them).
pub fn base_block_measures(
    names: &[String],
    layers: usize,
    deltas: &[PieceDelta],
    before: &[&Vec<f32>],
    after: &[&Vec<f32>],
) -> Vec<BlockMeasure> {
    let mut by: BTreeMap<u32, (Vec<u8>, f64)> = BTreeMap::new();
    for d in deltas {
        let i = d.piece as usize;
        let e = by.entry(block_of(&names[i], layers)).or_default();
        e.0.extend_from_slice(&d.piece.to_be_bytes());
        for x in &d.xor {
            e.0.extend_from_slice(&x.to_le_bytes());
        }
        e.1 += before[i]
            .iter()
            .zip(after[i])
            .map(|(a, b)| (f64::from(*b) - f64::from(*a)).powi(2))
            .sum::<f64>();
    }
    by.into_iter()
        .map(|(block, (bytes, sq))| BlockMeasure {
            block,
            delta_digest: blob_digest(&bytes),
            norm: sq.sqrt() as f32,
        })
        .collect()
}

fn block_of(name: &str, layers: usize) -> u32 {
    match name.strip_prefix('l').and_then(|r| r.split_once('.')) {
        Some((l, rest)) => {
            let l: u32 = l.parse().unwrap_or(0);
            2 * l + u32::from(rest.starts_with("mlp") || rest.starts_with("ln2"))
        }
        None => 2 * layers as u32,
    }
}

/// Pretrains the base model in its own campaign.
#[allow(clippy::too_many_arguments)]
pub fn pretrain(
    settings: &PretrainSettings,
    keyring: &KeyRing,
    policy: &PolicyArtifact,
    campaign_template: Campaign,
    sources: Vec<SignedSource>,
    clock: &mut dyn Clock,
    sink: &mut dyn EventSink,
    progress: &mut dyn FnMut(u64, f32),
) -> Result<BaseOutcome> {
    let cfg = settings.model;
    let mut w = Weights::init(cfg, settings.seed)?;
    let base_recipe = BaseRecipe {
        format: BASE_RECIPE_FORMAT.into(),
        model: cfg,
        init_seed: settings.seed,
        considered: crate::data::considered(&sources),
    }
    .to_bytes();
    let recipe = blob_digest(&base_recipe);
    sink.put_blob(&recipe, &base_recipe)?;
    let sources = sources
        .into_iter()
        .map(|s| PreparedSource::new(s, cfg.window()))
        .collect::<Result<Vec<_>>>()?;
    let campaign = Campaign {
        base_model: BaseModel {
            campaign: None,
            state: w.digest(),
        },
        architecture: cfg.architecture_digest(),
        recipe,
        shape: cfg.shape(),
        sketch: SketchSpec { seed: 0, dim: 0 },
        policy: policy.digest(),
        ..campaign_template
    };
    let cd = campaign.digest();
    if let Verdict::Refused { reason } = sink.submit(&EntryBody::Campaign(campaign.clone()))? {
        return Err(TunerError::Sink(format!("base campaign refused: {reason}")));
    }
    // The order is drawn from randomness fixed after the campaign committed.
    let seed = match sink.order_seed(&cd)? {
        Some(s) => s,
        None => crate::data::seeded_order(settings.seed),
    };
    let names: Vec<String> = w.tensors.keys().cloned().collect();
    let mut opt = AdamW::new(settings.optim, w.tensors.values().map(|(_, v)| v.len()));
    let mut sched = Schedule::new(&sources, seed)?;
    // Refusals since the last aggregate, and where its span starts.
    let mut agg: BTreeMap<(Digest, RefusalReason), u64> = BTreeMap::new();
    let mut agg_from = 0u64;
    let mut agg_first: Option<u64> = None;
    let dev = Device::Cpu;
    let (mut seq, mut prev) = (0u64, Digest::ZERO);
    let link = |seq, prev| ChainLink {
        campaign: cd,
        seq,
        prev,
    };
    let mut admitted: BTreeMap<usize, u64> = BTreeMap::new();
    let mut refused: BTreeMap<usize, u64> = BTreeMap::new();
    let mut span_start = w.clone();
    let mut records = Vec::new();
    let mut losses = Vec::new();
    let mut span_first = 0;
    let mut span_from = 0u64;
    let mut last_loss = f32::NAN;
    for step in 0..settings.steps {
        let (batch, span, epoch_end) = sched.next_batch(settings.batch_size);
        let time = clock.now();
        let ctx = AdmissionContext {
            keyring,
            policy,
            campaign: &campaign,
            revocations: &[],
            time,
        };
        let mut verdicts: BTreeMap<usize, Admission> = BTreeMap::new();
        let mut ok = Vec::new();
        for e in batch {
            let s = &sources[e.source];
            let v = verdicts
                .entry(e.source)
                .or_insert_with(|| admit(&ctx, &s.signed.manifest, &s.signed.signature));
            match v {
                Admission::Admit(d) => {
                    ok.push(e);
                    records.push(ExampleRecord {
                        source: s.id,
                        index: e.index,
                        example_hash: s.examples.hash(e.index).unwrap_or_default(),
                        proof: s.examples.proof(e.index).map(|p| p.path).unwrap_or_default(),
                        decision: d.clone(),
                    });
                    *admitted.entry(e.source).or_default() += 1;
                }
                Admission::Refuse { reason, .. } => {
                    *refused.entry(e.source).or_default() += 1;
                    *agg.entry((s.id, *reason)).or_default() += 1;
                    agg_first.get_or_insert(step);
                }
            }
        }
        if !ok.is_empty() {
            let windows: Vec<&[u8]> = ok.iter().map(|e| sources[e.source].window(e.index)).collect();
            let (inp, tgt) = batch_tensors(&windows, &dev)?;
            let vars: BTreeMap<String, Var> = w
                .tensors
                .iter()
                .map(|(n, (s, v))| Ok((n.clone(), Var::from_slice(v, s.as_slice(), &dev)?)))
                .collect::<Result<_>>()?;
            let tensors = vars
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect();
            let loss = per_example_loss(&forward(&cfg, &tensors, &inp, None)?, &tgt)?.mean_all()?;
            let l = loss.to_scalar::<f32>()?;
            if !l.is_finite() {
                return Err(TunerError::NonFinite { step, what: "loss" });
            }
            let grads = loss.backward()?;
            let g: Vec<Option<Vec<f32>>> = names
                .iter()
                .map(|n| {
                    grads
                        .get(vars[n].as_tensor())
                        .map(|g| g.flatten_all().and_then(|g| g.to_vec1::<f32>()))
                        .transpose()
                })
                .collect::<candle_core::Result<_>>()?;
            let mut vals: Vec<Vec<f32>> = w.tensors.values().map(|(_, v)| v.clone()).collect();
            opt.apply(&mut vals, &g);
            for ((_, (_, v)), nv) in w.tensors.iter_mut().zip(vals) {
                *v = nv;
            }
            losses.push(l);
            last_loss = l;
        }
        progress(step, last_loss);
        // An event every `event_every` steps, and at each epoch's end (a
        // record's span of the order lies within one epoch).
        if (step + 1) % settings.event_every.max(1) == 0 || step + 1 == settings.steps || epoch_end {
            let deltas: Vec<PieceDelta> = span_start
                .tensors
                .values()
                .zip(w.tensors.values())
                .enumerate()
                .filter_map(|(i, ((_, a), (_, b)))| {
                    let xor: Vec<u32> = a.iter().zip(b).map(|(x, y)| x.to_bits() ^ y.to_bits()).collect();
                    xor.iter()
                        .any(|&x| x != 0)
                        .then_some(PieceDelta { piece: i as u32, xor })
                })
                .collect();
            let before: Vec<&Vec<f32>> = span_start.tensors.values().map(|(_, v)| v).collect();
            let after: Vec<&Vec<f32>> = w.tensors.values().map(|(_, v)| v).collect();
            let blocks = base_block_measures(&names, cfg.layers, &deltas, &before, &after);
            let delta = encode_delta(span_first, step, &deltas);
            let sketch = encode_sketches(0, &[]);
            let (dd, sd) = (blob_digest(&delta), blob_digest(&sketch));
            sink.put_blob(&dd, &delta)?;
            sink.put_blob(&sd, &sketch)?;
            let body = EntryBody::Composite(CompositeEvent {
                version: 2,
                link: link(seq, prev),
                order: OrderSpan {
                    start: span_from,
                    end: span.end,
                },
                first_step: span_first,
                last_step: step,
                policy: campaign.policy,
                records_root: composite_root(&records),
                records: std::mem::take(&mut records),
                measurement: Measurement {
                    blocks,
                    optimizer_state: opt.digest(),
                    model_state: w.digest(),
                    loss: losses.iter().sum::<f32>() / losses.len().max(1) as f32,
                    signals: MemorisationSignals::default(),
                },
                sketch_blob: sd,
                delta_blob: dd,
                step_time: time,
            });
            if let Verdict::Refused { reason } = sink.submit(&body)? {
                return Err(TunerError::Sink(format!("base campaign event refused: {reason}")));
            }
            seq += 1;
            prev = body.digest();
            // The refusals since the last aggregate, counted by reason.
            if let Some(first) = agg_first.take() {
                let counts = provenance::refusal::counts(std::mem::take(&mut agg));
                let body = EntryBody::RefusalAggregate(RefusalAggregate {
                    version: 2,
                    link: link(seq, prev),
                    order: OrderSpan {
                        start: agg_from,
                        end: sched.position,
                    },
                    policy: campaign.policy,
                    first_step: first,
                    last_step: step,
                    counts,
                    time,
                });
                if let Verdict::Refused { reason } = sink.submit(&body)? {
                    return Err(TunerError::Sink(format!(
                        "base campaign aggregate refused: {reason}"
                    )));
                }
                seq += 1;
                prev = body.digest();
                agg_from = sched.position;
            }
            span_start = w.clone();
            span_first = step + 1;
            span_from = span.end;
            losses.clear();
        }
    }
    let state = w.digest();
    let mut per: BTreeMap<Digest, SourceCount> = BTreeMap::new();
    for (i, s) in sources.iter().enumerate() {
        let e = per.entry(s.id).or_insert(SourceCount {
            source: s.id,
            admitted: 0,
            refused: 0,
        });
        e.admitted += admitted.get(&i).copied().unwrap_or(0);
        e.refused += refused.get(&i).copied().unwrap_or(0);
    }
    let close = CampaignClose {
        version: 2,
        campaign: cd,
        head: prev,
        entries: seq,
        steps: settings.steps,
        per_source: per.into_values().collect(),
        final_state: state,
        order_end: sched.position,
        time: Timestamp(clock.now().0),
    };
    if let Verdict::Refused { reason } = sink.submit(&EntryBody::CampaignClose(close))? {
        return Err(TunerError::Sink(format!("base campaign close refused: {reason}")));
    }
    Ok(BaseOutcome {
        weights: w,
        campaign: cd,
        state,
        last_loss,
    })
}
