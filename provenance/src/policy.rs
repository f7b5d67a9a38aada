//! The admission policy a governance authority signs.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::codec::{finite, limit, Canonical, DecodeError};
use crate::crypto::SignatureScheme;
use crate::digest::{Digest, ObjectKind};
use crate::ids::{AuthorityId, DataClass, License, Purpose};

/// How many training steps one event covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventGranularity {
    /// One event per example.
    Example,
    /// One event per batch.
    Batch,
    /// One event per epoch.
    Epoch,
}

/// The unit gradient routing masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoutingGranularity {
    /// Per parameter block: each layer's attention and MLP separately.
    Block,
    /// Per transformer layer.
    Layer,
    /// Per attention head, plus each layer's MLP as one unit.
    Head,
}

/// The unit depth is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DepthResolution {
    /// Depth counts whole layers from the output.
    Layer,
    /// Depth counts parameter blocks (MLP, then attention, layer by layer)
    /// from the output.
    Block,
}

/// The deepest an example of a data class may reach, and its per-example
/// gradient clip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthRule {
    /// Data class.
    pub data_class: DataClass,
    /// Units (per the policy's depth resolution) from the output the
    /// example may update; 0 means it may not train at all.
    pub max_depth: u16,
    /// Per-example gradient L2 clip norm, per parameter block.
    pub clip_norm: f32,
}

/// Thresholds above which a step is rolled back and refused.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemorisationThresholds {
    /// Loss drop on the step's examples against a held-out probe set, as a
    /// z-score.
    pub loss_drop_z: f32,
    /// Fraction of a held-back continuation reproduced by greedy decoding.
    pub extraction: f32,
    /// Canary exposure in bits.
    pub canary_exposure: f32,
}

/// Log-volume mitigations the policy allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogVolume {
    /// Batch per-example records into composite events.
    pub composite_batching: bool,
    /// Summarise refusals into per-(source, reason) aggregates.
    pub refusal_aggregation: bool,
}

/// A signed, versioned admission policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyArtifact {
    /// Format version.
    pub version: u16,
    /// The governance authority that signs it.
    pub authority: AuthorityId,
    /// Policy version number, starting at 1.
    pub policy_version: u32,
    /// The policy this one supersedes (required after version 1).
    pub supersedes: Option<Digest>,
    /// Licenses admitted.
    pub admissible_licenses: Vec<License>,
    /// Purposes admitted.
    pub admissible_purposes: Vec<Purpose>,
    /// Depth per data class; a class not listed gets no depth.
    pub depth: Vec<DepthRule>,
    /// Memorisation thresholds.
    pub memorisation: MemorisationThresholds,
    /// Event granularity.
    pub event_granularity: EventGranularity,
    /// Routing granularity.
    pub routing_granularity: RoutingGranularity,
    /// Depth resolution.
    pub depth_resolution: DepthResolution,
    /// Log-volume mitigations.
    pub log_volume: LogVolume,
    /// The scheme events under this policy are co-signed with.
    pub signature_scheme: SignatureScheme,
}

impl Canonical for PolicyArtifact {
    const KIND: ObjectKind = ObjectKind::Policy;
    const VERSION: u16 = 1;
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
        limit(k, "admissible_licenses", self.admissible_licenses.len(), 256)?;
        limit(k, "admissible_purposes", self.admissible_purposes.len(), 256)?;
        limit(k, "depth", self.depth.len(), 256)?;
        self.authority
            .validate()
            .map_err(|e| invalid("authority", e.to_string()))?;
        for l in &self.admissible_licenses {
            l.validate()
                .map_err(|e| invalid("admissible_licenses", e.to_string()))?;
        }
        for p in &self.admissible_purposes {
            p.validate()
                .map_err(|e| invalid("admissible_purposes", e.to_string()))?;
        }
        let mut classes = BTreeSet::new();
        for d in &self.depth {
            d.data_class
                .validate()
                .map_err(|e| invalid("depth", e.to_string()))?;
            if !classes.insert(&d.data_class) {
                return Err(invalid(
                    "depth",
                    format!("data class {} listed twice", d.data_class),
                ));
            }
            finite(k, "depth.clip_norm", d.clip_norm)?;
            if d.clip_norm <= 0.0 {
                return Err(invalid("depth.clip_norm", "must be positive".into()));
            }
        }
        finite(k, "memorisation.loss_drop_z", self.memorisation.loss_drop_z)?;
        finite(k, "memorisation.extraction", self.memorisation.extraction)?;
        finite(
            k,
            "memorisation.canary_exposure",
            self.memorisation.canary_exposure,
        )?;
        match (self.policy_version, &self.supersedes) {
            (0, _) => return Err(invalid("policy_version", "starts at 1".into())),
            (1, Some(_)) => return Err(invalid("supersedes", "version 1 supersedes nothing".into())),
            (v, None) if v > 1 => {
                return Err(invalid(
                    "supersedes",
                    format!("version {v} must declare what it supersedes"),
                ))
            }
            _ => {}
        }
        Ok(())
    }
}

impl PolicyArtifact {
    /// The depth rule of a data class, if the policy gives it any.
    pub fn depth_rule(&self, class: &DataClass) -> Option<&DepthRule> {
        self.depth.iter().find(|d| &d.data_class == class)
    }
}
