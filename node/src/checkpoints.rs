//! Checkpoint collection: each validator's share of the consortium
//! signature on a finalised block's checkpoint, with its Ed25519 note
//! signature, combined once q shares for this node's own checkpoint are in
//! (the certified checkpoint carries those validators' note signatures). A caller-driven state machine: the
//! caller hands it shares, its chain head and what it already stores, and
//! carries out the [`CheckpointAction`]s it returns. No I/O.
//!
//! Shares are kept per validator (the first verified share of each at a
//! height), so a share for another root cannot push honest shares out; a
//! share whose signature does not verify is reported and dropped.

use std::collections::BTreeMap;
use std::sync::Arc;

use provenance::crypto::{ConsortiumSignatureShare, VerifiedSignatures};
use provenance::{Bytes, Checkpoint, KeyRing, SignedCheckpoint, ValidatorSignature};

/// Heights above the head a share is kept for (a node a few blocks behind
/// its peers).
pub const AHEAD: u64 = 64;
/// Heights below the head a share is still taken for.
pub const BEHIND: u64 = 256;

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointAction {
    /// q shares combined: store this certified checkpoint.
    Certified(SignedCheckpoint),
    /// A peer is still collecting for a height certified here: send it the
    /// certified checkpoint.
    Rebroadcast(SignedCheckpoint),
    /// The validator sent a share whose signature does not verify.
    Misbehaved {
        /// The validator.
        validator: u16,
    },
}

/// Shares at one height.
#[derive(Debug, Default)]
struct Height {
    /// The checkpoint this node signed, once it has.
    ours: Option<Checkpoint>,
    /// Each validator's first verified share and note signature, with what
    /// it signed.
    shares: BTreeMap<u16, (Checkpoint, Bytes, Bytes)>,
}

/// Collects checkpoint shares.
#[derive(Debug)]
pub struct Collector {
    me: u16,
    heights: BTreeMap<u64, Height>,
    verified: Arc<VerifiedSignatures>,
}

impl Collector {
    /// A collector for validator `me`.
    pub fn new(me: u16) -> Self {
        Self {
            me,
            heights: BTreeMap::new(),
            verified: Arc::default(),
        }
    }

    /// The collector, taking shares found in `verified` (checked before,
    /// on another thread) without a pairing.
    pub fn with_cache(mut self, verified: Arc<VerifiedSignatures>) -> Self {
        self.verified = verified;
        self
    }

    /// Heights with shares being collected.
    pub fn collecting(&self) -> usize {
        self.heights.len()
    }

    /// Takes `validator`'s share of `cp`. `head` is this node's finalised
    /// height; `stored` the certified checkpoint it already holds at
    /// `cp.height`, if any. This node's own share and note are trusted (it
    /// made them); a peer's share is verified against the consortium key
    /// set and its note signature against its node key in genesis.
    #[allow(clippy::too_many_arguments)]
    pub fn on_share(
        &mut self,
        keyring: &KeyRing,
        head: u64,
        stored: Option<&SignedCheckpoint>,
        cp: Checkpoint,
        validator: u16,
        share: Bytes,
        note: Bytes,
    ) -> Vec<CheckpointAction> {
        let height = cp.height;
        if let Some(signed) = stored {
            if validator != self.me && signed.checkpoint == cp {
                return vec![CheckpointAction::Rebroadcast(signed.clone())];
            }
            return Vec::new();
        }
        if height > head + AHEAD || height + BEHIND < head {
            return Vec::new();
        }
        let mut out = Vec::new();
        if validator != self.me {
            let s = ConsortiumSignatureShare {
                validator,
                share: share.clone(),
            };
            let n = ValidatorSignature {
                validator,
                signature: note.clone(),
            };
            if !keyring.log().verify_validator(&cp, &n)
                || !self.verified.verify_share(keyring, &s, &cp.signing_message())
            {
                return vec![CheckpointAction::Misbehaved { validator }];
            }
        }
        let h = self.heights.entry(height).or_default();
        if validator == self.me {
            h.ours = Some(cp.clone());
        }
        h.shares.entry(validator).or_insert((cp, share, note));
        if height <= head {
            out.extend(Self::combine(keyring, h).map(CheckpointAction::Certified));
        }
        self.prune(head);
        out
    }

    /// The chain's head moved to `head`: shares collected ahead of it may
    /// now certify.
    pub fn on_head(&mut self, keyring: &KeyRing, head: u64) -> Vec<CheckpointAction> {
        let out = self
            .heights
            .range_mut(..=head)
            .filter_map(|(_, h)| Self::combine(keyring, h))
            .map(CheckpointAction::Certified)
            .collect();
        self.prune(head);
        out
    }

    /// A certified checkpoint at `height` is stored: stop collecting there.
    pub fn stored(&mut self, height: u64) {
        self.heights.remove(&height);
    }

    /// The checkpoint to certify at a height and its shares, once more than
    /// the threshold agree: this node's own checkpoint if it signed one,
    /// otherwise the one most shares name (the store still checks its root
    /// against the log).
    fn combine(keyring: &KeyRing, h: &Height) -> Option<SignedCheckpoint> {
        let target = match &h.ours {
            Some(cp) => cp.clone(),
            None => {
                let mut count: BTreeMap<Vec<u8>, (usize, &Checkpoint)> = BTreeMap::new();
                for (cp, _, _) in h.shares.values() {
                    count.entry(cp.signing_message()).or_insert((0, cp)).0 += 1;
                }
                count.into_values().max_by_key(|(n, _)| *n)?.1.clone()
            }
        };
        let agreeing: Vec<(&u16, &Bytes, &Bytes)> = h
            .shares
            .iter()
            .filter(|(_, (cp, _, _))| *cp == target)
            .map(|(v, (_, s, n))| (v, s, n))
            .collect();
        if agreeing.len() <= keyring.consortium_threshold() {
            return None;
        }
        let shares: Vec<ConsortiumSignatureShare> = agreeing
            .iter()
            .map(|(v, s, _)| ConsortiumSignatureShare {
                validator: **v,
                share: (*s).clone(),
            })
            .collect();
        let signature = keyring.combine_verified_consortium_shares(&shares).ok()?;
        Some(SignedCheckpoint {
            checkpoint: target,
            signature,
            // q of them stand for the consortium: a note carries no more.
            validators: agreeing
                .iter()
                .take(keyring.log().q())
                .map(|(v, _, n)| ValidatorSignature {
                    validator: **v,
                    signature: (*n).clone(),
                })
                .collect(),
        })
    }

    fn prune(&mut self, head: u64) {
        let keep = head.saturating_sub(BEHIND);
        self.heights = self.heights.split_off(&keep);
    }
}

#[cfg(test)]
mod tests {
    use provenance::{Canonical, Digest};
    use rand::SeedableRng;

    use super::*;

    struct Consortium {
        keyring: KeyRing,
        nodes: Vec<provenance::genesis::NodeSigners>,
    }

    static ORIGIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

    fn consortium() -> Consortium {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let desc = genesis::ConsortiumDescription::local_testnet(7100, 8100);
        let c = genesis::ceremony(&desc, provenance::Timestamp(1), &mut rng).expect("ceremony");
        let nodes = c.dealt.signers().expect("signers");
        Consortium {
            keyring: c.dealt.keyring.clone(),
            nodes,
        }
    }

    fn cp(height: u64, root: u8) -> Checkpoint {
        Checkpoint {
            version: Checkpoint::VERSION,
            origin: ORIGIN
                .get_or_init(|| consortium().keyring.log().origin().to_string())
                .clone(),
            size: height * 3,
            root: Digest([root; 32]),
            height,
            time: provenance::Timestamp(height * 1000),
            index: Digest([root ^ 0xff; 32]),
        }
    }

    fn share(c: &Consortium, v: u16, cp: &Checkpoint) -> Bytes {
        c.nodes
            .iter()
            .find(|n| n.validator == Some(v))
            .and_then(|n| n.consortium.as_ref())
            .expect("a validator")
            .sign_share(&cp.signing_message())
            .share
    }

    fn note(c: &Consortium, v: u16, cp: &Checkpoint) -> Bytes {
        c.nodes
            .iter()
            .find(|n| n.validator == Some(v))
            .and_then(|n| n.sign_note(cp))
            .expect("a validator")
            .signature
    }

    fn certified(actions: &[CheckpointAction]) -> Vec<&SignedCheckpoint> {
        actions
            .iter()
            .filter_map(|a| match a {
                CheckpointAction::Certified(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn q_shares_certify_our_checkpoint_and_the_signature_verifies() {
        let c = consortium();
        let mut col = Collector::new(0);
        let x = cp(5, 1);
        assert!(col
            .on_share(
                &c.keyring,
                5,
                None,
                x.clone(),
                0,
                share(&c, 0, &x),
                note(&c, 0, &x)
            )
            .is_empty());
        assert!(col
            .on_share(
                &c.keyring,
                5,
                None,
                x.clone(),
                1,
                share(&c, 1, &x),
                note(&c, 1, &x)
            )
            .is_empty());
        let a = col.on_share(
            &c.keyring,
            5,
            None,
            x.clone(),
            2,
            share(&c, 2, &x),
            note(&c, 2, &x),
        );
        let got = certified(&a);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].checkpoint, x);
        assert!(got[0].verify(&c.keyring).is_ok());
        // The three validators' note signatures stand on their own too.
        let mut notes_only = got[0].clone();
        assert_eq!(notes_only.validators.len(), 3);
        notes_only.signature = Bytes::default();
        assert!(notes_only.verify(&c.keyring).is_ok());
    }

    #[test]
    fn a_share_with_a_forged_note_signature_is_reported_and_not_counted() {
        let c = consortium();
        let mut col = Collector::new(0);
        let x = cp(5, 1);
        col.on_share(
            &c.keyring,
            5,
            None,
            x.clone(),
            0,
            share(&c, 0, &x),
            note(&c, 0, &x),
        );
        col.on_share(
            &c.keyring,
            5,
            None,
            x.clone(),
            1,
            share(&c, 1, &x),
            note(&c, 1, &x),
        );
        let mut forged = note(&c, 2, &x);
        forged.0[0] ^= 1;
        let a = col.on_share(&c.keyring, 5, None, x.clone(), 2, share(&c, 2, &x), forged);
        assert_eq!(a, vec![CheckpointAction::Misbehaved { validator: 2 }]);
        let a = col.on_share(
            &c.keyring,
            5,
            None,
            x.clone(),
            3,
            share(&c, 3, &x),
            note(&c, 2, &x),
        );
        assert_eq!(
            a,
            vec![CheckpointAction::Misbehaved { validator: 3 }],
            "another's note"
        );
    }

    #[test]
    fn a_share_with_a_bad_signature_is_reported_and_not_counted() {
        let c = consortium();
        let mut col = Collector::new(0);
        let x = cp(5, 1);
        col.on_share(
            &c.keyring,
            5,
            None,
            x.clone(),
            0,
            share(&c, 0, &x),
            note(&c, 0, &x),
        );
        // Validator 1's share presented as validator 2's, and garbage.
        let a = col.on_share(
            &c.keyring,
            5,
            None,
            x.clone(),
            2,
            share(&c, 1, &x),
            note(&c, 1, &x),
        );
        assert_eq!(a, vec![CheckpointAction::Misbehaved { validator: 2 }]);
        let a = col.on_share(
            &c.keyring,
            5,
            None,
            x.clone(),
            3,
            Bytes(vec![7; 96]),
            note(&c, 3, &x),
        );
        assert_eq!(a, vec![CheckpointAction::Misbehaved { validator: 3 }]);
        let a = col.on_share(
            &c.keyring,
            5,
            None,
            x.clone(),
            1,
            share(&c, 1, &x),
            note(&c, 1, &x),
        );
        assert!(certified(&a).is_empty(), "two good shares are not q = 3");
        let a = col.on_share(
            &c.keyring,
            5,
            None,
            x.clone(),
            2,
            share(&c, 2, &x),
            note(&c, 2, &x),
        );
        assert_eq!(certified(&a).len(), 1, "validator 2's real share still counts");
    }

    #[test]
    fn a_share_for_another_root_does_not_push_out_honest_ones() {
        let c = consortium();
        let mut col = Collector::new(0);
        let good = cp(5, 1);
        let bogus = cp(5, 9);
        // A Byzantine validator's valid share of another root arrives first.
        assert!(col
            .on_share(
                &c.keyring,
                5,
                None,
                bogus.clone(),
                3,
                share(&c, 3, &bogus),
                note(&c, 3, &bogus)
            )
            .is_empty());
        col.on_share(
            &c.keyring,
            5,
            None,
            good.clone(),
            1,
            share(&c, 1, &good),
            note(&c, 1, &good),
        );
        col.on_share(
            &c.keyring,
            5,
            None,
            good.clone(),
            2,
            share(&c, 2, &good),
            note(&c, 2, &good),
        );
        let a = col.on_share(
            &c.keyring,
            5,
            None,
            good.clone(),
            0,
            share(&c, 0, &good),
            note(&c, 0, &good),
        );
        let got = certified(&a);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].checkpoint, good);
    }

    #[test]
    fn late_shares_get_the_certified_checkpoint_back_and_early_ones_wait_for_the_head() {
        let c = consortium();
        let mut col = Collector::new(0);
        let x = cp(8, 2);
        // Shares for a height this node has not finalised yet are kept...
        for v in [1u16, 2, 3] {
            assert!(certified(&col.on_share(
                &c.keyring,
                6,
                None,
                x.clone(),
                v,
                share(&c, v, &x),
                note(&c, v, &x)
            ))
            .is_empty());
        }
        // ...and certify when the head reaches it.
        let a = col.on_head(&c.keyring, 8);
        let got = certified(&a);
        assert_eq!(got.len(), 1);
        let signed = got[0].clone();
        col.stored(8);
        assert_eq!(col.collecting(), 0);
        // A late share for a stored height: the peer gets the certificate.
        let a = col.on_share(
            &c.keyring,
            9,
            Some(&signed),
            x.clone(),
            3,
            share(&c, 3, &x),
            note(&c, 3, &x),
        );
        assert_eq!(a, vec![CheckpointAction::Rebroadcast(signed.clone())]);
        // Our own late share needs nothing.
        assert!(col
            .on_share(
                &c.keyring,
                9,
                Some(&signed),
                x.clone(),
                0,
                share(&c, 0, &x),
                note(&c, 0, &x)
            )
            .is_empty());
    }

    #[test]
    fn shares_far_from_the_head_are_ignored_and_old_heights_pruned() {
        let c = consortium();
        let mut col = Collector::new(0);
        let far = cp(100 + AHEAD + 1, 1);
        assert!(col
            .on_share(
                &c.keyring,
                100,
                None,
                far.clone(),
                1,
                share(&c, 1, &far),
                note(&c, 1, &far)
            )
            .is_empty());
        assert_eq!(col.collecting(), 0);
        let near = cp(100, 1);
        col.on_share(
            &c.keyring,
            100,
            None,
            near.clone(),
            1,
            share(&c, 1, &near),
            note(&c, 1, &near),
        );
        assert_eq!(col.collecting(), 1);
        col.on_head(&c.keyring, 100 + BEHIND + 1);
        assert_eq!(col.collecting(), 0);
    }
}
