//! A self-contained campaign from a config file: the demo consortium's
//! keys, the bundled plays as signed sources, the base model's own
//! campaign, and the fine-tuning campaign spec. This is what
//! `govtune-tuner campaign run` and the tests build; a node builds the
//! same [`CampaignSpec`] from its ledger instead.

use std::path::{Path, PathBuf};

use provenance::{AuthorityId, Campaign, PolicyArtifact, Purpose, Timestamp};
use serde::{Deserialize, Serialize};

use crate::campaign::{build_campaign, CampaignSpec, SimClock, TrainSettings};
use crate::data::{manifest_for, plant_canary, DemoConsortium, SignedSource, SourceTerms};
use crate::error::{Result, TunerError};
use crate::memo::Canary;
use crate::model::Weights;
use crate::pretrain::{pretrain, PretrainSettings};
use crate::sink::EventSink;

/// One source of the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceEntry {
    /// Text file (relative to the config file).
    pub path: PathBuf,
    /// Keep at most this many bytes.
    pub max_bytes: usize,
    /// Terms of the manifest.
    pub terms: SourceTerms,
}

/// Where a canary is planted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanaryPlant {
    /// Position of the source in `sources`.
    pub source: usize,
    /// The canary.
    pub canary: Canary,
    /// Plant into every `every`-th window.
    pub every: usize,
    /// Byte offset inside the window.
    pub offset: usize,
}

/// A campaign config file (TOML).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoConfig {
    /// Campaign name.
    pub name: String,
    /// Operator authority.
    pub operator: String,
    /// Purpose.
    pub purpose: String,
    /// Seed of the demo consortium's keys.
    pub consortium_seed: u64,
    /// Start of the simulated clock (ms).
    pub start_ms: u64,
    /// Simulated time per step (ms).
    pub step_ms: u64,
    /// Fine-tuning settings.
    pub settings: TrainSettings,
    /// Base-model pretraining.
    pub pretrain: PretrainSettings,
    /// Where the base weights are cached (loaded if present).
    pub base_weights: Option<PathBuf>,
    /// Pretraining texts.
    pub base_sources: Vec<SourceEntry>,
    /// Fine-tuning sources.
    pub sources: Vec<SourceEntry>,
    /// Held-out probe text.
    pub probe: PathBuf,
    /// Probe windows.
    pub probe_windows: usize,
    /// The policy (governance's, registered on the ledger).
    pub policy: PolicyArtifact,
    /// Planted canaries (each in one source).
    #[serde(default)]
    pub canaries: Vec<CanaryPlant>,
}

impl DemoConfig {
    /// Reads a TOML config; relative paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TunerError::io(path, e))?;
        let mut c: DemoConfig = toml::from_str(&text).map_err(|e| TunerError::Config(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        for s in c.base_sources.iter_mut().chain(c.sources.iter_mut()) {
            fix(&mut s.path);
        }
        fix(&mut c.probe);
        if let Some(b) = c.base_weights.as_mut() {
            fix(b);
        }
        Ok(c)
    }
}

/// Everything built from a config.
pub struct World {
    /// The demo consortium.
    pub consortium: DemoConsortium,
    /// The fine-tuning campaign spec.
    pub spec: CampaignSpec,
    /// The base campaign's digest (None when the base was loaded from a
    /// file without its campaign).
    pub base_campaign: Option<provenance::Digest>,
}

fn read_text(e: &SourceEntry) -> Result<Vec<u8>> {
    let mut t = std::fs::read(&e.path).map_err(|err| TunerError::io(&e.path, err))?;
    t.truncate(e.max_bytes);
    Ok(t)
}

fn salt(seed: u64, i: usize) -> [u8; 32] {
    provenance::digest::tagged_hash_parts(
        provenance::ObjectKind::Blob,
        &[b"demo-salt", &seed.to_be_bytes(), &(i as u64).to_be_bytes()],
    )
    .0
}

fn sign_all(
    c: &DemoConsortium,
    entries: &[SourceEntry],
    window: usize,
    seed: u64,
    plants: &[CanaryPlant],
) -> Result<Vec<SignedSource>> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut text = read_text(e)?;
            for p in plants.iter().filter(|p| p.source == i) {
                let n = plant_canary(&mut text, window, &p.canary.text(), p.every, p.offset);
                if n.is_empty() {
                    return Err(TunerError::Config("the canary does not fit the windows".into()));
                }
            }
            let salt = salt(seed, i);
            let manifest = manifest_for(&text, window, &salt, &e.terms)?;
            let signature = c.sign_manifest(&manifest)?;
            Ok(SignedSource {
                manifest,
                signature,
                text,
                salt,
            })
        })
        .collect()
}

/// The base campaign's record before pretraining fills in its policy,
/// architecture and state (see [`crate::pretrain::pretrain`]).
pub fn base_template(
    cfg: &DemoConfig,
    operator: AuthorityId,
    name: String,
    purpose: Purpose,
    created: Timestamp,
) -> Campaign {
    Campaign {
        version: 2,
        operator,
        name,
        purpose,
        policy: provenance::Digest::ZERO,
        base_model: provenance::BaseModel {
            campaign: None,
            state: provenance::Digest::ZERO,
        },
        architecture: provenance::Digest::ZERO,
        recipe: provenance::Digest::ZERO,
        shape: cfg.settings.model.shape(),
        sketch: provenance::SketchSpec { seed: 0, dim: 0 },
        checkpoint_steps: Vec::new(),
        created,
    }
}

/// Builds the world; pretrains the base model (its own campaign, into
/// `base_sink`) unless cached weights exist.
pub fn build(
    cfg: &DemoConfig,
    base_sink: &mut dyn EventSink,
    progress: &mut dyn FnMut(u64, f32),
) -> Result<World> {
    let err = |e: String| TunerError::Config(e);
    let start = Timestamp(cfg.start_ms);
    let consortium = DemoConsortium::deal(cfg.consortium_seed, start)?;
    let window = cfg.settings.model.window();
    let operator = AuthorityId::new(cfg.operator.clone()).map_err(|e| err(e.to_string()))?;
    let purpose = Purpose::new(cfg.purpose.clone()).map_err(|e| err(e.to_string()))?;
    if cfg.pretrain.model != cfg.settings.model {
        return Err(err("pretrain.model and settings.model differ".into()));
    }
    let cached = cfg.base_weights.as_ref().filter(|p| p.exists());
    let (base, base_campaign) = match cached {
        Some(p) => (Weights::load(cfg.settings.model, p)?, None),
        None => {
            let sources = sign_all(
                &consortium,
                &cfg.base_sources,
                window,
                cfg.consortium_seed ^ 1,
                &[],
            )?;
            let template = base_template(
                cfg,
                operator.clone(),
                format!("{}-base", cfg.name),
                purpose.clone(),
                start,
            );
            let mut clock = SimClock {
                next: cfg.start_ms,
                step_ms: cfg.step_ms,
            };
            let out = pretrain(
                &cfg.pretrain,
                &consortium.keyring,
                &cfg.policy,
                template,
                sources,
                &mut clock,
                base_sink,
                progress,
            )?;
            if let Some(p) = &cfg.base_weights {
                out.weights.save(p)?;
            }
            (out.weights, Some(out.campaign))
        }
    };
    let sources = sign_all(
        &consortium,
        &cfg.sources,
        window,
        cfg.consortium_seed,
        &cfg.canaries,
    )?;
    let probe_text = std::fs::read(&cfg.probe).map_err(|e| TunerError::io(&cfg.probe, e))?;
    let probe: Vec<Vec<u8>> = probe_text
        .chunks_exact(window)
        .take(cfg.probe_windows)
        .map(|c| c.to_vec())
        .collect();
    let campaign = build_campaign(
        &cfg.settings,
        &cfg.policy,
        operator,
        &cfg.name,
        purpose,
        base_campaign,
        base.digest(),
        start,
    )?;
    let spec = CampaignSpec {
        settings: cfg.settings.clone(),
        keyring: consortium.keyring.clone(),
        policy: cfg.policy.clone(),
        campaign,
        revocations: Vec::new(),
        base,
        sources,
        probe,
        canaries: cfg.canaries.iter().map(|c| c.canary.clone()).collect(),
    };
    Ok(World {
        consortium,
        spec,
        base_campaign,
    })
}

/// Greedy continuation of `prompt` (`n` bytes) by the base model plus an
/// adapter snapshot (what a campaign publishes as its model).
pub fn continue_text(
    settings: &TrainSettings,
    base: &Weights,
    snapshot: &[u8],
    prompt: &[u8],
    n: usize,
) -> Result<Vec<u8>> {
    let layout = std::sync::Arc::new(settings.layout()?);
    let adapters = crate::lora::Adapters::from_snapshot(layout, snapshot)?;
    let bt = base.to_tensors(&candle_core::Device::Cpu)?;
    crate::model::greedy(&settings.model, &bt, Some(&adapters), prompt, n)
}
