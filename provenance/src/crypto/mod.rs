//! Authority signatures under the scheme a policy picks: BLS12-381
//! (default; threshold key sets for an authority with several nodes),
//! Ed25519 and ML-DSA-65.
//!
//! * Every [`AuthoritySignature`] names its scheme, its authority and the
//!   [`KeyId`] of the key it verifies under.
//! * Every signed message starts with a domain tag ([`SigningDomain`]) so a
//!   signature made for one purpose never verifies for another.
//! * An event is co-signed section by section: each authority signs its own
//!   section's digest bound to the event's digest. With BLS the
//!   [`CoSignature`] is one aggregate over distinct messages, checked with a
//!   single multi-pairing, plus a signer bitmap over genesis's authority
//!   order, so the verifier still knows which authority signed. With Ed25519
//!   and ML-DSA it is the list of signatures.
//! * Rogue keys: genesis carries a proof of possession for each authority's
//!   BLS key (a signature over the key under a separate domain), checked
//!   when the [`KeyRing`] is built. Aggregates are only ever over distinct
//!   messages, which is itself safe against rogue keys; the proofs make the
//!   keys safe for any later same-message aggregation too.
//!
//! BLS goes through `blsttc` (threshold_crypto's API on `blst`): keys, shares,
//! share combination. Aggregation and aggregate verification use `blst`'s
//! `min_pk` directly, which reads `blsttc`'s encodings (same curve groups,
//! same hash-to-curve suite and DST).

mod cache;
mod cosign;
mod keyring;
mod signer;

pub use cache::VerifiedSignatures;
pub use cosign::{
    verify_cosignature, CoSignature, CoSigner, SignRequest, SignerBitmap, MAX_AUTHORITIES,
    MAX_AUTHORITY_SIGNATURE_BYTES,
};
pub use keyring::{AuthorityKeys, KeyRing, ML_DSA_65_SIGNATURE_BYTES};
pub use signer::{
    bls_proof_of_possession, ml_dsa_keypair, ml_dsa_public_key, AuthorityShare, AuthoritySigner,
    ConsortiumSignatureShare, ConsortiumSigner,
};

use serde::{Deserialize, Serialize};

use crate::digest::{tagged_hash_parts, Bytes, Digest, ObjectKind};
use crate::ids::{AuthorityId, Role};

/// The ciphersuite tag blsttc hashes messages with; blst must use the same.
pub(crate) const BLS_DST: &[u8] = blsttc::DST;
/// Context string for ML-DSA signatures (FIPS 204 `ctx`).
pub(crate) const ML_DSA_CONTEXT: &[u8] = b"govtune/v1";

/// A signature scheme an authority can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    /// BLS12-381, public keys in G1 (48 bytes), signatures in G2 (96 bytes).
    Bls12381,
    /// Ed25519 (RFC 8032), strict verification.
    Ed25519,
    /// ML-DSA-65 (FIPS 204), deterministic signing with a context string.
    MlDsa65,
}

impl SignatureScheme {
    /// Stable byte used in key identifiers.
    pub const fn code(self) -> u8 {
        match self {
            Self::Bls12381 => 1,
            Self::Ed25519 => 2,
            Self::MlDsa65 => 3,
        }
    }
    /// Every scheme.
    pub const ALL: [SignatureScheme; 3] = [Self::Bls12381, Self::Ed25519, Self::MlDsa65];
}

impl std::fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bls12381 => "bls12-381",
            Self::Ed25519 => "ed25519",
            Self::MlDsa65 => "ml-dsa-65",
        })
    }
}

/// The first eight bytes of a public key's tagged hash: names the exact key
/// a signature verifies under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The key identifier of `public_key` under `scheme`.
    pub fn of(scheme: SignatureScheme, public_key: &[u8]) -> Self {
        let d = tagged_hash_parts(ObjectKind::PublicKey, &[&[scheme.code()], public_key]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d.0[..8]);
        KeyId(id)
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// What a signature is for; each domain has its own tag in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningDomain {
    /// An authority's signature over its part of a ledger entry.
    Entry,
    /// A proof of possession of a BLS key.
    ProofOfPossession,
    /// The consortium's signature over a checkpoint.
    Checkpoint,
    /// A consensus vote (notarise, finalise, nullify).
    Vote,
    /// An auditor's ticket for a campaign record's position
    /// ([`crate::audit`]).
    AuditTicket,
    /// An auditor's replay of a campaign record.
    AuditReplay,
}

impl SigningDomain {
    const fn tag(self) -> &'static [u8] {
        match self {
            Self::Entry => b"govtune/v1/sig/entry\0",
            Self::ProofOfPossession => b"govtune/v1/sig/pop\0",
            Self::Checkpoint => b"govtune/v1/sig/checkpoint\0",
            Self::Vote => b"govtune/v1/sig/vote\0",
            Self::AuditTicket => b"govtune/v1/sig/audit-ticket\0",
            Self::AuditReplay => b"govtune/v1/sig/audit-replay\0",
        }
    }
}

/// The bytes an authority signs: the domain tag followed by the payload.
pub fn signing_message(domain: SigningDomain, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(domain.tag().len() + payload.len());
    m.extend_from_slice(domain.tag());
    m.extend_from_slice(payload);
    m
}

/// The message authority `authority`, acting as `role`, signs for the entry
/// with body digest `entry` and its own section's digest `section`.
pub fn section_message(entry: &Digest, role: Role, authority: &AuthorityId, section: &Digest) -> Vec<u8> {
    let id = authority.as_str().as_bytes();
    let bound = tagged_hash_parts(
        ObjectKind::Section,
        &[&entry.0, &[role.code()], &[id.len() as u8], id, &section.0],
    );
    signing_message(SigningDomain::Entry, &bound.0)
}

/// One authority's signature, naming its scheme and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthoritySignature {
    /// The signing authority.
    pub authority: AuthorityId,
    /// The scheme.
    pub scheme: SignatureScheme,
    /// The key it verifies under.
    pub key: KeyId,
    /// The signature bytes.
    pub signature: Bytes,
}

/// Why a signature, share or co-signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The authority is not in genesis.
    #[error("authority {authority} is not in genesis")]
    UnknownAuthority {
        /// The authority named.
        authority: AuthorityId,
    },
    /// The authority holds another role than the one this signature needs.
    #[error(
        "authority {authority} is a {actual} authority, but this signature needs a {expected} authority"
    )]
    WrongRole {
        /// The authority.
        authority: AuthorityId,
        /// Role the entry requires.
        expected: Role,
        /// Role genesis gives it.
        actual: Role,
    },
    /// The signature uses another scheme than required.
    #[error("signature by {authority} uses {found}, but {expected} is required")]
    WrongScheme {
        /// The authority.
        authority: AuthorityId,
        /// Scheme required (by the policy).
        expected: SignatureScheme,
        /// Scheme found.
        found: SignatureScheme,
    },
    /// The signature names a key genesis does not hold for the authority.
    #[error("signature by {authority} names key {key} which is not its {scheme} key in genesis")]
    UnknownKey {
        /// The authority.
        authority: AuthorityId,
        /// The scheme.
        scheme: SignatureScheme,
        /// The key named.
        key: KeyId,
    },
    /// A required signer did not sign.
    #[error("missing signature: {authority} ({role}) has not signed")]
    Missing {
        /// The authority whose signature is missing.
        authority: AuthorityId,
        /// The role it signs in.
        role: Role,
    },
    /// A signature does not verify.
    #[error("bad {scheme} signature by {authority}")]
    Bad {
        /// The authority whose signature is bad.
        authority: AuthorityId,
        /// Its scheme.
        scheme: SignatureScheme,
    },
    /// An authority signed that is not a required signer.
    #[error("{authority} signed but is not a required signer of this entry")]
    Unexpected {
        /// The authority.
        authority: AuthorityId,
    },
    /// The same authority appears twice.
    #[error("{authority} signed twice")]
    Duplicate {
        /// The authority.
        authority: AuthorityId,
    },
    /// A BLS aggregate over the named signers does not verify.
    #[error("BLS aggregate over {signers:?} does not verify")]
    AggregateInvalid {
        /// Signers claimed by the bitmap.
        signers: Vec<AuthorityId>,
    },
    /// Bytes that do not decode as a key, signature or bitmap.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// Too few threshold shares to combine.
    #[error("{authority}: {have} signature shares, {need} needed")]
    NotEnoughShares {
        /// The authority (or `consortium`).
        authority: String,
        /// Valid shares given.
        have: usize,
        /// Shares needed (threshold + 1).
        need: usize,
    },
    /// A threshold share does not verify under its public key share.
    #[error("{authority}: signature share {index} does not verify")]
    BadShare {
        /// The authority (or `consortium`).
        authority: String,
        /// Share index.
        index: u16,
    },
    /// A threshold authority's full signature needs shares from t+1 nodes.
    #[error(
        "{authority} signs with t+1 of its nodes (t = {threshold}): sign a share on each and combine them"
    )]
    ThresholdKey {
        /// The authority.
        authority: AuthorityId,
        /// Its threshold t.
        threshold: u16,
    },
}

pub(crate) fn malformed(what: &'static str, reason: impl ToString) -> SignatureError {
    SignatureError::Malformed {
        what,
        reason: reason.to_string(),
    }
}
