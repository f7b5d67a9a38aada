//! Crash test: a child process appends blocks and is SIGKILLed at random
//! moments, 60 times; every reopen finds a consistent store at a block
//! boundary, with every acknowledged block, and every proof verifies
//! against the stored checkpoint.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use provenance::merkle::{verify_consistency, verify_inclusion, LogHasher, TreeHasher};
use rand::{Rng, SeedableRng};
use storage::Store;

#[test]
fn sigkill_at_random_moments_never_loses_or_tears_a_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let (dealt, _) = consortium();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2026);
    let mut acked_height = 0u64;
    let mut kills_mid_stream = 0;
    for round in 0..60 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_storage-tool"))
            .args(["crash-writer"])
            .arg(&path)
            .arg("7")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let acks_before_kill = rng.gen_range(1..6);
        for _ in 0..acks_before_kill {
            let line = lines.next().expect("writer alive").expect("line");
            let mut parts = line.split_whitespace();
            assert_eq!(parts.next(), Some("acked"), "{line}");
            acked_height = parts.next().and_then(|h| h.parse().ok()).expect("height");
        }
        // Kill somewhere inside the next block's work.
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..8000)));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reaped");
        assert!(!status.success(), "round {round}: the writer was killed");
        kills_mid_stream += 1;

        let store = Store::open(&path, ORIGIN, &dealt.keyring).expect("reopens consistently");
        let head = store.head().clone();
        assert!(
            head.height >= acked_height,
            "round {round}: acked block {acked_height} lost (head {})",
            head.height
        );
        // At a block boundary: the last block's entries end exactly at the log size.
        let last = store.block(head.height).expect("read").expect("last block");
        assert_eq!(
            last.first_index + u64::from(last.header.entry_count),
            head.log_size
        );
        assert!(store.block(head.height + 1).expect("read").is_none());
        assert!(
            store.entry_bytes(head.log_size).expect("read").is_none(),
            "no entry past the head"
        );
        // Proofs against the stored checkpoint.
        let cp = store.latest_checkpoint().expect("a checkpoint").clone();
        cp.verify(&dealt.keyring).expect("checkpoint signature");
        let size = cp.checkpoint.size;
        for _ in 0..5 {
            let i = rng.gen_range(0..size);
            let leaf = LogHasher::hash_leaf(&store.entry_bytes(i).expect("read").expect("entry"));
            let proof = store.inclusion_proof(i, size).expect("read").expect("proof");
            verify_inclusion::<LogHasher>(i, size, &leaf, &proof, &cp.checkpoint.root)
                .expect("inclusion verifies");
        }
        let proof = store
            .consistency_proof(size, head.log_size)
            .expect("read")
            .expect("proof");
        verify_consistency::<LogHasher>(size, head.log_size, &proof, &cp.checkpoint.root, &head.root)
            .expect("head extends the checkpoint");
    }
    assert_eq!(kills_mid_stream, 60);
    assert!(
        acked_height >= 60,
        "the writer made progress across restarts: {acked_height}"
    );
}
