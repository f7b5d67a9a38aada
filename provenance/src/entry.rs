//! The log's one leaf type, [`LedgerEntry`]: a tagged union of every object
//! with its signatures, and the rule of who must sign each kind.
//!
//! | kind | required signers (and the role they sign in) |
//! |---|---|
//! | manifest | its data-source authority |
//! | policy | its governance authority (a successor must be signed by the governance authority of the policy it supersedes) |
//! | campaign, campaign close | the campaign's operator |
//! | step event, composite event | every data-source authority whose examples it holds (its own section), the policy's governance authority (admission decisions), the operator (measurement) |
//! | refusal, refusal aggregate | the governance authority of the policy in force and the operator |
//! | revocation | the data-source authority of the revoked source |
//! | checkpoint | the consortium threshold key |
//!
//! Each authority signs [`crate::crypto::section_message`]: its own
//! section's digest bound to the entry body's digest and to its role. A
//! training record under a policy that asks for replay audits also carries
//! every auditor's ticket and replay ([`crate::audit`]), checked with the
//! signatures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::{audit_faults, Audit, AuditFailure, AuditedRecord};
use crate::campaign::{Campaign, CampaignClose};
use crate::checkpoint::Checkpoint;
use crate::codec::{limit, nested_version, Canonical, DecodeError};
use crate::crypto::{verify_cosignature, CoSignature, KeyRing, SignatureError, MAX_AUTHORITIES};
use crate::digest::{Bytes, Digest, ObjectKind};
use crate::event::{CompositeEvent, StepEvent};
use crate::manifest::DataSourceManifest;
use crate::policy::PolicyArtifact;
use crate::refusal::{Refusal, RefusalAggregate};
use crate::revocation::Revocation;
pub use crate::signers::SigningPlan;

/// The object an entry carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EntryBody {
    /// A data source.
    Manifest(DataSourceManifest),
    /// An admission policy.
    Policy(PolicyArtifact),
    /// A campaign opening.
    Campaign(Campaign),
    /// A campaign close.
    CampaignClose(CampaignClose),
    /// A step event.
    Step(StepEvent),
    /// A composite event.
    Composite(CompositeEvent),
    /// A refusal.
    Refusal(Refusal),
    /// A refusal aggregate.
    RefusalAggregate(RefusalAggregate),
    /// A revocation.
    Revocation(Revocation),
    /// A checkpoint.
    Checkpoint(Checkpoint),
    /// An auditor's evidence that its replay refused a training record.
    AuditFailure(AuditFailure),
}

/// Who vouches for an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attestation {
    /// The required authorities' co-signature.
    Authorities(CoSignature),
    /// The consortium threshold signature (checkpoints).
    Consortium(Bytes),
}

/// The log's leaf: one object with its signatures. Its canonical bytes are
/// the Merkle leaf input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Format version.
    pub version: u16,
    /// The object.
    pub body: EntryBody,
    /// Its signatures.
    pub attestation: Attestation,
    /// A training record's replay audits (empty for anything else, and
    /// under a policy that asks for none): each auditor's ticket and,
    /// where the ticket selects the record, its replay
    /// ([`crate::audit`]).
    pub audits: Vec<Audit>,
}

impl Canonical for LedgerEntry {
    const KIND: ObjectKind = ObjectKind::LedgerEntry;
    const VERSION: u16 = 3;
    fn declared_version(&self) -> u16 {
        self.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        match &self.body {
            EntryBody::Manifest(o) => nested_version(o)?,
            EntryBody::Policy(o) => nested_version(o)?,
            EntryBody::Campaign(o) => nested_version(o)?,
            EntryBody::CampaignClose(o) => nested_version(o)?,
            EntryBody::Step(o) => nested_version(o)?,
            EntryBody::Composite(o) => nested_version(o)?,
            EntryBody::Refusal(o) => nested_version(o)?,
            EntryBody::RefusalAggregate(o) => nested_version(o)?,
            EntryBody::Revocation(o) => nested_version(o)?,
            EntryBody::Checkpoint(o) => nested_version(o)?,
            EntryBody::AuditFailure(o) => nested_version(o)?,
        }
        let ok = match &self.attestation {
            Attestation::Authorities(c) => c.size_ok(),
            Attestation::Consortium(s) => s.len() == 96,
        };
        if !ok {
            return Err(DecodeError::Invalid {
                kind: Self::KIND.name(),
                field: "attestation",
                reason: "signature sizes out of bounds".into(),
            });
        }
        if !self.audits.is_empty() && self.body.event().is_none() {
            return Err(DecodeError::Invalid {
                kind: Self::KIND.name(),
                field: "audits",
                reason: format!("a {} carries no audits", self.body.kind().name()),
            });
        }
        limit(Self::KIND, "audits", self.audits.len(), MAX_AUTHORITIES)?;
        let sizes_ok = self.audits.iter().all(|a| {
            a.ticket.signature.len() == 96 && a.replay.as_ref().is_none_or(|r| r.signature.len() == 96)
        });
        if !sizes_ok {
            return Err(DecodeError::Invalid {
                kind: Self::KIND.name(),
                field: "audits",
                reason: "a ticket or replay signature is not 96 bytes".into(),
            });
        }
        Ok(())
    }
}

/// What the required-signers rule needs to know of the ledger's state:
/// registered sources, policies and campaigns.
pub trait LedgerView {
    /// A registered source.
    fn source(&self, id: &Digest) -> Option<&DataSourceManifest>;
    /// A registered policy.
    fn policy(&self, id: &Digest) -> Option<&PolicyArtifact>;
    /// A registered campaign.
    fn campaign(&self, id: &Digest) -> Option<&Campaign>;
}

/// An in-memory [`LedgerView`].
#[derive(Debug, Clone, Default)]
pub struct MemoryLedgerView {
    /// Sources by id.
    pub sources: BTreeMap<Digest, DataSourceManifest>,
    /// Policies by digest.
    pub policies: BTreeMap<Digest, PolicyArtifact>,
    /// Campaigns by digest.
    pub campaigns: BTreeMap<Digest, Campaign>,
}

impl MemoryLedgerView {
    /// Records the state-changing objects of an entry body.
    pub fn apply(&mut self, body: &EntryBody) {
        self.apply_with_digest(body, body.digest());
    }

    /// [`Self::apply`] for a caller that already holds the body's digest.
    pub fn apply_with_digest(&mut self, body: &EntryBody, digest: Digest) {
        match body {
            EntryBody::Manifest(m) => {
                self.sources.insert(digest, m.clone());
            }
            EntryBody::Policy(p) => {
                self.policies.insert(digest, p.clone());
            }
            EntryBody::Campaign(c) => {
                self.campaigns.insert(digest, c.clone());
            }
            _ => {}
        }
    }
}

impl LedgerView for MemoryLedgerView {
    fn source(&self, id: &Digest) -> Option<&DataSourceManifest> {
        self.sources.get(id)
    }
    fn policy(&self, id: &Digest) -> Option<&PolicyArtifact> {
        self.policies.get(id)
    }
    fn campaign(&self, id: &Digest) -> Option<&Campaign> {
        self.campaigns.get(id)
    }
}

/// Why an entry's signers could not be determined or did not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The entry refers to a source not registered.
    #[error("unknown source {0}")]
    UnknownSource(Digest),
    /// The entry refers to a policy not registered.
    #[error("unknown policy {0}")]
    UnknownPolicy(Digest),
    /// The entry refers to a campaign not registered.
    #[error("unknown campaign {0}")]
    UnknownCampaign(Digest),
    /// The entry is inconsistent with the ledger state.
    #[error("invalid entry: {0}")]
    Invalid(String),
    /// A signature is missing, bad or unexpected.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A training record's replay audits are incomplete or invalid.
    #[error("audit: {0}")]
    Audit(String),
}

impl EntryBody {
    /// The kind of the object.
    pub fn kind(&self) -> ObjectKind {
        match self {
            EntryBody::Manifest(_) => ObjectKind::Manifest,
            EntryBody::Policy(_) => ObjectKind::Policy,
            EntryBody::Campaign(_) => ObjectKind::Campaign,
            EntryBody::CampaignClose(_) => ObjectKind::CampaignClose,
            EntryBody::Step(_) => ObjectKind::StepEvent,
            EntryBody::Composite(_) => ObjectKind::CompositeEvent,
            EntryBody::Refusal(_) => ObjectKind::Refusal,
            EntryBody::RefusalAggregate(_) => ObjectKind::RefusalAggregate,
            EntryBody::Revocation(_) => ObjectKind::Revocation,
            EntryBody::Checkpoint(_) => ObjectKind::Checkpoint,
            EntryBody::AuditFailure(_) => ObjectKind::AuditFailure,
        }
    }

    /// The object's content address (its own kind's tagged digest). This is
    /// what signatures bind to and what chains link.
    pub fn digest(&self) -> Digest {
        match self {
            EntryBody::Manifest(o) => o.digest(),
            EntryBody::Policy(o) => o.digest(),
            EntryBody::Campaign(o) => o.digest(),
            EntryBody::CampaignClose(o) => o.digest(),
            EntryBody::Step(o) => o.digest(),
            EntryBody::Composite(o) => o.digest(),
            EntryBody::Refusal(o) => o.digest(),
            EntryBody::RefusalAggregate(o) => o.digest(),
            EntryBody::Revocation(o) => o.digest(),
            EntryBody::Checkpoint(o) => o.digest(),
            EntryBody::AuditFailure(o) => o.digest(),
        }
    }
}

impl LedgerEntry {
    /// An entry with authority signatures.
    pub fn signed(body: EntryBody, cosignature: CoSignature) -> Self {
        Self::audited(body, cosignature, Vec::new())
    }

    /// A training record with its co-signature and its auditors' audits.
    pub fn audited(body: EntryBody, cosignature: CoSignature, audits: Vec<Audit>) -> Self {
        Self {
            version: Self::VERSION,
            body,
            attestation: Attestation::Authorities(cosignature),
            audits,
        }
    }

    /// Checks every signature the entry needs under `view`, naming the one
    /// that is missing, bad or unexpected.
    pub fn verify(&self, keyring: &KeyRing, view: &dyn LedgerView) -> Result<(), EntryError> {
        match (&self.body, &self.attestation) {
            (EntryBody::Checkpoint(cp), Attestation::Consortium(sig)) => {
                if keyring.verify_consortium(&cp.signing_message(), sig.as_slice()) {
                    Ok(())
                } else {
                    Err(EntryError::Invalid(
                        "consortium signature on checkpoint does not verify".into(),
                    ))
                }
            }
            (EntryBody::Checkpoint(_), Attestation::Authorities(_)) => Err(EntryError::Invalid(
                "a checkpoint must carry the consortium signature".into(),
            )),
            (_, Attestation::Consortium(_)) => Err(EntryError::Invalid(
                "only checkpoints carry a consortium signature".into(),
            )),
            (body, Attestation::Authorities(cosig)) => {
                let plan = body.signing_plan(view)?;
                verify_cosignature(keyring, plan.scheme, &plan.requests, cosig)?;
                if let EntryBody::AuditFailure(f) = body {
                    f.verify_evidence(keyring, view)
                        .map_err(|e| EntryError::Audit(format!("the evidence does not stand: {e}")))?;
                }
                self.verify_audits(keyring, view, &plan)
            }
        }
    }

    /// A training record's audits under its policy's rate: none when the
    /// rate is 0; otherwise a valid ticket from every co-signer other than
    /// the operator, and a valid replay exactly where a ticket selects the
    /// record. `plan` is the body's signing plan under `view`.
    pub fn verify_audits(
        &self,
        keyring: &KeyRing,
        view: &dyn LedgerView,
        plan: &SigningPlan,
    ) -> Result<(), EntryError> {
        let Some(ev) = self.body.event() else {
            return Ok(());
        };
        let rate = view
            .policy(ev.policy)
            .ok_or(EntryError::UnknownPolicy(*ev.policy))?
            .audit
            .rate_millionths;
        if rate == 0 {
            if self.audits.is_empty() {
                return Ok(());
            }
            return Err(EntryError::Audit(
                "audits on a record whose policy asks for none".into(),
            ));
        }
        let auditors = crate::audit::auditors(plan);
        let body = self.body.digest();
        let record = AuditedRecord {
            campaign: &ev.link.campaign,
            seq: ev.link.seq,
            body: &body,
            rate_millionths: rate,
            auditors: &auditors,
        };
        let faults = audit_faults(keyring, &record, &self.audits);
        if faults.is_empty() {
            Ok(())
        } else {
            Err(EntryError::Audit(
                faults
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            ))
        }
    }
}
