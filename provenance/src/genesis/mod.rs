//! The genesis file's public content: the consortium's authorities and
//! their keys for every scheme, its nodes, and the consortium threshold key.
//! Holding a genesis (and checking its digest) is all a light client needs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::codec::{limit, Canonical, DecodeError};
use crate::crypto::{KeyRing, SignatureScheme};
use crate::digest::{Bytes, ObjectKind};
use crate::ids::{AuthorityId, LabelError, Role, Timestamp};

/// An authority's BLS key: a (possibly 0-threshold) key set, shared among
/// its nodes, with a proof of possession of the group key. Its threshold t
/// is the authority's for every scheme: t+1 of its m nodes sign for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlsAuthorityKey {
    /// `blsttc::PublicKeySet` bytes (the commitment polynomial).
    pub public_key_set: Bytes,
    /// Threshold t: t+1 of the authority's nodes must sign.
    pub threshold: u16,
    /// Signature by the group key over the key itself (96 bytes).
    pub proof_of_possession: Bytes,
}

/// One authority of the consortium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorityRecord {
    /// Identifier used everywhere else.
    pub id: AuthorityId,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The scheme it signs its own entries under (registrations,
    /// revocations, evidence); a campaign record's scheme is its policy's.
    pub scheme: SignatureScheme,
    /// BLS key (default scheme; threshold among the authority's nodes).
    pub bls: BlsAuthorityKey,
    /// Ed25519 public keys (32 bytes), one per node in share order: each
    /// node holds only its own secret, and t+1 of them sign for the
    /// authority.
    pub ed25519: Vec<Bytes>,
    /// ML-DSA-65 public keys (1952 bytes), one per node in share order.
    pub ml_dsa_65: Vec<Bytes>,
}

/// One node: a validator (it votes) or a signing member (it follows the
/// chain and co-signs for its authority, but never votes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node name, unique in the consortium.
    pub name: String,
    /// The authority that runs it.
    pub authority: AuthorityId,
    /// Validator index (its share index in the consortium key, 0..n), or
    /// `None` for a signing member.
    pub validator: Option<u16>,
    /// Its share index among its authority's nodes (every scheme's).
    pub authority_share: u16,
    /// libp2p PeerId (derived from `node_key`).
    pub peer_id: String,
    /// Ed25519 node identity public key (32 bytes).
    pub node_key: Bytes,
    /// libp2p listen address (multiaddr).
    pub p2p_listen: String,
    /// HTTP API listen address (`host:port`).
    pub api_listen: String,
    /// The API's TLS certificate (DER), which clients holding this genesis
    /// accept for this node and no other; empty: the API speaks plain HTTP.
    pub api_certificate: Bytes,
}

/// The consortium threshold key over all validators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsortiumKey {
    /// `blsttc::PublicKeySet` bytes, threshold q - 1.
    pub public_key_set: Bytes,
    /// Number of validators.
    pub n: u16,
    /// Byzantine validators tolerated: floor((n - 1) / 3).
    pub f: u16,
    /// Quorum: n - f.
    pub q: u16,
}

/// The parameters every validator of a consortium must share: consensus
/// timing and the block budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsortiumParams {
    /// Consensus view timeout (ms).
    pub view_timeout_ms: u64,
    /// Longest wait (ms) before a leader proposes an empty block.
    pub heartbeat_ms: u64,
    /// Most entries per block.
    pub max_block_entries: u32,
    /// Most entry bytes per block.
    pub max_block_bytes: u32,
    /// How long (ms) a node keeps offering an entry that has not
    /// committed; after that its status is `expired` and it is offered no
    /// more.
    #[serde(default = "default_pending_expiry_ms")]
    pub pending_expiry_ms: u64,
}

fn default_pending_expiry_ms() -> u64 {
    600_000
}

impl Default for ConsortiumParams {
    fn default() -> Self {
        Self {
            view_timeout_ms: 2_000,
            heartbeat_ms: 500,
            max_block_entries: 512,
            max_block_bytes: 4 << 20,
            pending_expiry_ms: default_pending_expiry_ms(),
        }
    }
}

impl ConsortiumParams {
    /// Checks that the parameters can run a consortium: a view timeout
    /// above the heartbeat, at least one entry per block, and a block
    /// budget under the largest object.
    pub fn check(&self) -> Result<(), GenesisError> {
        self.problem()
            .map_or(Ok(()), |p| Err(GenesisError::Consortium(p)))
    }

    fn problem(&self) -> Option<String> {
        self.check_text().err()
    }

    fn check_text(&self) -> Result<(), String> {
        if self.heartbeat_ms == 0 || self.heartbeat_ms > 60_000 {
            return Err(format!(
                "heartbeat_ms = {} is not in 1..=60000",
                self.heartbeat_ms
            ));
        }
        if self.view_timeout_ms <= self.heartbeat_ms || self.view_timeout_ms > 600_000 {
            return Err(format!(
                "view_timeout_ms = {} must exceed heartbeat_ms = {} and be at most 600000",
                self.view_timeout_ms, self.heartbeat_ms
            ));
        }
        if self.max_block_entries == 0 || self.max_block_entries > 65_536 {
            return Err(format!(
                "max_block_entries = {} is not in 1..=65536",
                self.max_block_entries
            ));
        }
        if !(1_000..=86_400_000).contains(&self.pending_expiry_ms) {
            return Err(format!(
                "pending_expiry_ms = {} is not in 1000..=86400000",
                self.pending_expiry_ms
            ));
        }
        let max = crate::codec::MAX_OBJECT_BYTES as u32;
        if self.max_block_bytes < 64 << 10 || self.max_block_bytes > max {
            return Err(format!(
                "max_block_bytes = {} is not in {}..={max}",
                self.max_block_bytes,
                64 << 10
            ));
        }
        Ok(())
    }
}

/// A witness outside the consortium: it cosigns checkpoints consistent
/// with every one it cosigned before (C2SP tlog-witness).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessRecord {
    /// Its key name (a scheme-less URL-like name).
    pub name: String,
    /// Its Ed25519 cosignature public key (32 bytes).
    pub key: Bytes,
    /// Its submission URL prefix (`http://host:port` or `https://...`):
    /// nodes POST `<url>/add-checkpoint`.
    pub url: String,
}

/// Who witnesses the consortium's checkpoints, how many must, and how often
/// nodes submit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witnessing {
    /// The witnesses, each named once.
    pub witnesses: Vec<WitnessRecord>,
    /// Cosignatures a light client requires on a checkpoint (0: none).
    pub quorum: u16,
    /// How often (ms) each node submits its latest checkpoint to every
    /// witness, busy or idle: at least 1,000.
    pub interval_ms: u64,
}

impl Default for Witnessing {
    fn default() -> Self {
        Self {
            witnesses: Vec::new(),
            quorum: 0,
            interval_ms: 5_000,
        }
    }
}

impl Witnessing {
    fn check(&self) -> Result<(), String> {
        if !(1_000..=86_400_000).contains(&self.interval_ms) {
            return Err(format!(
                "witness interval_ms = {} is not in 1000..=86400000",
                self.interval_ms
            ));
        }
        if usize::from(self.quorum) > self.witnesses.len() {
            return Err(format!(
                "witness quorum {} but {} witnesses are named",
                self.quorum,
                self.witnesses.len()
            ));
        }
        let mut names = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for w in &self.witnesses {
            crate::note::check_key_name(&w.name).map_err(|e| format!("witness: {e}"))?;
            if !names.insert(w.name.as_str()) {
                return Err(format!("witness {:?} is named twice", w.name));
            }
            // A v1 cosignature does not commit to its witness's name: one key
            // under two names would count twice.
            if !keys.insert(w.key.as_slice()) {
                return Err(format!("witness {:?} has another witness's key", w.name));
            }
            let key: [u8; 32] = w
                .key
                .as_slice()
                .try_into()
                .map_err(|_| format!("witness {:?}: key is not 32 bytes", w.name))?;
            ed25519_dalek::VerifyingKey::from_bytes(&key)
                .map_err(|e| format!("witness {:?}: key: {e}", w.name))?;
            let rest = w
                .url
                .strip_prefix("http://")
                .or_else(|| w.url.strip_prefix("https://"))
                .filter(|r| !r.is_empty() && !r.contains(char::is_whitespace))
                .ok_or_else(|| format!("witness {:?}: url must be http(s)://host[:port][/prefix]", w.name))?;
            let _ = rest;
        }
        Ok(())
    }
}

/// The public genesis of a consortium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// Format version.
    pub version: u16,
    /// Consortium name (for people).
    pub consortium_name: String,
    /// The log's origin, unique to this consortium: the first line of every
    /// checkpoint note ([`crate::note::check_origin`]).
    pub origin: String,
    /// Creation time.
    pub created: Timestamp,
    /// Largest clock difference (ms) a validator tolerates between a block's
    /// stamp and its own clock.
    pub max_clock_skew_ms: u64,
    /// Consensus timing and the block budget every validator shares.
    pub params: ConsortiumParams,
    /// Authorities, in bitmap order.
    pub authorities: Vec<AuthorityRecord>,
    /// Every node: the validators in validator-index order, each signing
    /// member anywhere among them.
    pub nodes: Vec<NodeRecord>,
    /// Consortium threshold key.
    pub consortium: ConsortiumKey,
    /// The witnesses of its checkpoints.
    pub witnessing: Witnessing,
}

/// Why a genesis was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    /// A name appears twice.
    #[error("duplicate {what} {name:?}")]
    Duplicate {
        /// What kind of name.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// An authority's key is invalid.
    #[error("authority {authority}: {reason}")]
    BadKey {
        /// The authority.
        authority: AuthorityId,
        /// What is wrong.
        reason: String,
    },
    /// A BLS proof of possession does not verify (a possible rogue key).
    #[error("authority {authority}: BLS proof of possession does not verify")]
    BadProofOfPossession {
        /// The authority.
        authority: AuthorityId,
    },
    /// One authority runs more validators than the fault bound f allows
    /// (its signing members do not vote and do not count).
    #[error("authority {authority} runs {validators} validators but f = {f}: one dishonest authority could exceed the fault bound")]
    TooManyValidators {
        /// The authority.
        authority: AuthorityId,
        /// Validators it runs.
        validators: usize,
        /// The consortium's f.
        f: u16,
    },
    /// The consortium parameters are inconsistent.
    #[error("consortium: {0}")]
    Consortium(String),
    /// A node record is inconsistent.
    #[error("node {node}: {reason}")]
    Node {
        /// Node name.
        node: String,
        /// What is wrong.
        reason: String,
    },
    /// A role is missing from the consortium.
    #[error("the consortium has no {0} authority")]
    MissingRole(Role),
    /// A label is invalid.
    #[error(transparent)]
    Label(#[from] LabelError),
    /// The encoding is invalid.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Most nodes one authority runs.
pub const MAX_AUTHORITY_NODES: usize = 64;

/// BFT parameters for `n` validators: (f, q) with f = floor((n-1)/3), q = n - f.
pub fn bft_parameters(n: u16) -> (u16, u16) {
    let f = n.saturating_sub(1) / 3;
    (f, n - f)
}

/// The libp2p PeerId of an Ed25519 public key: base58 of the identity
/// multihash of its protobuf encoding.
pub fn peer_id_of_ed25519(public_key: &[u8; 32]) -> String {
    // protobuf PublicKey { Type = Ed25519 (1), Data = key } = 08 01 12 20 <key>
    let mut mh = Vec::with_capacity(38);
    mh.extend_from_slice(&[0x00, 36, 0x08, 0x01, 0x12, 0x20]);
    mh.extend_from_slice(public_key);
    bs58::encode(mh).into_string()
}

impl Canonical for Genesis {
    const KIND: ObjectKind = ObjectKind::Genesis;
    /// 6: `origin` and `witnessing` added.
    const VERSION: u16 = 6;
    fn declared_version(&self) -> u16 {
        self.version
    }
    fn check(&self) -> Result<(), DecodeError> {
        let k = ObjectKind::Genesis;
        limit(k, "consortium_name", self.consortium_name.len(), 128)?;
        limit(k, "origin", self.origin.len(), 128)?;
        limit(k, "witnessing.witnesses", self.witnessing.witnesses.len(), 64)?;
        for w in &self.witnessing.witnesses {
            limit(k, "witness.name", w.name.len(), 256)?;
            limit(k, "witness.key", w.key.len(), 32)?;
            limit(k, "witness.url", w.url.len(), 1024)?;
        }
        limit(k, "authorities", self.authorities.len(), 1024)?;
        limit(k, "nodes", self.nodes.len(), 1024)?;
        limit(
            k,
            "consortium.public_key_set",
            self.consortium.public_key_set.len(),
            48 * 1024,
        )?;
        for a in &self.authorities {
            limit(k, "authority.name", a.name.len(), 256)?;
            limit(
                k,
                "authority.bls.public_key_set",
                a.bls.public_key_set.len(),
                48 * 1024,
            )?;
            limit(
                k,
                "authority.bls.proof_of_possession",
                a.bls.proof_of_possession.len(),
                96,
            )?;
            limit(k, "authority.ed25519", a.ed25519.len(), MAX_AUTHORITY_NODES)?;
            limit(k, "authority.ml_dsa_65", a.ml_dsa_65.len(), MAX_AUTHORITY_NODES)?;
            for key in &a.ed25519 {
                limit(k, "authority.ed25519 key", key.len(), 32)?;
            }
            for key in &a.ml_dsa_65 {
                limit(k, "authority.ml_dsa_65 key", key.len(), 1952)?;
            }
        }
        for n in &self.nodes {
            limit(k, "node.name", n.name.len(), 128)?;
            limit(k, "node.peer_id", n.peer_id.len(), 128)?;
            limit(k, "node.node_key", n.node_key.len(), 32)?;
            limit(k, "node.p2p_listen", n.p2p_listen.len(), 256)?;
            limit(k, "node.api_listen", n.api_listen.len(), 256)?;
            limit(k, "node.api_certificate", n.api_certificate.len(), 8 * 1024)?;
        }
        Ok(())
    }
}

impl Genesis {
    /// Checks every rule of a genesis and builds the key ring: names unique,
    /// all three roles present, n/f/q consistent over the validators, no
    /// authority running more than f validators, node keys matching
    /// PeerIds, share indexes 0..m with one Ed25519 and one ML-DSA key per
    /// node, every key parsing and every BLS proof of possession verifying.
    pub fn validate(&self) -> Result<KeyRing, GenesisError> {
        if self.version != Self::VERSION {
            return Err(DecodeError::UnsupportedVersion {
                kind: "Genesis",
                found: self.version,
                supported: Self::VERSION,
            }
            .into());
        }
        self.check()?;
        self.params.check()?;
        crate::note::check_origin(&self.origin).map_err(|e| GenesisError::Consortium(e.to_string()))?;
        self.witnessing.check().map_err(GenesisError::Consortium)?;
        // A checkpoint note carries q validators' lines, the consortium's
        // and the witnesses': at most signed-note's 100.
        let lines = usize::from(bft_parameters(self.consortium.n).1) + 1 + self.witnessing.witnesses.len();
        if lines > crate::note::MAX_SIGNATURES {
            return Err(GenesisError::Consortium(format!(
                "a checkpoint note would carry {lines} signature lines (q validators, the consortium, the witnesses): at most {}",
                crate::note::MAX_SIGNATURES
            )));
        }
        for a in &self.authorities {
            a.id.validate()?;
        }
        for role in [Role::DataSource, Role::Governance, Role::Operator] {
            if !self.authorities.iter().any(|a| a.role == role) {
                return Err(GenesisError::MissingRole(role));
            }
        }
        let n = self.validators().count();
        let c = &self.consortium;
        if usize::from(c.n) != n || n == 0 {
            return Err(GenesisError::Consortium(format!(
                "n = {} but {} validators are listed",
                c.n, n
            )));
        }
        let (f, q) = bft_parameters(c.n);
        if c.f != f || c.q != q {
            return Err(GenesisError::Consortium(format!(
                "n = {} requires f = {f}, q = {q}; genesis says f = {}, q = {}",
                c.n, c.f, c.q
            )));
        }
        let authorities: BTreeMap<&AuthorityId, &AuthorityRecord> =
            self.authorities.iter().map(|a| (&a.id, a)).collect();
        let mut names = BTreeSet::new();
        let mut peers = BTreeSet::new();
        let mut per_authority: BTreeMap<&AuthorityId, BTreeSet<u16>> = BTreeMap::new();
        let mut validators: BTreeMap<&AuthorityId, usize> = BTreeMap::new();
        let mut next_validator = 0usize;
        for node in &self.nodes {
            let bad = |reason: String| GenesisError::Node {
                node: node.name.clone(),
                reason,
            };
            if !names.insert(node.name.as_str()) {
                return Err(GenesisError::Duplicate {
                    what: "node",
                    name: node.name.clone(),
                });
            }
            if let Some(v) = node.validator {
                if usize::from(v) != next_validator {
                    return Err(bad(format!("validator index {v} where {next_validator} is next")));
                }
                next_validator += 1;
                *validators.entry(&node.authority).or_default() += 1;
            }
            let Some(auth) = authorities.get(&node.authority) else {
                return Err(bad(format!("authority {} is not in genesis", node.authority)));
            };
            let key: [u8; 32] = node
                .node_key
                .as_slice()
                .try_into()
                .map_err(|_| bad("node key is not 32 bytes".into()))?;
            ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|e| bad(format!("node key: {e}")))?;
            if peer_id_of_ed25519(&key) != node.peer_id {
                return Err(bad("peer_id does not match node_key".into()));
            }
            if !peers.insert(node.peer_id.as_str()) {
                return Err(GenesisError::Duplicate {
                    what: "peer id",
                    name: node.peer_id.clone(),
                });
            }
            if !per_authority
                .entry(&node.authority)
                .or_default()
                .insert(node.authority_share)
            {
                return Err(bad(format!(
                    "authority share index {} used twice",
                    node.authority_share
                )));
            }
            let _ = auth;
        }
        for (authority, &count) in &validators {
            if count > usize::from(f) {
                return Err(GenesisError::TooManyValidators {
                    authority: (*authority).clone(),
                    validators: count,
                    f,
                });
            }
        }
        for (authority, shares) in &per_authority {
            let a = authorities[authority];
            let distinct = |keys: &[Bytes]| keys.iter().collect::<BTreeSet<_>>().len() == keys.len();
            if !distinct(&a.ed25519) || !distinct(&a.ml_dsa_65) {
                return Err(GenesisError::BadKey {
                    authority: a.id.clone(),
                    reason: "two of its nodes list the same key: each node signs with its own".into(),
                });
            }
            if a.ed25519.len() != shares.len() || a.ml_dsa_65.len() != shares.len() {
                return Err(GenesisError::BadKey {
                    authority: a.id.clone(),
                    reason: format!(
                        "runs {} nodes but lists {} Ed25519 and {} ML-DSA-65 keys",
                        shares.len(),
                        a.ed25519.len(),
                        a.ml_dsa_65.len()
                    ),
                });
            }
            if usize::from(a.bls.threshold) >= shares.len() {
                return Err(GenesisError::BadKey {
                    authority: a.id.clone(),
                    reason: format!(
                        "BLS threshold {} needs {} nodes, it runs {}",
                        a.bls.threshold,
                        a.bls.threshold + 1,
                        shares.len()
                    ),
                });
            }
            if let Some(&max) = shares.iter().next_back() {
                if usize::from(max) >= shares.len() {
                    return Err(GenesisError::BadKey {
                        authority: a.id.clone(),
                        reason: "authority share indexes must be 0..m".into(),
                    });
                }
            }
        }
        for a in &self.authorities {
            if !per_authority.contains_key(&a.id) {
                return Err(GenesisError::BadKey {
                    authority: a.id.clone(),
                    reason: "runs no node: its keys would have no signing agent".into(),
                });
            }
        }
        let keyring = KeyRing::build(self)?;
        if keyring.consortium_threshold() + 1 != usize::from(q) {
            return Err(GenesisError::Consortium(format!(
                "consortium key threshold {} but q - 1 = {}",
                keyring.consortium_threshold(),
                q - 1
            )));
        }
        Ok(keyring)
    }

    /// The record of `authority`.
    pub fn authority(&self, authority: &AuthorityId) -> Option<&AuthorityRecord> {
        self.authorities.iter().find(|a| &a.id == authority)
    }

    /// The node record of a PeerId, if it is a member.
    pub fn node_by_peer(&self, peer_id: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.peer_id == peer_id)
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The validators, in validator-index order.
    pub fn validators(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.iter().filter(|n| n.validator.is_some())
    }

    /// Validator `index`'s record.
    pub fn validator(&self, index: u16) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.validator == Some(index))
    }

    /// Every node in peer order: the validators by index, then the
    /// signing members as listed. A node's position here is its peer
    /// index (for a validator, its validator index).
    pub fn peer_order(&self) -> Vec<&NodeRecord> {
        let mut v: Vec<&NodeRecord> = self.validators().collect();
        v.sort_by_key(|n| n.validator);
        v.extend(self.nodes.iter().filter(|n| n.validator.is_none()));
        v
    }

    /// The node at peer index `index` ([`Self::peer_order`]).
    pub fn node_at(&self, index: u16) -> Option<&NodeRecord> {
        self.peer_order().get(usize::from(index)).copied()
    }

    /// The peer index of the node named `name`.
    pub fn peer_index(&self, name: &str) -> Option<u16> {
        self.peer_order()
            .iter()
            .position(|n| n.name == name)
            .and_then(|i| u16::try_from(i).ok())
    }

    /// The nodes of `authority`, in share order.
    pub fn nodes_of<'a>(&'a self, authority: &'a AuthorityId) -> impl Iterator<Item = &'a NodeRecord> + 'a {
        let mut v: Vec<&NodeRecord> = self.nodes.iter().filter(|n| &n.authority == authority).collect();
        v.sort_by_key(|n| n.authority_share);
        v.into_iter()
    }
}

mod dealer;
pub use dealer::{
    deal, AuthorityDescription, AuthoritySecrets, ConsortiumDescription, Dealt, NodeDescription, NodeSecrets,
    NodeSigners, WitnessDescription, WitnessingDescription,
};
