//! The co-signing table: every entry this node has been offered and not
//! yet seen committed, the signing plan it needs, the signatures gathered
//! so far (each verified once, on arrival) and a refusal, if any. A
//! caller-driven state machine: offers, signatures, refusals, commits and
//! ticks come in; [`CoSignAction`]s (publish, complete) go out. What it
//! reads of the node (ledger state, keys, the clock, the pending store) it
//! is handed through [`Env`]; it does no I/O of its own.
//!
//! What this node's authority checks before it signs is [`crate::cosign`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use provenance::audit::{check_audit, Audit, AuditFailure, AuditTicket, AuditedRecord, Replayed};
use provenance::codec::encode;
use provenance::crypto::{AuthorityShare, CoSignature, CoSigner};
use provenance::{
    AuthorityId, AuthoritySignature, AuthoritySigner, Digest, EntryBody, KeyRing, LedgerEntry, LedgerState,
    LedgerView, Role, SignatureScheme, SigningPlan, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::cosign::{check_section, CheckContext, CoSignRefusal};
pub use crate::effect::EffectVerdict;
use crate::wire::{check_body, Gossip, SharePart};
use crate::EntryStatus;

/// Re-offers per housekeeping tick at most.
pub const REOFFERS_PER_TICK: usize = 256;
/// Longest wait between two re-offers of one entry.
pub const MAX_REOFFER_BACKOFF: Duration = Duration::from_secs(16);
/// How long another authority's stalled entry is remembered (its
/// submitter re-offers it), and an expired entry's status kept.
pub const FORGET_OTHERS_AFTER: Duration = Duration::from_secs(600);

/// How much one authority may have pending in a node's table at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingCaps {
    /// Entries.
    pub entries: usize,
    /// Canonical body bytes.
    pub bytes: usize,
}

impl Default for PendingCaps {
    fn default() -> Self {
        Self {
            entries: 4_096,
            bytes: 64 << 20,
        }
    }
}

/// Restored state of an own entry taken again after a restart.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// A co-signer's refusal it had.
    pub refused: Option<(AuthorityId, String)>,
    /// When it was first submitted (ms since the epoch).
    pub submitted_ms: u64,
}

/// Why an entry is not taken into the table (the API chooses the HTTP
/// status for each).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// The body breaks a rule of its format.
    #[error(transparent)]
    Malformed(#[from] provenance::DecodeError),
    /// Its signers cannot be determined from the committed state (it names
    /// something not committed yet, or breaks the signing rule).
    #[error("{0} (is everything it refers to committed yet?)")]
    Unplannable(provenance::EntryError),
    /// An own entry could not be made durable.
    #[error("the node could not store the entry: {0}")]
    NotStored(String),
    /// The entry breaks a rule of the ledger's state that nothing committed
    /// later can undo (a campaign under a superseded policy).
    #[error("{0}")]
    Refused(String),
    /// The authority that submits the entry already has as much pending
    /// here as a node holds for one authority.
    #[error("{authority} already has {held} pending here, the most a node holds for one authority ({limit}); retry when some commit or expire")]
    Full {
        /// The submitting authority.
        authority: AuthorityId,
        /// What it has pending (entries or bytes).
        held: String,
        /// The cap.
        limit: String,
    },
    /// A peer's offer carries more signatures than the entry has signers,
    /// two of one authority, or one of an authority that does not sign it.
    #[error("the offer carries {0}")]
    ExtraSignatures(&'static str),
    /// A peer's offer lacks its submitter's signature: nothing is checked
    /// for it.
    #[error("the offer lacks its submitter's ({0}) signature")]
    Unsigned(AuthorityId),
    /// The entry, with the signatures it needs, would not fit in a block.
    #[error("the entry is {bytes} bytes with its signatures, more than a block holds ({limit} bytes, genesis max_block_bytes)")]
    TooLarge {
        /// Its canonical bytes and an allowance for its signatures.
        bytes: usize,
        /// The block budget.
        limit: usize,
    },
}

/// Bytes an entry's attestation may take: one BLS aggregate and its
/// bitmap, or one signature per signer with its authority and scheme (an
/// authority of several nodes signs with t+1 of them).
pub fn attestation_allowance(
    keyring: &KeyRing,
    scheme: SignatureScheme,
    signers: &[provenance::crypto::SignRequest],
) -> usize {
    if scheme == SignatureScheme::Bls12381 {
        return 256;
    }
    64 + signers
        .iter()
        .map(|r| {
            160 + keyring
                .authority(&r.authority)
                .map_or(64 * (2 + provenance::crypto::ML_DSA_65_SIGNATURE_BYTES), |k| {
                    k.signature_len(scheme)
                })
        })
        .sum::<usize>()
}

/// What an own entry's durable record holds: enough to offer it again
/// after a restart, its refusal and submission time included (version 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingRecord {
    /// Format version.
    pub version: u16,
    /// The entry body.
    pub body: EntryBody,
    /// Signatures gathered.
    pub signatures: Vec<AuthoritySignature>,
    /// A co-signer's refusal.
    pub refused: Option<(AuthorityId, String)>,
    /// When it was submitted (ms since the epoch): it expires the genesis
    /// `pending_expiry_ms` later, restarts included.
    pub submitted_ms: u64,
}

/// A version 1 [`PendingRecord`] (no submission time), as written before.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingRecordV1 {
    /// Format version (1).
    pub version: u16,
    /// The entry body.
    pub body: EntryBody,
    /// Signatures gathered.
    pub signatures: Vec<AuthoritySignature>,
    /// A co-signer's refusal.
    pub refused: Option<(AuthorityId, String)>,
}

impl PendingRecord {
    /// Decodes a version 2 record, or a version 1 one as submitted at
    /// `now_ms` (its submission time was not kept).
    pub fn decode(bytes: &[u8], now_ms: u64) -> Result<Self, provenance::DecodeError> {
        use provenance::codec::decode_raw;
        let (version, _): (u16, usize) = decode_raw("pending record", bytes)?;
        match version {
            1 => {
                let (r, _): (PendingRecordV1, usize) = decode_raw("pending record", bytes)?;
                Ok(Self {
                    version: 2,
                    body: r.body,
                    signatures: r.signatures,
                    refused: r.refused,
                    submitted_ms: now_ms,
                })
            }
            2 => Ok(decode_raw::<Self>("pending record", bytes)?.0),
            found => Err(provenance::DecodeError::UnsupportedVersion {
                kind: "pending record",
                found,
                supported: 2,
            }),
        }
    }
}

/// Makes an own entry's record durable: `(digest, encoded record)`.
pub type Persist<'a> = dyn Fn(&Digest, &[u8]) -> Result<(), String> + 'a;

/// What the table reads of the node on one call.
pub struct Env<'a> {
    /// Genesis keys.
    pub keyring: &'a KeyRing,
    /// Signatures already verified (by the verifier beside the core).
    pub verified: &'a provenance::crypto::VerifiedSignatures,
    /// This node's authority signer.
    pub signer: &'a AuthoritySigner,
    /// Committed ledger state.
    pub state: &'a LedgerState,
    /// Whether an entry is already in the log.
    pub committed: &'a dyn Fn(&Digest) -> bool,
    /// The committed co-signature of a registered manifest.
    pub manifest_signature: &'a dyn Fn(&Digest) -> Option<CoSignature>,
    /// Makes an own entry's record durable (before anything of it is
    /// published).
    pub persist: &'a Persist<'a>,
    /// The wall clock (ms since the epoch).
    pub now_ms: u64,
    /// Largest tolerated clock difference (ms).
    pub max_skew: u64,
    /// The monotonic clock.
    pub now: Instant,
}

/// What the caller does next.
#[derive(Debug, Clone)]
pub enum CoSignAction {
    /// Gossip this (an offer, a signature or a refusal).
    Publish(Box<Gossip>),
    /// Every required signature is in: the entry goes to the mempool.
    Complete(Digest, Box<LedgerEntry>),
    /// A peer sent a signature that does not verify (an offer's stops at
    /// the first).
    Misbehaved,
    /// This node refused to co-sign (for the log).
    RefusedHere {
        /// The entry.
        digest: Digest,
        /// Why.
        refusal: CoSignRefusal,
    },
    /// Check the effect of this training event (off the core), then report
    /// with [`Table::on_effect`].
    CheckEffect {
        /// The entry.
        digest: Digest,
        /// Its body.
        body: Box<EntryBody>,
        /// Whether this node's audit ticket selects it: then replay it too
        /// (and report [`EffectVerdict::Replayed`]).
        replay: bool,
    },
    /// This node's replay refused a record: offer the evidence as this
    /// authority's own entry.
    Evidence(Box<provenance::audit::AuditFailure>),
    /// This node must sign but cannot (a key it holds only a share of):
    /// the entry waits.
    CannotSign {
        /// The entry.
        digest: Digest,
        /// Why.
        reason: String,
    },
    /// The signatures are all in but do not assemble.
    AssemblyFailed {
        /// The entry.
        digest: Digest,
        /// Why.
        reason: String,
    },
    /// An entry expired: drop it from the mempool and, if it is this
    /// node's own, forget its durable record.
    Forget {
        /// The entry.
        digest: Digest,
    },
    /// An own entry's record changed (a refusal): make it durable.
    Persist {
        /// The entry.
        digest: Digest,
        /// Its [`PendingRecord`], encoded.
        record: Vec<u8>,
    },
}

/// What became of a signature handed to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Added {
    /// Verified and kept.
    Yes,
    /// Not needed (unknown entry, not a signer, already in, other scheme).
    Not,
    /// It does not verify.
    Bad,
}

struct Pending {
    body: EntryBody,
    plan: SigningPlan,
    scheme: SignatureScheme,
    sigs: BTreeMap<AuthorityId, AuthoritySignature>,
    /// Shares of this node's authority's signature, by share index (an
    /// authority of several nodes signs with t+1 of them).
    shares: BTreeMap<u16, AuthorityShare>,
    /// Shares of its audit ticket, and the ticket once t+1 combined.
    ticket_shares: BTreeMap<u16, AuthorityShare>,
    ticket: Option<AuditTicket>,
    /// Shares of its replay, with the digest each node recomputed, and the
    /// replay once t+1 agreeing shares combined.
    replay_shares: BTreeMap<u16, (Digest, AuthorityShare)>,
    replayed: Option<Replayed>,
    /// The auditors' audits, taken with their signatures.
    audits: BTreeMap<AuthorityId, Audit>,
    /// This node's replay of the record, when its effect check ran one.
    replay: Option<Digest>,
    refused: Option<(AuthorityId, String)>,
    /// Refusals by single nodes of an authority of several, by share
    /// index, until enough of them refuse for the authority.
    node_refusals: BTreeMap<AuthorityId, BTreeMap<u16, String>>,
    /// Why it can no longer commit, once the ledger shows it.
    expired: Option<String>,
    own: bool,
    complete: bool,
    /// The authority that submits it (the operator of a campaign record,
    /// else its one signer), for the per-authority caps.
    submitter: AuthorityId,
    /// Canonical body bytes.
    bytes: usize,
    /// When it was submitted (own) or first seen here (ms since the epoch).
    submitted_ms: u64,
    first_seen: Instant,
    /// When it may be re-offered next, and how many times it has been.
    next_reoffer: Instant,
    reoffers: u32,
    /// Where this node's check of a training event's effect stands.
    effect: Effect,
}

/// This node's check of a training event's effect (`crate::effect`), which
/// runs off the core: a co-signer signs an event only once it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Not checked (or to be checked again).
    Unchecked,
    /// A check runs.
    Checking,
    /// The effect is what the event states.
    Holds,
}

impl Pending {
    fn status(&self) -> EntryStatus {
        if let Some((by, reason)) = &self.refused {
            return EntryStatus::Refused {
                by: by.clone(),
                reason: reason.clone(),
            };
        }
        if let Some(reason) = &self.expired {
            return EntryStatus::Expired {
                reason: reason.clone(),
            };
        }
        let (signed, missing) = self
            .plan
            .requests
            .iter()
            .map(|r| r.authority.clone())
            .partition(|a| self.sigs.contains_key(a));
        EntryStatus::Pending {
            signed,
            missing,
            complete: self.complete,
        }
    }

    fn record(&self) -> PendingRecord {
        PendingRecord {
            version: 2,
            body: self.body.clone(),
            signatures: self.sigs.values().cloned().collect(),
            refused: self.refused.clone(),
            submitted_ms: self.submitted_ms,
        }
    }

    fn offer(&self) -> Gossip {
        Gossip::Offer {
            body: self.body.clone(),
            signatures: self.sigs.values().cloned().collect(),
            audits: self.audits.values().cloned().collect(),
        }
    }

    /// Where the record sits and what audits it, when its policy asks
    /// for replay audits (`None`: no audits).
    fn audited(&self, state: &LedgerState) -> Option<(Digest, u64, u32, Vec<AuthorityId>)> {
        let ev = self.body.event()?;
        let rate = state.policy(ev.policy)?.audit.rate_millionths;
        (rate > 0).then(|| {
            (
                ev.link.campaign,
                ev.link.seq,
                rate,
                provenance::audit::auditors(&self.plan),
            )
        })
    }
}

/// What an authority alone signs, from its own tools: registrations and
/// an auditor's evidence of a failed replay.
fn registration(body: &EntryBody) -> bool {
    matches!(
        body,
        EntryBody::Manifest(_)
            | EntryBody::Policy(_)
            | EntryBody::Revocation(_)
            | EntryBody::Campaign(_)
            | EntryBody::AuditFailure(_)
    )
}

/// The co-signing table of one node.
pub struct Table {
    authority: AuthorityId,
    /// This node's share index among its authority's nodes, and how many
    /// of them must refuse for the authority to refuse (m - t: then t+1
    /// can no longer sign).
    index: u16,
    refusers: usize,
    max_entry_bytes: usize,
    expiry: Duration,
    caps: PendingCaps,
    pending: HashMap<Digest, Pending>,
    #[cfg(feature = "collusion")]
    colluding: bool,
}

impl Table {
    /// An empty table for a node of `authority`, taking entries of at
    /// most `max_entry_bytes` with their signatures (the block budget).
    pub fn new(authority: AuthorityId, max_entry_bytes: usize) -> Self {
        Self {
            authority,
            index: 0,
            refusers: 1,
            max_entry_bytes,
            expiry: Duration::from_secs(600),
            caps: PendingCaps::default(),
            pending: HashMap::new(),
            #[cfg(feature = "collusion")]
            colluding: false,
        }
    }

    /// The table of node `index` of an authority of `members` nodes with
    /// threshold `threshold`: one node's refusal does not refuse for the
    /// authority until t+1 of its nodes can no longer sign.
    pub fn with_members(mut self, index: u16, members: usize, threshold: usize) -> Self {
        self.index = index;
        self.refusers = members.saturating_sub(threshold).max(1);
        self
    }

    /// The table with entries expiring `expiry` after their submission
    /// (the genesis `pending_expiry_ms`).
    pub fn with_expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// The table with other per-authority caps.
    pub fn with_caps(mut self, caps: PendingCaps) -> Self {
        self.caps = caps;
        self
    }

    /// Test-only (feature `collusion`): this node's authority signs every
    /// section routed to it without checking it.
    #[cfg(feature = "collusion")]
    pub fn collude(mut self) -> Self {
        self.colluding = true;
        self
    }

    /// What `authority` has pending here and not expired: (entries, bytes).
    fn held_by(&self, authority: &AuthorityId) -> (usize, usize) {
        self.pending
            .values()
            .filter(|p| p.expired.is_none() && &p.submitter == authority)
            .fold((0, 0), |(n, b), p| (n + 1, b + p.bytes))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// An entry's status, if held.
    pub fn status(&self, digest: &Digest) -> Option<EntryStatus> {
        self.pending.get(digest).map(Pending::status)
    }

    /// Takes an entry body from this authority's tools (`own`), from a
    /// restart (`own`, with the refusal it had), or from a peer's offer
    /// with the signatures it carries. An own entry is durable before this
    /// node signs or offers it.
    pub fn offer(
        &mut self,
        env: &Env<'_>,
        body: EntryBody,
        sigs: Vec<AuthoritySignature>,
        own: bool,
        restored: Option<Restored>,
    ) -> Result<(Digest, Vec<CoSignAction>), OfferError> {
        self.offer_audited(env, body, sigs, Vec::new(), own, restored)
    }

    /// [`Self::offer`] with the audits a peer's offer carries beside its
    /// signatures.
    pub fn offer_audited(
        &mut self,
        env: &Env<'_>,
        body: EntryBody,
        sigs: Vec<AuthoritySignature>,
        audits: Vec<Audit>,
        own: bool,
        restored: Option<Restored>,
    ) -> Result<(Digest, Vec<CoSignAction>), OfferError> {
        check_body(&body)?;
        let too_large =
            |bytes: usize, limit: usize| (bytes > limit).then_some(OfferError::TooLarge { bytes, limit });
        let body_bytes = encode(&body).len();
        if let Some(e) = too_large(body_bytes, self.max_entry_bytes) {
            return Err(e);
        }
        let digest = body.digest();
        if (env.committed)(&digest) {
            return Ok((digest, Vec::new()));
        }
        let inserted = !self.pending.contains_key(&digest);
        if inserted {
            env.state.refuses(&body).map_err(|e| {
                OfferError::Refused(match e {
                    provenance::StateError::Conflict { reason, .. } => reason,
                    e => e.to_string(),
                })
            })?;
            let plan = body.signing_plan(env.state).map_err(OfferError::Unplannable)?;
            // Without a policy's scheme, one authority signs alone under
            // the scheme it declares in genesis.
            let scheme = plan.scheme.unwrap_or_else(|| match plan.requests.as_slice() {
                [alone] => env
                    .keyring
                    .authority(&alone.authority)
                    .map_or(SignatureScheme::Bls12381, |k| k.scheme),
                _ => SignatureScheme::Bls12381,
            });
            let bytes = body_bytes + attestation_allowance(env.keyring, scheme, &plan.requests);
            if let Some(e) = too_large(bytes, self.max_entry_bytes) {
                return Err(e);
            }
            let submitter = plan
                .requests
                .iter()
                .find(|r| r.role == Role::Operator)
                .or(plan.requests.first())
                .map_or_else(|| self.authority.clone(), |r| r.authority.clone());
            let (held, held_bytes) = self.held_by(&submitter);
            if held >= self.caps.entries {
                return Err(OfferError::Full {
                    authority: submitter,
                    held: format!("{held} entries"),
                    limit: format!("{} entries", self.caps.entries),
                });
            }
            if held_bytes + body_bytes > self.caps.bytes {
                return Err(OfferError::Full {
                    authority: submitter,
                    held: format!("{held_bytes} bytes"),
                    limit: format!("{} bytes", self.caps.bytes),
                });
            }
            let (restored_refusal, submitted_ms) = match restored {
                Some(r) => (r.refused, r.submitted_ms),
                None => (None, env.now_ms),
            };
            self.pending.insert(
                digest,
                Pending {
                    body,
                    plan,
                    scheme,
                    sigs: BTreeMap::new(),
                    shares: BTreeMap::new(),
                    ticket_shares: BTreeMap::new(),
                    ticket: None,
                    replay_shares: BTreeMap::new(),
                    replayed: None,
                    audits: BTreeMap::new(),
                    replay: None,
                    refused: restored_refusal,
                    node_refusals: BTreeMap::new(),
                    expired: None,
                    own,
                    complete: false,
                    submitter,
                    bytes: body_bytes,
                    submitted_ms,
                    first_seen: env.now,
                    next_reoffer: env.now + Duration::from_secs(1),
                    reoffers: 0,
                    effect: Effect::Unchecked,
                },
            );
        }
        let newly_own = own && self.pending.get(&digest).is_some_and(|p| !p.own || inserted);
        if newly_own {
            let rec = match self.pending.get_mut(&digest) {
                Some(p) => {
                    p.own = true;
                    encode(&p.record())
                }
                None => Vec::new(),
            };
            if let Err(e) = (env.persist)(&digest, &rec) {
                if inserted {
                    self.pending.remove(&digest);
                } else if let Some(p) = self.pending.get_mut(&digest) {
                    p.own = false;
                }
                return Err(OfferError::NotStored(e));
            }
        }
        let mut out = Vec::new();
        let offer_had_mine = own || sigs.iter().any(|s| s.authority == self.authority);
        let sigs = match self.pending.get(&digest) {
            Some(p) if !own => match Self::submitter_first(p, sigs, &self.authority) {
                Ok(s) => s,
                Err(e) => {
                    // A malformed offer leaves nothing behind.
                    if inserted {
                        self.pending.remove(&digest);
                    }
                    return Err(e);
                }
            },
            _ => sigs,
        };
        let mut audits: BTreeMap<AuthorityId, Audit> = audits
            .into_iter()
            .map(|a| (a.ticket.authority.clone(), a))
            .collect();
        for sig in sigs {
            let audit = audits.remove(&sig.authority);
            if self.add_signature(env, &digest, sig, audit, &mut out) == Added::Bad {
                // The rest of a forged offer is not worth a pairing, and a
                // forged offer leaves nothing behind.
                if inserted && !own {
                    self.pending.remove(&digest);
                }
                return Ok((digest, out));
            }
        }
        self.maybe_sign(env, &digest, offer_had_mine, &mut out);
        self.maybe_complete(env, &digest, &mut out);
        let refused = self.pending.get(&digest).is_some_and(|p| p.refused.is_some());
        if newly_own && !refused {
            out.extend(
                self.pending
                    .get(&digest)
                    .map(|p| CoSignAction::Publish(Box::new(p.offer()))),
            );
        }
        Ok((digest, out))
    }

    /// A peer's signature of an entry.
    pub fn on_signature(
        &mut self,
        env: &Env<'_>,
        digest: &Digest,
        sig: AuthoritySignature,
    ) -> Vec<CoSignAction> {
        self.on_audited_signature(env, digest, sig, None)
    }

    /// Whether a sibling node's share is of use here: the entry is held,
    /// this node's authority signs it under the share's scheme, its
    /// signature is not in yet, and the share's index is new.
    pub fn wants_share(&self, digest: &Digest, part: SharePart, share: &AuthorityShare) -> bool {
        share.authority == self.authority
            && self.pending.get(digest).is_some_and(|p| {
                !p.sigs.contains_key(&self.authority)
                    && p.plan.requests.iter().any(|r| r.authority == self.authority)
                    && match part {
                        SharePart::Section => {
                            share.scheme == p.scheme && !p.shares.contains_key(&share.index)
                        }
                        SharePart::Ticket => {
                            share.scheme == SignatureScheme::Bls12381
                                && p.ticket.is_none()
                                && !p.ticket_shares.contains_key(&share.index)
                        }
                        SharePart::Replay(_) => {
                            share.scheme == SignatureScheme::Bls12381
                                && p.replayed.is_none()
                                && !p.replay_shares.contains_key(&share.index)
                        }
                    }
            })
    }

    /// A sibling node's share of this authority's signature: kept when it
    /// verifies under that node's key, and combined once t+1 are in.
    pub fn on_share(
        &mut self,
        env: &Env<'_>,
        digest: &Digest,
        part: SharePart,
        share: AuthorityShare,
    ) -> Vec<CoSignAction> {
        let mut out = Vec::new();
        if !self.wants_share(digest, part, &share) {
            return out;
        }
        let Some(p) = self.pending.get(digest) else {
            return out;
        };
        let Some(message) = self.share_message(env, digest, p, part) else {
            return out;
        };
        let ok = env
            .keyring
            .authority(&self.authority)
            .is_ok_and(|k| k.verify_share(&share, &message).is_ok());
        if !ok {
            out.push(CoSignAction::Misbehaved);
            return out;
        }
        let Some(p) = self.pending.get_mut(digest) else {
            return out;
        };
        match part {
            SharePart::Section => {
                p.shares.insert(share.index, share);
                self.try_combine(env, digest, &mut out);
            }
            SharePart::Ticket => {
                p.ticket_shares.insert(share.index, share);
                if self.try_combine_audit(env, digest) {
                    self.maybe_sign(env, digest, true, &mut out);
                }
            }
            SharePart::Replay(d) => {
                p.replay_shares.insert(share.index, (d, share));
                if self.try_combine_audit(env, digest) {
                    self.maybe_sign(env, digest, true, &mut out);
                }
            }
        }
        self.maybe_complete(env, digest, &mut out);
        out
    }

    /// What a share of `part` signs for the entry, when this node's
    /// authority takes part in it.
    fn share_message(&self, env: &Env<'_>, digest: &Digest, p: &Pending, part: SharePart) -> Option<Vec<u8>> {
        match part {
            SharePart::Section => p
                .plan
                .requests
                .iter()
                .find(|r| r.authority == self.authority)
                .map(|r| r.message.clone()),
            SharePart::Ticket => {
                let (campaign, seq, _) = self.own_position(env, p)?;
                Some(provenance::audit::ticket_message(&campaign, seq))
            }
            SharePart::Replay(d) => {
                let (campaign, seq, _) = self.own_position(env, p)?;
                Some(provenance::audit::replay_message(&campaign, seq, digest, &d))
            }
        }
    }

    /// The record's position and audit rate, when this node's authority
    /// audits it.
    fn own_position(&self, env: &Env<'_>, p: &Pending) -> Option<(Digest, u64, u32)> {
        match p.audited(env.state) {
            Some((campaign, seq, rate, auditors)) if auditors.contains(&self.authority) => {
                Some((campaign, seq, rate))
            }
            _ => None,
        }
    }

    /// Combines this authority's ticket, then its replay, from t+1 shares
    /// (the replay from t+1 that agree on the recomputed digest); true when
    /// either was newly combined.
    fn try_combine_audit(&mut self, env: &Env<'_>, digest: &Digest) -> bool {
        let Ok(keys) = env.keyring.authority(&self.authority) else {
            return false;
        };
        let need = keys.threshold() + 1;
        let Some(p) = self.pending.get(digest) else {
            return false;
        };
        let Some((campaign, seq, _)) = self.own_position(env, p) else {
            return false;
        };
        let bls = SignatureScheme::Bls12381;
        let mut ticket = None;
        if p.ticket.is_none() && p.ticket_shares.len() >= need {
            let shares: Vec<AuthorityShare> = p.ticket_shares.values().cloned().collect();
            ticket = keys
                .combine(bls, &provenance::audit::ticket_message(&campaign, seq), &shares)
                .ok()
                .map(|s| AuditTicket {
                    authority: s.authority,
                    signature: s.signature,
                });
        }
        let mut replayed = None;
        if p.replayed.is_none() {
            let mut by_digest: BTreeMap<Digest, Vec<AuthorityShare>> = BTreeMap::new();
            for (d, s) in p.replay_shares.values() {
                by_digest.entry(*d).or_default().push(s.clone());
            }
            if by_digest.len() > 1 {
                tracing::warn!(
                    "{}'s nodes replayed record {} of campaign {} to {} different digests",
                    self.authority,
                    seq,
                    campaign.short(),
                    by_digest.len()
                );
            }
            if let Some((d, shares)) = by_digest.into_iter().find(|(_, s)| s.len() >= need) {
                replayed = keys
                    .combine(
                        bls,
                        &provenance::audit::replay_message(&campaign, seq, digest, &d),
                        &shares,
                    )
                    .ok()
                    .map(|s| Replayed {
                        digest: d,
                        signature: s.signature,
                    });
            }
        }
        let changed = ticket.is_some() || replayed.is_some();
        if let Some(p) = self.pending.get_mut(digest) {
            if ticket.is_some() {
                p.ticket = ticket;
            }
            if replayed.is_some() {
                p.replayed = replayed;
            }
        }
        changed
    }

    /// This authority's audit of the record from its combined ticket and
    /// replay (an authority of several nodes): `None` when it does not
    /// audit it, `Some(None)` while a part is missing.
    fn combined_audit(&self, env: &Env<'_>, p: &Pending) -> Option<Option<Audit>> {
        let (_, _, rate) = self.own_position(env, p)?;
        let Some(ticket) = p.ticket.clone() else {
            return Some(None);
        };
        if !ticket.selects(rate) {
            return Some(Some(Audit { ticket, replay: None }));
        }
        Some(p.replayed.clone().map(|r| Audit {
            ticket,
            replay: Some(r),
        }))
    }

    /// Once t+1 shares of this node's authority are in, its signature:
    /// kept and gossiped as any signature.
    fn try_combine(&mut self, env: &Env<'_>, digest: &Digest, out: &mut Vec<CoSignAction>) {
        let Some(p) = self.pending.get(digest) else {
            return;
        };
        if p.sigs.contains_key(&self.authority) {
            return;
        }
        let Some(req) = p.plan.requests.iter().find(|r| r.authority == self.authority) else {
            return;
        };
        let Ok(keys) = env.keyring.authority(&self.authority) else {
            return;
        };
        if p.shares.len() <= keys.threshold() {
            return;
        }
        // An auditor's signature goes with its audit: wait for the
        // combined ticket (and replay, where it selects).
        let audit = match self.combined_audit(env, p) {
            None => None,
            Some(None) => return,
            Some(Some(a)) => Some(a),
        };
        let shares: Vec<AuthorityShare> = p.shares.values().cloned().collect();
        let combined = keys.combine(p.scheme, &req.message, &shares);
        let Some(p) = self.pending.get_mut(digest) else {
            return;
        };
        match combined {
            Ok(sig) => {
                p.sigs.insert(self.authority.clone(), sig.clone());
                if let Some(a) = &audit {
                    p.audits.insert(self.authority.clone(), a.clone());
                }
                out.push(CoSignAction::Publish(Box::new(Gossip::Signature {
                    entry: *digest,
                    signature: sig,
                    audit,
                })));
            }
            // Each share was checked on arrival (or is this node's own).
            Err(e) => out.push(CoSignAction::CannotSign {
                digest: *digest,
                reason: format!("combining {} shares: {e}", shares.len()),
            }),
        }
    }

    /// A peer's signature of an entry with its audit, if it audits it.
    pub fn on_audited_signature(
        &mut self,
        env: &Env<'_>,
        digest: &Digest,
        sig: AuthoritySignature,
        audit: Option<Audit>,
    ) -> Vec<CoSignAction> {
        let mut out = Vec::new();
        self.add_signature(env, digest, sig, audit, &mut out);
        self.maybe_complete(env, digest, &mut out);
        out
    }

    /// The outcome of a [`CoSignAction::CheckEffect`]: sign if it holds,
    /// refuse if it is broken, check again at the next offer otherwise.
    pub fn on_effect(&mut self, env: &Env<'_>, digest: &Digest, verdict: EffectVerdict) -> Vec<CoSignAction> {
        let mut out = Vec::new();
        let Some(p) = self.pending.get_mut(digest) else {
            return out;
        };
        match verdict {
            EffectVerdict::Holds => {
                p.effect = Effect::Holds;
                self.maybe_sign(env, digest, true, &mut out);
                self.maybe_complete(env, digest, &mut out);
            }
            EffectVerdict::Replayed(d) => {
                p.effect = Effect::Holds;
                p.replay = Some(d);
                self.maybe_sign(env, digest, true, &mut out);
                self.maybe_complete(env, digest, &mut out);
            }
            EffectVerdict::Unchecked(why) => {
                p.effect = Effect::Unchecked;
                tracing::info!("effect of {} not checked yet: {why}", digest.short());
            }
            EffectVerdict::Broken(refusal) => {
                p.effect = Effect::Unchecked;
                self.refuse_here(digest, refusal, &mut out);
            }
            EffectVerdict::Failed(why) => {
                p.effect = Effect::Unchecked;
                match self.evidence(env, digest, &why) {
                    Ok(e) => out.push(CoSignAction::Evidence(Box::new(e))),
                    Err(e) => tracing::warn!("no evidence of the failed replay of {}: {e}", digest.short()),
                }
                self.refuse_here(digest, CoSignRefusal::Replay(why), &mut out);
            }
        }
        out
    }

    /// The evidence of this node's failed replay of `digest`: the record,
    /// the operator's signature its offer carried, this node's ticket and
    /// the reason (at most 1,000 bytes, cut at a character boundary).
    fn evidence(&self, env: &Env<'_>, digest: &Digest, why: &str) -> Result<AuditFailure, String> {
        let p = self.pending.get(digest).ok_or("not pending")?;
        let ev = p.body.event().ok_or("not a training record")?;
        let operator = p
            .plan
            .requests
            .iter()
            .find(|r| r.role == Role::Operator)
            .ok_or("the record has no operator")?;
        let operator_signature = p
            .sigs
            .get(&operator.authority)
            .cloned()
            .ok_or("the offer lacks the operator's signature")?;
        let role = p
            .plan
            .requests
            .iter()
            .find(|r| r.authority == self.authority)
            .map(|r| r.role)
            .ok_or("this node does not audit the record")?;
        let ticket =
            AuditTicket::sign(env.signer, &ev.link.campaign, ev.link.seq).map_err(|e| e.to_string())?;
        let mut cut = why.len().min(1000);
        while !why.is_char_boundary(cut) {
            cut -= 1;
        }
        Ok(AuditFailure {
            version: 1,
            record: Box::new(p.body.clone()),
            operator_signature,
            auditor: self.authority.clone(),
            role,
            ticket: ticket.signature,
            reason: why[..cut].to_string(),
            time: ev.step_time,
        })
    }

    /// A peer's refusal, sent by node `index` of `by` (the caller checks
    /// that): the authority refuses once `refusers` of its nodes did (m - t;
    /// 1 for an authority of one node).
    pub fn on_refusal(
        &mut self,
        digest: &Digest,
        by: AuthorityId,
        index: u16,
        refusers: usize,
        reason: String,
    ) -> Vec<CoSignAction> {
        let Some(p) = self.pending.get_mut(digest) else {
            return Vec::new();
        };
        let refused = p.node_refusals.entry(by.clone()).or_default();
        refused.insert(index, reason.clone());
        if refused.len() < refusers {
            return Vec::new();
        }
        self.refuse(digest, by, reason).into_iter().collect()
    }

    /// After a commit: entries that the committed `state` makes impossible
    /// to commit ([`LedgerState::refuses`]) expire: their status says why,
    /// they are no longer offered, and each leaves the mempool (an own
    /// one's durable record is forgotten too).
    pub fn expire_hopeless(&mut self, state: &LedgerState) -> Vec<CoSignAction> {
        let mut out = Vec::new();
        for (d, p) in self.pending.iter_mut().filter(|(_, p)| p.expired.is_none()) {
            if let Err(e) = state.refuses(&p.body) {
                p.expired = Some(match e {
                    provenance::StateError::Conflict { reason, .. } => reason,
                    e => e.to_string(),
                });
                out.push(CoSignAction::Forget { digest: *d });
            }
        }
        out
    }

    /// Entries that can no longer commit in time expire: those submitted
    /// longer than the genesis expiry ago, and training events whose step
    /// time is older than any block stamped from now on may hold
    /// ([`crate::ledger::MAX_EVENT_AGE_MS`] behind the stamp, the stamp at
    /// most `max_skew_ms` behind this clock).
    pub fn expire_stale(&mut self, now_ms: u64, max_skew_ms: u64) -> Vec<CoSignAction> {
        let mut out = Vec::new();
        let expiry = self.expiry.as_millis() as u64;
        for (d, p) in self.pending.iter_mut().filter(|(_, p)| p.expired.is_none()) {
            let reason = if now_ms >= p.submitted_ms.saturating_add(expiry) {
                format!(
                    "not committed within {} s of its submission (genesis pending_expiry_ms)",
                    expiry / 1000
                )
            } else {
                match p.body.record_time().map(|t| t.0) {
                    Some(t) if now_ms > t + crate::ledger::MAX_EVENT_AGE_MS + max_skew_ms => format!(
                        "its time is more than {} s older than any block that could still hold it",
                        crate::ledger::MAX_EVENT_AGE_MS / 1000
                    ),
                    _ => continue,
                }
            };
            p.expired = Some(reason);
            out.push(CoSignAction::Forget { digest: *d });
        }
        out
    }

    /// Entries that entered the log: forgotten. Returns how long each own
    /// one took, from submission to commit.
    pub fn committed(&mut self, digests: &[Digest], now: Instant) -> Vec<Duration> {
        digests
            .iter()
            .filter_map(|d| self.pending.remove(d))
            .filter(|p| p.own)
            .map(|p| now.saturating_duration_since(p.first_seen))
            .collect()
    }

    /// Housekeeping: re-offers own entries not yet committed, the oldest
    /// first, at most [`REOFFERS_PER_TICK`], each backing off (1, 2, 4 ..
    /// 16 s) so that a stalled consortium's gossip queues do not fill;
    /// forgets others' entries that stalled.
    pub fn tick(&mut self, now: Instant) -> Vec<CoSignAction> {
        let mut own: Vec<(Instant, Digest)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.own && p.refused.is_none() && p.expired.is_none() && p.next_reoffer <= now)
            .map(|(d, p)| (p.first_seen, *d))
            .collect();
        own.sort();
        let mut out = Vec::new();
        for (_, d) in own.iter().take(REOFFERS_PER_TICK) {
            if let Some(p) = self.pending.get_mut(d) {
                out.push(CoSignAction::Publish(Box::new(p.offer())));
                p.reoffers = p.reoffers.saturating_add(1);
                let backoff = Duration::from_secs(1 << p.reoffers.min(4)).min(MAX_REOFFER_BACKOFF);
                p.next_reoffer = now + backoff;
            }
        }
        self.pending.retain(|_, p| {
            (p.own && p.expired.is_none())
                || now.saturating_duration_since(p.first_seen) < FORGET_OTHERS_AFTER
        });
        out
    }

    /// A peer's offer's signatures, the submitter's first: at most one per
    /// signer, each of a signer of the entry, and the submitter's present
    /// (unless the submitter is `me`: an entry offered in my name that I
    /// did not sign is refused in the open, [`CoSignRefusal::NotOwnMeasurement`]).
    fn submitter_first(
        p: &Pending,
        mut sigs: Vec<AuthoritySignature>,
        me: &AuthorityId,
    ) -> Result<Vec<AuthoritySignature>, OfferError> {
        if sigs.len() > p.plan.requests.len() {
            return Err(OfferError::ExtraSignatures(
                "more signatures than the entry has signers",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &sigs {
            if !p.plan.requests.iter().any(|r| r.authority == s.authority) {
                return Err(OfferError::ExtraSignatures(
                    "a signature of an authority that does not sign it",
                ));
            }
            if !seen.insert(&s.authority) {
                return Err(OfferError::ExtraSignatures("two signatures of one authority"));
            }
        }
        match sigs.iter().position(|s| s.authority == p.submitter) {
            Some(i) => sigs.swap(0, i),
            None if &p.submitter == me => {}
            None => return Err(OfferError::Unsigned(p.submitter.clone())),
        }
        Ok(sigs)
    }

    /// Whether `authority`'s signature of `digest` would be news here: the
    /// entry is held, `authority` signs it, and its signature is not in.
    pub fn wants_signature(&self, digest: &Digest, authority: &AuthorityId) -> bool {
        self.pending.get(digest).is_some_and(|p| {
            !p.sigs.contains_key(authority) && p.plan.requests.iter().any(|r| &r.authority == authority)
        })
    }

    fn add_signature(
        &mut self,
        env: &Env<'_>,
        digest: &Digest,
        sig: AuthoritySignature,
        audit: Option<Audit>,
        out: &mut Vec<CoSignAction>,
    ) -> Added {
        let Some(p) = self.pending.get_mut(digest) else {
            return Added::Not;
        };
        if p.sigs.contains_key(&sig.authority) || sig.scheme != p.scheme {
            return Added::Not;
        }
        let Some(req) = p.plan.requests.iter().find(|r| r.authority == sig.authority) else {
            return Added::Not;
        };
        // An auditor's signature is taken only with its audit: a valid
        // ticket, and a valid replay exactly where the ticket selects.
        let audited = p.audited(env.state);
        let audit = match (&audited, audit) {
            (Some((campaign, seq, rate, auditors)), audit) if auditors.contains(&sig.authority) => {
                let Some(a) = audit else {
                    return Added::Not;
                };
                let record = AuditedRecord {
                    campaign,
                    seq: *seq,
                    body: digest,
                    rate_millionths: *rate,
                    auditors,
                };
                if a.ticket.authority != sig.authority || check_audit(env.keyring, &record, &a).is_err() {
                    out.push(CoSignAction::Misbehaved);
                    return Added::Bad;
                }
                Some(a)
            }
            _ => None,
        };
        if env.verified.verify_authority(env.keyring, &sig, &req.message) {
            if let Some(a) = audit {
                p.audits.insert(sig.authority.clone(), a);
            }
            p.sigs.insert(sig.authority.clone(), sig);
            Added::Yes
        } else {
            out.push(CoSignAction::Misbehaved);
            Added::Bad
        }
    }

    /// Whether this node audits the entry and its ticket selects it.
    fn selected(&self, env: &Env<'_>, p: &Pending) -> bool {
        match p.audited(env.state) {
            // An authority of several nodes: its ticket combined from t+1
            // shares.
            Some((_, _, rate, auditors))
                if auditors.contains(&self.authority) && env.signer.threshold() > 0 =>
            {
                p.ticket.as_ref().is_some_and(|t| t.selects(rate))
            }
            Some((campaign, seq, rate, auditors)) if auditors.contains(&self.authority) => {
                AuditTicket::sign(env.signer, &campaign, seq).is_ok_and(|t| t.selects(rate))
            }
            _ => false,
        }
    }

    /// This node's audit of the entry, when it audits it: its ticket and,
    /// where the ticket selects the record, its replay (`Err`: selected and
    /// not replayed).
    fn own_audit(&self, env: &Env<'_>, digest: &Digest, p: &Pending) -> Result<Option<Audit>, CoSignRefusal> {
        let Some((campaign, seq, rate, auditors)) = p.audited(env.state) else {
            return Ok(None);
        };
        // An authority of several nodes attaches the audit it combined
        // when it combines its signature (`try_combine`).
        if !auditors.contains(&self.authority) || env.signer.threshold() > 0 {
            return Ok(None);
        }
        let ticket = AuditTicket::sign(env.signer, &campaign, seq)
            .map_err(|e| CoSignRefusal::Replay(format!("this node cannot sign its ticket: {e}")))?;
        if !ticket.selects(rate) {
            return Ok(Some(Audit { ticket, replay: None }));
        }
        let Some(d) = p.replay else {
            return Err(CoSignRefusal::Replay(
                "its ticket selects the record and this node did not replay it".into(),
            ));
        };
        let replay = Replayed::sign(env.signer, &campaign, seq, digest, d)
            .map_err(|e| CoSignRefusal::Replay(format!("this node cannot sign its replay: {e}")))?;
        Ok(Some(Audit {
            ticket,
            replay: Some(replay),
        }))
    }

    /// Signs this authority's section if it is required and checks out;
    /// re-sends a signature given before when a peer's offer lacked it.
    fn maybe_sign(
        &mut self,
        env: &Env<'_>,
        digest: &Digest,
        offer_had_mine: bool,
        out: &mut Vec<CoSignAction>,
    ) {
        let Some(p) = self.pending.get(digest) else {
            return;
        };
        let Some(req) = p.plan.requests.iter().find(|r| r.authority == self.authority) else {
            return;
        };
        if let Some(sig) = p.sigs.get(&self.authority) {
            if !offer_had_mine {
                out.push(CoSignAction::Publish(Box::new(Gossip::Signature {
                    entry: *digest,
                    signature: sig.clone(),
                    audit: p.audits.get(&self.authority).cloned(),
                })));
            }
            return;
        }
        let me = env.signer.index();
        if !offer_had_mine {
            // A peer's offer without this authority's signature: the
            // shares this node gave may have been lost.
            let own = p
                .ticket_shares
                .get(&me)
                .map(|s| (SharePart::Ticket, s))
                .into_iter()
                .chain(p.replay_shares.get(&me).map(|(d, s)| (SharePart::Replay(*d), s)))
                .chain(p.shares.get(&me).map(|s| (SharePart::Section, s)));
            for (part, share) in own {
                out.push(CoSignAction::Publish(Box::new(Gossip::Share {
                    entry: *digest,
                    part,
                    share: share.clone(),
                })));
            }
        }
        if p.shares.contains_key(&me) {
            // This node gave its share; t+1 are not in yet.
            return;
        }
        if let Some(reason) = p
            .node_refusals
            .get(&self.authority)
            .and_then(|r| r.get(&self.index))
        {
            // This node refused (its authority may not have yet): a peer
            // offers it again, and the refusal may have been lost.
            if !offer_had_mine && !p.own {
                out.push(CoSignAction::Publish(Box::new(Gossip::Refusal {
                    entry: *digest,
                    authority: self.authority.clone(),
                    reason: reason.clone(),
                })));
            }
            return;
        }
        if let Some((by, reason)) = &p.refused {
            // A peer offers it again: our refusal may have been lost.
            if by == &self.authority && !offer_had_mine && !p.own {
                out.push(CoSignAction::Publish(Box::new(Gossip::Refusal {
                    entry: *digest,
                    authority: by.clone(),
                    reason: reason.clone(),
                })));
            }
            return;
        }
        // What an authority signs only from its own tools (its
        // registrations, an operator's measurements): an authority of
        // several nodes signs it when t+1 of them were each given it by its
        // tools. A node that was not stays silent instead of refusing for
        // the whole authority.
        if env.signer.threshold() > 0 && !p.own && (req.role == Role::Operator || registration(&p.body)) {
            return;
        }
        let verdict = self.verdict(env, p, req.role);
        // An auditor of several nodes needs its ticket (t+1 shares) to know
        // whether it replays the record.
        // (Only once this node vouches for the entry: a ticket share given
        // before its checks would tell the operator the draw of a position
        // it could then fill with a record the auditor refuses.)
        if verdict.is_ok() && env.signer.threshold() > 0 && p.ticket.is_none() {
            if let Some((campaign, seq, _)) = self.own_position(env, p) {
                if !p.ticket_shares.contains_key(&me) {
                    let message = provenance::audit::ticket_message(&campaign, seq);
                    if !self.give_share(
                        env,
                        digest,
                        SharePart::Ticket,
                        SignatureScheme::Bls12381,
                        &message,
                        out,
                    ) {
                        return;
                    }
                    self.try_combine_audit(env, digest);
                }
                if self.pending.get(digest).is_none_or(|p| p.ticket.is_none()) {
                    return;
                }
            }
        }
        let Some(p) = self.pending.get(digest) else {
            return;
        };
        let Some(req) = p.plan.requests.iter().find(|r| r.authority == self.authority) else {
            return;
        };
        let message = req.message.clone();
        let scheme = p.scheme;
        if verdict.is_ok() && self.needs_effect(p, req.role) {
            if p.effect == Effect::Unchecked {
                let body = Box::new(p.body.clone());
                let replay = self.selected(env, p);
                if let Some(p) = self.pending.get_mut(digest) {
                    p.effect = Effect::Checking;
                }
                out.push(CoSignAction::CheckEffect {
                    digest: *digest,
                    body,
                    replay,
                });
            }
            return;
        }
        // An auditor of several nodes whose ticket selects the record gives
        // its share of the replay (over the digest it recomputed) first.
        if verdict.is_ok() && env.signer.threshold() > 0 && self.selected(env, p) && p.replayed.is_none() {
            let Some(d) = p.replay else {
                return self.refuse_here(
                    digest,
                    CoSignRefusal::Replay(
                        "its ticket selects the record and this node did not replay it".into(),
                    ),
                    out,
                );
            };
            let Some((campaign, seq, _)) = self.own_position(env, p) else {
                return;
            };
            if !p.replay_shares.contains_key(&me) {
                let message = provenance::audit::replay_message(&campaign, seq, digest, &d);
                if !self.give_share(
                    env,
                    digest,
                    SharePart::Replay(d),
                    SignatureScheme::Bls12381,
                    &message,
                    out,
                ) {
                    return;
                }
                self.try_combine_audit(env, digest);
            }
            if self.pending.get(digest).is_none_or(|p| p.replayed.is_none()) {
                return;
            }
        }
        let Some(p) = self.pending.get(digest) else {
            return;
        };
        let audit = match verdict.clone().and_then(|()| self.own_audit(env, digest, p)) {
            Ok(a) => a,
            Err(refusal) => return self.refuse_here(digest, refusal, out),
        };
        match verdict {
            // An authority of several nodes (t > 0): this node's share,
            // combined with its siblings' once t+1 are in.
            Ok(()) if env.signer.threshold() > 0 => {
                if self.give_share(env, digest, SharePart::Section, scheme, &message, out) {
                    self.try_combine(env, digest, out);
                }
            }
            Ok(()) => match env.signer.sign(scheme, &message) {
                Ok(sig) => {
                    if let Some(p) = self.pending.get_mut(digest) {
                        p.sigs.insert(self.authority.clone(), sig.clone());
                        if let Some(a) = &audit {
                            p.audits.insert(self.authority.clone(), a.clone());
                        }
                    }
                    out.push(CoSignAction::Publish(Box::new(Gossip::Signature {
                        entry: *digest,
                        signature: sig,
                        audit,
                    })));
                }
                // A key this node cannot sign with alone (a share of a
                // t-of-m authority key): the entry waits.
                Err(e) => out.push(CoSignAction::CannotSign {
                    digest: *digest,
                    reason: e.to_string(),
                }),
            },
            Err(refusal) => self.refuse_here(digest, refusal, out),
        }
    }

    /// Signs this node's share of `part` over `message`, keeps it and
    /// gossips it to its authority's other nodes; false (and the entry
    /// waits) when it cannot sign.
    fn give_share(
        &mut self,
        env: &Env<'_>,
        digest: &Digest,
        part: SharePart,
        scheme: SignatureScheme,
        message: &[u8],
        out: &mut Vec<CoSignAction>,
    ) -> bool {
        let share = match env.signer.sign_share(scheme, message) {
            Ok(s) => s,
            Err(e) => {
                out.push(CoSignAction::CannotSign {
                    digest: *digest,
                    reason: e.to_string(),
                });
                return false;
            }
        };
        if let Some(p) = self.pending.get_mut(digest) {
            match part {
                SharePart::Section => p.shares.insert(share.index, share.clone()),
                SharePart::Ticket => p.ticket_shares.insert(share.index, share.clone()),
                SharePart::Replay(d) => p
                    .replay_shares
                    .insert(share.index, (d, share.clone()))
                    .map(|(_, s)| s),
            };
        }
        out.push(CoSignAction::Publish(Box::new(Gossip::Share {
            entry: *digest,
            part,
            share,
        })));
        true
    }

    /// Refuses this authority's section, for the log and the consortium.
    fn refuse_here(&mut self, digest: &Digest, refusal: CoSignRefusal, out: &mut Vec<CoSignAction>) {
        let reason = refusal.to_string();
        let refused = self.pending.get_mut(digest).map_or(0, |p| {
            let r = p.node_refusals.entry(self.authority.clone()).or_default();
            r.insert(self.index, reason.clone());
            r.len()
        });
        if refused >= self.refusers {
            out.extend(self.refuse(digest, self.authority.clone(), reason.clone()));
        }
        out.push(CoSignAction::RefusedHere {
            digest: *digest,
            refusal,
        });
        out.push(CoSignAction::Publish(Box::new(Gossip::Refusal {
            entry: *digest,
            authority: self.authority.clone(),
            reason,
        })));
    }

    /// Whether this node checks the entry's effect and its place in the
    /// campaign's order before signing: a training event, for governance
    /// and the data sources; a refusal or an aggregate, for governance (the
    /// operator measured and drew them itself).
    fn needs_effect(&self, p: &Pending, role: Role) -> bool {
        #[cfg(feature = "collusion")]
        if self.colluding {
            return false;
        }
        p.effect != Effect::Holds
            && match role {
                Role::DataSource => matches!(p.body, EntryBody::Step(_) | EntryBody::Composite(_)),
                Role::Governance => matches!(
                    p.body,
                    EntryBody::Step(_)
                        | EntryBody::Composite(_)
                        | EntryBody::Refusal(_)
                        | EntryBody::RefusalAggregate(_)
                ),
                Role::Operator => false,
            }
    }

    /// Whether this node's authority, in `role`, vouches for the entry.
    fn verdict(&self, env: &Env<'_>, p: &Pending, role: Role) -> Result<(), CoSignRefusal> {
        let registration = registration(&p.body);
        match role {
            // The operator vouches for its own measurement, and each
            // authority registers its own objects, only from its own tools.
            _ if p.own && (role == Role::Operator || registration) => Ok(()),
            Role::Operator => Err(CoSignRefusal::NotOwnMeasurement),
            _ if registration => Err(CoSignRefusal::NotOwnRegistration),
            #[cfg(feature = "collusion")]
            _ if self.colluding => Ok(()),
            role => {
                let ctx = CheckContext {
                    keyring: env.keyring,
                    state: env.state,
                    manifest_signature: env.manifest_signature,
                    now: Timestamp(env.now_ms),
                    max_skew: env.max_skew,
                };
                check_section(role, &self.authority, &p.body, &ctx)
            }
        }
    }

    /// Records a refusal by a required signer; an own entry's changed
    /// record is to be persisted.
    fn refuse(&mut self, digest: &Digest, by: AuthorityId, reason: String) -> Option<CoSignAction> {
        let p = self.pending.get_mut(digest)?;
        if p.refused.is_some() || !p.plan.requests.iter().any(|r| r.authority == by) {
            return None;
        }
        p.refused = Some((by, reason));
        p.own.then(|| CoSignAction::Persist {
            digest: *digest,
            record: encode(&p.record()),
        })
    }

    fn maybe_complete(&mut self, env: &Env<'_>, digest: &Digest, out: &mut Vec<CoSignAction>) {
        let Some(p) = self.pending.get_mut(digest) else {
            return;
        };
        if p.complete || p.refused.is_some() || p.sigs.len() < p.plan.requests.len() {
            return;
        }
        let assembled = (|| {
            let mut c = CoSigner::new(env.keyring, p.scheme, p.plan.requests.clone())?;
            for s in p.sigs.values() {
                // Each was verified once, on arrival (or is ours).
                c.add_verified(s.clone())?;
            }
            c.finish()
        })();
        match assembled {
            Ok(cosig) => {
                p.complete = true;
                // The auditors' audits, in plan order.
                let audits = p
                    .plan
                    .requests
                    .iter()
                    .filter_map(|r| p.audits.get(&r.authority).cloned())
                    .collect();
                let entry = LedgerEntry::audited(p.body.clone(), cosig, audits);
                // Each auditor's audit was checked when its signature was
                // taken (`add_signature`, `own_audit`), so a complete set
                // of signatures carries every audit: no signature is
                // verified again on this task. The guard below costs no
                // cryptography.
                if let Some((_, _, _, auditors)) = p.audited(env.state) {
                    if let Some(missing) = auditors.iter().find(|a| !p.audits.contains_key(*a)) {
                        out.push(CoSignAction::AssemblyFailed {
                            digest: *digest,
                            reason: format!("audit: {missing} left no audit ticket"),
                        });
                        return;
                    }
                }
                out.push(CoSignAction::Complete(*digest, Box::new(entry)));
                if p.own {
                    out.push(CoSignAction::Publish(Box::new(p.offer())));
                }
            }
            Err(e) => out.push(CoSignAction::AssemblyFailed {
                digest: *digest,
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
#[path = "cosigning_tests.rs"]
mod tests;
