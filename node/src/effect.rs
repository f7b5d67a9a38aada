//! Co-signers' check of a training event's effect (`tuner::witness`), off
//! the task that drives consensus: the campaign's adapters are followed
//! from its committed events' delta blobs, and an offered event's delta
//! blob (fetched from peers and kept here) must match its measurement,
//! its routing and the state chain before this node signs.
//!
//! Both campaign kinds are followed: a fine-tune's adapters and a base
//! campaign's weights (from the initial weights its recipe gives); a
//! campaign without a recipe blob is not checked. An event is checked against the state its
//! predecessors left, so a campaign's events commit one after another (the
//! tuner submits each step after the previous one's verdict anyway).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use provenance::{Digest, EntryBody};
use storage::{IndexPrefix, Store};
use tokio::sync::{mpsc, oneshot, Mutex};
use tuner::witness::Witness;

use crate::runtime::{read, ApiCommand, Internal};

/// How long an offered event may wait for this node to commit the records
/// before it (the operator's node commits first).
const CATCH_UP: Duration = Duration::from_secs(10);

/// What became of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectVerdict {
    /// The effect is what the event states: sign.
    Holds,
    /// It is not: refuse, with the reason.
    Broken(String),
    /// It could not be checked yet (a blob no peer served, records this
    /// node has not committed): check again when the event is offered again.
    Unchecked(String),
}

/// One campaign followed: its witness and how many of its committed
/// records it has read.
struct Followed {
    witness: Witness,
    records: u64,
}

/// The campaigns this node follows, and the way to fetch blobs.
pub struct Effects {
    followed: Mutex<HashMap<Digest, Followed>>,
    api: mpsc::Sender<ApiCommand>,
}

impl Effects {
    /// Effects fetching blobs through the core's API channel.
    pub fn new(api: mpsc::Sender<ApiCommand>) -> Arc<Self> {
        Arc::new(Self {
            followed: Mutex::new(HashMap::new()),
            api,
        })
    }

    /// Checks `body` (an offered step or composite, entry `digest`) and
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
        let Some(event) = body.event() else {
            return EffectVerdict::Holds;
        };
        let id = event.link.campaign;
        let recipe = read(store).state().campaign_state(&id).map(|c| c.campaign.recipe);
        if recipe == Some(Digest::ZERO) {
            // A campaign that published no recipe blob: nothing to follow.
            return EffectVerdict::Holds;
        }
        // Wait until this node has committed every record before the event.
        let deadline = Instant::now() + CATCH_UP;
        let campaign = loop {
            let committed = read(store)
                .state()
                .campaign_state(&id)
                .map(|c| (c.campaign.clone(), c.entries));
            match committed {
                Some((c, n)) if n >= event.link.seq => break c,
                _ if Instant::now() >= deadline => {
                    return EffectVerdict::Unchecked(format!(
                        "this node has not committed campaign {}'s records before {}",
                        id.short(),
                        event.link.seq
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        if campaign.recipe == Digest::ZERO {
            return EffectVerdict::Holds;
        }
        let mut followed = self.followed.lock().await;
        // A closed campaign takes no more events: stop following it (what a
        // node holds stays bounded by the campaigns open at once).
        {
            let st = read(store);
            followed.retain(|c, _| st.state().campaign_state(c).is_some_and(|s| s.closed.is_none()));
        }
        let f = match followed.entry(id) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let recipe = match self.blob(store, campaign.recipe).await {
                    Ok(b) => b,
                    Err(e) => return EffectVerdict::Unchecked(format!("the campaign's recipe: {e}")),
                };
                match Witness::new(&campaign, &recipe) {
                    Ok(witness) => slot.insert(Followed { witness, records: 0 }),
                    Err(e) => return EffectVerdict::Broken(format!("the campaign's recipe: {e}")),
                }
            }
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
                .filter(|b| !matches!(b, EntryBody::Campaign(_)))
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
            f.records += 1;
        }
        let blob = match self.blob(store, *event.delta_blob).await {
            Ok(b) => b,
            Err(e) => return EffectVerdict::Unchecked(format!("the event's delta: {e}")),
        };
        match f.witness.check(&event, &blob) {
            Ok(_) => EffectVerdict::Holds,
            Err(fault) => EffectVerdict::Broken(fault.to_string()),
        }
    }
}
