//! Proof verification, RFC 9162 §2.1.3.2 and §2.1.4.2.

use super::TreeHasher;
use crate::digest::Digest;

/// Longest proof any tree of up to 2^64 leaves can need.
pub const MAX_PROOF_LEN: usize = 64;

/// Why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not inside a tree of size {size}")]
    IndexOutOfRange {
        /// Claimed leaf index.
        index: u64,
        /// Claimed tree size.
        size: u64,
    },
    /// The proof has the wrong number of nodes for the claimed sizes.
    #[error("proof has {got} nodes, a proof for these sizes needs {want}")]
    WrongLength {
        /// Nodes in the proof.
        got: usize,
        /// Nodes required.
        want: usize,
    },
    /// The first size is larger than the second.
    #[error("first size {first} is larger than second size {second}")]
    SizesReversed {
        /// First size.
        first: u64,
        /// Second size.
        second: u64,
    },
    /// The proof recomputes a different root.
    #[error("root mismatch: proof gives {computed}, expected {expected}")]
    RootMismatch {
        /// Root recomputed from the proof.
        computed: Digest,
        /// Root the caller expected.
        expected: Digest,
    },
    /// Two equal sizes with different roots, or a non-empty proof where an
    /// empty one is required.
    #[error("inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// Number of nodes in an inclusion proof of `index` in a tree of `size`.
fn inclusion_len(index: u64, size: u64) -> usize {
    // Bits above the point where the paths to `index` and to `size - 1`
    // diverge contribute only when the right sibling exists.
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = (index >> inner).count_ones();
    (inner + border) as usize
}

/// Recomputes the root from an inclusion proof (RFC 9162 §2.1.3.2).
pub fn root_from_inclusion_proof<H: TreeHasher>(
    index: u64,
    size: u64,
    leaf_hash: &Digest,
    path: &[Digest],
) -> Result<Digest, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let want = inclusion_len(index, size);
    if path.len() != want {
        return Err(ProofError::WrongLength {
            got: path.len(),
            want,
        });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in path {
        if s == 0 {
            return Err(ProofError::WrongLength {
                got: path.len(),
                want,
            });
        }
        if f & 1 == 1 || f == s {
            r = H::hash_children(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = H::hash_children(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength {
            got: path.len(),
            want,
        });
    }
    Ok(r)
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `size` leaves
/// with root `root`.
pub fn verify_inclusion<H: TreeHasher>(
    index: u64,
    size: u64,
    leaf_hash: &Digest,
    path: &[Digest],
    root: &Digest,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof::<H>(index, size, leaf_hash, path)?;
    if &computed != root {
        return Err(ProofError::RootMismatch {
            computed,
            expected: *root,
        });
    }
    Ok(())
}

/// Verifies that the tree of `second` leaves with root `second_root`
/// extends the tree of `first` leaves with root `first_root`
/// (RFC 9162 §2.1.4.2).
pub fn verify_consistency<H: TreeHasher>(
    first: u64,
    second: u64,
    path: &[Digest],
    first_root: &Digest,
    second_root: &Digest,
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::SizesReversed { first, second });
    }
    if first == second {
        if !path.is_empty() {
            return Err(ProofError::Inconsistent("equal sizes need an empty proof"));
        }
        if first_root != second_root {
            return Err(ProofError::Inconsistent("equal sizes with different roots"));
        }
        return Ok(());
    }
    if first == 0 {
        if !path.is_empty() {
            return Err(ProofError::Inconsistent("an empty tree needs an empty proof"));
        }
        return Ok(());
    }
    // Expected length: the inclusion path of leaf `first - 1` in `second`,
    // less the levels shared with a perfect left subtree of size `first`.
    let shift = first.trailing_zeros();
    let inner = 64 - ((first - 1) ^ (second - 1)).leading_zeros();
    let border = ((first - 1) >> inner).count_ones();
    let want = (inner - shift) as usize + border as usize + usize::from(!first.is_power_of_two());
    if path.len() != want || path.len() > MAX_PROOF_LEN {
        return Err(ProofError::WrongLength {
            got: path.len(),
            want,
        });
    }

    let mut nodes: Vec<Digest> = Vec::with_capacity(path.len() + 1);
    if first.is_power_of_two() {
        nodes.push(*first_root);
    }
    nodes.extend_from_slice(path);

    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut fr = nodes[0];
    let mut sr = nodes[0];
    for c in &nodes[1..] {
        if s == 0 {
            return Err(ProofError::WrongLength {
                got: path.len(),
                want,
            });
        }
        if f & 1 == 1 || f == s {
            fr = H::hash_children(c, &fr);
            sr = H::hash_children(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = H::hash_children(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength {
            got: path.len(),
            want,
        });
    }
    if &fr != first_root {
        return Err(ProofError::RootMismatch {
            computed: fr,
            expected: *first_root,
        });
    }
    if &sr != second_root {
        return Err(ProofError::RootMismatch {
            computed: sr,
            expected: *second_root,
        });
    }
    Ok(())
}
