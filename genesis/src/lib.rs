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
//! DIR/nodes/<node>/api.crt       the node's API certificate (PEM), also in genesis
//! DIR/nodes/<node>/api.key       secret, 0600: its private key (PEM, PKCS#8)
//! ```
//!
//! Each node's API certificate is self-signed for the host of its
//! `api_listen` and pinned in genesis: a client holding the genesis accepts
//! that certificate for that host and no other (see `docs/multi-machine.md`).
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

pub use files::{
    load_admin_token, load_genesis, load_node_keys, read_secret, write_ceremony, write_new, GenesisFile,
};
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
    /// One API certificate per node, in validator order.
    pub api_tls: Vec<ApiTls>,
}

/// A node's API certificate and its private key, both PEM.
pub struct ApiTls {
    /// The certificate (its DER is in genesis).
    pub certificate_pem: String,
    /// The private key (PKCS#8), secret.
    pub key_pem: String,
}

/// The host name or address clients dial for `api_listen` (`host:port`,
/// `[v6]:port`).
pub fn api_host(api_listen: &str) -> Result<String> {
    let bad = || Error::Description(format!("api_listen {api_listen:?} is not host:port"));
    let (host, port) = api_listen.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(host.trim_start_matches('[').trim_end_matches(']').to_string())
}

/// A fresh self-signed certificate for `host` (an IP address or a DNS
/// name), ECDSA P-256 from the operating system's random source.
pub fn self_signed(host: &str) -> Result<(Vec<u8>, ApiTls)> {
    let c = rcgen::generate_simple_self_signed(vec![host.to_string()])
        .map_err(|e| Error::Description(format!("API certificate for {host:?}: {e}")))?;
    Ok((
        c.cert.der().to_vec(),
        ApiTls {
            certificate_pem: c.cert.pem(),
            key_pem: c.key_pair.serialize_pem(),
        },
    ))
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
    let mut desc = desc.clone();
    let mut api_tls = Vec::new();
    for node in desc.authorities.iter_mut().flat_map(|a| a.nodes.iter_mut()) {
        let (der, tls) = self_signed(&api_host(&node.api_listen)?)?;
        node.api_certificate = provenance::Bytes(der);
        api_tls.push(tls);
    }
    let dealt = deal(&desc, created, rng)?;
    let admin_tokens = dealt
        .nodes
        .iter()
        .map(|_| {
            let mut t = [0u8; 32];
            rng.fill_bytes(&mut t);
            hex::encode(t)
        })
        .collect();
    Ok(Ceremony {
        dealt,
        admin_tokens,
        api_tls,
    })
}
