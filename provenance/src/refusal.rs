//! Refusals: an example (or a whole step) that did not train, and why.
//! Refusals are never silent: each is a record of the campaign's chain.

use serde::{Deserialize, Serialize};

use crate::codec::{limit, Canonical, DecodeError};
use crate::digest::{Digest, ObjectKind};
use crate::event::{ChainLink, Measurement, MAX_EXAMPLES_PER_EVENT};
use crate::ids::Timestamp;
use crate::order::OrderSpan;

/// Why an example or step was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalReason {
    /// The source's manifest signature does not verify (or is by the wrong
    /// authority or role).
    BadSignature,
    /// The source was revoked before the step.
    Revoked,
    /// The step time is outside the source's validity window.
    OutsideValidityWindow,
    /// The source's license is not admissible under the policy.
    License,
    /// The campaign's purpose is not among the source's declared purposes or
    /// the policy's admissible purposes.
    Purpose,
    /// The policy gives the source's data class no depth.
    Depth,
    /// A memorisation signal exceeded its threshold; the step was rolled
    /// back.
    Memorisation,
}

impl RefusalReason {
    /// Every reason.
    pub const ALL: [RefusalReason; 7] = [
        Self::BadSignature,
        Self::Revoked,
        Self::OutsideValidityWindow,
        Self::License,
        Self::Purpose,
        Self::Depth,
        Self::Memorisation,
    ];
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BadSignature => "bad-signature",
            Self::Revoked => "revoked",
            Self::OutsideValidityWindow => "outside-validity-window",
            Self::License => "license",
            Self::Purpose => "purpose",
            Self::Depth => "depth",
            Self::Memorisation => "memorisation",
        })
    }
}

/// A reference to one example, without its admission data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExampleRef {
    /// Source id (the manifest digest, as claimed when the signature is bad).
    pub source: Digest,
    /// Example index.
    pub index: u64,
    /// Salted example hash.
    pub example_hash: Digest,
}

/// One refusal. A rolled-back step is a refusal with reason
/// [`RefusalReason::Memorisation`] that carries its measurement and changes
/// no state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// Format version.
    pub version: u16,
    /// Chain link.
    pub link: ChainLink,
    /// The positions of the campaign's order it draws from
    /// ([`crate::order`]).
    pub order: OrderSpan,
    /// Training step the refusal happened at.
    pub step: u64,
    /// Digest of the policy in force.
    pub policy: Digest,
    /// Examples refused.
    pub examples: Vec<ExampleRef>,
    /// Reason.
    pub reason: RefusalReason,
    /// Human detail (which signal, which license, ...).
    pub detail: String,
    /// The rolled-back step's measurement (memorisation only).
    pub measurement: Option<Measurement>,
    /// When.
    pub time: Timestamp,
}

impl Canonical for Refusal {
    const KIND: ObjectKind = ObjectKind::Refusal;
    /// 2: `order` added.
    const VERSION: u16 = 2;
    fn declared_version(&self) -> u16 {
        self.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        limit(
            Self::KIND,
            "examples",
            self.examples.len(),
            MAX_EXAMPLES_PER_EVENT,
        )?;
        limit(Self::KIND, "detail", self.detail.len(), 1024)?;
        if let Some(m) = &self.measurement {
            limit(
                Self::KIND,
                "measurement.blocks",
                m.blocks.len(),
                crate::event::MAX_BLOCKS,
            )?;
        }
        Ok(())
    }
}

/// Count of refusals for one (source, reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalCount {
    /// Source id.
    pub source: Digest,
    /// Reason class.
    pub reason: RefusalReason,
    /// Number of examples refused.
    pub count: u64,
}

/// Counts keyed by (source, reason), as an aggregate lists them (sorted,
/// one per key).
pub fn counts(by: std::collections::BTreeMap<(Digest, RefusalReason), u64>) -> Vec<RefusalCount> {
    by.into_iter()
        .map(|((source, reason), count)| RefusalCount {
            source,
            reason,
            count,
        })
        .collect()
}

/// Refusals summarised per (source, policy, reason) over a span of steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalAggregate {
    /// Format version.
    pub version: u16,
    /// Chain link.
    pub link: ChainLink,
    /// The positions whose refusals it counts: every position of the span
    /// not trained or refused by name.
    pub order: OrderSpan,
    /// Digest of the policy in force.
    pub policy: Digest,
    /// First step covered.
    pub first_step: u64,
    /// Last step covered.
    pub last_step: u64,
    /// Counts, sorted by (source, reason).
    pub counts: Vec<RefusalCount>,
    /// When the span ended.
    pub time: Timestamp,
}

impl Canonical for RefusalAggregate {
    const KIND: ObjectKind = ObjectKind::RefusalAggregate;
    /// 2: `order` added.
    const VERSION: u16 = 2;
    fn declared_version(&self) -> u16 {
        self.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        limit(Self::KIND, "counts", self.counts.len(), 1 << 16)?;
        if self
            .counts
            .windows(2)
            .any(|w| (w[0].source, w[0].reason) >= (w[1].source, w[1].reason))
        {
            return Err(DecodeError::Invalid {
                kind: Self::KIND.name(),
                field: "counts",
                reason: "must be sorted by (source, reason) without duplicates".into(),
            });
        }
        if self.first_step > self.last_step {
            return Err(DecodeError::Invalid {
                kind: Self::KIND.name(),
                field: "last_step",
                reason: "span ends before it starts".into(),
            });
        }
        Ok(())
    }
}
