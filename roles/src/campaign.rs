//! The operator's tuner driving a campaign against its node. Entries go to the node's API ([`HttpSink`]), which signs the
//! operator's section, gathers the other authorities' signatures and
//! commits them; the tuner waits for each verdict (committed, or refused
//! by a co-signer with the reason) before the next step, so a refusal
//! stops the campaign at its last committed step.
//!
//! The campaign file is the tuner's (`data/campaign.toml`). The sources
//! and policy must be committed before the campaign opens: the operator
//! recomputes each manifest from the text and salt the rights-holder gave
//! it and takes the signature from the ledger.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightclient::client::{Client, ClientError};
use provenance::api::{EntryState, EntryStatus};
use provenance::crypto::CoSignature;
use provenance::{
    Attestation, AuthorityId, Canonical, DataSourceManifest, Digest, EffectiveRevocation, EntryBody, KeyRing,
    OrderSeed, PolicyArtifact, Purpose, Timestamp,
};
use tuner::campaign::{build_campaign, CampaignSpec, Clock};
use tuner::data::{manifest_for, plant_canary, SignedSource};
use tuner::demo::{CanaryPlant, DemoConfig, SourceEntry};
use tuner::model::Weights;
use tuner::recipe::Recipe;
use tuner::sink::{EventSink, Verdict};

use crate::{now_ms, RolesError};

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

/// Registers a manifest at `node` (its rights-holder's own node, with that
/// authority's token); returns the entry's digest (not yet committed).
pub fn register_source(node: &Client, manifest: &DataSourceManifest) -> Result<Digest, RolesError> {
    Ok(node.submit("/v1/sources", manifest)?.digest)
}

/// Publishes a policy at `node` (governance's own node, with its token);
/// returns the entry's digest (not yet committed).
pub fn publish_policy(node: &Client, policy: &PolicyArtifact) -> Result<Digest, RolesError> {
    Ok(node.submit("/v1/policies", policy)?.digest)
}

/// Entries and blobs through the operator node's API.
#[derive(Debug)]
pub struct HttpSink {
    node: Client,
    timeout: Duration,
    started: Instant,
    stats: Arc<Mutex<SinkStats>>,
    /// The campaign submitted through this sink (its records' audit
    /// material goes under it).
    campaign: Option<Digest>,
    /// Whether the campaign's policy audits records (then each record's
    /// audit material goes to the node).
    audited: bool,
    /// What was last handed the node for governance (path, bytes): the
    /// audit context and the material of the record being submitted, put
    /// again while the record waits (the node keeps them in memory only,
    /// so a restart of it loses them).
    handed: Vec<(String, Vec<u8>)>,
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
            campaign: None,
            audited: false,
            handed: Vec::new(),
            committed: 0,
        }
    }

    /// Hands the operator's node `campaign`'s audit context (its probe set
    /// and canaries), which it serves governance alone over the p2p
    /// channel for replay audits.
    pub fn audit_context(
        &mut self,
        campaign: &Digest,
        context: &tuner::material::AuditContext,
    ) -> Result<(), RolesError> {
        let path = format!("/v1/audit/{}/context", campaign.to_hex());
        let bytes = context.to_bytes();
        self.node.put_bytes(&path, &bytes)?;
        self.handed = vec![(path, bytes)];
        Ok(())
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

    fn wants_audit_material(&self) -> bool {
        self.audited
    }

    fn audit_material(&mut self, material: &tuner::material::AuditMaterial) -> tuner::error::Result<()> {
        let Some(c) = self.campaign else {
            return Err(sink_err("audit material before the campaign"));
        };
        let path = format!("/v1/audit/{}/records/{}", c.to_hex(), material.seq);
        let bytes = material.to_bytes();
        self.node.put_bytes(&path, &bytes).map_err(sink_err)?;
        // The context first, then this record's material.
        self.handed.truncate(1);
        self.handed.push((path, bytes));
        Ok(())
    }

    fn submit(&mut self, body: &EntryBody) -> tuner::error::Result<Verdict> {
        if let EntryBody::Campaign(c) = body {
            self.campaign = Some(c.digest());
        }
        let digest = match body {
            EntryBody::Campaign(c) => self.node.submit("/v1/campaigns", c),
            b => self.node.submit_event(b),
        }
        .map_err(sink_err)?
        .digest;
        let submitted = Instant::now();
        let deadline = submitted + self.timeout;
        let mut handed_at = submitted;
        loop {
            let s = self.node.status(&digest).map_err(sink_err)?;
            match s.state {
                EntryState::Committed(_) => {
                    self.committed += 1;
                    if let Ok(mut st) = self.stats.lock() {
                        st.latencies.push((
                            self.started.elapsed().as_secs_f64(),
                            submitted.elapsed().as_secs_f64(),
                        ));
                    }
                    return Ok(Verdict::Committed);
                }
                EntryState::Uncommitted(EntryStatus::Refused { by, reason }) => {
                    return Ok(Verdict::Refused {
                        reason: format!("{by} refused entry {digest}: {reason}"),
                    })
                }
                EntryState::Uncommitted(EntryStatus::Expired { reason }) => {
                    return Ok(Verdict::Refused {
                        reason: format!("expired: {reason}"),
                    })
                }
                EntryState::Uncommitted(EntryStatus::Pending { .. }) => {
                    if body.event().is_some() && handed_at.elapsed() > Duration::from_secs(5) {
                        // The node may have restarted since: hand it what
                        // governance needs again.
                        handed_at = Instant::now();
                        for (path, bytes) in &self.handed {
                            // Best effort: the record still waits for it,
                            // and the next round tries again.
                            if let Err(e) = self.node.put_bytes(path, bytes) {
                                eprintln!("handing {path} to the node again: {e}");
                            }
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(sink_err(format!(
                    "entry {digest} neither committed nor refused in time"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn order_seed(&mut self, campaign: &Digest) -> tuner::error::Result<Option<OrderSeed>> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let a = self.node.campaign(campaign).map_err(sink_err)?;
            if let Some(cp) = a.order_checkpoint {
                return Ok(Some(OrderSeed::from_checkpoint(
                    campaign,
                    cp.signature.as_slice(),
                )));
            }
            if Instant::now() > deadline {
                return Err(sink_err(format!(
                    "no certified checkpoint of campaign {campaign}'s block in time"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
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
pub fn signature_of(node: &Client, id: &Digest) -> Result<Option<CoSignature>, RolesError> {
    let a = match node.source(id) {
        Ok(a) => a,
        Err(ClientError::Status { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let leaf = a
        .leaf
        .ok_or_else(|| RolesError::Ledger("source answer without its leaf".into()))?;
    let e: provenance::LedgerEntry = provenance::decode(leaf.as_slice())?;
    match e.attestation {
        Attestation::Authorities(c) => Ok(Some(c)),
        Attestation::Consortium(_) => Err(RolesError::Ledger(
            "a manifest with a consortium signature".into(),
        )),
    }
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
) -> Result<Vec<PreparedManifest>, RolesError> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let mut text = std::fs::read(&e.path).map_err(|err| RolesError::io(&e.path, err))?;
        text.truncate(e.max_bytes);
        for p in canaries.iter().filter(|p| p.source == i) {
            if plant_canary(&mut text, window, &p.canary.text(), p.every, p.offset).is_empty() {
                return Err(RolesError::Config(format!(
                    "canary {:?} does not fit the windows",
                    p.canary.prefix
                )));
            }
        }
        let salt = salt(seed, i);
        let manifest = manifest_for(&text, window, &salt, &e.terms)?;
        out.push(PreparedManifest { manifest, text, salt });
    }
    Ok(out)
}

/// A registered source with the signature the ledger holds.
pub fn signed_source(reader: &Client, p: PreparedManifest) -> Result<SignedSource, RolesError> {
    let signature = signature_of(reader, &p.manifest.source_id())?
        .ok_or_else(|| RolesError::Ledger(format!("source {} is not on the ledger", p.manifest.title)))?;
    Ok(SignedSource {
        manifest: p.manifest,
        signature,
        text: p.text,
        salt: p.salt,
    })
}

/// Held-out probe windows of the config.
pub fn probe_windows(cfg: &DemoConfig) -> Result<Vec<Vec<u8>>, RolesError> {
    probe_of(&cfg.probe, cfg.settings.model.window(), cfg.probe_windows)
}

/// The first `count` windows of `window` bytes of the probe text.
pub fn probe_of(path: &std::path::Path, window: usize, count: usize) -> Result<Vec<Vec<u8>>, RolesError> {
    let probe_text = std::fs::read(path).map_err(|e| RolesError::io(path, e))?;
    Ok(probe_text
        .chunks_exact(window)
        .take(count)
        .map(|c| c.to_vec())
        .collect())
}

/// What a fine-tuning campaign is made of, whichever file it came from.
#[derive(Debug)]
pub struct CampaignParts<'a> {
    /// Campaign name (the open time is appended).
    pub name: &'a str,
    /// The operator authority.
    pub operator: &'a str,
    /// The purpose.
    pub purpose: &'a str,
    /// Training settings.
    pub settings: &'a tuner::campaign::TrainSettings,
    /// The policy in force (committed).
    pub policy: &'a PolicyArtifact,
    /// Held-out probe windows.
    pub probe: Vec<Vec<u8>>,
    /// Canaries to measure.
    pub canaries: Vec<tuner::memo::Canary>,
}

/// The fine-tuning campaign's spec: uploads the recipe and the base
/// weights as blobs (whoever traces or rebuilds the campaign fetches them by
/// the digest the campaign record carries) and builds the campaign record.
#[allow(clippy::too_many_arguments)]
pub fn campaign_spec(
    parts: CampaignParts<'_>,
    sink: &mut HttpSink,
    keyring: KeyRing,
    base_bytes: &[u8],
    base: Weights,
    base_campaign: Option<Digest>,
    sources: Vec<SignedSource>,
    revocations: Vec<EffectiveRevocation>,
    now: u64,
) -> Result<CampaignSpec, RolesError> {
    let context = tuner::material::AuditContext {
        probe: parts.probe.clone(),
        canaries: parts.canaries.clone(),
    };
    let recipe = Recipe::new(
        parts.settings.clone(),
        base_bytes,
        tuner::data::considered(&sources),
    )
    .with_audit_context(&context);
    sink.put_blob(&recipe.base_weights, base_bytes)?;
    sink.put_blob(&recipe.digest(), &recipe.to_bytes())?;
    let config = |e: provenance::ids::LabelError| RolesError::Config(e.to_string());
    let operator = AuthorityId::new(parts.operator.to_string()).map_err(config)?;
    let purpose = Purpose::new(parts.purpose.to_string()).map_err(config)?;
    let mut campaign = build_campaign(
        parts.settings,
        parts.policy,
        operator,
        &format!("{}-{now}", parts.name),
        purpose,
        base_campaign,
        base.digest(),
        Timestamp(now),
    )?;
    campaign.recipe = recipe.digest();
    if parts.policy.audit.rate_millionths > 0 {
        sink.audit_context(&campaign.digest(), &context)?;
        sink.audited = true;
    }
    Ok(CampaignSpec {
        settings: parts.settings.clone(),
        keyring,
        policy: parts.policy.clone(),
        campaign,
        revocations,
        base,
        sources,
        probe: parts.probe,
        canaries: parts.canaries,
    })
}

/// [`campaign_spec`] for a campaign file of the demo's kind.
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
) -> Result<CampaignSpec, RolesError> {
    let parts = CampaignParts {
        name: &cfg.name,
        operator: &cfg.operator,
        purpose: &cfg.purpose,
        settings: &cfg.settings,
        policy: &cfg.policy,
        probe: probe_windows(cfg)?,
        canaries: cfg.canaries.iter().map(|c| c.canary.clone()).collect(),
    };
    campaign_spec(
        parts,
        sink,
        keyring,
        base_bytes,
        base,
        base_campaign,
        sources,
        revocations,
        now,
    )
}
