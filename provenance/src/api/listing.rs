//! Entries cited with their inclusion proofs under one checkpoint: the
//! listings a verifier walks (`GET /v1/campaigns/{id}/entries`,
//! `GET /v1/sources/{id}/entries`) and the citations of a trace answer.

use serde::{Deserialize, Serialize};

use super::CheckpointAnswer;
use crate::index::IndexProof;
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

/// A listing's query: the page after log index `after`, under the
/// certified checkpoint at `height` (both absent: the first page, under the
/// node's latest checkpoint).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingQuery {
    /// The cursor: the last index of the previous page.
    pub after: Option<u64>,
    /// The height of the checkpoint the first page was under.
    pub height: Option<u64>,
}

impl ListingQuery {
    /// The query string (without `?`), empty for the first page.
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = self.after {
            parts.push(format!("after={a}"));
        }
        if let Some(h) = self.height {
            parts.push(format!("height={h}"));
        }
        parts.join("&")
    }
}

/// A page of a listing: entries the node indexes under the campaign or
/// source that the checkpoint covers, cited under it, in log order. A page
/// holds at most [`MAX_LISTING_ENTRIES`] entries and about
/// [`MAX_LISTING_BYTES`] of leaves; `next` is the cursor of the next one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListingAnswer {
    /// The checkpoint every proof is under.
    pub checkpoint: CheckpointAnswer,
    /// The entries, by log index.
    pub entries: Vec<CitedEntry>,
    /// Listed entries newer than the checkpoint, left out.
    pub uncertified: u64,
    /// The cursor to ask the next page with (`after`), if there is more.
    #[serde(default)]
    pub next: Option<u64>,
    /// What the checkpoint's authenticated index says of the listed source
    /// or campaign: its value (or absence) and the pages of positions this
    /// page's entries sit in, so that a verifier sees that the listing
    /// leaves nothing out.
    #[serde(default)]
    pub index: Option<IndexCitation>,
}

/// A listing page's proof of completeness under the checkpoint's index
/// root ([`crate::index`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexCitation {
    /// The key's value or absence.
    pub proof: IndexProof,
    /// The pages of the key's positions that hold this page's entries, in
    /// order (none when the key is absent).
    pub pages: Vec<IndexPage>,
}

/// One page of a key's positions with its inclusion proof under the key's
/// pages root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPage {
    /// The page's number.
    pub page: u64,
    /// Its positions, ascending.
    pub positions: Vec<u64>,
    /// Its inclusion proof.
    pub proof: Vec<Digest>,
}

/// Most entries one listing page cites.
pub const MAX_LISTING_ENTRIES: usize = 256;
/// About the most leaf bytes one listing page carries (a page always holds
/// at least one entry).
pub const MAX_LISTING_BYTES: usize = 8 << 20;
