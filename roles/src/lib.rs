//! What each authority runs against its own node: the rights-holder's
//! registration and revocation ([`source`]), governance's policies
//! ([`policy`]), the operator's campaign driver ([`campaign`]: the tuner's
//! entries through the node's API, each step waiting for its verdict; and
//! [`operator`], its campaign from the rights-holders' packages) and its
//! progress display ([`progress`]). The `govtune` role commands and the
//! demo share them.
#![deny(missing_docs)]

pub mod campaign;
pub mod operator;
pub mod policy;
pub mod progress;
pub mod source;
pub mod verdict;

use std::time::{SystemTime, UNIX_EPOCH};

/// Why a role's command failed.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    /// The node did not answer, or refused the request.
    #[error(transparent)]
    Client(#[from] lightclient::ClientError),
    /// Training or building a campaign failed.
    #[error(transparent)]
    Tuner(#[from] tuner::TunerError),
    /// A ledger object did not decode.
    #[error(transparent)]
    Decode(#[from] provenance::DecodeError),
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// What the ledger holds is not what the role expects.
    #[error("{0}")]
    Ledger(String),
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl RolesError {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        RolesError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

/// Milliseconds since the Unix epoch (the node checks step times against
/// its own clock).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
