//! `govtune campaign run --testnet DIR`: the operator's campaign on a local
//! testnet, this command also playing the other authorities' tools: it
//! registers the policy at the governance node and each source at its
//! data-source authority's node (their admin tokens are in DIR), shifting
//! the file's validity windows so that its clock start is "now".

use std::path::Path;
use std::time::Duration;

use provenance::{Canonical, Digest, PolicyArtifact};
use roles::campaign::{
    fine_tune_spec, prepare_sources, shift_windows, signed_source, HttpSink, PreparedManifest, WallClock,
};
use roles::now_ms;
use tuner::campaign::{CampaignOutcome, CampaignSpec, Progress};
use tuner::demo::DemoConfig;
use tuner::model::Weights;

use crate::{Testnet, TestnetError};

/// The testnet node run by `authority`.
pub fn node_of(t: &Testnet, authority: &str) -> Result<usize, TestnetError> {
    t.nodes
        .iter()
        .position(|n| n.authority == authority)
        .ok_or_else(|| TestnetError::Run(format!("no node of authority {authority} in the testnet")))
}

/// Every testnet node run by `authority`.
pub fn nodes_of(t: &Testnet, authority: &str) -> Vec<usize> {
    (0..t.nodes.len())
        .filter(|&i| t.nodes[i].authority == authority)
        .collect()
}

/// Each rights-holder registers its manifest at its own nodes (each of an
/// authority's nodes signs only what its own tools submitted, and one of
/// several signs with t others: the tools submit to every node that
/// answers); returns the entries' digests (not yet committed).
pub fn register_sources(t: &Testnet, prepared: &[PreparedManifest]) -> Result<Vec<Digest>, TestnetError> {
    let mut ids = Vec::new();
    for p in prepared {
        let mut digest = None;
        let mut last = None;
        for ds in nodes_of(t, p.manifest.authority.as_str()) {
            match t.admin(ds)?.submit("/v1/sources", &p.manifest) {
                Ok(a) => digest = Some(a.digest),
                Err(e) => last = Some(e),
            }
        }
        match (digest, last) {
            (Some(d), _) => ids.push(d),
            (None, Some(e)) => return Err(e.into()),
            (None, None) => {
                return Err(TestnetError::Run(format!(
                    "no node of authority {} in the testnet",
                    p.manifest.authority
                )))
            }
        }
    }
    Ok(ids)
}

/// Each rights-holder hands its own node the package of each of its
/// sources (`own_sources`, 0600), from which the node replays its
/// examples when an audit ticket selects a record.
pub fn write_packages(t: &Testnet, prepared: &[PreparedManifest]) -> Result<(), TestnetError> {
    for p in prepared {
        let text = tuner::package::Package::encode(&p.manifest, &p.text, &p.salt)?;
        for ds in nodes_of(t, p.manifest.authority.as_str()) {
            let dir = t.dir.join("nodes").join(&t.nodes[ds].name).join("sources");
            std::fs::create_dir_all(&dir).map_err(|e| TestnetError::Io(format!("{}: {e}", dir.display())))?;
            let path = dir.join(format!("{}.package", p.manifest.source_id().to_hex()));
            let _ = std::fs::remove_file(&path);
            genesis::write_new(&path, text.as_bytes(), 0o600).map_err(|e| TestnetError::Io(e.to_string()))?;
        }
    }
    Ok(())
}

/// Governance publishes `policy` at its node; returns its digest.
pub fn publish_policy(t: &Testnet, policy: &PolicyArtifact) -> Result<Digest, TestnetError> {
    let gov = node_of(t, policy.authority.as_str())?;
    let a = t.admin(gov)?.submit("/v1/policies", policy)?;
    Ok(a.digest)
}

/// Writes into `dir` the campaign file `data/campaign.toml` of the folder
/// `data`, cut to `steps` steps, its paths made absolute and then changed
/// by `edit` (tests' variants of the demo's campaign); returns its path.
pub fn short_campaign(
    data: &Path,
    dir: &Path,
    steps: u64,
    edit: impl Fn(String) -> String,
) -> Result<std::path::PathBuf, TestnetError> {
    let io = |e: std::io::Error| TestnetError::Io(e.to_string());
    let text = std::fs::read_to_string(data.join("campaign.toml")).map_err(io)?;
    let cut = format!("max_steps = {steps}");
    let text = text
        .replace("max_steps = 200", &cut)
        .replace("path = \"", &format!("path = \"{}/", data.display()))
        .replace(
            "base_weights = \"",
            &format!("base_weights = \"{}/", data.display()),
        )
        .replace("probe = \"", &format!("probe = \"{}/", data.display()));
    if !text.contains(&cut) {
        return Err(TestnetError::Io(
            "the campaign file changed shape (no max_steps = 200)".into(),
        ));
    }
    let config = dir.join("campaign.toml");
    std::fs::write(&config, edit(text)).map_err(io)?;
    Ok(config)
}

/// Runs the campaign in `config` against the operator node of the testnet
/// in `testnet_dir`, registering its policy and sources first.
pub fn run_on_testnet(
    config: &Path,
    testnet_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<CampaignOutcome, TestnetError> {
    let (spec, mut sink) = open_on_testnet(config, testnet_dir)?;
    println!("campaign {} opens", spec.campaign.digest().short());
    Ok(tuner::campaign::run(
        spec,
        Box::new(WallClock),
        &mut sink,
        progress,
    )?)
}

/// Everything [`run_on_testnet`] does before the campaign opens: the
/// policy and sources registered and committed, the recipe and base
/// weights put at the operator's node; returns the campaign's spec and the
/// sink to its node (the `Campaign` record not yet submitted).
pub fn open_on_testnet(config: &Path, testnet_dir: &Path) -> Result<(CampaignSpec, HttpSink), TestnetError> {
    let mut cfg = DemoConfig::load(config)?;
    let t = Testnet::load(testnet_dir)?;
    let (_, keyring) = genesis::load_genesis(&t.genesis_path())?;
    let now = now_ms();
    shift_windows(&mut cfg, now);
    let op = node_of(&t, &cfg.operator)?;
    let reader = t.client(op);
    let wait = Duration::from_secs(120);
    // Governance publishes the policy; each rights-holder registers its sources.
    let policy_id = publish_policy(&t, &cfg.policy)?;
    let window = cfg.settings.model.window();
    let prepared = prepare_sources(&cfg.sources, &cfg.canaries, window, cfg.consortium_seed)?;
    write_packages(&t, &prepared)?;
    let mut ids = register_sources(&t, &prepared)?;
    ids.push(policy_id);
    reader.wait_committed(&ids, wait)?;
    let sources = prepared
        .into_iter()
        .map(|p| signed_source(&reader, p).map_err(TestnetError::from))
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "policy {} and {} sources committed",
        policy_id.short(),
        sources.len()
    );
    let base_path = cfg
        .base_weights
        .clone()
        .ok_or_else(|| TestnetError::Run("the campaign file names no base_weights".into()))?;
    let base_bytes =
        std::fs::read(&base_path).map_err(|e| TestnetError::Io(format!("{}: {e}", base_path.display())))?;
    let base = Weights::from_safetensors(cfg.settings.model, &base_bytes)?;
    let mut sink = HttpSink::new(t.admin(op)?);
    let spec = fine_tune_spec(
        &cfg,
        &mut sink,
        keyring,
        &base_bytes,
        base,
        None,
        sources,
        Vec::new(),
        now,
    )?;
    Ok((spec, sink))
}
