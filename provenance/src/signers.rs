//! Who signs what: the one rule every signer, indexer and verifier calls.
//!
//! [`EntryBody::required_signers`] names each authority that must sign an
//! entry, its role and the section it signs, reading the ledger state
//! through a [`LedgerView`] and checking what the rule itself requires (a
//! successor policy by the same authority and a later version; a
//! revocation by the source's own authority). [`EntryBody::signing_plan`]
//! turns that into the messages to sign (each section hashed), and
//! [`EntryBody::references`] lists the state objects the rule reads, so a
//! light client can fetch and prove them first.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::codec::encode;
use crate::crypto::{section_message, SignRequest, SignatureScheme};
use crate::digest::{tagged_hash, Digest, ObjectKind};
use crate::entry::{EntryBody, EntryError, LedgerView};
use crate::event::ExampleRecord;
use crate::ids::{AuthorityId, Role};

/// What one signer signs of an entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Section<'a> {
    /// The whole entry (its body digest).
    Whole,
    /// A data-source authority's records of a training event: each
    /// example's source, index, hash and inclusion proof.
    Sources(Vec<&'a ExampleRecord>),
    /// Governance's admission decisions on every record of an event.
    Decisions,
    /// The operator's measurement of an event's update.
    Measurement,
}

/// One required signer.
#[derive(Debug, Clone, PartialEq)]
pub struct Signer<'a> {
    /// The authority.
    pub authority: &'a AuthorityId,
    /// The role it signs in.
    pub role: Role,
    /// What it signs.
    pub section: Section<'a>,
}

/// Every required signer of an entry, in plan order (data-source
/// authorities sorted, then governance, then the operator), and the scheme
/// campaign records must use.
#[derive(Debug, Clone, PartialEq)]
pub struct Signers<'a> {
    /// The scheme the policy requires, for campaign records.
    pub scheme: Option<SignatureScheme>,
    /// The signers.
    pub signers: Vec<Signer<'a>>,
}

/// The signatures an entry body needs, and the scheme they must use (if
/// the kind fixes one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningPlan {
    /// The scheme the policy requires, for campaign records.
    pub scheme: Option<SignatureScheme>,
    /// One request per required signer.
    pub requests: Vec<SignRequest>,
}

#[derive(Serialize)]
struct SourceSection<'a> {
    authority: &'a AuthorityId,
    records: Vec<(&'a Digest, u64, &'a Digest, &'a [Digest])>,
}

#[derive(Serialize)]
struct GovernanceSection<'a> {
    policy: &'a Digest,
    decisions: Vec<(&'a Digest, u64, &'a crate::event::AdmitDecision)>,
}

fn whole(authority: &AuthorityId, role: Role) -> Signer<'_> {
    Signer {
        authority,
        role,
        section: Section::Whole,
    }
}

impl EntryBody {
    /// The sources, policies and campaigns [`Self::required_signers`]
    /// reads, in first-use order, each once.
    pub fn references(&self) -> Vec<Digest> {
        let mut out = Vec::new();
        if let Some(e) = self.event() {
            out.extend(e.records.iter().map(|r| r.source));
        }
        match self {
            EntryBody::Campaign(c) => out.push(c.policy),
            EntryBody::Policy(p) => out.extend(p.supersedes),
            EntryBody::Revocation(r) => out.push(r.source),
            EntryBody::AuditFailure(f) => out.extend(f.record.references()),
            // A close's signer is its campaign's operator, under the
            // campaign's policy (which the campaign itself references).
            EntryBody::CampaignClose(c) => out.push(c.campaign),
            b => {
                out.extend(b.record_policy().copied());
                out.extend(b.chain_link().map(|l| l.campaign));
            }
        }
        let mut seen = BTreeSet::new();
        out.retain(|d| seen.insert(*d));
        out
    }

    /// Who must sign this body under the ledger state `view`.
    pub fn required_signers<'a>(&'a self, view: &'a dyn LedgerView) -> Result<Signers<'a>, EntryError> {
        let policy_of = |d: &Digest| view.policy(d).ok_or(EntryError::UnknownPolicy(*d));
        let campaign_of = |d: &Digest| view.campaign(d).ok_or(EntryError::UnknownCampaign(*d));
        let alone = |s: Signer<'a>| Signers {
            scheme: None,
            signers: vec![s],
        };
        Ok(match self {
            EntryBody::Manifest(m) => alone(whole(&m.authority, Role::DataSource)),
            EntryBody::Policy(p) => {
                if let Some(prev) = &p.supersedes {
                    let old = policy_of(prev)?;
                    if old.authority != p.authority {
                        return Err(EntryError::Invalid(format!(
                            "policy supersedes one by {}, so {} must sign it, not {}",
                            old.authority, old.authority, p.authority
                        )));
                    }
                    if p.policy_version <= old.policy_version {
                        return Err(EntryError::Invalid(format!(
                            "policy version {} does not follow superseded version {}",
                            p.policy_version, old.policy_version
                        )));
                    }
                }
                alone(whole(&p.authority, Role::Governance))
            }
            EntryBody::Campaign(c) => Signers {
                scheme: Some(policy_of(&c.policy)?.signature_scheme),
                signers: vec![whole(&c.operator, Role::Operator)],
            },
            EntryBody::CampaignClose(close) => {
                let c = campaign_of(&close.campaign)?;
                Signers {
                    scheme: Some(policy_of(&c.policy)?.signature_scheme),
                    signers: vec![whole(&c.operator, Role::Operator)],
                }
            }
            EntryBody::Step(_)
            | EntryBody::Composite(_)
            | EntryBody::Refusal(_)
            | EntryBody::RefusalAggregate(_) => {
                let (Some(link), Some(policy)) = (self.chain_link(), self.record_policy()) else {
                    return Err(EntryError::Invalid("not a campaign record".into()));
                };
                let c = campaign_of(&link.campaign)?;
                let p = policy_of(policy)?;
                let mut signers = Vec::new();
                let (gov, op) = match self.event() {
                    Some(e) => {
                        // Records grouped by their source's authority, sorted,
                        // so every node derives the same plan.
                        let mut by_authority: BTreeMap<&AuthorityId, Vec<&ExampleRecord>> = BTreeMap::new();
                        for r in e.records {
                            let m = view
                                .source(&r.source)
                                .ok_or(EntryError::UnknownSource(r.source))?;
                            by_authority.entry(&m.authority).or_default().push(r);
                        }
                        signers.extend(by_authority.into_iter().map(|(authority, recs)| Signer {
                            authority,
                            role: Role::DataSource,
                            section: Section::Sources(recs),
                        }));
                        (Section::Decisions, Section::Measurement)
                    }
                    None => (Section::Whole, Section::Whole),
                };
                signers.push(Signer {
                    authority: &p.authority,
                    role: Role::Governance,
                    section: gov,
                });
                signers.push(Signer {
                    authority: &c.operator,
                    role: Role::Operator,
                    section: op,
                });
                Signers {
                    scheme: Some(p.signature_scheme),
                    signers,
                }
            }
            EntryBody::Revocation(r) => {
                let source = view
                    .source(&r.source)
                    .ok_or(EntryError::UnknownSource(r.source))?;
                if source.authority != r.authority {
                    return Err(EntryError::Invalid(format!(
                        "source {} was signed by {}, only it can revoke it",
                        r.source.short(),
                        source.authority
                    )));
                }
                alone(whole(&r.authority, Role::DataSource))
            }
            EntryBody::Checkpoint(_) => Signers {
                scheme: None,
                signers: Vec::new(),
            },
            // The auditor alone, in the role it audits in.
            EntryBody::AuditFailure(f) => {
                let link = f.record.chain_link().ok_or_else(|| {
                    EntryError::Invalid("the evidence's record is not a training record".into())
                })?;
                campaign_of(&link.campaign)?;
                alone(whole(&f.auditor, f.role))
            }
        })
    }

    /// The signatures this body needs under the ledger state `view`: each
    /// required signer's section hashed into the message it signs.
    pub fn signing_plan(&self, view: &dyn LedgerView) -> Result<SigningPlan, EntryError> {
        let digest = self.digest();
        let Signers { scheme, signers } = self.required_signers(view)?;
        let requests = signers
            .into_iter()
            .map(|s| {
                let section = match &s.section {
                    Section::Whole => digest,
                    Section::Sources(recs) => section_digest(&SourceSection {
                        authority: s.authority,
                        records: recs
                            .iter()
                            .map(|r| (&r.source, r.index, &r.example_hash, r.proof.as_slice()))
                            .collect(),
                    }),
                    Section::Decisions => {
                        let (policy, records) = match self.event() {
                            Some(e) => (e.policy, e.records),
                            None => (&digest, &[][..]),
                        };
                        section_digest(&GovernanceSection {
                            policy,
                            decisions: records
                                .iter()
                                .map(|r| (&r.source, r.index, &r.decision))
                                .collect(),
                        })
                    }
                    Section::Measurement => self.operator_section(),
                };
                SignRequest {
                    authority: s.authority.clone(),
                    role: s.role,
                    message: section_message(&digest, s.role, s.authority, &section),
                }
            })
            .collect();
        Ok(SigningPlan { scheme, requests })
    }

    /// The digest of the operator's section of a training record (what
    /// its signature binds besides the body digest; an audit failure's
    /// evidence carries it).
    pub fn operator_section(&self) -> Digest {
        tagged_hash(ObjectKind::Section, &self.measurement_bytes())
    }

    /// The operator's signed measurement of a training event: its steps,
    /// measurement, blobs, time and link (a composite also its records
    /// root). Empty for other kinds.
    fn measurement_bytes(&self) -> Vec<u8> {
        match self {
            EntryBody::Step(e) => encode(&(
                e.step,
                &e.measurement,
                &e.sketch_blob,
                &e.delta_blob,
                &e.step_time,
                &e.link,
            )),
            EntryBody::Composite(e) => encode(&(
                e.first_step,
                e.last_step,
                &e.measurement,
                &e.sketch_blob,
                &e.delta_blob,
                &e.step_time,
                &e.link,
                &e.records_root,
            )),
            _ => Vec::new(),
        }
    }
}

fn section_digest<T: Serialize>(section: &T) -> Digest {
    tagged_hash(ObjectKind::Section, &encode(section))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_needs_no_authority_and_references_nothing() {
        let view = crate::entry::MemoryLedgerView::default();
        let body = EntryBody::Checkpoint(crate::checkpoint::Checkpoint {
            version: 5,
            origin: "o".into(),
            size: 0,
            root: Digest::ZERO,
            height: 0,
            time: crate::Timestamp(0),
            index: Digest::ZERO,
        });
        assert!(body.references().is_empty());
        assert_eq!(body.required_signers(&view).map(|s| s.signers.len()), Ok(0));
    }
}
