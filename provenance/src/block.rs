//! Block headers: what consensus orders and certifies, and what the store
//! keeps per finalised height.

use serde::{Deserialize, Serialize};

use crate::codec::{encode, Canonical, DecodeError};
use crate::digest::{Digest, ObjectKind};
use crate::entry::LedgerEntry;
use crate::ids::Timestamp;
use crate::merkle::{MemoryTree, Sha3Hasher};

/// The header of a block of ledger entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// Format version.
    pub version: u16,
    /// Height, from 1.
    pub height: u64,
    /// Consensus view that produced it.
    pub view: u64,
    /// Digest of the parent block's header ([`Digest::ZERO`] at height 1).
    pub parent: Digest,
    /// The leader's stamp.
    pub stamp: Timestamp,
    /// The proposing validator.
    pub proposer: u16,
    /// RFC 9162 root over the entries' canonical bytes.
    pub entries_root: Digest,
    /// Number of entries.
    pub entry_count: u32,
}

impl Canonical for BlockHeader {
    const KIND: ObjectKind = ObjectKind::Block;
    const VERSION: u16 = 1;
    fn declared_version(&self) -> u16 {
        self.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        if self.height == 0 {
            return Err(DecodeError::Invalid {
                kind: Self::KIND.name(),
                field: "height",
                reason: "heights start at 1".into(),
            });
        }
        Ok(())
    }
}

/// The root a header commits its entries with.
pub fn entries_root(entries: &[LedgerEntry]) -> Digest {
    let mut t = MemoryTree::<Sha3Hasher>::new();
    for e in entries {
        t.push_leaf(&encode(e));
    }
    t.root()
}
