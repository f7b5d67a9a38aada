//! Shared fixtures: a dealt 4-node consortium (seeded, so deterministic) and
//! builders for every object.
#![allow(dead_code)]

use std::sync::OnceLock;

use provenance::crypto::{CoSigner, SignatureScheme};
use provenance::genesis::{deal, ConsortiumDescription, Dealt, NodeSigners};
use provenance::*;
use rand::SeedableRng;

pub const T0: u64 = 1_800_000_000_000;

pub struct Fixture {
    pub dealt: Dealt,
    pub signers: Vec<NodeSigners>,
}

impl Fixture {
    pub fn keyring(&self) -> &KeyRing {
        &self.dealt.keyring
    }
    /// The signer of authority `id` (single-node authorities).
    pub fn signer(&self, id: &str) -> &NodeSigners {
        self.signers
            .iter()
            .find(|s| s.authority.authority().as_str() == id)
            .expect("authority in fixture")
    }
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let dealt = deal(
            &ConsortiumDescription::local_testnet(7100, 8100),
            Timestamp(T0),
            &mut rng,
        )
        .expect("testnet deals");
        let signers = dealt.signers().expect("keys match genesis");
        Fixture { dealt, signers }
    })
}

pub fn id(s: &str) -> AuthorityId {
    AuthorityId::new(s).expect("valid id")
}

pub const SALT: [u8; 32] = [9u8; 32];
pub const TEXT: &[u8] = b"When shall we three meet again / In thunder, lightning, or in rain? / When the hurlyburly's done, / When the battle's lost and won.";

pub fn examples() -> SourceExamples {
    SourceExamples::build(
        TEXT,
        &Segmentation::Window {
            length: 16,
            stride: 16,
        },
        &SALT,
    )
    .expect("cuts")
}

pub fn manifest(authority: &str) -> DataSourceManifest {
    let ex = examples();
    DataSourceManifest {
        version: 1,
        authority: id(authority),
        title: "Macbeth, Act I".into(),
        segmentation: Segmentation::Window {
            length: 16,
            stride: 16,
        },
        example_root: ex.root(),
        example_count: ex.len(),
        content_bytes: TEXT.len() as u64,
        license: License::new("CC-BY-4.0").expect("license"),
        rights_basis: RightsBasis::Owner,
        purposes: vec![Purpose::new("research").expect("purpose")],
        data_class: DataClass::new("literary").expect("class"),
        not_before: Timestamp(T0),
        not_after: Timestamp(T0 + 1_000_000),
    }
}

pub fn policy() -> PolicyArtifact {
    PolicyArtifact {
        version: 2,
        authority: id("standards-board"),
        policy_version: 1,
        supersedes: None,
        admissible_licenses: vec![
            License::new("CC-BY-4.0").expect("l"),
            License::new("CC0-1.0").expect("l"),
        ],
        admissible_purposes: vec![Purpose::new("research").expect("p")],
        depth: vec![DepthRule {
            data_class: DataClass::new("literary").expect("c"),
            max_depth: 1,
            clip_norm: 1.0,
        }],
        memorisation: MemorisationThresholds {
            loss_drop_z: 4.0,
            extraction: 0.5,
            canary_exposure: 10.0,
        },
        event_granularity: EventGranularity::Batch,
        routing_granularity: RoutingGranularity::Block,
        depth_resolution: DepthResolution::Layer,
        log_volume: LogVolume {
            composite_batching: false,
            refusal_aggregation: true,
        },
        signature_scheme: SignatureScheme::Bls12381,
        audit: provenance::audit::AuditPolicy::default(),
    }
}

pub fn campaign(policy: &PolicyArtifact) -> Campaign {
    Campaign {
        version: 2,
        operator: id("tuning-lab"),
        name: "macbeth-lora".into(),
        purpose: Purpose::new("research").expect("p"),
        policy: policy.digest(),
        base_model: BaseModel {
            campaign: Some(Digest([3; 32])),
            state: Digest([4; 32]),
        },
        architecture: Digest([5; 32]),
        recipe: Digest([6; 32]),
        shape: ModelShape { layers: 4, heads: 4 },
        sketch: SketchSpec { seed: 42, dim: 256 },
        checkpoint_steps: vec![10, 20],
        created: Timestamp(T0 + 10),
    }
}

pub fn measurement() -> Measurement {
    Measurement {
        blocks: vec![BlockMeasure {
            block: 7,
            delta_digest: Digest([6; 32]),
            norm: 0.25,
        }],
        optimizer_state: Digest([7; 32]),
        model_state: Digest([8; 32]),
        loss: 2.5,
        signals: MemorisationSignals {
            loss_drop_z: 0.5,
            extraction: 0.0,
            canary_exposure: 0.0,
        },
    }
}

pub fn record(
    source: &DataSourceManifest,
    index: u64,
    policy: &PolicyArtifact,
    campaign: &Campaign,
) -> ExampleRecord {
    let ex = examples();
    let routing = provenance::admission::routing_mask(policy, campaign.shape, 1);
    ExampleRecord {
        source: source.source_id(),
        index,
        example_hash: ex.hash(index).expect("index"),
        proof: ex.proof(index).expect("index").path,
        decision: AdmitDecision {
            depth: DepthProfile {
                max_depth: 1,
                clip_norm: 1.0,
            },
            routing,
        },
    }
}

pub fn link(campaign: &Campaign, seq: u64) -> ChainLink {
    ChainLink {
        campaign: campaign.digest(),
        seq,
        prev: if seq == 0 {
            Digest::ZERO
        } else {
            Digest([seq as u8; 32])
        },
    }
}

/// A ledger with two sources (one per data-source authority), a policy and
/// a campaign, and a step event holding examples of both sources.
pub struct World {
    pub view: MemoryLedgerView,
    pub globe: DataSourceManifest,
    pub folio: DataSourceManifest,
    pub policy: PolicyArtifact,
    pub campaign: Campaign,
}

pub fn world_with(policy: PolicyArtifact) -> World {
    let globe = manifest("globe-press");
    let mut folio = manifest("folio-society");
    folio.title = "Macbeth, Act I (Folio)".into();
    let campaign = campaign(&policy);
    let mut view = MemoryLedgerView::default();
    view.apply(&EntryBody::Manifest(globe.clone()));
    view.apply(&EntryBody::Manifest(folio.clone()));
    view.apply(&EntryBody::Policy(policy.clone()));
    view.apply(&EntryBody::Campaign(campaign.clone()));
    World {
        view,
        globe,
        folio,
        policy,
        campaign,
    }
}

pub fn world() -> World {
    world_with(policy())
}

impl World {
    pub fn step_event(&self) -> StepEvent {
        StepEvent {
            version: 2,
            link: link(&self.campaign, 0),
            order: OrderSpan { start: 0, end: 2 },
            step: 0,
            policy: self.policy.digest(),
            examples: vec![
                record(&self.globe, 0, &self.policy, &self.campaign),
                record(&self.folio, 1, &self.policy, &self.campaign),
            ],
            measurement: measurement(),
            sketch_blob: Digest([10; 32]),
            delta_blob: Digest([11; 32]),
            step_time: Timestamp(T0 + 100),
        }
    }
}

/// Signs `body` with every required signer under `scheme`.
pub fn sign_all(body: &EntryBody, view: &MemoryLedgerView, scheme: SignatureScheme) -> LedgerEntry {
    let f = fixture();
    let plan = body.signing_plan(view).expect("plan");
    let mut co = CoSigner::new(f.keyring(), scheme, plan.requests.clone()).expect("cosigner");
    for r in &plan.requests {
        let sig = f
            .signer(r.authority.as_str())
            .authority
            .sign(scheme, &r.message)
            .expect("sign");
        co.add(sig).expect("valid signature");
    }
    LedgerEntry::signed(body.clone(), co.finish().expect("complete"))
}

/// `cp` signed by the consortium's BLS key from the first `bls` validators'
/// shares (none: no BLS signature) and by the first `notes` validators'
/// note keys.
pub fn sign_checkpoint(cp: provenance::Checkpoint, bls: usize, notes: usize) -> provenance::SignedCheckpoint {
    let f = fixture();
    let msg = cp.signing_message();
    let validators: Vec<_> = f.signers.iter().filter(|s| s.consortium.is_some()).collect();
    let signature = if bls == 0 {
        provenance::Bytes::default()
    } else {
        let shares: Vec<_> = validators
            .iter()
            .take(bls)
            .map(|s| s.consortium.as_ref().expect("a validator").sign_share(&msg))
            .collect();
        f.keyring()
            .combine_consortium_shares(&msg, &shares)
            .expect("shares combine")
    };
    provenance::SignedCheckpoint {
        validators: validators
            .iter()
            .take(notes)
            .filter_map(|s| s.sign_note(&cp))
            .collect(),
        checkpoint: cp,
        signature,
    }
}
