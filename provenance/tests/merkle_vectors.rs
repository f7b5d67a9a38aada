//! RFC 6962 / Certificate Transparency reference vectors, checked against
//! the log's own hasher (`LogHasher`): every tree size of the 8-leaf
//! reference tree, the published inclusion and consistency proofs, and
//! every perfect subtree hash.

use provenance::merkle::{
    verify_consistency, verify_inclusion, LogHasher, MemoryTree, ProofError, SubtreeSource,
};
use provenance::Digest;
use serde::Deserialize;

/// The log's own hasher: the published vectors check exactly it.
type Sha256Hasher = LogHasher;

#[derive(Deserialize)]
struct Vectors {
    leaves: Vec<String>,
    node_hashes: Vec<Vec<String>>,
    roots: Vec<String>,
    inclusion: Vec<Inclusion>,
    consistency: Vec<Consistency>,
}
#[derive(Deserialize)]
struct Inclusion {
    leaf: u64,
    size: u64,
    proof: Vec<String>,
}
#[derive(Deserialize)]
struct Consistency {
    first: u64,
    second: u64,
    proof: Vec<String>,
}

fn d(h: &str) -> Digest {
    Digest::from_hex(h).expect("vector hash is hex")
}

fn load() -> (Vectors, MemoryTree<Sha256Hasher>) {
    let v: Vectors = serde_json::from_str(include_str!("vectors/rfc6962.json")).expect("vector file parses");
    let leaves: Vec<Vec<u8>> = v
        .leaves
        .iter()
        .map(|l| hex::decode(l).expect("hex leaf"))
        .collect();
    let tree = MemoryTree::<Sha256Hasher>::from_leaves(leaves.iter().map(Vec::as_slice));
    (v, tree)
}

#[test]
fn roots_of_every_size_match_the_reference() {
    let (v, tree) = load();
    for (size, root) in v.roots.iter().enumerate() {
        assert_eq!(tree.root_at(size as u64), Some(d(root)), "root of size {size}");
    }
}

#[test]
fn every_perfect_subtree_matches_the_reference() {
    let (v, tree) = load();
    for (level, hashes) in v.node_hashes.iter().enumerate() {
        for (i, h) in hashes.iter().enumerate() {
            let Ok(got) = tree.perfect(level as u32, i as u64);
            assert_eq!(got, d(h), "node ({level}, {i})");
        }
    }
}

#[test]
fn published_inclusion_proofs_are_reproduced_and_verify() {
    let (v, tree) = load();
    for p in &v.inclusion {
        let want: Vec<Digest> = p.proof.iter().map(|h| d(h)).collect();
        assert_eq!(
            tree.inclusion_proof(p.leaf, p.size),
            Some(want.clone()),
            "leaf {} size {}",
            p.leaf,
            p.size
        );
        let leaf = tree.leaf_hash(p.leaf).expect("leaf exists");
        verify_inclusion::<Sha256Hasher>(p.leaf, p.size, &leaf, &want, &d(&v.roots[p.size as usize]))
            .expect("published proof verifies");
    }
}

#[test]
fn published_consistency_proofs_are_reproduced_and_verify() {
    let (v, tree) = load();
    for p in &v.consistency {
        let want: Vec<Digest> = p.proof.iter().map(|h| d(h)).collect();
        assert_eq!(
            tree.consistency_proof(p.first, p.second),
            Some(want.clone()),
            "{} -> {}",
            p.first,
            p.second
        );
        verify_consistency::<Sha256Hasher>(
            p.first,
            p.second,
            &want,
            &d(&v.roots[p.first as usize]),
            &d(&v.roots[p.second as usize]),
        )
        .expect("published proof verifies");
    }
}

#[test]
fn every_inclusion_and_consistency_proof_of_the_reference_tree_verifies_against_published_roots() {
    let (v, tree) = load();
    for size in 1..=8u64 {
        let root = d(&v.roots[size as usize]);
        for leaf in 0..size {
            let proof = tree.inclusion_proof(leaf, size).expect("in range");
            let hash = tree.leaf_hash(leaf).expect("leaf");
            verify_inclusion::<Sha256Hasher>(leaf, size, &hash, &proof, &root).expect("verifies");
            // The same proof must not verify for any other leaf.
            for other in (0..size).filter(|&o| o != leaf) {
                let h = tree.leaf_hash(other).expect("leaf");
                assert!(verify_inclusion::<Sha256Hasher>(leaf, size, &h, &proof, &root).is_err());
            }
        }
        for first in 0..=size {
            let proof = tree.consistency_proof(first, size).expect("in range");
            verify_consistency::<Sha256Hasher>(first, size, &proof, &d(&v.roots[first as usize]), &root)
                .unwrap_or_else(|e| panic!("{first} -> {size}: {e}"));
        }
    }
}

#[test]
fn edge_cases_are_refused_with_typed_errors() {
    let (v, _) = load();
    let r1 = d(&v.roots[1]);
    let r2 = d(&v.roots[2]);
    assert!(matches!(
        verify_inclusion::<Sha256Hasher>(0, 0, &r1, &[], &r1),
        Err(ProofError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        verify_inclusion::<Sha256Hasher>(2, 1, &r1, &[], &r1),
        Err(ProofError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        verify_consistency::<Sha256Hasher>(2, 1, &[], &r2, &r1),
        Err(ProofError::SizesReversed { .. })
    ));
    assert!(
        verify_consistency::<Sha256Hasher>(1, 2, &[], &r1, &r2).is_err(),
        "empty proof"
    );
    assert!(
        verify_consistency::<Sha256Hasher>(1, 1, &[], &r1, &r2).is_err(),
        "equal sizes, other roots"
    );
    assert!(
        verify_consistency::<Sha256Hasher>(1, 1, &[r1], &r1, &r1).is_err(),
        "non-empty proof for equal sizes"
    );
    assert!(
        verify_consistency::<Sha256Hasher>(0, 1, &[], &r2, &r1).is_ok(),
        "empty tree is consistent with all"
    );
    assert!(verify_consistency::<Sha256Hasher>(0, 1, &[r1], &r2, &r1).is_err());
}
