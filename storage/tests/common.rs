//! Shared helpers: the deterministic consortium the storage tool uses too.
#![allow(dead_code)]

use provenance::checkpoint::{Checkpoint, SignedCheckpoint};
use provenance::genesis::{Dealt, NodeSigners};
use provenance::Timestamp;
use storage::Store;

pub use storage::synthetic::{consortium, ORIGIN};

pub fn sign_checkpoint(cp: Checkpoint, dealt: &Dealt, signers: &[NodeSigners]) -> SignedCheckpoint {
    storage::synthetic::sign_checkpoint(cp, dealt, signers).expect("q shares combine")
}

pub fn certify(store: &mut Store, dealt: &Dealt, signers: &[NodeSigners]) -> SignedCheckpoint {
    storage::synthetic::certify(store, dealt, signers).expect("checkpoint stored")
}

pub fn append(store: &mut Store, entries: &[provenance::LedgerEntry]) -> storage::AppendReceipt {
    let stamp = Timestamp(store.head().stamp.0 + 1);
    let header = store.next_header(entries, stamp, store.head().height + 1, 0);
    store.append_block(&header, entries, b"cert").expect("append")
}
