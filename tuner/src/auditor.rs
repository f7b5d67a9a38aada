//! A co-signer's replay audit of a training record: its ticket
//! ([`provenance::audit`]) and, where the ticket selects the record, the
//! replay ([`crate::replay`]), whose fault is the co-signer's reason to
//! refuse.
//!
//! Governance replays the whole record from the batch and optimizer state
//! the operator sent ([`AuditMaterial`]). A data source replays its own
//! examples from its own text; in a composite record only those of the
//! record's first step (the states between its steps are not committed),
//! which is every example of a step event.

use std::collections::BTreeMap;

use provenance::audit::{Audit, AuditPolicy, AuditTicket, Replayed};
use provenance::{AuthoritySigner, Digest, EntryBody, SignatureError};

use crate::blobs::SketchRecord;
use crate::compute::StepContext;
use crate::data::PreparedSource;
use crate::lora::Adapters;
use crate::replay::{replay_examples, replay_record, AuditMaterial, ReplayFault, StatedExample};

/// What an auditor replays.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// The whole record (governance).
    Record,
    /// The examples of these sources, from their text (a data source).
    Own(&'a BTreeMap<Digest, PreparedSource>),
}

/// One co-signer's auditing.
#[derive(Debug, Clone, Copy)]
pub struct Auditor<'a> {
    /// Its authority's signer (tickets and replays are BLS).
    pub signer: &'a AuthoritySigner,
    /// What it replays.
    pub scope: Scope<'a>,
    /// The policy's audit rule.
    pub policy: AuditPolicy,
    /// The campaign's dropout rate.
    pub dropout: f32,
}

/// An audit done: the part left beside the co-signature, and the fault
/// when the replay did not confirm the record (then it must not be signed).
#[derive(Debug, Clone)]
pub struct Audited {
    /// The ticket, and the replay where it selects the record and confirmed it.
    pub audit: Audit,
    /// Why the replay refused the record.
    pub fault: Option<ReplayFault>,
}

/// The record's inputs an auditor reads besides the body.
#[derive(Debug, Clone, Copy)]
pub struct RecordInputs<'a> {
    /// The campaign.
    pub campaign: &'a Digest,
    /// The adapters after the campaign's last committed record.
    pub adapters: &'a Adapters,
    /// The optimizer-state digest the last committed record states (the
    /// initial optimizer's for the first).
    pub committed_opt: &'a Digest,
    /// The record's sketch blob, decoded.
    pub sketches: &'a [SketchRecord],
    /// What the operator sent (governance).
    pub material: Option<&'a AuditMaterial>,
}

impl Auditor<'_> {
    /// Whether this auditor audits `body`: governance every training
    /// record, a data source those with examples of its sources.
    pub fn audits(&self, body: &EntryBody) -> bool {
        match (body.event(), self.scope) {
            (None, _) => false,
            (Some(_), Scope::Record) => true,
            (Some(ev), Scope::Own(own)) => ev.records.iter().any(|r| own.contains_key(&r.source)),
        }
    }

    /// Signs the ticket for `body` and, where it selects the record,
    /// replays it.
    pub fn audit(
        &self,
        ctx: &StepContext<'_>,
        body: &EntryBody,
        inputs: &RecordInputs<'_>,
    ) -> Result<Audited, SignatureError> {
        let seq = body.event().map(|e| e.link.seq).unwrap_or_default();
        let ticket = AuditTicket::sign(self.signer, inputs.campaign, seq)?;
        if !ticket.selects(self.policy.rate_millionths) {
            return Ok(Audited {
                audit: Audit { ticket, replay: None },
                fault: None,
            });
        }
        match self.replay(ctx, body, inputs) {
            Ok(digest) => {
                let replay = Replayed::sign(self.signer, inputs.campaign, seq, &body.digest(), digest)?;
                Ok(Audited {
                    audit: Audit {
                        ticket,
                        replay: Some(replay),
                    },
                    fault: None,
                })
            }
            Err(fault) => Ok(Audited {
                audit: Audit { ticket, replay: None },
                fault: Some(fault),
            }),
        }
    }

    fn replay(
        &self,
        ctx: &StepContext<'_>,
        body: &EntryBody,
        inputs: &RecordInputs<'_>,
    ) -> Result<Digest, ReplayFault> {
        let ev = body
            .event()
            .ok_or_else(|| ReplayFault::Unreplayable("not a training record".into()))?;
        match self.scope {
            Scope::Record => {
                let material = inputs.material.filter(|m| m.seq == ev.link.seq).ok_or_else(|| {
                    ReplayFault::Unreplayable("the operator sent no batch for this record".into())
                })?;
                replay_record(
                    ctx,
                    self.dropout,
                    inputs.adapters,
                    inputs.committed_opt,
                    body,
                    inputs.sketches,
                    material,
                )
                .map(|r| r.digest)
            }
            Scope::Own(own) => {
                if inputs.sketches.len() != ev.records.len() {
                    return Err(ReplayFault::Unreplayable(format!(
                        "{} records, {} sketches",
                        ev.records.len(),
                        inputs.sketches.len()
                    )));
                }
                let mut mine = Vec::new();
                for (r, sk) in ev.records.iter().zip(inputs.sketches) {
                    let Some(src) = own.get(&r.source) else { continue };
                    if sk.step != ev.first_step {
                        continue;
                    }
                    if (sk.source, sk.index) != (r.source, r.index) {
                        return Err(ReplayFault::Unreplayable(
                            "the sketches are not the records'".into(),
                        ));
                    }
                    if src.examples.hash(r.index) != Some(r.example_hash) {
                        return Err(ReplayFault::Differs {
                            what: format!("example hash of {} #{}", r.source, r.index),
                            stated: r.example_hash.to_string(),
                            found: "the source's own".into(),
                        });
                    }
                    mine.push(StatedExample {
                        window: src.window(r.index),
                        decision: &r.decision,
                        sketch: &sk.values,
                    });
                }
                if mine.is_empty() {
                    // Its examples are in later steps of a composite record.
                    return Ok(crate::replay::replay_digest(None, &[]));
                }
                replay_examples(
                    ctx,
                    self.dropout,
                    inputs.adapters,
                    &mine,
                    self.policy.example_tolerance,
                    ev.first_step,
                )
            }
        }
    }
}
