//! Signing: an authority's node holds its own part of its authority's keys
//! (a BLS key share, its own Ed25519 and ML-DSA-65 keys) and, if it is a
//! validator, a share of the consortium key. An authority of m nodes with
//! threshold t signs when t+1 of them sign: their shares combine
//! ([`super::AuthorityKeys::combine`]).

use ml_dsa::{KeyGen, MlDsa65};
use serde::{Deserialize, Serialize};

use super::{
    keyring::pop_message, AuthoritySignature, KeyId, SignatureError, SignatureScheme, ML_DSA_CONTEXT,
};
use crate::digest::Bytes;
use crate::ids::AuthorityId;

/// One node's share of its authority's signature under one scheme: a BLS
/// signature share, or the node's own Ed25519 or ML-DSA-65 signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorityShare {
    /// The authority.
    pub authority: AuthorityId,
    /// The node's share index among the authority's nodes.
    pub index: u16,
    /// The scheme.
    pub scheme: SignatureScheme,
    /// The share's bytes.
    pub share: Bytes,
}

/// One validator's share of a consortium signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsortiumSignatureShare {
    /// The validator index (its share index in the consortium key set).
    pub validator: u16,
    /// The share (96 bytes).
    pub share: Bytes,
}

/// An authority's signing agent: the keys one of its nodes holds. Secret
/// material never appears in `Debug` output.
pub struct AuthoritySigner {
    authority: AuthorityId,
    bls_threshold: u16,
    members: u16,
    bls_index: u16,
    bls_share: blsttc::SecretKeyShare,
    ed25519: ed25519_dalek::SigningKey,
    ml_dsa: Box<ml_dsa::KeyPair<MlDsa65>>,
    key_ids: [KeyId; 3],
}

impl std::fmt::Debug for AuthoritySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthoritySigner")
            .field("authority", &self.authority)
            .field("bls_threshold", &self.bls_threshold)
            .field("bls_index", &self.bls_index)
            .finish_non_exhaustive()
    }
}

/// Derives the ML-DSA-65 key pair from its 32-byte seed (FIPS 204 ξ).
pub fn ml_dsa_keypair(seed: &[u8; 32]) -> ml_dsa::KeyPair<MlDsa65> {
    MlDsa65::key_gen_internal(&(*seed).into())
}

/// The encoded ML-DSA-65 public key of a seed.
pub fn ml_dsa_public_key(seed: &[u8; 32]) -> Vec<u8> {
    ml_dsa_keypair(seed).verifying_key().encode().to_vec()
}

/// Signs a BLS proof of possession for a public key with its (full) secret
/// key. Used by the key ceremony.
pub fn bls_proof_of_possession(secret: &blsttc::SecretKey) -> [u8; 96] {
    secret
        .sign(pop_message(&secret.public_key().to_bytes()))
        .to_bytes()
}

impl AuthoritySigner {
    /// Builds node `index`'s signer for the authority whose genesis keys
    /// are `keys`, from its secret key material: its BLS share (for t = 0
    /// the share is the key itself), its own Ed25519 key and ML-DSA seed.
    /// The keys are not checked against genesis here
    /// (`NodeSecrets::signers` does).
    pub fn new(
        keys: &super::AuthorityKeys,
        index: u16,
        bls_share: [u8; 32],
        ed25519_secret: [u8; 32],
        ml_dsa_seed: [u8; 32],
    ) -> Result<Self, SignatureError> {
        let bls_share = blsttc::SecretKeyShare::from_bytes(bls_share)
            .map_err(|e| super::malformed("BLS secret key share", format!("{e:?}")))?;
        let ed25519 = ed25519_dalek::SigningKey::from_bytes(&ed25519_secret);
        let ml_dsa = Box::new(ml_dsa_keypair(&ml_dsa_seed));
        let key_ids = SignatureScheme::ALL.map(|s| keys.key_id(s));
        Ok(Self {
            authority: keys.id.clone(),
            bls_threshold: keys.threshold() as u16,
            members: keys.members() as u16,
            bls_index: index,
            bls_share,
            ed25519,
            ml_dsa,
            key_ids,
        })
    }

    /// The authority this signer acts for.
    pub fn authority(&self) -> &AuthorityId {
        &self.authority
    }

    /// The authority's threshold t: t+1 of its nodes sign for it.
    pub fn threshold(&self) -> u16 {
        self.bls_threshold
    }

    /// This node's share index among its authority's nodes.
    pub fn index(&self) -> u16 {
        self.bls_index
    }

    /// How many nodes its authority runs (m).
    pub fn members(&self) -> usize {
        usize::from(self.members)
    }

    /// Signs `message` under `scheme` for the authority, which this node
    /// can do alone only when t = 0. For t > 0 the authority's signature
    /// needs t+1 nodes: each signs [`Self::sign_share`] and the shares
    /// combine ([`super::KeyRing::combine_authority_shares`]); this returns
    /// [`SignatureError::ThresholdKey`].
    pub fn sign(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
    ) -> Result<AuthoritySignature, SignatureError> {
        if self.bls_threshold > 0 {
            return Err(SignatureError::ThresholdKey {
                authority: self.authority.clone(),
                threshold: self.bls_threshold,
            });
        }
        let share = self.sign_share(scheme, message)?;
        // With t = 0 every BLS share equals the key; a single node's
        // Ed25519 or ML-DSA signature is the authority's, in the multi-node
        // layout when it runs several nodes.
        let signature = if scheme == SignatureScheme::Bls12381 || self.members == 1 {
            share.share
        } else {
            let mut b = share.index.to_be_bytes().to_vec();
            b.extend_from_slice(&share.share.0);
            Bytes(b)
        };
        Ok(AuthoritySignature {
            authority: self.authority.clone(),
            scheme,
            key: self.key_ids[scheme.code() as usize - 1],
            signature,
        })
    }

    /// This node's share of the authority's signature over `message` under
    /// `scheme`.
    pub fn sign_share(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
    ) -> Result<AuthorityShare, SignatureError> {
        let share = match scheme {
            SignatureScheme::Bls12381 => self.bls_share.sign(message).to_bytes().to_vec(),
            SignatureScheme::Ed25519 => {
                use ed25519_dalek::Signer;
                self.ed25519.sign(message).to_bytes().to_vec()
            }
            SignatureScheme::MlDsa65 => self
                .ml_dsa
                .signing_key()
                .sign_deterministic(message, ML_DSA_CONTEXT)
                .map_err(|e| super::malformed("ML-DSA-65 message", e))?
                .encode()
                .to_vec(),
        };
        Ok(AuthorityShare {
            authority: self.authority.clone(),
            index: self.bls_index,
            scheme,
            share: Bytes(share),
        })
    }
}

/// A validator's share of the consortium key.
pub struct ConsortiumSigner {
    validator: u16,
    share: blsttc::SecretKeyShare,
}

impl std::fmt::Debug for ConsortiumSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsortiumSigner")
            .field("validator", &self.validator)
            .finish_non_exhaustive()
    }
}

impl ConsortiumSigner {
    /// Builds a signer from validator `validator`'s secret share.
    pub fn new(validator: u16, share: [u8; 32]) -> Result<Self, SignatureError> {
        let share = blsttc::SecretKeyShare::from_bytes(share)
            .map_err(|e| super::malformed("consortium key share", format!("{e:?}")))?;
        Ok(Self { validator, share })
    }

    /// The validator index.
    pub fn validator(&self) -> u16 {
        self.validator
    }

    /// This validator's share of the consortium signature over `message`.
    pub fn sign_share(&self, message: &[u8]) -> ConsortiumSignatureShare {
        ConsortiumSignatureShare {
            validator: self.validator,
            share: Bytes(self.share.sign(message).to_bytes().to_vec()),
        }
    }
}
