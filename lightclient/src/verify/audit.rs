//! `govtune audit revocation`: what a revoked source contributed to each
//! campaign that used it.

use provenance::index::IndexKey;
use std::collections::BTreeSet;

use provenance::{Digest, EntryBody};
use serde::Serialize;

use super::{malformed, Verifier};
use crate::light::VerifyError;

/// One training event that used a source.
#[derive(Debug, Clone, Serialize)]
pub struct AuditedStep {
    /// The campaign.
    pub campaign: Digest,
    /// Chain position.
    pub seq: u64,
    /// Log index.
    pub index: u64,
    /// First and last training step the event covers.
    pub steps: (u64, u64),
    /// Examples of the source in it.
    pub examples_of_source: u64,
    /// All its examples.
    pub examples: u64,
    /// L2 norm of the update it applied (from its measurement).
    pub update_norm: f64,
    /// Whether it was committed after the revocation (a violation).
    pub after_revocation: bool,
}

/// Per campaign: the share of its update that used the source.
#[derive(Debug, Clone, Serialize)]
pub struct AuditedCampaign {
    /// The campaign.
    pub campaign: Digest,
    /// Its training events.
    pub events: u64,
    /// Of which used the source.
    pub events_with_source: u64,
    /// Σ update norm of events that used the source / Σ over all events.
    pub share_of_events: f64,
    /// The same with each event weighted by its fraction of the source's
    /// examples: the share of the update attributable to the source.
    pub share_of_examples: f64,
}

/// `govtune audit revocation`: what a revoked source contributed.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationAudit {
    /// The source.
    pub source: Digest,
    /// Its title.
    pub title: String,
    /// The revocation's log index and reason, if revoked.
    pub revoked: Option<(u64, String)>,
    /// Whether the revocation status and the campaigns were also checked by
    /// a scan of the whole log (they are always proven by the checkpoint's
    /// index: the listing is complete).
    pub proven: bool,
    /// Entries naming the source that the node's listing left out (found
    /// by the scan).
    pub omitted: Vec<u64>,
    /// Campaigns that named the source and are not closed: their records
    /// cannot be shown complete.
    pub open: Vec<Digest>,
    /// Every event that admitted examples of it.
    pub steps: Vec<AuditedStep>,
    /// Per campaign.
    pub campaigns: Vec<AuditedCampaign>,
    /// Entries verified and bytes fetched.
    pub entries_checked: u64,
    /// Response bytes fetched.
    pub bytes_fetched: u64,
}

impl RevocationAudit {
    /// What shows the audit's claim false: events that admitted the source
    /// after its revocation, entries the listing left out, open campaigns.
    pub fn violations(&self) -> Vec<String> {
        let late = self.steps.iter().filter(|x| x.after_revocation).count();
        let mut out = Vec::new();
        if late > 0 {
            out.push(format!("{late} events admitted the source after its revocation"));
        }
        if !self.omitted.is_empty() {
            out.push(format!("the node's listing omits entries {:?}", self.omitted));
        }
        for c in &self.open {
            out.push(format!("campaign {} is not closed", c.short()));
        }
        out
    }

    /// A human-readable table.
    pub fn render(&self) -> String {
        let mut s = format!("source {} ({})\n", self.source.short(), self.title);
        match &self.revoked {
            Some((i, r)) => s.push_str(&format!("revoked at log index {i}: {r}\n")),
            None => s.push_str("not revoked\n"),
        }
        s.push_str(if self.proven {
            "(revocation status and campaigns proven by the checkpoint's index, and by a scan of the whole log)\n"
        } else {
            "(revocation status and campaigns proven by the checkpoint's index: the listing is complete)\n"
        });
        for i in &self.omitted {
            s.push_str(&format!("the node's listing of the source omits entry {i}\n"));
        }
        for c in &self.open {
            s.push_str(&format!(
                "campaign {} is not closed: its record cannot be shown complete\n",
                c.short()
            ));
        }
        s.push_str(&format!(
            "{} events admitted examples of it under its signature:\n",
            self.steps.len()
        ));
        s.push_str("| campaign | record | log index | steps | examples of source / all | update norm | after revocation |\n|---|---|---|---|---|---|---|\n");
        for t in &self.steps {
            s.push_str(&format!(
                "| {} | {} | {} | {}..={} | {} / {} | {:.4} | {} |\n",
                t.campaign.short(),
                t.seq,
                t.index,
                t.steps.0,
                t.steps.1,
                t.examples_of_source,
                t.examples,
                t.update_norm,
                if t.after_revocation { "YES" } else { "no" }
            ));
        }
        for c in &self.campaigns {
            s.push_str(&format!(
                "campaign {}: {} of {} events used the source, carrying {:.1}% of the update ({:.1}% weighted by the source's share of their examples)\n",
                c.campaign.short(),
                c.events_with_source,
                c.events,
                100.0 * c.share_of_events,
                100.0 * c.share_of_examples
            ));
        }
        s.push_str(&format!(
            "{} entries verified, {} bytes fetched\n",
            self.entries_checked, self.bytes_fetched
        ));
        s
    }
}

impl Verifier {
    /// The revocation audit of source `id`: every event that admitted its
    /// examples (each campaign's record verified complete), and the share
    /// of each campaign's update they carry. The source's listing is proven
    /// complete by the checkpoint's index; with `scan`, the whole log is
    /// also downloaded and checked against the checkpoint as a cross-check.
    pub fn revocation_audit(&mut self, id: &Digest) -> Result<RevocationAudit, VerifyError> {
        self.audit_revocation(id, false)
    }

    /// [`Self::revocation_audit`], optionally proven by a scan.
    pub fn audit_revocation(&mut self, id: &Digest, scan: bool) -> Result<RevocationAudit, VerifyError> {
        let (cp, listed) = self.listing(
            &format!("/v1/sources/{}/entries", id.to_hex()),
            IndexKey::Source(*id),
        )?;
        let (_, me) = self.ensure(&cp, id)?;
        let title = match &me.body {
            EntryBody::Manifest(m) => m.title.clone(),
            _ => return Err(malformed(format!("{id} is not a source"))),
        };
        let mut revoked = None;
        let mut campaigns = BTreeSet::new();
        for (i, e) in &listed {
            self.check_signatures(&cp, *i, e)?;
            match &e.body {
                EntryBody::Revocation(r) if r.source == *id => revoked = Some((*i, r.reason.clone())),
                b => {
                    if let Some(c) = b.campaign_id().copied() {
                        campaigns.insert(c);
                    }
                }
            }
        }
        let mut omitted = Vec::new();
        if scan {
            let listed_idx: BTreeSet<u64> = listed.iter().map(|(i, _)| *i).collect();
            revoked = None;
            for (i, e) in &self.scan(&cp)? {
                if !e.body.sources_named().contains(id) {
                    continue;
                }
                if !listed_idx.contains(i) {
                    omitted.push(*i);
                }
                match &e.body {
                    EntryBody::Revocation(r) if r.source == *id => {
                        if revoked.is_none() {
                            self.check_signatures(&cp, *i, e)?;
                            revoked = Some((*i, r.reason.clone()));
                        }
                    }
                    b => {
                        if let Some(c) = b.campaign_id().copied() {
                            campaigns.insert(c);
                        }
                    }
                }
            }
        }
        let mut steps = Vec::new();
        let mut per = Vec::new();
        let mut open = Vec::new();
        for c in &campaigns {
            let vc = self.campaign(c)?;
            if vc.record.is_none() {
                open.push(*c);
            }
            let (mut total, mut with, mut weighted, mut n_events, mut n_with) = (0.0, 0.0, 0.0, 0u64, 0u64);
            for (k, b) in vc.chain.iter().enumerate() {
                let Some(ev) = b.event() else { continue };
                let (records, m) = (ev.records, ev.measurement);
                let norm = m
                    .blocks
                    .iter()
                    .map(|x| f64::from(x.norm).powi(2))
                    .sum::<f64>()
                    .sqrt();
                n_events += 1;
                total += norm;
                let mine = records.iter().filter(|r| r.source == *id).count() as u64;
                if mine == 0 {
                    continue;
                }
                n_with += 1;
                with += norm;
                weighted += norm * mine as f64 / records.len().max(1) as f64;
                let (first, last) = (ev.first_step, ev.last_step);
                let index = vc.chain_index[k];
                steps.push(AuditedStep {
                    campaign: *c,
                    seq: k as u64,
                    index,
                    steps: (first, last),
                    examples_of_source: mine,
                    examples: records.len() as u64,
                    update_norm: norm,
                    after_revocation: revoked.as_ref().is_some_and(|(ri, _)| index > *ri),
                });
            }
            let share = |x: f64| if total > 0.0 { x / total } else { 0.0 };
            per.push(AuditedCampaign {
                campaign: *c,
                events: n_events,
                events_with_source: n_with,
                share_of_events: share(with),
                share_of_examples: share(weighted),
            });
        }
        Ok(RevocationAudit {
            source: *id,
            title,
            revoked,
            proven: scan,
            omitted,
            open,
            steps,
            campaigns: per,
            entries_checked: self.checked,
            bytes_fetched: self.node.bytes_fetched(),
        })
    }
}
