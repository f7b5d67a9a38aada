//! A node's configuration file (TOML). Paths are relative to the file.
//!
//! ```toml
//! genesis = "../genesis.json"
//! keys = "node.key"
//! admin_token = "admin.token"
//! data_dir = "../../data/node-0"
//! # optional: listen addresses (default: the ones genesis lists)
//! # p2p_listen = "/ip4/0.0.0.0/tcp/7100"
//! # api_listen = "0.0.0.0:8100"
//! # optional: /metrics on its own address (then not on the API's)
//! # metrics_listen = "127.0.0.1:9100"
//! # optional: reverse proxies whose X-Forwarded-For names the client
//! # trusted_proxies = ["127.0.0.1"]
//! # optional: what one authority may have pending here
//! # max_pending_per_authority = 4096
//! # max_pending_bytes_per_authority = 67108864
//! # optional: threads checking signatures beside consensus (0: none)
//! # verifier_threads = 1
//! # optional: serve the API over https with the certificate genesis pins
//! # tls_certificate = "api.crt"
//! # tls_key = "api.key"
//! # optional: log lines as JSON objects ("text" by default)
//! # log_format = "json"
//! # a data-source node: its rights-holder's source packages (replay audits)
//! # own_sources = "sources"
//! ```
//!
//! Consensus timing and the block budget are consortium-wide: they are in
//! genesis (`provenance::ConsortiumParams`), not here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A node's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The genesis file.
    pub genesis: PathBuf,
    /// The node key file (0600).
    pub keys: PathBuf,
    /// The admin token file (0600).
    pub admin_token: PathBuf,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// libp2p listen address (default: genesis's).
    #[serde(default)]
    pub p2p_listen: Option<String>,
    /// HTTP listen address (default: genesis's).
    #[serde(default)]
    pub api_listen: Option<String>,
    /// Largest JSON request body (bytes).
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// Largest blob (bytes).
    #[serde(default = "default_blob")]
    pub max_blob_bytes: usize,
    /// Requests per second allowed per client address (sustained).
    #[serde(default = "default_rate")]
    pub rate_per_sec: u32,
    /// Burst of requests allowed per client address.
    #[serde(default = "default_burst")]
    pub rate_burst: u32,
    /// Where `/metrics` is served instead of the API's address, if set.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Entries one authority may have pending (waiting for co-signatures
    /// or a block) at this node; more are refused (429 from the API, not
    /// taken from a peer).
    #[serde(default = "default_pending_entries")]
    pub max_pending_per_authority: usize,
    /// Canonical bytes one authority may have pending at this node.
    #[serde(default = "default_pending_bytes")]
    pub max_pending_bytes_per_authority: usize,
    /// Threads that check gossiped signatures beside the task that drives
    /// consensus (`node::verifier`); 0 checks them on that task.
    #[serde(default = "default_verifier_threads")]
    pub verifier_threads: usize,
    /// Reverse proxies in front of the API: for a request from one of
    /// them, the client is the right-most address of `X-Forwarded-For` that
    /// is not a trusted proxy (per-client limits then see the client).
    #[serde(default)]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The API's certificate (PEM); with `tls_key`, the API speaks only
    /// https. It must be the one genesis pins for this node.
    #[serde(default)]
    pub tls_certificate: Option<PathBuf>,
    /// The certificate's private key (PEM, 0600).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// How the node logs: `text` (default) or `json` (one object per line).
    #[serde(default)]
    pub log_format: LogFormat,
    /// A data-source node's folder of its rights-holder's source packages
    /// (`*.package`, 0600): the node replays its own examples from them
    /// when an audit ticket selects a training record.
    #[serde(default)]
    pub own_sources: Option<PathBuf>,
}

/// How a node writes its log lines (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (time, level, target, fields).
    Json,
}

fn default_body() -> usize {
    4 << 20
}
fn default_blob() -> usize {
    32 << 20
}
fn default_rate() -> u32 {
    2000
}
fn default_burst() -> u32 {
    4000
}
fn default_verifier_threads() -> usize {
    1
}
fn default_pending_entries() -> usize {
    4_096
}
fn default_pending_bytes() -> usize {
    64 << 20
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid TOML for a node configuration.
    #[error("{path}: {reason}")]
    Parse {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
}

impl NodeConfig {
    /// A configuration with defaults for the given files.
    pub fn new(genesis: PathBuf, keys: PathBuf, admin_token: PathBuf, data_dir: PathBuf) -> Self {
        Self {
            genesis,
            keys,
            admin_token,
            data_dir,
            p2p_listen: None,
            api_listen: None,
            max_body_bytes: default_body(),
            max_blob_bytes: default_blob(),
            rate_per_sec: default_rate(),
            rate_burst: default_burst(),
            metrics_listen: None,
            verifier_threads: default_verifier_threads(),
            max_pending_per_authority: default_pending_entries(),
            max_pending_bytes_per_authority: default_pending_bytes(),
            trusted_proxies: Vec::new(),
            tls_certificate: None,
            tls_key: None,
            log_format: LogFormat::Text,
            own_sources: None,
        }
    }

    /// Reads a configuration file, resolving its paths against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: p.clone(),
            source,
        })?;
        let mut c: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for f in [&mut c.genesis, &mut c.keys, &mut c.admin_token, &mut c.data_dir]
            .into_iter()
            .chain(c.tls_certificate.as_mut())
            .chain(c.tls_key.as_mut())
            .chain(c.own_sources.as_mut())
        {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        if c.tls_certificate.is_some() != c.tls_key.is_some() {
            return Err(ConfigError::Parse {
                path: p,
                reason: "tls_certificate and tls_key go together".into(),
            });
        }
        Ok(c)
    }
}

/// A commented configuration for node `name` of `genesis`, its files
/// beside it as the ceremony names them (`node.key`, `admin.token`,
/// `api.crt`, `api.key`) and its genesis at `genesis_path`.
pub fn commented(
    genesis: &provenance::Genesis,
    name: &str,
    genesis_path: &Path,
) -> Result<String, ConfigError> {
    let node = genesis
        .nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| ConfigError::Parse {
            path: genesis_path.display().to_string(),
            reason: format!("genesis lists no node {name:?}"),
        })?;
    let own = if genesis
        .authority(&node.authority)
        .is_some_and(|a| a.role == provenance::Role::DataSource)
    {
        "# This rights-holder's source packages (TEXT.package, 0600): the node\n\
         # replays its own examples from them when an audit ticket selects a\n\
         # training record (a record it cannot replay waits).\n\
         own_sources = \"sources\"\n\
         \n"
    } else {
        ""
    };
    let tls = if node.api_certificate.0.is_empty() {
        "# Genesis pins no API certificate for this node: its API speaks plain\n\
         # HTTP (put it behind a TLS proxy, and list the proxy in\n\
         # trusted_proxies, before it crosses a network).\n"
            .to_string()
    } else {
        "# The API speaks only https, with the certificate genesis pins for this\n\
         # node (clients holding genesis accept no other).\n\
         tls_certificate = \"api.crt\"\n\
         tls_key = \"api.key\"                     # 0600\n"
            .to_string()
    };
    Ok(format!(
        "# Node {name} of consortium {consortium:?} ({authority}).\n\
         # Paths are relative to this file. Run: govtune node --config node.toml\n\
         \n\
         genesis = {genesis:?}\n\
         keys = \"node.key\"                       # 0600, this node's keys only\n\
         admin_token = \"admin.token\"             # 0600, writes need it\n\
         data_dir = \"data\"                       # the RocksDB store\n\
         \n\
         # Where to bind. Genesis lists the addresses peers and clients dial;\n\
         # bind elsewhere (0.0.0.0) behind NAT or a load balancer.\n\
         p2p_listen = {p2p:?}\n\
         api_listen = {api:?}\n\
         \n\
         {tls}\
         \n\
         {own}\
         # Optional (defaults shown).\n\
         # log_format = \"text\"                  # or \"json\": one object per line\n\
         # metrics_listen = \"127.0.0.1:9100\"     # /metrics here, not on the API\n\
         # trusted_proxies = []                  # proxies whose X-Forwarded-For names the client\n\
         # rate_per_sec = {rate}                  # API requests per client\n\
         # rate_burst = {burst}\n\
         # max_pending_per_authority = {pending}\n\
         # max_pending_bytes_per_authority = {pending_bytes}\n\
         # verifier_threads = {threads}              # signature checks beside consensus\n",
        consortium = genesis.consortium_name,
        authority = node.authority,
        genesis = genesis_path.display().to_string(),
        p2p = node.p2p_listen,
        api = node.api_listen,
        rate = default_rate(),
        burst = default_burst(),
        pending = default_pending_entries(),
        pending_bytes = default_pending_bytes(),
        threads = default_verifier_threads(),
    ))
}
