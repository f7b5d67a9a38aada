//! Reading the store: blocks, entries, the digest index and secondary
//! indexes, roots and proofs at any size, blobs, disk use.

use provenance::index::{IndexKey, IndexProof, IndexValue};
use provenance::merkle::{self, LogHasher};
use provenance::{decode, Digest, LedgerEntry};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::keys::*;
use crate::{blob_digest, read_record, BlockRecord, IndexPrefix, Result, Store, StoreError};

impl Store {
    /// The authenticated index's root over the log's first `size` entries
    /// (`size` a block boundary, as every checkpoint's is).
    pub fn index_root_at(&self, size: u64) -> Result<Digest> {
        crate::authindex::root_at(&self.db, self.cf(CF_AUTHINDEX)?, size)
    }

    /// The proof of `key`'s value or absence in the index over the log's
    /// first `size` entries (a block boundary).
    pub fn index_proof(&self, key: &IndexKey, size: u64) -> Result<IndexProof> {
        crate::authindex::prove(&self.db, self.cf(CF_AUTHINDEX)?, key, size)
    }

    /// Page `page` of `key`'s positions as `value` (the key's value at
    /// some size, from [`Store::index_proof`]) counts them, with its
    /// inclusion proof under `value.pages`; `None` past the last page.
    pub fn index_page(
        &self,
        key: &IndexKey,
        value: &IndexValue,
        page: u64,
    ) -> Result<Option<(Vec<u64>, Vec<Digest>)>> {
        crate::authindex::page(&self.db, self.cf(CF_AUTHINDEX)?, key, value, page)
    }

    /// The stored block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<BlockRecord>> {
        match self.db.get_cf(self.cf(CF_BLOCKS)?, u64_key(height))? {
            Some(b) => Ok(Some(read_record("block record", &b)?)),
            None => Ok(None),
        }
    }

    /// The height of the block that committed log entry `index` (a binary
    /// search over the blocks' first indexes).
    pub fn height_of(&self, index: u64) -> Result<Option<u64>> {
        if index >= self.head.log_size {
            return Ok(None);
        }
        let first = |h: u64| -> Result<u64> {
            Ok(self
                .block(h)?
                .ok_or_else(|| StoreError::Corrupt(format!("block {h} missing")))?
                .first_index)
        };
        // The last height whose first index is at or below `index`.
        let (mut lo, mut hi) = (1u64, self.head.height);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if first(mid)? <= index {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(Some(lo))
    }

    /// The consortium's checkpoint of the block that committed campaign
    /// `campaign` (its order's seed, [`provenance::order`]), once certified
    /// here.
    pub fn order_checkpoint(&self, campaign: &Digest) -> Result<Option<provenance::SignedCheckpoint>> {
        let Some(index) = self.index_of(campaign)? else {
            return Ok(None);
        };
        match self.height_of(index)? {
            Some(h) => self.checkpoint(h),
            None => Ok(None),
        }
    }

    /// The canonical bytes of log entry `index` (the leaf input).
    pub fn entry_bytes(&self, index: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_ENTRIES)?, u64_key(index))?)
    }

    /// Log entry `index`.
    pub fn entry(&self, index: u64) -> Result<Option<LedgerEntry>> {
        match self.entry_bytes(index)? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    /// The log index of the entry whose body has `digest`.
    pub fn index_of(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.db.get_cf(self.cf(CF_BY_DIGEST)?, digest.0)? {
            Some(b) => Ok(Some(
                parse_u64(&b).ok_or_else(|| StoreError::Corrupt("digest index".into()))?,
            )),
            None => Ok(None),
        }
    }

    /// Log indexes filed under `prefix`, ascending.
    pub fn query(&self, prefix: &IndexPrefix) -> Result<Vec<u64>> {
        let cf = self.cf(CF_INDEX)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&prefix.0, Direction::Forward))
        {
            let (k, _) = item?;
            // Every key under a prefix is the prefix and an 8-byte index:
            // prefixes of different kinds or lengths never nest.
            if !k.starts_with(&prefix.0) {
                break;
            }
            out.push(parse_u64(&k[prefix.0.len()..]).ok_or_else(|| StoreError::Corrupt("index key".into()))?);
        }
        Ok(out)
    }

    /// The log root at `size`.
    pub fn root_at(&self, size: u64) -> Result<Digest> {
        if size > self.head.log_size {
            return Err(StoreError::Checkpoint(format!(
                "size {size} is past the log's {}",
                self.head.log_size
            )));
        }
        merkle::range_hash::<LogHasher, _>(self, 0, size)
    }

    /// Inclusion proof of entry `index` in the log of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Option<Vec<Digest>>> {
        merkle::inclusion_proof::<LogHasher, _>(self, index, size)
    }

    /// Consistency proof between log sizes `first` and `second`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Option<Vec<Digest>>> {
        merkle::consistency_proof::<LogHasher, _>(self, first, second)
    }

    /// Stores a blob under its content digest (synced); returns the digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let d = blob_digest(bytes);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_BLOBS)?, d.0, bytes);
        self.write_synced(batch)?;
        Ok(d)
    }

    /// Whether a blob is held (without reading or checking it).
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.db.get_pinned_cf(self.cf(CF_BLOBS)?, digest.0)?.is_some())
    }

    /// At most `len` bytes of a held blob from `offset`, and its whole
    /// length: `None` if not held or `offset` is past its end. Not checked
    /// against the digest (whoever assembles the parts checks the whole);
    /// reads no more of it than the part.
    pub fn blob_range(&self, digest: &Digest, offset: u64, len: u64) -> Result<Option<(u64, Vec<u8>)>> {
        let Some(b) = self.db.get_pinned_cf(self.cf(CF_BLOBS)?, digest.0)? else {
            return Ok(None);
        };
        let total = b.len() as u64;
        if offset > total {
            return Ok(None);
        }
        let start = offset as usize;
        let end = total.min(offset.saturating_add(len)) as usize;
        Ok(Some((total, b[start..end].to_vec())))
    }

    /// A blob, verified against its digest on read.
    pub fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        match self.db.get_cf(self.cf(CF_BLOBS)?, digest.0)? {
            Some(b) if blob_digest(&b) == *digest => Ok(Some(b)),
            Some(_) => Err(StoreError::BlobMismatch(*digest)),
            None => Ok(None),
        }
    }

    /// Bytes RocksDB holds on disk (SST files plus live WAL), as it reports.
    pub fn disk_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for name in ALL_CFS {
            let cf = self.cf(name)?;
            total += self
                .db
                .property_int_value_cf(cf, "rocksdb.total-sst-files-size")?
                .unwrap_or(0);
            total += self
                .db
                .property_int_value_cf(cf, "rocksdb.size-all-mem-tables")?
                .unwrap_or(0);
        }
        Ok(total)
    }

    /// Flushes memtables to SST files (for measurement).
    pub fn flush(&self) -> Result<()> {
        for name in ALL_CFS {
            self.db.flush_cf(self.cf(name)?)?;
        }
        Ok(())
    }

    /// Writes raw bytes under a key, bypassing every check: for tests that
    /// corrupt a store on purpose.
    #[doc(hidden)]
    pub fn corrupt_for_test(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(cf)?, key, value);
        self.write_synced(batch)
    }
}
