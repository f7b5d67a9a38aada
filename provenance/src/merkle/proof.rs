//! Proof construction over a source of perfect-subtree hashes.

use super::{split_point, TreeHasher};
use crate::digest::Digest;

/// Read access to the hashes of perfect, aligned subtrees of a tree: the node
/// at `level` covering leaves `[index << level, (index + 1) << level)`.
/// Level 0 holds leaf hashes. Implemented in memory by [`super::MemoryTree`]
/// and on disk by the storage crate.
pub trait SubtreeSource {
    /// Error of the underlying store.
    type Error;
    /// Number of leaves.
    fn size(&self) -> u64;
    /// Hash of the perfect subtree at `(level, index)`; only called for
    /// subtrees that lie entirely within `size()`.
    fn perfect(&self, level: u32, index: u64) -> Result<Digest, Self::Error>;
}

/// `MTH(D[start:end])` from perfect subtrees. `start` must be aligned the
/// way RFC 9162's recursion aligns it (a multiple of the largest power of
/// two not exceeding `end - start`), which holds for every range the proof
/// algorithms ask for.
pub fn range_hash<H: TreeHasher, S: SubtreeSource>(
    src: &S,
    start: u64,
    end: u64,
) -> Result<Digest, S::Error> {
    // Collect the perfect subtrees left to right, then fold right to left.
    let mut parts = Vec::new();
    let mut s = start;
    while s < end {
        let n = end - s;
        let k = if n.is_power_of_two() { n } else { split_point(n) };
        let level = k.trailing_zeros();
        parts.push(src.perfect(level, s >> level)?);
        s += k;
    }
    let mut acc = match parts.pop() {
        Some(h) => h,
        None => return Ok(H::empty_root()),
    };
    while let Some(left) = parts.pop() {
        acc = H::hash_children(&left, &acc);
    }
    Ok(acc)
}

/// The RFC 9162 §2.1.3.1 inclusion proof of leaf `index` in the tree of the
/// first `size` leaves. Returns `None` when `index >= size` or `size` exceeds
/// the source.
pub fn inclusion_proof<H: TreeHasher, S: SubtreeSource>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Option<Vec<Digest>>, S::Error> {
    if index >= size || size > src.size() {
        return Ok(None);
    }
    let mut path = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    // Walk down from the root, remembering siblings; the proof lists them
    // from the leaf upwards, so reverse at the end.
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index - lo < k {
            path.push(range_hash::<H, S>(src, lo + k, hi)?);
            hi = lo + k;
        } else {
            path.push(range_hash::<H, S>(src, lo, lo + k)?);
            lo += k;
        }
    }
    path.reverse();
    Ok(Some(path))
}

/// The RFC 9162 §2.1.4.1 consistency proof between sizes `first` and
/// `second`. Returns `None` when `first > second` or `second` exceeds the
/// source; the proof is empty when `first == 0` or `first == second`.
pub fn consistency_proof<H: TreeHasher, S: SubtreeSource>(
    src: &S,
    first: u64,
    second: u64,
) -> Result<Option<Vec<Digest>>, S::Error> {
    if first > second || second > src.size() {
        return Ok(None);
    }
    if first == 0 || first == second {
        return Ok(Some(Vec::new()));
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled.
    let mut path = Vec::new();
    let (mut m, mut lo, mut hi, mut whole) = (first, 0u64, second, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !whole {
                path.push(range_hash::<H, S>(src, lo, hi)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            path.push(range_hash::<H, S>(src, lo + k, hi)?);
            hi = lo + k;
        } else {
            path.push(range_hash::<H, S>(src, lo, lo + k)?);
            lo += k;
            m -= k;
            whole = false;
        }
    }
    path.reverse();
    Ok(Some(path))
}
