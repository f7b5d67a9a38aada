//! A campaign's inputs: training hyper-parameters, the `Campaign` record built from them, the spec.

use provenance::Canonical;
use provenance::{
    AuthorityId, BaseModel, Campaign, Digest, EffectiveRevocation, KeyRing, PolicyArtifact, Purpose,
    SketchSpec, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::data::SignedSource;
use crate::error::{Result, TunerError};
use crate::lora::{AdapterLayout, LoraConfig};
use crate::memo::Canary;
use crate::model::{ModelConfig, Weights};
use crate::optim::AdamWConfig;
use crate::pergrad::Projection;

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
