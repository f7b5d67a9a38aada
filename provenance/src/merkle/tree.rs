//! An in-memory tree that keeps every perfect subtree hash, so proofs at any
//! size are built in O(log² n) hash lookups.

use std::convert::Infallible;

use super::{consistency_proof, inclusion_proof, range_hash, SubtreeSource, TreeHasher};
use crate::digest::Digest;

/// An append-only in-memory Merkle tree. `levels[k][i]` is the perfect
/// subtree of `2^k` leaves starting at leaf `i << k`.
#[derive(Debug, Clone)]
pub struct MemoryTree<H: TreeHasher> {
    levels: Vec<Vec<Digest>>,
    _hasher: std::marker::PhantomData<H>,
}

impl<H: TreeHasher> Default for MemoryTree<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: TreeHasher> MemoryTree<H> {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            levels: vec![Vec::new()],
            _hasher: std::marker::PhantomData,
        }
    }

    /// A tree over the given leaf inputs.
    pub fn from_leaves<'a>(leaves: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut t = Self::new();
        for l in leaves {
            t.push_leaf(l);
        }
        t
    }

    /// A tree over already-hashed leaves.
    pub fn from_leaf_hashes(hashes: impl IntoIterator<Item = Digest>) -> Self {
        let mut t = Self::new();
        for h in hashes {
            t.push_leaf_hash(h);
        }
        t
    }

    /// Appends a leaf input; returns its index.
    pub fn push_leaf(&mut self, leaf: &[u8]) -> u64 {
        self.push_leaf_hash(H::hash_leaf(leaf))
    }

    /// Appends an already-hashed leaf; returns its index.
    pub fn push_leaf_hash(&mut self, hash: Digest) -> u64 {
        let index = self.levels[0].len() as u64;
        self.levels[0].push(hash);
        // Complete every perfect subtree this leaf closes.
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let n = self.levels[level].len();
            let parent = H::hash_children(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
        index
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// True when there are no leaves.
    pub fn is_empty(&self) -> bool {
        self.levels[0].is_empty()
    }

    /// Hash of leaf `index`.
    pub fn leaf_hash(&self, index: u64) -> Option<Digest> {
        self.levels[0].get(usize::try_from(index).ok()?).copied()
    }

    /// The root of the first `size` leaves (`None` if `size` is too large).
    pub fn root_at(&self, size: u64) -> Option<Digest> {
        if size > self.len() {
            return None;
        }
        let Ok(root) = range_hash::<H, _>(self, 0, size);
        Some(root)
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Digest {
        let Ok(root) = range_hash::<H, _>(self, 0, self.len());
        root
    }

    /// Inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Digest>> {
        let Ok(p) = inclusion_proof::<H, _>(self, index, size);
        p
    }

    /// Consistency proof between sizes `first` and `second`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Option<Vec<Digest>> {
        let Ok(p) = consistency_proof::<H, _>(self, first, second);
        p
    }
}

impl<H: TreeHasher> SubtreeSource for MemoryTree<H> {
    type Error = Infallible;
    fn size(&self) -> u64 {
        self.len()
    }
    fn perfect(&self, level: u32, index: u64) -> Result<Digest, Infallible> {
        // Callers only ask for subtrees inside the tree, which exist.
        Ok(self.levels[level as usize][index as usize])
    }
}
