//! The operator's campaign against its own node, across machines: the
//! sources come from the rights-holders' packages (text and salt, checked
//! against the manifest), their signatures from the ledger, the policy
//! from the file governance published.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use lightclient::client::Client;
use provenance::{Canonical, KeyRing};
use tuner::campaign::{CampaignOutcome, Progress, TrainSettings};
use tuner::data::SignedSource;
use tuner::model::Weights;

use crate::campaign::{campaign_spec, probe_of, signature_of, CampaignParts, HttpSink, WallClock};
use crate::source::Package;
use crate::{now_ms, policy, RolesError};

/// The operator's campaign file (TOML; paths relative to it).
///
/// ```toml
/// name = "plays-lora"
/// operator = "tuning-lab"
/// purpose = "research"
/// base_weights = "model.safetensors"
/// policy = "policy.toml"          # the policy governance published
/// probe = "sonnets.txt"           # held-out text for memorisation probes
/// probe_windows = 8
/// [settings]                      # as in data/campaign.toml
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorCampaign {
    /// Campaign name.
    pub name: String,
    /// The operator authority (the node's).
    pub operator: String,
    /// Purpose.
    pub purpose: String,
    /// The base model (safetensors).
    pub base_weights: PathBuf,
    /// The committed policy's file.
    pub policy: PathBuf,
    /// Held-out probe text.
    pub probe: PathBuf,
    /// Probe windows.
    #[serde(default = "default_probe_windows")]
    pub probe_windows: usize,
    /// Training settings.
    pub settings: TrainSettings,
}

fn default_probe_windows() -> usize {
    8
}

impl OperatorCampaign {
    /// Reads a campaign file, resolving its paths against its folder.
    pub fn load(path: &Path) -> Result<Self, RolesError> {
        let text = std::fs::read_to_string(path).map_err(|e| RolesError::io(path, e))?;
        let mut c: OperatorCampaign =
            toml::from_str(&text).map_err(|e| RolesError::Config(format!("{}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.base_weights, &mut c.policy, &mut c.probe] {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        Ok(c)
    }
}

/// Each package as a signed source: its manifest must be committed (the
/// signature is the ledger's); the tuner checks its cut against the
/// model's windows.
pub fn sources_from(node: &Client, packages: Vec<Package>) -> Result<Vec<SignedSource>, RolesError> {
    packages
        .into_iter()
        .map(|p| {
            let id = p.manifest.source_id();
            let signature = signature_of(node, &id)?.ok_or_else(|| {
                RolesError::Ledger(format!(
                    "source {:?} ({id}) is not on the ledger",
                    p.manifest.title
                ))
            })?;
            Ok(SignedSource {
                manifest: p.manifest,
                signature,
                text: p.text,
                salt: p.salt,
            })
        })
        .collect()
}

/// Runs the campaign of `file` through `node` (the operator's own, with
/// its admin token) over the packages' sources.
pub fn run(
    node: Client,
    keyring: KeyRing,
    file: &OperatorCampaign,
    packages: Vec<Package>,
    progress: &mut dyn Progress,
) -> Result<CampaignOutcome, RolesError> {
    if packages.is_empty() {
        return Err(RolesError::Config(
            "no source package: the operator trains only on sources whose text and salt it holds".into(),
        ));
    }
    let policy = policy::load(&file.policy)?;
    let window = file.settings.model.window();
    let sources = sources_from(&node, packages)?;
    let base_bytes = std::fs::read(&file.base_weights).map_err(|e| RolesError::io(&file.base_weights, e))?;
    let base = Weights::from_safetensors(file.settings.model, &base_bytes)?;
    let mut sink = HttpSink::new(node);
    let parts = CampaignParts {
        name: &file.name,
        operator: &file.operator,
        purpose: &file.purpose,
        settings: &file.settings,
        policy: &policy,
        probe: probe_of(&file.probe, window, file.probe_windows)?,
        canaries: Vec::new(),
    };
    let spec = campaign_spec(
        parts,
        &mut sink,
        keyring,
        &base_bytes,
        base,
        None,
        sources,
        Vec::new(),
        now_ms(),
    )?;
    println!(
        "campaign {} opens under policy {}",
        spec.campaign.digest(),
        policy.digest()
    );
    Ok(tuner::campaign::run(
        spec,
        Box::new(WallClock),
        &mut sink,
        progress,
    )?)
}
