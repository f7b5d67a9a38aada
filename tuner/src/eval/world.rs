//! The world of one evaluation: signed sources with planted canaries, held-out queries, specs.

use provenance::EventGranularity;

use crate::campaign::{build_campaign, CampaignSpec};
use crate::data::{manifest_for, DemoConsortium, SignedSource};
use crate::demo::{build, DemoConfig};
use crate::error::{Result, TunerError};
use crate::sink::MemorySink;

use super::canary::{plant, PlantedCanary};
use super::settings::EvalSettings;

/// The world of one evaluation: base, policy, signed sources, queries.
pub(super) struct EvalWorld {
    pub(super) spec: CampaignSpec,
    pub(super) texts: Vec<Vec<u8>>,
    pub(super) canaries: Vec<PlantedCanary>,
    pub(super) heldout: Vec<(usize, Vec<u8>)>,
    consortium_seed: u64,
}

fn sign(c: &DemoConsortium, cfg: &DemoConfig, texts: &[Vec<u8>], window: usize) -> Result<Vec<SignedSource>> {
    texts
        .iter()
        .zip(&cfg.sources)
        .enumerate()
        .map(|(i, (t, e))| {
            let salt = provenance::digest::tagged_hash_parts(
                provenance::ObjectKind::Blob,
                &[b"eval-salt", &(i as u64).to_be_bytes()],
            )
            .0;
            let manifest = manifest_for(t, window, &salt, &e.terms)?;
            let signature = c.sign_manifest(&manifest)?;
            Ok(SignedSource {
                manifest,
                signature,
                text: t.clone(),
                salt,
            })
        })
        .collect()
}

pub(super) fn world(cfg: &DemoConfig, s: &EvalSettings) -> Result<EvalWorld> {
    let w = build(cfg, &mut MemorySink::default(), &mut |_, _| {})?;
    let window = cfg.settings.model.window();
    let mut texts = Vec::new();
    let mut heldout = Vec::new();
    for (i, e) in cfg.sources.iter().enumerate() {
        let t = std::fs::read(&e.path).map_err(|err| TunerError::io(&e.path, err))?;
        let n = s.train_windows * window;
        if t.len() < n + s.heldout_windows * window {
            return Err(TunerError::Config(format!(
                "{} is too short for {} training and {} held-out windows",
                e.path.display(),
                s.train_windows,
                s.heldout_windows
            )));
        }
        for h in 0..s.heldout_windows {
            heldout.push((i, t[n + h * window..n + (h + 1) * window].to_vec()));
        }
        texts.push(t[..n].to_vec());
    }
    let canaries = plant(
        &mut texts,
        window,
        s.canaries,
        s.canary_copies,
        s.secret_len,
        s.canary_offset,
        s.seed,
    )?;
    let mut spec = w.spec;
    spec.sources = sign(&w.consortium, cfg, &texts, window)?;
    spec.settings.sketch_side = s.sketch_side;
    spec.settings.batch_size = s.batch;
    spec.settings.epochs = s.epochs;
    if let Some(r) = s.rank {
        spec.settings.lora.rank = r;
        spec.settings.lora.alpha = 2.0 * r as f32;
    }
    spec.canaries.clear();
    Ok(EvalWorld {
        spec,
        texts,
        canaries,
        heldout,
        consortium_seed: cfg.consortium_seed,
    })
}

/// A spec for `sources` (positions) at `granularity`, with checkpoints.
pub(super) fn spec_for(
    w: &EvalWorld,
    sources: &[usize],
    granularity: EventGranularity,
    checkpoints: u64,
) -> Result<CampaignSpec> {
    let mut spec = w.spec.clone();
    spec.sources = sources.iter().map(|&i| w.spec.sources[i].clone()).collect();
    spec.policy.event_granularity = granularity;
    let window = spec.settings.model.window();
    let examples: usize = sources.iter().map(|&i| w.texts[i].len() / window).sum();
    let batch = if granularity == EventGranularity::Example {
        1
    } else {
        spec.settings.batch_size
    };
    let steps = spec.settings.epochs * examples.div_ceil(batch) as u64;
    spec.settings.max_steps = steps;
    spec.settings.checkpoint_every = if checkpoints == 0 {
        0
    } else {
        (steps / (checkpoints + 1)).max(1)
    };
    let c = &spec.campaign;
    spec.campaign = build_campaign(
        &spec.settings,
        &spec.policy,
        c.operator.clone(),
        &c.name,
        c.purpose.clone(),
        c.base_model.campaign,
        c.base_model.state,
        c.created,
    )?;
    let _ = w.consortium_seed;
    Ok(spec)
}
