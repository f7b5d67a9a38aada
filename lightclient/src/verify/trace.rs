//! Checking a trace answer: every cited entry proved and signed, the
//! citations consistent with each other, optionally the scores recomputed.

use std::collections::{BTreeMap, BTreeSet};

use provenance::api::CitedEntry;
use provenance::api::{TraceAnswer, TraceRequest};
use provenance::{Campaign, Canonical, EntryBody, LedgerEntry};

use super::{malformed, records_of, Verdict, Verifier};
use crate::light::VerifyError;

impl Verifier {
    /// Checks a trace answer: its checkpoint under genesis, every cited
    /// entry's proof and signatures, and that the citations hang together
    /// (the events are the campaign's, the examples are in those events,
    /// the sources and policies are the ones the events name). With
    /// `recompute`, the scores are recomputed from the campaign's blobs and
    /// compared bit for bit.
    pub fn trace(&mut self, a: &TraceAnswer, recompute: bool) -> Result<Verdict, VerifyError> {
        let cp = self.light.checkpoint_from_answer(&a.checkpoint)?;
        self.accept(&cp)?;
        let mut v = Verdict::new("trace", &cp);
        let check = |this: &mut Self, c: &CitedEntry| -> Result<LedgerEntry, VerifyError> {
            let e = this.check_cited(&cp, c)?;
            this.check_signatures(&cp, c.index, &e)?;
            Ok(e)
        };
        // Policies and manifests first: the events' signing plans need them.
        let mut policies = BTreeSet::new();
        for p in &a.policies {
            let e = check(self, p)?;
            if !matches!(e.body, EntryBody::Policy(_)) {
                v.violation(format!("cited policy {} is not a policy", p.digest.short()));
            }
            policies.insert(p.digest);
        }
        for s in &a.sources {
            let e = check(self, &s.manifest)?;
            match &e.body {
                EntryBody::Manifest(m) if s.manifest.digest == s.source => {
                    if m.title != s.title || m.authority.to_string() != s.authority {
                        v.violation(format!(
                            "source {} is cited with another title or authority",
                            s.source.short()
                        ));
                    }
                }
                _ => v.violation(format!("source {} is cited with another entry", s.source.short())),
            }
        }
        let ce = check(self, &a.campaign_entry)?;
        let campaign: Campaign = match ce.body {
            EntryBody::Campaign(c) if c.digest() == a.campaign => c,
            _ => return Err(malformed("the cited campaign entry is not the campaign traced")),
        };
        if !policies.contains(&campaign.policy) {
            v.violation("the campaign's policy is not cited".into());
        }
        let xe = check(self, &a.close_entry)?;
        let close = match xe.body {
            EntryBody::CampaignClose(c) if c.campaign == a.campaign => c,
            _ => return Err(malformed("the cited close is not the campaign's")),
        };
        let mut events: BTreeMap<u64, EntryBody> = BTreeMap::new();
        for ev in &a.events {
            let e = check(self, &ev.entry)?;
            match e.body.chain_link() {
                Some(l) if l.campaign == a.campaign && l.seq == ev.seq => {}
                _ => v.violation(format!(
                    "cited event {} is not record {} of the campaign",
                    ev.entry.index, ev.seq
                )),
            }
            if let Some(p) = e.body.record_policy().copied() {
                if !policies.contains(&p) {
                    v.violation(format!(
                        "event {} ran under policy {}, which is not cited",
                        ev.seq,
                        p.short()
                    ));
                }
            }
            events.insert(ev.seq, e.body);
        }
        for s in &a.sources {
            for x in &s.top_examples {
                match events.get(&x.event_seq) {
                    Some(b) => {
                        let (records, _) = records_of(b);
                        if !records.iter().any(|r| r.source == s.source && r.index == x.index) {
                            v.violation(format!(
                                "example {} of {} is not in event {}",
                                x.index,
                                s.source.short(),
                                x.event_seq
                            ));
                        }
                    }
                    None => v.violation(format!(
                        "example {} cites event {}, which is not cited",
                        x.index, x.event_seq
                    )),
                }
            }
        }
        if let Some(b) = &a.base {
            let e = check(self, &b.campaign)?;
            let bc = e.body.digest();
            if Some(bc) != campaign.base_model.campaign {
                v.violation("the cited base campaign is not the campaign's base".into());
            }
            let x = check(self, &b.close)?;
            match x.body {
                EntryBody::CampaignClose(c) if c.campaign == bc => {
                    v.notes.push(format!(
                        "base model from campaign {} ({} steps)",
                        bc.short(),
                        c.steps
                    ));
                }
                _ => v.violation("the cited base close is not the base campaign's".into()),
            }
            check(self, &b.policy)?;
            for s in &b.sources {
                check(self, s)?;
            }
        } else if let Some(bc) = campaign.base_model.campaign {
            v.violation(format!("the base campaign {} is not cited", bc.short()));
        }
        v.notes.push(format!(
            "campaign {} ({} records, {} steps, final state {}), {} sources, {} events, {} policies cited: proofs and signatures verified",
            a.campaign.short(),
            close.entries,
            close.steps,
            close.final_state.short(),
            a.sources.len(),
            a.events.len(),
            a.policies.len()
        ));
        if recompute {
            let vc = self.campaign(&a.campaign)?;
            let rec = vc
                .record
                .ok_or_else(|| VerifyError::Incomplete("the campaign is not closed".into()))?;
            crate::recompute::check_trace(&self.node, &rec, a, &mut v)?;
        }
        Ok(self.finish(v))
    }
}

/// What in an answer is not what was asked: another campaign, prompt or
/// output, or (when one was asked for) another method. A node that answers
/// another question with valid proofs is caught here, not by the proofs.
pub fn unasked(a: &TraceAnswer, q: &TraceRequest) -> Vec<String> {
    let mut out = Vec::new();
    if a.campaign != q.campaign {
        out.push(format!(
            "the answer is for campaign {}, the question for {}",
            a.campaign.short(),
            q.campaign.short()
        ));
    }
    if a.prompt != q.prompt {
        out.push(format!(
            "the answer is for prompt {:?}, the question for {:?}",
            a.prompt, q.prompt
        ));
    }
    if a.output != q.output {
        out.push(format!(
            "the answer is for output {:?}, the question for {:?}",
            a.output, q.output
        ));
    }
    if let Some(m) = &q.method {
        if &a.method != m {
            out.push(format!(
                "the answer is by method {}, the question asked for {m}",
                a.method
            ));
        }
    }
    out
}
