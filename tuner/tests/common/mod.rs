//! Shared fixtures: a tiny model pretrained on bundled plays, and
//! campaign configs over the bundled fine-tuning sources.
#![allow(dead_code)]

use std::path::PathBuf;

use provenance::crypto::SignatureScheme;
use provenance::*;
use tuner::campaign::TrainSettings;
use tuner::data::SourceTerms;
use tuner::demo::{DemoConfig, SourceEntry};
use tuner::lora::LoraConfig;
use tuner::model::ModelConfig;
use tuner::optim::AdamWConfig;
use tuner::pretrain::PretrainSettings;

pub const T0: u64 = 1_800_000_000_000;

pub fn data(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../data/plays")
        .join(p)
}

pub fn tiny_model() -> ModelConfig {
    ModelConfig {
        context: 32,
        d_model: 32,
        layers: 2,
        heads: 2,
        mlp_mult: 4,
    }
}

pub fn terms(authority: &str, title: &str, class: &str) -> SourceTerms {
    SourceTerms {
        authority: authority.into(),
        title: title.into(),
        license: "CC0-1.0".into(),
        purposes: vec!["research".into()],
        data_class: class.into(),
        rights_basis: provenance::RightsBasis::PublicDomain,
        not_before: T0,
        not_after: T0 + 10_000_000_000,
    }
}

pub fn policy(routing: RoutingGranularity, events: EventGranularity) -> PolicyArtifact {
    PolicyArtifact {
        version: 2,
        authority: AuthorityId::new("standards-board").unwrap(),
        policy_version: 1,
        supersedes: None,
        admissible_licenses: vec![License::new("CC0-1.0").unwrap()],
        admissible_purposes: vec![Purpose::new("research").unwrap()],
        depth: vec![
            DepthRule {
                data_class: DataClass::new("literary").unwrap(),
                max_depth: 8,
                clip_norm: 1.0,
            },
            DepthRule {
                data_class: DataClass::new("shallow").unwrap(),
                max_depth: 1,
                clip_norm: 1.0,
            },
        ],
        memorisation: MemorisationThresholds {
            loss_drop_z: 1e6,
            extraction: 1.0,
            canary_exposure: 1e6,
        },
        event_granularity: events,
        routing_granularity: routing,
        depth_resolution: DepthResolution::Layer,
        log_volume: LogVolume {
            composite_batching: false,
            refusal_aggregation: true,
        },
        signature_scheme: SignatureScheme::Bls12381,
        audit: provenance::audit::AuditPolicy::default(),
    }
}

pub const SOURCES: [&str; 8] = [
    "as_you_like_it",
    "comedy_of_errors",
    "twelfth_night",
    "merchant_of_venice",
    "midsummer_nights_dream",
    "taming_of_the_shrew",
    "two_gentlemen_of_verona",
    "winters_tale",
];

/// A config over `n` fine-tuning sources of `bytes` bytes each, the first
/// `shallow` of them of data class `shallow` (depth 1), the rest
/// `literary` (full depth), authorities alternating.
pub fn config(n: usize, bytes: usize, shallow: usize, policy: PolicyArtifact) -> DemoConfig {
    let model = tiny_model();
    let src = |i: usize, p: &str| SourceEntry {
        path: data(&format!("sources/{p}.txt")),
        max_bytes: bytes,
        terms: terms(
            if i.is_multiple_of(2) {
                "globe-press"
            } else {
                "folio-society"
            },
            p,
            if i < shallow { "shallow" } else { "literary" },
        ),
    };
    DemoConfig {
        name: "test-campaign".into(),
        operator: "tuning-lab".into(),
        purpose: "research".into(),
        consortium_seed: 7,
        start_ms: T0 + 1000,
        step_ms: 10,
        settings: TrainSettings {
            model,
            lora: LoraConfig {
                rank: 4,
                alpha: 8.0,
                dropout: 0.0,
            },
            optim: AdamWConfig {
                lr: 5e-3,
                weight_decay: 0.01,
                ..AdamWConfig::default()
            },
            batch_size: 8,
            epochs: 100,
            max_steps: 20,
            seed: 11,
            sketch_seed: 42,
            sketch_side: 2,
            checkpoint_every: 10,
        },
        pretrain: PretrainSettings {
            model,
            optim: AdamWConfig {
                lr: 3e-3,
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
            batch_size: 16,
            steps: 60,
            seed: 3,
            event_every: 20,
        },
        base_weights: None,
        base_sources: ["macbeth", "lear"]
            .iter()
            .map(|p| SourceEntry {
                path: data(&format!("base/{p}.txt")),
                max_bytes: 16384,
                terms: terms("globe-press", p, "literary"),
            })
            .collect(),
        sources: SOURCES
            .iter()
            .take(n)
            .enumerate()
            .map(|(i, p)| src(i, p))
            .collect(),
        probe: data("probe/sonnets.txt"),
        probe_windows: 8,
        policy,
        canaries: Vec::new(),
    }
}
