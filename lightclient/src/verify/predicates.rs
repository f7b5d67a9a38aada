//! The regulator's, the rights-holder's and the operator's predicates:
//! a campaign ran under an approved policy, a source was used only as its
//! terms allow, a weights file is the campaign's model.

use provenance::index::IndexKey;
use std::collections::{BTreeMap, BTreeSet};

use provenance::merkle::{LogHasher, MemoryTree};
use provenance::{Canonical, Digest, EntryBody, LedgerEntry, SignedCheckpoint};

use super::order::OrderFinding;
use super::{malformed, note_completeness, records_of, Verdict, Verified, VerifiedCampaign, Verifier};
use crate::light::{answer, VerifyError};

impl Verifier {
    /// Regulator: every step of campaign `id` ran under `approved` or a
    /// successor of it that governance signed (`supersedes` chain).
    pub fn policy(&mut self, id: &Digest, approved: &Digest) -> Result<Verdict, VerifyError> {
        let vc = self.campaign(id)?;
        let cp = vc.checkpoint.clone();
        let mut v = Verdict::new("policy", &cp);
        let (_, ap) = self.ensure(&cp, approved)?;
        if !matches!(ap.body, EntryBody::Policy(_)) {
            return Err(malformed(format!("{approved} is not a policy")));
        }
        let mut allowed: BTreeMap<Digest, bool> = BTreeMap::new();
        let mut used: BTreeMap<Digest, u64> = BTreeMap::new();
        *used.entry(vc.campaign.policy).or_default() += 0;
        for b in &vc.chain {
            if let Some(p) = b.record_policy().copied() {
                *used.entry(p).or_default() += 1;
            }
        }
        for (p, n) in &used {
            let ok = self.descends_from(&cp, approved, p, &mut allowed)?;
            if ok {
                v.notes.push(format!(
                    "{n} records under policy {}{}",
                    p.short(),
                    if p == approved {
                        " (the approved one)"
                    } else {
                        " (a governance-signed successor)"
                    }
                ));
            } else {
                v.violation(format!(
                    "{n} records{} ran under policy {}, which is neither {} nor a successor of it",
                    if *n == 0 { " (the campaign's opening)" } else { "" },
                    p.short(),
                    approved.short()
                ));
            }
        }
        note_completeness(&mut v, &vc);
        let finding = self.order(&vc)?;
        note_order(&mut v, &vc, &finding, None);
        Ok(self.finish(v))
    }

    fn descends_from(
        &mut self,
        cp: &SignedCheckpoint,
        approved: &Digest,
        p: &Digest,
        memo: &mut BTreeMap<Digest, bool>,
    ) -> Result<bool, VerifyError> {
        // Each policy on the way is proved and signed: a successor's
        // signing plan requires governance (and the superseded policy's
        // authority).
        provenance::policy::descends_from(approved, p, memo, |d| {
            let (_, e) = self.ensure(cp, d)?;
            Ok(match &e.body {
                EntryBody::Policy(pol) => pol.supersedes,
                _ => None,
            })
        })
    }

    /// Rights-holder: every use of source `id` was inside its validity
    /// window and declared purposes, every refusal of it is listed, nothing
    /// of it was admitted after its revocation, and each campaign's counts
    /// of it match its close. The listing is proven complete by the
    /// checkpoint's index, so only the entries naming the source are
    /// fetched (and each campaign's opening); a campaign whose close does
    /// not name the source, or that is open, is fetched whole. With `scan`,
    /// the whole log is also downloaded as a cross-check. The campaigns'
    /// data order is not recomputed: [`Self::source_and_order`] does it.
    pub fn source(&mut self, id: &Digest, scan: bool) -> Result<Verdict, VerifyError> {
        self.source_checked(id, scan, false)
    }

    /// [`Self::source`], and each campaign that used the source read whole
    /// to recompute its data order: every example of the source it drew
    /// was trained or refused, for the reason admission gives.
    pub fn source_and_order(&mut self, id: &Digest, scan: bool) -> Result<Verdict, VerifyError> {
        self.source_checked(id, scan, true)
    }

    fn source_checked(&mut self, id: &Digest, scan: bool, order: bool) -> Result<Verdict, VerifyError> {
        let (cp, listed) = self.listing(
            &format!("/v1/sources/{}/entries", id.to_hex()),
            IndexKey::Source(*id),
        )?;
        let mut v = Verdict::new("source", &cp);
        if listed.is_empty() {
            v.notes.push(format!(
                "no entry of the log's first {} names source {id}: the checkpoint's index proves it absent",
                cp.checkpoint.size
            ));
            return Ok(self.finish(v));
        }
        // A manifest names itself: with the listing complete, a source
        // whose manifest is not in it was never registered.
        let manifest = listed.iter().find_map(|(_, e)| match &e.body {
            EntryBody::Manifest(m) if e.body.digest() == *id => Some(m.clone()),
            _ => None,
        });
        let Some(m) = manifest else {
            for (i, e) in &listed {
                self.check_signatures(&cp, *i, e)?;
                let (records, _) = records_of(&e.body);
                let n = records.iter().filter(|r| r.source == *id).count();
                if n > 0 {
                    v.violation(format!(
                        "entry {i} admitted {n} examples of a source that was never registered"
                    ));
                }
            }
            v.notes.push(format!(
                "source {id} was never registered (the index proves its listing complete and no manifest is in it); {} entries name it, refusing its examples",
                listed.len()
            ));
            return Ok(self.finish(v));
        };
        let mut revoked_at = None;
        let mut campaigns = BTreeSet::new();
        for (i, e) in &listed {
            self.check_signatures(&cp, *i, e)?;
            match &e.body {
                EntryBody::Revocation(r) if r.source == *id => revoked_at = Some((*i, r.clone())),
                EntryBody::CampaignClose(c) => {
                    campaigns.insert(c.campaign);
                }
                b => {
                    if let Some(l) = b.chain_link() {
                        campaigns.insert(l.campaign);
                    }
                }
            }
        }
        // The source's own records in what was fetched: what a listing
        // that served only them would weigh.
        let own: usize = listed
            .iter()
            .map(|(_, e)| match &e.body {
                EntryBody::Refusal(r) => r
                    .examples
                    .iter()
                    .filter(|x| x.source == *id)
                    .map(|x| provenance::codec::encode(x).len())
                    .sum::<usize>(),
                b => records_of(b)
                    .0
                    .iter()
                    .filter(|r| r.source == *id)
                    .map(|r| provenance::codec::encode(r).len())
                    .sum(),
            })
            .sum();
        v.notes.push(format!(
            "the checkpoint's index proves the listing complete: {} entries name the source; its own records in them are {own} canonical bytes",
            listed.len()
        ));
        let listed_idx: BTreeSet<u64> = listed.iter().map(|(i, _)| *i).collect();
        if scan {
            let all = self.scan(&cp)?;
            for (i, e) in &all {
                if e.body.sources_named().contains(id) && !listed_idx.contains(i) {
                    v.violation(format!("the node's listing of the source omits entry {i}"));
                }
            }
            v.notes.push(format!(
                "scanned all {} log entries against the checkpoint's root: the scan finds what the index proves",
                all.len()
            ));
        }
        if let Some((ri, r)) = &revoked_at {
            v.notes.push(format!(
                "revoked by {} at log index {ri} ({}): {}",
                r.authority, r.requested, r.reason
            ));
        }
        let revoked = revoked_at.as_ref().map(|(ri, _)| *ri);
        if !order && !campaigns.is_empty() {
            v.notes.push(
                "the campaigns' data order is not recomputed here (`--order` reads each campaign whole to do it, as `verify policy` does)"
                    .into(),
            );
        }
        for c in &campaigns {
            let close = listed.iter().find_map(|(_, e)| match &e.body {
                EntryBody::CampaignClose(x) if x.campaign == *c && !order => Some(x.clone()),
                _ => None,
            });
            let Some(close) = close else {
                // Asked for its data order, its close does not name the
                // source, or it is open: its whole record decides.
                self.source_in_whole_campaign(&mut v, &m, id, c, &listed_idx, revoked)?;
                continue;
            };
            let (_, ce) = self.ensure(&cp, c)?;
            let EntryBody::Campaign(campaign) = &ce.body else {
                return Err(malformed(format!("{c} is not a campaign")));
            };
            let records = listed.iter().filter_map(|(li, e)| {
                e.body
                    .chain_link()
                    .filter(|l| l.campaign == *c)
                    .map(|l| (*li, l.seq, &e.body))
            });
            let counted = tally(&mut v, &m, id, c, &campaign.purpose, revoked, records);
            against_close(&mut v, id, &close, counted);
        }
        Ok(self.finish(v))
    }

    /// The source's use in campaign `c`, decided on the campaign's whole
    /// verified record (its chain, its order, its close).
    fn source_in_whole_campaign(
        &mut self,
        v: &mut Verdict,
        m: &provenance::DataSourceManifest,
        id: &Digest,
        c: &Digest,
        listed_idx: &BTreeSet<u64>,
        revoked: Option<u64>,
    ) -> Result<(), VerifyError> {
        let vc = self.campaign(c)?;
        for (k, b) in vc.chain.iter().enumerate() {
            let li = vc.chain_index[k];
            if !listed_idx.contains(&li) && b.sources_named().contains(id) {
                v.violation(format!("the node's listing of the source omits entry {li}"));
            }
        }
        let records = vc
            .chain
            .iter()
            .enumerate()
            .map(|(k, b)| (vc.chain_index[k], k as u64, b));
        let (admitted, refused) = tally(v, m, id, c, &vc.campaign.purpose, revoked, records);
        let finding = self.order(&vc)?;
        note_order(v, &vc, &finding, Some(id));
        match &vc.record {
            Some(rec) => against_close(v, id, &rec.close, (admitted, refused)),
            None => v.violation(format!(
                "campaign {} is not closed: its record cannot be shown complete ({admitted} admitted, {refused} refused so far)",
                c.short()
            )),
        }
        Ok(())
    }

    /// Downloads the whole log under `cp` and checks it against the
    /// checkpoint's root.
    pub fn scan(&mut self, cp: &SignedCheckpoint) -> Result<Vec<Verified>, VerifyError> {
        let size = cp.checkpoint.size;
        let mut leaves: Vec<Vec<u8>> = Vec::with_capacity(size as usize);
        let mut start = 0u64;
        while start < size {
            let end = (start + 256).min(size);
            // A node may answer fewer leaves than asked (its byte bound),
            // never none and never more.
            let a = answer(self.node.leaves(start, end))?;
            let got = a.leaves.len() as u64;
            if got == 0 || got > end - start {
                return Err(malformed(format!("{got} leaves for {start}..{end}")));
            }
            leaves.extend(a.leaves.into_iter().map(|l| l.leaf.0));
            start += got;
        }
        let mut t = MemoryTree::<LogHasher>::new();
        for l in &leaves {
            t.push_leaf(l);
        }
        if t.root() != cp.checkpoint.root {
            return Err(VerifyError::BadProof(
                "the log's leaves do not hash to the checkpoint's root".into(),
            ));
        }
        leaves
            .iter()
            .enumerate()
            .map(|(i, l)| {
                provenance::decode::<LedgerEntry>(l)
                    .map(|e| (i as u64, e))
                    .map_err(|e| malformed(e.to_string()))
            })
            .collect()
    }

    /// Operator: the weights file (an adapter snapshot, safetensors) is
    /// exactly the campaign's base plus its recorded deltas.
    pub fn model(&mut self, id: &Digest, weights: &[u8]) -> Result<Verdict, VerifyError> {
        let vc = self.campaign(id)?;
        let mut v = Verdict::new("model", &vc.checkpoint);
        let rec = vc
            .record
            .as_ref()
            .ok_or_else(|| VerifyError::Incomplete(format!("campaign {id} is not closed")))?;
        crate::recompute::check_model(&self.node, rec, weights, &mut v)?;
        Ok(self.finish(v))
    }
}

/// Checks the source's `(admitted, refused)` counts in a campaign's
/// records against what its close states for the source.
fn against_close(
    v: &mut Verdict,
    id: &Digest,
    close: &provenance::CampaignClose,
    (admitted, refused): (u64, u64),
) {
    let c = close.campaign.short();
    let want = close.per_source.iter().find(|p| p.source == *id);
    let (wa, wr) = want.map(|p| (p.admitted, p.refused)).unwrap_or((0, 0));
    if (wa, wr) != (admitted, refused) {
        v.violation(format!(
            "campaign {c} closed with {wa} admitted and {wr} refused examples of the source; its records naming it hold {admitted} and {refused}"
        ));
    } else {
        v.notes.push(format!(
            "campaign {c} (closed, {} records): {admitted} examples admitted, {refused} refused, as its close says",
            close.entries
        ));
    }
}

/// Counts the source's examples admitted and refused in campaign `c`'s
/// `records` (log index, chain position, body), and notes each use outside
/// the source's window or purposes, or after its revocation at `revoked`.
fn tally<'a>(
    v: &mut Verdict,
    m: &provenance::DataSourceManifest,
    id: &Digest,
    c: &Digest,
    purpose: &provenance::Purpose,
    revoked: Option<u64>,
    records: impl Iterator<Item = (u64, u64, &'a EntryBody)>,
) -> (u64, u64) {
    let purpose_ok = m.purposes.contains(purpose);
    let (mut admitted, mut refused) = (0u64, 0u64);
    for (li, k, b) in records {
        match b {
            EntryBody::Step(_) | EntryBody::Composite(_) => {
                let (records, time) = records_of(b);
                let n = records.iter().filter(|r| r.source == *id).count() as u64;
                if n == 0 {
                    continue;
                }
                admitted += n;
                if !m.valid_at(time) {
                    v.violation(format!(
                        "entry {li} (campaign {} record {k}) used {n} examples at {time}, outside the validity window {}..{}",
                        c.short(),
                        m.not_before,
                        m.not_after
                    ));
                }
                if !purpose_ok {
                    v.violation(format!(
                        "entry {li} used {n} examples for purpose {purpose}, not among the source's purposes"
                    ));
                }
                if let Some(ri) = revoked {
                    if li > ri {
                        v.violation(format!(
                            "entry {li} (campaign {} record {k}) admitted {n} examples after the revocation at index {ri}",
                            c.short()
                        ));
                    }
                }
            }
            EntryBody::Refusal(r) => {
                let n = r.examples.iter().filter(|x| x.source == *id).count() as u64;
                if n > 0 {
                    refused += n;
                    v.notes.push(format!(
                        "refusal at entry {li} (campaign {}, step {}): {n} examples, {:?}: {}",
                        c.short(),
                        r.step,
                        r.reason,
                        r.detail
                    ));
                }
            }
            EntryBody::RefusalAggregate(r) => {
                for rc in r.counts.iter().filter(|x| x.source == *id) {
                    refused += rc.count;
                    v.notes.push(format!(
                        "refusals at entry {li} (campaign {}, steps {}..={}): {} examples, {:?}",
                        c.short(),
                        r.first_step,
                        r.last_step,
                        rc.count,
                        rc.reason
                    ));
                }
            }
            _ => {}
        }
    }
    (admitted, refused)
}

/// Reports what recomputing `vc`'s order found; `source`: the
/// rights-holder's source, whose examples a fault names in its words.
fn note_order(v: &mut Verdict, vc: &VerifiedCampaign, finding: &OrderFinding, source: Option<&Digest>) {
    use provenance::order::OrderFault as F;
    let c = vc.campaign.digest();
    match finding {
        OrderFinding::NotCommitted(why) => v.notes.push(format!("campaign {}: its data order is not accounted: {why}", c.short())),
        OrderFinding::Accounted { drawn, seed_height } => v.notes.push(format!(
            "campaign {}: all {drawn} positions of its data order (seeded by the consortium's checkpoint at height {seed_height}) are accounted for: trained, or refused with their reason",
            c.short()
        )),
        OrderFinding::Broken(faults) => {
            for (index, record, fault) in faults {
                let mine = match fault {
                    F::Skipped { source_id, .. }
                    | F::NotInSpan { source_id, .. }
                    | F::Twice { source_id, .. }
                    | F::Miscounted { source_id, .. } => source.is_some_and(|s| s == source_id),
                    _ => false,
                };
                match (source, fault) {
                    (Some(_), F::Skipped { index: i, position, .. }) if mine => v.violation(format!(
                        "campaign {} drew example {i} of the source at position {position} of its order and neither trained nor refused it (found at entry {index}, record {record})",
                        c.short()
                    )),
                    // Another source's fault: the rights-holder learns the
                    // order broke, not the detail.
                    (Some(_), _) if !mine => v.violation(format!(
                        "campaign {}'s records break its data order at entry {index} (record {record}): {fault}",
                        c.short()
                    )),
                    _ => v.violation(format!(
                        "entry {index} (campaign {} record {record}) breaks the campaign's data order: {fault}",
                        c.short()
                    )),
                }
            }
        }
    }
}
