//! The writes' answers (`POST /v1/sources|policies|campaigns|events|revocations`,
//! `PUT /v1/blobs/{digest}`) and where an entry stands (`GET /v1/events/{digest}`).
//!
//! Every status answer names the entry's digest and its `status`:
//! `committed` (with its log index, and on `GET` its leaf and proof),
//! `pending` (who signed, who must still sign) or `refused` (by whom, why).

use serde::{Deserialize, Serialize};

use super::CheckpointAnswer;
use crate::{AuthorityId, Bytes, Digest};

/// Where an entry not yet in the log stands on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum EntryStatus {
    /// Waiting for signatures, or for a block.
    Pending {
        /// Authorities that signed.
        signed: Vec<AuthorityId>,
        /// Authorities still to sign.
        missing: Vec<AuthorityId>,
        /// Every signature is in: waiting for a block.
        complete: bool,
    },
    /// A co-signer refused it; it will not be committed.
    Refused {
        /// The refusing authority.
        by: AuthorityId,
        /// Its reason.
        reason: String,
    },
    /// What committed since makes it impossible to commit (its campaign
    /// closed, another record took its chain position): it is no longer
    /// offered.
    Expired {
        /// Why.
        reason: String,
    },
}

/// An entry's status in an answer: committed, with `C` telling where
/// (`"status": "committed"` and `C`'s fields), or not in the log yet
/// ([`EntryStatus`], whose own `status` tag is `pending`, `refused` or
/// `expired`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum EntryState<C> {
    /// In the log.
    Committed(C),
    /// Not in the log: pending or refused.
    #[serde(untagged)]
    Uncommitted(EntryStatus),
}

impl<C> EntryState<C> {
    /// Where the committed entry is; `None` while pending or refused.
    pub fn committed(&self) -> Option<&C> {
        match self {
            Self::Committed(c) => Some(c),
            Self::Uncommitted(_) => None,
        }
    }
}

/// A committed entry's position, as a write answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogIndex {
    /// Log index.
    pub index: u64,
}

/// A write's answer: 200 `{digest, status: "committed", index}` if the
/// entry is already in the log, else 202 `{digest, status: "pending",
/// signed, missing, complete}`, or a bare 202 `{digest}` when the node
/// holds no status for it (e.g. committed meanwhile: ask
/// `GET /v1/events/{digest}`). (A refused entry is a 409 with an
/// [`ErrorBody`](super::ErrorBody).)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitAnswer {
    /// The entry's body digest.
    pub digest: Digest,
    /// Its status, if the node holds one.
    #[serde(flatten)]
    pub state: Option<EntryState<LogIndex>>,
}

/// A committed entry as `GET /v1/events/{digest}` shows it: its leaf and
/// inclusion proof in the log of `size`, which is the latest checkpoint's
/// if that covers it (else the node's current log size, and `checkpoint`
/// is null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommittedEntry {
    /// Log index.
    pub index: u64,
    /// Size of the log the proof is in.
    pub size: u64,
    /// Canonical leaf bytes (hex in JSON).
    pub leaf: Bytes,
    /// Inclusion proof (audit path) in the log of `size`.
    pub proof: Vec<Digest>,
    /// The checkpoint of `size`, if one covers the entry.
    pub checkpoint: Option<CheckpointAnswer>,
}

/// `GET /v1/events/{digest}` (alias `/v1/entries/{digest}`): 200 when
/// committed or refused, 202 while pending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryAnswer {
    /// The entry's body digest.
    pub digest: Digest,
    /// Where it stands.
    #[serde(flatten)]
    pub state: EntryState<CommittedEntry>,
}

/// `PUT /v1/blobs/{digest}`'s answer (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobAnswer {
    /// The blob's digest.
    pub digest: Digest,
    /// Its length in bytes.
    pub bytes: u64,
}
