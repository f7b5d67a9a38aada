//! Reading and writing the genesis file and the per-node secret files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use provenance::genesis::{NodeSecrets, NodeSigners};
use provenance::{Canonical, Digest, Genesis, KeyRing};

use crate::{Ceremony, Error, Result};

/// Format tag of the genesis file.
pub const GENESIS_FORMAT: &str = "govtune-genesis/v1";
/// Format tag of a node key file.
pub const NODE_KEY_FORMAT: &str = "govtune-node-key/v2";

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

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeKeyEnvelope {
    format: String,
    keys: NodeSecrets,
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
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    // The umask may have cleared bits of `mode`; set it exactly.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io(path))?;
    f.write_all(contents).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Writes `genesis.json`, and each node's `node.key` and `admin.token`
/// (0600) under `dir/nodes/<node>/`. Refuses to overwrite any file.
pub fn write_ceremony(dir: &Path, c: &Ceremony) -> Result<()> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let file = GenesisFile {
        format: GENESIS_FORMAT.into(),
        digest: c.dealt.genesis.digest(),
        genesis: c.dealt.genesis.clone(),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| format_err(dir, e))?;
    write_new(&dir.join("genesis.json"), text.as_bytes(), 0o644)?;
    for ((keys, token), tls) in c.dealt.nodes.iter().zip(&c.admin_tokens).zip(&c.api_tls) {
        let node_dir = dir.join("nodes").join(&keys.node);
        fs::create_dir_all(&node_dir).map_err(io(&node_dir))?;
        fs::set_permissions(&node_dir, fs::Permissions::from_mode(0o700)).map_err(io(&node_dir))?;
        let env = NodeKeyEnvelope {
            format: NODE_KEY_FORMAT.into(),
            keys: keys.clone(),
        };
        let text = serde_json::to_string_pretty(&env).map_err(|e| format_err(&node_dir, e))?;
        write_new(&node_dir.join("node.key"), text.as_bytes(), 0o600)?;
        write_new(
            &node_dir.join("admin.token"),
            format!("{token}\n").as_bytes(),
            0o600,
        )?;
        write_new(&node_dir.join("api.crt"), tls.certificate_pem.as_bytes(), 0o644)?;
        write_new(&node_dir.join("api.key"), tls.key_pem.as_bytes(), 0o600)?;
    }
    Ok(())
}

/// Reads a genesis file, checks its digest and every genesis rule, and
/// returns the genesis with its key ring.
pub fn load_genesis(path: &Path) -> Result<(Genesis, KeyRing)> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    let file: GenesisFile = serde_json::from_str(&text).map_err(|e| format_err(path, e))?;
    if file.format != GENESIS_FORMAT {
        return Err(format_err(
            path,
            format!("format {:?}, expected {GENESIS_FORMAT:?}", file.format),
        ));
    }
    let digest = file.genesis.digest();
    if digest != file.digest {
        return Err(Error::DigestMismatch {
            path: path.display().to_string(),
            stated: file.digest.to_string(),
            actual: digest.to_string(),
        });
    }
    let keyring = file.genesis.validate()?;
    Ok((file.genesis, keyring))
}

/// Reads a secret file, refusing one readable by group or others.
pub fn read_secret(path: &Path) -> Result<String> {
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

/// Reads a node key file (refusing one readable by group or others) and
/// checks that its keys are the ones `genesis` lists for that node.
pub fn load_node_keys(path: &Path, genesis: &Genesis, keyring: &KeyRing) -> Result<NodeSigners> {
    let text = read_secret(path)?;
    let env: NodeKeyEnvelope = serde_json::from_str(&text).map_err(|e| format_err(path, e))?;
    if env.format != NODE_KEY_FORMAT {
        return Err(format_err(
            path,
            format!("format {:?}, expected {NODE_KEY_FORMAT:?}", env.format),
        ));
    }
    env.keys
        .signers(genesis, keyring)
        .map_err(|e| format_err(path, e))
}

/// Reads a node's admin token (refusing a file readable by others).
pub fn load_admin_token(path: &Path) -> Result<String> {
    let token = read_secret(path)?.trim().to_string();
    if token.len() < 32 {
        return Err(format_err(path, "admin token is too short"));
    }
    Ok(token)
}
