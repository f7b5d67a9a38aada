//! The blob formats: gradient sketches and XOR deltas.
//!
//! Both are content-addressed like every govtune object:
//! `digest = SHA3-256(len(tag) ‖ "govtune/v1/blob" ‖ bytes)` ([`blob_digest`]).
//! Integers are big-endian; tensor payloads little-endian.
//!
//! **Sketch blob** (`GTSK`, version 2): `magic[4] ‖ version u16 ‖ dim u32 ‖
//! count u32`, then per admitted example `source[32] ‖ index u64 ‖ step u64
//! ‖ dim × bf16` (version 1, still decoded, stored IEEE f16, whose range
//! flushed the small LoRA `A`-piece gradients to zero). Coordinates follow the adapter layout's piece order, `s²`
//! per piece (row-major `[s, s]` block `P_out G_iᵀ X_i P_inᵀ`), zero on
//! pieces the example was not routed to.
//!
//! **Delta blob** (`GTDL`, version 1): `magic[4] ‖ version u16 ‖ first_step
//! u64 ‖ last_step u64 ‖ count u32`, then per changed piece `piece u32 ‖
//! len u32 ‖ len × u32` — the XOR of the piece's `f32` bit patterns before
//! and after the span. Pieces not listed did not change. Applying every
//! delta blob of a campaign in order to its starting adapters rebuilds the
//! final model bit for bit.

use half::{bf16, f16};
use provenance::digest::{tagged_hash, ObjectKind};
use provenance::Digest;

use crate::error::{Result, TunerError};
use crate::lora::Adapters;

/// Content address of a blob.
pub fn blob_digest(bytes: &[u8]) -> Digest {
    tagged_hash(ObjectKind::Blob, bytes)
}

const SKETCH_MAGIC: &[u8; 4] = b"GTSK";
const DELTA_MAGIC: &[u8; 4] = b"GTDL";
const BLOB_VERSION: u16 = 1;
const SKETCH_VERSION: u16 = 2;

/// One example's sketch.
#[derive(Debug, Clone, PartialEq)]
pub struct SketchRecord {
    /// Source id.
    pub source: Digest,
    /// Example index.
    pub index: u64,
    /// Training step.
    pub step: u64,
    /// Coordinates (stored as bf16).
    pub values: Vec<f32>,
}

/// Encodes a sketch blob.
pub fn encode_sketches(dim: usize, records: &[SketchRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + records.len() * (48 + 2 * dim));
    out.extend_from_slice(SKETCH_MAGIC);
    out.extend_from_slice(&SKETCH_VERSION.to_be_bytes());
    out.extend_from_slice(&(dim as u32).to_be_bytes());
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for r in records {
        out.extend_from_slice(&r.source.0);
        out.extend_from_slice(&r.index.to_be_bytes());
        out.extend_from_slice(&r.step.to_be_bytes());
        for v in &r.values {
            out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes());
        }
    }
    out
}

/// A strict reader of a binary blob: every read checks the bytes remain.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    kind: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `b`, naming `kind` in errors.
    pub(crate) fn new(b: &'a [u8], kind: &'static str) -> Self {
        Self { b, kind }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(TunerError::Blob {
                kind: self.kind,
                reason: "truncated".into(),
            });
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap_or_default()))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap_or_default()))
    }
    pub(crate) fn header(&mut self, magic: &[u8; 4], versions: &[u16]) -> Result<u16> {
        if self.take(4)? != magic {
            return Err(TunerError::Blob {
                kind: self.kind,
                reason: "bad magic".into(),
            });
        }
        let v = self.u16()?;
        if !versions.contains(&v) {
            return Err(TunerError::Blob {
                kind: self.kind,
                reason: format!("version {v} is not supported"),
            });
        }
        Ok(v)
    }
    pub(crate) fn end(&self) -> Result<()> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(TunerError::Blob {
                kind: self.kind,
                reason: format!("{} trailing bytes", self.b.len()),
            })
        }
    }
}

/// Decodes a sketch blob.
pub fn decode_sketches(bytes: &[u8]) -> Result<(usize, Vec<SketchRecord>)> {
    let mut r = Reader {
        b: bytes,
        kind: "sketch",
    };
    let version = r.header(SKETCH_MAGIC, &[1, SKETCH_VERSION])?;
    let dim = r.u32()? as usize;
    let count = r.u32()? as usize;
    if count.saturating_mul(48 + 2 * dim) > r.b.len() {
        return Err(TunerError::Blob {
            kind: "sketch",
            reason: "count exceeds the blob".into(),
        });
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let source = Digest(r.take(32)?.try_into().unwrap_or_default());
        let index = r.u64()?;
        let step = r.u64()?;
        let raw = r.take(2 * dim)?;
        let values = raw
            .chunks_exact(2)
            .map(|c| {
                if version == 1 {
                    f16::from_le_bytes([c[0], c[1]]).to_f32()
                } else {
                    bf16::from_le_bytes([c[0], c[1]]).to_f32()
                }
            })
            .collect();
        out.push(SketchRecord {
            source,
            index,
            step,
            values,
        });
    }
    r.end()?;
    Ok((dim, out))
}

/// One piece's XOR delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceDelta {
    /// Piece index in the layout.
    pub piece: u32,
    /// XOR of `f32` bit patterns.
    pub xor: Vec<u32>,
}

/// The XOR deltas between two adapter states (changed pieces only).
pub fn diff(before: &Adapters, after: &Adapters) -> Vec<PieceDelta> {
    before
        .values
        .iter()
        .zip(&after.values)
        .enumerate()
        .filter_map(|(i, (a, b))| {
            let xor: Vec<u32> = a.iter().zip(b).map(|(x, y)| x.to_bits() ^ y.to_bits()).collect();
            xor.iter()
                .any(|&w| w != 0)
                .then_some(PieceDelta { piece: i as u32, xor })
        })
        .collect()
}

/// Encodes a delta blob.
pub fn encode_delta(first_step: u64, last_step: u64, deltas: &[PieceDelta]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(DELTA_MAGIC);
    out.extend_from_slice(&BLOB_VERSION.to_be_bytes());
    out.extend_from_slice(&first_step.to_be_bytes());
    out.extend_from_slice(&last_step.to_be_bytes());
    out.extend_from_slice(&(deltas.len() as u32).to_be_bytes());
    for d in deltas {
        out.extend_from_slice(&d.piece.to_be_bytes());
        out.extend_from_slice(&(d.xor.len() as u32).to_be_bytes());
        for w in &d.xor {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out
}

/// Decodes a delta blob: `(first_step, last_step, deltas)`.
pub fn decode_delta(bytes: &[u8]) -> Result<(u64, u64, Vec<PieceDelta>)> {
    let mut r = Reader {
        b: bytes,
        kind: "delta",
    };
    r.header(DELTA_MAGIC, &[BLOB_VERSION])?;
    let first = r.u64()?;
    let last = r.u64()?;
    let count = r.u32()? as usize;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let piece = r.u32()?;
        let len = r.u32()? as usize;
        let raw = r.take(len.checked_mul(4).ok_or_else(|| TunerError::Blob {
            kind: "delta",
            reason: "length overflows".into(),
        })?)?;
        let xor = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.push(PieceDelta { piece, xor });
    }
    r.end()?;
    Ok((first, last, out))
}

/// Applies deltas to adapters in place.
pub fn apply(adapters: &mut Adapters, deltas: &[PieceDelta]) -> Result<()> {
    for d in deltas {
        let v = adapters
            .values
            .get_mut(d.piece as usize)
            .ok_or_else(|| TunerError::Blob {
                kind: "delta",
                reason: format!("piece {} is not in the layout", d.piece),
            })?;
        if v.len() != d.xor.len() {
            return Err(TunerError::Blob {
                kind: "delta",
                reason: format!(
                    "piece {} has {} values, the delta {}",
                    d.piece,
                    v.len(),
                    d.xor.len()
                ),
            });
        }
        for (x, w) in v.iter_mut().zip(&d.xor) {
            *x = f32::from_bits(x.to_bits() ^ w);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketch_blobs_keep_tiny_gradients_and_read_version_1() {
        let rec = SketchRecord {
            source: Digest([3; 32]),
            index: 7,
            step: 9,
            values: vec![1e-7, -3.5e-9, 0.25, 0.0],
        };
        let blob = encode_sketches(4, std::slice::from_ref(&rec));
        assert_eq!(&blob[4..6], &2u16.to_be_bytes());
        let (dim, got) = decode_sketches(&blob).unwrap();
        assert_eq!(dim, 4);
        for (a, b) in rec.values.iter().zip(&got[0].values) {
            // bf16: 8 significant bits, f32's range (f16 would flush 1e-7
            // and -3.5e-9).
            assert!((a - b).abs() <= a.abs() / 128.0, "{a} {b}");
        }
        assert_ne!(got[0].values[1], 0.0);
        // A version-1 blob (f16 values) still decodes.
        let mut v1 = blob[..14].to_vec();
        v1[4..6].copy_from_slice(&1u16.to_be_bytes());
        v1.extend_from_slice(&blob[14..14 + 48]);
        for v in [0.5f32, -2.0, 0.0, 1.0] {
            v1.extend_from_slice(&f16::from_f32(v).to_le_bytes());
        }
        let (_, old) = decode_sketches(&v1).unwrap();
        assert_eq!(old[0].values, vec![0.5, -2.0, 0.0, 1.0]);
        assert_eq!((old[0].index, old[0].step), (7, 9));
        // Version 3 is refused.
        let mut v3 = blob.clone();
        v3[4..6].copy_from_slice(&3u16.to_be_bytes());
        assert!(decode_sketches(&v3).is_err());
    }
}
