//! A deterministic synthetic workload for the store's tests and benchmark:
//! eight sources, a policy, a campaign, then chained step events and
//! refusals with random examples and parameter blocks.
//!
//! Entries carry an empty placeholder co-signature: the store does not check
//! authority signatures (consensus verifies every entry before a block is
//! finalised), so this exercises storage alone. Nothing here is used by a
//! node.

use provenance::checkpoint::{Checkpoint, SignedCheckpoint};
use provenance::crypto::{CoSignature, SignatureScheme};
use provenance::genesis::{deal, ConsortiumDescription, Dealt, NodeSigners};
use provenance::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::StoreError;

/// The log origin of the synthetic consortium.
pub const ORIGIN: &str = "synthetic.govtune.invalid/log";

/// The synthetic consortium: the default 4-node testnet dealt from a fixed
/// seed, so a test and a child process it spawns hold the same keys.
pub fn consortium() -> (Dealt, Vec<NodeSigners>) {
    let dealt = deal(
        &ConsortiumDescription {
            origin: Some(ORIGIN.into()),
            ..ConsortiumDescription::local_testnet(7100, 8100)
        },
        Timestamp(1),
        &mut ChaCha20Rng::seed_from_u64(1),
    )
    .expect("the built-in testnet description deals");
    let signers = dealt.signers().expect("dealt keys match their genesis");
    (dealt, signers)
}

/// `cp` signed by q = 3 of the synthetic consortium's validators (the BLS
/// signature and their note signatures).
pub fn sign_checkpoint(
    cp: Checkpoint,
    dealt: &Dealt,
    signers: &[NodeSigners],
) -> Result<SignedCheckpoint, StoreError> {
    let msg = cp.signing_message();
    let shares: Vec<_> = signers
        .iter()
        .take(3)
        .map(|s| s.consortium.as_ref().expect("a validator").sign_share(&msg))
        .collect();
    let signature = dealt
        .keyring
        .combine_consortium_shares(&msg, &shares)
        .map_err(|e| StoreError::Checkpoint(e.to_string()))?;
    Ok(SignedCheckpoint {
        validators: signers.iter().take(3).filter_map(|s| s.sign_note(&cp)).collect(),
        checkpoint: cp,
        signature,
    })
}

/// Certifies the store's head with a checkpoint and stores it.
pub fn certify(
    store: &mut crate::Store,
    dealt: &Dealt,
    signers: &[NodeSigners],
) -> Result<SignedCheckpoint, StoreError> {
    let h = store.head().clone();
    let cp = sign_checkpoint(
        Checkpoint {
            version: Checkpoint::VERSION,
            origin: ORIGIN.into(),
            size: h.log_size,
            root: h.root,
            height: h.height,
            time: h.stamp,
            index: h.index_root,
        },
        dealt,
        signers,
    )?;
    store.put_checkpoint(&cp, &dealt.keyring)?;
    Ok(cp)
}

/// The store's latest checkpoint as the API shows it (without its note
/// text), for sizing answers.
pub fn checkpoint_answer(store: &crate::Store) -> provenance::api::CheckpointAnswer {
    match store.latest_checkpoint() {
        Some(cp) => provenance::api::CheckpointAnswer::new(cp, Vec::new(), String::new()),
        None => provenance::api::CheckpointAnswer::new(
            &SignedCheckpoint {
                checkpoint: Checkpoint {
                    version: Checkpoint::VERSION,
                    origin: ORIGIN.into(),
                    size: 0,
                    root: Digest::ZERO,
                    height: 0,
                    time: Timestamp(0),
                    index: Digest::ZERO,
                },
                signature: Bytes(vec![0; 96]),
                validators: Vec::new(),
            },
            Vec::new(),
            String::new(),
        ),
    }
}

/// The workload's generator state.
#[derive(Debug, Clone)]
pub struct Workload {
    rng: ChaCha20Rng,
    /// The sources.
    pub sources: Vec<DataSourceManifest>,
    /// The policy.
    pub policy: PolicyArtifact,
    /// The campaign.
    pub campaign: Campaign,
    head: Digest,
    seq: u64,
    /// Sources a step may still name (not revoked).
    live: Vec<usize>,
}

fn placeholder() -> Attestation {
    Attestation::Authorities(CoSignature::List {
        scheme: SignatureScheme::Ed25519,
        signatures: Vec::new(),
    })
}

fn entry(body: EntryBody) -> LedgerEntry {
    LedgerEntry {
        version: LedgerEntry::VERSION,
        body,
        attestation: placeholder(),
        audits: Vec::new(),
    }
}

fn label<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("static label is valid")
}

fn digest(rng: &mut ChaCha20Rng) -> Digest {
    let mut d = [0u8; 32];
    rng.fill(&mut d);
    Digest(d)
}

impl Workload {
    /// The workload of `seed`: the same seed always yields the same entries.
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let sources = (0..8)
            .map(|i| DataSourceManifest {
                version: 1,
                authority: label(if i % 2 == 0 {
                    "globe-press"
                } else {
                    "folio-society"
                }),
                title: format!("play {i}"),
                segmentation: Segmentation::Window {
                    length: 256,
                    stride: 256,
                },
                example_root: digest(&mut rng),
                example_count: 512,
                content_bytes: 512 * 256,
                license: label("CC-BY-4.0"),
                rights_basis: RightsBasis::PublicDomain,
                purposes: vec![label("research")],
                data_class: label("literary"),
                not_before: Timestamp(0),
                not_after: Timestamp(u64::MAX),
            })
            .collect();
        let policy = PolicyArtifact {
            version: 2,
            authority: label("standards-board"),
            policy_version: 1,
            supersedes: None,
            admissible_licenses: vec![label("CC-BY-4.0")],
            admissible_purposes: vec![label("research")],
            depth: vec![DepthRule {
                data_class: label("literary"),
                max_depth: 2,
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
                refusal_aggregation: false,
            },
            signature_scheme: SignatureScheme::Bls12381,
            audit: provenance::audit::AuditPolicy::default(),
        };
        let campaign = Campaign {
            version: 2,
            operator: label("tuning-lab"),
            name: format!("synthetic-{seed}"),
            purpose: label("research"),
            policy: policy.digest(),
            base_model: BaseModel {
                campaign: None,
                state: digest(&mut rng),
            },
            architecture: digest(&mut rng),
            recipe: digest(&mut rng),
            shape: ModelShape { layers: 4, heads: 4 },
            sketch: SketchSpec { seed, dim: 128 },
            checkpoint_steps: vec![],
            created: Timestamp(1),
        };
        Self {
            rng,
            sources,
            policy,
            campaign,
            head: Digest::ZERO,
            seq: 0,
            live: (0..8).collect(),
        }
    }

    /// Continues the campaign chain from a store's state (after a restart).
    pub fn resume(seed: u64, state: &LedgerState) -> Self {
        let mut w = Self::new(seed);
        if let Some(c) = state.campaign_state(&w.campaign.digest()) {
            w.head = c.head;
            w.seq = c.entries;
            // Advance the RNG past what was used, deterministically enough
            // for distinct content.
            w.rng = ChaCha20Rng::seed_from_u64(seed ^ c.entries.rotate_left(17));
        }
        let revoked: Vec<Digest> = state.revocations().iter().map(|r| r.source).collect();
        let sources = &w.sources;
        w.live.retain(|&i| !revoked.contains(&sources[i].source_id()));
        w
    }

    /// The entries that register the sources, the policy and the campaign.
    pub fn setup_entries(&self) -> Vec<LedgerEntry> {
        let mut out: Vec<LedgerEntry> = self
            .sources
            .iter()
            .map(|m| entry(EntryBody::Manifest(m.clone())))
            .collect();
        out.push(entry(EntryBody::Policy(self.policy.clone())));
        out.push(entry(EntryBody::Campaign(self.campaign.clone())));
        out
    }

    /// A revocation of source `i` by its authority; later steps no longer
    /// name it (consensus would refuse them).
    pub fn revocation(&mut self, i: usize) -> LedgerEntry {
        let i = i % self.sources.len();
        self.live.retain(|&k| k != i);
        let m = &self.sources[i];
        entry(EntryBody::Revocation(Revocation {
            version: 1,
            authority: m.authority.clone(),
            source: m.source_id(),
            reason: "synthetic".into(),
            requested: Timestamp(0),
        }))
    }

    /// The next `n` campaign records (about 10% refusals), chained.
    pub fn next_events(&mut self, n: usize) -> Vec<LedgerEntry> {
        let campaign = self.campaign.digest();
        let policy = self.policy.digest();
        (0..n)
            .map(|_| {
                let link = ChainLink {
                    campaign,
                    seq: self.seq,
                    prev: self.head,
                };
                let step = self.seq;
                let rng = &mut self.rng;
                let body = if rng.gen_ratio(1, 10) {
                    let s = &self.sources[rng.gen_range(0..self.sources.len())];
                    EntryBody::Refusal(Refusal {
                        version: 2,
                        link,
                        order: OrderSpan {
                            start: 2 * step,
                            end: 2 * step + 2,
                        },
                        step,
                        policy,
                        examples: vec![ExampleRef {
                            source: s.source_id(),
                            index: rng.gen_range(0..512),
                            example_hash: digest(rng),
                        }],
                        reason: RefusalReason::ALL[rng.gen_range(0..7)],
                        detail: "synthetic".into(),
                        measurement: None,
                        time: Timestamp(step),
                    })
                } else {
                    let examples = (0..rng.gen_range(1..=2))
                        .map(|_| {
                            let s = &self.sources[self.live[rng.gen_range(0..self.live.len())]];
                            ExampleRecord {
                                source: s.source_id(),
                                index: rng.gen_range(0..512),
                                example_hash: digest(rng),
                                proof: (0..9).map(|_| digest(rng)).collect(),
                                decision: AdmitDecision {
                                    depth: DepthProfile {
                                        max_depth: 2,
                                        clip_norm: 1.0,
                                    },
                                    routing: RoutingMask::from_fn(RoutingGranularity::Block, 8, |u| u >= 4),
                                },
                            }
                        })
                        .collect();
                    let blocks = (0..rng.gen_range(1..=3))
                        .map(|_| BlockMeasure {
                            block: rng.gen_range(0..16),
                            delta_digest: digest(rng),
                            norm: rng.gen_range(0.0..1.0),
                        })
                        .collect();
                    EntryBody::Step(StepEvent {
                        version: 2,
                        link,
                        order: OrderSpan {
                            start: 2 * step,
                            end: 2 * step + 2,
                        },
                        step,
                        policy,
                        examples,
                        measurement: Measurement {
                            blocks,
                            optimizer_state: digest(rng),
                            model_state: digest(rng),
                            loss: rng.gen_range(1.0..3.0),
                            signals: MemorisationSignals::default(),
                        },
                        sketch_blob: digest(rng),
                        delta_blob: digest(rng),
                        step_time: Timestamp(step),
                    })
                };
                self.head = body.digest();
                self.seq += 1;
                entry(body)
            })
            .collect()
    }
}
