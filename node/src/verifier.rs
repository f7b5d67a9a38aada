//! A verifier beside the core: the signatures a gossiped message carries
//! (consensus votes and certificates, checkpoint shares and checkpoints,
//! an offer's authority signatures) are checked on the verifier's own
//! threads before the message reaches the core, which then finds them in
//! [`VerifiedSignatures`] instead of pairing on the task that drives
//! consensus. A message whose check fails goes on all the same: the core
//! checks it again, rejects it and bans its author.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};

use consensus::Message;
use provenance::crypto::{ConsortiumSignatureShare, VerifiedSignatures};
use provenance::{EntryBody, KeyRing, SigningPlan};
use storage::Store;
use tokio::sync::mpsc;

use crate::p2p::NetEvent;
use crate::wire::{ConsensusMessage, Gossip};

/// Hands gossip to the verifier's threads.
pub struct Verifier {
    tx: std_mpsc::SyncSender<NetEvent>,
}

/// Whether a gossiped message carries signatures worth checking off the
/// core.
pub fn carries_signatures(g: &Gossip) -> bool {
    matches!(
        g,
        Gossip::Consensus(Message::Vote(_) | Message::Certificate(_) | Message::Propose { .. })
            | Gossip::CheckpointShare { .. }
            | Gossip::Checkpoint(_)
            | Gossip::Offer { .. }
    )
}

/// Checks (and so remembers) every signature `g` carries; an offer's
/// against the signing plan the committed `state` gives it (at most one per
/// signer, as the core takes them).
pub fn check(
    keyring: &KeyRing,
    verified: &VerifiedSignatures,
    state: &dyn Fn(&EntryBody) -> Option<SigningPlan>,
    g: &Gossip,
) {
    let cert = |c: &consensus::Certificate<provenance::Bytes>| {
        verified.verify_signature(keyring, &c.subject.message(), c.certificate.as_slice());
    };
    match g {
        Gossip::Consensus(m) => match m as &ConsensusMessage {
            Message::Vote(v) => {
                let share = ConsortiumSignatureShare {
                    validator: v.signer,
                    share: v.share.clone(),
                };
                verified.verify_share(keyring, &share, &v.subject.message());
            }
            Message::Certificate(c) => cert(c),
            Message::Propose {
                parent,
                nullifications,
                ..
            } => parent.iter().chain(nullifications).for_each(cert),
            _ => {}
        },
        Gossip::CheckpointShare {
            checkpoint,
            validator,
            share,
            ..
        } => {
            let s = ConsortiumSignatureShare {
                validator: *validator,
                share: share.clone(),
            };
            verified.verify_share(keyring, &s, &checkpoint.signing_message());
        }
        Gossip::Checkpoint(signed) => {
            verified.verify_signature(
                keyring,
                &signed.checkpoint.signing_message(),
                signed.signature.as_slice(),
            );
        }
        Gossip::Offer { body, signatures, .. } => {
            let Some(plan) = state(body) else {
                return;
            };
            if signatures.len() > plan.requests.len() {
                return;
            }
            for sig in signatures {
                if let Some(r) = plan.requests.iter().find(|r| r.authority == sig.authority) {
                    if !verified.verify_authority(keyring, sig, &r.message) {
                        // A forged offer: the core stops at it too.
                        return;
                    }
                }
            }
        }
        _ => {}
    }
}

impl Verifier {
    /// `threads` verifier threads taking up to `queue` messages, handing
    /// each on to `out` once checked.
    pub fn spawn(
        keyring: Arc<KeyRing>,
        verified: Arc<VerifiedSignatures>,
        store: Arc<RwLock<Store>>,
        out: mpsc::Sender<NetEvent>,
        threads: usize,
        queue: usize,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std_mpsc::sync_channel::<NetEvent>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let (rx, keyring, verified, out) = (rx.clone(), keyring.clone(), verified.clone(), out.clone());
            let store = store.clone();
            std::thread::Builder::new()
                .name(format!("verifier-{i}"))
                .spawn(move || loop {
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(ev) = next else {
                        return;
                    };
                    if let NetEvent::Gossip { message, .. } = &ev {
                        // The plan under the store's read lock; the
                        // pairings after it is released.
                        let plan = |b: &EntryBody| b.signing_plan(crate::runtime::read(&store).state()).ok();
                        check(&keyring, &verified, &plan, message);
                    }
                    if out.blocking_send(ev).is_err() {
                        return;
                    }
                })?;
        }
        Ok(Self { tx })
    }

    /// Hands `ev` to the verifier; gives it back when its queue is full
    /// (the caller handles it itself).
    pub fn submit(&self, ev: NetEvent) -> Result<(), Box<NetEvent>> {
        self.tx.try_send(ev).map_err(|e| match e {
            std_mpsc::TrySendError::Full(ev) | std_mpsc::TrySendError::Disconnected(ev) => Box::new(ev),
        })
    }
}

#[cfg(test)]
mod tests {
    use consensus::{CertificateScheme, Subject, View, VoteKind};
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_vote_checked_beside_the_core_is_found_there_and_a_forged_one_is_not() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let desc = genesis::ConsortiumDescription::local_testnet(7100, 8100);
        let c = genesis::ceremony(&desc, provenance::Timestamp(1), &mut rng).expect("ceremony");
        let mut signers = c.dealt.signers().expect("signers");
        let keyring = Arc::new(c.dealt.keyring.clone());
        let verified = Arc::new(VerifiedSignatures::default());
        let subject = Subject {
            kind: VoteKind::Notarize,
            view: View(3),
            block: provenance::Digest([7; 32]),
        };
        let vote = |signer: u16, share: provenance::Bytes| {
            Gossip::Consensus(Message::Vote(consensus::Vote {
                subject,
                signer,
                share,
            }))
        };
        let good = signers[1]
            .consortium
            .as_ref()
            .expect("a validator")
            .sign_share(&subject.message())
            .share;
        let no_plan = |_: &EntryBody| None;
        assert!(carries_signatures(&vote(1, good.clone())));
        check(&keyring, &verified, &no_plan, &vote(1, good.clone()));
        assert_eq!(verified.len(), 1);
        // Claimed for another validator: checked, fails, not remembered.
        check(&keyring, &verified, &no_plan, &vote(2, good.clone()));
        assert_eq!(verified.len(), 1);
        // The engine's scheme finds the checked share.
        let scheme = consensus::BlsThreshold::with_cache(
            keyring.clone(),
            Arc::new(signers.remove(0).consortium.expect("a validator")),
            verified.clone(),
        );
        assert!(scheme.verify_share(1, &subject.message(), &good));
        assert!(!scheme.verify_share(2, &subject.message(), &good));
    }
}
