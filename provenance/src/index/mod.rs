//! The authenticated index: from each source id and each campaign id to
//! the log positions of every entry that names it, committed by one root,
//! so that "every entry naming S up to size N" and "S was never named" are
//! each answered with a proof a light client checks in O(log n) hashes.
//!
//! The map is a sparse Merkle tree over SHA-256 (the log's hash) keyed by
//! a 256-bit path, the tagged hash of the key. A subtree holding no key
//! hashes to [`EMPTY`]; one holding a single key is that key's leaf,
//! wherever it sits (the tree is collapsed, so a path is as long as it
//! takes to tell its key from the others: about log2 of the number of
//! keys); any other subtree hashes its two halves:
//!
//! ```text
//! leaf(path, value) = SHA-256(0x00 ‖ path ‖ count (u64 BE) ‖ pages root)
//! node(left, right) = SHA-256(0x01 ‖ left ‖ right)
//! ```
//!
//! A key's value is how many entries name it and the root of its
//! positions, cut in pages of [`PAGE`] (ascending, each page's bytes the
//! positions as u64 big-endian): an RFC 6962 tree over SHA-256 whose
//! leaves are the pages, so a page is proven with an ordinary inclusion
//! proof and the count says how many pages make the whole list.
//!
//! A proof ([`IndexProof`]) is the leaf found at the end of the key's path
//! (if any) and the siblings from the root down. It proves the key's value
//! when that leaf is the key's, and the key's absence when the path ends
//! empty or in another key's leaf that shares the path so far.
//!
//! [`MemoryIndex`] computes the tree from its definition (the reference);
//! [`nodes`] keeps it node by node and updates it in place, as a store
//! does.

pub mod nodes;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::digest::Digest;
use crate::merkle::{verify_inclusion, MemoryTree, Sha256Hasher, TreeHasher};

/// The hash of a subtree that holds no key.
pub const EMPTY: Digest = Digest([0; 32]);

/// Positions per page of a key's list.
pub const PAGE: usize = 256;

/// Most siblings a proof may carry (one per bit of the path).
pub const MAX_DEPTH: usize = 256;

/// What the index maps: a source or a campaign, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IndexKey {
    /// A data source (its manifest digest).
    Source(Digest),
    /// A campaign (its record's digest).
    Campaign(Digest),
}

impl IndexKey {
    /// The key's place in the tree: SHA-256 of a domain tag, the kind and
    /// the id.
    pub fn path(&self) -> Digest {
        let (kind, id) = match self {
            IndexKey::Source(d) => (0u8, d),
            IndexKey::Campaign(d) => (1u8, d),
        };
        let mut h = sha2::Sha256::new();
        h.update(b"govtune/v1/index-key");
        h.update([kind]);
        h.update(id.0);
        Digest(h.finalize().into())
    }
}

/// What the index holds for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexValue {
    /// Entries naming the key (at least 1: a key no entry names is absent).
    pub count: u64,
    /// The RFC 6962 root over its pages of positions.
    pub pages: Digest,
}

/// Why an index proof or page does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// More siblings than the path has bits.
    #[error("the proof has {0} siblings, at most {MAX_DEPTH}")]
    TooDeep(usize),
    /// The proof's leaf belongs to another key where this key's was claimed,
    /// or to a key that does not share the path it sits on.
    #[error("the proof's leaf is not where its path says")]
    WrongLeaf,
    /// A present key's value counts no entry.
    #[error("a present key must count at least one entry")]
    EmptyValue,
    /// The root the proof gives is not the index root.
    #[error("the proof gives root {got}, the index root is {want}")]
    RootMismatch {
        /// What the proof gives.
        got: Digest,
        /// The committed root.
        want: Digest,
    },
    /// A page is not the size its place in the list requires, or its
    /// positions do not ascend.
    #[error("page {page}: {reason}")]
    BadPage {
        /// The page number.
        page: u64,
        /// Why.
        reason: String,
    },
}

fn leaf_hash(path: &Digest, value: &IndexValue) -> Digest {
    let mut h = sha2::Sha256::new();
    h.update([0u8]);
    h.update(path.0);
    h.update(value.count.to_be_bytes());
    h.update(value.pages.0);
    Digest(h.finalize().into())
}

fn node_hash(left: &Digest, right: &Digest) -> Digest {
    Sha256Hasher::hash_children(left, right)
}

/// Bit `i` (0 = most significant) of `path`.
fn bit(path: &Digest, i: usize) -> bool {
    path.0[i / 8] >> (7 - i % 8) & 1 == 1
}

/// The bytes of a page of positions.
pub fn page_bytes(positions: &[u64]) -> Vec<u8> {
    positions.iter().flat_map(|p| p.to_be_bytes()).collect()
}

/// The value of a key named by the entries at `positions` (ascending).
pub fn value_of(positions: &[u64]) -> IndexValue {
    let pages = MemoryTree::<Sha256Hasher>::from_leaves(
        positions
            .chunks(PAGE)
            .map(page_bytes)
            .collect::<Vec<_>>()
            .iter()
            .map(|b| b.as_slice()),
    );
    IndexValue {
        count: positions.len() as u64,
        pages: pages.root(),
    }
}

/// How many pages a list of `count` positions has.
pub fn page_count(count: u64) -> u64 {
    count.div_ceil(PAGE as u64)
}

/// Checks page `page` of a key's list against its value: its length (full
/// pages but the last), its positions ascending, and its inclusion proof
/// under the value's pages root.
pub fn verify_page(
    value: &IndexValue,
    page: u64,
    positions: &[u64],
    proof: &[Digest],
) -> Result<(), IndexError> {
    let bad = |reason: String| IndexError::BadPage { page, reason };
    let pages = page_count(value.count);
    if page >= pages {
        return Err(bad(format!("the list has {pages} pages")));
    }
    let want = if page + 1 < pages {
        PAGE as u64
    } else {
        value.count - page * PAGE as u64
    };
    if positions.len() as u64 != want {
        return Err(bad(format!("{} positions, it must hold {want}", positions.len())));
    }
    if positions.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad("positions do not ascend".into()));
    }
    let leaf = Sha256Hasher::hash_leaf(&page_bytes(positions));
    verify_inclusion::<Sha256Hasher>(page, pages, &leaf, proof, &value.pages).map_err(|e| bad(e.to_string()))
}

/// A key's path through the tree: the leaf found at its end, if any, and
/// the siblings from the root down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexProof {
    /// The leaf the path ends in: (its path, its value).
    pub leaf: Option<(Digest, IndexValue)>,
    /// The siblings, from the root's children down.
    pub siblings: Vec<Digest>,
}

impl IndexProof {
    /// The root this proof gives for `path`.
    fn root(&self, path: &Digest) -> Result<Digest, IndexError> {
        if self.siblings.len() > MAX_DEPTH {
            return Err(IndexError::TooDeep(self.siblings.len()));
        }
        let mut current = match &self.leaf {
            Some((p, v)) => {
                if v.count == 0 {
                    return Err(IndexError::EmptyValue);
                }
                if (0..self.siblings.len()).any(|i| bit(p, i) != bit(path, i)) {
                    return Err(IndexError::WrongLeaf);
                }
                leaf_hash(p, v)
            }
            None => EMPTY,
        };
        for (i, s) in self.siblings.iter().enumerate().rev() {
            current = if bit(path, i) {
                node_hash(s, &current)
            } else {
                node_hash(&current, s)
            };
        }
        Ok(current)
    }

    fn check_root(&self, path: &Digest, root: &Digest) -> Result<(), IndexError> {
        let got = self.root(path)?;
        if got != *root {
            return Err(IndexError::RootMismatch { got, want: *root });
        }
        Ok(())
    }

    /// Checks that `key` has `value` in the index of root `root`.
    pub fn verify_present(
        &self,
        key: &IndexKey,
        value: &IndexValue,
        root: &Digest,
    ) -> Result<(), IndexError> {
        let path = key.path();
        match &self.leaf {
            Some((p, v)) if *p == path && v == value => self.check_root(&path, root),
            _ => Err(IndexError::WrongLeaf),
        }
    }

    /// Checks that `key` is absent from the index of root `root`.
    pub fn verify_absent(&self, key: &IndexKey, root: &Digest) -> Result<(), IndexError> {
        let path = key.path();
        if matches!(&self.leaf, Some((p, _)) if *p == path) {
            return Err(IndexError::WrongLeaf);
        }
        self.check_root(&path, root)
    }

    /// What the proof says of `key` under `root`: its value, or `None` if
    /// absent (an error if it proves neither).
    pub fn verify(&self, key: &IndexKey, root: &Digest) -> Result<Option<IndexValue>, IndexError> {
        let path = key.path();
        match &self.leaf {
            Some((p, v)) if *p == path => self.verify_present(key, v, root).map(|()| Some(*v)),
            _ => self.verify_absent(key, root).map(|()| None),
        }
    }
}

/// The index in memory: every key's positions, its root and proofs, as of
/// the last [`MemoryIndex::commit`] (a block's additions are committed
/// together).
#[derive(Debug, Clone, Default)]
pub struct MemoryIndex {
    lists: BTreeMap<IndexKey, Vec<u64>>,
    leaves: BTreeMap<Digest, IndexValue>,
    dirty: std::collections::BTreeSet<IndexKey>,
}

impl MemoryIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the entry at `position` names `key` (positions of one
    /// key must be added in ascending order; a repeat is ignored).
    pub fn add(&mut self, key: IndexKey, position: u64) {
        let list = self.lists.entry(key).or_default();
        if list.last().is_some_and(|&l| l >= position) {
            return;
        }
        list.push(position);
        self.dirty.insert(key);
    }

    /// Takes the additions since the last commit into the values and the
    /// root; returns the root.
    pub fn commit(&mut self) -> Digest {
        for key in std::mem::take(&mut self.dirty) {
            if let Some(list) = self.lists.get(&key) {
                self.leaves.insert(key.path(), value_of(list));
            }
        }
        self.root()
    }

    /// The keys' count.
    pub fn len(&self) -> usize {
        self.lists.len()
    }

    /// Whether no key is indexed.
    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// The committed positions naming `key`.
    pub fn positions(&self, key: &IndexKey) -> &[u64] {
        self.committed(key).unwrap_or(&[])
    }

    fn committed(&self, key: &IndexKey) -> Option<&[u64]> {
        let count = usize::try_from(self.value(key)?.count).ok()?;
        self.lists.get(key)?.get(..count)
    }

    /// The value of `key`, if present.
    pub fn value(&self, key: &IndexKey) -> Option<IndexValue> {
        self.leaves.get(&key.path()).copied()
    }

    /// The index root.
    pub fn root(&self) -> Digest {
        let items: Vec<(&Digest, &IndexValue)> = self.leaves.iter().collect();
        subtree(&items, 0)
    }

    /// The proof of `key`'s value or absence.
    pub fn prove(&self, key: &IndexKey) -> IndexProof {
        let path = key.path();
        let items: Vec<(&Digest, &IndexValue)> = self.leaves.iter().collect();
        let mut slice = items.as_slice();
        let mut siblings = Vec::new();
        let mut depth = 0;
        while slice.len() > 1 {
            let split = slice.partition_point(|(p, _)| !bit(p, depth));
            let (left, right) = slice.split_at(split);
            if bit(&path, depth) {
                siblings.push(subtree(left, depth + 1));
                slice = right;
            } else {
                siblings.push(subtree(right, depth + 1));
                slice = left;
            }
            depth += 1;
        }
        IndexProof {
            leaf: slice.first().map(|(p, v)| (**p, **v)),
            siblings,
        }
    }

    /// Page `page` of `key`'s positions and its inclusion proof under the
    /// key's pages root, if the key has that page.
    pub fn page(&self, key: &IndexKey, page: u64) -> Option<(Vec<u64>, Vec<Digest>)> {
        let list = self.committed(key)?;
        let pages: Vec<Vec<u8>> = list.chunks(PAGE).map(page_bytes).collect();
        let tree = MemoryTree::<Sha256Hasher>::from_leaves(pages.iter().map(|b| b.as_slice()));
        let proof = tree.inclusion_proof(page, tree.len())?;
        let start = usize::try_from(page).ok()?.checked_mul(PAGE)?;
        let positions = list.get(start..list.len().min(start + PAGE))?.to_vec();
        Some((positions, proof))
    }
}

/// The hash of the subtree holding `items` (sorted by path, every path
/// sharing its first `depth` bits).
fn subtree(items: &[(&Digest, &IndexValue)], depth: usize) -> Digest {
    match items {
        [] => EMPTY,
        [(p, v)] => leaf_hash(p, v),
        _ => {
            let split = items.partition_point(|(p, _)| !bit(p, depth));
            let (left, right) = items.split_at(split);
            node_hash(&subtree(left, depth + 1), &subtree(right, depth + 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn source(i: u64) -> IndexKey {
        IndexKey::Source(Digest(Sha256Hasher::hash_leaf(&i.to_be_bytes()).0))
    }

    /// An index over a random log: entry `n` names the sources in `log[n]`.
    fn build(log: &[Vec<u8>]) -> MemoryIndex {
        let mut ix = MemoryIndex::new();
        for (n, names) in log.iter().enumerate() {
            for s in names {
                ix.add(source(u64::from(*s)), n as u64);
            }
            if n % 7 == 0 {
                ix.commit();
            }
        }
        ix.commit();
        ix
    }

    #[test]
    fn the_empty_index_proves_every_key_absent() {
        let ix = MemoryIndex::new();
        assert_eq!(ix.root(), EMPTY);
        let p = ix.prove(&source(1));
        assert_eq!(p.verify(&source(1), &EMPTY), Ok(None));
    }

    #[test]
    fn a_lie_about_presence_or_absence_fails() {
        let ix = build(&[vec![1, 2], vec![2], vec![3, 1]]);
        let root = ix.root();
        // Present, with its value; the value's pages check out.
        let p = ix.prove(&source(2));
        let v = p.verify(&source(2), &root).expect("verifies").expect("present");
        assert_eq!(v.count, 2);
        let (positions, proof) = ix.page(&source(2), 0).expect("page 0");
        assert_eq!(positions, vec![0, 1]);
        verify_page(&v, 0, &positions, &proof).expect("page verifies");
        // One position dropped or added is caught.
        assert!(verify_page(&v, 0, &positions[..1], &proof).is_err());
        assert!(verify_page(&v, 0, &[0, 1, 2], &proof).is_err());
        assert!(verify_page(&v, 0, &[0, 2], &proof).is_err());
        // A smaller count under the same proof does not verify.
        let fewer = IndexValue { count: 1, ..v };
        assert!(p.verify_present(&source(2), &fewer, &root).is_err());
        // Claiming absence with the key's own proof, or another key's, fails.
        assert_eq!(p.verify_absent(&source(2), &root), Err(IndexError::WrongLeaf));
        let other = ix.prove(&source(3));
        assert!(other.verify_absent(&source(2), &root).is_err());
        // A key never named: its proof says absent, and cannot say present.
        let none = ix.prove(&source(9));
        assert_eq!(none.verify(&source(9), &root), Ok(None));
        assert!(none.verify_present(&source(9), &v, &root).is_err());
    }

    #[test]
    fn pages_cut_a_long_list_and_each_is_proven() {
        let mut ix = MemoryIndex::new();
        let n = PAGE as u64 * 2 + 7;
        for i in 0..n {
            ix.add(source(1), i * 3);
        }
        assert!(ix.value(&source(1)).is_none(), "nothing before the commit");
        ix.commit();
        let v = ix.value(&source(1)).expect("present");
        assert_eq!((v.count, page_count(v.count)), (n, 3));
        let mut all = Vec::new();
        for page in 0..3 {
            let (positions, proof) = ix.page(&source(1), page).expect("page");
            verify_page(&v, page, &positions, &proof).expect("page verifies");
            all.extend(positions);
        }
        assert_eq!(all, ix.positions(&source(1)));
        assert!(ix.page(&source(1), 3).is_none());
        // The last page cannot pass for a middle one, nor be cut.
        let (last, proof) = ix.page(&source(1), 2).expect("last");
        assert!(verify_page(&v, 1, &last, &proof).is_err());
        assert!(verify_page(&v, 2, &last[1..], &proof).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_key_proves_what_a_scan_finds_and_any_change_fails(
            log in prop::collection::vec(prop::collection::btree_set(0u8..40, 0..4), 0..60),
            flip in any::<prop::sample::Index>(),
        ) {
            let log: Vec<Vec<u8>> = log.into_iter().map(|s| s.into_iter().collect()).collect();
            let ix = build(&log);
            let root = ix.root();
            for s in 0u8..48 {
                let key = source(u64::from(s));
                let scan: Vec<u64> = log
                    .iter()
                    .enumerate()
                    .filter(|(_, names)| names.contains(&s))
                    .map(|(n, _)| n as u64)
                    .collect();
                let proof = ix.prove(&key);
                match proof.verify(&key, &root) {
                    Ok(None) => prop_assert!(scan.is_empty(), "source {s} proven absent, named {scan:?}"),
                    Ok(Some(v)) => {
                        prop_assert_eq!(v.count, scan.len() as u64);
                        let mut listed = Vec::new();
                        for page in 0..page_count(v.count) {
                            let (positions, pp) = ix.page(&key, page).expect("page");
                            prop_assert!(verify_page(&v, page, &positions, &pp).is_ok());
                            listed.extend(positions);
                        }
                        prop_assert_eq!(&listed, &scan);
                    }
                    Err(e) => prop_assert!(false, "source {s}: {e}"),
                }
                // Any change to the proof fails: a flipped sibling bit, a
                // sibling dropped, a changed count.
                let mut forged = proof.clone();
                if !forged.siblings.is_empty() {
                    let i = flip.index(forged.siblings.len());
                    forged.siblings[i].0[0] ^= 1;
                    prop_assert!(forged.verify(&key, &root).is_err());
                }
                let mut forged = proof.clone();
                if let Some((_, v)) = forged.leaf.as_mut() {
                    v.count += 1;
                    prop_assert!(forged.verify(&key, &root).is_err());
                }
                let mut forged = proof.clone();
                if forged.siblings.pop().is_some() {
                    prop_assert!(forged.verify(&key, &root).is_err());
                }
            }
        }
    }
}
