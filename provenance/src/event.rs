//! Step events: what one governed training step did, per example and in
//! measurement. Every record of a campaign (step events, composites,
//! refusals, refusal aggregates) is a link of the campaign's hash chain,
//! which is what lets a verifier prove nothing was left out.

use serde::{Deserialize, Serialize};

use crate::codec::{finite, limit, Canonical, DecodeError};
use crate::digest::{Bytes, Digest, ObjectKind};
use crate::ids::Timestamp;
use crate::merkle::{verify_inclusion, InclusionProof, MemoryTree, ProofError, Sha3Hasher, TreeHasher};
use crate::order::OrderSpan;
use crate::policy::RoutingGranularity;

/// Most examples one event may carry.
pub const MAX_EXAMPLES_PER_EVENT: usize = 1 << 16;
/// Most parameter blocks a measurement may list.
pub const MAX_BLOCKS: usize = 1 << 12;

/// How deep an admitted example may reach, and its gradient clip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DepthProfile {
    /// Depth units from the output (per the policy's depth resolution).
    pub max_depth: u16,
    /// Per-example, per-block gradient L2 clip.
    pub clip_norm: f32,
}

/// Which units (blocks, layers or heads) an example's gradient may update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingMask {
    /// The unit.
    pub granularity: RoutingGranularity,
    /// Number of units.
    pub units: u32,
    /// `ceil(units / 8)` bytes; bit `i % 8` of byte `i / 8` for unit `i`.
    pub bits: Bytes,
}

impl RoutingMask {
    /// A mask over `units` units with the given ones set.
    pub fn from_fn(granularity: RoutingGranularity, units: u32, mut on: impl FnMut(u32) -> bool) -> Self {
        let mut bits = vec![0u8; (units as usize).div_ceil(8)];
        for i in 0..units {
            if on(i) {
                bits[(i / 8) as usize] |= 1 << (i % 8);
            }
        }
        Self {
            granularity,
            units,
            bits: Bytes(bits),
        }
    }

    /// Whether unit `i` is routed.
    pub fn allows(&self, i: u32) -> bool {
        i < self.units
            && self
                .bits
                .0
                .get((i / 8) as usize)
                .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// Number of units routed.
    pub fn count(&self) -> u32 {
        (0..self.units).filter(|&i| self.allows(i)).count() as u32
    }

    fn well_formed(&self) -> bool {
        self.bits.len() == (self.units as usize).div_ceil(8) && self.units <= 1 << 16
    }
}

/// The governance decision on one admitted example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdmitDecision {
    /// Depth profile.
    pub depth: DepthProfile,
    /// Routing mask.
    pub routing: RoutingMask,
}

/// One admitted example of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleRecord {
    /// Source id (manifest digest).
    pub source: Digest,
    /// Example index in the source.
    pub index: u64,
    /// Salted example hash.
    pub example_hash: Digest,
    /// Inclusion path of the example in the source's example root.
    pub proof: Vec<Digest>,
    /// Admission decision.
    pub decision: AdmitDecision,
}

/// The memorisation signals measured for a step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct MemorisationSignals {
    /// Loss drop on the step's examples against a held-out probe, z-score.
    pub loss_drop_z: f32,
    /// Fraction of a held-back continuation reproduced greedily.
    pub extraction: f32,
    /// Canary exposure in bits (0 when no canary was involved).
    pub canary_exposure: f32,
}

/// One parameter block's change in a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockMeasure {
    /// Block index in the model's block list.
    pub block: u32,
    /// Digest of the block's XOR delta.
    pub delta_digest: Digest,
    /// L2 norm of the parameter change.
    pub norm: f32,
}

/// What the operator measured for a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Changed blocks.
    pub blocks: Vec<BlockMeasure>,
    /// Digest of the optimizer state after the step.
    pub optimizer_state: Digest,
    /// Digest of the model state after the step.
    pub model_state: Digest,
    /// Training loss of the step.
    pub loss: f32,
    /// Memorisation signals.
    pub signals: MemorisationSignals,
}

impl Measurement {
    fn check(&self, k: ObjectKind) -> Result<(), DecodeError> {
        limit(k, "measurement.blocks", self.blocks.len(), MAX_BLOCKS)?;
        finite(k, "measurement.loss", self.loss)?;
        finite(k, "measurement.signals.loss_drop_z", self.signals.loss_drop_z)?;
        finite(k, "measurement.signals.extraction", self.signals.extraction)?;
        finite(
            k,
            "measurement.signals.canary_exposure",
            self.signals.canary_exposure,
        )?;
        for b in &self.blocks {
            finite(k, "measurement.blocks.norm", b.norm)?;
        }
        Ok(())
    }
}

/// The link of a campaign record in the campaign's hash chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    /// The campaign.
    pub campaign: Digest,
    /// Position in the chain, from 0.
    pub seq: u64,
    /// Digest of the previous record's entry body ([`Digest::ZERO`] for 0).
    pub prev: Digest,
}

/// One governed training step (event granularity `example` or `batch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    /// Format version.
    pub version: u16,
    /// Chain link.
    pub link: ChainLink,
    /// The positions of the campaign's order it draws from
    /// ([`crate::order`]).
    pub order: OrderSpan,
    /// Training step index.
    pub step: u64,
    /// Digest of the policy in force.
    pub policy: Digest,
    /// Admitted examples.
    pub examples: Vec<ExampleRecord>,
    /// Measurement.
    pub measurement: Measurement,
    /// Digest of the step's gradient-sketch blob.
    pub sketch_blob: Digest,
    /// Digest of the step's XOR-delta blob.
    pub delta_blob: Digest,
    /// When the step ran.
    pub step_time: Timestamp,
}

fn check_records(k: ObjectKind, records: &[ExampleRecord]) -> Result<(), DecodeError> {
    limit(k, "examples", records.len(), MAX_EXAMPLES_PER_EVENT)?;
    for r in records {
        limit(k, "examples.proof", r.proof.len(), 64)?;
        finite(k, "examples.decision.depth.clip_norm", r.decision.depth.clip_norm)?;
        if !r.decision.routing.well_formed() {
            return Err(DecodeError::Invalid {
                kind: k.name(),
                field: "examples.decision.routing",
                reason: "bit count does not match unit count".into(),
            });
        }
    }
    Ok(())
}

impl Canonical for StepEvent {
    const KIND: ObjectKind = ObjectKind::StepEvent;
    /// 2: `order` added.
    const VERSION: u16 = 2;
    fn declared_version(&self) -> u16 {
        self.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        check_records(Self::KIND, &self.examples)?;
        self.measurement.check(Self::KIND)
    }
}

/// Many per-example records admitted under one policy, batched into one
/// event. `records_root` is an RFC 9162 root over the records' canonical
/// bytes, so each example keeps its own inclusion proof in the composite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompositeEvent {
    /// Format version.
    pub version: u16,
    /// Chain link.
    pub link: ChainLink,
    /// The positions of the campaign's order it draws from
    /// ([`crate::order`]).
    pub order: OrderSpan,
    /// First training step covered.
    pub first_step: u64,
    /// Last training step covered.
    pub last_step: u64,
    /// Digest of the policy in force.
    pub policy: Digest,
    /// Root over the records.
    pub records_root: Digest,
    /// The records.
    pub records: Vec<ExampleRecord>,
    /// Measurement of the whole span.
    pub measurement: Measurement,
    /// Digest of the span's gradient-sketch blob.
    pub sketch_blob: Digest,
    /// Digest of the span's XOR-delta blob.
    pub delta_blob: Digest,
    /// When the last step ran.
    pub step_time: Timestamp,
}

impl Canonical for CompositeEvent {
    const KIND: ObjectKind = ObjectKind::CompositeEvent;
    /// 2: `order` added.
    const VERSION: u16 = 2;
    fn declared_version(&self) -> u16 {
        self.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        check_records(Self::KIND, &self.records)?;
        self.measurement.check(Self::KIND)?;
        if self.first_step > self.last_step {
            return Err(DecodeError::Invalid {
                kind: Self::KIND.name(),
                field: "last_step",
                reason: "span ends before it starts".into(),
            });
        }
        if composite_root(&self.records) != self.records_root {
            return Err(DecodeError::Invalid {
                kind: Self::KIND.name(),
                field: "records_root",
                reason: "does not match the records".into(),
            });
        }
        Ok(())
    }
}

/// The RFC 9162 root over records' canonical bytes.
pub fn composite_root(records: &[ExampleRecord]) -> Digest {
    composite_tree(records).root()
}

fn composite_tree(records: &[ExampleRecord]) -> MemoryTree<Sha3Hasher> {
    let mut t = MemoryTree::new();
    for r in records {
        t.push_leaf(&crate::codec::encode(r));
    }
    t
}

impl CompositeEvent {
    /// Inclusion proof of record `i` in `records_root`.
    pub fn record_proof(&self, i: u64) -> Option<InclusionProof> {
        let path = composite_tree(&self.records).inclusion_proof(i, self.records.len() as u64)?;
        Some(InclusionProof {
            leaf_index: i,
            tree_size: self.records.len() as u64,
            path,
        })
    }

    /// Verifies that `record` is record `proof.leaf_index` under `root`.
    pub fn verify_record(
        root: &Digest,
        record: &ExampleRecord,
        proof: &InclusionProof,
    ) -> Result<(), ProofError> {
        verify_inclusion::<Sha3Hasher>(
            proof.leaf_index,
            proof.tree_size,
            &Sha3Hasher::hash_leaf(&crate::codec::encode(record)),
            &proof.path,
            root,
        )
    }
}
