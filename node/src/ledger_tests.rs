//! The ledger's decisions on an in-memory store, with real signatures and
//! no process: what a leader packs into a block, what a validator refuses,
//! what finalising appends, when an empty block is due.

use std::sync::{Arc, RwLock};

use consensus::{Application, Height, Proposal, View, GENESIS};
use provenance::codec::encode;
use provenance::{Bytes, EntryBody, LedgerEntry, Timestamp};

use super::*;
use crate::ledger_store::MemoryStore;
use crate::test_world::*;

fn limits(max_entries: usize) -> BlockLimits {
    BlockLimits {
        max_entries,
        max_bytes: 64 << 10,
        heartbeat_ms: 500,
        max_skew_ms: 2_000,
    }
}

/// A ledger whose store holds the world's registrations (one block).
fn ledger(w: &World, max_entries: usize) -> Ledger<MemoryStore> {
    let mut store = MemoryStore::new();
    store
        .append(Timestamp(T0), 1, 0, &w.entries, &[])
        .expect("registrations apply");
    Ledger::new(
        Arc::new(RwLock::new(store)),
        Arc::new(w.keyring.clone()),
        limits(max_entries),
        GENESIS,
    )
}

fn add(l: &mut Ledger<MemoryStore>, e: &LedgerEntry) {
    l.add(e.body.digest(), e.clone());
}

fn proposal(entries: Vec<Bytes>, stamp: u64) -> Proposal<BlockPayload> {
    Proposal {
        view: View(1),
        height: Height(1),
        parent: GENESIS,
        parent_view: View(0),
        stamp,
        proposer: 3,
        payload: BlockPayload { entries },
    }
}

fn bytes(e: &LedgerEntry) -> Bytes {
    Bytes(encode(e))
}

#[test]
fn a_leader_packs_registrations_first_and_leaves_out_events_outside_the_stamp_window() {
    let w = World::new();
    let mut l = ledger(&w, 16);
    let stale = w.sign_all(&EntryBody::Step(w.step(T0 - 200_000)));
    let step = w.sign_all(&EntryBody::Step(w.step(T0)));
    let (m, _) = manifest("globe-press", "Another", &[b'a'; 64], "CC0-1.0");
    let manifest = w.sign_all(&EntryBody::Manifest(m));
    for e in [&stale, &step, &manifest] {
        add(&mut l, e);
    }
    let p = l
        .propose(&GENESIS, Height(1), View(1), T0 + 1_000)
        .expect("a block");
    assert_eq!(p.entries, vec![bytes(&manifest), bytes(&step)]);
    // The stale step stays out of every block (its time never fits again).
    assert!(l.in_mempool(&stale.body.digest()));
}

#[test]
fn a_block_holds_at_most_the_entry_limit() {
    let w = World::new();
    let mut l = ledger(&w, 2);
    let manifests: Vec<LedgerEntry> = (0..4u8)
        .map(|i| {
            let (m, _) = manifest("folio-society", &format!("Play {i}"), &[b'a' + i; 64], "CC0-1.0");
            w.sign_all(&EntryBody::Manifest(m))
        })
        .collect();
    for e in &manifests {
        add(&mut l, e);
    }
    let p = l
        .propose(&GENESIS, Height(1), View(1), T0 + 1_000)
        .expect("a block");
    assert_eq!(p.entries.len(), 2);
}

#[test]
fn a_validator_refuses_a_block_with_a_forged_or_inapplicable_entry() {
    let w = World::new();
    let mut l = ledger(&w, 16);
    let step = w.sign_all(&EntryBody::Step(w.step(T0)));
    assert!(l.verify(&proposal(vec![bytes(&step)], T0 + 1_000)));
    // The operator's measurement changed after everyone signed.
    let mut forged = step.clone();
    if let EntryBody::Step(s) = &mut forged.body {
        s.measurement.loss = 1.0;
    }
    assert!(!l.verify(&proposal(vec![bytes(&forged)], T0 + 1_000)));
    // A second record 0 of the same campaign: the chain does not take it.
    let again = w.sign_all(&EntryBody::Step(w.step(T0 + 1)));
    assert!(!l.verify(&proposal(vec![bytes(&step), bytes(&again)], T0 + 1_000)));
    // A step time outside the block's window.
    assert!(!l.verify(&proposal(vec![bytes(&step)], T0 + 200_000)));
    // Bytes that are no entry.
    assert!(!l.verify(&proposal(vec![Bytes(vec![0, 1, 2])], T0 + 1_000)));
}

#[test]
fn finalising_appends_the_block_and_empties_the_mempool() {
    let w = World::new();
    let mut l = ledger(&w, 16);
    let step = w.sign_all(&EntryBody::Step(w.step(T0)));
    add(&mut l, &step);
    let payload = l
        .propose(&GENESIS, Height(1), View(1), T0 + 1_000)
        .expect("a block");
    let p = proposal(payload.entries, T0 + 1_000);
    assert!(l.verify(&p));
    let c = l.finalize(&p, None).expect("finalised");
    assert_eq!((c.events, c.examples), (1, 2));
    assert_eq!(c.log_size, w.entries.len() as u64 + 1);
    assert_eq!(c.digests, vec![step.body.digest()]);
    assert_eq!(l.mempool_len(), 0);
    let store = l.store.read().expect("store");
    assert!(store.committed(&step.body.digest()).expect("index"));
    assert_eq!(store.headers().len(), 2);
}

#[test]
fn an_empty_block_waits_for_the_heartbeat() {
    let w = World::new();
    let mut l = ledger(&w, 16);
    assert!(
        l.propose(&GENESIS, Height(1), View(1), T0).is_some(),
        "nothing proposed yet"
    );
    assert!(l.propose(&GENESIS, Height(1), View(2), T0 + 100).is_none());
    assert!(l.propose(&GENESIS, Height(1), View(3), T0 + 600).is_some());
    // A complete entry does not wait.
    add(&mut l, &w.sign_all(&EntryBody::Step(w.step(T0))));
    assert!(l.propose(&GENESIS, Height(1), View(4), T0 + 700).is_some());
}

#[test]
fn a_candidate_over_the_remaining_budget_is_skipped_and_smaller_ones_still_packed() {
    let w = World::new();
    let mut l = ledger(&w, 16);
    // A manifest that fills most of the 64 KiB budget arrives first
    // (registrations sort by arrival), a larger one next, two small last.
    // A manifest cut at explicit boundaries is as large as its offsets.
    let sized = |title: &str, offsets: u64| {
        let (mut m, _) = manifest("globe-press", title, &[b'b'; 64], "CC0-1.0");
        m.segmentation = provenance::Segmentation::Boundaries {
            offsets: (0..offsets).map(|i| i * 10).collect(),
        };
        m.content_bytes = offsets * 10;
        w.sign_all(&EntryBody::Manifest(m))
    };
    let big = sized("Big", 5_000);
    let small: Vec<LedgerEntry> = (0..2u8)
        .map(|i| {
            let (m, _) = manifest("folio-society", &format!("Small {i}"), &[b'c' + i; 64], "CC0-1.0");
            w.sign_all(&EntryBody::Manifest(m))
        })
        .collect();
    let bigger = sized("Bigger", 6_000);
    assert!(bytes(&big).len() + bytes(&bigger).len() > 64 << 10);
    for e in [&big, &bigger, &small[0], &small[1]] {
        add(&mut l, e);
    }
    let p = l
        .propose(&GENESIS, Height(1), View(1), T0 + 1_000)
        .expect("a block");
    // `bigger` does not fit beside `big`: skipped, not a stop.
    assert_eq!(p.entries, vec![bytes(&big), bytes(&small[0]), bytes(&small[1])]);
    assert!(l.in_mempool(&bigger.body.digest()));
}

/// Consensus refuses what a co-signer missed, whoever proposes it: a step
/// signed by everyone before its source's revocation, in a block after
/// the revocation (or after it in the same block), and a refusal whose
/// time is outside the block's window. An honest leader leaves the step
/// out and still packs the revocation.
#[test]
fn a_validator_refuses_a_step_after_its_sources_revocation_and_a_refusal_out_of_its_window() {
    let w = World::new();
    let mut l = ledger(&w, 16);
    let step = w.sign_all(&EntryBody::Step(w.step(T0)));
    let revocation = w.sign_all(&EntryBody::Revocation(provenance::Revocation {
        version: 1,
        authority: label("globe-press"),
        source: w.sources[GLOBE].0.source_id(),
        reason: "withdrawn".into(),
        requested: Timestamp(T0),
    }));
    assert!(l.verify(&proposal(vec![bytes(&step), bytes(&revocation)], T0 + 1_000)));
    assert!(!l.verify(&proposal(vec![bytes(&revocation), bytes(&step)], T0 + 1_000)));
    add(&mut l, &step);
    add(&mut l, &revocation);
    let p = l
        .propose(&GENESIS, Height(1), View(1), T0 + 1_000)
        .expect("a block");
    assert_eq!(
        p.entries,
        vec![bytes(&revocation)],
        "revocations sort before steps"
    );
    // Refusals: inside the window they apply, outside it they do not.
    let refusal = |time: u64| {
        let mut r = w.refusal(provenance::RefusalReason::License, 2, None);
        r.time = Timestamp(time);
        w.sign_all(&EntryBody::Refusal(r))
    };
    assert!(l.verify(&proposal(vec![bytes(&refusal(T0))], T0 + 1_000)));
    assert!(!l.verify(&proposal(vec![bytes(&refusal(T0 - 200_000))], T0 + 1_000)));
    assert!(!l.verify(&proposal(vec![bytes(&refusal(T0 + 100_000))], T0 + 1_000)));
}

#[test]
fn a_validator_votes_for_no_block_naming_a_blob_it_lacks_and_a_leader_proposes_none() {
    let w = World::new();
    let mut l = ledger(&w, 16);
    let (delta, sketch) = (b"the step's delta".to_vec(), b"the step's sketches".to_vec());
    let mut s = w.step(T0);
    s.delta_blob = storage::blob_digest(&delta);
    s.sketch_blob = storage::blob_digest(&sketch);
    let mut named = vec![s.delta_blob, s.sketch_blob];
    named.sort();
    let step = w.sign_all(&EntryBody::Step(s));
    add(&mut l, &step);
    // A leader lacking them leaves the entry out, and wants them.
    let built = l.propose(&GENESIS, Height(1), View(1), T0 + 1_000);
    assert!(
        built.is_none_or(|p| p.entries.is_empty()),
        "proposed without its blobs"
    );
    let mut wanted = l.take_wanted();
    wanted.sort();
    wanted.dedup();
    assert_eq!(wanted, named);
    // A validator lacking either refuses a block carrying it.
    let p = proposal(vec![bytes(&step)], T0 + 1_000);
    assert!(!l.verify(&p), "voted holding neither blob");
    write(&l.store).put_blob(&delta);
    assert!(!l.verify(&p), "voted holding the delta alone");
    write(&l.store).put_blob(&sketch);
    assert!(l.verify(&p), "holding both, it votes");
    let built = l
        .propose(&GENESIS, Height(1), View(1), T0 + 1_000)
        .expect("a block");
    assert_eq!(built.entries, vec![bytes(&step)]);
}
