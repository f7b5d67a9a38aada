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
//!    the count (`provenance::record::CampaignRecord`). A node that leaves out
//!    one record of a closed campaign breaks the chain and is caught;
//! 4. decide the predicate on the verified record, and report the bytes
//!    fetched next to the log's size.
//!
//! Every listing page also carries the listed key's proof under the
//! checkpoint's authenticated index ([`provenance::index`]), so a node that
//! leaves out an entry, a whole campaign or a revocation, or claims a named
//! source absent, is caught without downloading the log
//! (`complete::Completeness`). `verify source --scan` still downloads the
//! whole log and checks it against the checkpoint's root, as a cross-check.

use provenance::index::IndexKey;
use std::collections::BTreeMap;

use provenance::api::{CitedEntry, ListingAnswer, ListingQuery};
use provenance::entry::MemoryLedgerView;
use provenance::record::{CampaignRecord, RecordError};
use provenance::{Campaign, Canonical, Digest, EntryBody, LedgerEntry, SignedCheckpoint};
use serde::Serialize;

use crate::client::Client;
use crate::light::{answer, LightClient, VerifyError};

mod audit;
mod complete;
mod order;
mod predicates;
mod replay;
mod trace;

pub use audit::{AuditedCampaign, AuditedStep, RevocationAudit};
pub use replay::{AuditTally, AuditorTally};
pub use trace::unasked;

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

    pub(crate) fn violation(&mut self, v: String) {
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
    floor: u64,
    oldest_used: Option<SignedCheckpoint>,
}

/// Two checkpoints the consortium signed over different logs of one size,
/// each named by where it came from, with every signed field.
fn split_view(first: (&str, &SignedCheckpoint), second: (&str, &SignedCheckpoint)) -> VerifyError {
    let describe = |(from, c): (&str, &SignedCheckpoint)| {
        let k = &c.checkpoint;
        format!(
            "[{from}] origin {:?} size {} root {} height {} time {} signature {}",
            k.origin,
            k.size,
            k.root,
            k.height,
            k.time.0,
            hex::encode(&c.signature.0)
        )
    };
    VerifyError::SplitView {
        size: first.1.checkpoint.size,
        first: describe(first),
        second: describe(second),
    }
}

fn malformed(m: impl Into<String>) -> VerifyError {
    VerifyError::Malformed(m.into())
}

impl Verifier {
    /// A verifier of `node` holding the genesis file at `genesis`.
    pub fn new(genesis: &std::path::Path, node: Client) -> Result<Self, VerifyError> {
        let light = LightClient::from_genesis_file(genesis)?;
        Ok(Self {
            node: light.trust(node),
            light,
            view: MemoryLedgerView::default(),
            known: BTreeMap::new(),
            checked: 0,
            pinned: None,
            floor: 0,
            oldest_used: None,
        })
    }

    /// The light client.
    pub fn light(&self) -> &LightClient {
        &self.light
    }

    /// What it has verified of the ledger's state so far (the manifests,
    /// policies and campaigns entries refer to).
    pub fn view(&self) -> &MemoryLedgerView {
        &self.view
    }

    /// The node's client.
    pub fn node(&self) -> &Client {
        &self.node
    }

    /// Holds `cp` (a checkpoint accepted in an earlier run, `--state`):
    /// every checkpoint of this run must extend it, and none may be older.
    pub fn hold(&mut self, cp: SignedCheckpoint) {
        self.floor = cp.checkpoint.size;
        self.pinned = Some(cp);
    }

    /// The newest checkpoint this verifier has accepted.
    pub fn newest(&self) -> Option<&SignedCheckpoint> {
        self.pinned.as_ref()
    }

    /// The node's latest checkpoint, checked under genesis and against
    /// every checkpoint this verifier accepted before.
    pub fn latest(&mut self) -> Result<SignedCheckpoint, VerifyError> {
        let cp = self.light.latest_checkpoint(&self.node)?;
        self.accept(&cp)?;
        Ok(cp)
    }

    /// Every checkpoint this verifier uses must extend the ones it used
    /// before (a consistency proof from the node), so entries verified
    /// under an earlier one stay valid; one of the same size must have the
    /// same root (else the two are evidence of a split view); one older
    /// than the held checkpoint is refused.
    pub fn accept(&mut self, cp: &SignedCheckpoint) -> Result<(), VerifyError> {
        match &self.pinned {
            Some(p) if p.checkpoint.size == cp.checkpoint.size => {
                if p.checkpoint.root != cp.checkpoint.root {
                    return Err(split_view(
                        (&format!("held, {}", self.node.base()), p),
                        (self.node.base(), cp),
                    ));
                }
            }
            Some(p) if p.checkpoint.size < cp.checkpoint.size => {
                self.light.verify_extends(&self.node, p, cp)?;
                self.pinned = Some(cp.clone());
            }
            Some(p) if cp.checkpoint.size < self.floor => {
                return Err(VerifyError::Stale {
                    height: cp.checkpoint.height,
                    size: cp.checkpoint.size,
                    held_height: p.checkpoint.height,
                    held_size: p.checkpoint.size,
                    held_root: p.checkpoint.root,
                })
            }
            Some(p) => self.light.verify_extends(&self.node, cp, p)?,
            None => self.pinned = Some(cp.clone()),
        }
        if self
            .oldest_used
            .as_ref()
            .is_none_or(|o| self.light.freshness(cp).ms() < self.light.freshness(o).ms())
        {
            self.oldest_used = Some(cp.clone());
        }
        Ok(())
    }

    /// The least fresh checkpoint ([`LightClient::freshness`]) among those
    /// this run's answers were proved under (the held one from `--state` is
    /// not counted).
    pub fn oldest_used(&self) -> Option<&SignedCheckpoint> {
        self.oldest_used.as_ref()
    }

    /// Compares `other` node's latest checkpoint with the newest this
    /// verifier accepted (fetching this node's latest if it has none): one
    /// log must extend the other. Two checkpoints the consortium signed for
    /// one size with different roots are a split view; so is a larger log
    /// whose node cannot prove it extends the smaller when its own
    /// checkpoint at the smaller's height shows another root. A newer
    /// checkpoint that extends the held one is accepted.
    pub fn compare(&mut self, other: &Client) -> Result<SignedCheckpoint, VerifyError> {
        let mine = match &self.pinned {
            Some(p) => p.clone(),
            None => self.latest()?,
        };
        let other = &self.light.trust(other.clone());
        let theirs = self.light.latest_checkpoint(other)?;
        let (a, b) = (&mine.checkpoint, &theirs.checkpoint);
        let me = self.node.base().to_string();
        if a.size == b.size {
            if a.root != b.root {
                return Err(split_view((&me, &mine), (other.base(), &theirs)));
            }
            return Ok(theirs);
        }
        // The node with the larger log proves it extends the smaller one.
        let ((small_node, small), (large_node, large)) = if a.size < b.size {
            ((&self.node, &mine), (other, &theirs))
        } else {
            ((other, &theirs), (&self.node, &mine))
        };
        if let Err(e) = self.light.verify_extends(large_node, small, large) {
            if !e.is_violation() {
                return Err(e);
            }
            // Evidence, if the larger node certified another root at the
            // smaller's height.
            if let Ok(same_height) = self.light.checkpoint_at(large_node, small.checkpoint.height) {
                if same_height.checkpoint.size == small.checkpoint.size
                    && same_height.checkpoint.root != small.checkpoint.root
                {
                    return Err(split_view(
                        (small_node.base(), small),
                        (large_node.base(), &same_height),
                    ));
                }
            }
            return Err(VerifyError::BadProof(format!(
                "{} cannot prove its log (size {}) extends {}'s (size {}): {e}",
                large_node.base(),
                large.checkpoint.size,
                small_node.base(),
                small.checkpoint.size
            )));
        }
        if b.size > a.size {
            self.pinned = Some(theirs.clone());
        }
        Ok(theirs)
    }

    /// Checks a cited entry under `cp`: proof, decoding, digest.
    pub fn check_cited(&self, cp: &SignedCheckpoint, c: &CitedEntry) -> Result<LedgerEntry, VerifyError> {
        let leaf = c
            .leaf_bytes()
            .map_err(|e| VerifyError::Malformed(e.to_string()))?;
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
        for d in e.body.references() {
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
        self.view.apply_with_digest(&e.body, d);
    }

    /// Fetches, proves and signature-checks the entry with body digest `d`
    /// (a manifest, policy or campaign) unless already verified.
    pub fn ensure(&mut self, cp: &SignedCheckpoint, d: &Digest) -> Result<Verified, VerifyError> {
        // Verified under an earlier checkpoint of the same log: still in it.
        if let Some(v) = self.known.get(d) {
            return Ok(v.clone());
        }
        let a = answer(self.node.status(d))?;
        if a.digest != *d {
            return Err(malformed(format!(
                "asked where entry {d} is, answered about {}",
                a.digest
            )));
        }
        let index = a
            .state
            .committed()
            .ok_or_else(|| malformed(format!("entry {d} is not committed at this node")))?
            .index;
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
    pub fn listing(
        &mut self,
        path: &str,
        key: IndexKey,
    ) -> Result<(SignedCheckpoint, Vec<Verified>), VerifyError> {
        let a: ListingAnswer = answer(self.node.get_json(path))?;
        let cp = self.light.checkpoint_from_answer(&a.checkpoint)?;
        self.accept(&cp)?;
        let mut out = Vec::new();
        let mut page = a;
        let mut complete = complete::Completeness::new(key, cp.checkpoint.index);
        loop {
            let listed: Vec<u64> = page.entries.iter().map(|c| c.index).collect();
            complete.page(page.index.as_ref(), &listed, page.next.is_none())?;
            for c in &page.entries {
                if out.last().is_some_and(|(i, _): &Verified| c.index <= *i) {
                    return Err(malformed(format!("listing page goes back to entry {}", c.index)));
                }
                let e = self.check_cited(&cp, c)?;
                out.push((c.index, e));
            }
            let Some(after) = page.next else {
                break;
            };
            if page.entries.last().map(|c| c.index) != Some(after) {
                return Err(malformed("a listing cursor that is not the page's last entry"));
            }
            // Every page under the first page's checkpoint.
            let q = ListingQuery {
                after: Some(after),
                height: Some(cp.checkpoint.height),
            };
            page = answer(self.node.get_json(&format!("{path}?{}", q.to_query())))?;
            if self.light.checkpoint_from_answer(&page.checkpoint)? != cp {
                return Err(malformed("a listing page under another checkpoint"));
            }
        }
        // A campaign's opening names it: an empty listing, proven complete,
        // is a campaign never registered (a question, not a violation).
        if let (IndexKey::Campaign(c), true) = (key, out.is_empty()) {
            return Err(VerifyError::Input(format!(
                "campaign {c} was never registered: the checkpoint's index (log size {}) proves that no entry names it",
                cp.checkpoint.size
            )));
        }
        Ok((cp, out))
    }

    /// The campaign's verified, complete record (if closed) or its
    /// verified chain prefix (if open): every record proved and
    /// signature-checked, the chain checked.
    pub fn campaign(&mut self, id: &Digest) -> Result<VerifiedCampaign, VerifyError> {
        let (cp, entries) = self.listing(
            &format!("/v1/campaigns/{}/entries", id.to_hex()),
            IndexKey::Campaign(*id),
        )?;
        self.campaign_from(cp, entries, id)
    }

    fn campaign_from(
        &mut self,
        cp: SignedCheckpoint,
        entries: Vec<Verified>,
        id: &Digest,
    ) -> Result<VerifiedCampaign, VerifyError> {
        for (i, e) in &entries {
            self.check_signatures(&cp, *i, e)?;
        }
        let parts =
            provenance::record::collect(id, entries.into_iter().map(|(i, e)| (i, e.body))).map_err(|e| {
                match e {
                    RecordError::Foreign { .. } => malformed(e.to_string()),
                    RecordError::Incomplete(m) => VerifyError::Incomplete(m),
                }
            })?;
        let (campaign_index, campaign) = parts
            .campaign
            .ok_or_else(|| VerifyError::Incomplete(format!("the node did not list campaign {id} itself")))?;
        let (indexes, bodies): (Vec<u64>, Vec<EntryBody>) = parts.chain.into_iter().unzip();
        let incomplete = |e: RecordError| VerifyError::Incomplete(e.to_string());
        let (record, close_index) = match parts.close {
            Some((ci, c)) => (
                Some(CampaignRecord::new(campaign.clone(), bodies.clone(), c).map_err(incomplete)?),
                Some(ci),
            ),
            None => {
                // Open: the prefix must still be a chain from record 0.
                provenance::record::check_chain(id, &bodies).map_err(incomplete)?;
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

fn records_of(b: &EntryBody) -> (&[provenance::event::ExampleRecord], provenance::Timestamp) {
    b.event()
        .map_or((&[][..], provenance::Timestamp(0)), |e| (e.records, e.step_time))
}
