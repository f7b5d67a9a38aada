//! Revocations: a data-source authority withdraws its signature on a
//! source. A revocation takes effect at the stamp of the block that commits
//! it (no backdating); the storage layer records that time.

use serde::{Deserialize, Serialize};

use crate::codec::{limit, Canonical, DecodeError};
use crate::digest::{Digest, ObjectKind};
use crate::ids::{AuthorityId, Timestamp};

/// A signed withdrawal of a source signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Format version.
    pub version: u16,
    /// The authority that signed the source.
    pub authority: AuthorityId,
    /// The source revoked.
    pub source: Digest,
    /// Why, in words.
    pub reason: String,
    /// When the authority asked (informative; the effective time is the
    /// committing block's stamp).
    pub requested: Timestamp,
}

impl Canonical for Revocation {
    const KIND: ObjectKind = ObjectKind::Revocation;
    const VERSION: u16 = 1;
    fn declared_version(&self) -> u16 {
        self.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        limit(Self::KIND, "reason", self.reason.len(), 1024)?;
        self.authority.validate().map_err(|e| DecodeError::Invalid {
            kind: Self::KIND.name(),
            field: "authority",
            reason: e.to_string(),
        })
    }
}

/// A committed revocation with its effective time, as the admission
/// evaluator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveRevocation {
    /// The source.
    pub source: Digest,
    /// Stamp of the block that committed the revocation.
    pub effective: Timestamp,
}
