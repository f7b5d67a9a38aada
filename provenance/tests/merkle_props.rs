//! Properties of the Merkle maths: every proof the tree produces verifies,
//! and any change to a proof, root, leaf, index or size makes it fail.

mod common;

use base64::Engine as _;
use proptest::prelude::*;
use provenance::checkpoint::{Checkpoint, SignedCheckpoint};
use provenance::merkle::{verify_consistency, verify_inclusion, MemoryTree, Sha3Hasher, TreeHasher};
use provenance::Digest;

/// RFC 9162's recursive definition, written independently of the crate's
/// iterative code, as the reference.
fn reference_root(leaves: &[Digest]) -> Digest {
    match leaves.len() {
        0 => Sha3Hasher::empty_root(),
        1 => leaves[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            Sha3Hasher::hash_children(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
        }
    }
}

fn tree(n: usize) -> (MemoryTree<Sha3Hasher>, Vec<Digest>) {
    let leaves: Vec<Vec<u8>> = (0..n).map(|i| format!("leaf {i}").into_bytes()).collect();
    let t = MemoryTree::<Sha3Hasher>::from_leaves(leaves.iter().map(Vec::as_slice));
    let hashes = (0..n as u64).map(|i| t.leaf_hash(i).expect("leaf")).collect();
    (t, hashes)
}

fn flip(d: &Digest, bit: usize) -> Digest {
    let mut out = *d;
    out.0[bit / 8] ^= 1 << (bit % 8);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn roots_match_the_recursive_definition(n in 0usize..300) {
        let (t, hashes) = tree(n);
        for size in [0, n / 3, n / 2, n] {
            prop_assert_eq!(t.root_at(size as u64), Some(reference_root(&hashes[..size])));
        }
    }

    #[test]
    fn inclusion_proofs_verify_and_any_change_fails(n in 1usize..300, pick in any::<u64>(), bit in 0usize..256, other in any::<u64>()) {
        let (t, hashes) = tree(n);
        let size = n as u64;
        let index = pick % size;
        let root = t.root();
        let proof = t.inclusion_proof(index, size).expect("in range");
        let leaf = hashes[index as usize];
        prop_assert!(verify_inclusion::<Sha3Hasher>(index, size, &leaf, &proof, &root).is_ok());

        // Any bit of any proof element.
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i] = flip(&bad[i], bit);
            prop_assert!(verify_inclusion::<Sha3Hasher>(index, size, &leaf, &bad, &root).is_err());
        }
        // Any bit of the root or the leaf.
        prop_assert!(verify_inclusion::<Sha3Hasher>(index, size, &leaf, &proof, &flip(&root, bit)).is_err());
        prop_assert!(verify_inclusion::<Sha3Hasher>(index, size, &flip(&leaf, bit), &proof, &root).is_err());
        // Any other index.
        let other_index = other % (size + 2);
        if other_index != index {
            prop_assert!(verify_inclusion::<Sha3Hasher>(other_index, size, &leaf, &proof, &root).is_err());
        }
        // Dropped or extra elements.
        if !proof.is_empty() {
            prop_assert!(verify_inclusion::<Sha3Hasher>(index, size, &leaf, &proof[1..], &root).is_err());
        }
        let mut longer = proof.clone();
        longer.push(root);
        prop_assert!(verify_inclusion::<Sha3Hasher>(index, size, &leaf, &longer, &root).is_err());
    }

    #[test]
    fn consistency_proofs_verify_and_any_change_fails(n in 1usize..300, a in any::<u64>(), bit in 0usize..256) {
        let (t, _) = tree(n);
        let second = n as u64;
        let first = 1 + a % second;
        let (r1, r2) = (t.root_at(first).expect("r1"), t.root_at(second).expect("r2"));
        let proof = t.consistency_proof(first, second).expect("in range");
        prop_assert!(verify_consistency::<Sha3Hasher>(first, second, &proof, &r1, &r2).is_ok());
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i] = flip(&bad[i], bit);
            prop_assert!(verify_consistency::<Sha3Hasher>(first, second, &bad, &r1, &r2).is_err());
        }
        if first != second {
            prop_assert!(verify_consistency::<Sha3Hasher>(first, second, &proof, &flip(&r1, bit), &r2).is_err());
            prop_assert!(verify_consistency::<Sha3Hasher>(first, second, &proof, &r1, &flip(&r2, bit)).is_err());
            prop_assert!(verify_consistency::<Sha3Hasher>(first, second, &proof[..proof.len() - 1], &r1, &r2).is_err());
        }
        // Another size pair with the same proof must fail (unless the proof
        // happens to be valid for it, which only the empty proof can be).
        if first > 1 && first < second {
            prop_assert!(verify_consistency::<Sha3Hasher>(first - 1, second, &proof, &r1, &r2).is_err());
        }
    }
}

/// A proof is only as good as the (size, root) it is checked against; the
/// checkpoint's consortium signature binds the two, so claiming another
/// size for a signed root is caught there.
#[test]
fn a_wrong_tree_size_is_caught_by_the_signed_checkpoint() {
    let f = common::fixture();
    let (t, _) = tree(100);
    let cp = Checkpoint {
        version: 5,
        origin: f.dealt.genesis.origin.clone(),
        size: 100,
        root: t.root(),
        height: 9,
        time: provenance::Timestamp(1_764_000_000_000),
        index: provenance::Digest([9; 32]),
    };
    let signed = common::sign_checkpoint(cp, 3, 3);
    signed.verify(f.keyring()).expect("checkpoint verifies");

    for size in [99u64, 101, 64, 128] {
        let mut lie = signed.clone();
        lie.checkpoint.size = size;
        assert!(lie.verify(f.keyring()).is_err(), "size {size} must not verify");
    }
    let mut lie = signed.clone();
    lie.checkpoint.root = flip(&lie.checkpoint.root, 3);
    assert!(lie.verify(f.keyring()).is_err());
    let mut lie = signed.clone();
    lie.checkpoint.height = 10;
    assert!(lie.verify(f.keyring()).is_err());

    // An inclusion proof made for size 100 does not verify if the verifier
    // is told size 99 with the same root.
    let leaf = t.leaf_hash(98).expect("leaf");
    let proof = t.inclusion_proof(98, 100).expect("proof");
    assert!(verify_inclusion::<Sha3Hasher>(98, 100, &leaf, &proof, &signed.checkpoint.root).is_ok());
    assert!(verify_inclusion::<Sha3Hasher>(98, 99, &leaf, &proof, &signed.checkpoint.root).is_err());
}

#[test]
fn checkpoints_round_trip_through_c2sp_text() {
    let f = common::fixture();
    let (t, _) = tree(5);
    let origin = f.dealt.genesis.origin.clone();
    let cp = Checkpoint {
        version: 5,
        origin: origin.clone(),
        size: 5,
        root: t.root(),
        height: 3,
        time: provenance::Timestamp(1_764_000_000_000),
        index: provenance::Digest([9; 32]),
    };
    let signed = common::sign_checkpoint(cp, 3, 3);
    let k = f.keyring();
    let text = signed.to_c2sp(k, &[]);
    assert!(text.starts_with(&format!("{origin}\n5\n")));
    assert!(
        text.contains(&format!(
            "\nheight 3\ntime 1764000000000\nindex {}\n\n",
            base64::engine::general_purpose::STANDARD.encode([9u8; 32])
        )),
        "{text}"
    );
    // Three validator lines and the consortium's, all named by the origin.
    assert_eq!(text.matches(&format!("\u{2014} {origin} ")).count(), 4, "{text}");
    // A note without its index line, or with a malformed one, is refused.
    let cut = text.replace(
        &format!(
            "index {}\n",
            base64::engine::general_purpose::STANDARD.encode([9u8; 32])
        ),
        "",
    );
    assert!(SignedCheckpoint::from_c2sp(&cut, k).is_err());
    let bad = text.replace("\nindex ", "\nindex x");
    assert!(SignedCheckpoint::from_c2sp(&bad, k).is_err());
    let (back, cosigs) = SignedCheckpoint::from_c2sp(&text, k).expect("parses");
    assert_eq!(back, signed);
    assert!(cosigs.is_empty());
    back.verify(k).expect("verifies");

    // Lines of unknown keys are ignored: with the origin renamed, no
    // signature is found and the checkpoint does not verify.
    let renamed = text.replace(&format!("\u{2014} {origin} "), "\u{2014} someone.else/log ");
    let (none, _) = SignedCheckpoint::from_c2sp(&renamed, k).expect("parses");
    assert!(none.signature.is_empty() && none.validators.is_empty());
    assert!(none.verify(k).is_err());
    // Only the validators' lines: q of them stand for the consortium.
    let bls_line = text
        .lines()
        .filter(|l| l.starts_with('\u{2014}'))
        .find(|l| l.len() > 150)
        .expect("the BLS line is the longest");
    let without_bls = text.replace(&format!("{bls_line}\n"), "");
    let (ed_only, _) = SignedCheckpoint::from_c2sp(&without_bls, k).expect("parses");
    assert!(ed_only.signature.is_empty());
    ed_only.verify(k).expect("q validator signatures verify");
    let two = common::sign_checkpoint(signed.checkpoint.clone(), 0, 2);
    assert_eq!(
        two.verify(k),
        Err(provenance::CheckpointError::TooFewSignatures { have: 2, need: 3 })
    );
    let mut forged = signed.clone();
    forged.validators[1].signature.0[7] ^= 1;
    assert!(
        forged.verify(k).is_err(),
        "a bad validator line fails even beside a good BLS one"
    );
    let mut repeated = ed_only.clone();
    repeated.validators[1] = repeated.validators[0].clone();
    assert!(repeated.verify(k).is_err());
    // Non-canonical or malformed bodies are refused.
    for bad in [
        text.replacen("\n5\n", "\n05\n", 1),
        text.replacen("\n5\n", "\n-5\n", 1),
        text.replacen("height 3", "height x", 1),
        text.replacen("\ntime 1764000000000\n", "\n", 1),
        text.replacen("time 1764000000000", "time 01764000000000", 1),
        text.replacen("time 1764000000000", "time  1764000000000", 1),
        text.replacen("time 1764000000000", "time 1764000000000\nextra 1", 1),
        text.replacen("time 1764000000000", "time 99999999999999999999", 1),
        text.replacen("\n\n", "\n", 1),
        text.replacen("\u{2014} ", "- ", 1),
        String::new(),
    ] {
        assert!(SignedCheckpoint::from_c2sp(&bad, k).is_err(), "{bad:?}");
    }
    // A tampered size or time parses but does not verify.
    let (lie, _) = SignedCheckpoint::from_c2sp(&text.replacen("\n5\n", "\n6\n", 1), k).expect("parses");
    assert!(lie.verify(k).is_err());
    let later = text.replacen("time 1764000000000", "time 1764000060000", 1);
    let (lie, _) = SignedCheckpoint::from_c2sp(&later, k).expect("parses");
    assert_eq!(lie.checkpoint.time, provenance::Timestamp(1_764_000_060_000));
    assert!(lie.verify(k).is_err());
    let (lie, _) =
        SignedCheckpoint::from_c2sp(&without_bls.replacen("\n5\n", "\n6\n", 1), k).expect("parses");
    assert!(lie.verify(k).is_err());
}
