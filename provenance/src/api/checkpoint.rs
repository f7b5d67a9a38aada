//! `GET /v1/checkpoint`: a certified checkpoint, as JSON or as C2SP
//! signed-note text.

use serde::{Deserialize, Serialize};

use crate::{
    Bytes, Canonical, Checkpoint, Cosignature, Digest, SignedCheckpoint, Timestamp, ValidatorSignature,
};

/// `GET /v1/checkpoint`'s query: `?height=H` for that height's checkpoint
/// (default: the latest), `&format=c2sp` for the signed note as text
/// (default `json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointQuery {
    /// `json` or `c2sp`.
    pub format: Option<String>,
    /// Consensus height; the latest checkpoint when absent.
    pub height: Option<u64>,
}

impl CheckpointQuery {
    /// The query string (without `?`; empty when both are absent).
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = self.height {
            parts.push(format!("height={h}"));
        }
        if let Some(f) = &self.format {
            parts.push(format!("format={f}"));
        }
        parts.join("&")
    }
}

/// A signed checkpoint as the API shows it: the checkpoint's fields, its
/// log signatures, the witnesses' cosignatures the node holds for it and
/// the same as a C2SP signed note. Embedded in every answer whose proofs
/// are under a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointAnswer {
    /// Log origin (unique to the consortium).
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 9162 root of the log at `size`.
    pub root: Digest,
    /// Consensus height that produced it.
    pub height: u64,
    /// The consortium-signed time of that height (Unix ms).
    pub time: Timestamp,
    /// Root of the authenticated index of sources and campaigns at `size`.
    pub index: Digest,
    /// Combined consortium BLS signature (hex in JSON; empty if absent).
    pub signature: Bytes,
    /// Validators' Ed25519 note signatures.
    pub validators: Vec<ValidatorSignature>,
    /// Witnesses' cosignatures.
    pub cosignatures: Vec<Cosignature>,
    /// The C2SP signed-note text of the same checkpoint.
    pub c2sp: String,
}

impl CheckpointAnswer {
    /// The answer for `c` with `cosignatures`, and its C2SP note text
    /// ([`SignedCheckpoint::to_c2sp`]).
    pub fn new(c: &SignedCheckpoint, cosignatures: Vec<Cosignature>, c2sp: String) -> Self {
        Self {
            origin: c.checkpoint.origin.clone(),
            size: c.checkpoint.size,
            root: c.checkpoint.root,
            height: c.checkpoint.height,
            time: c.checkpoint.time,
            index: c.checkpoint.index,
            signature: c.signature.clone(),
            validators: c.validators.clone(),
            cosignatures,
            c2sp,
        }
    }

    /// The signed checkpoint it states (current format version; the
    /// signatures are not checked here).
    pub fn to_signed(&self) -> SignedCheckpoint {
        SignedCheckpoint {
            checkpoint: Checkpoint {
                version: <Checkpoint as Canonical>::VERSION,
                origin: self.origin.clone(),
                size: self.size,
                root: self.root,
                height: self.height,
                time: self.time,
                index: self.index,
            },
            signature: self.signature.clone(),
            validators: self.validators.clone(),
        }
    }
}
