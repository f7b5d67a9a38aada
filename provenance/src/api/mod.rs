//! The node's HTTP API (`/v1`) as serde types: the one schema the server
//! writes and every client reads. The JSON shapes are documented in
//! `docs/api.md`.
//!
//! Request bodies of the writes are the ledger objects themselves
//! ([`crate::DataSourceManifest`], [`crate::PolicyArtifact`],
//! [`crate::Campaign`], [`crate::EntryBody`], [`crate::Revocation`]) and
//! [`TraceRequest`]; queries and answers are here:
//!
//! * [`entries`]: what a write answers and where an entry stands;
//! * [`health`]: a node's view of itself;
//! * [`checkpoint`]: certified checkpoints;
//! * [`log`]: raw leaves and the Merkle proofs of the log;
//! * [`state`]: a source's or a campaign's ledger state;
//! * [`listing`]: entries cited with their proofs under one checkpoint;
//! * [`trace`]: `POST /v1/trace`.

use serde::{Deserialize, Serialize};

pub mod checkpoint;
pub mod entries;
pub mod health;
pub mod listing;
pub mod log;
pub mod state;
pub mod trace;

pub use checkpoint::{CheckpointAnswer, CheckpointQuery};
pub use entries::{BlobAnswer, CommittedEntry, EntryAnswer, EntryState, EntryStatus, LogIndex, SubmitAnswer};
pub use health::HealthAnswer;
pub use listing::{
    CitedEntry, IndexCitation, IndexPage, ListingAnswer, ListingQuery, MAX_LISTING_BYTES, MAX_LISTING_ENTRIES,
};
pub use log::{
    ConsistencyAnswer, ConsistencyQuery, InclusionAnswer, InclusionQuery, LeavesAnswer, LeavesQuery, LogLeaf,
};
pub use state::{CampaignAnswer, SourceAnswer};
pub use trace::{
    BaseLineage, TraceAnswer, TraceRequest, TracedBlock, TracedEvent, TracedExample, TracedSource,
};

/// The body of every 4xx answer: why the request was refused. A 5xx has
/// no body (500: an internal fault, in the node's log; 503: the node could
/// not store a write durably, retry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The reason, in words.
    pub error: String,
}
