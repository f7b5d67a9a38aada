//! What a verifier remembers between runs (`--state DIR`): the newest
//! checkpoint it accepted per consortium. Every later run must be
//! consistent with it and may not fall back to an older one, so a node
//! cannot answer from an old (genuinely certified) checkpoint, nor show
//! one verifier two logs over time.

use std::path::{Path, PathBuf};

use provenance::api::CheckpointAnswer;
use provenance::{Digest, SignedCheckpoint};
use serde::{Deserialize, Serialize};

use crate::light::{LightClient, VerifyError};

/// Format tag of a state file.
pub const STATE_FORMAT: &str = "govtune-verifier-state/v4";

/// Just the format tag, read first so an old file is named as such.
#[derive(Deserialize)]
struct Tag {
    format: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    genesis: Digest,
    checkpoint: CheckpointAnswer,
}

/// The state of one consortium (one genesis) in a state folder.
#[derive(Debug)]
pub struct TrustState {
    path: PathBuf,
    genesis: Digest,
    held: Option<SignedCheckpoint>,
}

fn input(path: &Path, e: impl std::fmt::Display) -> VerifyError {
    VerifyError::Input(format!("{}: {e}", path.display()))
}

impl TrustState {
    /// Opens (creating `dir` if needed) the state of the consortium whose
    /// genesis digest is `genesis`; the checkpoint held, if any, is checked
    /// under genesis again.
    pub fn open(dir: &Path, genesis: Digest, light: &LightClient) -> Result<Self, VerifyError> {
        std::fs::create_dir_all(dir).map_err(|e| input(dir, e))?;
        let path = dir.join(format!("{}.json", genesis.to_hex()));
        let held = match std::fs::read(&path) {
            Ok(bytes) => {
                let tag: Tag = serde_json::from_slice(&bytes).map_err(|e| input(&path, e))?;
                if ["v1", "v2", "v3"]
                    .map(|v| format!("govtune-verifier-state/{v}"))
                    .contains(&tag.format)
                {
                    return Err(input(
                        &path,
                        format!(
                            "a {} file holds a checkpoint of an earlier format (without \
                             validators' note signatures), which this consortium no longer \
                             signs: remove it to start afresh",
                            tag.format
                        ),
                    ));
                }
                let f: StateFile = serde_json::from_slice(&bytes).map_err(|e| input(&path, e))?;
                if f.format != STATE_FORMAT || f.genesis != genesis {
                    return Err(input(
                        &path,
                        format!("not a {STATE_FORMAT} file of genesis {genesis}"),
                    ));
                }
                Some(light.signed_from_answer(&f.checkpoint)?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(input(&path, e)),
        };
        Ok(Self { path, genesis, held })
    }

    /// The checkpoint held.
    pub fn held(&self) -> Option<&SignedCheckpoint> {
        self.held.as_ref()
    }

    /// Holds `cp` from now on if it is newer than the one held (the caller
    /// has checked that it extends it); written atomically (a temporary
    /// file renamed over the old one).
    pub fn advance(&mut self, cp: &SignedCheckpoint) -> Result<bool, VerifyError> {
        if self
            .held
            .as_ref()
            .is_some_and(|h| h.checkpoint.size >= cp.checkpoint.size)
        {
            return Ok(false);
        }
        let f = StateFile {
            format: STATE_FORMAT.into(),
            genesis: self.genesis,
            checkpoint: CheckpointAnswer::new(cp, Vec::new(), String::new()),
        };
        let text = serde_json::to_vec_pretty(&f).map_err(|e| input(&self.path, e))?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| input(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| input(&self.path, e))?;
        self.held = Some(cp.clone());
        Ok(true)
    }
}
