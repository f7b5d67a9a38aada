//! RFC 9162 (Certificate Transparency v2) Merkle tree maths, generic over
//! the hash function.
//!
//! The tree over leaves `D[0..n)` is defined as in RFC 9162 §2.1.1:
//!
//! ```text
//! MTH({})      = HASH()
//! MTH({d0})    = HASH(0x00 || d0)
//! MTH(D[0:n])  = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))   k = largest power of two < n
//! ```
//!
//! The ledger's log uses SHA-256 ([`LogHasher`], [`Sha256Hasher`]): exactly
//! RFC 6962's tree, so standard transparency-log tooling computes its roots
//! and proofs, and the tests reproduce the published Certificate
//! Transparency reference vectors with it. The leaf input of the log is a
//! [`crate::LedgerEntry`]'s canonical bytes. Trees inside objects (a
//! source's example root, a composite's records root, a block's entries
//! root) stay SHA3-256 ([`Sha3Hasher`]), like every content address.
//!
//! Proof *construction* reads only hashes of perfect, aligned subtrees
//! through the [`SubtreeSource`] trait, so the same code serves an
//! in-memory tree ([`MemoryTree`]) and the on-disk store in `storage/`:
//! an inclusion or consistency proof touches O(log² n) stored nodes at
//! most, never the whole tree. Proof *verification* follows the iterative
//! algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2 and checks every size and
//! bound before hashing.

mod proof;
mod tree;
mod verify;

pub use proof::{consistency_proof, inclusion_proof, range_hash, SubtreeSource};
pub use tree::MemoryTree;
pub use verify::{root_from_inclusion_proof, verify_consistency, verify_inclusion, ProofError};

use serde::{Deserialize, Serialize};
use sha3::Digest as _;

use crate::digest::Digest;

/// The hash function of a tree: RFC 9162's leaf and interior node hashes.
pub trait TreeHasher {
    /// `HASH()`, the root of the empty tree.
    fn empty_root() -> Digest;
    /// `HASH(0x00 || leaf)`.
    fn hash_leaf(leaf: &[u8]) -> Digest;
    /// `HASH(0x01 || left || right)`.
    fn hash_children(left: &Digest, right: &Digest) -> Digest;
}

/// The log's tree hash: RFC 6962 over SHA-256.
pub type LogHasher = Sha256Hasher;

/// RFC 6962 (RFC 9162 over SHA-256): the hash of govtune's log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sha256Hasher;

impl TreeHasher for Sha256Hasher {
    fn empty_root() -> Digest {
        Digest(sha2::Sha256::digest([]).into())
    }
    fn hash_leaf(leaf: &[u8]) -> Digest {
        let mut h = sha2::Sha256::new();
        sha2::Digest::update(&mut h, [0u8]);
        sha2::Digest::update(&mut h, leaf);
        Digest(sha2::Digest::finalize(h).into())
    }
    fn hash_children(left: &Digest, right: &Digest) -> Digest {
        let mut h = sha2::Sha256::new();
        sha2::Digest::update(&mut h, [1u8]);
        sha2::Digest::update(&mut h, left.0);
        sha2::Digest::update(&mut h, right.0);
        Digest(sha2::Digest::finalize(h).into())
    }
}

/// RFC 9162 over SHA3-256: the trees inside objects (source examples,
/// composite records, block entries).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sha3Hasher;

impl TreeHasher for Sha3Hasher {
    fn empty_root() -> Digest {
        Digest(sha3::Sha3_256::digest([]).into())
    }
    fn hash_leaf(leaf: &[u8]) -> Digest {
        let mut h = sha3::Sha3_256::new();
        h.update([0u8]);
        h.update(leaf);
        Digest(h.finalize().into())
    }
    fn hash_children(left: &Digest, right: &Digest) -> Digest {
        let mut h = sha3::Sha3_256::new();
        h.update([1u8]);
        h.update(left.0);
        h.update(right.0);
        Digest(h.finalize().into())
    }
}

/// An inclusion proof for one leaf, as carried on the wire and in events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// Index of the leaf.
    pub leaf_index: u64,
    /// Size of the tree the proof is for.
    pub tree_size: u64,
    /// Sibling hashes from the leaf upwards.
    pub path: Vec<Digest>,
}

impl InclusionProof {
    /// Verifies the proof for `leaf_hash` against `root` with hasher `H`.
    pub fn verify<H: TreeHasher>(&self, leaf_hash: &Digest, root: &Digest) -> Result<(), ProofError> {
        verify_inclusion::<H>(self.leaf_index, self.tree_size, leaf_hash, &self.path, root)
    }
}

/// A consistency proof between two sizes of the same log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The earlier size.
    pub first: u64,
    /// The later size.
    pub second: u64,
    /// The proof nodes.
    pub path: Vec<Digest>,
}

impl ConsistencyProof {
    /// Verifies that `second_root` extends `first_root`.
    pub fn verify<H: TreeHasher>(&self, first_root: &Digest, second_root: &Digest) -> Result<(), ProofError> {
        verify_consistency::<H>(self.first, self.second, &self.path, first_root, second_root)
    }
}

/// The largest power of two strictly less than `n` (`n >= 2`).
pub(crate) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}
