//! Certificate schemes: how votes are signed and combined. The engine is
//! generic over them; [`BlsThreshold`] is the real one (the consortium's
//! threshold BLS key from genesis), and the simulator has a fast stand-in.

use std::fmt::Debug;
use std::sync::Arc;

use provenance::crypto::{ConsortiumSignatureShare, ConsortiumSigner, VerifiedSignatures};
use provenance::{Bytes, KeyRing};
use serde::{de::DeserializeOwned, Serialize};

use crate::types::ValidatorIndex;

/// A scheme in which each validator signs shares and a quorum of shares
/// combines into one certificate.
pub trait CertificateScheme {
    /// One validator's signature share.
    type Share: Clone + Eq + Debug + Serialize + DeserializeOwned;
    /// A combined certificate.
    type Certificate: Clone + Eq + Debug + Serialize + DeserializeOwned;
    /// This validator's share over `message`.
    fn sign(&self, message: &[u8]) -> Self::Share;
    /// Whether `share` is `signer`'s valid share over `message`.
    fn verify_share(&self, signer: ValidatorIndex, message: &[u8], share: &Self::Share) -> bool;
    /// Combines shares the engine has verified one by one (at least a
    /// quorum) into a certificate.
    fn combine(&self, message: &[u8], shares: &[(ValidatorIndex, Self::Share)]) -> Option<Self::Certificate>;
    /// Whether `certificate` certifies `message`.
    fn verify_certificate(&self, message: &[u8], certificate: &Self::Certificate) -> bool;
}

/// The consortium's threshold BLS key: shares are 96-byte BLS signature
/// shares, a certificate is one combined 96-byte signature that a light
/// client checks with the group key from genesis.
#[derive(Clone)]
pub struct BlsThreshold {
    keyring: Arc<KeyRing>,
    /// This validator's share; none for an observer, which never votes.
    signer: Option<Arc<ConsortiumSigner>>,
    verified: Arc<VerifiedSignatures>,
}

impl Debug for BlsThreshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlsThreshold")
            .field("validator", &self.signer.as_ref().map(|s| s.validator()))
            .finish()
    }
}

impl BlsThreshold {
    /// The scheme of validator `signer` under `keyring`.
    pub fn new(keyring: Arc<KeyRing>, signer: Arc<ConsortiumSigner>) -> Self {
        Self::with_cache(keyring, signer, Arc::default())
    }

    /// The scheme, with shares and certificates found in `verified` (checked
    /// before, on another thread) taken without a pairing.
    pub fn with_cache(
        keyring: Arc<KeyRing>,
        signer: Arc<ConsortiumSigner>,
        verified: Arc<VerifiedSignatures>,
    ) -> Self {
        Self {
            keyring,
            signer: Some(signer),
            verified,
        }
    }

    /// The scheme of an observer (a signing member): it checks shares and
    /// certificates but holds no share and never votes.
    pub fn observer(keyring: Arc<KeyRing>, verified: Arc<VerifiedSignatures>) -> Self {
        Self {
            keyring,
            signer: None,
            verified,
        }
    }
}

impl CertificateScheme for BlsThreshold {
    type Share = Bytes;
    type Certificate = Bytes;
    fn sign(&self, message: &[u8]) -> Bytes {
        // The engine never asks an observer to sign ([`crate::Config::votes`]);
        // were it asked, an empty share verifies for no one.
        self.signer
            .as_ref()
            .map(|s| s.sign_share(message).share)
            .unwrap_or_default()
    }
    fn verify_share(&self, signer: ValidatorIndex, message: &[u8], share: &Bytes) -> bool {
        self.verified.verify_share(
            &self.keyring,
            &ConsortiumSignatureShare {
                validator: signer,
                share: share.clone(),
            },
            message,
        )
    }
    fn combine(&self, _message: &[u8], shares: &[(ValidatorIndex, Bytes)]) -> Option<Bytes> {
        let shares: Vec<ConsortiumSignatureShare> = shares
            .iter()
            .map(|(v, s)| ConsortiumSignatureShare {
                validator: *v,
                share: s.clone(),
            })
            .collect();
        // Every share was verified by `verify_share` when its vote arrived,
        // so interpolation alone gives the group signature: no pairing here.
        self.keyring.combine_verified_consortium_shares(&shares).ok()
    }
    fn verify_certificate(&self, message: &[u8], certificate: &Bytes) -> bool {
        self.verified
            .verify_signature(&self.keyring, message, certificate.as_slice())
    }
}
