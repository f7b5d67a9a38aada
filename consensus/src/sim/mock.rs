//! The simulator's stand-ins: a fast deterministic certificate scheme and a
//! toy application.

use std::sync::Arc;

use provenance::Digest;
use sha3::{Digest as _, Sha3_256};

use crate::engine::Application;
use crate::scheme::CertificateScheme;
use crate::types::{Height, Proposal, ValidatorIndex, View};

/// A keyed-hash stand-in for threshold BLS, for the simulator's many seeds:
/// a share is SHA3(key_i || message), a certificate the list of at least a
/// quorum of distinct valid shares. Every validator's key is known to every
/// other, so it proves nothing outside the simulator; the same scenarios
/// also run with [`crate::BlsThreshold`].
#[derive(Debug, Clone)]
pub struct MockScheme {
    me: ValidatorIndex,
    keys: Arc<Vec<[u8; 32]>>,
    quorum: usize,
}

impl MockScheme {
    /// The scheme of validator `me` among `n`, certificates needing `quorum`.
    pub fn new(me: ValidatorIndex, n: u16, quorum: usize) -> Self {
        let keys = (0..n)
            .map(|i| {
                let mut h = Sha3_256::new();
                h.update(b"govtune/sim/key");
                h.update(i.to_be_bytes());
                h.finalize().into()
            })
            .collect();
        Self {
            me,
            keys: Arc::new(keys),
            quorum,
        }
    }

    fn share_of(&self, i: ValidatorIndex, message: &[u8]) -> Option<Digest> {
        let key = self.keys.get(i as usize)?;
        let mut h = Sha3_256::new();
        h.update(key);
        h.update(message);
        Some(Digest(h.finalize().into()))
    }
}

impl CertificateScheme for MockScheme {
    type Share = Digest;
    type Certificate = Vec<(ValidatorIndex, Digest)>;
    fn sign(&self, message: &[u8]) -> Digest {
        self.share_of(self.me, message).unwrap_or_default()
    }
    fn verify_share(&self, signer: ValidatorIndex, message: &[u8], share: &Digest) -> bool {
        self.share_of(signer, message).as_ref() == Some(share)
    }
    fn combine(&self, _message: &[u8], shares: &[(ValidatorIndex, Digest)]) -> Option<Self::Certificate> {
        (shares.len() >= self.quorum).then(|| shares[..self.quorum].to_vec())
    }
    fn verify_certificate(&self, message: &[u8], c: &Self::Certificate) -> bool {
        let mut seen = std::collections::BTreeSet::new();
        c.len() >= self.quorum
            && c.iter()
                .all(|(i, s)| seen.insert(*i) && self.verify_share(*i, message, s))
    }
}

/// A toy application: payloads are numbers; a payload of `u64::MAX` is
/// "an incomplete event", which every validator refuses.
/// Blocks it is told of are "kept on disk": they survive a crash and are
/// handed back through [`crate::Engine::restore_blocks`], as a node does.
#[derive(Debug, Clone)]
pub struct MockApp {
    me: ValidatorIndex,
    /// Blocks observed (the simulated disk).
    pub kept: Vec<Proposal<u64>>,
}

impl MockApp {
    /// The application of validator `me`.
    pub fn new(me: ValidatorIndex) -> Self {
        Self { me, kept: Vec::new() }
    }
}

impl Application for MockApp {
    type Payload = u64;
    fn propose(&mut self, parent: &Digest, height: Height, view: View, _stamp: u64) -> Option<u64> {
        let mut h = Sha3_256::new();
        h.update(parent.0);
        h.update(height.0.to_be_bytes());
        h.update(view.0.to_be_bytes());
        h.update(self.me.to_be_bytes());
        let d: [u8; 32] = h.finalize().into();
        Some(u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) & !1)
    }
    fn verify(&mut self, proposal: &Proposal<u64>) -> bool {
        proposal.payload != u64::MAX
    }
    fn keep(&mut self, proposal: &Proposal<u64>) {
        if !self.kept.contains(proposal) {
            self.kept.push(proposal.clone());
        }
    }
}
