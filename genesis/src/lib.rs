//! Define a consortium and run its key ceremony: write the public genesis
//! file and one private key file per node.
//!
//! The ceremony is a **trusted dealer**: one process generates every key,
//! splits each multi-node authority's BLS key into t-of-m shares and the
//! consortium key into (q-1)-of-n shares, signs the proofs of possession,
//! writes the files and forgets the master secrets. Whoever runs it could
//! keep copies, so it must be run by a party every authority trusts, or on
//! a machine that is destroyed afterwards. A distributed key generation
//! would remove that trust; it is not built yet.
//!
//! Output layout (`govtune genesis new --out DIR`):
//!
//! ```text
//! DIR/genesis.json               public: authorities, keys, nodes, n/f/q, digest
//! DIR/nodes/<node>/node.key      secret, mode 0600: node identity, authority keys, consortium share
//! DIR/nodes/<node>/admin.token   secret, mode 0600: the node's admin token
//! ```

mod ceremony;
mod description;
mod files;

pub use ceremony::{ceremony, Ceremony};
pub use description::{AuthorityDescription, ConsortiumDescription, NodeDescription};
pub use files::{
    load_admin_token, load_genesis, load_node_keys, write_ceremony, AuthoritySecrets, GenesisFile, NodeKeyFile,
    NodeKeys,
};

use provenance::genesis::GenesisError;

/// Errors of the ceremony and of reading or writing its files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The consortium description is invalid.
    #[error("consortium description: {0}")]
    Description(String),
    /// The resulting genesis breaks a rule.
    #[error("genesis refused: {0}")]
    Genesis(#[from] GenesisError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A file's content is invalid.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A secret file is readable by others.
    #[error("{path} has mode {mode:o}; secret files must be 0600 (chmod 600 {path})")]
    Permissions {
        /// The file.
        path: String,
        /// Its mode.
        mode: u32,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
