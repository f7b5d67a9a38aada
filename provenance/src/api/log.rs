//! The log itself: raw leaves (`GET /v1/log/leaves`) and RFC 9162 proofs
//! (`GET /v1/proof/inclusion`, `GET /v1/proof/consistency`).

use serde::{Deserialize, Serialize};

use crate::{Bytes, Digest};

/// `GET /v1/log/leaves`' query: leaves `start..end` (at most 256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeavesQuery {
    /// First index.
    pub start: u64,
    /// One past the last index.
    pub end: u64,
}

impl LeavesQuery {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        format!("start={}&end={}", self.start, self.end)
    }
}

/// One leaf of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLeaf {
    /// Log index.
    pub index: u64,
    /// Body digest of its entry.
    pub digest: Digest,
    /// The entry's canonical bytes, the Merkle leaf input (hex in JSON).
    pub leaf: Bytes,
}

/// `GET /v1/log/leaves`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeavesAnswer {
    /// The node's log size.
    pub log_size: u64,
    /// The leaves asked for, in order.
    pub leaves: Vec<LogLeaf>,
}

/// `GET /v1/proof/inclusion`'s query: leaf `index` in the log of `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionQuery {
    /// Log index.
    pub index: u64,
    /// Log size the proof is in.
    pub size: u64,
}

impl InclusionQuery {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        format!("index={}&size={}", self.index, self.size)
    }
}

/// `GET /v1/proof/inclusion`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionAnswer {
    /// Log index.
    pub index: u64,
    /// Log size the proof is in.
    pub size: u64,
    /// The entry's canonical bytes (hex in JSON).
    pub leaf: Bytes,
    /// Inclusion proof (audit path).
    pub proof: Vec<Digest>,
}

/// `GET /v1/proof/consistency`'s query: the log of `second` extends the
/// log of `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyQuery {
    /// Earlier log size.
    pub first: u64,
    /// Later log size.
    pub second: u64,
}

impl ConsistencyQuery {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        format!("first={}&second={}", self.first, self.second)
    }
}

/// `GET /v1/proof/consistency`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyAnswer {
    /// Earlier log size.
    pub first: u64,
    /// Later log size.
    pub second: u64,
    /// Consistency proof.
    pub proof: Vec<Digest>,
}
