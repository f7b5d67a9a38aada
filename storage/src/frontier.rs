//! The right edge of the log's tree in memory: what an append needs to
//! write each subtree it completes, and the root at the current size.

use provenance::merkle::{LogHasher, TreeHasher};
use provenance::Digest;

use crate::{Result, StoreError};

/// The right edge of the tree: for each set bit `l` of the size, the
/// perfect subtree of `2^l` leaves at the end.
#[derive(Debug, Clone, Default)]
pub(crate) struct Frontier(pub(crate) Vec<Option<Digest>>);

impl Frontier {
    /// Appends leaf number `size`, returning the nodes to store.
    pub(crate) fn push(&mut self, size: u64, leaf: Digest) -> Result<Vec<(u32, u64, Digest)>> {
        let mut writes = vec![(0, size, leaf)];
        let (mut node, mut level, mut idx) = (leaf, 0u32, size);
        while idx & 1 == 1 {
            let left = self
                .0
                .get_mut(level as usize)
                .and_then(Option::take)
                .ok_or_else(|| StoreError::Corrupt(format!("frontier has no node at level {level}")))?;
            node = LogHasher::hash_children(&left, &node);
            level += 1;
            idx >>= 1;
            writes.push((level, idx, node));
        }
        if self.0.len() <= level as usize {
            self.0.resize(level as usize + 1, None);
        }
        self.0[level as usize] = Some(node);
        Ok(writes)
    }

    pub(crate) fn root(&self) -> Digest {
        let mut root: Option<Digest> = None;
        for h in self.0.iter().flatten() {
            root = Some(match root {
                None => *h,
                Some(r) => LogHasher::hash_children(h, &r),
            });
        }
        root.unwrap_or_else(LogHasher::empty_root)
    }
}
