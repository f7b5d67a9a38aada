//! Co-signatures: the signatures of every required authority of an entry,
//! built one signature at a time and verified all at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    keyring::bls_aggregate_verify, malformed, AuthoritySignature, KeyRing, SignatureError, SignatureScheme,
};
use crate::digest::Bytes;
use crate::ids::{AuthorityId, Role};

/// Most authorities a consortium may have (bitmap width).
pub const MAX_AUTHORITIES: usize = 1024;

/// One signature an entry needs: which authority, in which role, over which
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignRequest {
    /// The authority that must sign.
    pub authority: AuthorityId,
    /// The role it signs in.
    pub role: Role,
    /// The exact message it signs.
    pub message: Vec<u8>,
}

/// A set of authorities, as bits over genesis's authority order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerBitmap {
    /// Number of authorities in genesis.
    pub len: u16,
    /// `ceil(len / 8)` bytes, bit `i % 8` of byte `i / 8` for authority `i`.
    pub bits: Bytes,
}

impl SignerBitmap {
    /// The bitmap of the given genesis positions.
    pub fn from_positions(len: usize, positions: impl IntoIterator<Item = usize>) -> Self {
        let mut bits = vec![0u8; len.div_ceil(8)];
        for p in positions {
            bits[p / 8] |= 1 << (p % 8);
        }
        Self {
            len: len as u16,
            bits: Bytes(bits),
        }
    }

    /// The positions set, checking the bitmap's shape against `len`.
    pub fn positions(&self, len: usize) -> Result<Vec<usize>, SignatureError> {
        if usize::from(self.len) != len || self.bits.len() != len.div_ceil(8) {
            return Err(malformed(
                "signer bitmap",
                format!(
                    "{} bits in {} bytes, genesis has {len} authorities",
                    self.len,
                    self.bits.len()
                ),
            ));
        }
        let mut out = Vec::new();
        for i in 0..self.bits.len() * 8 {
            if self.bits.0[i / 8] & (1 << (i % 8)) != 0 {
                if i >= len {
                    return Err(malformed("signer bitmap", "bits set past the last authority"));
                }
                out.push(i);
            }
        }
        Ok(out)
    }
}

/// The signatures of an entry's required authorities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoSignature {
    /// One BLS aggregate over distinct messages, with the signers named by
    /// bitmap.
    Bls {
        /// Who signed.
        signers: SignerBitmap,
        /// Aggregate signature (96 bytes).
        aggregate: Bytes,
    },
    /// A list of individual signatures (Ed25519 or ML-DSA-65), in the order
    /// of the entry's required signers.
    List {
        /// The scheme of every signature in the list.
        scheme: SignatureScheme,
        /// The signatures.
        signatures: Vec<AuthoritySignature>,
    },
}

impl CoSignature {
    /// The scheme of this co-signature.
    pub fn scheme(&self) -> SignatureScheme {
        match self {
            CoSignature::Bls { .. } => SignatureScheme::Bls12381,
            CoSignature::List { scheme, .. } => *scheme,
        }
    }

    /// Structural limits, checked when decoding.
    pub fn size_ok(&self) -> bool {
        match self {
            CoSignature::Bls { signers, aggregate } => {
                usize::from(signers.len) <= MAX_AUTHORITIES
                    && signers.bits.len() <= MAX_AUTHORITIES / 8
                    && aggregate.len() == 96
            }
            CoSignature::List { signatures, .. } => {
                signatures.len() <= MAX_AUTHORITIES
                    && signatures
                        .iter()
                        .all(|s| s.signature.len() <= MAX_AUTHORITY_SIGNATURE_BYTES)
            }
        }
    }
}

/// Longest authority signature: t+1 = 64 nodes' ML-DSA-65 signatures, each
/// with its share index.
pub const MAX_AUTHORITY_SIGNATURE_BYTES: usize =
    crate::genesis::MAX_AUTHORITY_NODES * (2 + super::ML_DSA_65_SIGNATURE_BYTES);

/// Verifies that `cosig` holds a valid signature by every required signer
/// and by nobody else, naming exactly which signature is missing, bad or
/// unexpected. `scheme`, when given, is the scheme the policy requires;
/// without one, an entry one authority signs alone (a registration, a
/// revocation, evidence) is signed under the scheme that authority
/// declares in genesis.
pub fn verify_cosignature(
    keyring: &KeyRing,
    scheme: Option<SignatureScheme>,
    required: &[SignRequest],
    cosig: &CoSignature,
) -> Result<(), SignatureError> {
    let scheme = scheme.or(match required {
        [alone] => Some(keyring.authority(&alone.authority)?.scheme),
        _ => None,
    });
    // Every required signer must exist and hold its role.
    let mut wanted: BTreeMap<&AuthorityId, &SignRequest> = BTreeMap::new();
    for r in required {
        keyring.require_role(&r.authority, r.role)?;
        wanted.insert(&r.authority, r);
    }
    if let Some(expected) = scheme {
        if cosig.scheme() != expected {
            let authority = required
                .first()
                .map(|r| r.authority.clone())
                .or_else(|| keyring.authorities().first().map(|a| a.id.clone()));
            if let Some(authority) = authority {
                return Err(SignatureError::WrongScheme {
                    authority,
                    expected,
                    found: cosig.scheme(),
                });
            }
        }
    }
    match cosig {
        CoSignature::Bls { signers, aggregate } => {
            let all = keyring.authorities();
            let positions = signers.positions(all.len())?;
            let mut signed: BTreeMap<&AuthorityId, usize> = BTreeMap::new();
            for &p in &positions {
                let id = &all[p].id;
                if !wanted.contains_key(id) {
                    return Err(SignatureError::Unexpected {
                        authority: id.clone(),
                    });
                }
                signed.insert(id, p);
            }
            for r in required {
                if !signed.contains_key(&r.authority) {
                    return Err(SignatureError::Missing {
                        authority: r.authority.clone(),
                        role: r.role,
                    });
                }
            }
            let mut keys = Vec::with_capacity(positions.len());
            let mut messages = Vec::with_capacity(positions.len());
            for &p in &positions {
                keys.push(&all[p].bls_point);
                messages.push(wanted[&all[p].id].message.as_slice());
            }
            if bls_aggregate_verify(&keys, &messages, aggregate.as_slice()) {
                Ok(())
            } else {
                Err(SignatureError::AggregateInvalid {
                    signers: positions.iter().map(|&p| all[p].id.clone()).collect(),
                })
            }
        }
        CoSignature::List { scheme, signatures } => {
            let mut seen: BTreeMap<&AuthorityId, ()> = BTreeMap::new();
            for s in signatures {
                let Some(r) = wanted.get(&s.authority) else {
                    return Err(SignatureError::Unexpected {
                        authority: s.authority.clone(),
                    });
                };
                if seen.insert(&s.authority, ()).is_some() {
                    return Err(SignatureError::Duplicate {
                        authority: s.authority.clone(),
                    });
                }
                if s.scheme != *scheme {
                    return Err(SignatureError::WrongScheme {
                        authority: s.authority.clone(),
                        expected: *scheme,
                        found: s.scheme,
                    });
                }
                keyring.verify(s, &r.message)?;
            }
            for r in required {
                if !seen.contains_key(&r.authority) {
                    return Err(SignatureError::Missing {
                        authority: r.authority.clone(),
                        role: r.role,
                    });
                }
            }
            Ok(())
        }
    }
}

/// Collects the signatures of an entry's required signers one by one,
/// checking each on arrival, and assembles the [`CoSignature`] once all are
/// in.
#[derive(Debug)]
pub struct CoSigner<'k> {
    keyring: &'k KeyRing,
    scheme: SignatureScheme,
    required: Vec<SignRequest>,
    got: BTreeMap<AuthorityId, AuthoritySignature>,
}

impl<'k> CoSigner<'k> {
    /// Starts collecting signatures for `required` under `scheme`.
    pub fn new(
        keyring: &'k KeyRing,
        scheme: SignatureScheme,
        required: Vec<SignRequest>,
    ) -> Result<Self, SignatureError> {
        for r in &required {
            keyring.require_role(&r.authority, r.role)?;
        }
        Ok(Self {
            keyring,
            scheme,
            required,
            got: BTreeMap::new(),
        })
    }

    /// The requests still unsigned.
    pub fn missing(&self) -> Vec<&SignRequest> {
        self.required
            .iter()
            .filter(|r| !self.got.contains_key(&r.authority))
            .collect()
    }

    /// The request an authority must sign, if it is a required signer.
    pub fn request(&self, authority: &AuthorityId) -> Option<&SignRequest> {
        self.required.iter().find(|r| &r.authority == authority)
    }

    /// Adds one signature after checking it; a resubmission of the same
    /// valid signature is accepted again.
    pub fn add(&mut self, sig: AuthoritySignature) -> Result<(), SignatureError> {
        self.add_checked(sig, true)
    }

    /// Adds a signature the caller has already verified against this
    /// signer's request message (a node checks each signature once, when it
    /// arrives). Role, request and scheme are still checked; a signature
    /// that was not in fact verified makes [`Self::finish`]'s result fail
    /// `verify_cosignature` later, never succeed wrongly.
    pub fn add_verified(&mut self, sig: AuthoritySignature) -> Result<(), SignatureError> {
        self.add_checked(sig, false)
    }

    fn add_checked(&mut self, sig: AuthoritySignature, verify: bool) -> Result<(), SignatureError> {
        let Some(r) = self.request(&sig.authority) else {
            return Err(SignatureError::Unexpected {
                authority: sig.authority,
            });
        };
        if sig.scheme != self.scheme {
            return Err(SignatureError::WrongScheme {
                authority: sig.authority,
                expected: self.scheme,
                found: sig.scheme,
            });
        }
        if verify {
            self.keyring.verify(&sig, &r.message)?;
        }
        self.got.insert(sig.authority.clone(), sig);
        Ok(())
    }

    /// True once every required signer has signed.
    pub fn is_complete(&self) -> bool {
        self.missing().is_empty()
    }

    /// Assembles the co-signature, or names the first missing signer.
    pub fn finish(self) -> Result<CoSignature, SignatureError> {
        if let Some(r) = self.missing().first() {
            return Err(SignatureError::Missing {
                authority: r.authority.clone(),
                role: r.role,
            });
        }
        match self.scheme {
            SignatureScheme::Bls12381 => {
                let mut sigs = Vec::with_capacity(self.required.len());
                let mut positions = Vec::with_capacity(self.required.len());
                for r in &self.required {
                    let s = &self.got[&r.authority];
                    let point = blst::min_pk::Signature::sig_validate(s.signature.as_slice(), true)
                        .map_err(|e| malformed("BLS signature", format!("{e:?}")))?;
                    sigs.push(point);
                    positions.push(self.keyring.authority(&r.authority)?.position);
                }
                let refs: Vec<&blst::min_pk::Signature> = sigs.iter().collect();
                let agg = blst::min_pk::AggregateSignature::aggregate(&refs, false)
                    .map_err(|e| malformed("BLS aggregate", format!("{e:?}")))?;
                Ok(CoSignature::Bls {
                    signers: SignerBitmap::from_positions(self.keyring.authorities().len(), positions),
                    aggregate: Bytes(agg.to_signature().compress().to_vec()),
                })
            }
            scheme => {
                let mut got = self.got;
                let signatures = self
                    .required
                    .iter()
                    .filter_map(|r| got.remove(&r.authority))
                    .collect();
                Ok(CoSignature::List { scheme, signatures })
            }
        }
    }
}
