//! The verifier's view of genesis: every authority's parsed public keys and
//! the consortium's threshold key, checked once when built.

use std::collections::BTreeMap;

use ml_dsa::{EncodedVerifyingKey, MlDsa65};

use super::{
    malformed, signing_message, AuthorityShare, AuthoritySignature, KeyId, SignatureError, SignatureScheme,
    SigningDomain, BLS_DST, ML_DSA_CONTEXT,
};
use crate::digest::Bytes;
use crate::genesis::{Genesis, GenesisError};
use crate::ids::{AuthorityId, Role};

/// One authority's public keys, parsed and validated.
#[derive(Clone)]
pub struct AuthorityKeys {
    /// Identifier.
    pub id: AuthorityId,
    /// Role.
    pub role: Role,
    /// Position in genesis's authority list (the signer-bitmap index).
    pub position: usize,
    pub(crate) bls_set: blsttc::PublicKeySet,
    pub(crate) bls_key: blsttc::PublicKey,
    pub(crate) bls_point: blst::min_pk::PublicKey,
    /// Each node's Ed25519 key, in share order.
    pub(crate) ed25519: Vec<ed25519_dalek::VerifyingKey>,
    /// Each node's ML-DSA-65 key, in share order.
    pub(crate) ml_dsa: Vec<ml_dsa::VerifyingKey<MlDsa65>>,
    /// The scheme it signs its own entries under.
    pub scheme: SignatureScheme,
    key_ids: [KeyId; 3],
}

/// Bytes of one node's part of a multi-node authority's Ed25519 or
/// ML-DSA-65 signature: its share index (u16, big-endian), then its
/// signature.
fn member_entry_len(scheme: SignatureScheme) -> usize {
    2 + match scheme {
        SignatureScheme::Bls12381 => 96,
        SignatureScheme::Ed25519 => 64,
        SignatureScheme::MlDsa65 => ML_DSA_65_SIGNATURE_BYTES,
    }
}

/// Bytes of an ML-DSA-65 signature (FIPS 204).
pub const ML_DSA_65_SIGNATURE_BYTES: usize = 3309;

/// The key identifier of a multi-node authority's key under a scheme with
/// one key per node: the threshold t, then every node's key in share order.
pub(crate) fn member_keys_id(scheme: SignatureScheme, threshold: u16, keys: &[&[u8]]) -> KeyId {
    if keys.len() == 1 {
        return KeyId::of(scheme, keys[0]);
    }
    let mut b = threshold.to_be_bytes().to_vec();
    for k in keys {
        b.extend_from_slice(k);
    }
    KeyId::of(scheme, &b)
}

impl std::fmt::Debug for AuthorityKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityKeys")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("key_ids", &self.key_ids)
            .finish()
    }
}

impl AuthorityKeys {
    /// The key identifier of this authority's key under `scheme`.
    pub fn key_id(&self, scheme: SignatureScheme) -> KeyId {
        self.key_ids[scheme.code() as usize - 1]
    }

    /// The BLS threshold t of this authority's key set (0 for a plain key).
    pub fn bls_threshold(&self) -> usize {
        self.bls_set.threshold()
    }

    /// The authority's threshold t: t+1 of its nodes sign for it, under
    /// every scheme.
    pub fn threshold(&self) -> usize {
        self.bls_set.threshold()
    }

    /// How many nodes it runs (m).
    pub fn members(&self) -> usize {
        self.ed25519.len()
    }

    /// Bytes of this authority's signature under `scheme`.
    pub fn signature_len(&self, scheme: SignatureScheme) -> usize {
        match scheme {
            SignatureScheme::Bls12381 => 96,
            _ if self.members() == 1 => member_entry_len(scheme) - 2,
            _ => (self.threshold() + 1) * member_entry_len(scheme),
        }
    }

    /// Checks one node's share of this authority's signature over
    /// `message`: the index is one of its nodes and the share verifies
    /// under that node's key.
    pub fn verify_share(&self, share: &AuthorityShare, message: &[u8]) -> Result<(), SignatureError> {
        let bad = || SignatureError::BadShare {
            authority: self.id.to_string(),
            index: share.index,
        };
        if share.authority != self.id {
            return Err(SignatureError::Unexpected {
                authority: share.authority.clone(),
            });
        }
        let i = usize::from(share.index);
        if i >= self.members() {
            return Err(bad());
        }
        let ok = match share.scheme {
            SignatureScheme::Bls12381 => <[u8; 96]>::try_from(share.share.as_slice())
                .ok()
                .and_then(|b| blsttc::SignatureShare::from_bytes(b).ok())
                .is_some_and(|s| self.bls_set.public_key_share(i).verify(&s, message)),
            SignatureScheme::Ed25519 => ed25519_dalek::Signature::from_slice(share.share.as_slice())
                .is_ok_and(|s| self.ed25519[i].verify_strict(message, &s).is_ok()),
            SignatureScheme::MlDsa65 => ml_dsa::Signature::<MlDsa65>::try_from(share.share.as_slice())
                .is_ok_and(|s| self.ml_dsa[i].verify_with_context(message, ML_DSA_CONTEXT, &s)),
        };
        if ok {
            Ok(())
        } else {
            Err(bad())
        }
    }

    /// Combines t+1 of its nodes' shares over `message` (one scheme) into
    /// the authority's signature, checking every share first and naming
    /// a bad one. Shares beyond t+1 distinct nodes are left out.
    pub fn combine(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
        shares: &[AuthorityShare],
    ) -> Result<AuthoritySignature, SignatureError> {
        let mut by_index: BTreeMap<u16, &AuthorityShare> = BTreeMap::new();
        for s in shares {
            if s.scheme != scheme {
                return Err(SignatureError::WrongScheme {
                    authority: self.id.clone(),
                    expected: scheme,
                    found: s.scheme,
                });
            }
            if scheme == SignatureScheme::Bls12381 {
                // Checked below at once: the combined signature verifies
                // or each share is checked to name the bad one.
                if s.authority != self.id || usize::from(s.index) >= self.members() {
                    return Err(SignatureError::BadShare {
                        authority: self.id.to_string(),
                        index: s.index,
                    });
                }
            } else {
                self.verify_share(s, message)?;
            }
            by_index.entry(s.index).or_insert(s);
        }
        let need = self.threshold() + 1;
        if by_index.len() < need {
            return Err(SignatureError::NotEnoughShares {
                authority: self.id.to_string(),
                have: by_index.len(),
                need,
            });
        }
        let signature = match scheme {
            SignatureScheme::Bls12381 => {
                let sig = combine_shares(
                    &self.bls_set,
                    self.id.as_str(),
                    message,
                    by_index.values().map(|s| (s.index, &s.share)),
                )?;
                sig.to_bytes().to_vec()
            }
            _ if self.members() == 1 => by_index
                .values()
                .next()
                .map(|s| s.share.0.clone())
                .unwrap_or_default(),
            _ => {
                let mut b = Vec::with_capacity(need * member_entry_len(scheme));
                for s in by_index.values().take(need) {
                    b.extend_from_slice(&s.index.to_be_bytes());
                    b.extend_from_slice(&s.share.0);
                }
                b
            }
        };
        Ok(AuthoritySignature {
            authority: self.id.clone(),
            scheme,
            key: self.key_id(scheme),
            signature: Bytes(signature),
        })
    }

    /// The node signatures inside a multi-node authority's Ed25519 or
    /// ML-DSA-65 signature: exactly t+1 entries, share indexes strictly
    /// increasing and below m.
    fn member_signatures<'s>(
        &self,
        scheme: SignatureScheme,
        bytes: &'s [u8],
    ) -> Option<Vec<(usize, &'s [u8])>> {
        let len = member_entry_len(scheme);
        let need = self.threshold() + 1;
        if bytes.len() != need * len {
            return None;
        }
        let mut out = Vec::with_capacity(need);
        for chunk in bytes.chunks_exact(len) {
            let index = usize::from(u16::from_be_bytes([chunk[0], chunk[1]]));
            if index >= self.members() || out.last().is_some_and(|(prev, _)| *prev >= index) {
                return None;
            }
            out.push((index, &chunk[2..]));
        }
        Some(out)
    }

    /// The authority's BLS public key set (for share verification).
    pub fn bls_public_key_set(&self) -> &blsttc::PublicKeySet {
        &self.bls_set
    }

    /// Verifies one signature by this authority over `message`, checking the
    /// scheme's key identifier first.
    pub fn verify(&self, sig: &AuthoritySignature, message: &[u8]) -> Result<(), SignatureError> {
        if sig.authority != self.id {
            return Err(SignatureError::Unexpected {
                authority: sig.authority.clone(),
            });
        }
        if sig.key != self.key_id(sig.scheme) {
            return Err(SignatureError::UnknownKey {
                authority: self.id.clone(),
                scheme: sig.scheme,
                key: sig.key,
            });
        }
        let bad = || SignatureError::Bad {
            authority: self.id.clone(),
            scheme: sig.scheme,
        };
        let ok = match sig.scheme {
            SignatureScheme::Bls12381 => {
                let bytes: [u8; 96] = sig.signature.as_slice().try_into().map_err(|_| bad())?;
                let s = blsttc::Signature::from_bytes(bytes).map_err(|_| bad())?;
                self.bls_key.verify(&s, message)
            }
            scheme if self.members() > 1 => {
                let parts = self
                    .member_signatures(scheme, sig.signature.as_slice())
                    .ok_or_else(bad)?;
                parts.into_iter().all(|(i, part)| match scheme {
                    SignatureScheme::Ed25519 => ed25519_dalek::Signature::from_slice(part)
                        .is_ok_and(|s| self.ed25519[i].verify_strict(message, &s).is_ok()),
                    _ => ml_dsa::Signature::<MlDsa65>::try_from(part)
                        .is_ok_and(|s| self.ml_dsa[i].verify_with_context(message, ML_DSA_CONTEXT, &s)),
                })
            }
            SignatureScheme::Ed25519 => {
                let s = ed25519_dalek::Signature::from_slice(sig.signature.as_slice()).map_err(|_| bad())?;
                self.ed25519[0].verify_strict(message, &s).is_ok()
            }
            SignatureScheme::MlDsa65 => {
                let s =
                    ml_dsa::Signature::<MlDsa65>::try_from(sig.signature.as_slice()).map_err(|_| bad())?;
                self.ml_dsa[0].verify_with_context(message, ML_DSA_CONTEXT, &s)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(bad())
        }
    }
}

/// Every authority's keys and the consortium key, from a validated genesis.
#[derive(Debug, Clone)]
pub struct KeyRing {
    authorities: Vec<AuthorityKeys>,
    by_id: BTreeMap<AuthorityId, usize>,
    consortium_set: blsttc::PublicKeySet,
    consortium_key: blsttc::PublicKey,
    log: crate::checkpoint::LogKeys,
}

fn bls_set_from(bytes: &Bytes, what: &'static str) -> Result<blsttc::PublicKeySet, SignatureError> {
    blsttc::PublicKeySet::from_bytes(bytes.0.clone()).map_err(|e| malformed(what, format!("{e:?}")))
}

impl KeyRing {
    /// Parses and checks every key in genesis, including each BLS proof of
    /// possession. Genesis's structural rules are checked by
    /// [`Genesis::validate`], which calls this.
    pub(crate) fn build(genesis: &Genesis) -> Result<Self, GenesisError> {
        let mut authorities = Vec::with_capacity(genesis.authorities.len());
        let mut by_id = BTreeMap::new();
        for (position, a) in genesis.authorities.iter().enumerate() {
            let key_err = |e: SignatureError| GenesisError::BadKey {
                authority: a.id.clone(),
                reason: e.to_string(),
            };
            let bls_set = bls_set_from(&a.bls.public_key_set, "BLS public key set").map_err(key_err)?;
            if bls_set.threshold() != usize::from(a.bls.threshold) {
                return Err(GenesisError::BadKey {
                    authority: a.id.clone(),
                    reason: format!(
                        "BLS key set has threshold {}, genesis says {}",
                        bls_set.threshold(),
                        a.bls.threshold
                    ),
                });
            }
            let bls_key = bls_set.public_key();
            let bls_bytes = bls_key.to_bytes();
            let bls_point =
                blst::min_pk::PublicKey::key_validate(&bls_bytes).map_err(|e| GenesisError::BadKey {
                    authority: a.id.clone(),
                    reason: format!("BLS public key fails validation: {e:?}"),
                })?;
            // Proof of possession: a signature over the key itself, under its
            // own domain.
            let pop_ok = <[u8; 96]>::try_from(a.bls.proof_of_possession.as_slice())
                .ok()
                .and_then(|b| blsttc::Signature::from_bytes(b).ok())
                .is_some_and(|s| bls_key.verify(&s, pop_message(&bls_bytes)));
            if !pop_ok {
                return Err(GenesisError::BadProofOfPossession {
                    authority: a.id.clone(),
                });
            }
            let bad_key = |reason: String| GenesisError::BadKey {
                authority: a.id.clone(),
                reason,
            };
            if a.ed25519.is_empty() || a.ed25519.len() != a.ml_dsa_65.len() {
                return Err(bad_key(format!(
                    "{} Ed25519 and {} ML-DSA-65 keys: one of each per node",
                    a.ed25519.len(),
                    a.ml_dsa_65.len()
                )));
            }
            let ed25519 = a
                .ed25519
                .iter()
                .map(|k| {
                    let b: [u8; 32] = k
                        .as_slice()
                        .try_into()
                        .map_err(|_| bad_key("Ed25519 key is not 32 bytes".into()))?;
                    ed25519_dalek::VerifyingKey::from_bytes(&b)
                        .map_err(|e| bad_key(format!("Ed25519 key: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let ml_dsa = a
                .ml_dsa_65
                .iter()
                .map(|k| {
                    let enc = EncodedVerifyingKey::<MlDsa65>::try_from(k.as_slice())
                        .map_err(|_| bad_key(format!("ML-DSA-65 key is {} bytes, not 1952", k.len())))?;
                    Ok(ml_dsa::VerifyingKey::<MlDsa65>::decode(&enc))
                })
                .collect::<Result<Vec<_>, GenesisError>>()?;
            let ed_keys: Vec<&[u8]> = a.ed25519.iter().map(|k| k.as_slice()).collect();
            let ml_keys: Vec<&[u8]> = a.ml_dsa_65.iter().map(|k| k.as_slice()).collect();
            let key_ids = [
                KeyId::of(SignatureScheme::Bls12381, &bls_bytes),
                member_keys_id(SignatureScheme::Ed25519, a.bls.threshold, &ed_keys),
                member_keys_id(SignatureScheme::MlDsa65, a.bls.threshold, &ml_keys),
            ];
            if by_id.insert(a.id.clone(), position).is_some() {
                return Err(GenesisError::Duplicate {
                    what: "authority",
                    name: a.id.to_string(),
                });
            }
            authorities.push(AuthorityKeys {
                id: a.id.clone(),
                role: a.role,
                position,
                bls_set,
                bls_key,
                bls_point,
                ed25519,
                ml_dsa,
                scheme: a.scheme,
                key_ids,
            });
        }
        let consortium_set = bls_set_from(&genesis.consortium.public_key_set, "consortium key set")
            .map_err(|e| GenesisError::Consortium(e.to_string()))?;
        let consortium_key = consortium_set.public_key();
        Ok(Self {
            authorities,
            by_id,
            consortium_set,
            consortium_key,
            log: crate::checkpoint::LogKeys::from_genesis(genesis),
        })
    }

    /// The keys that sign and witness the log's checkpoints.
    pub fn log(&self) -> &crate::checkpoint::LogKeys {
        &self.log
    }

    /// The keys of `authority`.
    pub fn authority(&self, authority: &AuthorityId) -> Result<&AuthorityKeys, SignatureError> {
        self.by_id
            .get(authority)
            .map(|&i| &self.authorities[i])
            .ok_or_else(|| SignatureError::UnknownAuthority {
                authority: authority.clone(),
            })
    }

    /// Authorities in genesis order.
    pub fn authorities(&self) -> &[AuthorityKeys] {
        &self.authorities
    }

    /// Checks that `authority` exists and holds `role`.
    pub fn require_role(
        &self,
        authority: &AuthorityId,
        role: Role,
    ) -> Result<&AuthorityKeys, SignatureError> {
        let keys = self.authority(authority)?;
        if keys.role != role {
            return Err(SignatureError::WrongRole {
                authority: authority.clone(),
                expected: role,
                actual: keys.role,
            });
        }
        Ok(keys)
    }

    /// Verifies one authority signature over `message`.
    pub fn verify(&self, sig: &AuthoritySignature, message: &[u8]) -> Result<(), SignatureError> {
        self.authority(&sig.authority)?.verify(sig, message)
    }

    /// Combines t+1 of an authority's node shares (one scheme) into its
    /// signature over `message` ([`AuthorityKeys::combine`]).
    pub fn combine_authority_shares(
        &self,
        authority: &AuthorityId,
        scheme: SignatureScheme,
        message: &[u8],
        shares: &[AuthorityShare],
    ) -> Result<AuthoritySignature, SignatureError> {
        self.authority(authority)?.combine(scheme, message, shares)
    }

    /// The consortium's threshold t (= q - 1).
    pub fn consortium_threshold(&self) -> usize {
        self.consortium_set.threshold()
    }

    /// The consortium group public key (48 bytes, compressed G1).
    pub fn consortium_public_key(&self) -> [u8; 48] {
        self.consortium_key.to_bytes()
    }

    /// Verifies one validator's share of a consortium signature.
    pub fn verify_consortium_share(&self, share: &super::ConsortiumSignatureShare, message: &[u8]) -> bool {
        match <[u8; 96]>::try_from(share.share.as_slice())
            .ok()
            .and_then(|b| blsttc::SignatureShare::from_bytes(b).ok())
        {
            Some(s) => self
                .consortium_set
                .public_key_share(share.validator as usize)
                .verify(&s, message),
            None => false,
        }
    }

    /// Combines q validator shares into one consortium signature.
    pub fn combine_consortium_shares(
        &self,
        message: &[u8],
        shares: &[super::ConsortiumSignatureShare],
    ) -> Result<Bytes, SignatureError> {
        let sig = combine_shares(
            &self.consortium_set,
            "consortium",
            message,
            shares.iter().map(|s| (s.validator, &s.share)),
        )?;
        Ok(Bytes(sig.to_bytes().to_vec()))
    }

    /// Combines q validator shares that the caller has **already verified**
    /// one by one (as consensus does when each vote arrives): interpolation
    /// only, no pairing check. Shares that were not verified may give a
    /// signature that does not verify; use [`Self::combine_consortium_shares`]
    /// for those.
    pub fn combine_verified_consortium_shares(
        &self,
        shares: &[super::ConsortiumSignatureShare],
    ) -> Result<Bytes, SignatureError> {
        let parsed = parse_shares(
            &self.consortium_set,
            "consortium",
            shares.iter().map(|s| (s.validator, &s.share)),
        )?;
        Ok(Bytes(
            interpolate(&self.consortium_set, &parsed)?.to_bytes().to_vec(),
        ))
    }

    /// Verifies a combined consortium signature over `message`.
    pub fn verify_consortium(&self, message: &[u8], signature: &[u8]) -> bool {
        <[u8; 96]>::try_from(signature)
            .ok()
            .and_then(|b| blsttc::Signature::from_bytes(b).ok())
            .is_some_and(|s| self.consortium_key.verify(&s, message))
    }
}

/// The message a BLS proof of possession signs: the public key itself.
pub(crate) fn pop_message(public_key: &[u8; 48]) -> Vec<u8> {
    signing_message(SigningDomain::ProofOfPossession, public_key)
}

fn parse_shares<'a>(
    set: &blsttc::PublicKeySet,
    name: &str,
    shares: impl Iterator<Item = (u16, &'a Bytes)>,
) -> Result<BTreeMap<u16, blsttc::SignatureShare>, SignatureError> {
    let mut parsed = BTreeMap::new();
    for (index, bytes) in shares {
        let share = <[u8; 96]>::try_from(bytes.as_slice())
            .ok()
            .and_then(|b| blsttc::SignatureShare::from_bytes(b).ok())
            .ok_or_else(|| SignatureError::BadShare {
                authority: name.to_string(),
                index,
            })?;
        parsed.insert(index, share);
    }
    let need = set.threshold() + 1;
    if parsed.len() < need {
        return Err(SignatureError::NotEnoughShares {
            authority: name.to_string(),
            have: parsed.len(),
            need,
        });
    }
    Ok(parsed)
}

fn interpolate(
    set: &blsttc::PublicKeySet,
    shares: &BTreeMap<u16, blsttc::SignatureShare>,
) -> Result<blsttc::Signature, SignatureError> {
    let need = set.threshold() + 1;
    set.combine_signatures(shares.iter().take(need).map(|(i, s)| (usize::from(*i), s)))
        .map_err(|e| malformed("signature shares", format!("{e:?}")))
}

fn combine_shares<'a>(
    set: &blsttc::PublicKeySet,
    name: &str,
    message: &[u8],
    shares: impl Iterator<Item = (u16, &'a Bytes)>,
) -> Result<blsttc::Signature, SignatureError> {
    let parsed = parse_shares(set, name, shares)?;
    // Optimistic path: combine and check once (one pairing check instead of
    // one per share). Only when that fails, check every share to name the
    // bad one.
    let sig = interpolate(set, &parsed)?;
    if set.public_key().verify(&sig, message) {
        return Ok(sig);
    }
    for (index, share) in &parsed {
        if !set.public_key_share(usize::from(*index)).verify(share, message) {
            return Err(SignatureError::BadShare {
                authority: name.to_string(),
                index: *index,
            });
        }
    }
    Err(malformed(
        "signature shares",
        "valid shares did not combine to a valid signature",
    ))
}

/// Checks an aggregate BLS signature over distinct (key, message) pairs with
/// one multi-pairing.
pub(crate) fn bls_aggregate_verify(
    keys: &[&blst::min_pk::PublicKey],
    messages: &[&[u8]],
    aggregate: &[u8],
) -> bool {
    let Ok(sig) = blst::min_pk::Signature::sig_validate(aggregate, true) else {
        return false;
    };
    sig.aggregate_verify(false, messages, BLS_DST, keys, false) == blst::BLST_ERROR::BLST_SUCCESS
}
