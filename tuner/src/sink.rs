//! Where a campaign's entries and blobs go.
//!
//! The tuner produces entry *bodies*; signatures are added by the nodes
//! (the operator's node proposes, the co-signers check and sign). A sink
//! either hands a body to the operator's node and reports whether it was
//! committed or refused by a co-signer ([`Verdict`]), or records it
//! locally ([`FileSink`], [`MemorySink`]).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use provenance::{Digest, EntryBody, OrderSeed};

use crate::blobs::blob_digest;
use crate::error::{Result, TunerError};
use crate::replay::AuditMaterial;

/// The outcome of submitting an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every required authority signed; the entry is committed.
    Committed,
    /// A co-signer refused the entry; it is not committed.
    Refused {
        /// The co-signer's reason.
        reason: String,
    },
}

/// The operator's outlet for entries and blobs.
pub trait EventSink {
    /// Stores a blob under its digest (called before any entry that names
    /// it). Storing the same blob twice must succeed.
    fn put_blob(&mut self, digest: &Digest, bytes: &[u8]) -> Result<()>;
    /// Submits an entry body and waits until it is committed or refused.
    /// `Err` means the sink itself failed (the entry's fate is unknown).
    fn submit(&mut self, body: &EntryBody) -> Result<Verdict>;
    /// The seed of a committed campaign's data order
    /// ([`provenance::order`]): a ledger's sink waits for the consortium's
    /// checkpoint of the block that committed the campaign. `None` from a
    /// sink no consortium witnesses (a file, memory): the tuner then draws
    /// a reproducible order from its settings' seed
    /// ([`crate::data::seeded_order`]).
    fn order_seed(&mut self, _campaign: &Digest) -> Result<Option<OrderSeed>> {
        Ok(None)
    }
    /// Hands governance what it needs to replay the training record about
    /// to be submitted ([`crate::replay`]); called before that submission.
    /// A sink no auditor reads drops it.
    fn audit_material(&mut self, _material: &AuditMaterial) -> Result<()> {
        Ok(())
    }
    /// Whether [`Self::audit_material`] is read (the tuner builds the
    /// material only then).
    fn wants_audit_material(&self) -> bool {
        false
    }
}

/// Writes entries to a file, one per line as `<kind> <hex of the canonical
/// bytes of the EntryBody>`, and blobs to `<file>.blobs/<digest hex>`.
/// Everything it is given counts as committed.
pub struct FileSink {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    blobs: PathBuf,
}

impl FileSink {
    /// Creates (truncates) `path` and its blob directory.
    pub fn create(path: &Path) -> Result<Self> {
        let blobs = blob_dir(path);
        std::fs::create_dir_all(&blobs).map_err(|e| TunerError::io(&blobs, e))?;
        let f = std::fs::File::create(path).map_err(|e| TunerError::io(path, e))?;
        Ok(Self {
            file: std::io::BufWriter::new(f),
            path: path.to_path_buf(),
            blobs,
        })
    }

    /// Flushes the entry file.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| TunerError::io(&self.path, e))
    }
}

/// The blob directory beside an events file.
pub fn blob_dir(events: &Path) -> PathBuf {
    let mut s = events.as_os_str().to_owned();
    s.push(".blobs");
    PathBuf::from(s)
}

impl EventSink for FileSink {
    fn put_blob(&mut self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let p = self.blobs.join(digest.to_hex());
        std::fs::write(&p, bytes).map_err(|e| TunerError::io(&p, e))
    }

    fn submit(&mut self, body: &EntryBody) -> Result<Verdict> {
        let bytes = provenance::codec::encode(body);
        writeln!(self.file, "{} {}", body.kind().name(), hex::encode(bytes))
            .map_err(|e| TunerError::io(&self.path, e))?;
        Ok(Verdict::Committed)
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        let _ = self.file.flush();
    }
}

/// Reads an events file written by [`FileSink`].
pub fn read_events(path: &Path) -> Result<Vec<EntryBody>> {
    let f = std::fs::File::open(path).map_err(|e| TunerError::io(path, e))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| TunerError::io(path, e))?;
        let bad = |reason: String| TunerError::Sink(format!("{}:{}: {reason}", path.display(), n + 1));
        let hexpart = line
            .split_once(' ')
            .map(|(_, h)| h)
            .ok_or_else(|| bad("no payload".into()))?;
        let bytes = hex::decode(hexpart).map_err(|e| bad(e.to_string()))?;
        let (body, read): (EntryBody, usize) =
            provenance::codec::decode_raw("EntryBody", &bytes).map_err(|e| bad(e.to_string()))?;
        if read != bytes.len() {
            return Err(bad("trailing bytes".into()));
        }
        out.push(body);
    }
    Ok(out)
}

/// Reads a blob stored by [`FileSink`] and checks its digest.
pub fn read_blob(events: &Path, digest: &Digest) -> Result<Vec<u8>> {
    let p = blob_dir(events).join(digest.to_hex());
    let bytes = std::fs::read(&p).map_err(|e| TunerError::io(&p, e))?;
    let found = blob_digest(&bytes);
    if found != *digest {
        return Err(TunerError::DigestMismatch {
            what: format!("blob {}", p.display()),
            expected: *digest,
            found,
        });
    }
    Ok(bytes)
}

/// An in-memory sink for tests and benchmarks. It can play a co-signer
/// that refuses the `n`-th submitted entry (counting from 0).
#[derive(Debug, Default)]
pub struct MemorySink {
    /// Committed entries, in order.
    pub entries: Vec<EntryBody>,
    /// Blobs by digest.
    pub blobs: BTreeMap<Digest, Vec<u8>>,
    /// Refuse the submission with this number.
    pub refuse_at: Option<usize>,
    /// The reason given for that refusal (a default one if `None`).
    pub refuse_reason: Option<String>,
    /// Submissions seen (committed or refused).
    pub submitted: usize,
    /// Do not keep blob bytes (benchmarks count them only).
    pub discard_blobs: bool,
    /// Bytes of blobs put.
    pub blob_bytes: u64,
    /// Bytes of entries committed (canonical encoding).
    pub entry_bytes: u64,
}

impl EventSink for MemorySink {
    fn put_blob(&mut self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        self.blob_bytes += bytes.len() as u64;
        if !self.discard_blobs {
            self.blobs.insert(*digest, bytes.to_vec());
        }
        Ok(())
    }

    fn submit(&mut self, body: &EntryBody) -> Result<Verdict> {
        let n = self.submitted;
        self.submitted += 1;
        if self.refuse_at == Some(n) {
            return Ok(Verdict::Refused {
                reason: self
                    .refuse_reason
                    .clone()
                    .unwrap_or_else(|| format!("co-signer refused entry {n} (test)")),
            });
        }
        self.entry_bytes += provenance::codec::encode(body).len() as u64;
        self.entries.push(body.clone());
        Ok(Verdict::Committed)
    }
}
