//! The node's core: one task that owns the consensus engine, the ledger
//! application and the co-signing table, fed by the network, the API and a
//! clock tick. One owner means no locks around consensus state; the store
//! sits behind a read-write lock so API reads do not queue behind it.
//!
//! ```text
//!   HTTP API ──ApiCommand──▶┐                 ┌──NetCommand──▶ network task
//!                           │  core (this)    │               (swarm: gossip,
//!   network task ─NetEvent─▶│  engine, ledger ├──Store (RocksDB)  request-response)
//!   20 ms tick ────────────▶┘  co-signing     │
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use consensus::{Action, BlsThreshold, Config, Engine, Message, SafetyState};
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use provenance::codec::{decode_raw, encode};
use provenance::crypto::{
    AuthoritySignature, AuthoritySigner, CoSigner, ConsortiumSignatureShare, ConsortiumSigner,
};
use provenance::entry::SigningPlan;
use provenance::{
    AuthorityId, Bytes, Canonical, Checkpoint, Digest, EntryBody, Genesis, KeyRing, LedgerEntry, Role,
    SignatureScheme, SignedCheckpoint, Timestamp,
};
use serde::{Deserialize, Serialize};
use storage::Store;
use tokio::sync::{mpsc, oneshot};

use crate::api::{self, ApiState};
use crate::config::NodeConfig;
use crate::cosign::{check_section, CheckContext};
use crate::ledger::{BlockLimits, Ledger};
use crate::metrics::Metrics;
use crate::p2p::{build_swarm, NetCommand, NetEvent, Network, Topic, Topics};
use crate::wire::{check_body, from_bytes, to_bytes, ConsensusMessage, Gossip, Request, Response};

/// Why a node stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Configuration, genesis or key files.
    #[error("setup: {0}")]
    Setup(String),
    /// The store.
    #[error(transparent)]
    Store(#[from] storage::StoreError),
    /// The ledger could not take a finalised block.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// The network.
    #[error(transparent)]
    Net(#[from] crate::p2p::NetError),
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where an entry stands on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum EntryStatus {
    /// Waiting for signatures, or for a block.
    Pending {
        /// Authorities that signed.
        signed: Vec<AuthorityId>,
        /// Authorities still to sign.
        missing: Vec<AuthorityId>,
        /// Every signature is in: waiting for a block.
        complete: bool,
    },
    /// A co-signer refused it; it will not be committed.
    Refused {
        /// The refusing authority.
        by: AuthorityId,
        /// Its reason.
        reason: String,
    },
}

/// A refused API request: HTTP status and reason.
#[derive(Debug, Clone)]
pub struct Refused {
    /// HTTP status (4xx).
    pub status: u16,
    /// Why.
    pub reason: String,
}

/// What the API asks of the core.
#[derive(Debug)]
pub enum ApiCommand {
    /// Sign and offer an entry body submitted by this authority's tools.
    Submit {
        /// The body.
        body: Box<EntryBody>,
        /// Digest and status, or why not.
        reply: oneshot::Sender<Result<(Digest, Option<EntryStatus>), Refused>>,
    },
    /// The status of an entry not yet in the log.
    Status {
        /// Body digest.
        digest: Digest,
        /// The status, if known here.
        reply: oneshot::Sender<Option<EntryStatus>>,
    },
    /// A blob this node lacks, fetched from peers.
    FetchBlob {
        /// Digest.
        digest: Digest,
        /// The blob, if a peer had it.
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingRecord {
    version: u16,
    body: EntryBody,
    signatures: Vec<AuthoritySignature>,
    refused: Option<(AuthorityId, String)>,
}

struct Pending {
    body: EntryBody,
    plan: SigningPlan,
    scheme: SignatureScheme,
    sigs: BTreeMap<AuthorityId, AuthoritySignature>,
    refused: Option<(AuthorityId, String)>,
    own: bool,
    complete: bool,
    first_seen: Instant,
    /// When housekeeping may re-offer it next, and how many times it has.
    next_reoffer: Instant,
    reoffers: u32,
}

impl Pending {
    fn status(&self) -> EntryStatus {
        if let Some((by, reason)) = &self.refused {
            return EntryStatus::Refused {
                by: by.clone(),
                reason: reason.clone(),
            };
        }
        let mut signed = Vec::new();
        let mut missing = Vec::new();
        for r in &self.plan.requests {
            if self.sigs.contains_key(&r.authority) {
                signed.push(r.authority.clone());
            } else {
                missing.push(r.authority.clone());
            }
        }
        EntryStatus::Pending {
            signed,
            missing,
            complete: self.complete,
        }
    }

    fn record(&self) -> PendingRecord {
        PendingRecord {
            version: 1,
            body: self.body.clone(),
            signatures: self.sigs.values().cloned().collect(),
            refused: self.refused.clone(),
        }
    }
}

enum Internal {
    Replies {
        from: u16,
        messages: Vec<ConsensusMessage>,
    },
    Checkpoints(Vec<SignedCheckpoint>),
}

type Act = Action<crate::wire::BlockPayload, Bytes, Bytes>;

/// A one-line account of a consensus message, for debug logs.
fn describe(m: &ConsensusMessage) -> String {
    match m {
        Message::Propose {
            proposal,
            nullifications,
            ..
        } => format!(
            "propose view {} height {} ({} entries, {} nullifications)",
            proposal.view.0,
            proposal.height.0,
            proposal.payload.entries.len(),
            nullifications.len()
        ),
        Message::Vote(v) => format!(
            "vote {:?} view {} by {}",
            v.subject.kind, v.subject.view.0, v.signer
        ),
        Message::Certificate(c) => format!("certificate {:?} view {}", c.subject.kind, c.subject.view.0),
        Message::SyncRequest { from } => format!("sync request from height {}", from.0),
        Message::SyncResponse { blocks, .. } => format!("sync response of {} blocks", blocks.len()),
        Message::BlockRequest { block } => format!("block request {}", block.short()),
        Message::Block { proposal } => format!("block view {} height {}", proposal.view.0, proposal.height.0),
    }
}

struct Core {
    genesis: Arc<Genesis>,
    keyring: Arc<KeyRing>,
    me: u16,
    authority: AuthorityId,
    signer: AuthoritySigner,
    consortium: Arc<ConsortiumSigner>,
    store: Arc<RwLock<Store>>,
    engine: Engine<Ledger, BlsThreshold>,
    ledger: Ledger,
    pending: HashMap<Digest, Pending>,
    shares: BTreeMap<u64, (Checkpoint, BTreeMap<u16, Bytes>)>,
    peer_index: HashMap<PeerId, u16>,
    peers: Vec<PeerId>,
    net: mpsc::Sender<NetCommand>,
    internal: mpsc::Sender<Internal>,
    metrics: Arc<Metrics>,
    max_skew: u64,
    last_checkpoint_request: Instant,
}

fn read(store: &RwLock<Store>) -> std::sync::RwLockReadGuard<'_, Store> {
    store.read().unwrap_or_else(|p| p.into_inner())
}

fn write(store: &RwLock<Store>) -> std::sync::RwLockWriteGuard<'_, Store> {
    store.write().unwrap_or_else(|p| p.into_inner())
}

impl Core {
    fn publish(&self, topic: Topic, g: &Gossip) {
        let _ = self.net.try_send(NetCommand::Publish {
            topic,
            data: to_bytes(g),
        });
    }

    fn request(&self, peer: PeerId, req: &Request) -> oneshot::Receiver<Result<Vec<u8>, String>> {
        let (reply, rx) = oneshot::channel();
        let _ = self.net.try_send(NetCommand::Request {
            peer,
            data: to_bytes(req),
            reply,
        });
        rx
    }

    /// Sends a consensus request to one validator; its answers come back
    /// through the internal channel.
    fn consensus_request(&self, to: u16, msg: ConsensusMessage) {
        let Some(peer) = self.genesis_peer(to) else {
            return;
        };
        let rx = self.request(peer, &Request::Consensus(msg));
        let internal = self.internal.clone();
        tokio::spawn(async move {
            if let Ok(Ok(bytes)) = rx.await {
                if let Ok(Response::Consensus(messages)) = from_bytes::<Response>("response", &bytes) {
                    let _ = internal.send(Internal::Replies { from: to, messages }).await;
                }
            }
        });
    }

    fn genesis_peer(&self, validator: u16) -> Option<PeerId> {
        self.peers.get(usize::from(validator)).copied()
    }

    fn process(
        &mut self,
        actions: Vec<Act>,
        mut reply: Option<(u16, &mut Vec<ConsensusMessage>)>,
    ) -> Result<(), NodeError> {
        for a in actions {
            if let Action::Send { to, message } = &a {
                tracing::debug!("send to {to:?}: {}", describe(message));
            }
            match a {
                Action::Persist(s) => read(&self.store).put_safety_state(&encode(&s))?,
                Action::Send { to: None, message } => match message {
                    Message::SyncRequest { .. } | Message::BlockRequest { .. } => {
                        for v in 0..self.genesis.consortium.n {
                            if v != self.me {
                                self.consensus_request(v, message.clone());
                            }
                        }
                    }
                    m => self.publish(Topic::Consensus, &Gossip::Consensus(m)),
                },
                Action::Send { to: Some(v), message } => match &mut reply {
                    Some((from, out)) if *from == v => out.push(message),
                    _ => self.consensus_request(v, message),
                },
                Action::Finalized {
                    proposal,
                    finalization,
                } => {
                    let c = self.ledger.finalize(&proposal, finalization)?;
                    tracing::debug!("finalised height {} ({} entries)", c.height, c.digests.len());
                    let m = &self.metrics;
                    m.height.store(c.height, Relaxed);
                    m.log_size.store(c.log_size, Relaxed);
                    m.events_committed.fetch_add(c.events, Relaxed);
                    m.examples_committed.fetch_add(c.examples, Relaxed);
                    for d in &c.digests {
                        if let Some(p) = self.pending.remove(d) {
                            if p.own {
                                m.observe_finality(p.first_seen.elapsed().as_secs_f64());
                            }
                        }
                    }
                    if c.certified {
                        self.sign_checkpoint(c.height, c.log_size, c.root);
                    }
                }
                Action::Misbehaved { peer, what } => {
                    tracing::warn!("validator {peer} misbehaved: {what:?}");
                    self.metrics.misbehaviour.fetch_add(1, Relaxed);
                }
            }
        }
        Ok(())
    }

    fn sign_checkpoint(&mut self, height: u64, size: u64, root: Digest) {
        let cp = Checkpoint {
            version: Checkpoint::VERSION,
            origin: self.genesis.consortium_name.clone(),
            size,
            root,
            height,
        };
        let share = self.consortium.sign_share(&cp.signing_message());
        self.publish(
            Topic::Events,
            &Gossip::CheckpointShare {
                checkpoint: cp.clone(),
                validator: self.me,
                share: share.share.clone(),
            },
        );
        self.add_share(cp, self.me, share.share);
    }

    fn add_share(&mut self, cp: Checkpoint, validator: u16, share: Bytes) {
        let height = cp.height;
        let (head_height, have) = {
            let s = read(&self.store);
            (s.head().height, s.checkpoint(height).ok().flatten())
        };
        if let Some(signed) = have {
            // A peer still collecting for a height certified here: help it.
            if validator != self.me && signed.checkpoint == cp {
                self.publish(Topic::Events, &Gossip::Checkpoint(signed));
            }
            return;
        }
        if height > head_height + 64 || height + 256 < head_height {
            return;
        }
        let msg = cp.signing_message();
        if validator != self.me
            && !self.keyring.verify_consortium_share(
                &ConsortiumSignatureShare {
                    validator,
                    share: share.clone(),
                },
                &msg,
            )
        {
            self.metrics.misbehaviour.fetch_add(1, Relaxed);
            return;
        }
        let entry = self
            .shares
            .entry(height)
            .or_insert_with(|| (cp.clone(), BTreeMap::new()));
        if entry.0 != cp {
            // Shares for another root at this height: only ours counts
            // toward what we certify; keep the first seen for our own.
            if validator == self.me {
                *entry = (cp.clone(), BTreeMap::new());
            } else {
                return;
            }
        }
        entry.1.insert(validator, share);
        if entry.1.len() > self.keyring.consortium_threshold() && height <= head_height {
            let shares: Vec<ConsortiumSignatureShare> = entry
                .1
                .iter()
                .map(|(v, s)| ConsortiumSignatureShare {
                    validator: *v,
                    share: s.clone(),
                })
                .collect();
            if let Ok(signature) = self.keyring.combine_verified_consortium_shares(&shares) {
                let signed = SignedCheckpoint {
                    checkpoint: cp,
                    signature,
                };
                self.store_checkpoint(&signed);
            }
        }
        let keep = head_height.saturating_sub(256);
        self.shares = self.shares.split_off(&keep);
    }

    fn store_checkpoint(&mut self, signed: &SignedCheckpoint) {
        let mut s = write(&self.store);
        if s.checkpoint(signed.checkpoint.height).ok().flatten().is_some() {
            return;
        }
        match s.put_checkpoint(signed, &self.keyring) {
            Ok(()) => {
                self.metrics.checkpoints.fetch_add(1, Relaxed);
                self.shares.remove(&signed.checkpoint.height);
            }
            Err(e) => tracing::debug!("checkpoint at {}: {e}", signed.checkpoint.height),
        }
    }

    fn plan(&self, body: &EntryBody) -> Result<SigningPlan, Refused> {
        let s = read(&self.store);
        body.signing_plan(s.state()).map_err(|e| Refused {
            status: 409,
            reason: format!("{e} (is everything it refers to committed yet?)"),
        })
    }

    /// Takes an entry body from the API (own) or a peer's offer. An own
    /// entry is on disk before this node signs or offers it; a refusal
    /// restored from disk is in place before anything is signed.
    fn offer(
        &mut self,
        body: EntryBody,
        sigs: Vec<AuthoritySignature>,
        own: bool,
        restored_refusal: Option<(AuthorityId, String)>,
    ) -> Result<Digest, Refused> {
        check_body(&body).map_err(|e| Refused {
            status: 400,
            reason: e.to_string(),
        })?;
        let digest = body.digest();
        if read(&self.store).index_of(&digest).ok().flatten().is_some() {
            return Ok(digest);
        }
        let inserted = !self.pending.contains_key(&digest);
        if inserted {
            let plan = self.plan(&body)?;
            let scheme = plan.scheme.unwrap_or(SignatureScheme::Bls12381);
            self.pending.insert(
                digest,
                Pending {
                    body,
                    plan,
                    scheme,
                    sigs: BTreeMap::new(),
                    refused: restored_refusal,
                    own,
                    complete: false,
                    first_seen: Instant::now(),
                    next_reoffer: Instant::now() + Duration::from_secs(1),
                    reoffers: 0,
                },
            );
        }
        let newly_own = own && self.pending.get(&digest).is_some_and(|p| !p.own || inserted);
        if newly_own {
            let rec = match self.pending.get_mut(&digest) {
                Some(p) => {
                    p.own = true;
                    encode(&p.record())
                }
                None => Vec::new(),
            };
            if let Err(e) = read(&self.store).put_pending(&digest, &rec) {
                tracing::error!("persisting a pending entry: {e}");
                if inserted {
                    self.pending.remove(&digest);
                } else if let Some(p) = self.pending.get_mut(&digest) {
                    p.own = false;
                }
                return Err(Refused {
                    status: 503,
                    reason: "the node could not store the entry".into(),
                });
            }
        }
        let offer_had_mine = own || sigs.iter().any(|s| s.authority == self.authority);
        for sig in sigs {
            self.add_signature(&digest, sig);
        }
        self.maybe_sign(&digest, offer_had_mine);
        self.maybe_complete(&digest);
        let refused = self.pending.get(&digest).is_some_and(|p| p.refused.is_some());
        if newly_own && !refused {
            self.publish_offer(&digest);
        }
        Ok(digest)
    }

    fn publish_offer(&self, digest: &Digest) {
        if let Some(p) = self.pending.get(digest) {
            self.publish(
                Topic::Events,
                &Gossip::Offer {
                    body: p.body.clone(),
                    signatures: p.sigs.values().cloned().collect(),
                },
            );
        }
    }

    fn add_signature(&mut self, digest: &Digest, sig: AuthoritySignature) {
        let Some(p) = self.pending.get_mut(digest) else {
            return;
        };
        if p.sigs.contains_key(&sig.authority) || sig.scheme != p.scheme {
            return;
        }
        let Some(req) = p.plan.requests.iter().find(|r| r.authority == sig.authority) else {
            return;
        };
        if self.keyring.verify(&sig, &req.message).is_ok() {
            p.sigs.insert(sig.authority.clone(), sig);
        } else {
            self.metrics.misbehaviour.fetch_add(1, Relaxed);
        }
    }

    /// Signs this authority's section if it is required and checks out;
    /// re-sends a signature given before when a peer's offer lacked it.
    fn maybe_sign(&mut self, digest: &Digest, offer_had_mine: bool) {
        let Some(p) = self.pending.get(digest) else {
            return;
        };
        let Some(req) = p.plan.requests.iter().find(|r| r.authority == self.authority) else {
            return;
        };
        if let Some(sig) = p.sigs.get(&self.authority) {
            if !offer_had_mine {
                self.publish(
                    Topic::Events,
                    &Gossip::Signature {
                        entry: *digest,
                        signature: sig.clone(),
                    },
                );
            }
            return;
        }
        if let Some((by, reason)) = &p.refused {
            // A peer offers it again: our refusal may have been lost.
            if by == &self.authority && !offer_had_mine && !p.own {
                self.publish(
                    Topic::Events,
                    &Gossip::Refusal {
                        entry: *digest,
                        authority: by.clone(),
                        reason: reason.clone(),
                    },
                );
            }
            return;
        }
        let registration = matches!(
            p.body,
            EntryBody::Manifest(_) | EntryBody::Policy(_) | EntryBody::Revocation(_) | EntryBody::Campaign(_)
        );
        let verdict = match req.role {
            // The operator vouches for its own measurement, and each
            // authority registers its own objects, only from its own tools.
            _ if p.own && (req.role == Role::Operator || registration) => Ok(()),
            Role::Operator => Err("an operator signs only the entries its own tools submitted".to_string()),
            _ if registration => Err("an authority registers only what its own tools submitted".to_string()),
            role => {
                let store = read(&self.store);
                let sig_of = |d: &Digest| -> Option<provenance::crypto::CoSignature> {
                    let i = store.index_of(d).ok()??;
                    match store.entry(i).ok()??.attestation {
                        provenance::Attestation::Authorities(c) => Some(c),
                        provenance::Attestation::Consortium(_) => None,
                    }
                };
                let ctx = CheckContext {
                    keyring: &self.keyring,
                    state: store.state(),
                    manifest_signature: &sig_of,
                    now: Timestamp(now_ms()),
                    max_skew: self.max_skew,
                };
                check_section(role, &self.authority, &p.body, &ctx)
            }
        };
        let message = req.message.clone();
        let scheme = p.scheme;
        match verdict {
            Ok(()) => match self.signer.sign(scheme, &message) {
                Ok(sig) => {
                    if let Some(p) = self.pending.get_mut(digest) {
                        p.sigs.insert(self.authority.clone(), sig.clone());
                    }
                    self.publish(
                        Topic::Events,
                        &Gossip::Signature {
                            entry: *digest,
                            signature: sig,
                        },
                    );
                }
                Err(e) => tracing::error!("cannot sign: {e}"),
            },
            Err(reason) => {
                tracing::info!("refusing to co-sign {}: {reason}", digest.short());
                self.refuse(digest, self.authority.clone(), reason.clone());
                self.publish(
                    Topic::Events,
                    &Gossip::Refusal {
                        entry: *digest,
                        authority: self.authority.clone(),
                        reason,
                    },
                );
            }
        }
    }

    fn refuse(&mut self, digest: &Digest, by: AuthorityId, reason: String) {
        let Some(p) = self.pending.get_mut(digest) else {
            return;
        };
        if p.refused.is_some() || !p.plan.requests.iter().any(|r| r.authority == by) {
            return;
        }
        p.refused = Some((by, reason));
        if p.own {
            let rec = encode(&p.record());
            if let Err(e) = read(&self.store).put_pending(digest, &rec) {
                tracing::error!("persisting a refusal: {e}");
            }
        }
    }

    fn maybe_complete(&mut self, digest: &Digest) {
        let Some(p) = self.pending.get_mut(digest) else {
            return;
        };
        if p.complete || p.refused.is_some() || p.sigs.len() < p.plan.requests.len() {
            return;
        }
        let assembled = (|| {
            let mut c = CoSigner::new(&self.keyring, p.scheme, p.plan.requests.clone())?;
            for s in p.sigs.values() {
                // Each was verified once, in `add_signature` (or is ours).
                c.add_verified(s.clone())?;
            }
            c.finish()
        })();
        match assembled {
            Ok(cosig) => {
                p.complete = true;
                let own = p.own;
                let entry = LedgerEntry::signed(p.body.clone(), cosig);
                self.ledger.add(*digest, entry);
                if own {
                    self.publish_offer(digest);
                }
            }
            Err(e) => tracing::warn!("assembling {}: {e}", digest.short()),
        }
    }

    fn on_gossip(&mut self, author: PeerId, topic: Topic, data: &[u8]) -> Result<(), NodeError> {
        let Some(&from) = self.peer_index.get(&author) else {
            return Ok(());
        };
        let Ok(g) = from_bytes::<Gossip>("gossip", data) else {
            self.metrics.misbehaviour.fetch_add(1, Relaxed);
            return Ok(());
        };
        match (topic, g) {
            (Topic::Consensus, Gossip::Consensus(m)) => {
                tracing::debug!("gossip from {from}: {}", describe(&m));
                self.ledger.set_now(now_ms());
                let actions = self.engine.handle(&mut self.ledger, from, m);
                self.process(actions, None)?;
            }
            (Topic::Events, Gossip::Offer { body, signatures }) => {
                let _ = self.offer(body, signatures, false, None);
            }
            (Topic::Events, Gossip::Signature { entry, signature }) => {
                self.add_signature(&entry, signature);
                self.maybe_complete(&entry);
            }
            (
                Topic::Events,
                Gossip::Refusal {
                    entry,
                    authority,
                    reason,
                },
            ) => {
                let by_node = self.genesis.nodes.get(usize::from(from)).map(|n| &n.authority);
                if by_node == Some(&authority) {
                    self.refuse(&entry, authority, reason);
                }
            }
            (
                Topic::Events,
                Gossip::CheckpointShare {
                    checkpoint,
                    validator,
                    share,
                },
            ) if validator == from => self.add_share(checkpoint, validator, share),
            (Topic::Events, Gossip::Checkpoint(signed)) => self.store_checkpoint(&signed),
            _ => {}
        }
        Ok(())
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        data: &[u8],
        channel: ResponseChannel<Bytes>,
    ) -> Result<(), NodeError> {
        let Some(&from) = self.peer_index.get(&peer) else {
            return Ok(());
        };
        let response = match from_bytes::<Request>("request", data) {
            Ok(Request::Consensus(m)) => {
                tracing::debug!("request from {from}: {}", describe(&m));
                self.ledger.set_now(now_ms());
                let actions = self.engine.handle(&mut self.ledger, from, m);
                let mut out = Vec::new();
                self.process(actions, Some((from, &mut out)))?;
                Response::Consensus(out)
            }
            Ok(Request::Blob(d)) => Response::Blob(read(&self.store).blob(&d).ok().flatten().map(Bytes)),
            Ok(Request::Checkpoints { from: h }) => {
                let s = read(&self.store);
                let mut out = Vec::new();
                for height in h..=s.head().height.min(h.saturating_add(255)) {
                    if let Ok(Some(c)) = s.checkpoint(height) {
                        out.push(c);
                    }
                }
                Response::Checkpoints(out)
            }
            Err(_) => {
                self.metrics.misbehaviour.fetch_add(1, Relaxed);
                return Ok(());
            }
        };
        let _ = self.net.try_send(NetCommand::Respond {
            channel,
            data: to_bytes(&response),
        });
        Ok(())
    }

    fn on_api(&mut self, cmd: ApiCommand) {
        match cmd {
            ApiCommand::Submit { body, reply } => {
                let r = self
                    .offer(*body, Vec::new(), true, None)
                    .map(|d| (d, self.pending.get(&d).map(Pending::status)));
                let _ = reply.send(r);
            }
            ApiCommand::Status { digest, reply } => {
                let _ = reply.send(self.pending.get(&digest).map(Pending::status));
            }
            ApiCommand::FetchBlob { digest, reply } => {
                let rxs: Vec<_> = self
                    .peers
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != usize::from(self.me))
                    .map(|(_, p)| self.request(*p, &Request::Blob(digest)))
                    .collect();
                let store = self.store.clone();
                tokio::spawn(async move {
                    for rx in rxs {
                        if let Ok(Ok(Ok(Response::Blob(Some(b))))) =
                            tokio::time::timeout(Duration::from_secs(5), rx).await.map(|r| {
                                r.map(|r| {
                                    r.and_then(|b| {
                                        from_bytes::<Response>("response", &b).map_err(|e| e.to_string())
                                    })
                                })
                            })
                        {
                            if storage::blob_digest(b.as_slice()) == digest {
                                let _ = read(&store).put_blob(b.as_slice());
                                let _ = reply.send(Some(b.0));
                                return;
                            }
                        }
                    }
                    let _ = reply.send(None);
                });
            }
        }
    }

    /// Every second: re-offer own entries not yet committed (a co-signer
    /// that was away signs now), and ask for checkpoints this node lacks.
    fn housekeeping(&mut self) {
        // The oldest first, at most 256 a second, each entry backing off
        // (1, 2, 4 .. 16 s): while consensus is stalled, re-offers must
        // not fill the gossip queues its own messages need.
        let now = Instant::now();
        let mut own: Vec<(Instant, Digest)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.own && p.refused.is_none() && p.next_reoffer <= now)
            .map(|(d, p)| (p.first_seen, *d))
            .collect();
        own.sort();
        for (_, d) in own.iter().take(256) {
            self.publish_offer(d);
            if let Some(p) = self.pending.get_mut(d) {
                p.reoffers = p.reoffers.saturating_add(1);
                p.next_reoffer = now + Duration::from_secs(1 << p.reoffers.min(4));
            }
        }
        let m = &self.metrics;
        m.mempool.store(self.ledger.mempool_len() as u64, Relaxed);
        m.pending.store(self.pending.len() as u64, Relaxed);
        m.view.store(self.engine.view().0, Relaxed);
        // Forget others' entries that stalled (their submitter re-offers).
        self.pending
            .retain(|_, p| p.own || p.first_seen.elapsed() < Duration::from_secs(600));
        let (head, latest) = {
            let s = read(&self.store);
            (
                s.head().height,
                s.latest_checkpoint().map(|c| c.checkpoint.height).unwrap_or(0),
            )
        };
        if head > latest + 4 && self.last_checkpoint_request.elapsed() > Duration::from_secs(3) {
            self.last_checkpoint_request = Instant::now();
            let from = head.saturating_sub(3);
            for v in 0..self.genesis.consortium.n {
                if v == self.me {
                    continue;
                }
                if let Some(peer) = self.genesis_peer(v) {
                    let rx = self.request(peer, &Request::Checkpoints { from });
                    let internal = self.internal.clone();
                    tokio::spawn(async move {
                        if let Ok(Ok(b)) = rx.await {
                            if let Ok(Response::Checkpoints(cps)) = from_bytes::<Response>("response", &b) {
                                let _ = internal.send(Internal::Checkpoints(cps)).await;
                            }
                        }
                    });
                }
            }
        }
    }
}

/// A running node's addresses.
#[derive(Debug, Clone)]
pub struct Started {
    /// HTTP API address.
    pub api: SocketAddr,
}

/// Runs a node until `shutdown` completes.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let setup = |e: &dyn std::fmt::Display| NodeError::Setup(e.to_string());
    let (genesis, keyring) = genesis::load_genesis(&cfg.genesis).map_err(|e| setup(&e))?;
    let signers = genesis::load_node_keys(&cfg.keys, &genesis, &keyring).map_err(|e| setup(&e))?;
    let token = genesis::load_admin_token(&cfg.admin_token).map_err(|e| setup(&e))?;
    let genesis = Arc::new(genesis);
    let keyring = Arc::new(keyring);
    let me = signers.validator;
    let node = genesis
        .nodes
        .get(usize::from(me))
        .cloned()
        .ok_or_else(|| setup(&"validator not in genesis"))?;
    let role = keyring.authority(&node.authority).map_err(|e| setup(&e))?.role;
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| setup(&e))?;
    let store = Store::open(&cfg.data_dir, &genesis.consortium_name, &keyring)?;

    let (chain, tip) = Ledger::restore_chain(&store)?;
    let kept = Ledger::kept_blocks(&store)?;
    let safety = match store.safety_state()? {
        Some(b) => {
            decode_raw::<SafetyState<Bytes>>("safety state", &b)
                .map_err(|e| setup(&e))?
                .0
        }
        None => SafetyState::genesis(),
    };
    let store = Arc::new(RwLock::new(store));
    let limits = BlockLimits {
        max_entries: cfg.max_block_entries,
        max_bytes: 4 << 20,
        heartbeat_ms: cfg.heartbeat_ms,
        max_skew_ms: genesis.max_clock_skew_ms,
    };
    let mut ledger = Ledger::new(store.clone(), keyring.clone(), limits, tip);
    let consortium = Arc::new(signers.consortium);
    let scheme = BlsThreshold::new(keyring.clone(), consortium.clone());
    let ccfg = Config::new(
        me,
        genesis.consortium.n,
        cfg.view_timeout_ms,
        genesis.max_clock_skew_ms,
    );
    let height = chain.len();
    let mut engine = Engine::restore(ccfg, scheme, safety, chain);
    if !kept.is_empty() {
        tracing::info!("{} kept unfinalised blocks restored", kept.len());
    }
    engine.restore_blocks(&mut ledger, kept);

    // Network.
    let mut secret = signers.node_secret;
    let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).map_err(|e| setup(&e))?;
    let mut peers = Vec::new();
    let mut peer_index = HashMap::new();
    let mut dial = Vec::new();
    for n in &genesis.nodes {
        let id: PeerId = n
            .peer_id
            .parse()
            .map_err(|e| setup(&format!("peer id {}: {e}", n.peer_id)))?;
        peers.push(id);
        peer_index.insert(id, n.validator);
        if n.validator != me {
            let addr: Multiaddr = format!("{}/p2p/{}", n.p2p_listen, n.peer_id)
                .parse()
                .map_err(|e| setup(&format!("address of {}: {e}", n.name)))?;
            dial.push((id, addr));
        }
    }
    let swarm = build_swarm(key, &peers)?;
    let listen: Multiaddr = cfg
        .p2p_listen
        .clone()
        .unwrap_or(node.p2p_listen.clone())
        .parse()
        .map_err(|e| setup(&format!("p2p listen address: {e}")))?;
    let (net_tx, net_rx) = mpsc::channel(4096);
    let (ev_tx, mut ev_rx) = mpsc::channel(4096);
    let network = Network::new(
        swarm,
        listen,
        Topics::new(&genesis.digest().to_string()),
        dial,
        net_rx,
        ev_tx,
    )?;
    tokio::spawn(network.run());

    // API.
    let metrics = Arc::new(Metrics::default());
    {
        let s = read(&store);
        metrics.height.store(s.head().height, Relaxed);
        metrics.log_size.store(s.head().log_size, Relaxed);
    }
    let (api_tx, mut api_rx) = mpsc::channel(1024);
    let api_addr = cfg.api_listen.clone().unwrap_or(node.api_listen.clone());
    let listener = tokio::net::TcpListener::bind(&api_addr)
        .await
        .map_err(|e| setup(&format!("API address {api_addr}: {e}")))?;
    let state = ApiState::new(
        store.clone(),
        api_tx,
        metrics.clone(),
        token,
        node.authority.clone(),
        role,
        genesis.clone(),
        keyring.clone(),
        &cfg,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut api_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        let app = api::router(state);
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = api_stop.changed().await;
            })
            .await;
    });
    tracing::info!(
        "node {} (validator {me}, {} {}) at height {height}; API on {api_addr}",
        node.name,
        role,
        node.authority
    );

    let (internal_tx, mut internal_rx) = mpsc::channel(1024);
    ledger.set_now(now_ms());
    let start = engine.start(&mut ledger, now_ms());
    let mut core = Core {
        genesis: genesis.clone(),
        keyring,
        me,
        authority: node.authority.clone(),
        signer: signers.authority,
        consortium,
        store: store.clone(),
        engine,
        ledger,
        pending: HashMap::new(),
        shares: BTreeMap::new(),
        peer_index,
        peers,
        net: net_tx,
        internal: internal_tx,
        metrics: metrics.clone(),
        max_skew: genesis.max_clock_skew_ms,
        last_checkpoint_request: Instant::now(),
    };
    // Own entries accepted before a restart.
    let saved = read(&store).pending()?;
    for (d, bytes) in saved {
        match decode_raw::<PendingRecord>("pending record", &bytes) {
            Ok((rec, _)) => {
                if let Err(e) = core.offer(rec.body, rec.signatures, true, rec.refused) {
                    tracing::error!("pending entry {}: {}", d.short(), e.reason);
                }
            }
            Err(e) => tracing::error!("pending record {}: {e}", d.short()),
        }
    }
    core.process(start, None)?;

    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut slow = tokio::time::interval(Duration::from_secs(1));
    let mut shutdown = Box::pin(shutdown);
    let result = loop {
        let step: Result<(), NodeError> = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = tick.tick() => {
                let now = now_ms();
                core.ledger.set_now(now);
                let actions = core.engine.tick(&mut core.ledger, now);
                core.process(actions, None)
            }
            _ = slow.tick() => { core.housekeeping(); Ok(()) }
            Some(ev) = ev_rx.recv() => match ev {
                NetEvent::Gossip { author, topic, data } => core.on_gossip(author, topic, &data),
                NetEvent::Request { peer, data, channel } => core.on_request(peer, &data, channel),
                NetEvent::Peers(n) => { metrics.peers.store(n as u64, Relaxed); Ok(()) }
                NetEvent::Denied => { metrics.denied_peers.fetch_add(1, Relaxed); Ok(()) }
            },
            Some(cmd) = api_rx.recv() => { core.on_api(cmd); Ok(()) }
            Some(i) = internal_rx.recv() => match i {
                Internal::Replies { from, messages } => {
                    let mut r = Ok(());
                    for m in messages {
                        tracing::debug!("reply from {from}: {}", describe(&m));
                        core.ledger.set_now(now_ms());
                        let actions = core.engine.handle(&mut core.ledger, from, m);
                        r = core.process(actions, None);
                        if r.is_err() { break; }
                    }
                    r
                }
                Internal::Checkpoints(cps) => {
                    for c in cps { core.store_checkpoint(&c); }
                    Ok(())
                }
            },
        };
        if let Err(e) = step {
            break Err(e);
        }
    };
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Err(e) = &result {
        tracing::error!("node stopped: {e}");
    }
    result
}
