//! Reading and writing the genesis file and the per-node secret files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use provenance::crypto::{AuthoritySigner, ConsortiumSigner};
use provenance::{AuthorityId, Bytes, Canonical, Digest, Genesis, KeyRing};

use crate::{Ceremony, Error, Result};

/// Format tag of the genesis file.
pub const GENESIS_FORMAT: &str = "govtune-genesis/v1";
/// Format tag of a node key file.
pub const NODE_KEY_FORMAT: &str = "govtune-node-key/v1";

/// The genesis file: the genesis and its digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    /// Always [`GENESIS_FORMAT`].
    pub format: String,
    /// `genesis.digest()`; checked on load.
    pub digest: Digest,
    /// The genesis.
    pub genesis: Genesis,
}

/// An authority's secrets as one of its nodes holds them.
#[derive(Clone, Serialize, Deserialize)]
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

/// One node's secret key file.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeKeyFile {
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

impl std::fmt::Debug for NodeKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKeyFile")
            .field("node", &self.node)
            .field("validator", &self.validator)
            .field("authority", &self.authority.id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AuthoritySecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthoritySecrets").field("id", &self.id).finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeKeyEnvelope {
    format: String,
    keys: NodeKeyFile,
}

/// A node's loaded, checked secrets, ready to sign.
pub struct NodeKeys {
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

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKeys")
            .field("node", &self.node)
            .field("validator", &self.validator)
            .field("authority", self.authority.authority())
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn format_err(path: &Path, reason: impl ToString) -> Error {
    Error::Format {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Creates a new file with `mode` from the start (never a window in which
/// a secret is world-readable) and refuses to overwrite an existing one.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    // The umask may have cleared bits of `mode`; set it exactly.
    f.set_permissions(fs::Permissions::from_mode(mode)).map_err(io(path))?;
    f.write_all(contents).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Writes `genesis.json`, and each node's `node.key` and `admin.token`
/// (0600) under `dir/nodes/<node>/`. Refuses to overwrite any file.
pub fn write_ceremony(dir: &Path, c: &Ceremony) -> Result<()> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let file = GenesisFile {
        format: GENESIS_FORMAT.into(),
        digest: c.genesis.digest(),
        genesis: c.genesis.clone(),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| format_err(dir, e))?;
    write_new(&dir.join("genesis.json"), text.as_bytes(), 0o644)?;
    for (keys, token) in c.node_keys.iter().zip(&c.admin_tokens) {
        let node_dir = dir.join("nodes").join(&keys.node);
        fs::create_dir_all(&node_dir).map_err(io(&node_dir))?;
        fs::set_permissions(&node_dir, fs::Permissions::from_mode(0o700)).map_err(io(&node_dir))?;
        let env = NodeKeyEnvelope {
            format: NODE_KEY_FORMAT.into(),
            keys: keys.clone(),
        };
        let text = serde_json::to_string_pretty(&env).map_err(|e| format_err(&node_dir, e))?;
        write_new(&node_dir.join("node.key"), text.as_bytes(), 0o600)?;
        write_new(&node_dir.join("admin.token"), format!("{token}\n").as_bytes(), 0o600)?;
    }
    Ok(())
}

/// Reads a genesis file, checks its digest and every genesis rule, and
/// returns the genesis with its key ring.
pub fn load_genesis(path: &Path) -> Result<(Genesis, KeyRing)> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    let file: GenesisFile = serde_json::from_str(&text).map_err(|e| format_err(path, e))?;
    if file.format != GENESIS_FORMAT {
        return Err(format_err(path, format!("format {:?}, expected {GENESIS_FORMAT:?}", file.format)));
    }
    let digest = file.genesis.digest();
    if digest != file.digest {
        return Err(format_err(
            path,
            format!("digest mismatch: the file says {}, its content hashes to {digest}", file.digest),
        ));
    }
    let keyring = file.genesis.validate()?;
    Ok((file.genesis, keyring))
}

fn read_secret(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Permissions {
            path: path.display().to_string(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(io(path))
}

fn fixed<const N: usize>(path: &Path, what: &str, b: &Bytes) -> Result<[u8; N]> {
    b.as_slice()
        .try_into()
        .map_err(|_| format_err(path, format!("{what} must be {N} bytes, found {}", b.len())))
}

/// Reads a node key file (refusing one readable by group or others), checks
/// it belongs to `genesis` and that its keys are the ones genesis lists.
pub fn load_node_keys(path: &Path, genesis: &Genesis, keyring: &KeyRing) -> Result<NodeKeys> {
    let text = read_secret(path)?;
    let env: NodeKeyEnvelope = serde_json::from_str(&text).map_err(|e| format_err(path, e))?;
    if env.format != NODE_KEY_FORMAT {
        return Err(format_err(path, format!("format {:?}, expected {NODE_KEY_FORMAT:?}", env.format)));
    }
    let k = env.keys;
    if k.genesis_digest != genesis.digest() {
        return Err(format_err(path, "these keys belong to another genesis"));
    }
    let record = genesis
        .nodes
        .get(usize::from(k.validator))
        .filter(|n| n.name == k.node)
        .ok_or_else(|| format_err(path, format!("node {} is not validator {} in genesis", k.node, k.validator)))?;
    let node_secret: [u8; 32] = fixed(path, "node_secret", &k.node_secret)?;
    let node_public = ed25519_dalek::SigningKey::from_bytes(&node_secret).verifying_key();
    if node_public.as_bytes().as_slice() != record.node_key.as_slice() {
        return Err(format_err(path, "node identity key does not match genesis"));
    }
    let a = &k.authority;
    if a.id != record.authority || a.bls_index != record.authority_share {
        return Err(format_err(path, "authority or share index does not match genesis"));
    }
    let authority = AuthoritySigner::new(
        a.id.clone(),
        fixed(path, "bls_group_key", &a.bls_group_key)?,
        a.bls_threshold,
        a.bls_index,
        fixed(path, "bls_share", &a.bls_share)?,
        fixed(path, "ed25519_secret", &a.ed25519_secret)?,
        fixed(path, "ml_dsa_seed", &a.ml_dsa_seed)?,
    )
    .map_err(|e| format_err(path, e))?;
    // Prove the keys are genesis's by signing and verifying a probe with
    // each scheme the node can sign alone.
    let probe = b"govtune/v1/key-file-probe";
    let keys = keyring.authority(&a.id).map_err(|e| format_err(path, e))?;
    for scheme in provenance::SignatureScheme::ALL {
        let sig = if scheme == provenance::SignatureScheme::Bls12381 && a.bls_threshold > 0 {
            // A share alone cannot make the authority's signature: check it
            // against its public key share instead.
            let share = authority.sign_share(probe);
            let ok = <[u8; 96]>::try_from(share.share.as_slice())
                .ok()
                .and_then(|b| blsttc::SignatureShare::from_bytes(b).ok())
                .is_some_and(|s| {
                    keys.bls_public_key_set().public_key_share(usize::from(share.index)).verify(&s, probe)
                });
            if !ok {
                return Err(format_err(path, "BLS key share does not match genesis"));
            }
            continue;
        } else {
            authority.sign(scheme, probe).map_err(|e| format_err(path, e))?
        };
        keys.verify(&sig, probe)
            .map_err(|e| format_err(path, format!("{scheme} key does not match genesis: {e}")))?;
    }
    let consortium = ConsortiumSigner::new(k.validator, fixed(path, "consortium_share", &k.consortium_share)?)
        .map_err(|e| format_err(path, e))?;
    if !keyring.verify_consortium_share(&consortium.sign_share(probe), probe) {
        return Err(format_err(path, "consortium key share does not match genesis"));
    }
    Ok(NodeKeys {
        node: k.node,
        validator: k.validator,
        node_secret,
        authority,
        consortium,
    })
}

/// Reads a node's admin token (refusing a file readable by others).
pub fn load_admin_token(path: &Path) -> Result<String> {
    let token = read_secret(path)?.trim().to_string();
    if token.len() < 32 {
        return Err(format_err(path, "admin token is too short"));
    }
    Ok(token)
}
