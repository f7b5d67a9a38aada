//! Proof verification on arbitrary (index, sizes, path, roots): never
//! panics; and proofs built from a tree of fuzzer-chosen size always verify
//! while the fuzzer's own paths verify only if they equal the real proof.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provenance::merkle::{verify_consistency, verify_inclusion, MemoryTree, LogHasher};
use provenance::Digest;

fn u64_at(d: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, x) in b.iter_mut().enumerate() {
        *x = d.get(i + k).copied().unwrap_or(0);
    }
    u64::from_be_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let a = u64_at(data, 0);
    let b = u64_at(data, 8);
    let path: Vec<Digest> = data
        .get(16..)
        .unwrap_or(&[])
        .chunks_exact(32)
        .take(70)
        .map(|c| {
            let mut d = [0u8; 32];
            d.copy_from_slice(c);
            Digest(d)
        })
        .collect();
    let (leaf, root) = (path.first().copied().unwrap_or_default(), path.last().copied().unwrap_or_default());
    let _ = verify_inclusion::<LogHasher>(a, b, &leaf, &path, &root);
    let _ = verify_consistency::<LogHasher>(a, b, &path, &leaf, &root);
    let _ = verify_inclusion::<LogHasher>(a % 64, b % 64, &leaf, &path, &root);
    let _ = verify_consistency::<LogHasher>(a % 64, b % 64, &path, &leaf, &root);

    // Differential: a real tree of up to 300 leaves.
    let n = 1 + (b % 300);
    let tree = MemoryTree::<LogHasher>::from_leaves((0..n).map(|i| i.to_be_bytes()).collect::<Vec<_>>().iter().map(|x| x.as_slice()));
    let i = a % n;
    let real = tree.inclusion_proof(i, n).expect("in range");
    let lh = tree.leaf_hash(i).expect("leaf");
    assert!(verify_inclusion::<LogHasher>(i, n, &lh, &real, &tree.root()).is_ok());
    if path != real {
        assert!(verify_inclusion::<LogHasher>(i, n, &lh, &path, &tree.root()).is_err());
    }
    let m = 1 + (a % n);
    let cp = tree.consistency_proof(m, n).expect("in range");
    let r1 = tree.root_at(m).expect("root");
    assert!(verify_consistency::<LogHasher>(m, n, &cp, &r1, &tree.root()).is_ok());
    if path != cp && m != n {
        assert!(verify_consistency::<LogHasher>(m, n, &path, &r1, &tree.root()).is_err());
    }
});
