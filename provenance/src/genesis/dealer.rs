//! The trusted-dealer key ceremony, as a pure function of a consortium
//! description and a caller-supplied RNG; the `genesis` crate wraps it with
//! the description file and the secret files.
//!
//! The dealer generates every key, splits each multi-node authority's BLS
//! key into t-of-m shares and the consortium key into (q-1)-of-n shares,
//! signs the proofs of possession and forgets the master secrets when it
//! returns. Whoever runs it could keep copies: see the `genesis` crate's
//! documentation.

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use super::{
    bft_parameters, peer_id_of_ed25519, AuthorityRecord, BlsAuthorityKey, ConsortiumKey, ConsortiumParams,
    Genesis, GenesisError, NodeRecord,
};
use crate::crypto::{
    bls_proof_of_possession, ml_dsa_public_key, AuthoritySigner, ConsortiumSigner, KeyRing, SignatureScheme,
};
use crate::digest::{Bytes, Digest};
use crate::ids::{AuthorityId, Role, Timestamp};
use crate::Canonical;

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
    /// The API's TLS certificate (DER); not read from the description: the
    /// ceremony (`genesis::ceremony`) makes one per node.
    #[serde(skip)]
    pub api_certificate: Bytes,
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
    /// BLS threshold t among its nodes (default m / 2, so a majority of
    /// its nodes must sign).
    #[serde(default)]
    pub threshold: Option<u16>,
    /// Its nodes.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeDescription>,
}

/// A consortium as described by hand (the `genesis new` input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsortiumDescription {
    /// Consortium name (also the log origin).
    pub name: String,
    /// Clock-skew bound for block stamps, ms.
    #[serde(default = "default_skew")]
    pub max_clock_skew_ms: u64,
    /// Consensus timing and the block budget (defaults if absent).
    #[serde(default)]
    pub params: ConsortiumParams,
    /// Authorities.
    #[serde(rename = "authority")]
    pub authorities: Vec<AuthorityDescription>,
}

fn default_skew() -> u64 {
    2_000
}

impl ConsortiumDescription {
    /// The four-node testnet of the demo: two data-source authorities,
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
            params: ConsortiumParams::default(),
            authorities: authorities
                .iter()
                .enumerate()
                .map(|(i, (id, name, role))| AuthorityDescription {
                    id: AuthorityId((*id).to_string()),
                    name: (*name).into(),
                    role: *role,
                    threshold: None,
                    nodes: vec![NodeDescription {
                        name: format!("node-{i}"),
                        p2p_listen: format!("/ip4/127.0.0.1/tcp/{}", p2p_base + i as u16),
                        api_listen: format!("127.0.0.1:{}", api_base + i as u16),
                        api_certificate: Default::default(),
                    }],
                })
                .collect(),
        }
    }
}

impl ConsortiumDescription {
    /// A consortium of `n` single-node authorities (governance, operator,
    /// then data sources), as tests and benchmarks of n validators use.
    pub fn one_node_each(name: &str, n: u16, p2p_base: u16, api_base: u16) -> Self {
        Self {
            name: name.into(),
            max_clock_skew_ms: default_skew(),
            params: ConsortiumParams::default(),
            authorities: (0..n)
                .map(|i| AuthorityDescription {
                    id: AuthorityId(format!("authority-{i}")),
                    name: format!("Authority {i}"),
                    role: match i {
                        0 => Role::Governance,
                        1 => Role::Operator,
                        _ => Role::DataSource,
                    },
                    threshold: None,
                    nodes: vec![NodeDescription {
                        name: format!("node-{i}"),
                        p2p_listen: format!("/ip4/127.0.0.1/tcp/{}", p2p_base + i),
                        api_listen: format!("127.0.0.1:{}", api_base + i),
                        api_certificate: Default::default(),
                    }],
                })
                .collect(),
        }
    }
}

/// An authority's secrets as one of its nodes holds them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthoritySecrets {
    /// The authority.
    pub id: AuthorityId,
    /// The authority's BLS group public key (48 bytes).
    pub bls_group_key: Bytes,
    /// Its BLS threshold t.
    pub bls_threshold: u16,
    /// This node's share index.
    pub bls_index: u16,
    /// This node's BLS secret share (32 bytes).
    pub bls_share: Bytes,
    /// The authority's Ed25519 secret key (32 bytes).
    pub ed25519_secret: Bytes,
    /// The authority's ML-DSA-65 seed (32 bytes).
    pub ml_dsa_seed: Bytes,
}

/// One node's secrets: its identity, its authority's keys and its share of
/// the consortium key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSecrets {
    /// Node name.
    pub node: String,
    /// Validator index.
    pub validator: u16,
    /// Digest of the genesis these keys belong to.
    pub genesis_digest: Digest,
    /// Ed25519 node identity secret (32 bytes): the libp2p key.
    pub node_secret: Bytes,
    /// This validator's consortium key share (32 bytes).
    pub consortium_share: Bytes,
    /// The authority's keys.
    pub authority: AuthoritySecrets,
}

impl std::fmt::Debug for NodeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSecrets")
            .field("node", &self.node)
            .field("validator", &self.validator)
            .field("authority", &self.authority.id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AuthoritySecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthoritySecrets")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A node's checked secrets, ready to sign.
pub struct NodeSigners {
    /// Node name.
    pub node: String,
    /// Validator index.
    pub validator: u16,
    /// Ed25519 node identity secret (for libp2p).
    pub node_secret: [u8; 32],
    /// The authority signing agent.
    pub authority: AuthoritySigner,
    /// The consortium share signer.
    pub consortium: ConsortiumSigner,
}

impl std::fmt::Debug for NodeSigners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigners")
            .field("node", &self.node)
            .field("validator", &self.validator)
            .field("authority", self.authority.authority())
            .finish_non_exhaustive()
    }
}

fn fixed<const N: usize>(what: &str, b: &Bytes) -> Result<[u8; N], String> {
    b.as_slice()
        .try_into()
        .map_err(|_| format!("{what} must be {N} bytes, found {}", b.len()))
}

impl NodeSecrets {
    /// Checks that these secrets are genesis's keys for this node (each
    /// scheme signs a probe that genesis's public keys verify) and builds
    /// the signers. The error says which key does not match.
    pub fn signers(&self, genesis: &Genesis, keyring: &KeyRing) -> Result<NodeSigners, GenesisError> {
        self.checked_signers(genesis, keyring)
            .map_err(|reason| GenesisError::Node {
                node: self.node.clone(),
                reason,
            })
    }

    fn checked_signers(&self, genesis: &Genesis, keyring: &KeyRing) -> Result<NodeSigners, String> {
        if self.genesis_digest != genesis.digest() {
            return Err("these keys belong to another genesis".into());
        }
        let record = genesis
            .nodes
            .get(usize::from(self.validator))
            .filter(|n| n.name == self.node)
            .ok_or_else(|| {
                format!(
                    "node {} is not validator {} in genesis",
                    self.node, self.validator
                )
            })?;
        let node_secret: [u8; 32] = fixed("node_secret", &self.node_secret)?;
        let node_public = ed25519_dalek::SigningKey::from_bytes(&node_secret).verifying_key();
        if node_public.as_bytes().as_slice() != record.node_key.as_slice() {
            return Err("node identity key does not match genesis".into());
        }
        let a = &self.authority;
        if a.id != record.authority || a.bls_index != record.authority_share {
            return Err("authority or share index does not match genesis".into());
        }
        let authority = AuthoritySigner::new(
            a.id.clone(),
            fixed("bls_group_key", &a.bls_group_key)?,
            a.bls_threshold,
            a.bls_index,
            fixed("bls_share", &a.bls_share)?,
            fixed("ed25519_secret", &a.ed25519_secret)?,
            fixed("ml_dsa_seed", &a.ml_dsa_seed)?,
        )
        .map_err(|e| e.to_string())?;
        let probe = b"govtune/v1/key-file-probe";
        let keys = keyring.authority(&a.id).map_err(|e| e.to_string())?;
        for scheme in SignatureScheme::ALL {
            if scheme == SignatureScheme::Bls12381 && a.bls_threshold > 0 {
                // A share alone cannot make the authority's signature:
                // check it against its public key share instead.
                let share = authority.sign_share(probe);
                let ok = <[u8; 96]>::try_from(share.share.as_slice())
                    .ok()
                    .and_then(|b| blsttc::SignatureShare::from_bytes(b).ok())
                    .is_some_and(|s| {
                        keys.bls_public_key_set()
                            .public_key_share(usize::from(share.index))
                            .verify(&s, probe)
                    });
                if !ok {
                    return Err("BLS key share does not match genesis".into());
                }
                continue;
            }
            let sig = authority.sign(scheme, probe).map_err(|e| e.to_string())?;
            keys.verify(&sig, probe)
                .map_err(|e| format!("{scheme} key does not match genesis: {e}"))?;
        }
        let consortium =
            ConsortiumSigner::new(self.validator, fixed("consortium_share", &self.consortium_share)?)
                .map_err(|e| e.to_string())?;
        if !keyring.verify_consortium_share(&consortium.sign_share(probe), probe) {
            return Err("consortium key share does not match genesis".into());
        }
        Ok(NodeSigners {
            node: self.node.clone(),
            validator: self.validator,
            node_secret,
            authority,
            consortium,
        })
    }
}

/// The dealer's output: the validated genesis, its key ring and every
/// node's secrets in validator order.
pub struct Dealt {
    /// Public genesis.
    pub genesis: Genesis,
    /// Its key ring.
    pub keyring: KeyRing,
    /// One entry per node, in validator order.
    pub nodes: Vec<NodeSecrets>,
}

impl std::fmt::Debug for Dealt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dealt")
            .field("genesis", &self.genesis.digest())
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Dealt {
    /// Every node's signers, in validator order, each checked against
    /// genesis.
    pub fn signers(&self) -> Result<Vec<NodeSigners>, GenesisError> {
        self.nodes
            .iter()
            .map(|n| n.signers(&self.genesis, &self.keyring))
            .collect()
    }
}

fn random32<R: RngCore>(rng: &mut R) -> [u8; 32] {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    b
}

/// Generates every key of the consortium and the genesis that lists them,
/// and validates the result: a description whose genesis would break a
/// rule (an authority running more than f validators, a missing role, ...)
/// is refused.
pub fn deal<R: RngCore + CryptoRng>(
    desc: &ConsortiumDescription,
    created: Timestamp,
    rng: &mut R,
) -> Result<Dealt, GenesisError> {
    let n = desc.authorities.iter().map(|a| a.nodes.len()).sum::<usize>();
    let n16 = u16::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| GenesisError::Consortium(format!("{n} nodes: need 1 to 65535")))?;
    let (f, q) = bft_parameters(n16);

    let consortium_secret = blsttc::SecretKeySet::random(usize::from(q) - 1, rng);
    let mut authorities = Vec::new();
    let mut nodes = Vec::new();
    let mut secrets = Vec::new();

    for a in &desc.authorities {
        a.id.validate()?;
        let m = a.nodes.len();
        let threshold = a.threshold.unwrap_or((m / 2) as u16);
        if usize::from(threshold) >= m.max(1) {
            return Err(GenesisError::BadKey {
                authority: a.id.clone(),
                reason: format!(
                    "threshold {threshold} needs {} nodes, it lists {m}",
                    threshold + 1
                ),
            });
        }
        let bls_secret = blsttc::SecretKeySet::random(usize::from(threshold), rng);
        let bls_public = bls_secret.public_keys();
        let pop = bls_proof_of_possession(&bls_secret.secret_key());
        let ed_secret = random32(rng);
        let ed_public = ed25519_dalek::SigningKey::from_bytes(&ed_secret).verifying_key();
        let ml_dsa_seed = random32(rng);
        authorities.push(AuthorityRecord {
            id: a.id.clone(),
            name: a.name.clone(),
            role: a.role,
            bls: BlsAuthorityKey {
                public_key_set: Bytes(bls_public.to_bytes()),
                threshold,
                proof_of_possession: Bytes(pop.to_vec()),
            },
            ed25519: Bytes(ed_public.to_bytes().to_vec()),
            ml_dsa_65: Bytes(ml_dsa_public_key(&ml_dsa_seed)),
        });
        for (share, node) in a.nodes.iter().enumerate() {
            let validator = nodes.len() as u16;
            let node_secret = random32(rng);
            let node_public = ed25519_dalek::SigningKey::from_bytes(&node_secret)
                .verifying_key()
                .to_bytes();
            nodes.push(NodeRecord {
                name: node.name.clone(),
                authority: a.id.clone(),
                validator,
                authority_share: share as u16,
                peer_id: peer_id_of_ed25519(&node_public),
                node_key: Bytes(node_public.to_vec()),
                p2p_listen: node.p2p_listen.clone(),
                api_listen: node.api_listen.clone(),
                api_certificate: node.api_certificate.clone(),
            });
            secrets.push(NodeSecrets {
                node: node.name.clone(),
                validator,
                genesis_digest: Digest::ZERO,
                node_secret: Bytes(node_secret.to_vec()),
                consortium_share: Bytes(
                    consortium_secret
                        .secret_key_share(usize::from(validator))
                        .to_bytes()
                        .to_vec(),
                ),
                authority: AuthoritySecrets {
                    id: a.id.clone(),
                    bls_group_key: Bytes(bls_public.public_key().to_bytes().to_vec()),
                    bls_threshold: threshold,
                    bls_index: share as u16,
                    bls_share: Bytes(bls_secret.secret_key_share(share).to_bytes().to_vec()),
                    ed25519_secret: Bytes(ed_secret.to_vec()),
                    ml_dsa_seed: Bytes(ml_dsa_seed.to_vec()),
                },
            });
        }
    }

    let genesis = Genesis {
        version: Genesis::VERSION,
        consortium_name: desc.name.clone(),
        created,
        max_clock_skew_ms: desc.max_clock_skew_ms,
        params: desc.params,
        authorities,
        nodes,
        consortium: ConsortiumKey {
            public_key_set: Bytes(consortium_secret.public_keys().to_bytes()),
            n: n16,
            f,
            q,
        },
    };
    let keyring = genesis.validate()?;
    let digest = genesis.digest();
    for s in &mut secrets {
        s.genesis_digest = digest;
    }
    Ok(Dealt {
        genesis,
        keyring,
        nodes: secrets,
    })
}
