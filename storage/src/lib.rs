//! Keep a node's durable state in RocksDB: finalised blocks and their
//! certificates, the log's entries and Merkle nodes, checkpoints, blobs,
//! indexes, the consensus safety state and the derived ledger state.
//!
//! ## Durability
//!
//! There is **one write path**, [`Store::write_synced`]: every write is a
//! RocksDB `WriteBatch` committed with `sync = true`, so it is on disk (WAL
//! fsynced) before the call returns. A finalised block is one batch: its
//! entries, their Merkle nodes, index rows, changed state records, the block
//! record and the new head. After a crash the store is therefore exactly at
//! a block boundary, and every block acknowledged (returned `Ok`) survives.
//! The consensus safety state ([`Store::put_safety_state`]) goes through the
//! same synced path, so it is durable before a vote leaves the node.
//!
//! ## The log's tree on disk
//!
//! `tree` holds the hash of every perfect, aligned subtree of the RFC 9162
//! log tree, keyed by (level, index). Appending a leaf writes the leaf hash
//! and each subtree it completes (amortised two nodes per leaf), using the
//! in-memory *frontier* (the right-edge perfect subtrees, one per set bit of
//! the size, reloaded from disk at open). Proofs at any size are built by
//! `provenance::merkle` through the [`provenance::merkle::SubtreeSource`]
//! trait: O(log n) node reads, nothing rebuilt.
//!
//! ## Recovery
//!
//! [`Store::open`] reloads the frontier and checks that it gives the head's
//! root, then checks the latest stored checkpoint: its consortium signature
//! against genesis, and its root against the stored tree at its size. Any
//! disagreement refuses to open with [`StoreError::Recovery`], which says
//! what disagrees.
//!
//! ## State
//!
//! The ledger state (`provenance::LedgerState`) is derived from the log;
//! each block's changed records are written in the block's batch, and a
//! replay of the log from genesis rebuilds it bit for bit
//! ([`replay_state`]).

mod authindex;
mod export;
mod frontier;
mod index;
mod keys;
mod read;
pub mod synthetic;

pub use export::{import, ExportStats, FrameError};
pub use keys::IndexPrefix;

/// The authenticated index's keys an entry is filed under (its source and
/// campaign index prefixes), resolved against `view` (the state after the
/// entry's block).
pub fn index_keys(
    entry: &LedgerEntry,
    digest: &Digest,
    view: &dyn provenance::LedgerView,
) -> std::collections::BTreeSet<provenance::index::IndexKey> {
    index::index_prefixes(entry, digest, view)
        .iter()
        .filter_map(IndexPrefix::authenticated)
        .collect()
}

use std::path::Path;

use provenance::block::entries_root;
use provenance::codec::{decode_raw, encode, DecodeError};
use provenance::merkle::{LogHasher, SubtreeSource, TreeHasher};
use provenance::{
    decode, BlockHeader, Bytes, Canonical, Cosignature, Digest, KeyRing, LedgerEntry, LedgerState,
    SignedCheckpoint, StateError, StateKey, Timestamp,
};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use frontier::Frontier;
use keys::*;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    /// Stored bytes do not decode or do not match their key.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The store is inconsistent on open and refuses to start.
    #[error("refusing to open the store: {0}")]
    Recovery(String),
    /// A block does not extend the store.
    #[error("block refused: {0}")]
    BlockRefused(String),
    /// A block's entries do not apply to the ledger state.
    #[error("block refused: {0}")]
    State(#[from] StateError),
    /// A checkpoint was refused.
    #[error("checkpoint refused: {0}")]
    Checkpoint(String),
    /// A stored blob does not hash to its key.
    #[error("blob {0} does not match its digest")]
    BlobMismatch(Digest),
    /// Decoding failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Result with [`StoreError`].
pub type Result<T> = std::result::Result<T, StoreError>;

/// The store's head: the last finalised block and the log after it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Head {
    /// Height of the last block (0 when empty).
    pub height: u64,
    /// Digest of its header.
    pub block: Digest,
    /// Its stamp.
    pub stamp: Timestamp,
    /// Number of log entries.
    pub log_size: u64,
    /// Log root at `log_size`.
    pub root: Digest,
    /// Authenticated index root at `log_size`.
    pub index_root: Digest,
}

/// A finalised block as stored: header, certificate, and where its entries
/// start in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    /// The header.
    pub header: BlockHeader,
    /// The finality certificate (opaque to the store; consensus checks it).
    pub certificate: Bytes,
    /// Log index of the block's first entry.
    pub first_index: u64,
}

/// What appending a block produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendReceipt {
    /// The block's height.
    pub height: u64,
    /// Log index of its first entry.
    pub first_index: u64,
    /// Log size after it.
    pub log_size: u64,
    /// Log root after it.
    pub root: Digest,
    /// Authenticated index root after it.
    pub index_root: Digest,
}

const RECORD_VERSION: u16 = 1;

fn record<T: Serialize>(value: &T) -> Vec<u8> {
    encode(&(RECORD_VERSION, value))
}

fn read_record<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    let ((version, v), read): ((u16, T), usize) = decode_raw(what, bytes)?;
    if version != RECORD_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            kind: what,
            found: version,
            supported: RECORD_VERSION,
        }
        .into());
    }
    if read != bytes.len() {
        return Err(StoreError::Corrupt(format!(
            "{what}: {} trailing bytes",
            bytes.len() - read
        )));
    }
    Ok(v)
}

/// The refusal of a store written in format `found` (none: v1).
fn earlier_format(found: Option<&[u8]>) -> StoreError {
    StoreError::Recovery(format!(
        "this store was written by an earlier govtune (format {:?}; this one writes {:?}: the log is RFC 6962 over SHA-256, its entries carry replay audits, it keeps the authenticated index of sources and campaigns, and its checkpoints carry validators' note signatures and witnesses' cosignatures) and is not converted: start the node on an empty data_dir under the new genesis",
        found.map(|f| String::from_utf8_lossy(f).to_string()).unwrap_or_else(|| "v1".into()),
        String::from_utf8_lossy(STORE_FORMAT),
    ))
}

fn digest_from(what: &str, b: &[u8]) -> Result<Digest> {
    let a: [u8; 32] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, not 32", b.len())))?;
    Ok(Digest(a))
}

/// A certified checkpoint whose consortium signature verified.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedCheckpoint<'a>(&'a SignedCheckpoint);

impl<'a> VerifiedCheckpoint<'a> {
    /// Checks `cp`'s signatures against the genesis keys. A node stores
    /// only checkpoints with the consortium's BLS signature (which seeds
    /// each campaign's data order), whatever q validators' note signatures
    /// it also carries.
    pub fn check(cp: &'a SignedCheckpoint, keyring: &KeyRing) -> Result<Self> {
        Self::with_bls(cp)?;
        cp.verify(keyring)
            .map_err(|e| StoreError::Checkpoint(e.to_string()))?;
        Ok(Self(cp))
    }

    fn with_bls(cp: &SignedCheckpoint) -> Result<()> {
        if cp.signature.is_empty() {
            return Err(StoreError::Checkpoint(
                "no consortium signature: a node keeps only checkpoints with it".into(),
            ));
        }
        Ok(())
    }

    /// [`Self::check`], taking a signature found in `verified` (checked
    /// before, elsewhere) without a pairing.
    pub fn check_cached(
        cp: &'a SignedCheckpoint,
        keyring: &KeyRing,
        verified: &provenance::crypto::VerifiedSignatures,
    ) -> Result<Self> {
        Self::with_bls(cp)?;
        cp.verify_with(keyring, |m, s| verified.verify_signature(keyring, m, s))
            .map_err(|e| StoreError::Checkpoint(e.to_string()))?;
        Ok(Self(cp))
    }
}

/// A node's RocksDB store.
pub struct Store {
    db: DB,
    origin: String,
    head: Head,
    frontier: Frontier,
    state: LedgerState,
    latest_checkpoint: Option<SignedCheckpoint>,
    latest_witnessed: Option<SignedCheckpoint>,
    witness_quorum: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("origin", &self.origin)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl SubtreeSource for Store {
    type Error = StoreError;
    fn size(&self) -> u64 {
        self.head.log_size
    }
    fn perfect(&self, level: u32, index: u64) -> Result<Digest> {
        let cf = self.cf(CF_TREE)?;
        let v = self
            .db
            .get_pinned_cf(cf, tree_key(level, index))?
            .ok_or_else(|| StoreError::Corrupt(format!("tree node ({level}, {index}) is missing")))?;
        digest_from("tree node", &v)
    }
}

impl Store {
    /// Opens (or creates) the store at `path` for the log named `origin`,
    /// checking it against the latest checkpoint (see the crate docs).
    pub fn open(path: &Path, origin: &str, keyring: &KeyRing) -> Result<Self> {
        // A store of an earlier format lacks column families this one
        // creates: its format is read without them, so a refused store is
        // left exactly as it was.
        if let Ok(existing) = DB::list_cf(&Options::default(), path) {
            if ALL_CFS.iter().any(|c| !existing.iter().any(|e| e == c)) {
                let old = DB::open_cf_for_read_only(&Options::default(), path, &existing, false)?;
                let format = match old.cf_handle(CF_META) {
                    Some(meta) => old.get_cf(meta, META_FORMAT)?,
                    None => None,
                };
                if format.as_deref() != Some(STORE_FORMAT) {
                    return Err(earlier_format(format.as_deref()));
                }
            }
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = ALL_CFS
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let mut store = Store {
            db,
            origin: origin.to_string(),
            head: Head::default(),
            frontier: Frontier::default(),
            state: LedgerState::new(),
            latest_checkpoint: None,
            latest_witnessed: None,
            witness_quorum: keyring.log().witness_quorum(),
        };
        store.recover(keyring)?;
        Ok(store)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Corrupt(format!("column family {name} is missing")))
    }

    fn recover(&mut self, keyring: &KeyRing) -> Result<()> {
        let format = self.db.get_cf(self.cf(CF_META)?, META_FORMAT)?;
        let head = self.db.get_cf(self.cf(CF_META)?, META_HEAD)?;
        match (format.as_deref(), &head) {
            (Some(f), _) if f == STORE_FORMAT => {}
            (None, None) => self.db.put_cf(self.cf(CF_META)?, META_FORMAT, STORE_FORMAT)?,
            (f, _) => return Err(earlier_format(f)),
        }
        if let Some(b) = head {
            self.head = read_record("head", &b)?;
        }
        let size = self.head.log_size;
        let mut frontier = Frontier(vec![None; 64]);
        for level in 0..64u32 {
            if size >> level & 1 == 1 {
                frontier.0[level as usize] = Some(self.perfect(level, (size >> level) - 1)?);
            }
        }
        if frontier.root() != self.head.root && size > 0 {
            return Err(StoreError::Recovery(format!(
                "the stored tree gives root {} at size {size}, the head says {}",
                frontier.root(),
                self.head.root
            )));
        }
        self.frontier = frontier;
        let index = self.index_root_at(size)?;
        if index != self.head.index_root {
            return Err(StoreError::Recovery(format!(
                "the stored index gives root {index} at size {size}, the head says {}",
                self.head.index_root
            )));
        }
        if let Some(h) = self.db.get_cf(self.cf(CF_META)?, META_LATEST_CHECKPOINT)? {
            let height = parse_u64(&h).ok_or_else(|| StoreError::Corrupt("latest checkpoint key".into()))?;
            let cp = self.checkpoint(height)?.ok_or_else(|| {
                StoreError::Recovery(format!("latest checkpoint (height {height}) is missing"))
            })?;
            cp.verify(keyring).map_err(|e| {
                StoreError::Recovery(format!("checkpoint at height {height}: {e} under this genesis"))
            })?;
            if cp.checkpoint.size > size {
                return Err(StoreError::Recovery(format!(
                    "checkpoint at height {height} certifies {} entries but the log holds {size}",
                    cp.checkpoint.size
                )));
            }
            let root = self.root_at(cp.checkpoint.size)?;
            if root != cp.checkpoint.root {
                return Err(StoreError::Recovery(format!(
                    "checkpoint at height {height} certifies root {} at size {}, the stored tree gives {root}",
                    cp.checkpoint.root, cp.checkpoint.size
                )));
            }
            self.latest_checkpoint = Some(cp);
        }
        if let Some(h) = self.db.get_cf(self.cf(CF_META)?, META_LATEST_WITNESSED)? {
            let height = parse_u64(&h).ok_or_else(|| StoreError::Corrupt("latest witnessed key".into()))?;
            let cp = self.checkpoint(height)?.ok_or_else(|| {
                StoreError::Recovery(format!(
                    "latest witnessed checkpoint (height {height}) is missing"
                ))
            })?;
            keyring
                .log()
                .verify_cosignatures(&cp.checkpoint, &self.cosignatures(height)?)
                .map_err(|e| StoreError::Recovery(format!("checkpoint at height {height}: {e}")))?;
            self.latest_witnessed = Some(cp);
        }
        let cf = self.cf(CF_STATE)?;
        let mut records = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item?;
            let key = StateKey::from_bytes(&k).ok_or_else(|| StoreError::Corrupt("state key".into()))?;
            records.push((key, v));
        }
        self.state = LedgerState::from_records(records.iter().map(|(k, v)| (*k, &v[..])))?;
        Ok(())
    }

    /// The one write path: a batch, fsynced before returning.
    fn write_synced(&self, batch: WriteBatch) -> Result<()> {
        let mut o = WriteOptions::default();
        o.set_sync(true);
        self.db.write_opt(batch, &o)?;
        Ok(())
    }

    /// The head.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The log origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The ledger state after the last block.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// The header the next block must carry for `entries`, stamped `stamp`.
    pub fn next_header(
        &self,
        entries: &[LedgerEntry],
        stamp: Timestamp,
        view: u64,
        proposer: u16,
    ) -> BlockHeader {
        BlockHeader {
            version: BlockHeader::VERSION,
            height: self.head.height + 1,
            view,
            parent: self.head.block,
            stamp,
            proposer,
            entries_root: entries_root(entries),
            entry_count: entries.len() as u32,
        }
    }

    /// Appends a finalised block in one synced batch; refuses (writing
    /// nothing) a block that does not extend the head or whose entries do
    /// not apply to the state.
    pub fn append_block(
        &mut self,
        header: &BlockHeader,
        entries: &[LedgerEntry],
        certificate: &[u8],
    ) -> Result<AppendReceipt> {
        let refuse = |m: String| Err(StoreError::BlockRefused(m));
        if header.height != self.head.height + 1 {
            return refuse(format!(
                "height {} does not follow {}",
                header.height, self.head.height
            ));
        }
        if header.parent != self.head.block {
            return refuse(format!(
                "parent {} is not the head block {}",
                header.parent, self.head.block
            ));
        }
        if header.stamp < self.head.stamp {
            return refuse(format!(
                "stamp {} goes back from {}",
                header.stamp, self.head.stamp
            ));
        }
        if header.entry_count as usize != entries.len() || entries_root(entries) != header.entries_root {
            return refuse("entries do not match the header's root and count".into());
        }
        // Each body digest once: for the state, the indexes and the digest index.
        let digests: Vec<Digest> = entries.iter().map(|e| e.body.digest()).collect();
        let (state, touched) = self
            .state
            .after_block_with_digests(entries, &digests, header.stamp)?;

        let mut batch = WriteBatch::default();
        let mut frontier = self.frontier.clone();
        let first_index = self.head.log_size;
        let mut additions: std::collections::BTreeMap<provenance::index::IndexKey, Vec<u64>> =
            Default::default();
        let (cf_entries, cf_digest, cf_tree, cf_index) = (
            self.cf(CF_ENTRIES)?,
            self.cf(CF_BY_DIGEST)?,
            self.cf(CF_TREE)?,
            self.cf(CF_INDEX)?,
        );
        for (i, (e, digest)) in entries.iter().zip(&digests).enumerate() {
            let idx = first_index + i as u64;
            let bytes = e.encode();
            batch.put_cf(cf_entries, u64_key(idx), &bytes);
            batch.put_cf(cf_digest, digest.0, u64_key(idx));
            for (level, index, node) in frontier.push(idx, LogHasher::hash_leaf(&bytes))? {
                batch.put_cf(cf_tree, tree_key(level, index), node.0);
            }
            for prefix in index::index_prefixes(e, digest, &state) {
                batch.put_cf(cf_index, prefix.with_index(idx), []);
                if let Some(key) = prefix.authenticated() {
                    additions.entry(key).or_default().push(idx);
                }
            }
            batch.delete_cf(self.cf(CF_PENDING)?, digest.0);
        }
        let cf_state = self.cf(CF_STATE)?;
        for key in &touched {
            match state.record(*key) {
                Some(r) => batch.put_cf(cf_state, key.to_bytes(), r),
                None => batch.delete_cf(cf_state, key.to_bytes()),
            }
        }
        let block = BlockRecord {
            header: header.clone(),
            certificate: Bytes(certificate.to_vec()),
            first_index,
        };
        batch.put_cf(self.cf(CF_BLOCKS)?, u64_key(header.height), record(&block));
        let log_size = first_index + entries.len() as u64;
        let index_root = if additions.is_empty() {
            self.head.index_root
        } else {
            authindex::append(&self.db, self.cf(CF_AUTHINDEX)?, &mut batch, &additions, log_size)?
        };
        let head = Head {
            height: header.height,
            block: header.digest(),
            stamp: header.stamp,
            log_size,
            root: frontier.root(),
            index_root,
        };
        batch.put_cf(self.cf(CF_META)?, META_HEAD, record(&head));
        self.write_synced(batch)?;

        self.head = head;
        self.frontier = frontier;
        self.state = state;
        Ok(AppendReceipt {
            height: self.head.height,
            first_index,
            log_size: self.head.log_size,
            root: self.head.root,
            index_root: self.head.index_root,
        })
    }

    /// Stores a certified checkpoint after checking its signature, that it
    /// certifies this log's root at its size and that its time is the stamp
    /// of this chain's block at its height.
    pub fn put_checkpoint(&mut self, cp: &SignedCheckpoint, keyring: &KeyRing) -> Result<()> {
        self.put_verified_checkpoint(VerifiedCheckpoint::check(cp, keyring)?)
    }

    /// [`Store::put_checkpoint`] of a checkpoint whose signature was checked
    /// before (so a caller holding the store behind a lock checks it
    /// without the lock).
    pub fn put_verified_checkpoint(&mut self, v: VerifiedCheckpoint<'_>) -> Result<()> {
        let cp = v.0;
        let c = &cp.checkpoint;
        if c.origin != self.origin {
            return Err(StoreError::Checkpoint(format!(
                "origin {:?} is not this log's {:?}",
                c.origin, self.origin
            )));
        }
        if c.size > self.head.log_size || c.height > self.head.height {
            return Err(StoreError::Checkpoint(format!(
                "certifies size {} at height {}, the store is at size {} height {}",
                c.size, c.height, self.head.log_size, self.head.height
            )));
        }
        let root = self.root_at(c.size)?;
        if root != c.root {
            return Err(StoreError::Checkpoint(format!(
                "certifies root {} at size {}, this log's root there is {root}",
                c.root, c.size
            )));
        }
        let index = self.index_root_at(c.size)?;
        if index != c.index {
            return Err(StoreError::Checkpoint(format!(
                "certifies index root {} at size {}, this log's index root there is {index}",
                c.index, c.size
            )));
        }
        let stamp = match c.height {
            0 => Timestamp(0),
            h => {
                self.block(h)?
                    .ok_or_else(|| StoreError::Corrupt(format!("block {h} is missing")))?
                    .header
                    .stamp
            }
        };
        if c.time != stamp {
            return Err(StoreError::Checkpoint(format!(
                "certifies time {} at height {}, this chain's block there is stamped {stamp}",
                c.time.0, c.height
            )));
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_CHECKPOINTS)?, u64_key(c.height), cp.encode());
        let newer = self
            .latest_checkpoint
            .as_ref()
            .is_none_or(|l| l.checkpoint.height <= c.height);
        if newer {
            batch.put_cf(self.cf(CF_META)?, META_LATEST_CHECKPOINT, u64_key(c.height));
        }
        self.write_synced(batch)?;
        if newer {
            self.latest_checkpoint = Some(cp.clone());
        }
        Ok(())
    }

    /// The checkpoint stored for `height`.
    pub fn checkpoint(&self, height: u64) -> Result<Option<SignedCheckpoint>> {
        match self.db.get_cf(self.cf(CF_CHECKPOINTS)?, u64_key(height))? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    /// The latest stored checkpoint.
    pub fn latest_checkpoint(&self) -> Option<&SignedCheckpoint> {
        self.latest_checkpoint.as_ref()
    }

    /// The checkpoint answers are proved under: the latest one with the
    /// cosignatures genesis requires (the latest stored one if it requires
    /// none).
    pub fn served_checkpoint(&self) -> Option<&SignedCheckpoint> {
        if self.witness_quorum == 0 {
            self.latest_checkpoint.as_ref()
        } else {
            self.latest_witnessed.as_ref()
        }
    }

    /// The witnesses' cosignatures kept for the checkpoint at `height`.
    pub fn cosignatures(&self, height: u64) -> Result<Vec<Cosignature>> {
        match self.db.get_cf(self.cf(CF_COSIGNATURES)?, u64_key(height))? {
            Some(b) => read_record("cosignatures", &b),
            None => Ok(Vec::new()),
        }
    }

    /// Keeps the cosignatures in `new` of the stored checkpoint at `height`
    /// that verify under genesis (a witness's newer one replaces its older);
    /// returns how many the checkpoint now has. The checkpoint becomes the
    /// served one once it has genesis's quorum and is the newest that does.
    pub fn put_cosignatures(&mut self, height: u64, new: &[Cosignature], keyring: &KeyRing) -> Result<usize> {
        let cp = self
            .checkpoint(height)?
            .ok_or_else(|| StoreError::Checkpoint(format!("no checkpoint at height {height}")))?;
        let log = keyring.log();
        let mut kept = self.cosignatures(height)?;
        for c in new {
            if !log.verify_cosignature(&cp.checkpoint, c) {
                return Err(StoreError::Checkpoint(format!(
                    "cosignature by {:?} at height {height} does not verify",
                    c.witness
                )));
            }
            match kept.iter_mut().find(|k| k.witness == c.witness) {
                Some(k) if k.time < c.time => *k = c.clone(),
                Some(_) => {}
                None => kept.push(c.clone()),
            }
        }
        kept.sort_by(|a, b| a.witness.cmp(&b.witness));
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_COSIGNATURES)?, u64_key(height), record(&kept));
        let witnessed = self.witness_quorum > 0
            && kept.len() >= self.witness_quorum
            && self
                .latest_witnessed
                .as_ref()
                .is_none_or(|l| l.checkpoint.height <= height);
        if witnessed {
            batch.put_cf(self.cf(CF_META)?, META_LATEST_WITNESSED, u64_key(height));
        }
        self.write_synced(batch)?;
        if witnessed {
            self.latest_witnessed = Some(cp);
        }
        Ok(kept.len())
    }

    /// Persists the consensus safety state (synced before returning, so a
    /// vote may be sent after this returns).
    pub fn put_safety_state(&self, bytes: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, META_SAFETY, bytes);
        self.write_synced(batch)
    }

    /// The persisted consensus safety state.
    pub fn safety_state(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_META)?, META_SAFETY)?)
    }

    /// Durably keeps a consensus block this node learned that is not final
    /// yet (the bytes are the caller's encoding). A validator votes only
    /// for blocks it kept, so a consortium restarted as a whole still has
    /// the notarised tip it must extend.
    pub fn put_unfinalized_block(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, unfinalized_key(digest), bytes);
        self.write_synced(batch)
    }

    /// Forgets kept unfinalised blocks (final or abandoned now).
    pub fn remove_unfinalized_blocks(&self, digests: &[Digest]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for d in digests {
            batch.delete_cf(self.cf(CF_META)?, unfinalized_key(d));
        }
        self.write_synced(batch)
    }

    /// The kept unfinalised blocks.
    pub fn unfinalized_blocks(&self) -> Result<Vec<(Digest, Vec<u8>)>> {
        let cf = self.cf(CF_META)?;
        let mut out = Vec::new();
        let mode = IteratorMode::From(META_UNFINALIZED, Direction::Forward);
        for item in self.db.iterator_cf(cf, mode) {
            let (k, v) = item?;
            let Some(d) = k.strip_prefix(META_UNFINALIZED) else {
                break;
            };
            out.push((digest_from("unfinalized block key", d)?, v.to_vec()));
        }
        Ok(out)
    }

    /// Durably records an entry accepted for co-signing but not yet
    /// committed (the bytes are the caller's record of it). The block that
    /// commits an entry with this body digest removes it in the same batch.
    pub fn put_pending(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_PENDING)?, digest.0, bytes);
        self.write_synced(batch)
    }

    /// Forgets a pending entry (refused for good, say).
    pub fn remove_pending(&self, digest: &Digest) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_PENDING)?, digest.0);
        self.write_synced(batch)
    }

    /// Every pending entry, by body digest.
    pub fn pending(&self) -> Result<Vec<(Digest, Vec<u8>)>> {
        let cf = self.cf(CF_PENDING)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item?;
            out.push((digest_from("pending key", &k)?, v.to_vec()));
        }
        Ok(out)
    }
}

/// The content address of a blob.
pub fn blob_digest(bytes: &[u8]) -> Digest {
    provenance::digest::tagged_hash(provenance::ObjectKind::Blob, bytes)
}

/// Rebuilds the ledger state by replaying the stored log from genesis, block
/// by block with their stamps.
pub fn replay_state(store: &Store) -> Result<LedgerState> {
    let mut state = LedgerState::new();
    for h in 1..=store.head().height {
        let b = store
            .block(h)?
            .ok_or_else(|| StoreError::Corrupt(format!("block {h} is missing")))?;
        let mut entries = Vec::with_capacity(b.header.entry_count as usize);
        for i in 0..u64::from(b.header.entry_count) {
            let e = store
                .entry(b.first_index + i)?
                .ok_or_else(|| StoreError::Corrupt(format!("entry {} is missing", b.first_index + i)))?;
            entries.push(e);
        }
        state.apply_block(&entries, b.header.stamp)?;
    }
    Ok(state)
}

fn unfinalized_key(d: &Digest) -> Vec<u8> {
    let mut k = META_UNFINALIZED.to_vec();
    k.extend_from_slice(&d.0);
    k
}
