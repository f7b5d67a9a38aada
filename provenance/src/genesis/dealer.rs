//! The trusted-dealer key ceremony, as a pure function of a consortium
//! description and a caller-supplied RNG; the `genesis` crate wraps it with
//! the description file and the secret files.
//!
//! The dealer generates every key, splits each multi-node authority's BLS
//! key into t-of-m shares and the consortium key into (q-1)-of-n shares
//! among the validators, gives every node its own Ed25519 and ML-DSA-65
//! keys, signs the proofs of possession and forgets the master secrets when
//! it returns. Each node's secrets hold only its own key material. Whoever
//! runs it could keep copies: see the `genesis` crate's documentation.

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use super::{
    bft_parameters, peer_id_of_ed25519, AuthorityRecord, BlsAuthorityKey, ConsortiumKey, ConsortiumParams,
    Genesis, GenesisError, NodeRecord, WitnessRecord, Witnessing,
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
    /// A signing member: it follows the chain and co-signs for its
    /// authority but never votes (default: a validator).
    #[serde(default)]
    pub signing_member: bool,
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
    /// The scheme it signs its own entries under (default BLS12-381).
    #[serde(default = "default_scheme")]
    pub scheme: SignatureScheme,
    /// Threshold t among its nodes: t+1 sign for it, under every scheme
    /// (default m / 2, so a majority of its nodes must sign).
    #[serde(default)]
    pub threshold: Option<u16>,
    /// Its nodes.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeDescription>,
}

/// A witness as described by hand: its verifier key (which holds its
/// name), as `govtune witness init` prints it, and its URL prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessDescription {
    /// `<name>+<key id>+<base64 key>` (cosignature type 0x04).
    pub key: String,
    /// Submission URL prefix.
    pub url: String,
}

/// The witnessing of a consortium as described by hand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessingDescription {
    /// The witnesses.
    #[serde(default, rename = "witness")]
    pub witnesses: Vec<WitnessDescription>,
    /// Cosignatures a light client requires (default: all witnesses).
    #[serde(default)]
    pub quorum: Option<u16>,
    /// How often (ms) nodes submit to the witnesses (default 5,000).
    #[serde(default)]
    pub interval_ms: Option<u64>,
}

impl WitnessingDescription {
    fn to_record(&self) -> Result<Witnessing, GenesisError> {
        let witnesses = self
            .witnesses
            .iter()
            .map(|w| {
                let (name, key) = crate::note::parse_verifier_key(&w.key, crate::note::COSIGNATURE_V1)
                    .map_err(|e| GenesisError::Consortium(format!("witness key {:?}: {e}", w.key)))?;
                Ok(WitnessRecord {
                    name,
                    key: Bytes(key.to_vec()),
                    url: w.url.trim_end_matches('/').to_string(),
                })
            })
            .collect::<Result<Vec<_>, GenesisError>>()?;
        Ok(Witnessing {
            quorum: self.quorum.unwrap_or(witnesses.len() as u16),
            interval_ms: self.interval_ms.unwrap_or(Witnessing::default().interval_ms),
            witnesses,
        })
    }
}

/// A consortium as described by hand (the `genesis new` input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsortiumDescription {
    /// Consortium name.
    pub name: String,
    /// The log's origin, a scheme-less URL-like name unique to this
    /// consortium (default: `govtune.invalid/<name>/<16 random hex>`).
    #[serde(default)]
    pub origin: Option<String>,
    /// Who witnesses its checkpoints (default: nobody).
    #[serde(default)]
    pub witnessing: WitnessingDescription,
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

fn default_scheme() -> SignatureScheme {
    SignatureScheme::Bls12381
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
            origin: None,
            witnessing: WitnessingDescription::default(),
            max_clock_skew_ms: default_skew(),
            params: ConsortiumParams::default(),
            authorities: authorities
                .iter()
                .enumerate()
                .map(|(i, (id, name, role))| AuthorityDescription {
                    id: AuthorityId((*id).to_string()),
                    name: (*name).into(),
                    role: *role,
                    scheme: default_scheme(),
                    threshold: None,
                    nodes: vec![NodeDescription {
                        name: format!("node-{i}"),
                        p2p_listen: format!("/ip4/127.0.0.1/tcp/{}", p2p_base + i as u16),
                        api_listen: format!("127.0.0.1:{}", api_base + i as u16),
                        signing_member: false,
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
            origin: None,
            witnessing: WitnessingDescription::default(),
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
                    scheme: default_scheme(),
                    threshold: None,
                    nodes: vec![NodeDescription {
                        name: format!("node-{i}"),
                        p2p_listen: format!("/ip4/127.0.0.1/tcp/{}", p2p_base + i),
                        api_listen: format!("127.0.0.1:{}", api_base + i),
                        signing_member: false,
                        api_certificate: Default::default(),
                    }],
                })
                .collect(),
        }
    }
}

/// One node's part of its authority's keys: nothing another node holds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthoritySecrets {
    /// The authority.
    pub id: AuthorityId,
    /// This node's share index among the authority's nodes.
    pub index: u16,
    /// This node's BLS secret share (32 bytes).
    pub bls_share: Bytes,
    /// This node's own Ed25519 secret key (32 bytes).
    pub ed25519_secret: Bytes,
    /// This node's own ML-DSA-65 seed (32 bytes).
    pub ml_dsa_seed: Bytes,
}

/// One node's secrets: its identity, its part of its authority's keys and,
/// for a validator, its share of the consortium key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSecrets {
    /// Node name.
    pub node: String,
    /// Validator index (`None`: a signing member).
    pub validator: Option<u16>,
    /// Digest of the genesis these keys belong to.
    pub genesis_digest: Digest,
    /// Ed25519 node identity secret (32 bytes): the libp2p key.
    pub node_secret: Bytes,
    /// This validator's consortium key share (32 bytes; none for a
    /// signing member).
    pub consortium_share: Option<Bytes>,
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
    /// Validator index (`None`: a signing member).
    pub validator: Option<u16>,
    /// Ed25519 node identity secret: the libp2p identity and, for a
    /// validator, its checkpoint note key.
    pub node_secret: [u8; 32],
    /// The authority signing agent.
    pub authority: AuthoritySigner,
    /// The consortium share signer (validators only).
    pub consortium: Option<ConsortiumSigner>,
}

impl NodeSigners {
    /// This validator's checkpoint note signer (`None` for a signing
    /// member).
    pub fn note_signer(&self) -> Option<crate::checkpoint::NoteSigner> {
        Some(crate::checkpoint::NoteSigner::new(
            self.validator?,
            &self.node_secret,
        ))
    }

    /// This validator's note signature over `cp`'s body (`None` for a
    /// signing member).
    pub fn sign_note(&self, cp: &crate::Checkpoint) -> Option<crate::ValidatorSignature> {
        self.note_signer().map(|s| s.sign(cp))
    }
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
            .node(&self.node)
            .filter(|n| n.validator == self.validator)
            .ok_or_else(|| match self.validator {
                Some(v) => format!("node {} is not validator {v} in genesis", self.node),
                None => format!("node {} is not a signing member in genesis", self.node),
            })?;
        let node_secret: [u8; 32] = fixed("node_secret", &self.node_secret)?;
        let node_public = ed25519_dalek::SigningKey::from_bytes(&node_secret).verifying_key();
        if node_public.as_bytes().as_slice() != record.node_key.as_slice() {
            return Err("node identity key does not match genesis".into());
        }
        let a = &self.authority;
        if a.id != record.authority || a.index != record.authority_share {
            return Err("authority or share index does not match genesis".into());
        }
        let keys = keyring.authority(&a.id).map_err(|e| e.to_string())?;
        let authority = AuthoritySigner::new(
            keys,
            a.index,
            fixed("bls_share", &a.bls_share)?,
            fixed("ed25519_secret", &a.ed25519_secret)?,
            fixed("ml_dsa_seed", &a.ml_dsa_seed)?,
        )
        .map_err(|e| e.to_string())?;
        // Each scheme's share must verify under this node's public key in
        // genesis.
        let probe = b"govtune/v1/key-file-probe";
        for scheme in SignatureScheme::ALL {
            let share = authority.sign_share(scheme, probe).map_err(|e| e.to_string())?;
            keys.verify_share(&share, probe)
                .map_err(|_| format!("{scheme} key does not match genesis"))?;
        }
        let consortium = match (self.validator, &self.consortium_share) {
            (Some(v), Some(share)) => {
                let c =
                    ConsortiumSigner::new(v, fixed("consortium_share", share)?).map_err(|e| e.to_string())?;
                if !keyring.verify_consortium_share(&c.sign_share(probe), probe) {
                    return Err("consortium key share does not match genesis".into());
                }
                Some(c)
            }
            (None, None) => None,
            (Some(_), None) => return Err("a validator needs its consortium key share".into()),
            (None, Some(_)) => return Err("a signing member holds no consortium key share".into()),
        };
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
/// node's secrets in genesis's node order.
pub struct Dealt {
    /// Public genesis.
    pub genesis: Genesis,
    /// Its key ring.
    pub keyring: KeyRing,
    /// One entry per node, in genesis's node order.
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
    /// Every node's signers, in genesis's node order, each checked against
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
    let n = desc
        .authorities
        .iter()
        .flat_map(|a| &a.nodes)
        .filter(|n| !n.signing_member)
        .count();
    let n16 = u16::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| GenesisError::Consortium(format!("{n} validators: need 1 to 65535")))?;
    let (f, q) = bft_parameters(n16);

    let consortium_secret = blsttc::SecretKeySet::random(usize::from(q) - 1, rng);
    let mut authorities = Vec::new();
    let mut nodes = Vec::new();
    let mut secrets = Vec::new();
    let mut next_validator = 0u16;

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
        let ed_secrets: Vec<[u8; 32]> = a.nodes.iter().map(|_| random32(rng)).collect();
        let ml_dsa_seeds: Vec<[u8; 32]> = a.nodes.iter().map(|_| random32(rng)).collect();
        authorities.push(AuthorityRecord {
            id: a.id.clone(),
            name: a.name.clone(),
            role: a.role,
            scheme: a.scheme,
            bls: BlsAuthorityKey {
                public_key_set: Bytes(bls_public.to_bytes()),
                threshold,
                proof_of_possession: Bytes(pop.to_vec()),
            },
            ed25519: ed_secrets
                .iter()
                .map(|s| {
                    Bytes(
                        ed25519_dalek::SigningKey::from_bytes(s)
                            .verifying_key()
                            .to_bytes()
                            .to_vec(),
                    )
                })
                .collect(),
            ml_dsa_65: ml_dsa_seeds.iter().map(|s| Bytes(ml_dsa_public_key(s))).collect(),
        });
        for (share, node) in a.nodes.iter().enumerate() {
            let validator = (!node.signing_member).then(|| {
                let v = next_validator;
                next_validator += 1;
                v
            });
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
                consortium_share: validator.map(|v| {
                    Bytes(
                        consortium_secret
                            .secret_key_share(usize::from(v))
                            .to_bytes()
                            .to_vec(),
                    )
                }),
                authority: AuthoritySecrets {
                    id: a.id.clone(),
                    index: share as u16,
                    bls_share: Bytes(bls_secret.secret_key_share(share).to_bytes().to_vec()),
                    ed25519_secret: Bytes(ed_secrets[share].to_vec()),
                    ml_dsa_seed: Bytes(ml_dsa_seeds[share].to_vec()),
                },
            });
        }
    }

    let origin = match &desc.origin {
        Some(o) => o.clone(),
        None => {
            let name: String = desc
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .take(64)
                .collect();
            let mut tag = [0u8; 8];
            rng.fill_bytes(&mut tag);
            format!(
                "govtune.invalid/{}/{}",
                if name.is_empty() { "log" } else { &name },
                hex::encode(tag)
            )
        }
    };
    let genesis = Genesis {
        version: Genesis::VERSION,
        consortium_name: desc.name.clone(),
        origin,
        witnessing: desc.witnessing.to_record()?,
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
