//! A ledger workload for tests and benchmarks of the network: two signed
//! sources (one per data-source authority), a policy, a campaign, and a
//! stream of chained step or composite events whose examples come from
//! both sources, so every event needs all four authorities' signatures.
//!
//! Everything is real and signed by the nodes; only the measurements are
//! made up (issue 6's tuner produces real ones).

use std::collections::HashMap;
use std::time::Duration;

use provenance::admission::{admit, AdmissionContext};
use provenance::campaign::{BaseModel, ModelShape, SketchSpec};
use provenance::crypto::{CoSignature, SignatureScheme};
use provenance::event::{
    BlockMeasure, ChainLink, ExampleRecord, Measurement, MemorisationSignals, StepEvent,
};
use provenance::policy::{
    DepthResolution, DepthRule, EventGranularity, LogVolume, MemorisationThresholds, RoutingGranularity,
};
use provenance::{
    Admission, Attestation, AuthorityId, Campaign, Canonical, CompositeEvent, DataClass, DataSourceManifest,
    Digest, EntryBody, KeyRing, License, OrderSpan, PolicyArtifact, Purpose, RightsBasis, Segmentation,
    SourceExamples, Timestamp,
};

use crate::runner::Testnet;
use lightclient::client::{Client, ClientError};

pub use roles::now_ms;

fn label<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    match s.parse() {
        Ok(v) => v,
        Err(e) => panic!("built-in label {s:?} is invalid: {e:?}"),
    }
}

/// A source with its examples (the text stays with its rights-holder).
#[derive(Debug, Clone)]
pub struct Source {
    /// The manifest.
    pub manifest: DataSourceManifest,
    /// Its examples.
    pub examples: SourceExamples,
    /// Which node registers it.
    pub node: usize,
}

/// The workload.
#[derive(Debug)]
pub struct Workload {
    /// Sources.
    pub sources: Vec<Source>,
    /// Policy.
    pub policy: PolicyArtifact,
    /// Campaign.
    pub campaign: Campaign,
    keyring: KeyRing,
    signatures: HashMap<Digest, CoSignature>,
    next: ChainLink,
    step: u64,
    cursor: u64,
}

/// Why the workload could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// API.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Testnet.
    #[error(transparent)]
    Testnet(#[from] crate::runner::TestnetError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

const SALT: [u8; 32] = [7u8; 32];

impl Workload {
    /// The workload for `testnet` over the given texts (one source per text,
    /// alternating between the data-source authorities).
    pub fn new(testnet: &Testnet, texts: &[(&str, &[u8])]) -> Result<Self, WorkloadError> {
        let ds: Vec<usize> = (0..testnet.nodes.len())
            .filter(|&i| testnet.nodes[i].role == "data-source")
            .collect();
        Self::with_sources_on(testnet, texts, &ds)
    }

    /// The workload with its sources registered by the data-source nodes
    /// `ds` only (alternating).
    pub fn with_sources_on(
        testnet: &Testnet,
        texts: &[(&str, &[u8])],
        ds: &[usize],
    ) -> Result<Self, WorkloadError> {
        if ds.is_empty() {
            return Err(WorkloadError::Other("no data-source node".into()));
        }
        let (_, keyring) = genesis::load_genesis(&testnet.genesis_path())
            .map_err(|e| WorkloadError::Other(e.to_string()))?;
        let gov = testnet.by_role("governance")?;
        let op = testnet.by_role("operator")?;
        let now = now_ms();
        let seg = Segmentation::Window {
            length: 64,
            stride: 64,
        };
        let mut sources = Vec::new();
        for (k, (title, text)) in texts.iter().enumerate() {
            let node = ds[k % ds.len()];
            let examples =
                SourceExamples::build(text, &seg, &SALT).map_err(|e| WorkloadError::Other(e.to_string()))?;
            sources.push(Source {
                manifest: DataSourceManifest {
                    version: 1,
                    authority: label(&testnet.nodes[node].authority),
                    title: (*title).to_string(),
                    segmentation: seg.clone(),
                    example_root: examples.root(),
                    example_count: examples.len(),
                    content_bytes: text.len() as u64,
                    license: label::<License>("CC0-1.0"),
                    rights_basis: RightsBasis::PublicDomain,
                    purposes: vec![label::<Purpose>("research")],
                    data_class: label::<DataClass>("literary"),
                    not_before: Timestamp(now - 86_400_000),
                    not_after: Timestamp(now + 30 * 86_400_000),
                },
                examples,
                node,
            });
        }
        let policy = PolicyArtifact {
            version: 2,
            authority: label::<AuthorityId>(&testnet.nodes[gov].authority),
            policy_version: 1,
            supersedes: None,
            admissible_licenses: vec![label::<License>("CC0-1.0")],
            admissible_purposes: vec![label::<Purpose>("research")],
            depth: vec![DepthRule {
                data_class: label::<DataClass>("literary"),
                max_depth: 2,
                clip_norm: 1.0,
            }],
            memorisation: MemorisationThresholds {
                loss_drop_z: 4.0,
                extraction: 0.5,
                canary_exposure: 10.0,
            },
            event_granularity: EventGranularity::Batch,
            routing_granularity: RoutingGranularity::Layer,
            depth_resolution: DepthResolution::Layer,
            log_volume: LogVolume {
                composite_batching: true,
                refusal_aggregation: true,
            },
            signature_scheme: SignatureScheme::Bls12381,
            audit: provenance::audit::AuditPolicy::default(),
        };
        let campaign = Campaign {
            version: 2,
            operator: label::<AuthorityId>(&testnet.nodes[op].authority),
            name: format!("network-workload-{now}"),
            purpose: label::<Purpose>("research"),
            policy: policy.digest(),
            base_model: BaseModel {
                campaign: None,
                state: Digest::ZERO,
            },
            architecture: Digest::ZERO,
            recipe: Digest::ZERO,
            shape: ModelShape { layers: 4, heads: 4 },
            sketch: SketchSpec { seed: 1, dim: 64 },
            checkpoint_steps: vec![],
            created: Timestamp(now),
        };
        let next = ChainLink {
            campaign: campaign.digest(),
            seq: 0,
            prev: Digest::ZERO,
        };
        Ok(Self {
            sources,
            policy,
            campaign,
            keyring,
            signatures: HashMap::new(),
            next,
            step: 0,
            cursor: 0,
        })
    }

    /// Registers the sources, the policy and the campaign through their
    /// authorities' nodes and waits until all are committed.
    pub fn register(&mut self, testnet: &Testnet) -> Result<(), WorkloadError> {
        let t = Duration::from_secs(60);
        let mut ids = Vec::new();
        for s in &self.sources {
            ids.push(testnet.admin(s.node)?.submit("/v1/sources", &s.manifest)?.digest);
        }
        let gov = testnet.by_role("governance")?;
        ids.push(testnet.admin(gov)?.submit("/v1/policies", &self.policy)?.digest);
        // Committed where the campaign goes next: the operator's node plans
        // the campaign against its own state, which may lag node 0's.
        let op = testnet.by_role("operator")?;
        testnet.client(op).wait_committed(&ids, t)?;
        let c = testnet.admin(op)?.submit("/v1/campaigns", &self.campaign)?.digest;
        testnet.client(op).wait_committed(&[c], t)?;
        for s in &self.sources {
            let id = s.manifest.source_id();
            let leaf = testnet
                .client(op)
                .source(&id)?
                .leaf
                .ok_or_else(|| WorkloadError::Other(format!("source {id} has no leaf")))?;
            let e: provenance::LedgerEntry =
                provenance::decode(leaf.as_slice()).map_err(|e| WorkloadError::Other(e.to_string()))?;
            match e.attestation {
                Attestation::Authorities(c) => {
                    self.signatures.insert(id, c);
                }
                Attestation::Consortium(_) => {
                    return Err(WorkloadError::Other(
                        "manifest without authority signature".into(),
                    ))
                }
            }
        }
        Ok(())
    }

    fn record(&self, s: &Source, index: u64, time: Timestamp) -> Result<ExampleRecord, WorkloadError> {
        let id = s.manifest.source_id();
        let sig = self
            .signatures
            .get(&id)
            .ok_or_else(|| WorkloadError::Other("register the workload first".into()))?;
        let ctx = AdmissionContext {
            keyring: &self.keyring,
            policy: &self.policy,
            campaign: &self.campaign,
            revocations: &[],
            time,
        };
        let decision = match admit(&ctx, &s.manifest, sig) {
            Admission::Admit(d) => d,
            Admission::Refuse { reason, detail } => {
                return Err(WorkloadError::Other(format!(
                    "source refused: {reason}: {detail}"
                )))
            }
        };
        let proof = s
            .examples
            .proof(index)
            .ok_or_else(|| WorkloadError::Other(format!("no example {index}")))?;
        Ok(ExampleRecord {
            source: id,
            index,
            example_hash: s.examples.hash(index).unwrap_or(Digest::ZERO),
            proof: proof.path,
            decision,
        })
    }

    fn records(&mut self, n: usize, time: Timestamp) -> Result<Vec<ExampleRecord>, WorkloadError> {
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            let s = &self.sources[(self.cursor as usize + k) % self.sources.len()];
            let index = (self.cursor / self.sources.len() as u64) % s.examples.len();
            out.push(self.record(s, index, time)?);
        }
        self.cursor += n as u64;
        Ok(out)
    }

    fn measurement(&self) -> Measurement {
        let d =
            |tag: u8| provenance::digest::tagged_hash(provenance::ObjectKind::Blob, &[tag, self.step as u8]);
        Measurement {
            blocks: vec![BlockMeasure {
                block: 0,
                delta_digest: d(1),
                norm: 0.01,
            }],
            optimizer_state: d(2),
            model_state: d(3),
            loss: 2.0,
            signals: MemorisationSignals::default(),
        }
    }

    /// The next chained event: a step event with `examples` examples (at
    /// least 2, so both data-source authorities sign), or a composite
    /// event when `composite`.
    pub fn next_event(&mut self, examples: usize, composite: bool) -> Result<EntryBody, WorkloadError> {
        let time = Timestamp(now_ms());
        let start = self.cursor;
        let records = self.records(examples.max(2), time)?;
        // The workload's campaign publishes no recipe, so no order is
        // accounted: its spans just follow its cursor.
        let order = OrderSpan {
            start,
            end: self.cursor,
        };
        let body = if composite {
            EntryBody::Composite(CompositeEvent {
                version: 2,
                link: self.next,
                order,
                first_step: self.step,
                last_step: self.step,
                policy: self.policy.digest(),
                records_root: provenance::event::composite_root(&records),
                records,
                measurement: self.measurement(),
                sketch_blob: Digest::ZERO,
                delta_blob: Digest::ZERO,
                step_time: time,
            })
        } else {
            EntryBody::Step(StepEvent {
                version: 2,
                link: self.next,
                order,
                step: self.step,
                policy: self.policy.digest(),
                examples: records,
                measurement: self.measurement(),
                sketch_blob: Digest::ZERO,
                delta_blob: Digest::ZERO,
                step_time: time,
            })
        };
        self.next = ChainLink {
            campaign: self.next.campaign,
            seq: self.next.seq + 1,
            prev: body.digest(),
        };
        self.step += 1;
        Ok(body)
    }

    /// An event a data-source authority must refuse: its first example's
    /// hash is not in the claimed source. It does not advance the chain.
    pub fn forged_event(&mut self) -> Result<EntryBody, WorkloadError> {
        let time = Timestamp(now_ms());
        let start = self.cursor;
        let mut records = self.records(2, time)?;
        let order = OrderSpan {
            start,
            end: self.cursor,
        };
        records[0].example_hash =
            provenance::digest::tagged_hash(provenance::ObjectKind::Blob, b"not in the source");
        Ok(EntryBody::Step(StepEvent {
            version: 2,
            link: self.next,
            order,
            step: self.step,
            policy: self.policy.digest(),
            examples: records,
            measurement: self.measurement(),
            sketch_blob: Digest::ZERO,
            delta_blob: Digest::ZERO,
            step_time: time,
        }))
    }
}

/// Submits `body` to the operator's node and returns its digest.
pub fn submit(operator: &Client, body: &EntryBody) -> Result<Digest, WorkloadError> {
    Ok(operator.submit_event(body)?.digest)
}
