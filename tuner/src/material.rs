//! What the operator hands governance so that it can replay its training
//! records ([`crate::replay`]), and the bytes it travels in (over the
//! consortium's authenticated channel, never the public API).
//!
//! - [`AuditContext`], once per campaign: the probe windows and canaries
//!   the memorisation signals depend on. Its digest is committed in the
//!   campaign's recipe (`audit_context`), so governance checks what it is
//!   sent; the canaries' secrets are why it is not a public blob.
//! - [`AuditMaterial`], per record: the optimizer state before the
//!   record's first step, each example's window, its sources' salts.
//!
//! Both decode strictly: bounded counts, every length checked against the
//! bytes that remain before anything is allocated, no trailing bytes; a bad
//! input is a typed error, never a panic.

use std::collections::BTreeMap;

use provenance::Digest;

use crate::blobs::{blob_digest, Reader};
use crate::error::{Result, TunerError};
use crate::memo::Canary;
use crate::optim::{AdamW, AdamWConfig};

const CONTEXT_MAGIC: &[u8; 4] = b"GTAC";
const MATERIAL_MAGIC: &[u8; 4] = b"GTAM";
const VERSION: u16 = 1;

/// Most probe windows, canaries, examples, sources or optimizer pieces in
/// one context or material.
pub const MAX_ITEMS: usize = 65_536;
/// Longest window, probe window or canary string (bytes).
pub const MAX_TEXT: usize = 1 << 20;

/// The probe set and canaries of a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    /// The held-out probe windows.
    pub probe: Vec<Vec<u8>>,
    /// The planted canaries.
    pub canaries: Vec<Canary>,
}

/// What the operator sends governance with a record, for a replay.
#[derive(Debug, Clone)]
pub struct AuditMaterial {
    /// The record's chain position.
    pub seq: u64,
    /// The optimizer before the record's first step.
    pub opt_before: AdamW,
    /// Each example's window, in the record's order.
    pub windows: Vec<Vec<u8>>,
    /// The salts of the record's sources (so governance can check each
    /// window against its example hash).
    pub salts: BTreeMap<Digest, [u8; 32]>,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn count(r: &mut Reader<'_>, what: &str) -> Result<usize> {
    let n = r.u32()? as usize;
    if n > MAX_ITEMS {
        return Err(bad(format!("{n} {what}, at most {MAX_ITEMS}")));
    }
    Ok(n)
}

fn bytes<'a>(r: &mut Reader<'a>, what: &str) -> Result<&'a [u8]> {
    let n = r.u32()? as usize;
    if n > MAX_TEXT {
        return Err(bad(format!("a {what} of {n} bytes, at most {MAX_TEXT}")));
    }
    r.take(n)
}

fn text(r: &mut Reader<'_>, what: &str) -> Result<String> {
    String::from_utf8(bytes(r, what)?.to_vec()).map_err(|_| bad(format!("a {what} is not UTF-8")))
}

fn bad(reason: String) -> TunerError {
    TunerError::Blob {
        kind: "audit material",
        reason,
    }
}

fn f32s(r: &mut Reader<'_>, n: usize) -> Result<Vec<f32>> {
    let b = r.take(n.checked_mul(4).ok_or_else(|| bad("length overflows".into()))?)?;
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

impl AuditContext {
    /// Its bytes: `"GTAC" ‖ u16 version ‖ u32 n ‖ n × (u32 len ‖ window)
    /// ‖ u32 m ‖ m × (prefix ‖ secret ‖ u32 candidates)`, strings as
    /// `u32 len ‖ UTF-8`, integers big-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = CONTEXT_MAGIC.to_vec();
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(self.probe.len() as u32).to_be_bytes());
        for p in &self.probe {
            put_bytes(&mut out, p);
        }
        out.extend_from_slice(&(self.canaries.len() as u32).to_be_bytes());
        for c in &self.canaries {
            put_bytes(&mut out, c.prefix.as_bytes());
            put_bytes(&mut out, c.secret.as_bytes());
            out.extend_from_slice(&(c.candidates as u32).to_be_bytes());
        }
        out
    }

    /// The digest a recipe commits (`audit_context`).
    pub fn digest(&self) -> Digest {
        blob_digest(&self.to_bytes())
    }

    /// Decodes [`Self::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b, "audit context");
        r.header(CONTEXT_MAGIC, &[VERSION])?;
        let n = count(&mut r, "probe windows")?;
        let mut probe = Vec::new();
        for _ in 0..n {
            probe.push(bytes(&mut r, "probe window")?.to_vec());
        }
        let m = count(&mut r, "canaries")?;
        let mut canaries = Vec::new();
        for _ in 0..m {
            let prefix = text(&mut r, "canary prefix")?;
            let secret = text(&mut r, "canary secret")?;
            let candidates = r.u32()? as usize;
            if candidates > MAX_ITEMS {
                return Err(bad(format!("{candidates} candidates, at most {MAX_ITEMS}")));
            }
            canaries.push(Canary {
                prefix,
                secret,
                candidates,
            });
        }
        r.end()?;
        Ok(Self { probe, canaries })
    }
}

impl AuditMaterial {
    /// Its bytes: `"GTAM" ‖ u16 version ‖ u64 seq ‖ u64 optimizer step ‖
    /// u32 pieces ‖ pieces × (u32 len ‖ len × f32 m ‖ len × f32 v) ‖ u32 n
    /// ‖ n × (u32 len ‖ window) ‖ u32 s ‖ s × (source ‖ salt)`, integers
    /// big-endian, floats little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MATERIAL_MAGIC.to_vec();
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.opt_before.step.to_be_bytes());
        out.extend_from_slice(&(self.opt_before.m.len() as u32).to_be_bytes());
        for (m, v) in self.opt_before.m.iter().zip(&self.opt_before.v) {
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            for x in m.iter().chain(v) {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.windows.len() as u32).to_be_bytes());
        for w in &self.windows {
            put_bytes(&mut out, w);
        }
        out.extend_from_slice(&(self.salts.len() as u32).to_be_bytes());
        for (s, salt) in &self.salts {
            out.extend_from_slice(&s.0);
            out.extend_from_slice(salt);
        }
        out
    }

    /// The chain position a material's bytes are of (their header only).
    pub fn position(b: &[u8]) -> Result<u64> {
        let mut r = Reader::new(b, "audit material");
        r.header(MATERIAL_MAGIC, &[VERSION])?;
        r.u64()
    }

    /// Decodes [`Self::to_bytes`]; the optimizer's hyper-parameters are the
    /// recipe's (`optim`).
    pub fn from_bytes(b: &[u8], optim: AdamWConfig) -> Result<Self> {
        let mut r = Reader::new(b, "audit material");
        r.header(MATERIAL_MAGIC, &[VERSION])?;
        let seq = r.u64()?;
        let step = r.u64()?;
        let pieces = count(&mut r, "optimizer pieces")?;
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for _ in 0..pieces {
            let len = r.u32()? as usize;
            m.push(f32s(&mut r, len)?);
            v.push(f32s(&mut r, len)?);
        }
        let n = count(&mut r, "windows")?;
        let mut windows = Vec::new();
        for _ in 0..n {
            windows.push(bytes(&mut r, "window")?.to_vec());
        }
        let s = count(&mut r, "sources")?;
        let mut salts = BTreeMap::new();
        for _ in 0..s {
            let mut id = [0u8; 32];
            id.copy_from_slice(r.take(32)?);
            let mut salt = [0u8; 32];
            salt.copy_from_slice(r.take(32)?);
            if salts.insert(Digest(id), salt).is_some() {
                return Err(bad(format!("source {} listed twice", Digest(id))));
            }
        }
        r.end()?;
        Ok(Self {
            seq,
            opt_before: AdamW {
                config: optim,
                step,
                m,
                v,
            },
            windows,
            salts,
        })
    }
}
