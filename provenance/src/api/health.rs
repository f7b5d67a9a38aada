//! `GET /v1/health`: a node's view of itself and of the consortium.

use serde::{Deserialize, Serialize};

use crate::{AuthorityId, Digest, Role};

/// `GET /v1/health`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthAnswer {
    /// Digest of the genesis the node runs.
    pub genesis: Digest,
    /// The authority it signs for.
    pub authority: AuthorityId,
    /// That authority's role.
    pub role: Role,
    /// Height of its last block.
    pub height: u64,
    /// Number of log entries.
    pub log_size: u64,
    /// Log root at `log_size`.
    pub root: Digest,
    /// Height of its latest certified checkpoint (null before the first).
    pub checkpoint_height: Option<u64>,
    /// Connected consortium peers.
    pub peers: u64,
    /// Consensus view.
    pub view: u64,
    /// Complete entries waiting for a block.
    pub mempool: u64,
    /// Entries waiting for signatures.
    pub pending: u64,
}
