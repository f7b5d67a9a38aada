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
//!
//! [`AuditingSink`] plays a consortium's co-signers in one process (tests,
//! benchmarks): the same decisions, without the network.

use std::collections::BTreeMap;

use provenance::audit::{Audit, AuditFailure, AuditPolicy, AuditTicket, Replayed};
use provenance::crypto::section_message;
use provenance::{
    AuthorityId, AuthoritySigner, Canonical, Digest, EntryBody, Role, SignatureError, SignatureScheme,
};

use crate::blobs::{decode_sketches, SketchRecord};
use crate::campaign::{CampaignSpec, TrainSettings};
use crate::compute::Prepared;
use crate::compute::StepContext;
use crate::data::DemoConsortium;
use crate::data::PreparedSource;
use crate::error::{Result, TunerError};
use crate::lora::Adapters;
use crate::recipe::Recipe;
use crate::replay::{replay_examples, replay_record, AuditMaterial, ReplayFault, StatedExample};
use crate::sink::{EventSink, MemorySink, Verdict};
use crate::witness::CampaignWitness;

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
        replay(self.scope, self.policy, self.dropout, ctx, body, inputs)
    }
}

/// Replays `body` within `scope` (the part of [`Auditor::audit`] that needs
/// no key): the replay's digest, or why the record does not replay.
pub fn replay(
    scope: Scope<'_>,
    policy: AuditPolicy,
    dropout: f32,
    ctx: &StepContext<'_>,
    body: &EntryBody,
    inputs: &RecordInputs<'_>,
) -> Result<Digest, ReplayFault> {
    let ev = body
        .event()
        .ok_or_else(|| ReplayFault::Unreplayable("not a training record".into()))?;
    match scope {
        Scope::Record => {
            let material = inputs.material.filter(|m| m.seq == ev.link.seq).ok_or_else(|| {
                ReplayFault::Unreplayable("the operator sent no batch for this record".into())
            })?;
            replay_record(
                ctx,
                dropout,
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
                dropout,
                inputs.adapters,
                &mine,
                policy.example_tolerance,
                ev.first_step,
            )
        }
    }
}

/// A refused record's evidence: which position, which body, who, why.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The record's chain position.
    pub seq: u64,
    /// The refused body's digest.
    pub body: Digest,
    /// The auditor whose replay refused it.
    pub auditor: AuthorityId,
    /// Why.
    pub reason: String,
}

/// The co-signers of a consortium played in one process, for tests and
/// benchmarks: a memory log, governance and every data source auditing
/// each training record offered (the decisions a node makes), a refusal
/// committed as an [`AuditFailure`] (with the operator's signature its node
/// would have given the offer).
pub struct AuditingSink {
    /// The committed log.
    pub log: MemorySink,
    prep: Prepared,
    settings: TrainSettings,
    /// The consortium (its keyring checks the audits).
    pub consortium: DemoConsortium,
    /// Each data-source authority's own sources.
    own: BTreeMap<AuthorityId, BTreeMap<Digest, PreparedSource>>,
    policy: AuditPolicy,
    witness: Option<CampaignWitness>,
    /// The campaign audited.
    pub campaign: Digest,
    operator: AuthorityId,
    committed_opt: Digest,
    material: Option<AuditMaterial>,
    /// The audits beside each committed training record, by position,
    /// with the record's digest.
    pub audits: BTreeMap<u64, (Digest, Vec<Audit>)>,
    /// Refused offers.
    pub failures: Vec<Failure>,
    /// Time each auditor spent on each offered record.
    pub spent: Vec<(u64, AuthorityId, std::time::Duration)>,
}

impl AuditingSink {
    /// The co-signers of `spec`'s campaign, with `consortium`'s keys.
    pub fn new(spec: &CampaignSpec, consortium: DemoConsortium) -> Result<Self> {
        let prep = Prepared::new(
            &spec.settings,
            &spec.base,
            spec.probe.clone(),
            spec.canaries.clone(),
        )?;
        let window = spec.settings.model.window();
        let mut own: BTreeMap<AuthorityId, BTreeMap<Digest, PreparedSource>> = BTreeMap::new();
        for s in &spec.sources {
            let p = PreparedSource::new(s.clone(), window)?;
            own.entry(s.manifest.authority.clone())
                .or_default()
                .insert(p.id, p);
        }
        let committed_opt = prep.initial().1.digest();
        Ok(Self {
            log: MemorySink::default(),
            prep,
            settings: spec.settings.clone(),
            consortium,
            own,
            policy: spec.policy.audit,
            witness: None,
            campaign: spec.campaign.digest(),
            operator: spec.campaign.operator.clone(),
            committed_opt,
            material: None,
            audits: BTreeMap::new(),
            failures: Vec::new(),
            spent: Vec::new(),
        })
    }

    /// The signer of authority `id`.
    pub fn signer(&self, id: &AuthorityId) -> Option<&AuthoritySigner> {
        self.consortium
            .signers
            .iter()
            .find(|s| s.authority.authority() == id)
            .map(|s| &s.authority)
    }

    /// Every auditor of the consortium: governance, then the data sources.
    pub fn auditors(&self) -> Vec<Auditor<'_>> {
        let mut v: Vec<Auditor<'_>> = self
            .consortium
            .signers
            .iter()
            .filter(|s| {
                self.consortium
                    .keyring
                    .authority(s.authority.authority())
                    .is_ok_and(|k| k.role == Role::Governance)
            })
            .map(|s| Auditor {
                signer: &s.authority,
                scope: Scope::Record,
                policy: self.policy,
                dropout: self.settings.lora.dropout,
            })
            .collect();
        for (id, own) in &self.own {
            if let Some(signer) = self.signer(id) {
                v.push(Auditor {
                    signer,
                    scope: Scope::Own(own),
                    policy: self.policy,
                    dropout: self.settings.lora.dropout,
                });
            }
        }
        v
    }

    /// The evidence `auditor` commits when its replay of `body` failed:
    /// the operator's signature over its section (the operator's node
    /// signed it when it offered the record), the auditor's ticket, why.
    fn evidence(
        &self,
        body: &EntryBody,
        auditor: &AuthorityId,
        ticket: provenance::Bytes,
        why: &str,
    ) -> Result<AuditFailure> {
        let ev = body
            .event()
            .ok_or_else(|| TunerError::Config("evidence of a record that is not a training record".into()))?;
        let digest = body.digest();
        let section = body.operator_section();
        let signer = self
            .signer(&self.operator)
            .ok_or_else(|| TunerError::Config(format!("no signer for the operator {}", self.operator)))?;
        let operator_signature = signer
            .sign(
                SignatureScheme::Bls12381,
                &section_message(&digest, Role::Operator, &self.operator, &section),
            )
            .map_err(|e| TunerError::Config(format!("the operator's signature: {e}")))?;
        let role = self
            .consortium
            .keyring
            .authority(auditor)
            .map(|k| k.role)
            .map_err(|e| TunerError::Config(e.to_string()))?;
        // At most 1,000 bytes, cut at a character boundary.
        let mut cut = why.len().min(1000);
        while !why.is_char_boundary(cut) {
            cut -= 1;
        }
        Ok(AuditFailure {
            version: 1,
            record: Box::new(body.clone()),
            operator_signature,
            auditor: auditor.clone(),
            role,
            ticket,
            reason: why[..cut].to_string(),
            time: ev.step_time,
        })
    }

    /// The authorities that audit `body`.
    pub fn auditors_of(&self, body: &EntryBody) -> Vec<AuthorityId> {
        self.auditors()
            .iter()
            .filter(|a| a.audits(body))
            .map(|a| a.signer.authority().clone())
            .collect()
    }
}

impl EventSink for AuditingSink {
    fn put_blob(&mut self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        self.log.put_blob(digest, bytes)
    }

    fn wants_audit_material(&self) -> bool {
        true
    }

    fn audit_material(&mut self, material: &AuditMaterial) -> Result<()> {
        self.material = Some(material.clone());
        Ok(())
    }

    fn submit(&mut self, body: &EntryBody) -> Result<Verdict> {
        if let EntryBody::Campaign(c) = body {
            self.witness = Some(CampaignWitness::new(
                c,
                &Recipe::new(self.settings.clone(), b"", Vec::new()),
            )?);
            return self.log.submit(body);
        }
        let Some(ev) = body.event() else {
            return self.log.submit(body);
        };
        let blob = |d: &Digest| {
            self.log.blobs.get(d).cloned().ok_or_else(|| TunerError::Blob {
                kind: "audited record",
                reason: format!("blob {d} was not stored before the record"),
            })
        };
        let (_, sketches) = decode_sketches(&blob(ev.sketch_blob)?)?;
        let delta = blob(ev.delta_blob)?;
        let Some(witness) = self.witness.as_ref() else {
            return Err(TunerError::Config("a training record before its campaign".into()));
        };
        let inputs = RecordInputs {
            campaign: &self.campaign,
            adapters: witness.adapters(),
            committed_opt: &self.committed_opt,
            sketches: &sketches,
            material: self.material.as_ref(),
        };
        let ctx = self.prep.ctx();
        let mut audits = Vec::new();
        let mut faults = Vec::new();
        let seq = ev.link.seq;
        let mut spent = Vec::new();
        for a in self.auditors().iter().filter(|a| a.audits(body)) {
            let t = std::time::Instant::now();
            let done = a
                .audit(&ctx, body, &inputs)
                .map_err(|e| TunerError::Config(format!("signing an audit: {e}")))?;
            spent.push((seq, a.signer.authority().clone(), t.elapsed()));
            if let Some(f) = done.fault {
                faults.push((
                    a.signer.authority().clone(),
                    f.to_string(),
                    f.proves_the_record_wrong(),
                ));
            }
            audits.push(done.audit);
        }
        self.spent.extend(spent);
        if !faults.is_empty() {
            let reason = faults
                .iter()
                .map(|(who, why, _)| format!("{who}: replay audit: {why}"))
                .collect::<Vec<_>>()
                .join("; ");
            // Evidence only of a replay that proves the record wrong (as a
            // node commits it); the others refuse without it.
            for (auditor, why, _) in faults.into_iter().filter(|f| f.2) {
                let ticket = audits
                    .iter()
                    .find(|a| a.ticket.authority == auditor)
                    .map(|a| a.ticket.signature.clone())
                    .unwrap_or_default();
                let evidence = self.evidence(body, &auditor, ticket, &why)?;
                self.log.submit(&EntryBody::AuditFailure(evidence))?;
                self.failures.push(Failure {
                    seq,
                    body: body.digest(),
                    auditor,
                    reason: why,
                });
            }
            return Ok(Verdict::Refused { reason });
        }
        let v = self.log.submit(body)?;
        if let Some(w) = self.witness.as_mut() {
            w.follow(&ev, &delta)
                .map_err(|e| TunerError::Config(format!("following an audited record: {e}")))?;
        }
        self.committed_opt = ev.measurement.optimizer_state;
        self.audits.insert(seq, (body.digest(), audits));
        Ok(v)
    }
}
