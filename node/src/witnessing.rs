//! Submitting checkpoints to the witnesses genesis names: every witnessing
//! interval, busy or idle, each node sends its latest certified checkpoint
//! to every witness (C2SP tlog-witness add-checkpoint, with a consistency
//! proof from the size the witness holds) and keeps the cosignatures it
//! gets back in its store, which then serves the newest checkpoint with
//! genesis's quorum of them. Each round reads the checkpoint once and asks
//! every witness at once, so they cosign the same height and a witness that
//! is down delays the others by at most the interval.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use provenance::genesis::WitnessRecord;
use provenance::note::{self, SignatureLine};
use provenance::{Cosignature, Digest, KeyRing, SignedCheckpoint};
use storage::Store;

/// What a witness answered a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Its cosignatures of the checkpoint (each checked under genesis).
    Cosigned(Vec<Cosignature>),
    /// 409: it holds a checkpoint of this size (another old size is
    /// needed, or it holds another root at this size).
    Conflict(u64),
}

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// No answer.
    #[error("{url}: {reason}")]
    Transport {
        /// URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// 422: the consistency proof does not verify for the witness.
    #[error("{url}: HTTP 422: {reason}")]
    Unprocessable {
        /// URL.
        url: String,
        /// Its reason.
        reason: String,
    },
    /// The witness refused the checkpoint, or answered what C2SP does not
    /// allow, or a cosignature that does not verify.
    #[error("{url}: {reason}")]
    Refused {
        /// URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Reads a witness's 200 answer: its signature lines, of which those named
/// `witness` must be cosignatures of `cp` verifying under genesis.
pub fn cosignatures_in(
    text: &str,
    witness: &str,
    keyring: &KeyRing,
    cp: &SignedCheckpoint,
) -> Result<Vec<Cosignature>, String> {
    let mut out = Vec::new();
    for line in text.split_terminator('\n') {
        let l = SignatureLine::parse(line).map_err(str::to_string)?;
        if l.name != witness {
            continue;
        }
        let c = Cosignature::from_line(&l).ok_or("a cosignature line of the wrong size")?;
        if !keyring.log().verify_cosignature(&cp.checkpoint, &c) {
            return Err(format!("{witness}'s cosignature does not verify under genesis"));
        }
        out.push(c);
    }
    if out.is_empty() {
        return Err(format!("no cosignature by {witness}"));
    }
    Ok(out)
}

/// Submits the checkpoint `cp` to genesis's witness `to` with a
/// consistency proof from `old`, waiting at most `timeout`.
pub fn submit(
    to: &WitnessRecord,
    keyring: &KeyRing,
    cp: &SignedCheckpoint,
    old: u64,
    proof: &[Digest],
    timeout: Duration,
) -> Result<Submitted, SubmitError> {
    let url = format!("{}/add-checkpoint", to.url.trim_end_matches('/'));
    let transport = |e: ureq::Error| SubmitError::Transport {
        url: url.clone(),
        reason: e.to_string(),
    };
    let refused = |reason: String| SubmitError::Refused {
        url: url.clone(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let body = note::witness_request(old, proof, &cp.to_c2sp(keyring, &[]));
    let mut resp = agent.post(&url).send(body.as_bytes()).map_err(transport)?;
    let status = resp.status().as_u16();
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec()
        .map_err(transport)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    match status {
        200 => cosignatures_in(&text, &to.name, keyring, cp)
            .map(Submitted::Cosigned)
            .map_err(refused),
        409 => text
            .trim_end_matches('\n')
            .parse()
            .map(Submitted::Conflict)
            .map_err(|_| refused(format!("409 without a size: {text:?}"))),
        422 => Err(SubmitError::Unprocessable {
            url: url.clone(),
            reason: text.trim().chars().take(500).collect(),
        }),
        s => Err(refused(format!(
            "HTTP {s}: {}",
            text.trim().chars().take(500).collect::<String>()
        ))),
    }
}

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

/// Starts submitting: every `interval_ms`, the latest certified checkpoint
/// (read once per round, so every witness cosigns the same height) goes to
/// every witness of genesis at once, each answer awaited at most the
/// interval (10 s at most).
pub fn start(
    store: Arc<RwLock<Store>>,
    keyring: Arc<KeyRing>,
    witnesses: Vec<WitnessRecord>,
    interval_ms: u64,
) {
    if witnesses.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("witnessing".into())
        .spawn(move || run(&store, &keyring, &witnesses, Duration::from_millis(interval_ms)));
    if let Err(e) = spawned {
        tracing::error!("cannot start submitting to the witnesses: {e}");
    }
}

fn run(store: &RwLock<Store>, keyring: &KeyRing, witnesses: &[WitnessRecord], interval: Duration) {
    let timeout = interval.min(Duration::from_secs(10));
    // The size each witness holds, as last learned (0: ask it).
    let mut held = vec![0u64; witnesses.len()];
    loop {
        let started = Instant::now();
        let latest = store
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .latest_checkpoint()
            .cloned();
        if let Some(cp) = latest {
            std::thread::scope(|s| {
                for (w, h) in witnesses.iter().zip(held.iter_mut()) {
                    let cp = &cp;
                    s.spawn(move || *h = submit_once(store, keyring, w, cp, *h, timeout));
                }
            });
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
            // The proof was from the size the witness holds: a witness that
            // cannot verify it holds another log there.
            Err(SubmitError::Unprocessable { .. }) => Next::Fork,
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
