//! Co-signers' checks of a campaign record off the task that drives
//! consensus: its place in the campaign's data order (`provenance::order`)
//! and, for a training event, its effect (`tuner::witness`). The
//! campaign's adapters are followed from its committed events' delta blobs,
//! and an offered event's delta blob (fetched from peers and kept here)
//! must match its measurement, its routing and the state chain before this
//! node signs; every record must account for the positions of the order it
//! draws, seeded by the consortium's checkpoint of the block that committed
//! the campaign.
//!
//! Both campaign kinds are followed: a fine-tune's adapters and a base
//! campaign's weights (from the initial weights its recipe gives), each
//! order over the considered set its recipe commits. A campaign without a
//! recipe blob is not checked. A record is
//! checked against the state its predecessors left, so a campaign's
//! records commit one after another (the tuner submits each after the
//! previous one's verdict anyway).
//!
//! Where this node's audit ticket selects a fine-tune's training record
//! (`provenance::audit`), it also replays it (`tuner::auditor::replay`),
//! one replay at a time on a blocking thread: governance the whole record,
//! from the batch and optimizer state the operator's node serves it
//! (`node::inbox`) and the probe set and canaries the recipe commits; a
//! data source its own examples, from its rights-holder's packages
//! (`own_sources`). A replay that differs refuses the record.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use provenance::order::{Accounting, Order, OrderSeed};
use provenance::{
    AuthorityId, Campaign, Canonical, Digest, EntryBody, EventView, KeyRing, LedgerState, LedgerView,
    RefusalReason, Role, Timestamp,
};
use storage::{IndexPrefix, Store};
use tokio::sync::{mpsc, oneshot, Mutex, Semaphore};
use tuner::auditor::{RecordInputs, Scope};
use tuner::compute::Prepared;
use tuner::data::PreparedSource;
use tuner::material::{AuditContext, AuditMaterial};
use tuner::recipe::Recipe;
use tuner::witness::Witness;

use crate::inbox::AuditPart;

use crate::cosign::{refusal_reason, CoSignRefusal};

use crate::runtime::{read, ApiCommand, Internal};

/// How long an offered event may wait for this node to commit the records
/// before it (the operator's node commits first).
const CATCH_UP: Duration = Duration::from_secs(10);

/// What became of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectVerdict {
    /// The effect is what the event states: sign.
    Holds,
    /// It holds, and this node replayed the record (its ticket selects
    /// it): the replay's digest, for the audit beside its signature.
    Replayed(provenance::Digest),
    /// It is not: refuse, with the reason.
    Broken(CoSignRefusal),
    /// This node's replay of it (its ticket selects it) ran and differs:
    /// refuse, and commit the evidence ([`provenance::audit::AuditFailure`]).
    Failed(String),
    /// It could not be checked yet (a blob no peer served, records this
    /// node has not committed): check again when the event is offered again.
    Unchecked(String),
}

/// One campaign followed: its witness, the accounting of its order, and
/// how many of its committed records it has read.
struct Followed {
    witness: Witness,
    accounting: Accounting,
    /// Set once a committed record broke the order (colluders committed
    /// it): every later record is refused.
    disordered: Option<String>,
    records: u64,
    /// A fine-tune's recipe (replays read it).
    recipe: Option<Recipe>,
    /// The replay context, built at the first replay.
    prepared: Option<Arc<Prepared>>,
    /// The optimizer-state digest the last committed record states.
    committed_opt: Option<Digest>,
}

/// What a replay takes from a followed campaign, copied so that the
/// replay runs without holding the campaigns' lock.
struct ReplayState {
    recipe: Recipe,
    adapters: tuner::lora::Adapters,
    committed_opt: Option<Digest>,
    prepared: Option<Arc<Prepared>>,
}

/// The campaigns this node follows, and the way to fetch blobs.
pub struct Effects {
    followed: Mutex<HashMap<Digest, Followed>>,
    api: mpsc::Sender<ApiCommand>,
    keyring: Arc<KeyRing>,
    authority: AuthorityId,
    role: Role,
    own_sources: Option<PathBuf>,
    own: Mutex<BTreeMap<Digest, PreparedSource>>,
    replays: Semaphore,
}

impl Effects {
    /// Effects fetching blobs through the core's API channel, for a node
    /// of `authority` in `role`; a data source's packages in `own_sources`.
    pub fn new(
        api: mpsc::Sender<ApiCommand>,
        keyring: Arc<KeyRing>,
        authority: AuthorityId,
        role: Role,
        own_sources: Option<PathBuf>,
    ) -> Arc<Self> {
        Arc::new(Self {
            followed: Mutex::new(HashMap::new()),
            api,
            keyring,
            authority,
            role,
            own_sources,
            own: Mutex::new(BTreeMap::new()),
            replays: Semaphore::new(1),
        })
    }

    /// Checks `body` (an offered campaign record, entry `digest`) and
    /// reports the verdict to the core.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        store: Arc<RwLock<Store>>,
        digest: Digest,
        body: EntryBody,
        replay: bool,
        core: mpsc::Sender<Internal>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let verdict = me.check(&store, &body, replay).await;
            let _ = core.send(Internal::Effect { digest, verdict }).await;
        });
    }

    async fn blob(&self, store: &RwLock<Store>, d: Digest) -> Result<Vec<u8>, String> {
        if let Some(b) = read(store).blob(&d).map_err(|e| e.to_string())? {
            return Ok(b);
        }
        let (reply, rx) = oneshot::channel();
        self.api
            .send(ApiCommand::FetchBlob { digest: d, reply })
            .await
            .map_err(|e| e.to_string())?;
        rx.await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no peer served blob {}", d.short()))
    }

    async fn fetch_audit(&self, campaign: Digest, part: AuditPart) -> Option<Vec<u8>> {
        let (reply, rx) = oneshot::channel();
        self.api
            .send(ApiCommand::FetchAudit {
                campaign,
                part,
                reply,
            })
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    async fn check(&self, store: &RwLock<Store>, body: &EntryBody, replay: bool) -> EffectVerdict {
        let Some(link) = body.chain_link() else {
            return EffectVerdict::Holds;
        };
        let id = link.campaign;
        let seq = link.seq;
        let recipe = read(store).state().campaign_state(&id).map(|c| c.campaign.recipe);
        if recipe == Some(Digest::ZERO) {
            // A campaign that published no recipe blob: nothing to follow.
            return EffectVerdict::Holds;
        }
        // Wait until this node has committed every record before this one.
        let deadline = Instant::now() + CATCH_UP;
        let campaign = loop {
            let committed = read(store)
                .state()
                .campaign_state(&id)
                .map(|c| (c.campaign.clone(), c.entries));
            match committed {
                Some((c, n)) if n >= seq => break c,
                _ if Instant::now() >= deadline => {
                    return EffectVerdict::Unchecked(format!(
                        "this node has not committed campaign {}'s records before {seq}",
                        id.short(),
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        if campaign.recipe == Digest::ZERO {
            return EffectVerdict::Holds;
        }
        let mut followed = self.followed.lock().await;
        // A closed campaign takes no more records: stop following it (what a
        // node holds stays bounded by the campaigns open at once).
        {
            let st = read(store);
            followed.retain(|c, _| st.state().campaign_state(c).is_some_and(|s| s.closed.is_none()));
        }
        let f = match followed.entry(id) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => match self.follow(store, &campaign).await {
                Ok(f) => slot.insert(f),
                Err(v) => return v,
            },
        };
        // Follow the committed records this node has not read yet.
        let records: Vec<EntryBody> = {
            let st = read(store);
            let Ok(indexes) = st.query(&IndexPrefix::campaign(&id)) else {
                return EffectVerdict::Unchecked("the campaign's index".into());
            };
            indexes
                .into_iter()
                .filter_map(|i| st.entry(i).ok().flatten())
                .map(|e| e.body)
                .filter(|b| b.chain_link().is_some())
                .skip(f.records as usize)
                .collect()
        };
        for r in &records {
            if let Some(ev) = r.event() {
                f.committed_opt = Some(ev.measurement.optimizer_state);
                let blob = match self.blob(store, *ev.delta_blob).await {
                    Ok(b) => b,
                    Err(e) => return EffectVerdict::Unchecked(format!("a committed event's delta: {e}")),
                };
                if let Err(e) = f.witness.follow(&ev, &blob) {
                    return EffectVerdict::Unchecked(format!(
                        "following committed record {}: {e}",
                        f.records
                    ));
                }
            }
            if f.disordered.is_none() {
                let st = read(store);
                let mut reason_of = reasons(&self.keyring, st.state(), &campaign, r);
                if let Err(e) = f.accounting.record(r, &mut reason_of) {
                    f.disordered = Some(format!("committed record {}: {e}", f.records));
                }
            }
            f.records += 1;
        }
        // The record's place in the order (cheap, before any blob).
        if let Some(why) = &f.disordered {
            return EffectVerdict::Broken(CoSignRefusal::Order(format!(
                "the campaign's records already break its order ({why})"
            )));
        }
        {
            let st = read(store);
            let mut reason_of = reasons(&self.keyring, st.state(), &campaign, body);
            if let Err(e) = f.accounting.check(body, &mut reason_of) {
                return EffectVerdict::Broken(CoSignRefusal::Order(e.to_string()));
            }
        }
        let Some(event) = body.event() else {
            return EffectVerdict::Holds;
        };
        let blob = match self.blob(store, *event.delta_blob).await {
            Ok(b) => b,
            Err(e) => return EffectVerdict::Unchecked(format!("the event's delta: {e}")),
        };
        if let Err(fault) = f.witness.check(&event, &blob) {
            return EffectVerdict::Broken(CoSignRefusal::Effect(fault.to_string()));
        }
        if !replay {
            return EffectVerdict::Holds;
        }
        let (Witness::FineTune(w), Some(recipe)) = (&f.witness, &f.recipe) else {
            return EffectVerdict::Broken(CoSignRefusal::Replay(
                "only a fine-tune's records replay; this campaign trains its base".into(),
            ));
        };
        let state = ReplayState {
            recipe: recipe.clone(),
            adapters: w.adapters().clone(),
            committed_opt: f.committed_opt,
            prepared: f.prepared.clone(),
        };
        // The replay runs without the lock: other checks go on meanwhile.
        drop(followed);
        match self.replay(store, &campaign, state, body, &event).await {
            Ok((d, prepared)) => {
                if let Some(f) = self.followed.lock().await.get_mut(&id) {
                    f.prepared.get_or_insert(prepared);
                }
                EffectVerdict::Replayed(d)
            }
            Err(v) => v,
        }
    }

    /// Replays `body` (its ticket selected it): the replay's digest, or
    /// the verdict when it cannot run or differs.
    async fn replay(
        &self,
        store: &RwLock<Store>,
        campaign: &Campaign,
        st: ReplayState,
        body: &EntryBody,
        event: &EventView<'_>,
    ) -> Result<(Digest, Arc<Prepared>), EffectVerdict> {
        let refuse = |why: String| EffectVerdict::Broken(CoSignRefusal::Replay(why));
        let id = campaign.digest();
        let recipe = &st.recipe;
        let prep = match st.prepared {
            Some(p) => p,
            None => {
                let base = self
                    .blob(store, recipe.base_weights)
                    .await
                    .map_err(|e| EffectVerdict::Unchecked(format!("the base weights: {e}")))?;
                let context = match self.role {
                    Role::Governance => {
                        let bytes = self.fetch_audit(id, AuditPart::Context).await.ok_or_else(|| {
                            EffectVerdict::Unchecked("the operator's node served no audit context yet".into())
                        })?;
                        Some(
                            AuditContext::from_bytes(&bytes)
                                .map_err(|e| refuse(format!("the operator's audit context: {e}")))?,
                        )
                    }
                    _ => None,
                };
                let (r, c) = (recipe.clone(), campaign.clone());
                let built = tokio::task::spawn_blocking(move || match context {
                    Some(context) => Prepared::from_recipe(&r, &c, &base, &context),
                    None => Prepared::for_examples(&r, &c, &base),
                })
                .await
                .map_err(|e| EffectVerdict::Unchecked(format!("building the replay context: {e}")))?;
                Arc::new(built.map_err(|e| refuse(format!("the campaign's replay context: {e}")))?)
            }
        };
        let sketch_blob = self
            .blob(store, *event.sketch_blob)
            .await
            .map_err(|e| EffectVerdict::Unchecked(format!("the record's sketches: {e}")))?;
        let (_, sketches) = tuner::blobs::decode_sketches(&sketch_blob)
            .map_err(|e| refuse(format!("the record's sketch blob: {e}")))?;
        let material = match self.role {
            Role::Governance => {
                let seq = event.link.seq;
                let bytes = self
                    .fetch_audit(id, AuditPart::Record(seq))
                    .await
                    .ok_or_else(|| {
                        EffectVerdict::Unchecked(format!(
                            "the operator's node served no batch for record {seq} yet"
                        ))
                    })?;
                Some(
                    AuditMaterial::from_bytes(&bytes, recipe.settings.optim)
                        .map_err(|e| refuse(format!("the operator's batch: {e}")))?,
                )
            }
            _ => None,
        };
        let own = match self.role {
            Role::DataSource => Some(self.own_sources(store, event).await?),
            _ => None,
        };
        let policy = read(store)
            .state()
            .policy(event.policy)
            .map(|p| p.audit)
            .ok_or_else(|| EffectVerdict::Unchecked("the record's policy is not committed here".into()))?;
        let committed_opt = match st.committed_opt {
            Some(d) => d,
            None => prep.initial().1.digest(),
        };
        let adapters = st.adapters;
        let dropout = recipe.settings.lora.dropout;
        let body = body.clone();
        let context = prep.clone();
        let _permit = self
            .replays
            .acquire()
            .await
            .map_err(|e| EffectVerdict::Unchecked(e.to_string()))?;
        let done = tokio::task::spawn_blocking(move || {
            let scope = match &own {
                Some(own) => Scope::Own(own),
                None => Scope::Record,
            };
            let inputs = RecordInputs {
                campaign: &id,
                adapters: &adapters,
                committed_opt: &committed_opt,
                sketches: &sketches,
                material: material.as_ref(),
            };
            tuner::auditor::replay(scope, policy, dropout, &context.ctx(), &body, &inputs)
        })
        .await
        .map_err(|e| EffectVerdict::Unchecked(format!("the replay did not finish: {e}")))?;
        match &done {
            Ok(d) => tracing::info!(
                "replayed record {} of campaign {}: {}",
                event.link.seq,
                id.short(),
                d.short()
            ),
            Err(fault) => tracing::warn!(
                "replay of record {} of campaign {} differs: {fault}",
                event.link.seq,
                id.short()
            ),
        }
        done.map(|d| (d, prep)).map_err(|fault| match fault {
            f if f.proves_the_record_wrong() => EffectVerdict::Failed(f.to_string()),
            f @ tuner::replay::ReplayFault::Unsupported(_) => refuse(f.to_string()),
            // Not the operator's proven fault: the record waits (a batch
            // sent again, this node's own trouble gone) or expires.
            f => EffectVerdict::Unchecked(format!("replay audit: {f}")),
        })
    }

    /// This data source's prepared sources with examples in `event`,
    /// reading the packages folder again when one is not loaded yet.
    async fn own_sources(
        &self,
        store: &RwLock<Store>,
        event: &EventView<'_>,
    ) -> Result<BTreeMap<Digest, PreparedSource>, EffectVerdict> {
        let mine: Vec<Digest> = {
            let st = read(store);
            event
                .records
                .iter()
                .map(|r| r.source)
                .filter(|s| {
                    st.state()
                        .source_state(s)
                        .is_some_and(|x| x.manifest.authority == self.authority)
                })
                .collect()
        };
        let mut own = self.own.lock().await;
        if mine.iter().any(|s| !own.contains_key(s)) {
            let Some(dir) = &self.own_sources else {
                let why = "this data source's node names no own_sources folder to replay its examples from";
                tracing::warn!("a record its ticket selects waits: {why}");
                return Err(EffectVerdict::Unchecked(why.into()));
            };
            let dir = dir.clone();
            let loaded = tokio::task::spawn_blocking(move || load_packages(&dir))
                .await
                .map_err(|e| EffectVerdict::Unchecked(format!("reading own_sources: {e}")))?;
            for (id, p) in loaded {
                own.insert(id, p);
            }
        }
        if let Some(s) = mine.iter().find(|s| !own.contains_key(s)) {
            let why = format!("no package of own source {} in own_sources", s.short());
            tracing::warn!("a record its ticket selects waits: {why}");
            return Err(EffectVerdict::Unchecked(why));
        }
        Ok(own
            .iter()
            .filter(|(id, _)| mine.contains(id))
            .map(|(id, p)| (*id, p.clone()))
            .collect())
    }

    /// Starts following `campaign`: its witness from the recipe, and the
    /// accounting of its order over the considered set the recipe commits,
    /// seeded by the checkpoint of the block that committed the campaign.
    async fn follow(&self, store: &RwLock<Store>, campaign: &Campaign) -> Result<Followed, EffectVerdict> {
        let recipe = self
            .blob(store, campaign.recipe)
            .await
            .map_err(|e| EffectVerdict::Unchecked(format!("the campaign's recipe: {e}")))?;
        let witness = Witness::new(campaign, &recipe).map_err(|e| {
            EffectVerdict::Broken(CoSignRefusal::Effect(format!("the campaign's recipe: {e}")))
        })?;
        let considered = Witness::considered(&recipe).map_err(|e| {
            EffectVerdict::Broken(CoSignRefusal::Order(format!("the campaign's recipe: {e}")))
        })?;
        let id = campaign.digest();
        let cp = read(store)
            .order_checkpoint(&id)
            .map_err(|e| EffectVerdict::Unchecked(format!("the campaign's checkpoint: {e}")))?
            .ok_or_else(|| {
                EffectVerdict::Unchecked(
                    "the checkpoint of the block that committed the campaign is not certified here yet"
                        .into(),
                )
            })?;
        let seed = OrderSeed::from_checkpoint(&id, cp.signature.as_slice());
        let order = Order::new(&considered, seed)
            .map_err(|e| EffectVerdict::Broken(CoSignRefusal::Order(e.to_string())))?;
        Ok(Followed {
            witness,
            accounting: Accounting::new(order),
            disordered: None,
            records: 0,
            recipe: Recipe::from_bytes(&recipe).ok(),
            prepared: None,
            committed_opt: None,
        })
    }
}

/// The packages in `dir` (`*.package`, 0600) that decode and check, by
/// source id; one that does not is logged and skipped.
fn load_packages(dir: &std::path::Path) -> Vec<(Digest, PreparedSource)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!("own_sources folder {} cannot be read", dir.display());
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("package") {
            continue;
        }
        let loaded = genesis::read_secret(&path)
            .map_err(|e| e.to_string())
            // Parsed only: `PreparedSource::new` cuts the text and checks it
            // against the manifest once.
            .and_then(|text| tuner::package::Package::parse(&text).map_err(|e| e.to_string()))
            .and_then(|p| {
                let window = match p.manifest.segmentation {
                    provenance::Segmentation::Window { length, .. } => length as usize,
                    _ => 0,
                };
                let signed = tuner::data::SignedSource {
                    manifest: p.manifest,
                    // Not read by a replay: the manifest is the ledger's.
                    signature: provenance::CoSignature::List {
                        scheme: provenance::SignatureScheme::Bls12381,
                        signatures: Vec::new(),
                    },
                    text: p.text,
                    salt: p.salt,
                };
                PreparedSource::new(signed, window).map_err(|e| e.to_string())
            });
        match loaded {
            Ok(p) => out.push((p.id, p)),
            Err(e) => tracing::warn!("source package {}: {e}", path.display()),
        }
    }
    out
}

/// Admission's reasons for `record`'s sources, under its policy (a close:
/// the campaign's).
fn reasons<'a>(
    keyring: &'a KeyRing,
    state: &'a LedgerState,
    campaign: &'a Campaign,
    record: &'a EntryBody,
) -> impl FnMut(&Digest, Timestamp) -> Option<RefusalReason> + 'a {
    let policy = record.record_policy().copied().unwrap_or(campaign.policy);
    move |source, time| refusal_reason(keyring, state, campaign, &policy, source, time)
}
