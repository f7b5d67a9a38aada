//! Define a consortium and run its key ceremony: read the description file,
//! write the public genesis file and one private key file per node.
//!
//! The ceremony is a **trusted dealer** ([`provenance::genesis::deal`]): one
//! process generates every key, splits each multi-node authority's BLS key
//! into t-of-m shares and the consortium key into (q-1)-of-n shares, signs
//! the proofs of possession, writes the files and forgets the master
//! secrets. Whoever runs it could keep copies, so it must be run by a party
//! every authority trusts, or on a machine that is wiped afterwards. A
//! distributed key generation would remove that trust; it is not built.
//!
//! Output layout (`govtune genesis new --out DIR`):
//!
//! ```text
//! DIR/genesis.json               public: authorities, keys, nodes, n/f/q, digest
//! DIR/nodes/<node>/node.key      secret, 0600: node identity, authority keys, consortium share
//! DIR/nodes/<node>/admin.token   secret, 0600: the node's admin token
//! ```
//!
//! The description file is TOML:
//!
//! ```toml
//! name = "govtune-testnet"
//! max_clock_skew_ms = 2000
//!
//! [params]                        # optional; the defaults
//! view_timeout_ms = 2000
//! heartbeat_ms = 500
//! max_block_entries = 512
//! max_block_bytes = 4194304
//! pending_expiry_ms = 600000      # an entry not committed by then expires
//!
//! [[authority]]
//! id = "globe-press"
//! name = "Globe Press"
//! role = "data-source"          # or "governance", "operator"
//! # threshold = 1               # BLS t for a multi-node authority (default m / 2)
//! [[authority.node]]
//! name = "globe-1"
//! p2p_listen = "/ip4/127.0.0.1/tcp/7101"
//! api_listen = "127.0.0.1:8101"
//! ```

mod files;

pub use files::{load_admin_token, load_genesis, load_node_keys, write_ceremony, GenesisFile};
pub use provenance::genesis::{ConsortiumDescription, NodeSigners};

use provenance::genesis::{deal, Dealt, GenesisError};
use provenance::Timestamp;
use rand::{CryptoRng, RngCore};

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
    /// A genesis file's content does not hash to the digest it states.
    #[error("{path}: digest mismatch: the file says {stated}, its content hashes to {actual}")]
    DigestMismatch {
        /// The file.
        path: String,
        /// The digest the file states.
        stated: String,
        /// What its content hashes to.
        actual: String,
    },
}

impl Error {
    /// Whether the error shows a genesis that was read is not valid (its
    /// digest or a genesis rule fails: `genesis verify` exits 1), as opposed
    /// to one that could not be read or parsed (exit 2).
    pub fn is_violation(&self) -> bool {
        matches!(self, Error::Genesis(_) | Error::DigestMismatch { .. })
    }
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Parses and checks a consortium description (TOML).
pub fn parse_description(text: &str) -> Result<ConsortiumDescription> {
    let d: ConsortiumDescription = toml::from_str(text).map_err(|e| Error::Description(e.to_string()))?;
    if d.name.is_empty() || d.name.len() > 128 || d.name.contains('\n') || d.name.trim() != d.name {
        return Err(Error::Description(
            "name must be one line of 1 to 128 bytes without surrounding spaces".into(),
        ));
    }
    for a in &d.authorities {
        if a.nodes.is_empty() {
            return Err(Error::Description(format!("authority {} lists no node", a.id)));
        }
    }
    Ok(d)
}

/// A finished ceremony: the dealt keys and one admin token per node.
pub struct Ceremony {
    /// Genesis, key ring and node secrets.
    pub dealt: Dealt,
    /// One admin token per node (hex), in validator order.
    pub admin_tokens: Vec<String>,
}

impl std::fmt::Debug for Ceremony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ceremony")
            .field("dealt", &self.dealt)
            .finish_non_exhaustive()
    }
}

/// Runs the trusted-dealer ceremony for `desc`.
pub fn ceremony<R: RngCore + CryptoRng>(
    desc: &ConsortiumDescription,
    created: Timestamp,
    rng: &mut R,
) -> Result<Ceremony> {
    let dealt = deal(desc, created, rng)?;
    let admin_tokens = dealt
        .nodes
        .iter()
        .map(|_| {
            let mut t = [0u8; 32];
            rng.fill_bytes(&mut t);
            hex::encode(t)
        })
        .collect();
    Ok(Ceremony { dealt, admin_tokens })
}
