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

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use provenance::order::{Accounting, Order, OrderSeed};
use provenance::{Campaign, Canonical, Digest, EntryBody, KeyRing, LedgerState, RefusalReason, Timestamp};
use storage::{IndexPrefix, Store};
use tokio::sync::{mpsc, oneshot, Mutex};
use tuner::witness::Witness;

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
}

/// The campaigns this node follows, and the way to fetch blobs.
pub struct Effects {
    followed: Mutex<HashMap<Digest, Followed>>,
    api: mpsc::Sender<ApiCommand>,
    keyring: Arc<KeyRing>,
}

impl Effects {
    /// Effects fetching blobs through the core's API channel.
    pub fn new(api: mpsc::Sender<ApiCommand>, keyring: Arc<KeyRing>) -> Arc<Self> {
        Arc::new(Self {
            followed: Mutex::new(HashMap::new()),
            api,
            keyring,
        })
    }

    /// Checks `body` (an offered campaign record, entry `digest`) and
    /// reports the verdict to the core.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        store: Arc<RwLock<Store>>,
        digest: Digest,
        body: EntryBody,
        core: mpsc::Sender<Internal>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let verdict = me.check(&store, &body).await;
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

    async fn check(&self, store: &RwLock<Store>, body: &EntryBody) -> EffectVerdict {
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
        match f.witness.check(&event, &blob) {
            Ok(_) => EffectVerdict::Holds,
            Err(fault) => EffectVerdict::Broken(CoSignRefusal::Effect(fault.to_string())),
        }
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
        })
    }
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
