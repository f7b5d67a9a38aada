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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provenance::crypto::CoSignature;
use provenance::{
    Attestation, AuthorityId, Canonical, DataSourceManifest, Digest, EffectiveRevocation, EntryBody, KeyRing,
    PolicyArtifact, Purpose, Timestamp,
};
use serde_json::Value;
use testnet::{Client, Testnet};
use tuner::campaign::{build_campaign, CampaignOutcome, CampaignSpec, Clock, Progress, ProgressInfo};
use tuner::data::{manifest_for, plant_canary, SignedSource};
use tuner::demo::{CanaryPlant, DemoConfig, SourceEntry};
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

/// What the sink saw: each committed entry's finality latency.
#[derive(Debug, Clone, Default)]
pub struct SinkStats {
    /// (seconds since the sink was made, submit-to-commit seconds) per
    /// committed entry.
    pub latencies: Vec<(f64, f64)>,
}

impl SinkStats {
    /// Median of the last `n` latencies (seconds).
    pub fn recent_median(&self, n: usize) -> Option<f64> {
        let mut v: Vec<f64> = self.latencies.iter().rev().take(n).map(|x| x.1).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }
}

/// Entries and blobs through the operator node's API.
#[derive(Debug)]
pub struct HttpSink {
    node: Client,
    timeout: Duration,
    started: Instant,
    stats: Arc<Mutex<SinkStats>>,
    /// Entries committed through this sink.
    pub committed: u64,
}

impl HttpSink {
    /// A sink writing to `node` (which carries the operator's admin token).
    pub fn new(node: Client) -> Self {
        Self {
            node,
            timeout: Duration::from_secs(120),
            started: Instant::now(),
            stats: Arc::default(),
            committed: 0,
        }
    }

    /// The sink's statistics, shared (a progress bar reads them).
    pub fn stats(&self) -> Arc<Mutex<SinkStats>> {
        self.stats.clone()
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
        let submitted = Instant::now();
        let deadline = submitted + self.timeout;
        loop {
            let s = self.node.status(&digest).map_err(sink_err)?;
            match s.body["status"].as_str() {
                Some("committed") => {
                    self.committed += 1;
                    if let Ok(mut st) = self.stats.lock() {
                        st.latencies.push((
                            self.started.elapsed().as_secs_f64(),
                            submitted.elapsed().as_secs_f64(),
                        ));
                    }
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
    stats: Option<Arc<Mutex<SinkStats>>>,
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
        Self {
            bar,
            last_line: 0.0,
            stats: None,
        }
    }

    /// Also shows the median finality latency of the sink's last entries.
    pub fn with_stats(mut self, stats: Arc<Mutex<SinkStats>>) -> Self {
        self.stats = Some(stats);
        self
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
        let finality = self
            .stats
            .as_ref()
            .and_then(|s| s.lock().ok().and_then(|s| s.recent_median(20)))
            .map(|m| format!(" finality {:.2} s", m))
            .unwrap_or_default();
        let msg = format!(
            "step {} loss {:.3} admitted {} refused {} rolled back {} committed {} ({:.1} events/s){finality}",
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

/// The ledger's co-signature on a registered manifest (None: not registered).
pub fn signature_of(node: &Client, id: &Digest) -> Result<Option<CoSignature>, String> {
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

/// The testnet node run by `authority`.
pub fn node_of(t: &Testnet, authority: &str) -> Result<usize, String> {
    t.nodes
        .iter()
        .position(|n| n.authority == authority)
        .ok_or_else(|| format!("no node of authority {authority} in the testnet"))
}

/// Shifts every validity window of the config so that its clock start
/// (`start_ms`) is `now`: the file's terms are relative to its start.
pub fn shift_windows(cfg: &mut DemoConfig, now: u64) {
    let offset = i128::from(now) - i128::from(cfg.start_ms);
    let shift = |ms: u64| u64::try_from((i128::from(ms) + offset).max(0)).unwrap_or(u64::MAX);
    for s in cfg.base_sources.iter_mut().chain(cfg.sources.iter_mut()) {
        s.terms.not_before = shift(s.terms.not_before);
        s.terms.not_after = shift(s.terms.not_after);
    }
}

/// A source as its rights-holder prepared it, before it is signed.
#[derive(Debug, Clone)]
pub struct PreparedManifest {
    /// The manifest.
    pub manifest: DataSourceManifest,
    /// The text (canaries planted).
    pub text: Vec<u8>,
    /// The salt of its example hashes.
    pub salt: [u8; 32],
}

/// Builds each entry's manifest (planting the canaries aimed at it);
/// `seed` picks the salts.
pub fn prepare_sources(
    entries: &[SourceEntry],
    canaries: &[CanaryPlant],
    window: usize,
    seed: u64,
) -> Result<Vec<PreparedManifest>, String> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let mut text = std::fs::read(&e.path).map_err(|err| format!("{}: {err}", e.path.display()))?;
        text.truncate(e.max_bytes);
        for p in canaries.iter().filter(|p| p.source == i) {
            if plant_canary(&mut text, window, &p.canary.text(), p.every, p.offset).is_empty() {
                return Err(format!("canary {:?} does not fit the windows", p.canary.prefix));
            }
        }
        let salt = salt(seed, i);
        let manifest = manifest_for(&text, window, &salt, &e.terms).map_err(|e| e.to_string())?;
        out.push(PreparedManifest { manifest, text, salt });
    }
    Ok(out)
}

/// Each rights-holder registers its manifest at its own node; returns the
/// entries' digests (not yet committed).
pub fn register_sources(t: &Testnet, prepared: &[PreparedManifest]) -> Result<Vec<Digest>, String> {
    let mut ids = Vec::new();
    for p in prepared {
        let ds = node_of(t, p.manifest.authority.as_str())?;
        let a = t
            .admin(ds)
            .map_err(|e| e.to_string())?
            .post("/v1/sources", &p.manifest)
            .map_err(|e| e.to_string())?;
        ids.push(testnet::client::digest_field(&a.body, "digest").map_err(|e| e.to_string())?);
    }
    Ok(ids)
}

/// A registered source with the signature the ledger holds.
pub fn signed_source(reader: &Client, p: PreparedManifest) -> Result<SignedSource, String> {
    let signature = signature_of(reader, &p.manifest.source_id())?
        .ok_or_else(|| format!("source {} is not on the ledger", p.manifest.title))?;
    Ok(SignedSource {
        manifest: p.manifest,
        signature,
        text: p.text,
        salt: p.salt,
    })
}

/// Governance publishes `policy` at its node; returns its digest.
pub fn publish_policy(t: &Testnet, policy: &PolicyArtifact) -> Result<Digest, String> {
    let gov = node_of(t, policy.authority.as_str())?;
    let a = t
        .admin(gov)
        .map_err(|e| e.to_string())?
        .post("/v1/policies", policy)
        .map_err(|e| e.to_string())?;
    testnet::client::digest_field(&a.body, "digest").map_err(|e| e.to_string())
}

/// Held-out probe windows of the config.
pub fn probe_windows(cfg: &DemoConfig) -> Result<Vec<Vec<u8>>, String> {
    let window = cfg.settings.model.window();
    let probe_text = std::fs::read(&cfg.probe).map_err(|e| format!("{}: {e}", cfg.probe.display()))?;
    Ok(probe_text
        .chunks_exact(window)
        .take(cfg.probe_windows)
        .map(|c| c.to_vec())
        .collect())
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
    shift_windows(&mut cfg, now);
    let op = node_of(&t, &cfg.operator)?;
    let reader = t.client(op);
    let wait = Duration::from_secs(120);
    // Governance publishes the policy; each rights-holder registers its sources.
    let policy_id = publish_policy(&t, &cfg.policy)?;
    let window = cfg.settings.model.window();
    let prepared = prepare_sources(&cfg.sources, &cfg.canaries, window, cfg.consortium_seed)?;
    let mut ids = register_sources(&t, &prepared)?;
    ids.push(policy_id);
    reader.wait_committed(&ids, wait).map_err(|e| e.to_string())?;
    let sources = prepared
        .into_iter()
        .map(|p| signed_source(&reader, p))
        .collect::<Result<Vec<_>, _>>()?;
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
    let mut sink = HttpSink::new(t.admin(op).map_err(|e| e.to_string())?);
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
    println!("campaign {} opens", spec.campaign.digest().short());
    tuner::campaign::run(spec, Box::new(WallClock), &mut sink, progress).map_err(|e| e.to_string())
}

/// The fine-tuning campaign's spec: uploads the recipe and the base
/// weights as blobs (whoever traces or rebuilds the campaign fetches them by
/// the digest the campaign record carries) and builds the campaign record.
#[allow(clippy::too_many_arguments)]
pub fn fine_tune_spec(
    cfg: &DemoConfig,
    sink: &mut HttpSink,
    keyring: KeyRing,
    base_bytes: &[u8],
    base: Weights,
    base_campaign: Option<Digest>,
    sources: Vec<SignedSource>,
    revocations: Vec<EffectiveRevocation>,
    now: u64,
) -> Result<CampaignSpec, String> {
    let recipe = Recipe::new(cfg.settings.clone(), base_bytes);
    sink.put_blob(&recipe.base_weights, base_bytes)
        .map_err(|e| e.to_string())?;
    sink.put_blob(&recipe.digest(), &recipe.to_bytes())
        .map_err(|e| e.to_string())?;
    let operator = AuthorityId::new(cfg.operator.clone()).map_err(|e| e.to_string())?;
    let purpose = Purpose::new(cfg.purpose.clone()).map_err(|e| e.to_string())?;
    let mut campaign = build_campaign(
        &cfg.settings,
        &cfg.policy,
        operator,
        &format!("{}-{now}", cfg.name),
        purpose,
        base_campaign,
        base.digest(),
        Timestamp(now),
    )
    .map_err(|e| e.to_string())?;
    campaign.recipe = recipe.digest();
    Ok(CampaignSpec {
        settings: cfg.settings.clone(),
        keyring,
        policy: cfg.policy.clone(),
        campaign,
        revocations,
        base,
        sources,
        probe: probe_windows(cfg)?,
        canaries: cfg.canaries.iter().map(|c| c.canary.clone()).collect(),
    })
}
