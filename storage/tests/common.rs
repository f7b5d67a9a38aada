//! Shared helpers: the deterministic consortium the storage tool uses too.
#![allow(dead_code)]

use provenance::checkpoint::{Checkpoint, SignedCheckpoint};
use provenance::genesis::{deal, ConsortiumDescription, Dealt, NodeSigners};
use provenance::Timestamp;
use rand::SeedableRng;
use storage::Store;

pub const ORIGIN: &str = "govtune-testnet";

pub fn consortium() -> (Dealt, Vec<NodeSigners>) {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let dealt = deal(
        &ConsortiumDescription::local_testnet(7100, 8100),
        Timestamp(1),
        &mut rng,
    )
    .expect("deal");
    let signers = dealt.signers().expect("dealt keys match genesis");
    (dealt, signers)
}

pub fn sign_checkpoint(cp: Checkpoint, dealt: &Dealt, signers: &[NodeSigners]) -> SignedCheckpoint {
    let msg = cp.signing_message();
    let shares: Vec<_> = signers
        .iter()
        .take(3)
        .map(|s| s.consortium.sign_share(&msg))
        .collect();
    let signature = dealt
        .keyring
        .combine_consortium_shares(&msg, &shares)
        .expect("combine");
    SignedCheckpoint {
        checkpoint: cp,
        signature,
    }
}

pub fn certify(store: &mut Store, dealt: &Dealt, signers: &[NodeSigners]) -> SignedCheckpoint {
    let h = store.head().clone();
    let cp = sign_checkpoint(
        Checkpoint {
            version: 1,
            origin: ORIGIN.into(),
            size: h.log_size,
            root: h.root,
            height: h.height,
        },
        dealt,
        signers,
    );
    store
        .put_checkpoint(&cp, &dealt.keyring)
        .expect("checkpoint stored");
    cp
}

pub fn append(store: &mut Store, entries: &[provenance::LedgerEntry]) -> storage::AppendReceipt {
    let stamp = Timestamp(store.head().stamp.0 + 1);
    let header = store.next_header(entries, stamp, store.head().height + 1, 0);
    store.append_block(&header, entries, b"cert").expect("append")
}
