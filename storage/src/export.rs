//! Streaming export of the whole log (block records with certificates, the
//! entries' canonical bytes, checkpoints) and the import that rebuilds a
//! store from it.
//!
//! Format: the line `govtune-export/v1\n`, then frames `tag: u8, len: u32
//! (big-endian), payload`: tag 1 a block record (header, certificate, first
//! index), followed by its entries as tag-2 frames (each payload is exactly
//! a leaf input, so a monitor re-hashes the log from tag-2 payloads alone),
//! tag 3 a signed checkpoint, tag 0 the end.

use std::io::{Read, Write};
use std::path::Path;

use provenance::{decode, BlockHeader, Canonical, KeyRing, LedgerEntry, SignedCheckpoint};

use crate::{read_record, record, BlockRecord, Store, StoreError};

const MAGIC: &[u8] = b"govtune-export/v1\n";
const MAX_FRAME: u32 = 64 * 1024 * 1024;

/// Why an export stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Reading failed.
    #[error("reading the export: {0}")]
    Io(#[from] std::io::Error),
    /// The stream does not start with the export magic line.
    #[error("not a govtune export (bad magic line)")]
    Magic,
    /// A frame is malformed or out of order.
    #[error("export frame {frame}: {reason}")]
    Frame {
        /// Frame number.
        frame: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Counts of an export or import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportStats {
    /// Blocks.
    pub blocks: u64,
    /// Entries.
    pub entries: u64,
    /// Checkpoints.
    pub checkpoints: u64,
    /// Bytes written or read.
    pub bytes: u64,
}

fn frame<W: Write>(w: &mut W, tag: u8, payload: &[u8], stats: &mut ExportStats) -> std::io::Result<()> {
    w.write_all(&[tag])?;
    w.write_all(&(payload.len() as u32).to_be_bytes())?;
    w.write_all(payload)?;
    stats.bytes += 5 + payload.len() as u64;
    Ok(())
}

impl Store {
    /// Streams the whole log to `w`.
    pub fn export<W: Write>(&self, mut w: W) -> Result<ExportStats, StoreError> {
        let io = |e: std::io::Error| StoreError::Corrupt(format!("export write failed: {e}"));
        let mut stats = ExportStats {
            bytes: MAGIC.len() as u64,
            ..Default::default()
        };
        w.write_all(MAGIC).map_err(io)?;
        for h in 1..=self.head().height {
            let b = self
                .block(h)?
                .ok_or_else(|| StoreError::Corrupt(format!("block {h} is missing")))?;
            frame(&mut w, 1, &record(&b), &mut stats).map_err(io)?;
            stats.blocks += 1;
            for i in 0..u64::from(b.header.entry_count) {
                let e = self
                    .entry_bytes(b.first_index + i)?
                    .ok_or_else(|| StoreError::Corrupt(format!("entry {} is missing", b.first_index + i)))?;
                frame(&mut w, 2, &e, &mut stats).map_err(io)?;
                stats.entries += 1;
            }
        }
        for h in 1..=self.head().height {
            if let Some(cp) = self.checkpoint(h)? {
                frame(&mut w, 3, &cp.encode(), &mut stats).map_err(io)?;
                stats.checkpoints += 1;
            }
        }
        frame(&mut w, 0, &[], &mut stats).map_err(io)?;
        w.flush().map_err(io)?;
        Ok(stats)
    }
}

/// Verifies a block's finality certificate during import.
pub type CertificateCheck<'a> = &'a dyn Fn(&BlockHeader, &[u8]) -> Result<(), String>;

/// Rebuilds a store at `path` (which must not hold one) from an export,
/// checking every block's certificate with `check_certificate`, every
/// block's entries against its header, and every checkpoint against the
/// rebuilt tree and genesis.
pub fn import<R: Read>(
    path: &Path,
    origin: &str,
    keyring: &KeyRing,
    mut r: R,
    check_certificate: CertificateCheck<'_>,
) -> Result<(Store, ExportStats), StoreError> {
    let mut store = Store::open(path, origin, keyring)?;
    if store.head().height != 0 {
        return Err(StoreError::BlockRefused("import needs an empty store".into()));
    }
    let ferr = |e: FrameError| StoreError::Corrupt(e.to_string());
    let mut magic = vec![0u8; MAGIC.len()];
    r.read_exact(&mut magic).map_err(|e| ferr(e.into()))?;
    if magic != MAGIC {
        return Err(ferr(FrameError::Magic));
    }
    let mut stats = ExportStats {
        bytes: MAGIC.len() as u64,
        ..Default::default()
    };
    let mut n = 0u64;
    let mut next = |r: &mut R| -> Result<(u8, Vec<u8>), FrameError> {
        n += 1;
        let mut hdr = [0u8; 5];
        r.read_exact(&mut hdr)?;
        let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]);
        if len > MAX_FRAME {
            return Err(FrameError::Frame {
                frame: n,
                reason: format!("frame of {len} bytes exceeds the limit"),
            });
        }
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload)?;
        Ok((hdr[0], payload))
    };
    loop {
        let (tag, payload) = next(&mut r).map_err(ferr)?;
        stats.bytes += 5 + payload.len() as u64;
        match tag {
            0 => break,
            1 => {
                let b: BlockRecord = read_record("block record", &payload)?;
                check_certificate(&b.header, b.certificate.as_slice()).map_err(|e| {
                    StoreError::BlockRefused(format!("height {}: certificate: {e}", b.header.height))
                })?;
                let mut entries = Vec::with_capacity((b.header.entry_count as usize).min(4096));
                for _ in 0..b.header.entry_count {
                    let (tag, bytes) = next(&mut r).map_err(ferr)?;
                    stats.bytes += 5 + bytes.len() as u64;
                    if tag != 2 {
                        return Err(StoreError::Corrupt(format!(
                            "block {} announces {} entries, found a tag-{tag} frame",
                            b.header.height, b.header.entry_count
                        )));
                    }
                    entries.push(decode::<LedgerEntry>(&bytes)?);
                }
                store.append_block(&b.header, &entries, b.certificate.as_slice())?;
                stats.blocks += 1;
                stats.entries += entries.len() as u64;
            }
            3 => {
                let cp: SignedCheckpoint = decode(&payload)?;
                store.put_checkpoint(&cp, keyring)?;
                stats.checkpoints += 1;
            }
            other => return Err(StoreError::Corrupt(format!("unknown export frame tag {other}"))),
        }
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest).map_err(|e| ferr(e.into()))? != 0 {
        return Err(StoreError::Corrupt("bytes after the export's end frame".into()));
    }
    Ok((store, stats))
}
