//! The ledger as consensus sees it: the [`consensus::Application`] that
//! builds blocks from the mempool of complete entries, judges a leader's
//! block against the state at its parent, and appends finalised blocks to
//! the store.
//!
//! Simplex lets a leader extend a notarised block that is not final yet,
//! so a block is judged against the state *after its parent*: the committed
//! state plus the blocks between the last final one and the parent. Each
//! block this node judged or built keeps that state ([`Tentative`]) until a
//! finalisation passes it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use consensus::{Application, Certificate, Height, Proposal, View, GENESIS};
use provenance::codec::{decode, encode};
use provenance::{Bytes, Digest, EntryBody, KeyRing, LedgerEntry, LedgerState, Timestamp};
use serde::{Deserialize, Serialize};
use storage::Store;

use crate::ledger_store::LedgerStore;
use crate::wire::BlockPayload;

/// A finalised block as the store keeps it, beside the storage header: what
/// it takes to rebuild the consensus proposal after a restart, and its
/// finalisation certificate (present on the block a certificate named;
/// ancestors are final through the hash chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalityRecord {
    /// Record format version.
    pub version: u16,
    /// The consensus digest of the block.
    pub block: Digest,
    /// The consensus digest of its parent.
    pub parent: Digest,
    /// The view its parent was notarised in.
    pub parent_view: u64,
    /// The finalisation certificate, if it names this block.
    pub finalization: Option<Certificate<Bytes>>,
}

/// A complete entry waiting for a block.
#[derive(Debug, Clone)]
pub struct MempoolEntry {
    /// The entry.
    pub entry: LedgerEntry,
    /// Its canonical bytes.
    pub bytes: Bytes,
    /// Arrival order.
    pub arrival: u64,
}

#[derive(Debug, Clone)]
struct Tentative {
    parent: Digest,
    height: u64,
    state: LedgerState,
    included: Vec<Digest>,
}

/// How much older than its block's stamp a step event's step time may be
/// (ms). **Consensus-critical.** Step times may run at most the clock-skew
/// bound ahead of the stamp; behind it, they may lag by this much, so a
/// backlog of honest events (a tuner faster than the ledger for a while)
/// still commits. Backdating around a revocation gains nothing: a
/// data-source authority signs nothing for a source it has revoked.
pub const MAX_EVENT_AGE_MS: u64 = 120_000;

/// Block-building limits.
#[derive(Debug, Clone, Copy)]
pub struct BlockLimits {
    /// Most entries per block.
    pub max_entries: usize,
    /// Most payload bytes per block.
    pub max_bytes: usize,
    /// An empty block is proposed only this long (ms) after the last block.
    pub heartbeat_ms: u64,
    /// Largest tolerated difference (ms) between an event's step time and
    /// its block's stamp.
    pub max_skew_ms: u64,
}

/// What finalising a block did.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Height.
    pub height: u64,
    /// Log size after it.
    pub log_size: u64,
    /// Log root after it.
    pub root: Digest,
    /// Authenticated index root after it.
    pub index_root: Digest,
    /// Body digests of its entries.
    pub digests: Vec<Digest>,
    /// Number of campaign records (step, composite, refusal, aggregate).
    pub events: u64,
    /// Number of examples in its step and composite events.
    pub examples: u64,
    /// Whether the block carried a finalisation certificate.
    pub certified: bool,
    /// The block's stamp (its checkpoint's time).
    pub stamp: Timestamp,
    /// The blobs its entries name (`crate::blobs::named`).
    pub blobs: Vec<Digest>,
}

/// Why a block could not be finalised locally.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] storage::StoreError),
    /// A finalised block's entry does not decode or verify: the consortium
    /// certified something this node cannot accept.
    #[error("finalised block at height {height}: {reason}")]
    BadBlock {
        /// Height.
        height: u64,
        /// Why.
        reason: String,
    },
}

/// The consensus application of a node, over its store (RocksDB in a
/// node, [`crate::ledger_store::MemoryStore`] in tests).
pub struct Ledger<S: LedgerStore = Store> {
    store: Arc<RwLock<S>>,
    keyring: Arc<KeyRing>,
    limits: BlockLimits,
    mempool: HashMap<Digest, MempoolEntry>,
    arrivals: u64,
    tentative: HashMap<Digest, Tentative>,
    /// Blocks the engine told us of (not yet final), so a child of one we
    /// never judged can still be judged.
    observed: HashMap<Digest, Proposal<BlockPayload>>,
    /// Blocks kept on disk until final (digest → height), so a consortium
    /// restarted as a whole can still extend its notarised tip.
    kept: HashMap<Digest, u64>,
    finalized_tip: Digest,
    last_block_ms: u64,
    /// Blobs this node found itself lacking while building or judging a
    /// block (`crate::blobs`), for its caller to fetch.
    wanted: Vec<Digest>,
}

impl<S: LedgerStore> std::fmt::Debug for Ledger<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("mempool", &self.mempool.len())
            .field("tentative", &self.tentative.len())
            .finish_non_exhaustive()
    }
}

fn read<S>(store: &RwLock<S>) -> std::sync::RwLockReadGuard<'_, S> {
    store.read().unwrap_or_else(|p| p.into_inner())
}

fn write<S>(store: &RwLock<S>) -> std::sync::RwLockWriteGuard<'_, S> {
    store.write().unwrap_or_else(|p| p.into_inner())
}

impl<S: LedgerStore> Ledger<S> {
    /// The ledger over `store`, whose last finalised consensus block is
    /// `finalized_tip` ([`GENESIS`] when empty).
    pub fn new(
        store: Arc<RwLock<S>>,
        keyring: Arc<KeyRing>,
        limits: BlockLimits,
        finalized_tip: Digest,
    ) -> Self {
        Self {
            store,
            keyring,
            limits,
            mempool: HashMap::new(),
            arrivals: 0,
            tentative: HashMap::new(),
            observed: HashMap::new(),
            kept: HashMap::new(),
            finalized_tip,
            last_block_ms: 0,
            wanted: Vec::new(),
        }
    }

    /// Entries waiting for a block.
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// Whether a complete entry with this body digest waits for a block.
    pub fn in_mempool(&self, digest: &Digest) -> bool {
        self.mempool.contains_key(digest)
    }

    /// Adds a complete entry (its signatures already checked).
    pub fn add(&mut self, digest: Digest, entry: LedgerEntry) {
        if self.mempool.contains_key(&digest) {
            return;
        }
        let bytes = Bytes(encode(&entry));
        self.arrivals += 1;
        self.mempool.insert(
            digest,
            MempoolEntry {
                entry,
                bytes,
                arrival: self.arrivals,
            },
        );
    }

    /// The blobs this node found itself lacking since the last call: the
    /// caller fetches them, then asks the engine to judge again.
    pub fn take_wanted(&mut self) -> Vec<Digest> {
        std::mem::take(&mut self.wanted)
    }

    /// Whether this node holds every blob the entries of `p` name (blob
    /// custody: a validator votes for no block naming a blob it lacks);
    /// what it lacks is wanted.
    fn holds_blobs(&mut self, p: &Proposal<BlockPayload>) -> bool {
        let lacking: Vec<Digest> = {
            let store = read(&self.store);
            p.payload
                .entries
                .iter()
                .filter_map(|b| decode::<LedgerEntry>(b.as_slice()).ok())
                .flat_map(|e| store.missing_blobs(&e.body))
                .collect()
        };
        if lacking.is_empty() {
            return true;
        }
        tracing::debug!(
            "not voting for the block at height {} yet: it names {} blob(s) this node lacks",
            p.height.0,
            lacking.len()
        );
        self.wanted.extend(lacking);
        false
    }

    /// Judges the observed, unjudged ancestors of `parent` (oldest first),
    /// so that [`Self::state_at`] can answer for it.
    fn judge_ancestors(&mut self, parent: &Digest) {
        let mut chain = Vec::new();
        let mut d = *parent;
        while d != self.finalized_tip && !self.tentative.contains_key(&d) {
            match self.observed.get(&d) {
                Some(p) if chain.len() < 1024 => {
                    chain.push(p.clone());
                    d = p.parent;
                }
                _ => return,
            }
        }
        for p in chain.into_iter().rev() {
            if !self.judge(&p) {
                return;
            }
        }
    }

    /// The state after block `parent` and the entries of the non-final
    /// blocks up to it, or `None` if this node has not judged that chain.
    fn state_at(&self, parent: &Digest) -> Option<(LedgerState, HashSet<Digest>)> {
        let mut included = HashSet::new();
        let mut d = *parent;
        let mut first: Option<&Tentative> = None;
        while d != self.finalized_tip {
            let t = self.tentative.get(&d)?;
            if first.is_none() {
                first = Some(t);
            }
            included.extend(t.included.iter().copied());
            d = t.parent;
        }
        let state = match first {
            Some(t) => t.state.clone(),
            None => read(&self.store).state().clone(),
        };
        Some((state, included))
    }

    fn order_key(e: &MempoolEntry) -> (u8, Digest, u64, u64) {
        match &e.entry.body {
            EntryBody::Manifest(_) | EntryBody::Policy(_) => (0, Digest::ZERO, 0, e.arrival),
            EntryBody::Revocation(_) => (1, Digest::ZERO, 0, e.arrival),
            EntryBody::Campaign(_) => (2, Digest::ZERO, 0, e.arrival),
            EntryBody::CampaignClose(_) => (4, Digest::ZERO, 0, e.arrival),
            EntryBody::Checkpoint(_) => (5, Digest::ZERO, 0, e.arrival),
            b => match b.chain_link() {
                Some(l) => (3, l.campaign, l.seq, e.arrival),
                None => (5, Digest::ZERO, 0, e.arrival),
            },
        }
    }

    fn time_ok(&self, body: &EntryBody, stamp: u64) -> bool {
        body.record_time().is_none_or(|t| {
            t.0 <= stamp.saturating_add(self.limits.max_skew_ms)
                && stamp <= t.0.saturating_add(MAX_EVENT_AGE_MS)
        })
    }

    /// Appends a finalised block to the store.
    pub fn finalize(
        &mut self,
        proposal: &Proposal<BlockPayload>,
        finalization: Option<Certificate<Bytes>>,
    ) -> Result<Committed, LedgerError> {
        let height = proposal.height.0;
        let bad = |reason: String| LedgerError::BadBlock { height, reason };
        let block = proposal.digest();
        let mut entries = Vec::with_capacity(proposal.payload.entries.len());
        let judged = self.tentative.contains_key(&block);
        {
            let store = read(&self.store);
            let mut state = store.state().clone();
            for b in &proposal.payload.entries {
                let e: LedgerEntry = decode(b.as_slice()).map_err(|e| bad(e.to_string()))?;
                if !judged {
                    // Reached by sync, not judged here: check every
                    // signature before it enters this node's log.
                    e.verify(&self.keyring, &state).map_err(|e| bad(e.to_string()))?;
                    state = state
                        .after_block(std::slice::from_ref(&e), Timestamp(proposal.stamp))
                        .map_err(|e| bad(e.to_string()))?
                        .0;
                }
                entries.push(e);
            }
        }
        let record = FinalityRecord {
            version: 1,
            block,
            parent: proposal.parent,
            parent_view: proposal.parent_view.0,
            finalization: finalization.clone(),
        };
        let receipt = write(&self.store).append(
            Timestamp(proposal.stamp),
            proposal.view.0,
            proposal.proposer,
            &entries,
            &encode(&record),
        )?;
        let mut digests = Vec::with_capacity(entries.len());
        let (mut events, mut examples) = (0, 0);
        let mut blobs = Vec::new();
        for e in &entries {
            blobs.extend(crate::blobs::named(&e.body));
            let d = e.body.digest();
            self.mempool.remove(&d);
            digests.push(d);
            if e.body.chain_link().is_some() {
                events += 1;
                examples += e.body.event().map_or(0, |ev| ev.records.len() as u64);
            }
        }
        self.finalized_tip = block;
        let done: Vec<Digest> = self
            .kept
            .iter()
            .filter(|(_, h)| **h <= height)
            .map(|(d, _)| *d)
            .collect();
        if !done.is_empty() {
            // A failure leaves stale copies, ignored on the next start.
            if let Err(e) = read(&self.store).forget_blocks(&done) {
                tracing::warn!("forgetting kept blocks: {e}");
            }
            self.kept.retain(|_, h| *h > height);
        }
        self.tentative.retain(|_, t| t.height > height);
        // By view too: a proposal's height is only its claim.
        self.observed
            .retain(|_, p| p.height.0 > height && p.view > proposal.view);
        self.last_block_ms = self.last_block_ms.max(proposal.stamp);
        Ok(Committed {
            height,
            log_size: receipt.log_size,
            root: receipt.root,
            index_root: receipt.index_root,
            digests,
            events,
            examples,
            certified: finalization.is_some(),
            stamp: Timestamp(proposal.stamp),
            blobs,
        })
    }
}

impl<S: LedgerStore> Ledger<S> {
    /// Drops a complete entry that can no longer commit from the mempool.
    pub fn discard(&mut self, digest: &Digest) {
        self.mempool.remove(digest);
    }
}

impl<S: LedgerStore> Application for Ledger<S> {
    type Payload = BlockPayload;

    fn propose(&mut self, parent: &Digest, height: Height, _view: View, stamp: u64) -> Option<BlockPayload> {
        self.judge_ancestors(parent);
        let (mut state, included) = self.state_at(parent)?;
        let mut candidates: Vec<(&Digest, &MempoolEntry)> = self
            .mempool
            .iter()
            .filter(|(d, _)| !included.contains(*d))
            .collect();
        if candidates.is_empty() && stamp < self.last_block_ms + self.limits.heartbeat_ms {
            return None;
        }
        candidates.sort_by_key(|(_, e)| Self::order_key(e));
        let mut picked = Vec::new();
        let mut digests = Vec::new();
        let mut bytes = 0usize;
        let mut stale = Vec::new();
        for (d, e) in candidates {
            if picked.len() >= self.limits.max_entries {
                break;
            }
            // One that does not fit the rest of the budget waits; smaller
            // ones behind it still go in.
            if bytes + e.bytes.len() > self.limits.max_bytes {
                continue;
            }
            if !self.time_ok(&e.entry.body, stamp) {
                continue;
            }
            // An entry naming a blob this node lacks waits for it.
            let lacking = read(&self.store).missing_blobs(&e.entry.body);
            if !lacking.is_empty() {
                self.wanted.extend(lacking);
                continue;
            }
            match state.after_block(std::slice::from_ref(&e.entry), Timestamp(stamp)) {
                Ok((next, _)) => {
                    state = next;
                    bytes += e.bytes.len();
                    picked.push(e.bytes.clone());
                    digests.push(*d);
                }
                Err(_) => {
                    // Already committed (a duplicate) or superseded: drop
                    // it; an entry waiting for its predecessor stays.
                    if read(&self.store).committed(d).unwrap_or(false) {
                        stale.push(*d);
                    }
                }
            }
        }
        for d in stale {
            self.mempool.remove(&d);
        }
        if picked.is_empty() && stamp < self.last_block_ms + self.limits.heartbeat_ms {
            return None;
        }
        self.last_block_ms = stamp;
        let _ = height;
        Some(BlockPayload { entries: picked })
    }

    fn verify(&mut self, p: &Proposal<BlockPayload>) -> bool {
        self.judge_ancestors(&p.parent);
        self.judge(p) && self.holds_blobs(p)
    }

    fn observe(&mut self, p: &Proposal<BlockPayload>) {
        // Bounded: blocks above the final tip only, and not too many.
        if self.observed.len() < 4096 {
            self.observed.insert(p.digest(), p.clone());
        }
    }

    fn keep(&mut self, p: &Proposal<BlockPayload>) {
        let d = p.digest();
        if self.kept.len() < 4096 && !self.kept.contains_key(&d) {
            // Durable before the engine votes for it.
            match read(&self.store).keep_block(&d, &encode(p)) {
                Ok(()) => {
                    self.kept.insert(d, p.height.0);
                }
                Err(e) => tracing::error!("keeping block {}: {e}", d.short()),
            }
        }
    }
}

impl<S: LedgerStore> Ledger<S> {
    /// Whether block `p` is a valid extension of its (judged) parent; on
    /// success its state is kept for its children.
    fn judge(&mut self, p: &Proposal<BlockPayload>) -> bool {
        let block = p.digest();
        if self.tentative.contains_key(&block) {
            return true;
        }
        let Some((mut state, included)) = self.state_at(&p.parent) else {
            tracing::debug!(
                "cannot judge block at height {}: parent not judged here",
                p.height.0
            );
            return false;
        };
        if p.payload.entries.len() > self.limits.max_entries
            || p.payload.entries.iter().map(|b| b.len()).sum::<usize>() > self.limits.max_bytes
        {
            return false;
        }
        let mut digests = Vec::with_capacity(p.payload.entries.len());
        let mut seen = HashSet::new();
        let store = read(&self.store);
        for b in &p.payload.entries {
            let Ok(e) = decode::<LedgerEntry>(b.as_slice()) else {
                return false;
            };
            let d = e.body.digest();
            if included.contains(&d) || !seen.insert(d) || store.committed(&d).unwrap_or(false) {
                return false;
            }
            if !self.time_ok(&e.body, p.stamp) {
                return false;
            }
            // Signatures this node checked one by one when it collected
            // the very same entry need no second check.
            let known = self.mempool.get(&d).is_some_and(|m| m.bytes == *b);
            if !known && e.verify(&self.keyring, &state).is_err() {
                return false;
            }
            match state.after_block(std::slice::from_ref(&e), Timestamp(p.stamp)) {
                Ok((next, _)) => state = next,
                Err(_) => return false,
            }
            digests.push(d);
        }
        drop(store);
        self.tentative.insert(
            block,
            Tentative {
                parent: p.parent,
                height: p.height.0,
                state,
                included: digests,
            },
        );
        true
    }
}

/// A finalised block read back from the store: the block as consensus made
/// it, the finalisation certificate stored with it, its entries' bytes.
pub type StoredBlock = (Proposal<BlockPayload>, Option<Certificate<Bytes>>, usize);

/// Startup: what the node's RocksDB store holds of the consensus chain.
impl Ledger {
    /// The last finalised blocks of the store (at most two, in height
    /// order), for [`consensus::Engine::restore`], and the digest of its
    /// tip; each rebuilds its consensus digest and the tip names its parent.
    pub fn restore_tip(store: &Store) -> Result<(Vec<Proposal<BlockPayload>>, Digest), LedgerError> {
        let head = store.head().height;
        let mut chain: Vec<Proposal<BlockPayload>> = Vec::new();
        for h in head.saturating_sub(1).max(1)..=head {
            let (p, _, _) = Self::stored_block(store, h)?;
            if let Some(parent) = chain.last() {
                if p.parent != parent.digest() {
                    return Err(LedgerError::BadBlock {
                        height: h,
                        reason: "the stored block does not name its parent".into(),
                    });
                }
            }
            chain.push(p);
        }
        let tip = chain.last().map_or(GENESIS, Proposal::digest);
        Ok((chain, tip))
    }

    /// The finalised block at height `h` as consensus made it, rebuilt from
    /// the store, with the finalisation certificate stored with it and its
    /// entries' size in bytes.
    pub fn stored_block(store: &Store, h: u64) -> Result<StoredBlock, LedgerError> {
        let bad = |reason: String| LedgerError::BadBlock { height: h, reason };
        let b = store.block(h)?.ok_or_else(|| bad("missing".into()))?;
        let (rec, _) =
            provenance::codec::decode_raw::<FinalityRecord>("finality record", b.certificate.as_slice())
                .map_err(|e| bad(e.to_string()))?;
        let mut entries = Vec::with_capacity(b.header.entry_count as usize);
        let mut bytes = 0;
        for i in 0..u64::from(b.header.entry_count) {
            let e = store
                .entry_bytes(b.first_index + i)?
                .ok_or_else(|| bad(format!("entry {} is missing", b.first_index + i)))?;
            bytes += e.len();
            entries.push(Bytes(e));
        }
        let p = Proposal {
            view: View(b.header.view),
            height: Height(h),
            parent: rec.parent,
            parent_view: View(rec.parent_view),
            stamp: b.header.stamp.0,
            proposer: b.header.proposer,
            payload: BlockPayload { entries },
        };
        if p.digest() != rec.block {
            return Err(bad(
                "the stored block does not rebuild its consensus digest".into()
            ));
        }
        Ok((p, rec.finalization, bytes))
    }

    /// The blocks kept on disk that are above the store's head, for
    /// [`consensus::Engine::restore_blocks`]; stale copies are dropped.
    pub fn kept_blocks(store: &Store) -> Result<Vec<Proposal<BlockPayload>>, LedgerError> {
        let head = store.head().height;
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for (d, bytes) in store.unfinalized_blocks()? {
            match provenance::codec::decode_raw::<Proposal<BlockPayload>>("kept block", &bytes) {
                Ok((p, _)) if p.height.0 > head && p.digest() == d => out.push(p),
                Ok(_) => stale.push(d),
                Err(e) => {
                    tracing::warn!("kept block {}: {e}", d.short());
                    stale.push(d);
                }
            }
        }
        if !stale.is_empty() {
            store.remove_unfinalized_blocks(&stale)?;
        }
        out.sort_by_key(|p| (p.height.0, p.view.0));
        Ok(out)
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
