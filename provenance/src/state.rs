//! The ledger's application state, derived deterministically from the
//! committed log: registered sources, policies and what supersedes them,
//! revocations with their effective times, and campaigns with the head of
//! their record chain.
//!
//! [`LedgerState::apply_block`] is the one transition: it checks every entry
//! of a block against the state (and the entries before it in the block)
//! and either applies all of them or none. Replaying the log from genesis
//! with the same block stamps rebuilds the state bit for bit; its
//! [`LedgerState::digest`] is a hash over its canonical records, so two
//! states can be compared by digest. Signatures are not checked here:
//! consensus only finalises blocks whose entries it verified.
//!
//! Besides chain order, the transition enforces the rules co-signers
//! might miss: no step or composite names a source revoked earlier in the
//! log, and no campaign or campaign record names a superseded policy (a
//! running campaign whose policy is superseded can only close).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::campaign::Campaign;
use crate::codec::{decode_raw, encode, DecodeError};
use crate::digest::{tagged_hash_parts, Digest, ObjectKind};
use crate::entry::{EntryBody, LedgerEntry, LedgerView};
use crate::event::ChainLink;
use crate::ids::Timestamp;
use crate::manifest::DataSourceManifest;
use crate::policy::PolicyArtifact;
use crate::revocation::EffectiveRevocation;

/// The words every refusal for a superseded policy carries, so that a
/// tuner told of one knows to close its campaign.
pub const POLICY_SUPERSEDED: &str = "was superseded by";

#[cfg(feature = "collusion")]
static COLLUDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Test-only (feature `collusion`): turns off, for this whole process, the
/// rules on revoked sources and superseded policies, as the validators of
/// colluding authorities would, so tests of the verifier's predicates
/// still have a bad log to catch.
#[cfg(feature = "collusion")]
pub fn collude() {
    COLLUDING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the rules on revoked sources and superseded policies hold in
/// this process (always, without the `collusion` feature).
fn rules_enforced() -> bool {
    #[cfg(feature = "collusion")]
    {
        !COLLUDING.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(feature = "collusion"))]
    {
        true
    }
}

/// A registered source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// The manifest.
    pub manifest: DataSourceManifest,
    /// Stamp of the block that registered it.
    pub registered: Timestamp,
    /// When its revocation took effect, if revoked.
    pub revoked: Option<Timestamp>,
}

/// A registered policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyState {
    /// The policy.
    pub policy: PolicyArtifact,
    /// The policy that superseded it, if any.
    pub superseded_by: Option<Digest>,
}

/// A campaign and the head of its record chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignState {
    /// The campaign.
    pub campaign: Campaign,
    /// Digest of the last record's body ([`Digest::ZERO`] before the first).
    pub head: Digest,
    /// Number of records in the chain.
    pub entries: u64,
    /// The close's digest, once closed.
    pub closed: Option<Digest>,
}

/// A key of the state's record set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateKey {
    /// A source.
    Source(Digest),
    /// A policy.
    Policy(Digest),
    /// A campaign.
    Campaign(Digest),
}

impl StateKey {
    /// The key's bytes: a kind byte then the digest.
    pub fn to_bytes(self) -> [u8; 33] {
        let (tag, d) = match self {
            StateKey::Source(d) => (1u8, d),
            StateKey::Policy(d) => (2, d),
            StateKey::Campaign(d) => (3, d),
        };
        let mut out = [0u8; 33];
        out[0] = tag;
        out[1..].copy_from_slice(&d.0);
        out
    }

    /// Parses key bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 33 {
            return None;
        }
        let mut d = [0u8; 32];
        d.copy_from_slice(&b[1..]);
        match b[0] {
            1 => Some(StateKey::Source(Digest(d))),
            2 => Some(StateKey::Policy(Digest(d))),
            3 => Some(StateKey::Campaign(Digest(d))),
            _ => None,
        }
    }
}

/// Why a block's entries do not apply to the state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The entry refers to something not registered.
    #[error("entry {index} of the block: unknown {what} {digest}")]
    Unknown {
        /// Position in the block.
        index: usize,
        /// What kind of thing.
        what: &'static str,
        /// Its digest.
        digest: Digest,
    },
    /// The entry conflicts with the state.
    #[error("entry {index} of the block: {reason}")]
    Conflict {
        /// Position in the block.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A stored record does not decode.
    #[error("state record: {0}")]
    Record(#[from] DecodeError),
}

/// The application state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerState {
    sources: BTreeMap<Digest, SourceState>,
    policies: BTreeMap<Digest, PolicyState>,
    campaigns: BTreeMap<Digest, CampaignState>,
}

impl LedgerView for LedgerState {
    fn source(&self, id: &Digest) -> Option<&DataSourceManifest> {
        self.sources.get(id).map(|s| &s.manifest)
    }
    fn policy(&self, id: &Digest) -> Option<&PolicyArtifact> {
        self.policies.get(id).map(|p| &p.policy)
    }
    fn campaign(&self, id: &Digest) -> Option<&Campaign> {
        self.campaigns.get(id).map(|c| &c.campaign)
    }
}

impl LedgerState {
    /// An empty state (genesis).
    pub fn new() -> Self {
        Self::default()
    }

    /// A registered source.
    pub fn source_state(&self, id: &Digest) -> Option<&SourceState> {
        self.sources.get(id)
    }

    /// A registered policy.
    pub fn policy_state(&self, id: &Digest) -> Option<&PolicyState> {
        self.policies.get(id)
    }

    /// A registered campaign.
    pub fn campaign_state(&self, id: &Digest) -> Option<&CampaignState> {
        self.campaigns.get(id)
    }

    /// Every source, by id.
    pub fn sources(&self) -> impl Iterator<Item = (&Digest, &SourceState)> {
        self.sources.iter()
    }

    /// Every campaign, by id.
    pub fn campaigns(&self) -> impl Iterator<Item = (&Digest, &CampaignState)> {
        self.campaigns.iter()
    }

    /// Refuses a policy that is not registered, or that a successor
    /// superseded (`what` names the entry that names it).
    fn check_policy_current(&self, index: usize, policy: &Digest, what: &str) -> Result<(), StateError> {
        let p = self.policies.get(policy).ok_or(StateError::Unknown {
            index,
            what: "policy",
            digest: *policy,
        })?;
        match p.superseded_by {
            Some(by) if rules_enforced() => Err(StateError::Conflict {
                index,
                reason: format!(
                    "policy {} {POLICY_SUPERSEDED} {}: {what} must name the current policy",
                    policy.short(),
                    by.short()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses a source that is not registered, or whose revocation is
    /// already in the log.
    fn check_source_usable(&self, index: usize, source: &Digest) -> Result<(), StateError> {
        let s = self.sources.get(source).ok_or(StateError::Unknown {
            index,
            what: "source",
            digest: *source,
        })?;
        match s.revoked {
            Some(at) if rules_enforced() => Err(StateError::Conflict {
                index,
                reason: format!(
                    "source {} was revoked (effective {}): no step may use it after its revocation",
                    source.short(),
                    at
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The rules an entry breaks against this state whatever else commits
    /// first (nothing can undo them): a campaign or campaign record under a
    /// superseded policy; a step or composite naming a revoked source; a
    /// record or close of a closed campaign; a record whose chain position
    /// another record already took. A node refuses such an entry when it
    /// arrives, and expires one it holds when a commit makes it so.
    pub fn refuses(&self, body: &EntryBody) -> Result<(), StateError> {
        let conflict = |reason: String| Err(StateError::Conflict { index: 0, reason });
        if let EntryBody::Campaign(c) = body {
            if self.policies.contains_key(&c.policy) {
                self.check_policy_current(0, &c.policy, "a new campaign")?;
            }
        }
        if let Some(p) = body.record_policy().filter(|p| self.policies.contains_key(*p)) {
            self.check_policy_current(0, p, "a campaign record")?;
        }
        if let EntryBody::Refusal(r) = body {
            if r.examples.is_empty() {
                return conflict("a refusal must name at least one example".into());
            }
        }
        if let Some(e) = body.event() {
            for r in e.records.iter().filter(|r| self.sources.contains_key(&r.source)) {
                self.check_source_usable(0, &r.source)?;
            }
        }
        match body {
            EntryBody::CampaignClose(close) => match self.campaigns.get(&close.campaign) {
                Some(c) if c.closed.is_some() => {
                    conflict(format!("campaign {} is already closed", close.campaign.short()))
                }
                _ => Ok(()),
            },
            b => match b.chain_link() {
                Some(link) => match self.campaigns.get(&link.campaign) {
                    Some(c) if c.closed.is_some() => {
                        conflict(format!("campaign {} is closed", link.campaign.short()))
                    }
                    Some(c) if link.seq < c.entries || (link.seq == c.entries && link.prev != c.head) => {
                        conflict(format!(
                            "chain position {} of campaign {} is taken by another record (the chain is at {} records, head {})",
                            link.seq,
                            link.campaign.short(),
                            c.entries,
                            c.head.short()
                        ))
                    }
                    _ => Ok(()),
                },
                None => Ok(()),
            },
        }
    }

    /// Committed revocations with their effective times, for admission.
    pub fn revocations(&self) -> Vec<EffectiveRevocation> {
        self.sources
            .iter()
            .filter_map(|(id, s)| {
                s.revoked.map(|effective| EffectiveRevocation {
                    source: *id,
                    effective,
                })
            })
            .collect()
    }

    /// Applies all entries of a block stamped `stamp`, or none: returns the
    /// keys whose records changed.
    pub fn apply_block(
        &mut self,
        entries: &[LedgerEntry],
        stamp: Timestamp,
    ) -> Result<BTreeSet<StateKey>, StateError> {
        let (next, touched) = self.after_block(entries, stamp)?;
        *self = next;
        Ok(touched)
    }

    /// The state after a block, and the keys it changed, leaving `self`
    /// as it is.
    pub fn after_block(
        &self,
        entries: &[LedgerEntry],
        stamp: Timestamp,
    ) -> Result<(LedgerState, BTreeSet<StateKey>), StateError> {
        let digests: Vec<Digest> = entries.iter().map(|e| e.body.digest()).collect();
        self.after_block_with_digests(entries, &digests, stamp)
    }

    /// [`Self::after_block`] with each entry's body digest already computed
    /// (`digests[i]` must be `entries[i].body.digest()`; the store computes
    /// it once per entry for the state, its indexes and its digest index).
    pub fn after_block_with_digests(
        &self,
        entries: &[LedgerEntry],
        digests: &[Digest],
        stamp: Timestamp,
    ) -> Result<(LedgerState, BTreeSet<StateKey>), StateError> {
        let mut next = self.clone();
        let mut touched = BTreeSet::new();
        for (index, (entry, digest)) in entries.iter().zip(digests).enumerate() {
            next.apply(index, &entry.body, *digest, stamp, &mut touched)?;
        }
        Ok((next, touched))
    }

    fn advance_chain(
        &mut self,
        index: usize,
        link: &ChainLink,
        policy: &Digest,
        body_digest: Digest,
        touched: &mut BTreeSet<StateKey>,
    ) -> Result<(), StateError> {
        self.check_policy_current(index, policy, "a campaign record")?;
        let c = self
            .campaigns
            .get_mut(&link.campaign)
            .ok_or(StateError::Unknown {
                index,
                what: "campaign",
                digest: link.campaign,
            })?;
        if c.closed.is_some() {
            return Err(StateError::Conflict {
                index,
                reason: format!("campaign {} is closed", link.campaign.short()),
            });
        }
        if link.seq != c.entries || link.prev != c.head {
            return Err(StateError::Conflict {
                index,
                reason: format!(
                    "chain link (seq {}, prev {}) does not extend the campaign's head (seq {}, head {})",
                    link.seq,
                    link.prev.short(),
                    c.entries,
                    c.head.short()
                ),
            });
        }
        c.head = body_digest;
        c.entries += 1;
        touched.insert(StateKey::Campaign(link.campaign));
        Ok(())
    }

    fn require_usable_sources<'a>(
        &self,
        index: usize,
        sources: impl Iterator<Item = &'a Digest>,
    ) -> Result<(), StateError> {
        sources
            .into_iter()
            .try_for_each(|s| self.check_source_usable(index, s))
    }

    fn apply(
        &mut self,
        index: usize,
        body: &EntryBody,
        digest: Digest,
        stamp: Timestamp,
        touched: &mut BTreeSet<StateKey>,
    ) -> Result<(), StateError> {
        let conflict = |reason: String| StateError::Conflict { index, reason };
        match body {
            EntryBody::Manifest(m) => {
                if self.sources.contains_key(&digest) {
                    return Err(conflict(format!(
                        "source {} is already registered",
                        digest.short()
                    )));
                }
                self.sources.insert(
                    digest,
                    SourceState {
                        manifest: m.clone(),
                        registered: stamp,
                        revoked: None,
                    },
                );
                touched.insert(StateKey::Source(digest));
            }
            EntryBody::Policy(p) => {
                if self.policies.contains_key(&digest) {
                    return Err(conflict(format!(
                        "policy {} is already registered",
                        digest.short()
                    )));
                }
                if let Some(prev) = &p.supersedes {
                    let old = self.policies.get_mut(prev).ok_or(StateError::Unknown {
                        index,
                        what: "superseded policy",
                        digest: *prev,
                    })?;
                    if let Some(by) = old.superseded_by {
                        return Err(conflict(format!(
                            "policy {} was already superseded by {}",
                            prev.short(),
                            by.short()
                        )));
                    }
                    old.superseded_by = Some(digest);
                    touched.insert(StateKey::Policy(*prev));
                }
                self.policies.insert(
                    digest,
                    PolicyState {
                        policy: p.clone(),
                        superseded_by: None,
                    },
                );
                touched.insert(StateKey::Policy(digest));
            }
            EntryBody::Campaign(c) => {
                self.check_policy_current(index, &c.policy, "a new campaign")?;
                if self.campaigns.contains_key(&digest) {
                    return Err(conflict(format!("campaign {} is already open", digest.short())));
                }
                self.campaigns.insert(
                    digest,
                    CampaignState {
                        campaign: c.clone(),
                        head: Digest::ZERO,
                        entries: 0,
                        closed: None,
                    },
                );
                touched.insert(StateKey::Campaign(digest));
            }
            EntryBody::Step(e) => {
                self.require_usable_sources(index, e.examples.iter().map(|r| &r.source))?;
                self.advance_chain(index, &e.link, &e.policy, digest, touched)?;
            }
            EntryBody::Composite(e) => {
                self.require_usable_sources(index, e.records.iter().map(|r| &r.source))?;
                self.advance_chain(index, &e.link, &e.policy, digest, touched)?;
            }
            EntryBody::Refusal(r) => {
                if r.examples.is_empty() {
                    return Err(conflict("a refusal must name at least one example".into()));
                }
                self.advance_chain(index, &r.link, &r.policy, digest, touched)?
            }
            EntryBody::RefusalAggregate(r) => {
                self.advance_chain(index, &r.link, &r.policy, digest, touched)?
            }
            EntryBody::CampaignClose(close) => {
                let c = self
                    .campaigns
                    .get_mut(&close.campaign)
                    .ok_or(StateError::Unknown {
                        index,
                        what: "campaign",
                        digest: close.campaign,
                    })?;
                if c.closed.is_some() {
                    return Err(conflict("campaign is already closed".into()));
                }
                if close.head != c.head || close.entries != c.entries {
                    return Err(conflict(format!(
                        "close names head {} after {} records, the chain has {} after {}",
                        close.head.short(),
                        close.entries,
                        c.head.short(),
                        c.entries
                    )));
                }
                c.closed = Some(digest);
                touched.insert(StateKey::Campaign(close.campaign));
            }
            EntryBody::Revocation(r) => {
                let s = self.sources.get_mut(&r.source).ok_or(StateError::Unknown {
                    index,
                    what: "source",
                    digest: r.source,
                })?;
                if s.manifest.authority != r.authority {
                    return Err(conflict(format!(
                        "only {} can revoke this source",
                        s.manifest.authority
                    )));
                }
                if s.revoked.is_some() {
                    return Err(conflict("source is already revoked".into()));
                }
                // Effective from the committing block's stamp: no backdating.
                s.revoked = Some(stamp);
                touched.insert(StateKey::Source(r.source));
            }
            EntryBody::Checkpoint(_) => {}
            // Evidence: its campaign must be registered; it changes nothing.
            EntryBody::AuditFailure(f) => {
                let campaign = f.record.chain_link().map(|l| l.campaign).unwrap_or_default();
                if !self.campaigns.contains_key(&campaign) {
                    return Err(StateError::Unknown {
                        index,
                        what: "campaign",
                        digest: campaign,
                    });
                }
            }
        }
        Ok(())
    }

    /// The canonical record of `key`, if present.
    pub fn record(&self, key: StateKey) -> Option<Vec<u8>> {
        match key {
            StateKey::Source(d) => self.sources.get(&d).map(|v| encode(&(1u16, v))),
            StateKey::Policy(d) => self.policies.get(&d).map(|v| encode(&(1u16, v))),
            StateKey::Campaign(d) => self.campaigns.get(&d).map(|v| encode(&(1u16, v))),
        }
    }

    /// Every record in key order.
    pub fn records(&self) -> Vec<(StateKey, Vec<u8>)> {
        let keys = self
            .sources
            .keys()
            .map(|d| StateKey::Source(*d))
            .chain(self.policies.keys().map(|d| StateKey::Policy(*d)))
            .chain(self.campaigns.keys().map(|d| StateKey::Campaign(*d)));
        let mut out: Vec<(StateKey, Vec<u8>)> = keys.filter_map(|k| self.record(k).map(|r| (k, r))).collect();
        out.sort_by_key(|(k, _)| k.to_bytes());
        out
    }

    /// Rebuilds a state from its records (as persisted).
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = (StateKey, &'a [u8])>,
    ) -> Result<Self, StateError> {
        fn read<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StateError> {
            let ((version, v), read): ((u16, T), usize) = decode_raw("state record", b)?;
            if version != 1 {
                return Err(DecodeError::UnsupportedVersion {
                    kind: "state record",
                    found: version,
                    supported: 1,
                }
                .into());
            }
            if read != b.len() {
                return Err(DecodeError::TrailingBytes {
                    kind: "state record",
                    extra: b.len() - read,
                }
                .into());
            }
            Ok(v)
        }
        let mut s = Self::new();
        for (k, b) in records {
            match k {
                StateKey::Source(d) => {
                    s.sources.insert(d, read(b)?);
                }
                StateKey::Policy(d) => {
                    s.policies.insert(d, read(b)?);
                }
                StateKey::Campaign(d) => {
                    s.campaigns.insert(d, read(b)?);
                }
            }
        }
        Ok(s)
    }

    /// A digest over every record in key order.
    pub fn digest(&self) -> Digest {
        let records = self.records();
        let mut parts: Vec<Vec<u8>> = Vec::with_capacity(records.len() * 2);
        for (k, v) in &records {
            parts.push(k.to_bytes().to_vec());
            parts.push((v.len() as u64).to_be_bytes().to_vec());
            parts.push(v.clone());
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        tagged_hash_parts(ObjectKind::Blob, &refs)
    }
}
