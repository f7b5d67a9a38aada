//! The trusted-dealer key ceremony.

use rand::{CryptoRng, RngCore};

use provenance::crypto::{bls_proof_of_possession, ml_dsa_public_key};
use provenance::genesis::{
    bft_parameters, peer_id_of_ed25519, AuthorityRecord, BlsAuthorityKey, ConsortiumKey, NodeRecord,
};
use provenance::{Bytes, Canonical, Genesis, KeyRing, Timestamp};

use crate::files::{AuthoritySecrets, NodeKeyFile};
use crate::{ConsortiumDescription, Error, Result};

/// The ceremony's output: the public genesis, its key ring, and each node's
/// secrets with its admin token.
pub struct Ceremony {
    /// Public genesis.
    pub genesis: Genesis,
    /// Key ring of the genesis (already validated).
    pub keyring: KeyRing,
    /// One key file per node, in validator order.
    pub node_keys: Vec<NodeKeyFile>,
    /// One admin token per node (hex), in validator order.
    pub admin_tokens: Vec<String>,
}

impl std::fmt::Debug for Ceremony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ceremony")
            .field("genesis", &self.genesis.digest())
            .field("nodes", &self.node_keys.len())
            .finish_non_exhaustive()
    }
}

fn random32<R: RngCore>(rng: &mut R) -> [u8; 32] {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    b
}

/// Generates every key of the consortium and the genesis that lists them.
/// Refuses a description whose genesis would break a rule (for example an
/// authority running more than f validators).
pub fn ceremony<R: RngCore + CryptoRng>(desc: &ConsortiumDescription, created: Timestamp, rng: &mut R) -> Result<Ceremony> {
    let n = desc.authorities.iter().map(|a| a.nodes.len()).sum::<usize>();
    let n16 = u16::try_from(n).map_err(|_| Error::Description(format!("{n} nodes is too many")))?;
    if n16 == 0 {
        return Err(Error::Description("the consortium has no node".into()));
    }
    let (f, q) = bft_parameters(n16);

    let consortium_secret = blsttc::SecretKeySet::random(usize::from(q) - 1, rng);
    let mut authorities = Vec::new();
    let mut nodes = Vec::new();
    let mut node_keys = Vec::new();
    let mut admin_tokens = Vec::new();

    for a in &desc.authorities {
        let m = a.nodes.len();
        let threshold = a.threshold.unwrap_or((m / 2) as u16);
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
            let node_public = ed25519_dalek::SigningKey::from_bytes(&node_secret).verifying_key().to_bytes();
            nodes.push(NodeRecord {
                name: node.name.clone(),
                authority: a.id.clone(),
                validator,
                authority_share: share as u16,
                peer_id: peer_id_of_ed25519(&node_public),
                node_key: Bytes(node_public.to_vec()),
                p2p_listen: node.p2p_listen.clone(),
                api_listen: node.api_listen.clone(),
            });
            node_keys.push(NodeKeyFile {
                node: node.name.clone(),
                validator,
                genesis_digest: provenance::Digest::ZERO,
                node_secret: Bytes(node_secret.to_vec()),
                consortium_share: Bytes(consortium_secret.secret_key_share(usize::from(validator)).to_bytes().to_vec()),
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
            admin_tokens.push(hex::encode(random32(rng)));
        }
    }

    let genesis = Genesis {
        version: Genesis::VERSION,
        consortium_name: desc.name.clone(),
        created,
        max_clock_skew_ms: desc.max_clock_skew_ms,
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
    for k in &mut node_keys {
        k.genesis_digest = digest;
    }
    Ok(Ceremony {
        genesis,
        keyring,
        node_keys,
        admin_tokens,
    })
}
