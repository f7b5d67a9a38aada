//! Signatures already verified (consortium shares and signatures, authority
//! signatures), remembered by a digest of (signer, message, signature), so
//! a check done on one thread
//! (a verifier pool beside the task that drives consensus) is a lookup on
//! another. Only a successful verification inserts; the set is bounded
//! (oldest forgotten first).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use super::{AuthoritySignature, ConsortiumSignatureShare, KeyRing};
use crate::digest::{tagged_hash_parts, Digest, ObjectKind};

/// Verified consortium shares and signatures.
#[derive(Debug)]
pub struct VerifiedSignatures {
    capacity: usize,
    inner: Mutex<(HashSet<Digest>, VecDeque<Digest>)>,
}

impl Default for VerifiedSignatures {
    fn default() -> Self {
        Self::new(1 << 16)
    }
}

/// The signer slot of a combined consortium signature.
const GROUP: u16 = u16::MAX;

/// The cache key: every part length-prefixed, so no two (signer, message,
/// signature) triples share one.
fn key(signer: u16, message: &[u8], signature: &[u8]) -> Digest {
    let (m, s) = (
        (message.len() as u64).to_be_bytes(),
        (signature.len() as u64).to_be_bytes(),
    );
    tagged_hash_parts(
        ObjectKind::Section,
        &[
            b"govtune/verified-consortium-signature",
            &signer.to_be_bytes(),
            &m,
            message,
            &s,
            signature,
        ],
    )
}

impl VerifiedSignatures {
    /// A cache of at most `capacity` verified signatures.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    fn known(&self, k: &Digest) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.contains(k)
    }

    fn remember(&self, k: Digest) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.0.insert(k) {
            g.1.push_back(k);
            while g.1.len() > self.capacity {
                if let Some(old) = g.1.pop_front() {
                    g.0.remove(&old);
                }
            }
        }
    }

    /// [`KeyRing::verify_consortium_share`], remembered.
    pub fn verify_share(&self, keyring: &KeyRing, share: &ConsortiumSignatureShare, message: &[u8]) -> bool {
        let k = key(share.validator, message, share.share.as_slice());
        if self.known(&k) {
            return true;
        }
        let ok = keyring.verify_consortium_share(share, message);
        if ok {
            self.remember(k);
        }
        ok
    }

    /// [`KeyRing::verify_consortium`], remembered.
    pub fn verify_signature(&self, keyring: &KeyRing, message: &[u8], signature: &[u8]) -> bool {
        let k = key(GROUP, message, signature);
        if self.known(&k) {
            return true;
        }
        let ok = keyring.verify_consortium(message, signature);
        if ok {
            self.remember(k);
        }
        ok
    }

    /// [`KeyRing::verify`] of an authority's signature, remembered.
    pub fn verify_authority(&self, keyring: &KeyRing, sig: &AuthoritySignature, message: &[u8]) -> bool {
        let k = tagged_hash_parts(
            ObjectKind::Section,
            &[
                b"govtune/verified-authority-signature",
                &key(GROUP, message, &crate::codec::encode(sig)).0,
            ],
        );
        if self.known(&k) {
            return true;
        }
        let ok = keyring.verify(sig, message).is_ok();
        if ok {
            self.remember(k);
        }
        ok
    }

    /// Signatures remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_verified_is_remembered_and_the_set_is_bounded() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let dealt = crate::genesis::deal(
            &crate::genesis::ConsortiumDescription::local_testnet(7100, 8100),
            crate::Timestamp(1),
            &mut rng,
        )
        .expect("deal");
        let signers = dealt.signers().expect("signers");
        let k = &dealt.keyring;
        let cache = VerifiedSignatures::new(2);
        let good = signers[0]
            .consortium
            .as_ref()
            .expect("a validator")
            .sign_share(b"m1");
        let mut forged = good.clone();
        forged.validator = 1;
        assert!(!cache.verify_share(k, &forged, b"m1"));
        assert!(cache.is_empty(), "a failure is not remembered");
        assert!(cache.verify_share(k, &good, b"m1"));
        assert_eq!(cache.len(), 1);
        // The same bytes under another message or signer are not hits.
        assert!(!cache.verify_share(k, &good, b"m2"));
        assert!(!cache.verify_share(k, &forged, b"m1"));
        for (i, m) in [b"m3", b"m4", b"m5"].iter().enumerate() {
            let s = signers[i % 3]
                .consortium
                .as_ref()
                .expect("a validator")
                .sign_share(*m);
            assert!(cache.verify_share(k, &s, *m));
        }
        assert_eq!(cache.len(), 2, "bounded");
        assert!(
            !cache.verify_signature(k, b"m1", good.share.as_slice()),
            "a share is no group signature"
        );
    }
}
