//! The index's tree kept node by node, updated in place: what a store
//! keeps so that a block's additions rehash only the paths they touch
//! (O(log keys) each), never the whole tree. It gives the same root and the
//! same proofs as the definition in the parent module
//! ([`super::MemoryIndex`], checked by the tests below).
//!
//! A node sits at a [`NodeId`]: its depth and its path's first `depth`
//! bits. An absent node is an empty subtree; a [`Node::Leaf`] is a subtree
//! holding one key; a [`Node::Internal`] holds two or more and keeps its
//! children's hashes.

use serde::{Deserialize, Serialize};

use super::{bit, leaf_hash, node_hash, IndexProof, IndexValue, EMPTY};
use crate::digest::Digest;

/// Where a node sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// Its depth (0: the root).
    pub depth: u16,
    /// The first `depth` bits of every path below it; the rest are zero.
    pub prefix: Digest,
}

impl NodeId {
    /// The node at `depth` on `path`.
    pub fn on(path: &Digest, depth: usize) -> Self {
        let mut prefix = [0u8; 32];
        let full = depth / 8;
        prefix[..full].copy_from_slice(&path.0[..full]);
        if !depth.is_multiple_of(8) && full < 32 {
            prefix[full] = path.0[full] & (0xffu8 << (8 - depth % 8));
        }
        Self {
            depth: depth as u16,
            prefix: Digest(prefix),
        }
    }

    /// Its bytes as a store key: the depth (u16 big-endian), then the
    /// prefix.
    pub fn key(&self) -> [u8; 34] {
        let mut k = [0u8; 34];
        k[..2].copy_from_slice(&self.depth.to_be_bytes());
        k[2..].copy_from_slice(&self.prefix.0);
        k
    }
}

/// A node of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Node {
    /// Two or more keys below: the hashes of its two children.
    Internal {
        /// The child whose next bit is 0.
        left: Digest,
        /// The child whose next bit is 1.
        right: Digest,
    },
    /// One key below.
    Leaf {
        /// The key's path.
        path: Digest,
        /// Its value.
        value: IndexValue,
    },
}

impl Node {
    /// The node's hash.
    pub fn hash(&self) -> Digest {
        match self {
            Node::Internal { left, right } => node_hash(left, right),
            Node::Leaf { path, value } => leaf_hash(path, value),
        }
    }
}

/// Where the nodes are kept.
pub trait NodeStore {
    /// The node at `id`, if any.
    fn node(&self, id: &NodeId) -> Option<Node>;
    /// Keeps `node` at `id`.
    fn put_node(&mut self, id: NodeId, node: Node);
}

impl NodeStore for std::collections::HashMap<NodeId, Node> {
    fn node(&self, id: &NodeId) -> Option<Node> {
        self.get(id).copied()
    }
    fn put_node(&mut self, id: NodeId, node: Node) {
        self.insert(id, node);
    }
}

fn hash_at(store: &dyn NodeStore, id: &NodeId) -> Digest {
    store.node(id).map_or(EMPTY, |n| n.hash())
}

/// The root of the tree in `store`.
pub fn root(store: &dyn NodeStore) -> Digest {
    hash_at(store, &NodeId::on(&EMPTY, 0))
}

/// Sets the value of the key at `path` (a new key or a new value), and
/// rehashes the nodes above it.
pub fn set(store: &mut dyn NodeStore, path: &Digest, value: IndexValue) {
    let mut depth = 0usize;
    // The deepest internal node the path passes through, once placed.
    let bottom = loop {
        let id = NodeId::on(path, depth);
        match store.node(&id) {
            Some(Node::Internal { .. }) if depth < 256 => depth += 1,
            Some(Node::Leaf {
                path: other,
                value: theirs,
            }) if other != *path => {
                // Two keys where one was: internal nodes down to where their
                // paths part, a leaf for each below.
                // Two distinct paths part at bit 255 at the latest.
                let mut split = depth;
                while split < 255 && bit(path, split) == bit(&other, split) {
                    split += 1;
                }
                store.put_node(
                    NodeId::on(&other, split + 1),
                    Node::Leaf {
                        path: other,
                        value: theirs,
                    },
                );
                store.put_node(NodeId::on(path, split + 1), Node::Leaf { path: *path, value });
                break split as isize;
            }
            // An empty place, this key's own leaf, or the last level.
            _ => {
                store.put_node(id, Node::Leaf { path: *path, value });
                break depth as isize - 1;
            }
        }
    };
    // Rehash from the bottom up (each internal node from its children).
    let mut d = bottom;
    while d >= 0 {
        let depth = d as usize;
        let left = hash_at(&*store, &NodeId::on(&with_bit(path, depth, false), depth + 1));
        let right = hash_at(&*store, &NodeId::on(&with_bit(path, depth, true), depth + 1));
        store.put_node(NodeId::on(path, depth), Node::Internal { left, right });
        d -= 1;
    }
}

/// `path` with bit `i` set to `on`.
fn with_bit(path: &Digest, i: usize, on: bool) -> Digest {
    let mut p = *path;
    let mask = 1u8 << (7 - i % 8);
    if on {
        p.0[i / 8] |= mask;
    } else {
        p.0[i / 8] &= !mask;
    }
    p
}

/// The proof of the key at `path`: its leaf or the leaf or empty place its
/// path ends in, and the siblings from the root down.
pub fn prove(store: &dyn NodeStore, path: &Digest) -> IndexProof {
    let mut siblings = Vec::new();
    let mut depth = 0usize;
    loop {
        match store.node(&NodeId::on(path, depth)) {
            Some(Node::Internal { left, right }) => {
                siblings.push(if bit(path, depth) { left } else { right });
                depth += 1;
            }
            Some(Node::Leaf { path: p, value }) => {
                return IndexProof {
                    leaf: Some((p, value)),
                    siblings,
                }
            }
            None => return IndexProof { leaf: None, siblings },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{IndexKey, MemoryIndex};
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn source(i: u64) -> IndexKey {
        use crate::merkle::{Sha256Hasher, TreeHasher};
        IndexKey::Source(Sha256Hasher::hash_leaf(&i.to_be_bytes()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn updated_in_place_the_tree_has_the_definitions_root_and_proofs(
            blocks in prop::collection::vec(prop::collection::vec(0u64..60, 0..6), 1..40),
        ) {
            let mut model = MemoryIndex::new();
            let mut nodes: HashMap<NodeId, Node> = HashMap::new();
            let mut position = 0u64;
            for block in &blocks {
                for s in block {
                    model.add(source(*s), position);
                    position += 1;
                }
                model.commit();
                for s in block {
                    let key = source(*s);
                    let value = model.value(&key).expect("added");
                    set(&mut nodes, &key.path(), value);
                }
                prop_assert_eq!(root(&nodes), model.root());
            }
            for s in 0..64 {
                let key = source(s);
                prop_assert_eq!(prove(&nodes, &key.path()), model.prove(&key));
            }
        }
    }

    #[test]
    fn two_paths_that_share_a_long_prefix_split_where_they_part() {
        let mut nodes: HashMap<NodeId, Node> = HashMap::new();
        let a = Digest([0; 32]);
        let mut b = Digest([0; 32]);
        b.0[31] = 1; // parts at the last bit
        let v = IndexValue {
            count: 1,
            pages: Digest([5; 32]),
        };
        set(&mut nodes, &a, v);
        set(&mut nodes, &b, v);
        let p = prove(&nodes, &b);
        assert_eq!(p.siblings.len(), 256);
        assert_eq!(p.leaf, Some((b, v)));
        assert_eq!(p.root(&b), Ok(root(&nodes)));
        let p = prove(&nodes, &a);
        assert_eq!(p.root(&a), Ok(root(&nodes)));
    }
}
