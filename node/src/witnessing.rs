//! Submitting checkpoints to the witnesses genesis names: every witnessing
//! interval, busy or idle, each node sends its latest certified checkpoint
//! to every witness (C2SP tlog-witness add-checkpoint, with a consistency
//! proof from the size the witness holds) and keeps the cosignatures it
//! gets back in its store, which then serves the newest checkpoint with
//! genesis's quorum of them. One thread per witness, so a witness that is
//! down delays no other.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use lightclient::witness::{submit, SubmitError, Submitted};
use provenance::genesis::WitnessRecord;
use provenance::{KeyRing, SignedCheckpoint};
use storage::Store;

/// What a node does with a witness's answer to a submission from `old`
/// of a checkpoint of `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Cosigned: the witness now holds `size`.
    Holds(u64),
    /// The witness holds a smaller size: submit again from it.
    RetryFrom(u64),
    /// The witness holds a larger size (another node's newer checkpoint):
    /// nothing to do until this node has caught up.
    Ahead(u64),
    /// The witness holds this size with another root: a fork, to report.
    Fork,
}

/// The decision after a 409 naming `held` for a checkpoint of `size`
/// submitted from `old`: the witness holding this very size after a
/// submission from it means it holds another root there.
pub fn on_conflict(held: u64, size: u64, old: u64) -> Next {
    match held.cmp(&size) {
        std::cmp::Ordering::Less => Next::RetryFrom(held),
        std::cmp::Ordering::Greater => Next::Ahead(held),
        std::cmp::Ordering::Equal if old == size => Next::Fork,
        std::cmp::Ordering::Equal => Next::RetryFrom(held),
    }
}

/// Starts one submitting thread per witness of genesis.
pub fn start(
    store: Arc<RwLock<Store>>,
    keyring: Arc<KeyRing>,
    witnesses: Vec<WitnessRecord>,
    interval_ms: u64,
) {
    for w in witnesses {
        let (store, keyring) = (store.clone(), keyring.clone());
        let name = format!("witness {}", w.name);
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&store, &keyring, &w, Duration::from_millis(interval_ms)));
        if let Err(e) = spawned {
            tracing::error!("cannot start submitting to a witness: {e}");
        }
    }
}

fn run(store: &RwLock<Store>, keyring: &KeyRing, w: &WitnessRecord, interval: Duration) {
    let timeout = interval.min(Duration::from_secs(10));
    // The size the witness holds, as last learned (0: ask it).
    let mut held = 0u64;
    loop {
        let started = Instant::now();
        let latest = store
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .latest_checkpoint()
            .cloned();
        if let Some(cp) = latest {
            held = submit_once(store, keyring, w, &cp, held, timeout);
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

/// Submits `cp` from `held` (again from the witness's size after a 409);
/// returns the size the witness is known to hold afterwards.
fn submit_once(
    store: &RwLock<Store>,
    keyring: &KeyRing,
    w: &WitnessRecord,
    cp: &SignedCheckpoint,
    mut held: u64,
    timeout: Duration,
) -> u64 {
    let size = cp.checkpoint.size;
    for _ in 0..3 {
        let old = if held > size { 0 } else { held };
        let proof = if old == 0 || old == size {
            Vec::new()
        } else {
            match store
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .consistency_proof(old, size)
            {
                Ok(Some(p)) => p,
                other => {
                    tracing::warn!(
                        "witness {}: no consistency proof {old} -> {size}: {other:?}",
                        w.name
                    );
                    return 0;
                }
            }
        };
        let next = match submit(w, keyring, cp, old, &proof, timeout) {
            Ok(Submitted::Cosigned(cosignatures)) => {
                let kept = store.write().unwrap_or_else(|p| p.into_inner()).put_cosignatures(
                    cp.checkpoint.height,
                    &cosignatures,
                    keyring,
                );
                if let Err(e) = kept {
                    tracing::warn!("witness {}: cosignatures not kept: {e}", w.name);
                }
                Next::Holds(size)
            }
            Ok(Submitted::Conflict(h)) => on_conflict(h, size, old),
            Err(e @ SubmitError::Transport { .. }) => {
                tracing::debug!("witness {}: {e}", w.name);
                return held;
            }
            Err(e) => {
                tracing::warn!(
                    "witness {} refused the checkpoint of height {}: {e}",
                    w.name,
                    cp.checkpoint.height
                );
                return 0;
            }
        };
        match next {
            Next::Holds(s) => return s,
            Next::RetryFrom(h) => held = h,
            Next::Ahead(h) => return h,
            Next::Fork => {
                tracing::error!(
                    "witness {} holds another log of size {size} than this node's (root {}): a split view",
                    w.name,
                    cp.checkpoint.root
                );
                return size;
            }
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_retries_from_a_smaller_size_waits_behind_a_larger_and_reports_a_fork() {
        assert_eq!(on_conflict(0, 10, 3), Next::RetryFrom(0));
        assert_eq!(on_conflict(7, 10, 0), Next::RetryFrom(7));
        assert_eq!(on_conflict(12, 10, 0), Next::Ahead(12));
        // Another node brought the witness to this size first: no fork.
        assert_eq!(on_conflict(10, 10, 0), Next::RetryFrom(10));
        // Refused from this very size: the witness holds another root.
        assert_eq!(on_conflict(10, 10, 10), Next::Fork);
    }
}
