//! Signing: an authority's node holds its authority's keys (a BLS key share,
//! the Ed25519 and ML-DSA-65 keys) and a share of the consortium key.

use ml_dsa::{KeyGen, MlDsa65};
use serde::{Deserialize, Serialize};

use super::{
    keyring::pop_message, AuthoritySignature, KeyId, SignatureError, SignatureScheme, ML_DSA_CONTEXT,
};
use crate::digest::Bytes;
use crate::ids::AuthorityId;

/// One node's share of a threshold authority's BLS signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlsSignatureShare {
    /// The authority.
    pub authority: AuthorityId,
    /// The share index within the authority's key set.
    pub index: u16,
    /// The share (96 bytes).
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
    /// Builds a signer from secret key material.
    ///
    /// * `bls_group_key` is the authority's BLS group public key (to name it),
    ///   `bls_threshold` its threshold t, `bls_index`/`bls_share` this node's
    ///   share (for t = 0 the share is the key itself).
    pub fn new(
        authority: AuthorityId,
        bls_group_key: [u8; 48],
        bls_threshold: u16,
        bls_index: u16,
        bls_share: [u8; 32],
        ed25519_secret: [u8; 32],
        ml_dsa_seed: [u8; 32],
    ) -> Result<Self, SignatureError> {
        let bls_share = blsttc::SecretKeyShare::from_bytes(bls_share)
            .map_err(|e| super::malformed("BLS secret key share", format!("{e:?}")))?;
        let ed25519 = ed25519_dalek::SigningKey::from_bytes(&ed25519_secret);
        let ml_dsa = Box::new(ml_dsa_keypair(&ml_dsa_seed));
        let key_ids = [
            KeyId::of(SignatureScheme::Bls12381, &bls_group_key),
            KeyId::of(SignatureScheme::Ed25519, ed25519.verifying_key().as_bytes()),
            KeyId::of(SignatureScheme::MlDsa65, &ml_dsa.verifying_key().encode()),
        ];
        Ok(Self {
            authority,
            bls_threshold,
            bls_index,
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

    /// Signs `message` under `scheme`. For a threshold BLS authority
    /// (t > 0) a full signature needs t+1 nodes: use [`Self::sign_share`] and
    /// [`super::KeyRing::combine_authority_shares`]; this returns
    /// [`SignatureError::ThresholdKey`].
    pub fn sign(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
    ) -> Result<AuthoritySignature, SignatureError> {
        let signature = match scheme {
            SignatureScheme::Bls12381 => {
                if self.bls_threshold > 0 {
                    return Err(SignatureError::ThresholdKey {
                        authority: self.authority.clone(),
                        threshold: self.bls_threshold,
                    });
                }
                // With t = 0 every share equals the key, so the share's
                // signature is the authority's signature.
                self.bls_share.sign(message).to_bytes().to_vec()
            }
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
        Ok(AuthoritySignature {
            authority: self.authority.clone(),
            scheme,
            key: self.key_ids[scheme.code() as usize - 1],
            signature: Bytes(signature),
        })
    }

    /// This node's share of the authority's BLS signature over `message`.
    pub fn sign_share(&self, message: &[u8]) -> BlsSignatureShare {
        BlsSignatureShare {
            authority: self.authority.clone(),
            index: self.bls_index,
            share: Bytes(self.bls_share.sign(message).to_bytes().to_vec()),
        }
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
