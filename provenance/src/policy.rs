//! The admission policy a governance authority signs.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditPolicy, ALWAYS};
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
    /// Replay audits of its campaigns' training records (absent in a
    /// policy file: none).
    #[serde(default)]
    pub audit: AuditPolicy,
}

impl Canonical for PolicyArtifact {
    const KIND: ObjectKind = ObjectKind::Policy;
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
        if self.audit.rate_millionths > ALWAYS {
            return Err(invalid(
                "audit.rate_millionths",
                format!("{} is above {ALWAYS} (every record)", self.audit.rate_millionths),
            ));
        }
        finite(k, "audit.example_tolerance", self.audit.example_tolerance)?;
        if !(0.0..=1.0).contains(&self.audit.example_tolerance) {
            return Err(invalid("audit.example_tolerance", "must lie in 0..=1".into()));
        }
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

/// Longest supersession chain [`descends_from`] walks.
pub const MAX_SUPERSESSION_DEPTH: usize = 1024;

/// Whether `policy` is `ancestor` or a successor of it, walking each
/// policy's `supersedes` back from `policy`. `supersedes(d)` answers the
/// policy `d` supersedes (`None`: unknown, not a policy, or the first
/// version); `memo` keeps every answer on the walked path for later calls.
/// A cycle or a chain longer than [`MAX_SUPERSESSION_DEPTH`] does not
/// descend.
pub fn descends_from<E>(
    ancestor: &Digest,
    policy: &Digest,
    memo: &mut std::collections::BTreeMap<Digest, bool>,
    mut supersedes: impl FnMut(&Digest) -> Result<Option<Digest>, E>,
) -> Result<bool, E> {
    let mut path = Vec::new();
    let mut cur = *policy;
    let ok = loop {
        if &cur == ancestor {
            break true;
        }
        if let Some(r) = memo.get(&cur) {
            break *r;
        }
        if path.contains(&cur) || path.len() >= MAX_SUPERSESSION_DEPTH {
            break false;
        }
        path.push(cur);
        match supersedes(&cur)? {
            Some(prev) => cur = prev,
            None => break false,
        }
    };
    for d in path {
        memo.insert(d, ok);
    }
    Ok(ok)
}

#[cfg(test)]
mod supersession_tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;

    use super::*;

    fn d(i: u8) -> Digest {
        Digest([i; 32])
    }

    /// A chain 1 <- 2 <- 3 (3 supersedes 2 supersedes 1), 9 unrelated.
    fn chain(x: &Digest) -> Result<Option<Digest>, Infallible> {
        Ok(match x.0[0] {
            3 => Some(d(2)),
            2 => Some(d(1)),
            _ => None,
        })
    }

    #[test]
    fn successors_descend_and_others_do_not() {
        let mut memo = BTreeMap::new();
        assert_eq!(descends_from(&d(1), &d(1), &mut memo, chain), Ok(true));
        assert_eq!(descends_from(&d(1), &d(3), &mut memo, chain), Ok(true));
        assert_eq!(descends_from(&d(1), &d(9), &mut memo, chain), Ok(false));
        // An ancestor does not descend from its successor.
        assert_eq!(
            descends_from(&d(3), &d(1), &mut BTreeMap::new(), chain),
            Ok(false)
        );
        assert_eq!(memo.get(&d(2)), Some(&true));
    }

    #[test]
    fn cycles_and_endless_chains_stop() {
        let cycle = |x: &Digest| Ok::<_, Infallible>(Some(d(if x.0[0] == 5 { 6 } else { 5 })));
        assert_eq!(
            descends_from(&d(1), &d(5), &mut BTreeMap::new(), cycle),
            Ok(false)
        );
        let endless = |x: &Digest| {
            let n = u32::from_be_bytes([x.0[0], x.0[1], x.0[2], x.0[3]]) + 1;
            let mut y = [0u8; 32];
            y[..4].copy_from_slice(&n.to_be_bytes());
            Ok::<_, Infallible>(Some(Digest(y)))
        };
        let mut calls = 0;
        let counted = |x: &Digest| {
            calls += 1;
            endless(x)
        };
        assert_eq!(
            descends_from(&d(0xff), &Digest::ZERO, &mut BTreeMap::new(), counted),
            Ok(false)
        );
        assert_eq!(calls, MAX_SUPERSESSION_DEPTH);
    }

    #[test]
    fn a_lookup_error_is_the_callers() {
        let failing = |_: &Digest| Err::<Option<Digest>, &str>("unreachable node");
        assert_eq!(
            descends_from(&d(1), &d(3), &mut BTreeMap::new(), failing),
            Err("unreachable node")
        );
    }
}
