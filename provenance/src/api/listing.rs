//! Entries cited with their inclusion proofs under one checkpoint: the
//! listings a verifier walks (`GET /v1/campaigns/{id}/entries`,
//! `GET /v1/sources/{id}/entries`) and the citations of a trace answer.

use serde::{Deserialize, Serialize};

use super::CheckpointAnswer;
use crate::{DecodeError, Digest, LedgerEntry};

/// A log entry cited by an answer: its position, body digest, canonical
/// leaf bytes (hex) and inclusion proof under the answer's checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitedEntry {
    /// Log index.
    pub index: u64,
    /// Body digest.
    pub digest: Digest,
    /// Canonical leaf bytes, hex.
    pub leaf: String,
    /// Inclusion proof (audit path) under the answer's checkpoint.
    pub proof: Vec<Digest>,
}

impl CitedEntry {
    /// The leaf bytes.
    pub fn leaf_bytes(&self) -> Result<Vec<u8>, DecodeError> {
        hex::decode(&self.leaf).map_err(|e| DecodeError::Malformed {
            kind: "cited leaf",
            reason: format!("leaf {} is not hex: {e}", self.index),
        })
    }

    /// The decoded entry (no check of proofs or signatures).
    pub fn entry(&self) -> Result<LedgerEntry, DecodeError> {
        crate::decode(&self.leaf_bytes()?)
    }
}

/// A listing's answer: every entry the node indexes under the campaign or
/// source that the latest checkpoint covers, cited under it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListingAnswer {
    /// The checkpoint every proof is under.
    pub checkpoint: CheckpointAnswer,
    /// The entries, by log index.
    pub entries: Vec<CitedEntry>,
    /// Listed entries newer than the checkpoint, left out.
    pub uncertified: u64,
}
