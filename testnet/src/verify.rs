//! `govtune verify`: typed predicates a regulator, a rights-holder or an
//! operator checks against any node, trusting none, with the genesis file
//! alone.
//!
//! Every predicate works the same way:
//!
//! 1. fetch one listing (`/v1/campaigns/{id}/entries` or
//!    `/v1/sources/{id}/entries`): entries with inclusion proofs under one
//!    checkpoint, whose consortium signature is checked against genesis;
//! 2. check every entry's proof and every entry's authority signatures
//!    (the manifests, policies and campaigns they refer to are fetched the
//!    same way first, so the signing plan is the ledger's);
//! 3. rebuild each campaign's record from its chain: records numbered
//!    `0..n`, each naming its predecessor, the close naming the last and
//!    the count (`tuner::record::CampaignRecord`). A node that leaves out
//!    one record of a closed campaign breaks the chain and is caught;
//! 4. decide the predicate on the verified record, and report the bytes
//!    fetched next to the log's size.
//!
//! What a light client cannot see this way: a node that omits a whole
//! campaign from a source's listing (every event of it, and its close).
//! `verify source --scan` closes that gap by downloading the whole log
//! and checking it against the checkpoint's root.

use std::collections::{BTreeMap, BTreeSet};

use provenance::entry::MemoryLedgerView;
use provenance::merkle::{MemoryTree, Sha3Hasher};
use provenance::{Campaign, Canonical, Digest, EntryBody, LedgerEntry, SignedCheckpoint};
use serde::Serialize;
use serde_json::Value;
use tuner::record::{CampaignRecord, PreparedTrace};

use crate::answer::{CitedEntry, TraceAnswer};
use crate::client::Client;
use crate::light::{LightClient, VerifyError};

/// A predicate's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The predicate (`policy`, `source`, `model`, `trace`).
    pub predicate: String,
    /// Whether it holds.
    pub pass: bool,
    /// Why not (empty when it holds).
    pub violations: Vec<String>,
    /// What was checked, in words.
    pub notes: Vec<String>,
    /// Entries verified (proof and signatures).
    pub entries_checked: u64,
    /// Response bytes fetched from the node.
    pub bytes_fetched: u64,
    /// The log size of the checkpoint used.
    pub log_size: u64,
    /// The checkpoint height used.
    pub checkpoint_height: u64,
}

impl Verdict {
    fn new(predicate: &str, cp: &SignedCheckpoint) -> Self {
        Self {
            predicate: predicate.into(),
            pass: true,
            violations: Vec::new(),
            notes: Vec::new(),
            entries_checked: 0,
            bytes_fetched: 0,
            log_size: cp.checkpoint.size,
            checkpoint_height: cp.checkpoint.height,
        }
    }

    fn violation(&mut self, v: String) {
        self.pass = false;
        self.violations.push(v);
    }

    /// One line per violation or note, and the verdict.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} {}: {} entries verified under checkpoint {} (log size {}), {} bytes fetched\n",
            if self.pass { "PASS" } else { "FAIL" },
            self.predicate,
            self.entries_checked,
            self.checkpoint_height,
            self.log_size,
            self.bytes_fetched
        );
        for n in &self.notes {
            s.push_str(&format!("  - {n}\n"));
        }
        for v in &self.violations {
            s.push_str(&format!("  ✗ {v}\n"));
        }
        s
    }
}

/// A verified entry: its log index and the entry.
pub type Verified = (u64, LedgerEntry);

/// A light client bound to one node, with the ledger view it has verified
/// so far.
#[derive(Debug)]
pub struct Verifier {
    light: LightClient,
    node: Client,
    view: MemoryLedgerView,
    known: BTreeMap<Digest, Verified>,
    checked: u64,
    pinned: Option<SignedCheckpoint>,
}

fn malformed(m: impl Into<String>) -> VerifyError {
    VerifyError::Malformed(m.into())
}

impl Verifier {
    /// A verifier of `node` holding the genesis file at `genesis`.
    pub fn new(genesis: &std::path::Path, node: Client) -> Result<Self, VerifyError> {
        Ok(Self {
            light: LightClient::from_genesis_file(genesis).map_err(VerifyError::Malformed)?,
            node,
            view: MemoryLedgerView::default(),
            known: BTreeMap::new(),
            checked: 0,
            pinned: None,
        })
    }

    /// The light client.
    pub fn light(&self) -> &LightClient {
        &self.light
    }

    /// The node's client.
    pub fn node(&self) -> &Client {
        &self.node
    }

    /// Every checkpoint this verifier uses must extend the ones it used
    /// before (a consistency proof from the node), so entries verified
    /// under an earlier one stay valid.
    fn pin(&mut self, cp: &SignedCheckpoint) -> Result<(), VerifyError> {
        match &self.pinned {
            Some(p) if p.checkpoint.size == cp.checkpoint.size => {
                if p.checkpoint.root != cp.checkpoint.root {
                    return Err(VerifyError::BadProof(
                        "two checkpoints of the same size with different roots".into(),
                    ));
                }
            }
            Some(p) if p.checkpoint.size < cp.checkpoint.size => {
                self.light.verify_extends(&self.node, p, cp)?;
                self.pinned = Some(cp.clone());
            }
            Some(p) => self.light.verify_extends(&self.node, cp, p)?,
            None => self.pinned = Some(cp.clone()),
        }
        Ok(())
    }

    /// Checks a cited entry under `cp`: proof, decoding, digest.
    pub fn check_cited(&self, cp: &SignedCheckpoint, c: &CitedEntry) -> Result<LedgerEntry, VerifyError> {
        let leaf = c.leaf_bytes().map_err(VerifyError::Malformed)?;
        self.light.verify_leaf(cp, c.index, &leaf, &c.proof)?;
        let e: LedgerEntry = provenance::decode(&leaf).map_err(|e| malformed(e.to_string()))?;
        if e.body.digest() != c.digest {
            return Err(malformed(format!("entry {} is not {}", c.index, c.digest)));
        }
        Ok(e)
    }

    /// Checks an entry's authority signatures under the view verified so
    /// far (fetching the manifests, policies and campaign it refers to),
    /// and adds it to the view.
    pub fn check_signatures(
        &mut self,
        cp: &SignedCheckpoint,
        index: u64,
        e: &LedgerEntry,
    ) -> Result<(), VerifyError> {
        for d in references(&e.body) {
            self.ensure(cp, &d)?;
        }
        e.verify(self.light.keyring(), &self.view)
            .map_err(|err| VerifyError::BadSignature(format!("entry {index}: {err}")))?;
        self.learn(index, e);
        self.checked += 1;
        Ok(())
    }

    fn learn(&mut self, index: u64, e: &LedgerEntry) {
        let d = e.body.digest();
        self.known.insert(d, (index, e.clone()));
        match &e.body {
            EntryBody::Manifest(m) => {
                self.view.sources.insert(d, m.clone());
            }
            EntryBody::Policy(p) => {
                self.view.policies.insert(d, p.clone());
            }
            EntryBody::Campaign(c) => {
                self.view.campaigns.insert(d, c.clone());
            }
            _ => {}
        }
    }

    /// Fetches, proves and signature-checks the entry with body digest `d`
    /// (a manifest, policy or campaign) unless already verified.
    pub fn ensure(&mut self, cp: &SignedCheckpoint, d: &Digest) -> Result<Verified, VerifyError> {
        // Verified under an earlier checkpoint of the same log: still in it.
        if let Some(v) = self.known.get(d) {
            return Ok(v.clone());
        }
        let a = self.node.get(&format!("/v1/entries/{}", d.to_hex()))?.body;
        let index = a["index"]
            .as_u64()
            .ok_or_else(|| malformed(format!("entry {d} is not committed at this node")))?;
        if index >= cp.checkpoint.size {
            return Err(malformed(format!(
                "entry {d} is not under checkpoint {}",
                cp.checkpoint.height
            )));
        }
        let e = self.fetch_at(cp, index)?;
        if e.body.digest() != *d {
            return Err(malformed(format!("entry {index} is not {d}")));
        }
        self.check_signatures(cp, index, &e)?;
        Ok((index, e))
    }

    fn fetch_at(&self, cp: &SignedCheckpoint, index: u64) -> Result<LedgerEntry, VerifyError> {
        self.light.fetch_entry(&self.node, cp, index)
    }

    /// Fetches a listing (`/v1/campaigns/{id}/entries` or
    /// `/v1/sources/{id}/entries`): its checkpoint and every entry, proved.
    pub fn listing(&mut self, path: &str) -> Result<(SignedCheckpoint, Vec<Verified>), VerifyError> {
        let v = self.node.get(path)?.body;
        let cp = self.light.checkpoint_from_json(&v["checkpoint"])?;
        self.pin(&cp)?;
        let cited: Vec<CitedEntry> =
            serde_json::from_value(v["entries"].clone()).map_err(|e| malformed(format!("{path}: {e}")))?;
        let mut out = Vec::new();
        for c in &cited {
            let e = self.check_cited(&cp, c)?;
            out.push((c.index, e));
        }
        out.sort_by_key(|(i, _)| *i);
        Ok((cp, out))
    }

    /// The campaign's verified, complete record (if closed) or its
    /// verified chain prefix (if open): every record proved and
    /// signature-checked, the chain checked.
    pub fn campaign(&mut self, id: &Digest) -> Result<VerifiedCampaign, VerifyError> {
        let (cp, entries) = self.listing(&format!("/v1/campaigns/{}/entries", id.to_hex()))?;
        self.campaign_from(cp, entries, id)
    }

    fn campaign_from(
        &mut self,
        cp: SignedCheckpoint,
        entries: Vec<Verified>,
        id: &Digest,
    ) -> Result<VerifiedCampaign, VerifyError> {
        let mut campaign = None;
        let mut close = None;
        let mut chain: BTreeMap<u64, Verified> = BTreeMap::new();
        for (i, e) in entries {
            self.check_signatures(&cp, i, &e)?;
            match &e.body {
                EntryBody::Campaign(c) if c.digest() == *id => campaign = Some((i, c.clone())),
                EntryBody::CampaignClose(c) if c.campaign == *id => close = Some((i, c.clone())),
                b => {
                    let l = tuner::record::link_of(b)
                        .ok_or_else(|| malformed(format!("entry {i} is not a record of campaign {id}")))?;
                    if l.campaign != *id {
                        return Err(malformed(format!("entry {i} belongs to another campaign")));
                    }
                    if chain.insert(l.seq, (i, e.clone())).is_some() {
                        return Err(VerifyError::Incomplete(format!("two records number {}", l.seq)));
                    }
                }
            }
        }
        let (campaign_index, campaign) = campaign
            .ok_or_else(|| VerifyError::Incomplete(format!("the node did not list campaign {id} itself")))?;
        let indexes: Vec<u64> = chain.values().map(|(i, _)| *i).collect();
        let bodies: Vec<EntryBody> = chain.into_values().map(|(_, e)| e.body).collect();
        let (record, close_index) = match close {
            Some((ci, c)) => (
                Some(
                    CampaignRecord::new(campaign.clone(), bodies.clone(), c)
                        .map_err(|e| VerifyError::Incomplete(e.to_string()))?,
                ),
                Some(ci),
            ),
            None => {
                // Open: the prefix must still be a chain from record 0.
                let mut prev = Digest::ZERO;
                for (k, b) in bodies.iter().enumerate() {
                    let l = tuner::record::link_of(b).ok_or_else(|| malformed("not a chain record"))?;
                    if l.seq != k as u64 || l.prev != prev {
                        return Err(VerifyError::Incomplete(format!(
                            "open campaign {id}: record {k} is missing or out of order"
                        )));
                    }
                    prev = b.digest();
                }
                (None, None)
            }
        };
        Ok(VerifiedCampaign {
            checkpoint: cp,
            campaign,
            campaign_index,
            chain: bodies,
            chain_index: indexes,
            record,
            close_index,
        })
    }

    fn finish(&self, mut v: Verdict) -> Verdict {
        v.entries_checked = self.checked;
        v.bytes_fetched = self.node.bytes_fetched();
        v
    }

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
        let mut allowed: BTreeMap<Digest, bool> = BTreeMap::from([(*approved, true)]);
        let mut used: BTreeMap<Digest, u64> = BTreeMap::new();
        *used.entry(vc.campaign.policy).or_default() += 0;
        for b in &vc.chain {
            if let Some(p) = policy_of(b) {
                *used.entry(p).or_default() += 1;
            }
        }
        for (p, n) in &used {
            let ok = self.descends_from(&cp, p, &mut allowed)?;
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
        Ok(self.finish(v))
    }

    fn descends_from(
        &mut self,
        cp: &SignedCheckpoint,
        p: &Digest,
        memo: &mut BTreeMap<Digest, bool>,
    ) -> Result<bool, VerifyError> {
        let mut path = Vec::new();
        let mut cur = *p;
        let ok = loop {
            if let Some(r) = memo.get(&cur) {
                break *r;
            }
            if path.contains(&cur) || path.len() > 1024 {
                break false;
            }
            path.push(cur);
            // Proved and signed: a successor's signing plan requires
            // governance (and the superseded policy's authority).
            let (_, e) = self.ensure(cp, &cur)?;
            match &e.body {
                EntryBody::Policy(pol) => match pol.supersedes {
                    Some(prev) => cur = prev,
                    None => break false,
                },
                _ => break false,
            }
        };
        for d in path {
            memo.insert(d, ok);
        }
        Ok(ok)
    }

    /// Rights-holder: every use of source `id` was inside its validity
    /// window and declared purposes, every refusal of it is listed, nothing
    /// of it was admitted after its revocation, and each campaign's counts
    /// of it match its close. With `scan`, the whole log is downloaded and
    /// checked against the checkpoint, so no campaign can be left out.
    pub fn source(&mut self, id: &Digest, scan: bool) -> Result<Verdict, VerifyError> {
        let (cp, listed) = self.listing(&format!("/v1/sources/{}/entries", id.to_hex()))?;
        let mut v = Verdict::new("source", &cp);
        let (_, me) = self.ensure(&cp, id)?;
        let EntryBody::Manifest(m) = &me.body else {
            return Err(malformed(format!("{id} is not a source")));
        };
        let m = m.clone();
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
                    if let Some(l) = tuner::record::link_of(b) {
                        campaigns.insert(l.campaign);
                    }
                }
            }
        }
        let listed_idx: BTreeSet<u64> = listed.iter().map(|(i, _)| *i).collect();
        if scan {
            let all = self.scan(&cp)?;
            for (i, e) in &all {
                if names_source(&e.body, id) {
                    if !listed_idx.contains(i) {
                        v.violation(format!("the node's listing of the source omits entry {i}"));
                    }
                    if let Some(c) = campaign_of(&e.body) {
                        campaigns.insert(c);
                    }
                }
            }
            v.notes.push(format!(
                "scanned all {} log entries against the checkpoint's root",
                all.len()
            ));
        }
        if let Some((ri, r)) = &revoked_at {
            v.notes.push(format!(
                "revoked by {} at log index {ri} ({}): {}",
                r.authority, r.requested, r.reason
            ));
        }
        for c in &campaigns {
            let vc = self.campaign(c)?;
            let purpose_ok = m.purposes.contains(&vc.campaign.purpose);
            let (mut admitted, mut refused) = (0u64, 0u64);
            for (k, b) in vc.chain.iter().enumerate() {
                let li = vc.chain_index[k];
                if !listed_idx.contains(&li) && names_source(b, id) {
                    v.violation(format!("the node's listing of the source omits entry {li}"));
                }
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
                                "entry {li} used {n} examples for purpose {}, not among the source's purposes",
                                vc.campaign.purpose
                            ));
                        }
                        if let Some((ri, _)) = &revoked_at {
                            if li > *ri {
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
            match &vc.record {
                Some(rec) => {
                    let want = rec.close.per_source.iter().find(|p| p.source == *id);
                    let (wa, wr) = want.map(|p| (p.admitted, p.refused)).unwrap_or((0, 0));
                    if (wa, wr) != (admitted, refused) {
                        v.violation(format!(
                            "campaign {} closed with {wa} admitted and {wr} refused examples of the source; its record holds {admitted} and {refused}",
                            c.short()
                        ));
                    } else {
                        v.notes.push(format!(
                            "campaign {} (closed, {} records): {admitted} examples admitted, {refused} refused, as its close says",
                            c.short(),
                            rec.chain.len()
                        ));
                    }
                }
                None => v.notes.push(format!(
                    "campaign {} is open: {admitted} admitted, {refused} refused so far (no close to check completeness against)",
                    c.short()
                )),
            }
        }
        Ok(self.finish(v))
    }

    /// Downloads the whole log under `cp` and checks it against the
    /// checkpoint's root.
    pub fn scan(&mut self, cp: &SignedCheckpoint) -> Result<Vec<Verified>, VerifyError> {
        let size = cp.checkpoint.size;
        let mut leaves: Vec<Vec<u8>> = Vec::with_capacity(size as usize);
        let mut start = 0u64;
        while start < size {
            let end = (start + 256).min(size);
            let a = self
                .node
                .get(&format!("/v1/log/leaves?start={start}&end={end}"))?
                .body;
            let arr = a["leaves"].as_array().ok_or_else(|| malformed("leaves"))?;
            if arr.len() as u64 != end - start {
                return Err(malformed("short leaves answer"));
            }
            for l in arr {
                let hexs = l["leaf"].as_str().ok_or_else(|| malformed("leaf"))?;
                leaves.push(hex::decode(hexs).map_err(|e| malformed(e.to_string()))?);
            }
            start = end;
        }
        let mut t = MemoryTree::<Sha3Hasher>::new();
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
        let node = self.node.clone();
        let mut fetch = |d: &Digest| -> tuner::Result<Vec<u8>> {
            node.get_bytes(&format!("/v1/blobs/{}", d.to_hex()))
                .map_err(|e| tuner::TunerError::Sink(e.to_string()))
        };
        let rebuilt =
            PreparedTrace::rebuild_model(rec, &mut fetch).map_err(|e| VerifyError::BadBlob(e.to_string()))?;
        v.notes.push(format!(
            "rebuilt the final model from the base and {} delta blobs; every event's model-state digest and the close's final state ({}) match",
            rec.events().count(),
            rec.close.final_state.short()
        ));
        match tuner::lora::Adapters::from_snapshot(rebuilt.layout.clone(), weights) {
            Err(e) => v.violation(format!(
                "the weights file is not an adapter snapshot of this campaign: {e}"
            )),
            Ok(a) => {
                let found = a.state_digest(&rebuilt.base_digest);
                if found != rec.close.final_state {
                    v.violation(format!(
                        "the weights file's model state is {}, the campaign's final state is {}",
                        found.short(),
                        rec.close.final_state.short()
                    ));
                }
            }
        }
        Ok(self.finish(v))
    }

    /// Checks a trace answer: its checkpoint under genesis, every cited
    /// entry's proof and signatures, and that the citations hang together
    /// (the events are the campaign's, the examples are in those events,
    /// the sources and policies are the ones the events name). With
    /// `recompute`, the scores are recomputed from the campaign's blobs and
    /// compared bit for bit.
    pub fn trace(&mut self, a: &TraceAnswer, recompute: bool) -> Result<Verdict, VerifyError> {
        let cp = self.light.checkpoint_from_json(&a.checkpoint)?;
        self.pin(&cp)?;
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
            match tuner::record::link_of(&e.body) {
                Some(l) if l.campaign == a.campaign && l.seq == ev.seq => {}
                _ => v.violation(format!(
                    "cited event {} is not record {} of the campaign",
                    ev.entry.index, ev.seq
                )),
            }
            if let Some(p) = policy_of(&e.body) {
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
            let method =
                method_named(&a.method).ok_or_else(|| malformed(format!("unknown method {}", a.method)))?;
            let vc = self.campaign(&a.campaign)?;
            let rec = vc
                .record
                .ok_or_else(|| VerifyError::Incomplete("the campaign is not closed".into()))?;
            let node = self.node.clone();
            let mut fetch = |d: &Digest| -> tuner::Result<Vec<u8>> {
                node.get_bytes(&format!("/v1/blobs/{}", d.to_hex()))
                    .map_err(|e| tuner::TunerError::Sink(e.to_string()))
            };
            let prep =
                PreparedTrace::build(&rec, &mut fetch).map_err(|e| VerifyError::BadBlob(e.to_string()))?;
            let report = prep
                .trace(a.prompt.as_bytes(), a.output.as_bytes(), method)
                .map_err(|e| VerifyError::BadBlob(e.to_string()))?;
            if report.digest() != a.report_digest {
                v.violation(format!(
                    "recomputed scores differ: report digest {} against the node's {}",
                    report.digest().short(),
                    a.report_digest.short()
                ));
            } else {
                v.notes.push(format!(
                    "scores recomputed from {} blob bytes: bit-identical (report {})",
                    prep.blob_bytes,
                    report.digest().short()
                ));
            }
            let mine: Vec<Digest> = report.sources_by_salient().iter().map(|s| s.source).collect();
            let theirs: Vec<Digest> = a.sources.iter().map(|s| s.source).collect();
            if mine != theirs {
                v.violation("the node's source ranking is not the recomputed one".into());
            }
        }
        Ok(self.finish(v))
    }
}

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
    /// A human-readable table.
    pub fn render(&self) -> String {
        let mut s = format!("source {} ({})\n", self.source.short(), self.title);
        match &self.revoked {
            Some((i, r)) => s.push_str(&format!("revoked at log index {i}: {r}\n")),
            None => s.push_str("not revoked\n"),
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
    /// of each campaign's update they carry.
    pub fn revocation_audit(&mut self, id: &Digest) -> Result<RevocationAudit, VerifyError> {
        let (cp, listed) = self.listing(&format!("/v1/sources/{}/entries", id.to_hex()))?;
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
                    if let Some(c) = campaign_of(b) {
                        campaigns.insert(c);
                    }
                }
            }
        }
        let mut steps = Vec::new();
        let mut per = Vec::new();
        for c in &campaigns {
            let vc = self.campaign(c)?;
            let (mut total, mut with, mut weighted, mut n_events, mut n_with) = (0.0, 0.0, 0.0, 0u64, 0u64);
            for (k, b) in vc.chain.iter().enumerate() {
                let (records, _) = records_of(b);
                let m = match b {
                    EntryBody::Step(e) => &e.measurement,
                    EntryBody::Composite(e) => &e.measurement,
                    _ => continue,
                };
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
                let (first, last) = match b {
                    EntryBody::Step(e) => (e.step, e.step),
                    EntryBody::Composite(e) => (e.first_step, e.last_step),
                    _ => (0, 0),
                };
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
            steps,
            campaigns: per,
            entries_checked: self.checked,
            bytes_fetched: self.node.bytes_fetched(),
        })
    }
}

/// A campaign as verified from a node.
#[derive(Debug, Clone)]
pub struct VerifiedCampaign {
    /// The checkpoint the entries are proved under.
    pub checkpoint: SignedCheckpoint,
    /// The campaign.
    pub campaign: Campaign,
    /// Its opening's log index.
    pub campaign_index: u64,
    /// Its chain records, in order.
    pub chain: Vec<EntryBody>,
    /// Their log indexes.
    pub chain_index: Vec<u64>,
    /// The complete record, if closed.
    pub record: Option<CampaignRecord>,
    /// The close's log index, if closed.
    pub close_index: Option<u64>,
}

fn note_completeness(v: &mut Verdict, vc: &VerifiedCampaign) {
    match &vc.record {
        Some(r) => v.notes.push(format!(
            "campaign {}: all {} records present and chained to its close",
            vc.campaign.digest().short(),
            r.chain.len()
        )),
        None => v.violation(format!(
            "campaign {} is not closed: its record cannot be shown complete",
            vc.campaign.digest().short()
        )),
    }
}

/// The scoring method named `name`.
pub fn method_named(name: &str) -> Option<tuner::score::Method> {
    tuner::score::Method::by_name(name)
}

fn policy_of(b: &EntryBody) -> Option<Digest> {
    match b {
        EntryBody::Step(e) => Some(e.policy),
        EntryBody::Composite(e) => Some(e.policy),
        EntryBody::Refusal(e) => Some(e.policy),
        EntryBody::RefusalAggregate(e) => Some(e.policy),
        _ => None,
    }
}

fn campaign_of(b: &EntryBody) -> Option<Digest> {
    match b {
        EntryBody::CampaignClose(c) => Some(c.campaign),
        b => tuner::record::link_of(b).map(|l| l.campaign),
    }
}

fn records_of(b: &EntryBody) -> (&[provenance::event::ExampleRecord], provenance::Timestamp) {
    match b {
        EntryBody::Step(e) => (&e.examples, e.step_time),
        EntryBody::Composite(e) => (&e.records, e.step_time),
        _ => (&[], provenance::Timestamp(0)),
    }
}

fn names_source(b: &EntryBody, id: &Digest) -> bool {
    match b {
        EntryBody::Step(_) | EntryBody::Composite(_) => records_of(b).0.iter().any(|r| r.source == *id),
        EntryBody::Refusal(r) => r.examples.iter().any(|x| x.source == *id),
        EntryBody::RefusalAggregate(r) => r.counts.iter().any(|x| x.source == *id),
        EntryBody::CampaignClose(c) => c.per_source.iter().any(|p| p.source == *id),
        EntryBody::Revocation(r) => r.source == *id,
        _ => false,
    }
}

/// The manifests, policies and campaign an entry's signing plan reads.
fn references(b: &EntryBody) -> Vec<Digest> {
    let mut out = Vec::new();
    let mut sources = |rs: &mut dyn Iterator<Item = Digest>| out.extend(rs);
    match b {
        EntryBody::Step(e) => {
            sources(&mut e.examples.iter().map(|r| r.source));
            out.push(e.policy);
            out.push(e.link.campaign);
        }
        EntryBody::Composite(e) => {
            sources(&mut e.records.iter().map(|r| r.source));
            out.push(e.policy);
            out.push(e.link.campaign);
        }
        EntryBody::Refusal(e) => {
            out.push(e.policy);
            out.push(e.link.campaign);
        }
        EntryBody::RefusalAggregate(e) => {
            out.push(e.policy);
            out.push(e.link.campaign);
        }
        EntryBody::CampaignClose(c) => out.push(c.campaign),
        EntryBody::Campaign(c) => out.push(c.policy),
        EntryBody::Policy(p) => out.extend(p.supersedes),
        EntryBody::Revocation(r) => out.push(r.source),
        EntryBody::Manifest(_) | EntryBody::Checkpoint(_) => {}
    }
    let mut seen = BTreeSet::new();
    out.retain(|d| seen.insert(*d));
    out
}

/// Parses a trace answer from JSON.
pub fn parse_answer(v: &Value) -> Result<TraceAnswer, VerifyError> {
    serde_json::from_value(v.clone()).map_err(|e| malformed(format!("trace answer: {e}")))
}
