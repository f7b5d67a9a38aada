//! Blob custody: the blobs an entry names, and fetching them from peers.
//!
//! An entry that names blobs (a campaign's recipe and the base weights the
//! recipe names, a training record's delta and sketches) commits only when
//! the validators voting for its block hold them: a validator votes for no
//! block naming a blob it lacks (`Ledger::verify`), so the 2f+1 votes that
//! notarise a block include at least f+1 honest holders, and since no
//! authority has more than f validators, they belong to at least two
//! authorities. Every node asks for an entry's blobs as soon as it is
//! offered, and for a finalised block's as it commits (a node that
//! catches up from empty refills its store).
//!
//! A blob travels in parts of [`PART_BYTES`], each its own request, so a
//! blob up to the API's limit crosses the wire whatever the limit on one
//! message; the whole is checked against its digest before it is kept.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use libp2p::PeerId;
use provenance::{Bytes, Digest, EntryBody};
use serde::{Deserialize, Serialize};
use storage::Store;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::p2p::NetCommand;
use crate::wire::{from_bytes, to_bytes, Request, Response};

/// Bytes per part of a blob on the wire.
pub const PART_BYTES: u64 = 4 << 20;

/// How long a peer may take to say whether it holds a blob.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one part may take to arrive from one peer.
const PART_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a whole blob may take from one peer: this, plus a second per
/// MiB it claims.
const BLOB_TIMEOUT: Duration = Duration::from_secs(10);

/// Most blobs being fetched at once; more wait.
const CONCURRENT: usize = 4;

/// Most blobs waiting to be fetched; beyond it, asks are dropped (the next
/// offer, vote, commit or backfill pass asks again).
const QUEUED: usize = 4096;

/// After a failed fetch, a blob is not asked for again for 2^attempts
/// seconds, at most this long: enough to stop a leader's every tick from
/// probing its peers, short enough that a blob served again is fetched
/// within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Committed entries the backfill pass reads per call.
const BACKFILL_STEP: u64 = 256;

/// How long the backfill pass rests after reaching the log's end.
const BACKFILL_REST: Duration = Duration::from_secs(60);

/// Most recipes whose named blobs are remembered.
const RECIPES: usize = 256;

/// Test-only (feature `byzantine`, `GOVTUNE_WITHHOLD_BLOBS` set): this
/// node serves no blob to its peers.
pub fn withheld() -> bool {
    static WITHHELD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WITHHELD
        .get_or_init(|| cfg!(feature = "byzantine") && std::env::var_os("GOVTUNE_WITHHOLD_BLOBS").is_some())
}

/// Test-only (feature `byzantine`, `GOVTUNE_GARBLE_BLOBS` set): this node
/// serves its blobs' parts with their first byte flipped.
pub fn garbled() -> bool {
    static GARBLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GARBLED.get_or_init(|| cfg!(feature = "byzantine") && std::env::var_os("GOVTUNE_GARBLE_BLOBS").is_some())
}

/// One part of a blob, as a peer serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobPart {
    /// The whole blob's length.
    pub total: u64,
    /// The bytes from the asked offset (at most [`PART_BYTES`]).
    pub bytes: Bytes,
}

/// The blobs `body` names itself (not those named inside them): a
/// campaign's recipe, a training record's delta and sketches. The zero
/// digest stands for none.
pub fn named(body: &EntryBody) -> Vec<Digest> {
    let mut out = Vec::new();
    match body {
        EntryBody::Campaign(c) => out.push(c.recipe),
        b => {
            if let Some(ev) = b.event() {
                out.push(*ev.delta_blob);
                out.push(*ev.sketch_blob);
            }
        }
    }
    out.retain(|d| *d != Digest::ZERO);
    out.sort();
    out.dedup();
    out
}

/// The blobs named inside blob `bytes`: a recipe's base weights.
pub fn named_within(bytes: &[u8]) -> Vec<Digest> {
    match tuner::recipe::Recipe::from_bytes(bytes) {
        Ok(r) if r.base_weights != Digest::ZERO => vec![r.base_weights],
        _ => Vec::new(),
    }
}

/// What a node must hold of `body`'s blobs before it votes for a block
/// carrying it, and lacks: those it names, and those named inside the
/// ones it holds (`blob` reads a held blob; `holds` says whether one is
/// held without reading it).
pub fn missing(
    body: &EntryBody,
    holds: &dyn Fn(&Digest) -> bool,
    blob: &dyn Fn(&Digest) -> Option<Vec<u8>>,
) -> Vec<Digest> {
    // What a held recipe names, remembered: a leader waiting on a campaign
    // asks every tick.
    static WITHIN: Mutex<Option<HashMap<Digest, Vec<Digest>>>> = Mutex::new(None);
    let mut out = Vec::new();
    for d in named(body) {
        if !holds(&d) {
            out.push(d);
        } else if matches!(body, EntryBody::Campaign(_)) {
            let known = WITHIN
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .and_then(|m| m.get(&d).cloned());
            let within = match known {
                Some(w) => w,
                None => {
                    let Some(b) = blob(&d) else { continue };
                    let w = named_within(&b);
                    let mut cache = WITHIN.lock().unwrap_or_else(|p| p.into_inner());
                    let m = cache.get_or_insert_with(HashMap::new);
                    if m.len() >= RECIPES {
                        m.clear();
                    }
                    m.insert(d, w.clone());
                    w
                }
            };
            out.extend(within.into_iter().filter(|w| !holds(w)));
        }
    }
    out
}

/// At most `len` bytes (and at most [`PART_BYTES`]) of held blob `digest`
/// from `offset`, read without the rest of it: `None` if not held or past
/// its end (an empty blob is one empty part, and `len` 0 gives the length
/// alone).
pub fn serve(store: &Store, digest: &Digest, offset: u64, len: u32) -> Option<BlobPart> {
    let len = PART_BYTES.min(u64::from(len));
    let (total, bytes) = store.blob_range(digest, offset, len).ok().flatten()?;
    if offset == total && total > 0 && len > 0 {
        return None;
    }
    Some(BlobPart {
        total,
        bytes: Bytes(bytes),
    })
}

/// Fetches blobs from peers into this node's store.
#[derive(Debug)]
pub struct Fetcher {
    net: mpsc::Sender<NetCommand>,
    peers: Vec<PeerId>,
    store: Arc<RwLock<Store>>,
    max_bytes: u64,
    queued: Mutex<HashSet<Digest>>,
    running: Semaphore,
    /// Blobs whose last fetch failed: not asked for again until then, and
    /// how many fetches failed in a row.
    failed: Mutex<HashMap<Digest, (Instant, u32)>>,
    /// The backfill pass's next log index, and when it may go on.
    backfill: Mutex<(u64, Instant)>,
    /// Told of each blob fetched, so consensus can judge again what it
    /// refused for lack of it.
    fetched: Mutex<Option<mpsc::Sender<Digest>>>,
}

fn read(store: &RwLock<Store>) -> std::sync::RwLockReadGuard<'_, Store> {
    store.read().unwrap_or_else(|p| p.into_inner())
}

impl Fetcher {
    /// A fetcher asking `peers` (every other node) over `net`, keeping
    /// what it gets in `store`; a blob over `max_bytes` is not fetched.
    pub fn new(
        net: mpsc::Sender<NetCommand>,
        peers: Vec<PeerId>,
        store: Arc<RwLock<Store>>,
        max_bytes: u64,
    ) -> Self {
        Self {
            net,
            peers,
            store,
            max_bytes,
            queued: Mutex::new(HashSet::new()),
            running: Semaphore::new(CONCURRENT),
            failed: Mutex::new(HashMap::new()),
            backfill: Mutex::new((0, Instant::now())),
            fetched: Mutex::new(None),
        }
    }

    /// Whether `d` failed lately and must not be asked for yet.
    fn resting(&self, d: &Digest) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(d)
            .is_some_and(|(until, _)| Instant::now() < *until)
    }

    fn outcome(&self, d: Digest, ok: bool) {
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            f.remove(&d);
            return;
        }
        if f.len() >= QUEUED {
            let now = Instant::now();
            f.retain(|_, (until, _)| *until > now);
        }
        let attempts = f.get(&d).map_or(0, |(_, a)| *a).saturating_add(1);
        let wait = Duration::from_secs(1u64 << attempts.min(6)).min(MAX_BACKOFF);
        f.insert(d, (Instant::now() + wait, attempts));
    }

    /// One step of the backfill pass: asks for the blobs the next committed
    /// entries name that this node lacks (a node restored from nothing, or
    /// one whose fetches failed, gets them back over time).
    pub fn backfill(self: &Arc<Self>) {
        let from = {
            let b = self.backfill.lock().unwrap_or_else(|p| p.into_inner());
            if Instant::now() < b.1 {
                return;
            }
            b.0
        };
        if self.queued.lock().unwrap_or_else(|p| p.into_inner()).len() > QUEUED / 2 {
            return;
        }
        let (lacking, next, size) = {
            let st = read(&self.store);
            let size = st.head().log_size;
            let end = size.min(from.saturating_add(BACKFILL_STEP));
            let mut lacking = Vec::new();
            for i in from..end {
                if let Ok(Some(e)) = st.entry(i) {
                    lacking.extend(missing(&e.body, &|d| st.has_blob(d).unwrap_or(false), &|d| {
                        st.blob(d).ok().flatten()
                    }));
                }
            }
            (lacking, end, size)
        };
        self.want(lacking);
        let mut b = self.backfill.lock().unwrap_or_else(|p| p.into_inner());
        *b = if next >= size {
            (0, Instant::now() + BACKFILL_REST)
        } else {
            (next, Instant::now())
        };
    }

    /// Tells `tx` of every blob fetched from now on.
    pub fn notify(&self, tx: mpsc::Sender<Digest>) {
        *self.fetched.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    fn holds(&self, d: &Digest) -> bool {
        read(&self.store).has_blob(d).unwrap_or(false)
    }

    /// Fetches each of `digests` this node lacks, in the background (and
    /// the blobs named inside them); returns at once. For an event that
    /// comes once (an offer, a commit): a blob that failed lately is asked
    /// for again.
    pub fn ensure(self: &Arc<Self>, digests: impl IntoIterator<Item = Digest>) {
        self.fetch_missing(digests, false);
    }

    /// [`Fetcher::ensure`] for what is asked again and again (a leader's
    /// every tick, the backfill pass): a blob that failed lately rests.
    pub fn want(self: &Arc<Self>, digests: impl IntoIterator<Item = Digest>) {
        self.fetch_missing(digests, true);
    }

    fn fetch_missing(self: &Arc<Self>, digests: impl IntoIterator<Item = Digest>, rest: bool) {
        for d in digests {
            if d == Digest::ZERO || (rest && self.resting(&d)) || self.holds(&d) {
                continue;
            }
            {
                let mut q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
                if q.len() >= QUEUED || !q.insert(d) {
                    continue;
                }
            }
            let me = self.clone();
            tokio::spawn(async move {
                let got = me.fetch_now(d).await;
                me.queued.lock().unwrap_or_else(|p| p.into_inner()).remove(&d);
                if let Some(b) = got {
                    me.ensure(named_within(&b));
                }
            });
        }
    }

    /// The blob, from this node's store or else from a peer (then kept).
    pub async fn get(&self, d: Digest) -> Option<Vec<u8>> {
        if let Some(b) = read(&self.store).blob(&d).ok().flatten() {
            return Some(b);
        }
        if self.resting(&d) {
            return None;
        }
        self.fetch_now(d).await
    }

    /// Fetches `d` and keeps it: every peer is asked whether it holds it
    /// (a length-only part, answered within [`PROBE_TIMEOUT`]), and the
    /// blob is read part by part from the first that answers, then the
    /// next, until one serves all of it. A peer whose parts do not make
    /// the blob is banned.
    async fn fetch_now(&self, d: Digest) -> Option<Vec<u8>> {
        let _slot = self.running.acquire().await.ok()?;
        if let Some(b) = read(&self.store).blob(&d).ok().flatten() {
            return Some(b);
        }
        let got = self.ask_peers(d).await;
        self.outcome(d, got.is_some());
        if got.is_some() {
            if let Some(tx) = self.fetched.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let _ = tx.try_send(d);
            }
        }
        got
    }

    async fn ask_peers(&self, d: Digest) -> Option<Vec<u8>> {
        let mut probes: FuturesUnordered<_> = self
            .peers
            .iter()
            .map(|&peer| async move {
                let r = match tokio::time::timeout(PROBE_TIMEOUT, self.part(peer, &d, 0, 0)).await {
                    Ok(r) => r,
                    Err(_) => Err("no answer".into()),
                };
                (peer, r)
            })
            .collect();
        while let Some((peer, probe)) = probes.next().await {
            let total = match probe {
                Ok(p) => p.total,
                Err(why) => {
                    tracing::trace!("blob {} at {peer}: {why}", d.short());
                    continue;
                }
            };
            if total > self.max_bytes {
                tracing::warn!(
                    "blob {} at {peer} is {total} bytes, over this node's limit of {} (max_blob_bytes): \
                     not fetched, and this node votes for no block naming it",
                    d.short(),
                    self.max_bytes
                );
                continue;
            }
            let deadline = BLOB_TIMEOUT + Duration::from_secs(total >> 20);
            let bytes = match tokio::time::timeout(deadline, self.read_from(peer, &d, total)).await {
                Ok(Ok(b)) => b,
                Ok(Err(why)) => {
                    tracing::debug!("blob {} from {peer}: {why}", d.short());
                    continue;
                }
                Err(_) => {
                    tracing::debug!("blob {} from {peer}: not all of it in {deadline:?}", d.short());
                    continue;
                }
            };
            // Hashing and the synced write run off the async workers.
            let store = self.store.clone();
            let kept = tokio::task::spawn_blocking(move || {
                if storage::blob_digest(&bytes) != d {
                    return Err(None);
                }
                match read(&store).put_blob(&bytes) {
                    Ok(_) => Ok(bytes),
                    Err(e) => Err(Some(e.to_string())),
                }
            })
            .await;
            match kept {
                Ok(Ok(b)) => {
                    tracing::debug!("blob {} ({} bytes) fetched from {peer}", d.short(), b.len());
                    return Some(b);
                }
                Ok(Err(None)) => {
                    tracing::warn!("peer {peer} served bytes that are not blob {}: banned", d.short());
                    let _ = self
                        .net
                        .send(NetCommand::Punish {
                            peer,
                            fault: crate::guard::Fault::Malformed,
                        })
                        .await;
                }
                Ok(Err(Some(e))) => {
                    tracing::error!("keeping blob {}: {e}", d.short());
                    return None;
                }
                Err(e) => {
                    tracing::error!("checking blob {}: {e}", d.short());
                    return None;
                }
            }
        }
        None
    }

    async fn part(&self, peer: PeerId, d: &Digest, offset: u64, len: u32) -> Result<BlobPart, String> {
        let (reply, rx) = oneshot::channel();
        self.net
            .send(NetCommand::Request {
                peer,
                data: to_bytes(&Request::BlobPart {
                    digest: *d,
                    offset,
                    len,
                }),
                reply,
            })
            .await
            .map_err(|e| e.to_string())?;
        let bytes = tokio::time::timeout(PART_TIMEOUT, rx)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())??;
        match from_bytes::<Response>("response", &bytes).map_err(|e| e.to_string())? {
            Response::BlobPart(Some(p)) => Ok(p),
            Response::BlobPart(None) => Err("not held".into()),
            _ => Err("an answer of another kind".into()),
        }
    }

    /// The whole blob of `total` bytes from one peer, every part checked
    /// for length (the caller checks the whole against its digest).
    async fn read_from(&self, peer: PeerId, d: &Digest, total: u64) -> Result<Vec<u8>, String> {
        // Grown as parts arrive: a claimed length reserves nothing.
        let mut out = Vec::new();
        while (out.len() as u64) < total {
            let offset = out.len() as u64;
            let want = PART_BYTES.min(total - offset);
            let p = self.part(peer, d, offset, want as u32).await?;
            if p.total != total || p.bytes.0.len() as u64 != want {
                return Err(format!(
                    "part at {offset}: {} of {} bytes (wanted {want} of {total})",
                    p.bytes.0.len(),
                    p.total
                ));
            }
            out.extend_from_slice(&p.bytes.0);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_world::World;

    #[test]
    fn parts_cover_a_blob_exactly_and_none_past_its_end() {
        let w = World::new();
        let dir = std::env::temp_dir().join(format!("govtune-blob-parts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir, "test", &w.keyring).expect("store");
        let blob: Vec<u8> = (0..(PART_BYTES * 2 + 5)).map(|i| (i % 251) as u8).collect();
        let d = store.put_blob(&blob).expect("put");
        let mut got = Vec::new();
        let mut offset = 0;
        while let Some(p) = serve(&store, &d, offset, u32::MAX) {
            assert_eq!(p.total, blob.len() as u64);
            assert!(p.bytes.0.len() as u64 <= PART_BYTES);
            offset += p.bytes.0.len() as u64;
            got.extend_from_slice(&p.bytes.0);
        }
        assert_eq!(got, blob);
        assert_eq!(offset, blob.len() as u64);
        assert!(serve(&store, &d, blob.len() as u64, 1).is_none());
        assert!(serve(&store, &d, blob.len() as u64 + 1, 1).is_none());
        assert!(serve(&store, &Digest([1; 32]), 0, 1).is_none(), "not held");
        // Length only; a short part.
        let probe = serve(&store, &d, 0, 0).expect("held");
        assert_eq!((probe.total, probe.bytes.0.len()), (blob.len() as u64, 0));
        assert_eq!(
            serve(&store, &d, 3, 2).map(|p| p.bytes.0),
            Some(blob[3..5].to_vec())
        );
        let e = store.put_blob(b"").expect("put");
        assert_eq!(serve(&store, &e, 0, 10).map(|p| p.total), Some(0));
        assert!(serve(&store, &e, 1, 10).is_none());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_names_its_delta_and_sketch_and_a_campaign_its_recipe_and_base_weights() {
        let w = World::new();
        let mut step = w.step(crate::test_world::T0);
        assert!(
            named(&EntryBody::Step(step.clone())).is_empty(),
            "zero digests name nothing"
        );
        step.delta_blob = Digest([7; 32]);
        step.sketch_blob = Digest([8; 32]);
        let body = EntryBody::Step(step);
        assert_eq!(named(&body), vec![Digest([7; 32]), Digest([8; 32])]);
        let held = |d: &Digest| *d == Digest([7; 32]);
        assert_eq!(missing(&body, &held, &|_| None), vec![Digest([8; 32])]);

        let settings: tuner::campaign::TrainSettings = toml::from_str(
            "batch_size = 4\nepochs = 1\nmax_steps = 2\nseed = 1\nsketch_seed = 2\nsketch_side = 2\n\
             checkpoint_every = 0\n[model]\ncontext = 8\nd_model = 8\nlayers = 1\nheads = 1\nmlp_mult = 2\n\
             [lora]\nrank = 1\nalpha = 1.0\ndropout = 0.0\n\
             [optim]\nlr = 0.1\nbeta1 = 0.9\nbeta2 = 0.99\neps = 1e-8\nweight_decay = 0.0\n",
        )
        .expect("settings");
        let considered = vec![provenance::order::ConsideredSource {
            source: Digest([9; 32]),
            examples: 4,
        }];
        let recipe = tuner::recipe::Recipe::new(settings, b"base weights", considered);
        let bytes = recipe.to_bytes();
        assert!(
            tuner::recipe::Recipe::from_bytes(&bytes).is_ok(),
            "a valid recipe"
        );
        let recipe_digest = storage::blob_digest(&bytes);
        let mut campaign = crate::test_world::campaign(&w.policy, "research", "c");
        campaign.recipe = recipe_digest;
        let body = EntryBody::Campaign(campaign);
        assert_eq!(named(&body), vec![recipe_digest]);
        // Lacking the recipe, the node lacks it; holding it, it lacks the
        // base weights the recipe names.
        assert_eq!(missing(&body, &|_| false, &|_| None), vec![recipe_digest]);
        let holds_recipe = |d: &Digest| *d == recipe_digest;
        let read = |d: &Digest| (*d == recipe_digest).then(|| bytes.clone());
        assert_eq!(
            missing(&body, &holds_recipe, &read),
            vec![storage::blob_digest(b"base weights")]
        );
        assert!(missing(&body, &|_| true, &read).is_empty());
    }
}
