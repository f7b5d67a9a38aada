//! What the ledger reads and writes of a node's store: the committed
//! state, whether an entry is in the log, appending a finalised block, and
//! keeping not-yet-final blocks durable. RocksDB ([`storage::Store`]) is
//! the node's; [`MemoryStore`] holds the same in memory for tests of the
//! ledger's decisions without a disk.

use std::collections::HashMap;

use provenance::block::entries_root;
use provenance::merkle::{LogHasher, MemoryTree};
use provenance::{BlockHeader, Canonical, Digest, EntryBody, LedgerEntry, LedgerState, Timestamp};
use storage::{AppendReceipt, Store, StoreError};

/// The store as the ledger uses it.
pub trait LedgerStore: Send + Sync + 'static {
    /// The committed ledger state.
    fn state(&self) -> &LedgerState;
    /// Whether an entry with this body digest is in the log.
    fn committed(&self, digest: &Digest) -> Result<bool, StoreError>;
    /// Appends a finalised block of judged entries in one durable write;
    /// refuses (writing nothing) entries that do not apply to the state.
    fn append(
        &mut self,
        stamp: Timestamp,
        view: u64,
        proposer: u16,
        entries: &[LedgerEntry],
        certificate: &[u8],
    ) -> Result<AppendReceipt, StoreError>;
    /// Keeps a block that is not final yet, durably.
    fn keep_block(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError>;
    /// Forgets kept blocks.
    fn forget_blocks(&self, digests: &[Digest]) -> Result<(), StoreError>;
    /// The blobs `body` names that this node lacks (`crate::blobs::missing`).
    fn missing_blobs(&self, body: &EntryBody) -> Vec<Digest>;
}

impl LedgerStore for Store {
    fn state(&self) -> &LedgerState {
        Store::state(self)
    }
    fn committed(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.index_of(digest)?.is_some())
    }
    fn append(
        &mut self,
        stamp: Timestamp,
        view: u64,
        proposer: u16,
        entries: &[LedgerEntry],
        certificate: &[u8],
    ) -> Result<AppendReceipt, StoreError> {
        let header = self.next_header(entries, stamp, view, proposer);
        self.append_block(&header, entries, certificate)
    }
    fn keep_block(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_unfinalized_block(digest, bytes)
    }
    fn forget_blocks(&self, digests: &[Digest]) -> Result<(), StoreError> {
        self.remove_unfinalized_blocks(digests)
    }
    fn missing_blobs(&self, body: &EntryBody) -> Vec<Digest> {
        crate::blobs::missing(body, &|d| self.has_blob(d).unwrap_or(false), &|d| {
            self.blob(d).ok().flatten()
        })
    }
}

/// A store in memory: the log, its tree, the state, the blocks' headers
/// and the kept blocks.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: LedgerState,
    tree: MemoryTree<LogHasher>,
    index: HashMap<Digest, u64>,
    authenticated: provenance::index::MemoryIndex,
    headers: Vec<BlockHeader>,
    certificates: Vec<Vec<u8>>,
    kept: std::sync::Mutex<HashMap<Digest, Vec<u8>>>,
    blobs: HashMap<Digest, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The headers of the appended blocks.
    pub fn headers(&self) -> &[BlockHeader] {
        &self.headers
    }

    /// Keeps a blob (as a node keeps one it fetched).
    pub fn put_blob(&mut self, bytes: &[u8]) -> Digest {
        let d = storage::blob_digest(bytes);
        self.blobs.insert(d, bytes.to_vec());
        d
    }

    /// The blocks kept as not yet final.
    pub fn kept(&self) -> Vec<Digest> {
        self.kept
            .lock()
            .map(|k| k.keys().copied().collect())
            .unwrap_or_default()
    }
}

impl LedgerStore for MemoryStore {
    fn state(&self) -> &LedgerState {
        &self.state
    }
    fn committed(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.index.contains_key(digest))
    }
    fn append(
        &mut self,
        stamp: Timestamp,
        view: u64,
        proposer: u16,
        entries: &[LedgerEntry],
        certificate: &[u8],
    ) -> Result<AppendReceipt, StoreError> {
        if let Some(last) = self.headers.last() {
            if stamp < last.stamp {
                return Err(StoreError::BlockRefused(format!(
                    "stamp {stamp} goes back from {}",
                    last.stamp
                )));
            }
        }
        let (state, _) = self
            .state
            .after_block(entries, stamp)
            .map_err(|e| StoreError::BlockRefused(e.to_string()))?;
        let first_index = self.tree.len();
        for e in entries {
            let digest = e.body.digest();
            for key in storage::index_keys(e, &digest, &state) {
                self.authenticated.add(key, self.tree.len());
            }
            self.index.insert(digest, self.tree.len());
            self.tree.push_leaf(&e.encode());
        }
        let index_root = self.authenticated.commit();
        self.state = state;
        self.headers.push(BlockHeader {
            version: BlockHeader::VERSION,
            height: self.headers.len() as u64 + 1,
            view,
            parent: self.headers.last().map(|h| h.digest()).unwrap_or(Digest::ZERO),
            stamp,
            proposer,
            entries_root: entries_root(entries),
            entry_count: entries.len() as u32,
        });
        self.certificates.push(certificate.to_vec());
        Ok(AppendReceipt {
            height: self.headers.len() as u64,
            first_index,
            log_size: self.tree.len(),
            root: self.tree.root(),
            index_root,
        })
    }
    fn missing_blobs(&self, body: &EntryBody) -> Vec<Digest> {
        crate::blobs::missing(body, &|d| self.blobs.contains_key(d), &|d| {
            self.blobs.get(d).cloned()
        })
    }
    fn keep_block(&self, digest: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        if let Ok(mut k) = self.kept.lock() {
            k.insert(*digest, bytes.to_vec());
        }
        Ok(())
    }
    fn forget_blocks(&self, digests: &[Digest]) -> Result<(), StoreError> {
        if let Ok(mut k) = self.kept.lock() {
            for d in digests {
                k.remove(d);
            }
        }
        Ok(())
    }
}
