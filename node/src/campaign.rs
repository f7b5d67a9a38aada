//! `govtune campaign run`: the operator's tuner driving a campaign against
//! its node. Entries go to the node's API ([`HttpSink`]), which signs the
//! operator's section, gathers the other authorities' signatures and
//! commits them; the tuner waits for each verdict (committed, or refused
//! by a co-signer with the reason) before the next step, so a refusal
//! stops the campaign at its last committed step.
//!
//! The campaign file is the tuner's (`data/campaign.toml`). With
//! `--testnet DIR` this command also plays the other authorities' tools on
//! a local testnet: it registers the policy at the governance node and each
//! source at its data-source authority's node (their admin tokens are in
//! DIR), shifting the file's validity windows so that its clock start is
//! "now". Without it, the sources and policy must already be committed: the
//! operator recomputes each manifest from the text and salt the
//! rights-holder gave it and takes the signature from the ledger.

use std::path::Path;
use std::time::{Duration, Instant};

use provenance::crypto::CoSignature;
use provenance::{Attestation, AuthorityId, Canonical, Digest, EntryBody, Purpose, Timestamp};
use serde_json::Value;
use testnet::{Client, Testnet};
use tuner::campaign::{build_campaign, CampaignOutcome, CampaignSpec, Clock, Progress, ProgressInfo};
use tuner::data::{manifest_for, plant_canary, SignedSource};
use tuner::demo::DemoConfig;
use tuner::model::Weights;
use tuner::recipe::Recipe;
use tuner::sink::{EventSink, Verdict};

use crate::runtime::now_ms;

/// The wall clock (the node checks step times against its own).
#[derive(Debug, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&mut self) -> Timestamp {
        Timestamp(now_ms())
    }
}

/// Entries and blobs through the operator node's API.
#[derive(Debug)]
pub struct HttpSink {
    node: Client,
    timeout: Duration,
    /// Entries committed through this sink.
    pub committed: u64,
}

impl HttpSink {
    /// A sink writing to `node` (which carries the operator's admin token).
    pub fn new(node: Client) -> Self {
        Self {
            node,
            timeout: Duration::from_secs(120),
            committed: 0,
        }
    }
}

fn sink_err(e: impl std::fmt::Display) -> tuner::error::TunerError {
    tuner::error::TunerError::Sink(e.to_string())
}

impl EventSink for HttpSink {
    fn put_blob(&mut self, digest: &Digest, bytes: &[u8]) -> tuner::error::Result<()> {
        let d = self.node.put_blob(bytes).map_err(sink_err)?;
        if &d != digest {
            return Err(sink_err(format!("blob digest {d} is not the tuner's {digest}")));
        }
        Ok(())
    }

    fn submit(&mut self, body: &EntryBody) -> tuner::error::Result<Verdict> {
        let a = match body {
            EntryBody::Campaign(c) => self.node.post("/v1/campaigns", c),
            b => self.node.submit_event(b),
        }
        .map_err(sink_err)?;
        let digest = testnet::client::digest_field(&a.body, "digest").map_err(sink_err)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let s = self.node.status(&digest).map_err(sink_err)?;
            match s.body["status"].as_str() {
                Some("committed") => {
                    self.committed += 1;
                    return Ok(Verdict::Committed);
                }
                Some("refused") => {
                    return Ok(Verdict::Refused {
                        reason: format!(
                            "{} refused: {}",
                            s.body["by"].as_str().unwrap_or("?"),
                            s.body["reason"].as_str().unwrap_or("?")
                        ),
                    })
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(sink_err(format!(
                    "entry {digest} neither committed nor refused in time"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A live progress bar: step, loss, admitted, refused, rolled back,
/// committed entries and their rate. Without a terminal (CI, logs) it
/// prints a line every few seconds instead.
#[derive(Debug)]
pub struct BarProgress {
    bar: Option<indicatif::ProgressBar>,
    last_line: f64,
}

impl BarProgress {
    /// A bar over `steps` attempted steps.
    pub fn new(steps: u64) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(steps);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        Self { bar, last_line: 0.0 }
    }

    /// Finishes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

impl Progress for BarProgress {
    fn update(&mut self, i: &ProgressInfo) {
        let msg = format!(
            "step {} loss {:.3} admitted {} refused {} rolled back {} committed {} ({:.1} events/s)",
            i.step,
            i.loss,
            i.admitted,
            i.refused,
            i.rolled_back,
            i.events,
            i.events as f64 / i.elapsed.max(1e-9)
        );
        match &self.bar {
            Some(b) => {
                b.set_position(i.attempts);
                b.set_message(msg);
            }
            None if i.elapsed - self.last_line >= 5.0 => {
                self.last_line = i.elapsed;
                println!("{msg}");
            }
            None => {}
        }
    }
}

fn salt(seed: u64, i: usize) -> [u8; 32] {
    provenance::digest::tagged_hash_parts(
        provenance::ObjectKind::Blob,
        &[
            b"node-campaign-salt",
            &seed.to_be_bytes(),
            &(i as u64).to_be_bytes(),
        ],
    )
    .0
}

fn signature_of(node: &Client, id: &Digest) -> Result<Option<CoSignature>, String> {
    let v: Value = match node.get(&format!("/v1/sources/{}", id.to_hex())) {
        Ok(a) => a.body,
        Err(testnet::ClientError::Status { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let leaf = v["leaf"]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .ok_or("source answer without its leaf")?;
    let e: provenance::LedgerEntry = provenance::decode(&leaf).map_err(|e| e.to_string())?;
    match e.attestation {
        Attestation::Authorities(c) => Ok(Some(c)),
        Attestation::Consortium(_) => Err("a manifest with a consortium signature".into()),
    }
}

/// Runs the campaign in `config` against the operator node of the testnet
/// in `testnet_dir`, registering its policy and sources first.
pub fn run_on_testnet(
    config: &Path,
    testnet_dir: &Path,
    progress: &mut dyn Progress,
) -> Result<CampaignOutcome, String> {
    let mut cfg = DemoConfig::load(config).map_err(|e| e.to_string())?;
    let t = Testnet::load(testnet_dir).map_err(|e| e.to_string())?;
    let (_, keyring) = genesis::load_genesis(&t.genesis_path()).map_err(|e| e.to_string())?;
    let now = now_ms();
    // The file's clock starts at `start_ms`; the ledger's is now.
    let offset = i128::from(now) - i128::from(cfg.start_ms);
    let shift = |ms: u64| u64::try_from((i128::from(ms) + offset).max(0)).unwrap_or(u64::MAX);
    for s in cfg.sources.iter_mut() {
        s.terms.not_before = shift(s.terms.not_before);
        s.terms.not_after = shift(s.terms.not_after);
    }
    let node_of = |authority: &str| -> Result<usize, String> {
        t.nodes
            .iter()
            .position(|n| n.authority == authority)
            .ok_or_else(|| format!("no node of authority {authority} in the testnet"))
    };
    let op = node_of(&cfg.operator)?;
    let reader = t.client(op);
    let wait = Duration::from_secs(120);
    // Governance publishes the policy.
    let gov = node_of(cfg.policy.authority.as_str())?;
    let a = t
        .admin(gov)
        .map_err(|e| e.to_string())?
        .post("/v1/policies", &cfg.policy)
        .map_err(|e| e.to_string())?;
    let policy_id = testnet::client::digest_field(&a.body, "digest").map_err(|e| e.to_string())?;
    // Each rights-holder registers its sources.
    let window = cfg.settings.model.window();
    let mut prepared = Vec::new();
    let mut ids = vec![policy_id];
    for (i, e) in cfg.sources.iter().enumerate() {
        let mut text = std::fs::read(&e.path).map_err(|err| format!("{}: {err}", e.path.display()))?;
        text.truncate(e.max_bytes);
        if let Some(p) = cfg.canary.as_ref().filter(|p| p.source == i) {
            if plant_canary(&mut text, window, &p.canary.text(), p.every, p.offset).is_empty() {
                return Err("the canary does not fit the windows".into());
            }
        }
        let salt = salt(cfg.consortium_seed, i);
        let manifest = manifest_for(&text, window, &salt, &e.terms).map_err(|e| e.to_string())?;
        let ds = node_of(&e.terms.authority)?;
        let a = t
            .admin(ds)
            .map_err(|e| e.to_string())?
            .post("/v1/sources", &manifest)
            .map_err(|e| e.to_string())?;
        ids.push(testnet::client::digest_field(&a.body, "digest").map_err(|e| e.to_string())?);
        prepared.push((manifest, text, salt));
    }
    reader.wait_committed(&ids, wait).map_err(|e| e.to_string())?;
    let mut sources = Vec::new();
    for (manifest, text, salt) in prepared {
        let signature = signature_of(&reader, &manifest.source_id())?
            .ok_or_else(|| format!("source {} is not on the ledger", manifest.title))?;
        sources.push(SignedSource {
            manifest,
            signature,
            text,
            salt,
        });
    }
    println!(
        "policy {} and {} sources committed",
        policy_id.short(),
        sources.len()
    );
    let base_path = cfg
        .base_weights
        .clone()
        .ok_or("the campaign file names no base_weights")?;
    let base_bytes = std::fs::read(&base_path).map_err(|e| format!("{}: {e}", base_path.display()))?;
    let base = Weights::from_safetensors(cfg.settings.model, &base_bytes).map_err(|e| e.to_string())?;
    // The recipe and the base weights go to the operator's node as blobs:
    // whoever traces or rebuilds the campaign fetches them by the digest the
    // campaign record carries.
    let recipe = Recipe::new(cfg.settings.clone(), &base_bytes);
    let mut sink = HttpSink::new(t.admin(op).map_err(|e| e.to_string())?);
    sink.put_blob(&recipe.base_weights, &base_bytes)
        .map_err(|e| e.to_string())?;
    sink.put_blob(&recipe.digest(), &recipe.to_bytes())
        .map_err(|e| e.to_string())?;
    let probe_text = std::fs::read(&cfg.probe).map_err(|e| format!("{}: {e}", cfg.probe.display()))?;
    let probe: Vec<Vec<u8>> = probe_text
        .chunks_exact(window)
        .take(cfg.probe_windows)
        .map(|c| c.to_vec())
        .collect();
    let operator = AuthorityId::new(cfg.operator.clone()).map_err(|e| e.to_string())?;
    let purpose = Purpose::new(cfg.purpose.clone()).map_err(|e| e.to_string())?;
    let mut campaign = build_campaign(
        &cfg.settings,
        &cfg.policy,
        operator,
        &format!("{}-{now}", cfg.name),
        purpose,
        None,
        base.digest(),
        Timestamp(now),
    )
    .map_err(|e| e.to_string())?;
    campaign.recipe = recipe.digest();
    println!("campaign {} opens", campaign.digest().short());
    let spec = CampaignSpec {
        settings: cfg.settings.clone(),
        keyring,
        policy: cfg.policy.clone(),
        campaign,
        revocations: Vec::new(),
        base,
        sources,
        probe,
        canary: cfg.canary.as_ref().map(|c| c.canary.clone()),
    };
    tuner::campaign::run(spec, Box::new(WallClock), &mut sink, progress).map_err(|e| e.to_string())
}
