//! Waiting for the consortium's verdict on an entry a role submitted.

use std::time::{Duration, Instant};

use lightclient::client::Client;
use provenance::api::{EntryState, EntryStatus};
use provenance::Digest;

use crate::RolesError;

/// What became of a submitted entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// In the log (its index).
    Committed(u64),
    /// A co-signer refused it, or it expired: it will not be committed.
    Refused(String),
}

/// Polls `node` until the entry `digest` commits or is refused, for at
/// most `timeout`.
pub fn settle(node: &Client, digest: &Digest, timeout: Duration) -> Result<Settled, RolesError> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = node.status(digest)?;
        match s.state {
            EntryState::Committed(c) => return Ok(Settled::Committed(c.index)),
            EntryState::Uncommitted(EntryStatus::Refused { by, reason }) => {
                return Ok(Settled::Refused(format!("{by} refused it: {reason}")))
            }
            EntryState::Uncommitted(EntryStatus::Expired { reason }) => {
                return Ok(Settled::Refused(format!("expired: {reason}")))
            }
            EntryState::Uncommitted(EntryStatus::Pending { .. }) => {}
        }
        if Instant::now() > deadline {
            return Err(RolesError::Ledger(format!(
                "entry {digest} neither committed nor refused within {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
