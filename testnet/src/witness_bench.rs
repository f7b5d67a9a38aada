//! `govtune bench witness`: what a witness's add-checkpoint costs, in
//! process, against the primitives it is made of. A consortium is dealt
//! with one witness; a log grows by `step` leaves per checkpoint, each
//! checkpoint signed as nodes sign it (the BLS signature and q validators'
//! note signatures) and submitted with its consistency proof. Printed:
//! requests per second and the time per request beside the time of its
//! parts measured alone (checking the checkpoint's signatures, the
//! consistency proof, the cosignature, the synced state write).

use std::time::{Duration, Instant};

use lightclient::witness::Witness;
use provenance::genesis::{ConsortiumDescription, WitnessDescription, WitnessingDescription};
use provenance::merkle::{verify_consistency, LogHasher, MemoryTree};
use provenance::note::witness_request as request_body;
use provenance::{Checkpoint, Cosignature, SignedCheckpoint, Timestamp};

use crate::runner::TestnetError;

fn err(e: impl std::fmt::Display) -> TestnetError {
    TestnetError::Io(e.to_string())
}

fn micros(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

/// Runs the benchmark: `checkpoints` submissions, the log growing by
/// `step` leaves each; prints its table.
pub fn run(checkpoints: usize, step: u64) -> Result<(), TestnetError> {
    let dir = tempfile::tempdir().map_err(err)?;
    let wdir = dir.path().join("witness");
    let vkey = lightclient::witness::init(&wdir, "bench.witness.invalid/w").map_err(err)?;
    let desc = ConsortiumDescription {
        witnessing: WitnessingDescription {
            witnesses: vec![WitnessDescription {
                key: vkey,
                url: "http://127.0.0.1:1".into(),
            }],
            quorum: Some(1),
            interval_ms: Some(1000),
        },
        ..ConsortiumDescription::local_testnet(7100, 8100)
    };
    let c = genesis::ceremony(&desc, Timestamp(1), &mut rand::rngs::OsRng).map_err(err)?;
    genesis::write_ceremony(dir.path(), &c).map_err(err)?;
    let genesis_path = dir.path().join("genesis.json");
    let keyring = &c.dealt.keyring;
    let signers = c.dealt.signers().map_err(err)?;
    let validators: Vec<_> = signers.iter().filter(|s| s.validator.is_some()).take(3).collect();
    let witness = Witness::open(&wdir, &[genesis_path]).map_err(err)?;

    let mut tree = MemoryTree::<LogHasher>::new();
    let mut leaf = 0u64;
    let mut signed = Vec::with_capacity(checkpoints);
    let mut previous = 0u64;
    for h in 1..=checkpoints as u64 {
        for _ in 0..step {
            tree.push_leaf(&leaf.to_be_bytes());
            leaf += 1;
        }
        let cp = Checkpoint {
            version: <Checkpoint as provenance::Canonical>::VERSION,
            origin: c.dealt.genesis.origin.clone(),
            size: tree.len(),
            root: tree.root(),
            height: h,
            time: Timestamp(h * 1000),
            index: provenance::Digest([0; 32]),
        };
        let msg = cp.signing_message();
        let shares: Vec<_> = validators
            .iter()
            .filter_map(|s| s.consortium.as_ref().map(|k| k.sign_share(&msg)))
            .collect();
        let signature = keyring.combine_consortium_shares(&msg, &shares).map_err(err)?;
        let cp = SignedCheckpoint {
            validators: validators.iter().filter_map(|s| s.sign_note(&cp)).collect(),
            checkpoint: cp,
            signature,
        };
        let proof = if previous == 0 {
            Vec::new()
        } else {
            tree.consistency_proof(previous, cp.checkpoint.size)
                .unwrap_or_default()
        };
        signed.push((
            request_body(previous, &proof, &cp.to_c2sp(keyring, &[])),
            cp,
            proof,
            previous,
        ));
        previous = tree.len();
    }

    // The witness, end to end (parse, check, persist, cosign).
    let started = Instant::now();
    for (body, _, _, _) in &signed {
        witness
            .add_checkpoint(body.as_bytes(), 1)
            .map_err(|r| err(r.body()))?;
    }
    let whole = started.elapsed();

    // Its parts alone.
    let started = Instant::now();
    for (_, cp, _, _) in &signed {
        cp.verify(keyring).map_err(err)?;
    }
    let signatures = started.elapsed();
    let started = Instant::now();
    let mut prev_root = None;
    for (_, cp, proof, old) in &signed {
        if let Some(r) = prev_root {
            verify_consistency::<LogHasher>(*old, cp.checkpoint.size, proof, &r, &cp.checkpoint.root)
                .map_err(err)?;
        }
        prev_root = Some(cp.checkpoint.root);
    }
    let consistency = started.elapsed();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let started = Instant::now();
    for (_, cp, _, _) in &signed {
        let _ = Cosignature::sign("w", &key, &cp.checkpoint, 1);
    }
    let cosign = started.elapsed();
    let path = dir.path().join("state");
    let started = Instant::now();
    for (_, cp, _, _) in &signed {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, cp.checkpoint.note_body()).map_err(err)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        std::fs::File::open(dir.path())
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    let write = started.elapsed();

    let n = signed.len();
    let parts = micros(signatures, n) + micros(consistency, n) + micros(cosign, n) + micros(write, n);
    println!(
        "witness add-checkpoint: {n} checkpoints, log grown by {step} leaves each to {} leaves",
        tree.len()
    );
    println!("| what | per checkpoint |");
    println!("|---|---|");
    println!(
        "| add-checkpoint, end to end | {:.0} µs ({:.0} checkpoints/s) |",
        micros(whole, n),
        n as f64 / whole.as_secs_f64()
    );
    println!(
        "| its checkpoint's signatures (BLS + 3 Ed25519) | {:.0} µs |",
        micros(signatures, n)
    );
    println!("| its consistency proof | {:.1} µs |", micros(consistency, n));
    println!("| its cosignature (Ed25519) | {:.1} µs |", micros(cosign, n));
    println!(
        "| its state write (synced, renamed) | {:.0} µs |",
        micros(write, n)
    );
    println!(
        "| end to end / sum of the parts | {:.2}x |",
        micros(whole, n) / parts
    );
    Ok(())
}
