//! Governance's tools: publish a policy, supersede one.

use std::path::Path;

use provenance::{Digest, PolicyArtifact};

use crate::RolesError;

/// Reads a policy file (TOML: the fields of [`PolicyArtifact`], as in the
/// `[policy]` table of `data/campaign.toml`).
pub fn load(path: &Path) -> Result<PolicyArtifact, RolesError> {
    let text = std::fs::read_to_string(path).map_err(|e| RolesError::io(path, e))?;
    let p: PolicyArtifact =
        toml::from_str(&text).map_err(|e| RolesError::Config(format!("{}: {e}", path.display())))?;
    Ok(p)
}

fn checked(p: PolicyArtifact) -> Result<PolicyArtifact, RolesError> {
    provenance::Canonical::check(&p).map_err(|e| RolesError::Config(format!("the policy: {e}")))?;
    Ok(p)
}

/// A first policy: it supersedes none and is version 1.
pub fn first(p: PolicyArtifact) -> Result<PolicyArtifact, RolesError> {
    if p.supersedes.is_some() || p.policy_version != 1 {
        return Err(RolesError::Config(
            "a published policy is policy_version 1 and supersedes none (use `policy supersede` for a later one)"
                .into(),
        ));
    }
    checked(p)
}

/// `p` superseding `old`: its `supersedes` is set to `old` (a file naming
/// another policy is refused) and its version must be above 1.
pub fn superseding(mut p: PolicyArtifact, old: Digest) -> Result<PolicyArtifact, RolesError> {
    match p.supersedes {
        Some(d) if d != old => return Err(RolesError::Config(format!("the file supersedes {d}, not {old}"))),
        _ => p.supersedes = Some(old),
    }
    if p.policy_version < 2 {
        return Err(RolesError::Config(
            "a superseding policy has policy_version 2 or more".into(),
        ));
    }
    checked(p)
}
