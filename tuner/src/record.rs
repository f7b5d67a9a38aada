//! A closed campaign's record, as the ledger holds it, and the trace inputs
//! rebuilt from it and its blobs alone.
//!
//! [`CampaignRecord::new`] (in `provenance::record`) checks the chain.
//!
//! [`PreparedTrace::build`] fetches the recipe, base weights, delta and
//! sketch blobs through a caller's function (a node reads its store, a
//! verifier asks a node and checks each digest), replays the deltas from
//! the initial adapters, checks every event's recorded model-state digest
//! and the close's final state on the way, and keeps the states the trace
//! scores against: step 0, every event boundary at one of the campaign's
//! `checkpoint_steps`, and the final model. Nothing is re-trained.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use provenance::{Canonical, Digest, EntryBody};

use crate::blobs::{apply, blob_digest, decode_delta, decode_sketches};
use crate::error::{Result, TunerError};
use crate::lora::{adapter_init_seed, AdapterLayout, Adapters};
use crate::model::ModelConfig;
use crate::pergrad::Projection;
use crate::recipe::Recipe;
use crate::score::{logged_examples, LoggedExample, LrSchedule, Method, Preconditioner, TraceReport};
use crate::trace::TraceContext;

pub use provenance::record::CampaignRecord;

/// Sketch blob, delta blob, records and recorded model state of an event.
fn event_parts(
    b: &EntryBody,
) -> Option<(
    &Digest,
    &Digest,
    &[provenance::event::ExampleRecord],
    &provenance::event::Measurement,
)> {
    b.event()
        .map(|e| (e.sketch_blob, e.delta_blob, e.records, e.measurement))
}

/// Fetches a blob by digest; the caller's function need not check the
/// digest, [`PreparedTrace::build`] does.
pub type BlobFetch<'a> = dyn FnMut(&Digest) -> Result<Vec<u8>> + 'a;

fn fetch_checked(fetch: &mut BlobFetch<'_>, d: &Digest, what: &str) -> Result<Vec<u8>> {
    let bytes = fetch(d)?;
    let found = blob_digest(&bytes);
    if &found != d {
        return Err(TunerError::DigestMismatch {
            what: format!("{what} blob"),
            expected: *d,
            found,
        });
    }
    Ok(bytes)
}

/// Everything a trace of one campaign needs, rebuilt from its record.
pub struct PreparedTrace {
    /// The campaign digest.
    pub campaign: Digest,
    /// The recipe.
    pub recipe: Recipe,
    /// The adapter layout.
    pub layout: Arc<AdapterLayout>,
    base: BTreeMap<String, Tensor>,
    /// Base weights digest.
    pub base_digest: Digest,
    proj: Projection,
    /// Query states `(committed steps, adapters)`: step 0, checkpoints,
    /// final.
    pub states: Vec<(u64, Adapters)>,
    /// Logged examples; the event key is the chain position (`seq`).
    pub examples: Vec<LoggedExample>,
    /// Per-block L2 norm of the update each event applied (from its
    /// measurement), by chain position.
    pub event_norms: BTreeMap<u64, f64>,
    /// Blob bytes fetched.
    pub blob_bytes: u64,
    /// Preconditioners fitted so far, by method name (they do not depend
    /// on the query).
    fitted: std::sync::Mutex<BTreeMap<&'static str, Arc<Option<Preconditioner>>>>,
}

impl std::fmt::Debug for PreparedTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedTrace")
            .field("campaign", &self.campaign)
            .field("states", &self.states.len())
            .field("examples", &self.examples.len())
            .finish_non_exhaustive()
    }
}

impl PreparedTrace {
    /// Rebuilds the trace inputs of `record` from its blobs (see the
    /// module doc). Fails if any blob is missing or does not match what the
    /// ledger recorded.
    pub fn build(record: &CampaignRecord, fetch: &mut BlobFetch<'_>) -> Result<Self> {
        Self::replay(record, fetch, true)
    }

    /// Like [`PreparedTrace::build`] without the sketches: the model
    /// states only (step 0, checkpoints, final), every one checked against
    /// the record. What `verify model` needs.
    pub fn rebuild_model(record: &CampaignRecord, fetch: &mut BlobFetch<'_>) -> Result<Self> {
        Self::replay(record, fetch, false)
    }

    fn replay(record: &CampaignRecord, fetch: &mut BlobFetch<'_>, sketches: bool) -> Result<Self> {
        let c = &record.campaign;
        let mut blob_bytes = 0u64;
        if c.recipe == Digest::ZERO {
            return Err(TunerError::Config(
                "the campaign published no recipe blob: it cannot be traced from the ledger".into(),
            ));
        }
        let recipe_bytes = fetch_checked(fetch, &c.recipe, "recipe")?;
        blob_bytes += recipe_bytes.len() as u64;
        let recipe = Recipe::from_bytes(&recipe_bytes)?;
        recipe.check_against(c)?;
        let base_bytes = fetch_checked(fetch, &recipe.base_weights, "base weights")?;
        blob_bytes += base_bytes.len() as u64;
        let base_w = recipe.base(c, &base_bytes)?;
        let base_digest = base_w.digest();
        let settings = &recipe.settings;
        let layout = Arc::new(settings.layout()?);
        let proj = Projection::new(&layout, settings.sketch_seed, settings.sketch_side)?;
        let mut adapters = Adapters::init(layout.clone(), adapter_init_seed(c.sketch.seed));
        let mut states = vec![(0u64, adapters.clone())];
        let mut examples = Vec::new();
        let mut event_norms = BTreeMap::new();
        let mut committed = 0u64;
        for (seq, b) in record.events() {
            let Some((sketch, delta, records, m)) = event_parts(b) else {
                continue;
            };
            let dbytes = fetch_checked(fetch, delta, "delta")?;
            blob_bytes += dbytes.len() as u64;
            let (_, last, pd) = decode_delta(&dbytes)?;
            apply(&mut adapters, &pd)?;
            let found = adapters.state_digest(&base_digest);
            if found != m.model_state {
                return Err(TunerError::DigestMismatch {
                    what: format!("model state after record {seq}"),
                    expected: m.model_state,
                    found,
                });
            }
            committed = last + 1;
            if c.checkpoint_steps.binary_search(&committed).is_ok() {
                states.push((committed, adapters.clone()));
            }
            let norm: f64 = m
                .blocks
                .iter()
                .map(|b| f64::from(b.norm).powi(2))
                .sum::<f64>()
                .sqrt();
            event_norms.insert(seq, norm);
            if !sketches {
                continue;
            }
            let sbytes = fetch_checked(fetch, sketch, "sketch")?;
            blob_bytes += sbytes.len() as u64;
            let (dim, recs) = decode_sketches(&sbytes)?;
            if dim as u64 != u64::from(c.sketch.dim) {
                return Err(TunerError::Blob {
                    kind: "sketch",
                    reason: format!("dimension {dim}, the campaign's is {}", c.sketch.dim),
                });
            }
            examples.extend(logged_examples(seq, recs, records)?);
        }
        let found = adapters.state_digest(&base_digest);
        if found != record.close.final_state {
            return Err(TunerError::DigestMismatch {
                what: "final model state".into(),
                expected: record.close.final_state,
                found,
            });
        }
        if states.last().map(|s| s.0) != Some(committed) {
            states.push((committed, adapters));
        }
        Ok(Self {
            campaign: c.digest(),
            base: base_w.to_tensors(&Device::Cpu)?,
            recipe,
            layout,
            base_digest,
            proj,
            states,
            examples,
            event_norms,
            blob_bytes,
            fitted: Default::default(),
        })
    }

    /// The model architecture.
    pub fn model(&self) -> &ModelConfig {
        &self.recipe.settings.model
    }

    /// The final adapters.
    pub fn final_adapters(&self) -> Option<&Adapters> {
        self.states.last().map(|s| &s.1)
    }

    /// The trace context over these inputs.
    pub fn context(&self) -> TraceContext<'_> {
        TraceContext {
            cfg: &self.recipe.settings.model,
            base: &self.base,
            states: self.states.iter().map(|(s, a)| (*s, a)).collect(),
            proj: &self.proj,
            examples: &self.examples,
            lr: LrSchedule::Constant(self.recipe.settings.optim.lr),
        }
    }

    /// Traces `output` after `prompt` with `method`.
    pub fn trace(&self, prompt: &[u8], output: &[u8], method: Method) -> Result<TraceReport> {
        let ctx = self.context();
        let cached = self
            .fitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(method.name())
            .cloned();
        let pre = match cached {
            Some(p) => p,
            None => {
                let p = Arc::new(ctx.preconditioner(method)?);
                self.fitted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(method.name(), p.clone());
                p
            }
        };
        ctx.trace(prompt, output, method, pre.as_ref().as_ref())
    }
}
