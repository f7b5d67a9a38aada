//! Replay audits: which co-signer re-executes which training record, and
//! the check that each did.
//!
//! For every record of a campaign chain (campaign id and sequence number),
//! each co-signer that may audit it (the data sources with examples in it
//! and the policy's governance authority; never the operator) signs an
//! [`AuditTicket`]: its BLS signature over a message bound to that chain
//! position only. BLS signatures are unique and deterministic, so every
//! re-offer of the position gets the same ticket, and nobody without the
//! authority's key can compute it in advance: the operator cannot know
//! which records will be replayed, and the auditor cannot choose. The
//! ticket selects the record when its draw (a tagged SHA3-256 of the
//! signature) falls below the policy's [`AuditPolicy::rate_millionths`].
//! Tickets stay BLS under the authority's genesis key whatever scheme the
//! policy co-signs with, since Ed25519 and ML-DSA signatures are not unique
//! per message.
//!
//! A selected auditor replays the record and leaves a [`Replayed`] beside
//! its ticket: the digest of what it recomputed, signed by it and bound to
//! the record's body. [`audit_faults`] checks a record's audits: every
//! auditor's ticket present and valid, a replay exactly where the ticket
//! selects, each replay signed by its auditor.
//!
//! A replay that does not confirm a record is committed as an
//! [`AuditFailure`]: the auditor's evidence that the operator signed a
//! record its ticket selected and its replay refused.

use serde::{Deserialize, Serialize};
use sha3::{Digest as _, Sha3_256};

use crate::codec::{limit, nested_version, Canonical, DecodeError};
use crate::crypto::{
    signing_message, AuthoritySignature, KeyRing, SignatureError, SignatureScheme, SigningDomain,
};
use crate::digest::{Bytes, Digest, ObjectKind};
use crate::entry::{EntryBody, LedgerView};
use crate::ids::{AuthorityId, Role, Timestamp};
use crate::AuthoritySigner;

/// The whole range of [`AuditPolicy::rate_millionths`]: every record audited.
pub const ALWAYS: u32 = 1_000_000;

/// How a policy asks for replay audits.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct AuditPolicy {
    /// The share of records each auditor replays, in millionths
    /// (0: none, 100,000: 10 %, 1,000,000: all).
    pub rate_millionths: u32,
    /// The largest relative difference (L2 norm of the difference over the
    /// L2 norm of the stated values) a data source accepts between the
    /// per-example quantities it replays for its own examples alone and
    /// those the operator computed in the whole batch: the same kernels on
    /// a smaller batch may round differently. Governance replays the batch
    /// the operator ran and compares exactly.
    pub example_tolerance: f32,
}

/// Why a record's audits do not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditFault {
    /// An auditor left no ticket.
    #[error("{authority} left no audit ticket")]
    Missing {
        /// The auditor.
        authority: AuthorityId,
    },
    /// A ticket is not its authority's signature over this position.
    #[error("{authority}'s audit ticket does not verify: {reason}")]
    BadTicket {
        /// The auditor.
        authority: AuthorityId,
        /// Why.
        reason: String,
    },
    /// A ticket by an authority that does not audit this record, or a
    /// second one by the same authority.
    #[error("{authority} is not an auditor of this record or left two tickets")]
    Unexpected {
        /// The authority.
        authority: AuthorityId,
    },
    /// The ticket selects the record and no replay is recorded.
    #[error("{authority}'s ticket selects this record and it left no replay")]
    Unaudited {
        /// The auditor.
        authority: AuthorityId,
    },
    /// A replay is recorded where the ticket does not select the record.
    #[error("{authority}'s ticket does not select this record, yet a replay is recorded")]
    Unselected {
        /// The auditor.
        authority: AuthorityId,
    },
    /// A replay's signature does not verify.
    #[error("{authority}'s replay record does not verify: {reason}")]
    BadReplay {
        /// The auditor.
        authority: AuthorityId,
        /// Why.
        reason: String,
    },
}

/// An auditor's ticket for one chain position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTicket {
    /// The auditor.
    pub authority: AuthorityId,
    /// Its BLS signature (96 bytes) over [`ticket_message`].
    pub signature: Bytes,
}

/// What an auditor recomputed, signed by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// The digest of the recomputed quantities.
    pub digest: Digest,
    /// Its BLS signature (96 bytes) over [`replay_message`].
    pub signature: Bytes,
}

/// One auditor's part of a record: its ticket and, where the ticket
/// selects the record, its replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// The ticket.
    pub ticket: AuditTicket,
    /// The replay, exactly when the ticket selects the record.
    pub replay: Option<Replayed>,
}

fn position_payload(campaign: &Digest, seq: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&campaign.0);
    p.extend_from_slice(&seq.to_be_bytes());
    p
}

/// The message a ticket signs: the chain position alone.
pub fn ticket_message(campaign: &Digest, seq: u64) -> Vec<u8> {
    signing_message(SigningDomain::AuditTicket, &position_payload(campaign, seq))
}

/// The message a replay signs: the position, the record's body digest and
/// the recomputed quantities' digest.
pub fn replay_message(campaign: &Digest, seq: u64, body: &Digest, replay: &Digest) -> Vec<u8> {
    let mut p = position_payload(campaign, seq);
    p.extend_from_slice(&body.0);
    p.extend_from_slice(&replay.0);
    signing_message(SigningDomain::AuditReplay, &p)
}

fn verify_bls(
    keyring: &KeyRing,
    authority: &AuthorityId,
    signature: &Bytes,
    message: &[u8],
) -> Result<(), String> {
    let keys = keyring.authority(authority).map_err(|e| e.to_string())?;
    let sig = AuthoritySignature {
        authority: authority.clone(),
        scheme: SignatureScheme::Bls12381,
        key: keys.key_id(SignatureScheme::Bls12381),
        signature: signature.clone(),
    };
    keys.verify(&sig, message).map_err(|e| e.to_string())
}

impl AuditTicket {
    /// Signs the ticket of `signer`'s authority for a position.
    pub fn sign(signer: &AuthoritySigner, campaign: &Digest, seq: u64) -> Result<Self, SignatureError> {
        let s = signer.sign(SignatureScheme::Bls12381, &ticket_message(campaign, seq))?;
        Ok(Self {
            authority: s.authority,
            signature: s.signature,
        })
    }

    /// Checks the ticket is its authority's signature over the position.
    pub fn verify(&self, keyring: &KeyRing, campaign: &Digest, seq: u64) -> Result<(), AuditFault> {
        verify_bls(
            keyring,
            &self.authority,
            &self.signature,
            &ticket_message(campaign, seq),
        )
        .map_err(|reason| AuditFault::BadTicket {
            authority: self.authority.clone(),
            reason,
        })
    }

    /// The ticket's draw: the first 8 bytes (big-endian) of
    /// `SHA3-256("govtune-audit/v1 draw" || signature)`.
    pub fn draw(&self) -> u64 {
        let mut h = Sha3_256::new();
        h.update(b"govtune-audit/v1 draw");
        h.update(self.signature.as_slice());
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_be_bytes(b)
    }

    /// Whether the ticket selects its record at `rate_millionths`:
    /// `floor(draw · 10^6 / 2^64) < rate_millionths`.
    pub fn selects(&self, rate_millionths: u32) -> bool {
        let scaled = (u128::from(self.draw()) * u128::from(ALWAYS)) >> 64;
        scaled < u128::from(rate_millionths)
    }
}

impl Replayed {
    /// Signs the replay of a record whose body has digest `body`.
    pub fn sign(
        signer: &AuthoritySigner,
        campaign: &Digest,
        seq: u64,
        body: &Digest,
        digest: Digest,
    ) -> Result<Self, SignatureError> {
        let s = signer.sign(
            SignatureScheme::Bls12381,
            &replay_message(campaign, seq, body, &digest),
        )?;
        Ok(Self {
            digest,
            signature: s.signature,
        })
    }
}

/// Where a record sits and what audits it: the input of [`audit_faults`].
#[derive(Debug, Clone, Copy)]
pub struct AuditedRecord<'a> {
    /// Its campaign.
    pub campaign: &'a Digest,
    /// Its sequence number in the campaign's chain.
    pub seq: u64,
    /// Its body's digest.
    pub body: &'a Digest,
    /// The policy's rate.
    pub rate_millionths: u32,
    /// The authorities that audit it (data sources with examples in it and
    /// governance).
    pub auditors: &'a [AuthorityId],
}

/// The authorities that audit a training record: the co-signers of its
/// signing plan other than the operator, in plan order.
pub fn auditors(plan: &crate::SigningPlan) -> Vec<AuthorityId> {
    plan.requests
        .iter()
        .filter(|r| r.role != Role::Operator)
        .map(|r| r.authority.clone())
        .collect()
}

/// Checks one auditor's audit of a record (the auditor being one of the
/// record's): a valid ticket, and a valid replay exactly where it selects.
/// Returns whether the ticket selects the record.
pub fn check_audit(keyring: &KeyRing, record: &AuditedRecord<'_>, audit: &Audit) -> Result<bool, AuditFault> {
    let who = &audit.ticket.authority;
    audit.ticket.verify(keyring, record.campaign, record.seq)?;
    let selected = audit.ticket.selects(record.rate_millionths);
    match (selected, &audit.replay) {
        (true, None) => Err(AuditFault::Unaudited {
            authority: who.clone(),
        }),
        (false, Some(_)) => Err(AuditFault::Unselected {
            authority: who.clone(),
        }),
        (false, None) => Ok(false),
        (true, Some(r)) => {
            let m = replay_message(record.campaign, record.seq, record.body, &r.digest);
            verify_bls(keyring, who, &r.signature, &m).map_err(|reason| AuditFault::BadReplay {
                authority: who.clone(),
                reason,
            })?;
            Ok(true)
        }
    }
}

/// Every fault in a record's audits (empty: each auditor left a valid
/// ticket, and a valid replay exactly where its ticket selects the record).
pub fn audit_faults(keyring: &KeyRing, record: &AuditedRecord<'_>, audits: &[Audit]) -> Vec<AuditFault> {
    let mut faults = Vec::new();
    let mut seen: Vec<&AuthorityId> = Vec::new();
    for a in audits {
        let who = &a.ticket.authority;
        if !record.auditors.contains(who) || seen.contains(&who) {
            faults.push(AuditFault::Unexpected {
                authority: who.clone(),
            });
            continue;
        }
        seen.push(who);
        if let Err(f) = check_audit(keyring, record, a) {
            faults.push(f);
        }
    }
    for who in record.auditors {
        if !seen.contains(&who) {
            faults.push(AuditFault::Missing {
                authority: who.clone(),
            });
        }
    }
    faults
}

/// An auditor's evidence that its replay did not confirm a training record
/// the operator offered: the record itself (its body, as offered), the
/// operator's signature over its section of it, the auditor's ticket that
/// selected it, and what the replay found. Signed by the auditor;
/// [`AuditFailure::verify_evidence`] checks that it stands on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditFailure {
    /// Format version.
    pub version: u16,
    /// The refused training record, as the operator offered it.
    pub record: Box<EntryBody>,
    /// The operator's signature of its section of the record (the one its
    /// node gave the offer).
    pub operator_signature: AuthoritySignature,
    /// The auditor.
    pub auditor: AuthorityId,
    /// The role it audits in (governance or data source).
    pub role: Role,
    /// Its ticket for the record's position (96 bytes).
    pub ticket: Bytes,
    /// What the replay found.
    pub reason: String,
    /// The refused record's step time.
    pub time: Timestamp,
}

impl Canonical for AuditFailure {
    const KIND: ObjectKind = ObjectKind::AuditFailure;
    const VERSION: u16 = 1;
    fn declared_version(&self) -> u16 {
        self.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        let k = Self::KIND;
        let invalid = |field, reason: String| DecodeError::Invalid {
            kind: k.name(),
            field,
            reason,
        };
        match self.record.as_ref() {
            EntryBody::Step(o) => nested_version(o)?,
            EntryBody::Composite(o) => nested_version(o)?,
            other => {
                return Err(invalid(
                    "record",
                    format!("a {} is not a training record", other.kind().name()),
                ))
            }
        }
        limit(k, "reason", self.reason.len(), 1024)?;
        limit(
            k,
            "operator_signature",
            self.operator_signature.signature.len(),
            crate::crypto::MAX_AUTHORITY_SIGNATURE_BYTES,
        )?;
        if self.ticket.len() != 96 {
            return Err(invalid(
                "ticket",
                format!("{} bytes, a BLS signature is 96", self.ticket.len()),
            ));
        }
        if self.role == Role::Operator {
            return Err(invalid("role", "the operator does not audit".into()));
        }
        self.auditor
            .validate()
            .map_err(|e| invalid("auditor", e.to_string()))?;
        self.operator_signature
            .authority
            .validate()
            .map_err(|e| invalid("operator_signature", e.to_string()))
    }
}

impl AuditFailure {
    /// Checks the evidence under the ledger state `view`: the record's
    /// operator signed its section of it, the auditor is one of the
    /// record's auditors in the role it names, and its ticket for the
    /// record's position is valid and selects it at the rate of the
    /// record's policy.
    pub fn verify_evidence(&self, keyring: &KeyRing, view: &dyn LedgerView) -> Result<(), String> {
        let ev = self
            .record
            .event()
            .ok_or_else(|| "the evidence's record is not a training record".to_string())?;
        let plan = self.record.signing_plan(view).map_err(|e| e.to_string())?;
        let op = plan
            .requests
            .iter()
            .find(|r| r.role == Role::Operator)
            .ok_or_else(|| "the record has no operator".to_string())?;
        if self.operator_signature.authority != op.authority {
            return Err(format!(
                "the evidence carries {}'s signature, the record's operator is {}",
                self.operator_signature.authority, op.authority
            ));
        }
        keyring
            .verify(&self.operator_signature, &op.message)
            .map_err(|e| format!("the operator's signature of the record does not verify: {e}"))?;
        if !plan
            .requests
            .iter()
            .any(|r| r.role != Role::Operator && r.role == self.role && r.authority == self.auditor)
        {
            return Err(format!(
                "{} does not audit this record as {}",
                self.auditor, self.role
            ));
        }
        let rate = view
            .policy(ev.policy)
            .ok_or_else(|| format!("the record's policy {} is not registered", ev.policy))?
            .audit
            .rate_millionths;
        let ticket = AuditTicket {
            authority: self.auditor.clone(),
            signature: self.ticket.clone(),
        };
        ticket
            .verify(keyring, &ev.link.campaign, ev.link.seq)
            .map_err(|e| e.to_string())?;
        if !ticket.selects(rate) {
            return Err(format!("{}'s ticket does not select the record", self.auditor));
        }
        Ok(())
    }
}
