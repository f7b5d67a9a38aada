//! A governed fine-tuning campaign: the step pipeline and its events.
//!
//! [`Session::open`] checks the sources against their manifests, submits
//! the [`Campaign`] entry and measures the probe set; [`Session::run`]
//! then takes steps until the schedule or step budget is exhausted, a
//! co-signer refuses an entry (the session then sits at its last committed
//! state and `run` can be called again to resume), or an error occurs.
//! [`run`] does both and closes the campaign.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use provenance::admission::{admit, check_memorisation, Admission, AdmissionContext};
use provenance::event::composite_root;
use provenance::Canonical;
use provenance::{
    AdmitDecision, AuthorityId, BaseModel, BlockMeasure, Campaign, CampaignClose, ChainLink, CompositeEvent,
    Digest, EffectiveRevocation, EntryBody, EventGranularity, ExampleRecord, ExampleRef, KeyRing,
    Measurement, MemorisationSignals, PolicyArtifact, Purpose, Refusal, RefusalAggregate, RefusalCount,
    RefusalReason, SketchSpec, SourceCount, StepEvent, Timestamp,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::blobs::{blob_digest, diff, encode_delta, encode_sketches, PieceDelta, SketchRecord};
use crate::data::{ExampleId, PreparedSource, Schedule, SignedSource};
use crate::error::{Result, TunerError};
use crate::lora::{adapter_init_seed, AdapterLayout, Adapters, LoraConfig, LoraForward};
use crate::memo::{self, Canary};
use crate::model::{batch_tensors, forward, per_example_loss, ModelConfig, Weights};
use crate::optim::{AdamW, AdamWConfig};
use crate::pergrad::{sq_norms, weighted_sum, Projection, SiteTensors};
use crate::sink::{EventSink, Verdict};

/// Training hyper-parameters of a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// The base model's architecture.
    pub model: ModelConfig,
    /// Adapters.
    pub lora: LoraConfig,
    /// Optimizer.
    pub optim: AdamWConfig,
    /// Examples per step (1 at event granularity `example`).
    pub batch_size: usize,
    /// Passes over the data.
    pub epochs: u64,
    /// Most steps attempted (committed or rolled back).
    pub max_steps: u64,
    /// Seed of the data order and of adapter dropout.
    pub seed: u64,
    /// Campaign sketch seed (also seeds the adapters' initialisation).
    pub sketch_seed: u64,
    /// Sketch side `s`: `s²` coordinates per adapter piece.
    pub sketch_side: usize,
    /// Keep a model snapshot every this many committed steps (0: final only).
    pub checkpoint_every: u64,
}

impl TrainSettings {
    /// The adapter layout.
    pub fn layout(&self) -> Result<AdapterLayout> {
        AdapterLayout::new(self.model, self.lora)
    }
}

/// Builds the [`Campaign`] record for these settings.
#[allow(clippy::too_many_arguments)]
pub fn build_campaign(
    settings: &TrainSettings,
    policy: &PolicyArtifact,
    operator: AuthorityId,
    name: &str,
    purpose: Purpose,
    base_campaign: Option<Digest>,
    base_state: Digest,
    created: Timestamp,
) -> Result<Campaign> {
    let layout = settings.layout()?;
    let dim = Projection::dim_for(&layout, settings.sketch_side);
    let checkpoint_steps = match settings.max_steps.checked_div(settings.checkpoint_every) {
        None => Vec::new(),
        Some(n) => (1..=n).map(|k| k * settings.checkpoint_every).collect(),
    };
    Ok(Campaign {
        version: 2,
        operator,
        name: name.into(),
        purpose,
        policy: policy.digest(),
        base_model: BaseModel {
            campaign: base_campaign,
            state: base_state,
        },
        architecture: settings.model.architecture_digest(),
        // Set by a caller that publishes the recipe blob
        // (`crate::recipe::Recipe`); zero: none published.
        recipe: Digest::ZERO,
        shape: settings.model.shape(),
        sketch: SketchSpec {
            seed: settings.sketch_seed,
            dim: u32::try_from(dim).map_err(|_| TunerError::Config("sketch dimension too large".into()))?,
        },
        checkpoint_steps,
        created,
    })
}

/// Everything a campaign needs.
#[derive(Debug, Clone)]
pub struct CampaignSpec {
    /// Hyper-parameters.
    pub settings: TrainSettings,
    /// Genesis keys (to check manifest signatures).
    pub keyring: KeyRing,
    /// The policy in force.
    pub policy: PolicyArtifact,
    /// The campaign record (see [`build_campaign`]).
    pub campaign: Campaign,
    /// Committed revocations.
    pub revocations: Vec<EffectiveRevocation>,
    /// The base model's weights.
    pub base: Weights,
    /// The sources.
    pub sources: Vec<SignedSource>,
    /// Held-out probe windows (`context + 1` bytes each).
    pub probe: Vec<Vec<u8>>,
    /// Planted canaries to measure exposure of (a step's exposure is the
    /// largest among the canaries its examples contain).
    pub canaries: Vec<Canary>,
}

/// The step time source. Time is an input: tests use [`SimClock`].
pub trait Clock {
    /// The time of the step about to run.
    fn now(&mut self) -> Timestamp;
}

/// A clock that advances a fixed amount per reading.
#[derive(Debug, Clone)]
pub struct SimClock {
    /// Next reading.
    pub next: u64,
    /// Increment per reading (ms).
    pub step_ms: u64,
}

impl Clock for SimClock {
    fn now(&mut self) -> Timestamp {
        let t = self.next;
        self.next += self.step_ms;
        Timestamp(t)
    }
}

/// The system clock.
#[derive(Debug, Clone, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&mut self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Timestamp(ms)
    }
}

/// A progress report after each step.
#[derive(Debug, Clone, Default)]
pub struct ProgressInfo {
    /// Committed steps.
    pub step: u64,
    /// Attempted steps.
    pub attempts: u64,
    /// Most recent training loss.
    pub loss: f32,
    /// Canary exposure (bits) measured on the most recent attempt, rolled
    /// back or not: the largest over the canaries its batch carried, 0 if
    /// it carried none.
    pub exposure: f32,
    /// Examples admitted and kept.
    pub admitted: u64,
    /// Examples refused (admission or rollback).
    pub refused: u64,
    /// Steps rolled back.
    pub rolled_back: u64,
    /// Entries committed.
    pub events: u64,
    /// Seconds since the run started.
    pub elapsed: f64,
}

/// Receives progress reports.
pub trait Progress {
    /// Called after every attempted step.
    fn update(&mut self, info: &ProgressInfo);
}

impl Progress for () {
    fn update(&mut self, _: &ProgressInfo) {}
}

/// Why a run stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The schedule or step budget is exhausted.
    Finished,
    /// A co-signer refused an entry; the session sits at its last
    /// committed step and can resume.
    CoSignerRefused {
        /// Kind of the refused entry.
        kind: &'static str,
        /// The co-signer's reason.
        reason: String,
    },
}

/// A model snapshot kept for tracing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    /// Committed steps at the snapshot.
    pub step: u64,
    /// Model-state digest.
    pub state: Digest,
    /// Snapshot blob digest.
    pub blob: Digest,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct CampaignOutcome {
    /// The campaign digest.
    pub campaign: Digest,
    /// Why it stopped.
    pub stop: Stop,
    /// Committed steps.
    pub steps: u64,
    /// Attempted steps.
    pub attempts: u64,
    /// Examples admitted and kept, per source position.
    pub admitted: u64,
    /// Examples refused.
    pub refused: u64,
    /// Steps rolled back for memorisation.
    pub rolled_back: u64,
    /// Model state digest at the last committed step.
    pub final_state: Digest,
    /// Head of the campaign's chain.
    pub head: Digest,
    /// Chain entries committed.
    pub entries: u64,
    /// Sketch blob bytes.
    pub sketch_bytes: u64,
    /// Delta blob bytes.
    pub delta_bytes: u64,
    /// Snapshots kept.
    pub snapshots: Vec<SnapshotRef>,
    /// The CampaignClose, if the campaign was closed.
    pub close: Option<CampaignClose>,
}

/// The trainable state, restored by rollback and by a co-signer refusal.
#[derive(Debug, Clone)]
struct TrainState {
    adapters: Adapters,
    opt: AdamW,
    step: u64,
    rng: ChaCha20Rng,
    schedule: Schedule,
    probe_before: Vec<f32>,
    attempts: u64,
}

/// Ledger-side state: the chain and the counts.
#[derive(Debug, Clone, Default)]
struct Ledger {
    seq: u64,
    prev: Digest,
    admitted: BTreeMap<usize, u64>,
    refused: BTreeMap<usize, u64>,
}

/// Records and blobs of the event being accumulated.
#[derive(Debug, Clone)]
struct Span {
    start: Adapters,
    first_step: u64,
    records: Vec<ExampleRecord>,
    sketches: Vec<SketchRecord>,
    losses: Vec<f32>,
    signals: MemorisationSignals,
    admitted: BTreeMap<usize, u64>,
}

/// A campaign in progress.
pub struct Session {
    spec: CampaignSpec,
    layout: Arc<AdapterLayout>,
    base_t: BTreeMap<String, Tensor>,
    base_digest: Digest,
    sources: Vec<PreparedSource>,
    proj: Projection,
    /// Candidate secrets, one list per canary.
    candidates: Vec<Vec<Vec<u8>>>,
    campaign_digest: Digest,
    st: TrainState,
    committed: TrainState,
    ledger: Ledger,
    span: Option<Span>,
    agg: BTreeMap<(Digest, RefusalReason), u64>,
    agg_steps: Option<(u64, u64)>,
    clock: Box<dyn Clock>,
    rolled_back: u64,
    sketch_bytes: u64,
    delta_bytes: u64,
    snapshots: Vec<SnapshotRef>,
    last_loss: f32,
    last_exposure: f32,
    started: Instant,
    done: bool,
}

fn granularity_batch(spec: &CampaignSpec) -> usize {
    match spec.policy.event_granularity {
        EventGranularity::Example => 1,
        _ => spec.settings.batch_size,
    }
}

impl Session {
    /// Prepares the campaign and submits its [`Campaign`] entry.
    pub fn open(
        spec: CampaignSpec,
        clock: Box<dyn Clock>,
        sink: &mut dyn EventSink,
    ) -> Result<(Self, Verdict)> {
        let s = &spec.settings;
        if s.batch_size == 0 || spec.probe.len() < 2 {
            return Err(TunerError::Config(
                "batch_size must be positive and the probe set hold at least 2 windows".into(),
            ));
        }
        if spec.base.config != s.model {
            return Err(TunerError::ModelMismatch(
                "base weights are for another architecture".into(),
            ));
        }
        let layout = Arc::new(s.layout()?);
        if spec.campaign.architecture != s.model.architecture_digest()
            || spec.campaign.sketch.dim as usize != Projection::dim_for(&layout, s.sketch_side)
            || spec.campaign.sketch.seed != s.sketch_seed
            || spec.campaign.policy != spec.policy.digest()
            || spec.campaign.base_model.state != spec.base.digest()
        {
            return Err(TunerError::Config(
                "the campaign record does not match the settings, policy or base model".into(),
            ));
        }
        let window = s.model.window();
        if spec.probe.iter().any(|p| p.len() != window) {
            return Err(TunerError::Config(format!(
                "probe windows must be {window} bytes"
            )));
        }
        let sources = spec
            .sources
            .iter()
            .cloned()
            .map(|src| PreparedSource::new(src, window))
            .collect::<Result<Vec<_>>>()?;
        let dev = Device::Cpu;
        let base_t = spec.base.to_tensors(&dev)?;
        let base_digest = spec.base.digest();
        let proj = Projection::new(&layout, s.sketch_seed, s.sketch_side)?;
        let candidates = spec
            .canaries
            .iter()
            .map(|c| memo::candidates(c, s.sketch_seed))
            .collect();
        let adapters = Adapters::init(layout.clone(), adapter_init_seed(s.sketch_seed));
        let opt = AdamW::new(s.optim, layout.pieces.iter().map(|p| p.len()));
        let probe_refs: Vec<&[u8]> = spec.probe.iter().map(|p| p.as_slice()).collect();
        let (probe_before, _) = memo::evaluate(&s.model, &base_t, &adapters, &probe_refs)?;
        let st = TrainState {
            adapters,
            opt,
            step: 0,
            rng: ChaCha20Rng::seed_from_u64(s.seed ^ 0x6472_6f70),
            schedule: Schedule::new(&sources, s.seed),
            probe_before,
            attempts: 0,
        };
        let campaign_digest = spec.campaign.digest();
        let verdict = sink.submit(&EntryBody::Campaign(spec.campaign.clone()))?;
        let me = Self {
            layout,
            base_t,
            base_digest,
            sources,
            proj,
            candidates,
            campaign_digest,
            committed: st.clone(),
            st,
            ledger: Ledger::default(),
            span: None,
            agg: BTreeMap::new(),
            agg_steps: None,
            clock,
            rolled_back: 0,
            sketch_bytes: 0,
            delta_bytes: 0,
            snapshots: Vec::new(),
            last_loss: f32::NAN,
            last_exposure: 0.0,
            started: Instant::now(),
            done: false,
            spec,
        };
        Ok((me, verdict))
    }

    /// The campaign digest.
    pub fn campaign_digest(&self) -> Digest {
        self.campaign_digest
    }

    /// The adapters at the current (committed) state.
    pub fn adapters(&self) -> &Adapters {
        &self.st.adapters
    }

    /// The base weights' tensors.
    pub fn base_tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.base_t
    }

    /// The sketch projection.
    pub fn projection(&self) -> &Projection {
        &self.proj
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &AdamW {
        &self.st.opt
    }

    /// The model-state digest now.
    pub fn state_digest(&self) -> Digest {
        self.st.adapters.state_digest(&self.base_digest)
    }

    /// Committed steps.
    pub fn steps(&self) -> u64 {
        self.st.step
    }

    fn link(&self) -> ChainLink {
        ChainLink {
            campaign: self.campaign_digest,
            seq: self.ledger.seq,
            prev: self.ledger.prev,
        }
    }

    /// Submits a chain entry; on commit advances the chain.
    fn submit(&mut self, sink: &mut dyn EventSink, body: EntryBody) -> Result<Option<Stop>> {
        match sink.submit(&body)? {
            Verdict::Committed => {
                self.ledger.seq += 1;
                self.ledger.prev = body.digest();
                Ok(None)
            }
            Verdict::Refused { reason } => Ok(Some(Stop::CoSignerRefused {
                kind: body.kind().name(),
                reason,
            })),
        }
    }

    fn stop_at_committed(&mut self) {
        self.st = self.committed.clone();
        self.span = None;
        self.agg.clear();
        self.agg_steps = None;
    }

    fn progress_info(&self) -> ProgressInfo {
        ProgressInfo {
            step: self.st.step,
            attempts: self.st.attempts,
            loss: self.last_loss,
            exposure: self.last_exposure,
            admitted: self.ledger.admitted.values().sum(),
            refused: self.ledger.refused.values().sum(),
            rolled_back: self.rolled_back,
            events: self.ledger.seq,
            elapsed: self.started.elapsed().as_secs_f64(),
        }
    }

    /// Runs steps until finished or stopped by a co-signer.
    pub fn run(&mut self, sink: &mut dyn EventSink, progress: &mut dyn Progress) -> Result<Stop> {
        while !self.done {
            if self.st.attempts >= self.spec.settings.max_steps
                || self.st.schedule.epoch >= self.spec.settings.epochs
            {
                self.done = true;
                break;
            }
            if let Some(stop) = self.step(sink)? {
                self.stop_at_committed();
                return Ok(stop);
            }
            progress.update(&self.progress_info());
        }
        if let Some(stop) = self.flush_span(sink)? {
            self.stop_at_committed();
            self.done = false;
            return Ok(stop);
        }
        if let Some(stop) = self.flush_aggregate(sink)? {
            self.stop_at_committed();
            self.done = false;
            return Ok(stop);
        }
        Ok(Stop::Finished)
    }

    /// Submits the CampaignClose and reports the outcome.
    pub fn close(mut self, sink: &mut dyn EventSink, stop: Stop) -> Result<CampaignOutcome> {
        let final_state = self.state_digest();
        let mut close = None;
        if stop == Stop::Finished {
            let snap = self.st.adapters.snapshot_bytes()?;
            let d = blob_digest(&snap);
            sink.put_blob(&d, &snap)?;
            if self.snapshots.last().map(|s| s.step) != Some(self.st.step) {
                self.snapshots.push(SnapshotRef {
                    step: self.st.step,
                    state: final_state,
                    blob: d,
                });
            }
            let ids: Vec<(Digest, usize)> = self.sources.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
            let mut per: BTreeMap<Digest, SourceCount> = BTreeMap::new();
            for (id, i) in ids {
                let e = per.entry(id).or_insert(SourceCount {
                    source: id,
                    admitted: 0,
                    refused: 0,
                });
                e.admitted += self.ledger.admitted.get(&i).copied().unwrap_or(0);
                e.refused += self.ledger.refused.get(&i).copied().unwrap_or(0);
            }
            let c = CampaignClose {
                version: 1,
                campaign: self.campaign_digest,
                head: self.ledger.prev,
                entries: self.ledger.seq,
                steps: self.st.step,
                per_source: per.into_values().collect(),
                final_state,
                time: self.clock.now(),
            };
            if let Verdict::Refused { reason } = sink.submit(&EntryBody::CampaignClose(c.clone()))? {
                return Err(TunerError::Sink(format!(
                    "the campaign close was refused: {reason}"
                )));
            }
            close = Some(c);
        }
        let info = self.progress_info();
        Ok(CampaignOutcome {
            campaign: self.campaign_digest,
            stop,
            steps: self.st.step,
            attempts: self.st.attempts,
            admitted: info.admitted,
            refused: info.refused,
            rolled_back: self.rolled_back,
            final_state,
            head: self.ledger.prev,
            entries: self.ledger.seq,
            sketch_bytes: self.sketch_bytes,
            delta_bytes: self.delta_bytes,
            snapshots: self.snapshots,
            close,
        })
    }

    #[allow(clippy::type_complexity)]
    fn admit_batch(
        &self,
        batch: &[ExampleId],
        time: Timestamp,
    ) -> (
        Vec<(ExampleId, AdmitDecision)>,
        Vec<(ExampleId, RefusalReason, String)>,
    ) {
        let ctx = AdmissionContext {
            keyring: &self.spec.keyring,
            policy: &self.spec.policy,
            campaign: &self.spec.campaign,
            revocations: &self.spec.revocations,
            time,
        };
        let mut verdicts: BTreeMap<usize, Admission> = BTreeMap::new();
        let mut ok = Vec::new();
        let mut refused = Vec::new();
        for &e in batch {
            let v = verdicts.entry(e.source).or_insert_with(|| {
                let s = &self.sources[e.source].signed;
                admit(&ctx, &s.manifest, &s.signature)
            });
            match v {
                Admission::Admit(d) => ok.push((e, d.clone())),
                Admission::Refuse { reason, detail } => refused.push((e, *reason, detail.clone())),
            }
        }
        (ok, refused)
    }

    fn example_ref(&self, e: ExampleId) -> ExampleRef {
        let s = &self.sources[e.source];
        ExampleRef {
            source: s.id,
            index: e.index,
            example_hash: s.examples.hash(e.index).unwrap_or_default(),
        }
    }

    fn dropout_masks(&mut self, b: usize, t: usize) -> Result<Option<Vec<Tensor>>> {
        let p = self.spec.settings.lora.dropout;
        if p == 0.0 {
            return Ok(None);
        }
        let d = self.spec.settings.model.d_model;
        let keep = 1.0 / (1.0 - p);
        let mut out = Vec::new();
        for _ in 0..2 * self.spec.settings.model.layers {
            let v: Vec<f32> = (0..b * t * d)
                .map(|_| if self.st.rng.gen::<f32>() < p { 0.0 } else { keep })
                .collect();
            out.push(Tensor::from_vec(v, (b, t, d), &Device::Cpu)?);
        }
        Ok(Some(out))
    }

    /// One step. `Some(stop)` when a co-signer refused an entry.
    fn step(&mut self, sink: &mut dyn EventSink) -> Result<Option<Stop>> {
        let b_max = granularity_batch(&self.spec);
        let (batch, epoch_end) = self.st.schedule.next_batch(b_max);
        self.step_on(sink, &batch, epoch_end)
    }

    /// One governed step on the given examples instead of the schedule's
    /// next batch (admission still decides what trains). `Some(stop)` when
    /// a co-signer refused an entry.
    pub fn train_on(&mut self, sink: &mut dyn EventSink, batch: &[ExampleId]) -> Result<Option<Stop>> {
        let r = self.step_on(sink, batch, false)?;
        if r.is_some() {
            self.stop_at_committed();
        }
        Ok(r)
    }

    fn step_on(
        &mut self,
        sink: &mut dyn EventSink,
        batch: &[ExampleId],
        epoch_end: bool,
    ) -> Result<Option<Stop>> {
        let time = self.clock.now();
        let (admitted, refused) = self.admit_batch(batch, time);
        self.st.attempts += 1;
        let k = self.st.step;
        // Admission refusals.
        if !refused.is_empty() {
            for (e, _, _) in &refused {
                *self.ledger.refused.entry(e.source).or_default() += 1;
            }
            if self.spec.policy.log_volume.refusal_aggregation {
                for (e, r, _) in &refused {
                    *self.agg.entry((self.sources[e.source].id, *r)).or_default() += 1;
                }
                let (f, _) = self.agg_steps.unwrap_or((k, k));
                self.agg_steps = Some((f, k));
            } else {
                let mut by: BTreeMap<RefusalReason, (Vec<ExampleRef>, String)> = BTreeMap::new();
                for (e, r, d) in &refused {
                    let ent = by.entry(*r).or_insert_with(|| (Vec::new(), d.clone()));
                    ent.0.push(self.example_ref(*e));
                }
                for (reason, (examples, detail)) in by {
                    let body = EntryBody::Refusal(Refusal {
                        version: 1,
                        link: self.link(),
                        step: k,
                        policy: self.spec.campaign.policy,
                        examples,
                        reason,
                        detail: detail.chars().take(1000).collect(),
                        measurement: None,
                        time,
                    });
                    if let Some(stop) = self.submit(sink, body)? {
                        return Ok(Some(stop));
                    }
                }
                self.committed.schedule = self.st.schedule.clone();
            }
        }
        if admitted.is_empty() {
            return self.maybe_epoch_end(sink, epoch_end);
        }
        // The governed step.
        let rng_before = self.st.rng.clone();
        let cfg = self.spec.settings.model;
        let masks = self.dropout_masks(admitted.len(), cfg.context)?;
        let windows: Vec<&[u8]> = admitted
            .iter()
            .map(|(e, _)| self.sources[e.source].window(e.index))
            .collect();
        let dev = Device::Cpu;
        let (inp, tgt) = batch_tensors(&windows, &dev)?;
        let (b, t) = inp.dims2()?;
        let mut f = LoraForward::probing(&self.st.adapters, b, t, masks, &dev)?;
        let logits = forward(&cfg, &self.base_t, &inp, Some(&mut f))?;
        let losses_t = per_example_loss(&logits, &tgt)?;
        let grads = losses_t.sum_all()?.backward()?;
        let losses = losses_t.to_vec1::<f32>()?;
        if losses.iter().any(|l| !l.is_finite()) {
            return Err(TunerError::NonFinite {
                step: k,
                what: "loss",
            });
        }
        let site = SiteTensors::collect(&f, &grads)?;
        drop(f);
        let norms = sq_norms(&self.layout, &site)?;
        let heads = cfg.heads;
        let routed: Vec<Vec<bool>> = self
            .layout
            .pieces
            .iter()
            .map(|p| {
                admitted
                    .iter()
                    .map(|(_, d)| d.routing.allows(p.unit(d.routing.granularity, heads)))
                    .collect()
            })
            .collect();
        // Per (example, block) clip factors over the routed pieces.
        let nb = self.layout.blocks() as usize;
        let mut block_sq = vec![vec![0f64; nb]; b];
        for (pi, p) in self.layout.pieces.iter().enumerate() {
            for i in 0..b {
                if routed[pi][i] {
                    block_sq[i][p.block() as usize] += f64::from(norms[pi][i]);
                }
            }
        }
        let weights: Vec<Vec<f32>> = self
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
                        let clip = f64::from(admitted[i].1.depth.clip_norm);
                        let n = block_sq[i][p.block() as usize].sqrt();
                        ((clip / (n + 1e-6)).min(1.0) / b as f64) as f32
                    })
                    .collect()
            })
            .collect();
        let applied = weighted_sum(&self.layout, &site, &weights)?;
        if applied.iter().flatten().flatten().any(|g| !g.is_finite()) {
            return Err(TunerError::NonFinite {
                step: k,
                what: "gradient",
            });
        }
        let sketches = self.proj.sketches(&self.layout, &site, &routed)?;
        drop(site);
        // Optimizer step.
        let before = self.st.adapters.clone();
        let opt_before = self.st.opt.clone();
        self.st.opt.apply(&mut self.st.adapters.values, &applied);
        let deltas = diff(&before, &self.st.adapters);
        // Measurement and memorisation signals.
        let (after, extraction) = memo::evaluate(&cfg, &self.base_t, &self.st.adapters, &windows)?;
        let probe_refs: Vec<&[u8]> = self.spec.probe.iter().map(|p| p.as_slice()).collect();
        let (probe_after, _) = memo::evaluate(&cfg, &self.base_t, &self.st.adapters, &probe_refs)?;
        let mut canary_exposure = 0.0f32;
        for (c, cands) in self.spec.canaries.iter().zip(&self.candidates) {
            if windows.iter().any(|w| c.in_window(w)) {
                let x = memo::exposure(&cfg, &self.base_t, &self.st.adapters, c, cands)?;
                canary_exposure = canary_exposure.max(x);
            }
        }
        let signals = MemorisationSignals {
            loss_drop_z: memo::loss_drop_z(&losses, &after, &self.st.probe_before, &probe_after),
            extraction: extraction.iter().copied().fold(0.0, f32::max),
            canary_exposure,
        };
        let loss = losses.iter().sum::<f32>() / b as f32;
        self.last_loss = loss;
        self.last_exposure = canary_exposure;
        let measurement = Measurement {
            blocks: block_measures(&self.layout, &deltas, &before, &self.st.adapters),
            optimizer_state: self.st.opt.digest(),
            model_state: self.st.adapters.state_digest(&self.base_digest),
            loss,
            signals,
        };
        if let Some(detail) = check_memorisation(&self.spec.policy, &signals) {
            // Roll back parameters, moments, step counter and RNG: the
            // state after a refused step is bit-identical to the state
            // before it, so replaying the committed record reproduces it.
            self.st.adapters = before;
            self.st.opt = opt_before;
            self.st.rng = rng_before;
            self.st.step = k;
            self.rolled_back += 1;
            for (e, _) in &admitted {
                *self.ledger.refused.entry(e.source).or_default() += 1;
            }
            let body = EntryBody::Refusal(Refusal {
                version: 1,
                link: self.link(),
                step: k,
                policy: self.spec.campaign.policy,
                examples: admitted.iter().map(|(e, _)| self.example_ref(*e)).collect(),
                reason: RefusalReason::Memorisation,
                detail,
                measurement: Some(measurement),
                time,
            });
            if let Some(stop) = self.submit(sink, body)? {
                return Ok(Some(stop));
            }
            if self.span.is_none() {
                self.committed = self.st.clone();
            }
            return self.maybe_epoch_end(sink, epoch_end);
        }
        // Commit the step into the current span.
        self.st.probe_before = probe_after;
        self.st.step = k + 1;
        let span = self.span.get_or_insert_with(|| Span {
            start: before,
            first_step: k,
            records: Vec::new(),
            sketches: Vec::new(),
            losses: Vec::new(),
            signals: MemorisationSignals::default(),
            admitted: BTreeMap::new(),
        });
        for (i, (e, d)) in admitted.iter().enumerate() {
            let s = &self.sources[e.source];
            span.records.push(ExampleRecord {
                source: s.id,
                index: e.index,
                example_hash: s.examples.hash(e.index).unwrap_or_default(),
                proof: s.examples.proof(e.index).map(|p| p.path).unwrap_or_default(),
                decision: d.clone(),
            });
            span.sketches.push(SketchRecord {
                source: s.id,
                index: e.index,
                step: k,
                values: sketches[i].clone(),
            });
            *span.admitted.entry(e.source).or_default() += 1;
        }
        span.losses.push(loss);
        span.signals.loss_drop_z = span.signals.loss_drop_z.max(signals.loss_drop_z);
        span.signals.extraction = span.signals.extraction.max(signals.extraction);
        span.signals.canary_exposure = span.signals.canary_exposure.max(signals.canary_exposure);
        if self.spec.settings.checkpoint_every > 0
            && self.st.step.is_multiple_of(self.spec.settings.checkpoint_every)
        {
            let snap = self.st.adapters.snapshot_bytes()?;
            let d = blob_digest(&snap);
            sink.put_blob(&d, &snap)?;
            self.snapshots.push(SnapshotRef {
                step: self.st.step,
                state: self.state_digest(),
                blob: d,
            });
        }
        if self.spec.policy.event_granularity != EventGranularity::Epoch {
            if let Some(stop) = self.flush_span(sink)? {
                return Ok(Some(stop));
            }
        }
        self.maybe_epoch_end(sink, epoch_end)
    }

    fn maybe_epoch_end(&mut self, sink: &mut dyn EventSink, epoch_end: bool) -> Result<Option<Stop>> {
        if epoch_end {
            if let Some(stop) = self.flush_span(sink)? {
                return Ok(Some(stop));
            }
            if let Some(stop) = self.flush_aggregate(sink)? {
                return Ok(Some(stop));
            }
        }
        Ok(None)
    }

    /// Emits the accumulated span as one event.
    fn flush_span(&mut self, sink: &mut dyn EventSink) -> Result<Option<Stop>> {
        let Some(span) = self.span.take() else {
            return Ok(None);
        };
        let last_step = self.st.step - 1;
        let deltas = diff(&span.start, &self.st.adapters);
        let delta = encode_delta(span.first_step, last_step, &deltas);
        let delta_d = blob_digest(&delta);
        let sketch = encode_sketches(self.proj.dim(), &span.sketches);
        let sketch_d = blob_digest(&sketch);
        sink.put_blob(&delta_d, &delta)?;
        sink.put_blob(&sketch_d, &sketch)?;
        self.delta_bytes += delta.len() as u64;
        self.sketch_bytes += sketch.len() as u64;
        let measurement = Measurement {
            blocks: block_measures(&self.layout, &deltas, &span.start, &self.st.adapters),
            optimizer_state: self.st.opt.digest(),
            model_state: self.state_digest(),
            loss: span.losses.iter().sum::<f32>() / span.losses.len().max(1) as f32,
            signals: span.signals,
        };
        let time = self.clock.now();
        let composite = match self.spec.policy.event_granularity {
            EventGranularity::Example => false,
            EventGranularity::Batch => self.spec.policy.log_volume.composite_batching,
            EventGranularity::Epoch => true,
        };
        let body = if composite {
            EntryBody::Composite(CompositeEvent {
                version: 1,
                link: self.link(),
                first_step: span.first_step,
                last_step,
                policy: self.spec.campaign.policy,
                records_root: composite_root(&span.records),
                records: span.records,
                measurement,
                sketch_blob: sketch_d,
                delta_blob: delta_d,
                step_time: time,
            })
        } else {
            EntryBody::Step(StepEvent {
                version: 1,
                link: self.link(),
                step: span.first_step,
                policy: self.spec.campaign.policy,
                examples: span.records,
                measurement,
                sketch_blob: sketch_d,
                delta_blob: delta_d,
                step_time: time,
            })
        };
        if let Some(stop) = self.submit(sink, body)? {
            return Ok(Some(stop));
        }
        for (s, n) in span.admitted {
            *self.ledger.admitted.entry(s).or_default() += n;
        }
        if self.agg.is_empty() {
            self.committed = self.st.clone();
        }
        if self.spec.policy.event_granularity != EventGranularity::Epoch {
            return self.flush_aggregate(sink);
        }
        Ok(None)
    }

    fn flush_aggregate(&mut self, sink: &mut dyn EventSink) -> Result<Option<Stop>> {
        let Some((first, last)) = self.agg_steps.take() else {
            return Ok(None);
        };
        let counts: Vec<RefusalCount> = std::mem::take(&mut self.agg)
            .into_iter()
            .map(|((source, reason), count)| RefusalCount {
                source,
                reason,
                count,
            })
            .collect();
        let body = EntryBody::RefusalAggregate(RefusalAggregate {
            version: 1,
            link: self.link(),
            policy: self.spec.campaign.policy,
            first_step: first,
            last_step: last,
            counts,
            time: self.clock.now(),
        });
        if let Some(stop) = self.submit(sink, body)? {
            return Ok(Some(stop));
        }
        if self.span.is_none() {
            self.committed = self.st.clone();
        }
        Ok(None)
    }
}

/// Per parameter block: the digest of its pieces' XOR deltas and the L2
/// norm of its change, for blocks that changed.
pub fn block_measures(
    layout: &AdapterLayout,
    deltas: &[PieceDelta],
    before: &Adapters,
    after: &Adapters,
) -> Vec<BlockMeasure> {
    let mut by: BTreeMap<u32, Vec<&PieceDelta>> = BTreeMap::new();
    for d in deltas {
        by.entry(layout.pieces[d.piece as usize].block())
            .or_default()
            .push(d);
    }
    by.into_iter()
        .map(|(block, ds)| {
            let mut bytes = Vec::new();
            let mut sq = 0f64;
            for d in ds {
                bytes.extend_from_slice(&d.piece.to_be_bytes());
                for w in &d.xor {
                    bytes.extend_from_slice(&w.to_le_bytes());
                }
                let i = d.piece as usize;
                for (a, b) in before.values[i].iter().zip(&after.values[i]) {
                    sq += (f64::from(*b) - f64::from(*a)).powi(2);
                }
            }
            BlockMeasure {
                block,
                delta_digest: blob_digest(&bytes),
                norm: sq.sqrt() as f32,
            }
        })
        .collect()
}

/// Opens, runs and (if it finished) closes a campaign.
pub fn run(
    spec: CampaignSpec,
    clock: Box<dyn Clock>,
    sink: &mut dyn EventSink,
    progress: &mut dyn Progress,
) -> Result<CampaignOutcome> {
    let (mut s, v) = Session::open(spec, clock, sink)?;
    if let Verdict::Refused { reason } = v {
        return s.close(
            sink,
            Stop::CoSignerRefused {
                kind: "Campaign",
                reason,
            },
        );
    }
    let stop = s.run(sink, progress)?;
    s.close(sink, stop)
}
