//! Fine-tuning campaigns: what an operator declares before the first step,
//! and the close that makes the campaign's record checkably complete.

use serde::{Deserialize, Serialize};

use crate::codec::{limit, Canonical, DecodeError};
use crate::digest::{Digest, ObjectKind};
use crate::ids::{AuthorityId, Purpose, Timestamp};

/// The shape of the model, as far as routing and depth need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelShape {
    /// Transformer layers.
    pub layers: u16,
    /// Attention heads per layer.
    pub heads: u16,
}

/// Where the base model comes from: its own campaign and final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModel {
    /// The campaign that trained the base model, or `None` for a campaign
    /// that trains from a random initialisation (itself a base campaign).
    pub campaign: Option<Digest>,
    /// Digest of the base model's state (its weights) at the start.
    pub state: Digest,
}

/// Gradient sketch parameters: a fixed-seed random projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SketchSpec {
    /// Projection seed.
    pub seed: u64,
    /// Projected dimension.
    pub dim: u32,
}

/// A fine-tuning campaign, declared by its operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    /// Format version.
    pub version: u16,
    /// The operator authority.
    pub operator: AuthorityId,
    /// Human name.
    pub name: String,
    /// Purpose of the fine-tune (checked against sources and policy).
    pub purpose: Purpose,
    /// Digest of the policy in force at the start.
    pub policy: Digest,
    /// Base-model provenance.
    pub base_model: BaseModel,
    /// Digest of the model architecture description.
    pub architecture: Digest,
    /// Blob digest of the training recipe (the tuner's settings: model,
    /// adapters, optimiser, sketch side, and the base weights' blob), what
    /// a trace or a rebuild needs besides the ledger's entries.
    pub recipe: Digest,
    /// Model shape.
    pub shape: ModelShape,
    /// Gradient sketch parameters.
    pub sketch: SketchSpec,
    /// Steps after which the trace keeps a model checkpoint.
    pub checkpoint_steps: Vec<u64>,
    /// When the campaign was opened.
    pub created: Timestamp,
}

impl Canonical for Campaign {
    const KIND: ObjectKind = ObjectKind::Campaign;
    /// 2: `recipe` added.
    const VERSION: u16 = 2;
    fn declared_version(&self) -> u16 {
        self.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        let k = Self::KIND;
        let invalid = |field, reason: String| DecodeError::Invalid {
            kind: k.name(),
            field,
            reason,
        };
        limit(k, "name", self.name.len(), 256)?;
        limit(k, "checkpoint_steps", self.checkpoint_steps.len(), 1 << 16)?;
        self.operator
            .validate()
            .map_err(|e| invalid("operator", e.to_string()))?;
        self.purpose
            .validate()
            .map_err(|e| invalid("purpose", e.to_string()))?;
        if self.shape.layers == 0 || self.shape.heads == 0 {
            return Err(invalid("shape", "layers and heads must be positive".into()));
        }
        if self.checkpoint_steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid("checkpoint_steps", "must be strictly increasing".into()));
        }
        Ok(())
    }
}

/// Per-source example counts of a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCount {
    /// Source id.
    pub source: Digest,
    /// Examples admitted (and kept: rolled-back steps count as refused).
    pub admitted: u64,
    /// Examples refused, for any reason.
    pub refused: u64,
}

/// The end of a campaign: the head of its event chain and the counts that
/// make its record checkably complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignClose {
    /// Format version.
    pub version: u16,
    /// The campaign.
    pub campaign: Digest,
    /// Digest of the last entry of the campaign's chain.
    pub head: Digest,
    /// Number of entries in the chain.
    pub entries: u64,
    /// Training steps committed.
    pub steps: u64,
    /// Per-source counts, sorted by source.
    pub per_source: Vec<SourceCount>,
    /// Digest of the final model state.
    pub final_state: Digest,
    /// Where the campaign's order stopped: one past the last position its
    /// records drew ([`crate::order`]).
    pub order_end: u64,
    /// When the campaign closed.
    pub time: Timestamp,
}

impl Canonical for CampaignClose {
    const KIND: ObjectKind = ObjectKind::CampaignClose;
    /// 2: `order_end` added.
    const VERSION: u16 = 2;
    fn declared_version(&self) -> u16 {
        self.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        limit(Self::KIND, "per_source", self.per_source.len(), 1 << 16)?;
        if self.per_source.windows(2).any(|w| w[0].source >= w[1].source) {
            return Err(DecodeError::Invalid {
                kind: Self::KIND.name(),
                field: "per_source",
                reason: "must be sorted by source, without duplicates".into(),
            });
        }
        Ok(())
    }
}
