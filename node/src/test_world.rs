//! A consortium for unit tests: real keys (seeded), two data sources, a
//! policy and a campaign committed in a ledger state, and builders of
//! signed entries.

use std::collections::HashMap;

use provenance::admission::{admit, AdmissionContext};
use provenance::crypto::{CoSignature, CoSigner};
use provenance::event::{BlockMeasure, ChainLink, ExampleRecord, Measurement, MemorisationSignals};
use provenance::genesis::{deal, ConsortiumDescription, NodeSigners};
use provenance::policy::{
    DepthResolution, DepthRule, EventGranularity, LogVolume, MemorisationThresholds, RoutingGranularity,
};
use provenance::refusal::ExampleRef;
use provenance::{
    Admission, AuthorityId, BaseModel, Campaign, Canonical, DataClass, DataSourceManifest, Digest, EntryBody,
    KeyRing, LedgerEntry, LedgerState, License, ModelShape, PolicyArtifact, Purpose, Refusal, RefusalReason,
    RightsBasis, Segmentation, SignatureScheme, SketchSpec, SourceExamples, StepEvent, Timestamp,
};
use rand::SeedableRng;

pub(crate) const T0: u64 = 1_800_000_000_000;
pub(crate) const GLOBE: usize = 0;
pub(crate) const FOLIO: usize = 1;
pub(crate) const GOV: usize = 2;
pub(crate) const OP: usize = 3;

pub(crate) fn label<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("label")
}

/// A consortium (two data sources, governance, operator) with two sources,
/// a policy and a campaign committed.
pub(crate) struct World {
    pub(crate) keyring: KeyRing,
    pub(crate) signers: Vec<NodeSigners>,
    pub(crate) state: LedgerState,
    pub(crate) manifest_sigs: HashMap<Digest, CoSignature>,
    pub(crate) sources: Vec<(DataSourceManifest, SourceExamples)>,
    pub(crate) policy: PolicyArtifact,
    pub(crate) campaign: Campaign,
    /// Every registration committed, in order.
    pub(crate) entries: Vec<LedgerEntry>,
}

pub(crate) fn manifest(
    authority: &str,
    title: &str,
    text: &[u8],
    license: &str,
) -> (DataSourceManifest, SourceExamples) {
    let seg = Segmentation::Window {
        length: 16,
        stride: 16,
    };
    let examples = SourceExamples::build(text, &seg, &[3u8; 32]).expect("examples");
    (
        DataSourceManifest {
            version: 1,
            authority: label(authority),
            title: title.into(),
            segmentation: seg,
            example_root: examples.root(),
            example_count: examples.len(),
            content_bytes: text.len() as u64,
            license: label(license),
            rights_basis: RightsBasis::PublicDomain,
            purposes: vec![label("research")],
            data_class: label::<DataClass>("literary"),
            not_before: Timestamp(T0 - 86_400_000),
            not_after: Timestamp(T0 + 86_400_000),
        },
        examples,
    )
}

pub(crate) fn policy(version: u32, supersedes: Option<Digest>) -> PolicyArtifact {
    PolicyArtifact {
        version: 2,
        authority: label("standards-board"),
        policy_version: version,
        supersedes,
        admissible_licenses: vec![label::<License>("CC0-1.0")],
        admissible_purposes: vec![label::<Purpose>("research")],
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
        routing_granularity: RoutingGranularity::Layer,
        depth_resolution: DepthResolution::Layer,
        log_volume: LogVolume {
            composite_batching: true,
            refusal_aggregation: true,
        },
        signature_scheme: SignatureScheme::Bls12381,
        audit: provenance::audit::AuditPolicy::default(),
    }
}

pub(crate) fn campaign(policy: &PolicyArtifact, purpose: &str, name: &str) -> Campaign {
    Campaign {
        version: 2,
        operator: label("tuning-lab"),
        name: name.into(),
        purpose: label(purpose),
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
        created: Timestamp(T0),
    }
}

impl World {
    pub(crate) fn new() -> Self {
        Self::with_policy(policy(1, None))
    }

    /// A world whose campaign runs under `policy`.
    pub(crate) fn with_policy(policy: PolicyArtifact) -> Self {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        let dealt = deal(
            &ConsortiumDescription::local_testnet(7100, 8100),
            Timestamp(1),
            &mut rng,
        )
        .expect("deal");
        let signers = dealt.signers().expect("signers");
        let mut w = World {
            keyring: dealt.keyring.clone(),
            signers,
            state: LedgerState::new(),
            manifest_sigs: HashMap::new(),
            sources: vec![
                manifest("globe-press", "Globe", &[b'g'; 160], "CC0-1.0"),
                manifest("folio-society", "Folio", &[b'f'; 160], "CC0-1.0"),
                // A license the policy does not admit.
                manifest(
                    "folio-society",
                    "Folio (restricted)",
                    &[b'r'; 160],
                    "LicenseRef-Restricted",
                ),
            ],
            campaign: campaign(&policy, "research", "c1"),
            policy,
            entries: Vec::new(),
        };
        let mut first: Vec<EntryBody> = w
            .sources
            .iter()
            .map(|(m, _)| EntryBody::Manifest(m.clone()))
            .collect();
        first.push(EntryBody::Policy(w.policy.clone()));
        w.commit(first);
        w.commit(vec![EntryBody::Campaign(w.campaign.clone())]);
        w
    }

    pub(crate) fn signer_of(&self, authority: &AuthorityId) -> &NodeSigners {
        self.signers
            .iter()
            .find(|s| s.authority.authority() == authority)
            .expect("a signer of every authority")
    }

    /// Every required signer signs `body` under the committed state.
    pub(crate) fn sign_all(&self, body: &EntryBody) -> LedgerEntry {
        let plan = body.signing_plan(&self.state).expect("plan");
        let scheme = plan.scheme.unwrap_or(SignatureScheme::Bls12381);
        let mut co = CoSigner::new(&self.keyring, scheme, plan.requests.clone()).expect("cosigner");
        for r in &plan.requests {
            let sig = self
                .signer_of(&r.authority)
                .authority
                .sign(scheme, &r.message)
                .expect("sign");
            co.add(sig).expect("valid");
        }
        LedgerEntry::signed(body.clone(), co.finish().expect("complete"))
    }

    /// The submitter's signature (the operator's of a campaign record,
    /// else its one signer's), as its offer carries it; none if the entry
    /// cannot be planned.
    pub(crate) fn submitter_sig(&self, body: &EntryBody) -> Vec<provenance::AuthoritySignature> {
        let Ok(plan) = body.signing_plan(&self.state) else {
            return Vec::new();
        };
        let scheme = plan.scheme.unwrap_or(SignatureScheme::Bls12381);
        let r = plan
            .requests
            .iter()
            .find(|r| r.role == provenance::Role::Operator)
            .or(plan.requests.first())
            .expect("a signer");
        vec![self
            .signer_of(&r.authority)
            .authority
            .sign(scheme, &r.message)
            .expect("sign")]
    }

    /// Signs and applies one block of entries.
    pub(crate) fn commit(&mut self, bodies: Vec<EntryBody>) {
        let entries: Vec<LedgerEntry> = bodies.iter().map(|b| self.sign_all(b)).collect();
        for e in &entries {
            if let (EntryBody::Manifest(m), provenance::Attestation::Authorities(c)) =
                (&e.body, &e.attestation)
            {
                self.manifest_sigs.insert(m.source_id(), c.clone());
            }
        }
        self.state.apply_block(&entries, Timestamp(T0)).expect("apply");
        self.entries.extend(entries);
    }

    pub(crate) fn record(&self, source: usize, index: u64, time: u64) -> ExampleRecord {
        let (m, ex) = &self.sources[source];
        let ctx = AdmissionContext {
            keyring: &self.keyring,
            policy: &self.policy,
            campaign: &self.campaign,
            revocations: &[],
            time: Timestamp(time),
        };
        let decision = match admit(&ctx, m, &self.manifest_sigs[&m.source_id()]) {
            Admission::Admit(d) => d,
            // A source the policy refuses: any decision (governance must
            // refuse the record).
            Admission::Refuse { .. } => match admit(
                &ctx,
                &self.sources[GLOBE].0,
                &self.manifest_sigs[&self.sources[GLOBE].0.source_id()],
            ) {
                Admission::Admit(d) => d,
                Admission::Refuse { reason, detail } => panic!("globe refused: {reason}: {detail}"),
            },
        };
        ExampleRecord {
            source: m.source_id(),
            index,
            example_hash: ex.hash(index).expect("hash"),
            proof: ex.proof(index).expect("proof").path,
            decision,
        }
    }

    pub(crate) fn link(&self, seq: u64) -> ChainLink {
        ChainLink {
            campaign: self.campaign.digest(),
            seq,
            prev: Digest::ZERO,
        }
    }

    /// A step with one example of each of the first two sources.
    pub(crate) fn step(&self, time: u64) -> StepEvent {
        StepEvent {
            version: 2,
            link: self.link(0),
            order: provenance::OrderSpan { start: 0, end: 2 },
            step: 0,
            policy: self.policy.digest(),
            examples: vec![self.record(GLOBE, 0, time), self.record(FOLIO, 1, time)],
            measurement: Measurement {
                blocks: vec![BlockMeasure {
                    block: 0,
                    delta_digest: Digest([1; 32]),
                    norm: 0.01,
                }],
                optimizer_state: Digest([2; 32]),
                model_state: Digest([3; 32]),
                loss: 2.0,
                signals: MemorisationSignals::default(),
            },
            sketch_blob: Digest::ZERO,
            delta_blob: Digest::ZERO,
            step_time: Timestamp(time),
        }
    }

    pub(crate) fn refusal(
        &self,
        reason: RefusalReason,
        source: usize,
        measurement: Option<Measurement>,
    ) -> Refusal {
        let (m, ex) = &self.sources[source];
        Refusal {
            version: 2,
            link: self.link(0),
            order: provenance::OrderSpan { start: 0, end: 1 },
            step: 0,
            policy: self.policy.digest(),
            examples: vec![ExampleRef {
                source: m.source_id(),
                index: 0,
                example_hash: ex.hash(0).expect("hash"),
            }],
            reason,
            detail: String::new(),
            measurement,
            time: Timestamp(T0),
        }
    }
}
