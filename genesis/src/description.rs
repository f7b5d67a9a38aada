//! The consortium description file (TOML) an operator writes by hand.
//!
//! ```toml
//! name = "govtune-testnet"
//! max_clock_skew_ms = 2000
//!
//! [[authority]]
//! id = "globe-press"
//! name = "Globe Press"
//! role = "data-source"
//! # threshold = 1        # BLS t for a multi-node authority (default m / 2)
//! [[authority.node]]
//! name = "globe-1"
//! p2p_listen = "/ip4/127.0.0.1/tcp/7101"
//! api_listen = "127.0.0.1:8101"
//! ```

use serde::{Deserialize, Serialize};

use provenance::{AuthorityId, Role};

use crate::{Error, Result};

/// A node as described by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDescription {
    /// Unique node name.
    pub name: String,
    /// libp2p listen multiaddr.
    pub p2p_listen: String,
    /// HTTP API `host:port`.
    pub api_listen: String,
}

/// An authority as described by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityDescription {
    /// Identifier.
    pub id: AuthorityId,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// BLS threshold t among its nodes (default: m / 2).
    #[serde(default)]
    pub threshold: Option<u16>,
    /// Its nodes.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeDescription>,
}

/// A consortium as described by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsortiumDescription {
    /// Consortium name (also the log origin).
    pub name: String,
    /// Clock-skew bound for block stamps, ms.
    #[serde(default = "default_skew")]
    pub max_clock_skew_ms: u64,
    /// Authorities.
    #[serde(rename = "authority")]
    pub authorities: Vec<AuthorityDescription>,
}

fn default_skew() -> u64 {
    2_000
}

impl ConsortiumDescription {
    /// Parses the TOML text of a description.
    pub fn from_toml(text: &str) -> Result<Self> {
        let d: Self = toml::from_str(text).map_err(|e| Error::Description(e.to_string()))?;
        if d.name.is_empty() || d.name.len() > 128 || d.name.contains('\n') || d.name.trim() != d.name {
            return Err(Error::Description(
                "name must be one line of 1 to 128 bytes without surrounding spaces".into(),
            ));
        }
        for a in &d.authorities {
            if a.nodes.is_empty() {
                return Err(Error::Description(format!("authority {} lists no node", a.id)));
            }
            if let Some(t) = a.threshold {
                if usize::from(t) >= a.nodes.len() {
                    return Err(Error::Description(format!(
                        "authority {}: threshold {t} needs {} nodes, it has {}",
                        a.id,
                        t + 1,
                        a.nodes.len()
                    )));
                }
            }
        }
        Ok(d)
    }

    /// The four-node testnet of DESIGN.md: two data-source authorities,
    /// governance and an operator, one node each, on loopback ports
    /// starting at `p2p_base` and `api_base`.
    pub fn local_testnet(p2p_base: u16, api_base: u16) -> Self {
        let authorities = [
            ("globe-press", "Globe Press", Role::DataSource),
            ("folio-society", "Folio Society", Role::DataSource),
            ("standards-board", "Standards Board", Role::Governance),
            ("tuning-lab", "Tuning Lab", Role::Operator),
        ];
        Self {
            name: "govtune-testnet".into(),
            max_clock_skew_ms: default_skew(),
            authorities: authorities
                .iter()
                .enumerate()
                .map(|(i, (id, name, role))| AuthorityDescription {
                    id: AuthorityId::new(*id).expect("static id is valid"),
                    name: (*name).into(),
                    role: *role,
                    threshold: None,
                    nodes: vec![NodeDescription {
                        name: format!("node-{i}"),
                        p2p_listen: format!("/ip4/127.0.0.1/tcp/{}", p2p_base + i as u16),
                        api_listen: format!("127.0.0.1:{}", api_base + i as u16),
                    }],
                })
                .collect(),
        }
    }
}
