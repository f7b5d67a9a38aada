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

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use consensus::{Action, BlsThreshold, Engine, Message};
use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
pub use provenance::api::EntryStatus;
use provenance::codec::encode;
use provenance::crypto::{AuthoritySignature, AuthoritySigner, ConsortiumSigner};
use provenance::{
    Bytes, Canonical, Checkpoint, Digest, EntryBody, Genesis, KeyRing, Role, SignedCheckpoint, Timestamp,
};
use storage::Store;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoints::{CheckpointAction, Collector};
pub use crate::cosigning::OfferError;
use crate::cosigning::{CoSignAction, Env, Restored, Table};
use crate::guard::Fault;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::p2p::{NetCommand, Topic, Verdict};
use crate::wire::{from_bytes, to_bytes, ConsensusMessage, Gossip, Request, Response};

/// About how many bytes of blocks one sync response carries.
pub const SYNC_CHUNK_BYTES: usize = 8 << 20;
/// The most bytes one may carry while no block in it has its finalisation
/// certificate: under the 16 MiB a peer decodes
/// ([`provenance::codec::MAX_OBJECT_BYTES`]), each block counted with
/// [`SYNC_BLOCK_OVERHEAD`] for its header and encoding.
pub const SYNC_CHUNK_HARD_BYTES: usize = 14 << 20;
/// Bytes counted per block in a sync response beside its entries.
pub const SYNC_BLOCK_OVERHEAD: usize = 256;

/// Why a node stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The genesis, key or token files.
    #[error(transparent)]
    Genesis(#[from] genesis::Error),
    /// The genesis is not usable for this node.
    #[error(transparent)]
    Provenance(#[from] provenance::Error),
    /// Anything else that stops a node from starting (addresses, data
    /// directory, runtime).
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

/// What the API asks of the core.
#[derive(Debug)]
pub enum ApiCommand {
    /// Sign and offer an entry body submitted by this authority's tools.
    Submit {
        /// The body.
        body: Box<EntryBody>,
        /// Digest and status, or why not.
        reply: oneshot::Sender<Result<(Digest, Option<EntryStatus>), OfferError>>,
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
    /// Audit material of a campaign, asked of its operator's nodes (a
    /// governance node's replay, `node::inbox`).
    FetchAudit {
        /// The campaign.
        campaign: Digest,
        /// Which part.
        part: crate::inbox::AuditPart,
        /// The bytes, if the operator's node held them.
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
}

pub(crate) enum Internal {
    Replies {
        from: u16,
        messages: Vec<ConsensusMessage>,
    },
    Checkpoints(Vec<SignedCheckpoint>),
    /// A training event's effect, checked off this task.
    Effect {
        digest: Digest,
        verdict: crate::effect::EffectVerdict,
    },
}

type Act = Action<crate::wire::BlockPayload, Bytes, Bytes>;

/// A one-line account of a consensus message, for debug logs.
pub(crate) fn describe(m: &ConsensusMessage) -> String {
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

pub(crate) struct Core {
    pub(crate) genesis: Arc<Genesis>,
    pub(crate) keyring: Arc<KeyRing>,
    pub(crate) me: u16,
    pub(crate) signer: AuthoritySigner,
    /// Its consortium key share (validators only: a signing member does
    /// not vote or sign checkpoints).
    pub(crate) consortium: Option<Arc<ConsortiumSigner>>,
    /// Its checkpoint note key (validators only).
    pub(crate) note_signer: Option<Arc<provenance::checkpoint::NoteSigner>>,
    pub(crate) store: Arc<RwLock<Store>>,
    pub(crate) engine: Engine<Ledger, BlsThreshold>,
    pub(crate) ledger: Ledger,
    pub(crate) table: Table,
    pub(crate) checkpoints: Collector,
    pub(crate) peer_index: HashMap<PeerId, u16>,
    pub(crate) peers: Vec<PeerId>,
    pub(crate) net: mpsc::Sender<NetCommand>,
    pub(crate) internal: mpsc::Sender<Internal>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) max_skew: u64,
    pub(crate) last_checkpoint_request: Instant,
    /// Validators the last engine or table call found misbehaving, until
    /// settled ([`Core::settle`]).
    pub(crate) blamed: Vec<(u16, Fault)>,
    /// A signature the last co-signing call found forged.
    pub(crate) cosign_fault: Option<Fault>,
    /// Consortium signatures checked off this task.
    pub(crate) verified: Arc<provenance::crypto::VerifiedSignatures>,
    /// Training events' effects, checked off this task.
    pub(crate) effects: Arc<crate::effect::Effects>,
    /// Audit material this node's operator tools sent, for governance.
    pub(crate) inbox: Arc<crate::inbox::AuditInbox>,
    /// Blobs fetched from peers (`crate::blobs`).
    pub(crate) blobs: Arc<crate::blobs::Fetcher>,
}

/// The fault a consensus misbehaviour proves.
fn consensus_fault(what: &consensus::Misbehaviour) -> Fault {
    use consensus::Misbehaviour as M;
    match what {
        M::BadShare(_) => Fault::BadSignature,
        M::BadCertificate(_) | M::BadSync => Fault::BadCertificate,
        M::DoubleVote(_) | M::Equivocation(_) => Fault::Equivocation,
        M::NotLeader(_) | M::InvalidProposal(..) => Fault::InvalidProposal,
    }
}

pub(crate) fn read(store: &RwLock<Store>) -> std::sync::RwLockReadGuard<'_, Store> {
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

    pub(crate) fn process(
        &mut self,
        actions: Vec<Act>,
        mut reply: Option<(u16, &mut Vec<ConsensusMessage>)>,
    ) -> Result<(), NodeError> {
        // Blobs the ledger found itself lacking while judging or building.
        self.blobs.want(self.ledger.take_wanted());
        for a in actions {
            // A sync request is answered from the store (the engine keeps
            // only the chain's tip).
            let a = match a {
                Action::ServeSync { to, from } => match self.sync_response(from) {
                    Some(message) => Action::Send {
                        to: Some(to),
                        message,
                    },
                    None => continue,
                },
                a => a,
            };
            if let Action::Send { to, message } = &a {
                tracing::debug!("send to {to:?}: {}", describe(message));
            }
            match a {
                Action::ServeSync { .. } => {}
                Action::Persist(s) => read(&self.store).put_safety_state(&encode(&s))?,
                Action::Send { to: None, message } => match message {
                    Message::SyncRequest { .. } | Message::BlockRequest { .. } => {
                        for v in 0..self.genesis.consortium.n {
                            if v != self.me {
                                self.consensus_request(v, message.clone());
                            }
                        }
                    }
                    // A signing member gossips nothing to consensus.
                    _ if !self.engine.config().votes() => {}
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
                    // Custody: what a committed entry names is kept here
                    // too (a node catching up refills its store).
                    self.blobs.ensure(c.blobs.iter().copied());
                    tracing::debug!("finalised height {} ({} entries)", c.height, c.digests.len());
                    let m = &self.metrics;
                    m.height.store(c.height, Relaxed);
                    m.log_size.store(c.log_size, Relaxed);
                    m.events_committed.fetch_add(c.events, Relaxed);
                    m.examples_committed.fetch_add(c.examples, Relaxed);
                    for took in self.table.committed(&c.digests, Instant::now()) {
                        m.observe_finality(took.as_secs_f64());
                    }
                    let expired = {
                        let st = read(&self.store);
                        self.table.expire_hopeless(st.state())
                    };
                    self.apply_cosign(expired);
                    if c.certified {
                        self.sign_checkpoint(c.height, c.log_size, c.root, c.index_root, c.stamp);
                    }
                }
                Action::Misbehaved { peer, what } => {
                    tracing::warn!("validator {peer} misbehaved: {what:?}");
                    self.blamed.push((peer, consensus_fault(&what)));
                }
            }
        }
        Ok(())
    }

    /// The finalised blocks from `from` on, read from the store: at most
    /// [`consensus::MAX_SYNC_BLOCKS`] and about [`SYNC_CHUNK_BYTES`], ending
    /// with a block stored with its finalisation certificate.
    fn sync_response(&self, from: consensus::Height) -> Option<ConsensusMessage> {
        let s = read(&self.store);
        let head = consensus::Height(s.head().height);
        let chunk = consensus::sync_chunk(from, head, SYNC_CHUNK_BYTES, SYNC_CHUNK_HARD_BYTES, |h| {
            Ledger::stored_block(&s, h.0)
                .map(|(p, c, bytes)| (p, c, bytes + SYNC_BLOCK_OVERHEAD))
                .map_err(|e| tracing::warn!("serving sync from height {}: {e}", h.0))
                .ok()
        });
        chunk.map(|(blocks, finalization)| Message::SyncResponse { blocks, finalization })
    }

    fn sign_checkpoint(&mut self, height: u64, size: u64, root: Digest, index: Digest, time: Timestamp) {
        let cp = Checkpoint {
            version: Checkpoint::VERSION,
            origin: self.genesis.origin.clone(),
            size,
            root,
            height,
            time,
            index,
        };
        let (Some(consortium), Some(notes)) = (&self.consortium, &self.note_signer) else {
            return;
        };
        let share = consortium.sign_share(&cp.signing_message());
        let note = notes.sign(&cp).signature;
        self.publish(
            Topic::Events,
            &Gossip::CheckpointShare {
                checkpoint: cp.clone(),
                validator: self.me,
                share: share.share.clone(),
                note: note.clone(),
            },
        );
        self.add_share(cp, self.me, share.share, note);
    }

    fn add_share(&mut self, cp: Checkpoint, validator: u16, share: Bytes, note: Bytes) {
        let (head, stored) = {
            let s = read(&self.store);
            (s.head().height, s.checkpoint(cp.height).ok().flatten())
        };
        let actions =
            self.checkpoints
                .on_share(&self.keyring, head, stored.as_ref(), cp, validator, share, note);
        self.apply_checkpoint_actions(actions);
    }

    fn apply_checkpoint_actions(&mut self, actions: Vec<CheckpointAction>) {
        for a in actions {
            match a {
                CheckpointAction::Certified(signed) => {
                    self.store_checkpoint(&signed);
                }
                CheckpointAction::Rebroadcast(signed) => {
                    self.publish(Topic::Events, &Gossip::Checkpoint(signed))
                }
                CheckpointAction::Misbehaved { validator } => {
                    tracing::debug!("validator {validator} sent a checkpoint share that does not verify");
                    self.blamed.push((validator, Fault::BadCheckpoint));
                }
            }
        }
    }

    /// Stores a certified checkpoint; false if its signature does not
    /// verify (checked before the store's lock is taken).
    pub(crate) fn store_checkpoint(&mut self, signed: &SignedCheckpoint) -> bool {
        if read(&self.store)
            .checkpoint(signed.checkpoint.height)
            .ok()
            .flatten()
            .is_some()
        {
            return true;
        }
        let Ok(verified) = storage::VerifiedCheckpoint::check_cached(signed, &self.keyring, &self.verified)
        else {
            return false;
        };
        let mut s = write(&self.store);
        match s.put_verified_checkpoint(verified) {
            Ok(()) => {
                self.metrics.checkpoints.fetch_add(1, Relaxed);
                self.checkpoints.stored(signed.checkpoint.height);
            }
            Err(e) => tracing::debug!("checkpoint at {}: {e}", signed.checkpoint.height),
        }
        true
    }

    /// Bans every validator blamed since the last call but `author` (whose
    /// fault, if any, is returned: it becomes the verdict on its message).
    pub(crate) fn settle(&mut self, author: Option<u16>) -> Option<Fault> {
        let mut own = None;
        for (v, fault) in std::mem::take(&mut self.blamed) {
            if Some(v) == author {
                own.get_or_insert(fault);
            } else if let Some(peer) = self.genesis_peer(v) {
                let _ = self.net.try_send(NetCommand::Punish { peer, fault });
            }
        }
        own
    }

    /// Runs `f` with what the co-signing table reads of this node.
    fn cosign<R>(&mut self, f: impl FnOnce(&mut Table, &Env<'_>) -> R) -> R {
        let st = read(&self.store);
        let committed = |d: &Digest| st.index_of(d).ok().flatten().is_some();
        let manifest_signature = |d: &Digest| -> Option<provenance::crypto::CoSignature> {
            let i = st.index_of(d).ok()??;
            match st.entry(i).ok()??.attestation {
                provenance::Attestation::Authorities(c) => Some(c),
                provenance::Attestation::Consortium(_) => None,
            }
        };
        let persist = |d: &Digest, rec: &[u8]| st.put_pending(d, rec).map_err(|e| e.to_string());
        let env = Env {
            keyring: &self.keyring,
            verified: &self.verified,
            signer: &self.signer,
            state: st.state(),
            committed: &committed,
            manifest_signature: &manifest_signature,
            persist: &persist,
            now_ms: now_ms(),
            max_skew: self.max_skew,
            now: Instant::now(),
        };
        f(&mut self.table, &env)
    }

    /// A training event's effect checked off this task.
    pub(crate) fn on_effect(&mut self, digest: Digest, verdict: crate::effect::EffectVerdict) {
        match &verdict {
            crate::effect::EffectVerdict::Holds => {
                self.metrics.effects_held.fetch_add(1, Relaxed);
            }
            crate::effect::EffectVerdict::Replayed(_) => {
                self.metrics.effects_held.fetch_add(1, Relaxed);
                self.metrics.replays_confirmed.fetch_add(1, Relaxed);
            }
            crate::effect::EffectVerdict::Broken(_) => {
                self.metrics.effects_broken.fetch_add(1, Relaxed);
            }
            crate::effect::EffectVerdict::Failed(_) => {
                self.metrics.effects_broken.fetch_add(1, Relaxed);
                self.metrics.replays_failed.fetch_add(1, Relaxed);
            }
            crate::effect::EffectVerdict::Unchecked(_) => {}
        }
        let actions = self.cosign(|t, env| t.on_effect(env, &digest, verdict));
        self.apply_cosign(actions);
    }

    /// Takes an entry body from the API (own), a restart (own) or a peer.
    pub(crate) fn offer(
        &mut self,
        body: EntryBody,
        sigs: Vec<AuthoritySignature>,
        own: bool,
        restored: Option<Restored>,
    ) -> Result<Digest, OfferError> {
        self.offer_audited(body, sigs, Vec::new(), own, restored)
    }

    /// [`Self::offer`] with the audits a peer's offer carries.
    pub(crate) fn offer_audited(
        &mut self,
        body: EntryBody,
        sigs: Vec<AuthoritySignature>,
        audits: Vec<provenance::audit::Audit>,
        own: bool,
        restored: Option<Restored>,
    ) -> Result<Digest, OfferError> {
        let named = crate::blobs::named(&body);
        let r = self.cosign(|t, env| t.offer_audited(env, body, sigs, audits, own, restored));
        if r.is_ok() {
            // Custody starts at the offer: by the time the entry is
            // complete and proposed, this node most likely holds its blobs.
            self.blobs.ensure(named);
        }
        match &r {
            Err(e @ OfferError::NotStored(_)) => tracing::error!("{e}"),
            Err(OfferError::Full { .. }) => {
                self.metrics.pending_full.fetch_add(1, Relaxed);
            }
            _ => {}
        }
        let (digest, actions) = r?;
        self.apply_cosign(actions);
        Ok(digest)
    }

    fn apply_cosign(&mut self, actions: Vec<CoSignAction>) {
        for a in actions {
            match a {
                CoSignAction::Publish(g) => self.publish(Topic::Events, &g),
                CoSignAction::Complete(d, entry) => self.ledger.add(d, *entry),
                CoSignAction::Misbehaved => self.cosign_fault = Some(Fault::BadSignature),
                CoSignAction::RefusedHere { digest, refusal } => {
                    tracing::info!("refusing to co-sign {}: {refusal}", digest.short());
                }
                CoSignAction::CheckEffect { digest, body, replay } => {
                    self.effects
                        .spawn(self.store.clone(), digest, *body, replay, self.internal.clone());
                }
                CoSignAction::Evidence(e) => {
                    let record = e.record.digest();
                    match self.offer(EntryBody::AuditFailure(*e), Vec::new(), true, None) {
                        Ok(d) => tracing::warn!(
                            "evidence {} of the failed replay of {} offered",
                            d.short(),
                            record.short()
                        ),
                        Err(err) => tracing::error!("offering the evidence of {}: {err}", record.short()),
                    }
                }
                CoSignAction::CannotSign { digest, reason } => {
                    tracing::error!("cannot sign {}: {reason}", digest.short());
                }
                CoSignAction::AssemblyFailed { digest, reason } => {
                    tracing::warn!("assembling {}: {reason}", digest.short());
                }
                CoSignAction::Forget { digest } => {
                    self.metrics.expired.fetch_add(1, Relaxed);
                    tracing::info!("entry {} expired: it can no longer commit", digest.short());
                    self.ledger.discard(&digest);
                    if let Err(e) = read(&self.store).remove_pending(&digest) {
                        tracing::error!("forgetting {}: {e}", digest.short());
                    }
                }
                CoSignAction::Persist { digest, record } => {
                    if let Err(e) = read(&self.store).put_pending(&digest, &record) {
                        tracing::error!("persisting a refusal of {}: {e}", digest.short());
                    }
                }
            }
        }
    }

    /// Handles a gossiped message within its author's budget and reports
    /// the verdict (relay, drop, or drop and ban the author).
    pub(crate) fn on_gossip(
        &mut self,
        author: PeerId,
        via: PeerId,
        id: libp2p::gossipsub::MessageId,
        topic: Topic,
        g: Gossip,
    ) -> Result<(), NodeError> {
        let verdict = match self.peer_index.get(&author).copied() {
            Some(from) => self.judge_gossip(from, topic, g)?,
            None => Verdict::Ignore,
        };
        let _ = self.net.try_send(NetCommand::Report {
            id,
            via,
            author,
            verdict,
        });
        Ok(())
    }

    fn judge_gossip(&mut self, from: u16, topic: Topic, g: Gossip) -> Result<Verdict, NodeError> {
        let authority = self.genesis.node_at(from).map(|n| n.authority.clone());
        self.cosign_fault = None;
        let verdict = match (topic, g) {
            // A signing member takes part in consensus only by asking for
            // blocks (point to point): what it gossips there is not relayed.
            (Topic::Consensus, Gossip::Consensus(_)) if from >= self.genesis.consortium.n => Verdict::Ignore,
            (Topic::Consensus, Gossip::Consensus(m)) => {
                tracing::debug!("gossip from {from}: {}", describe(&m));
                let actions = self.engine.handle(&mut self.ledger, from, m);
                self.process(actions, None)?;
                Verdict::Accept
            }
            (
                Topic::Events,
                Gossip::Offer {
                    body,
                    signatures,
                    audits,
                },
            ) => match self.offer_audited(body, signatures, audits, false, None) {
                Ok(_) if self.cosign_fault.is_some() => Verdict::Reject(Fault::BadSignature),
                Ok(_) => Verdict::Accept,
                Err(OfferError::Malformed(_) | OfferError::TooLarge { .. }) => {
                    Verdict::Reject(Fault::Malformed)
                }
                Err(OfferError::ExtraSignatures(_)) => Verdict::Reject(Fault::ExtraSignatures),
                Err(_) => Verdict::Ignore,
            },
            // A node gossips its own authority's signatures and refusals
            // only (others' travel inside offers).
            (Topic::Events, Gossip::Signature { signature, .. })
                if Some(&signature.authority) != authority.as_ref() =>
            {
                Verdict::Reject(Fault::ForeignSignature)
            }
            (Topic::Events, Gossip::Refusal { authority: by, .. }) if Some(&by) != authority.as_ref() => {
                Verdict::Reject(Fault::ForeignSignature)
            }
            // A node gossips its own share only: its authority, its index.
            (Topic::Events, Gossip::Share { share, .. })
                if self
                    .genesis
                    .node_at(from)
                    .is_none_or(|n| n.authority != share.authority || n.authority_share != share.index) =>
            {
                Verdict::Reject(Fault::ForeignSignature)
            }
            (Topic::Events, Gossip::Share { entry, part, share }) => {
                if self.table.wants_share(&entry, part, &share) {
                    let actions = self.cosign(|t, env| t.on_share(env, &entry, part, share));
                    self.apply_cosign(actions);
                    match self.cosign_fault {
                        Some(f) => Verdict::Reject(f),
                        None => Verdict::Accept,
                    }
                } else {
                    Verdict::Ignore
                }
            }
            (
                Topic::Events,
                Gossip::Signature {
                    entry,
                    signature,
                    audit,
                },
            ) => {
                if self.table.wants_signature(&entry, &signature.authority) {
                    let actions = self.cosign(|t, env| t.on_audited_signature(env, &entry, signature, audit));
                    self.apply_cosign(actions);
                    match self.cosign_fault {
                        Some(f) => Verdict::Reject(f),
                        None => Verdict::Accept,
                    }
                } else {
                    Verdict::Ignore
                }
            }
            (
                Topic::Events,
                Gossip::Refusal {
                    entry,
                    authority,
                    reason,
                },
            ) => {
                let index = self.genesis.node_at(from).map_or(0, |n| n.authority_share);
                let refusers = self
                    .keyring
                    .authority(&authority)
                    .map_or(1, |k| k.members().saturating_sub(k.threshold()).max(1));
                let actions = self.table.on_refusal(&entry, authority, index, refusers, reason);
                self.apply_cosign(actions);
                Verdict::Accept
            }
            // A validator gossips its own share only.
            (Topic::Events, Gossip::CheckpointShare { validator, .. })
                if validator != from || from >= self.genesis.consortium.n =>
            {
                Verdict::Reject(Fault::BadCheckpoint)
            }
            (
                Topic::Events,
                Gossip::CheckpointShare {
                    checkpoint,
                    validator,
                    share,
                    note,
                },
            ) => {
                self.add_share(checkpoint, validator, share, note);
                Verdict::Accept
            }
            (Topic::Events, Gossip::Checkpoint(signed)) => {
                if self.store_checkpoint(&signed) {
                    Verdict::Accept
                } else {
                    Verdict::Reject(Fault::BadCheckpoint)
                }
            }
            _ => Verdict::Reject(Fault::Malformed),
        };
        Ok(match self.settle(Some(from)) {
            Some(f) => Verdict::Reject(f),
            None => verdict,
        })
    }

    pub(crate) fn on_request(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Bytes>,
    ) -> Result<(), NodeError> {
        let Some(&from) = self.peer_index.get(&peer) else {
            return Ok(());
        };
        let response = match request {
            Request::Consensus(m) => {
                tracing::debug!("request from {from}: {}", describe(&m));
                let actions = self.engine.handle(&mut self.ledger, from, m);
                let mut out = Vec::new();
                self.process(actions, Some((from, &mut out)))?;
                if let Some(fault) = self.settle(Some(from)) {
                    let _ = self.net.try_send(NetCommand::Punish { peer, fault });
                    return Ok(());
                }
                Response::Consensus(out)
            }
            // Test-only: a node that withholds its blobs.
            Request::Blob(_) if crate::blobs::withheld() => Response::Blob(None),
            Request::BlobPart { .. } if crate::blobs::withheld() => Response::BlobPart(None),
            Request::Blob(d) => Response::Blob(read(&self.store).blob(&d).ok().flatten().map(Bytes)),
            Request::BlobPart { digest, offset, len } => {
                let mut part = crate::blobs::serve(&read(&self.store), &digest, offset, len);
                // Test-only: a node that serves other bytes than it holds.
                if let Some(first) = part.as_mut().and_then(|p| p.bytes.0.first_mut()) {
                    if crate::blobs::garbled() {
                        *first ^= 1;
                    }
                }
                Response::BlobPart(part)
            }
            Request::Audit { campaign, part } => {
                let role = self
                    .genesis
                    .node_at(from)
                    .and_then(|n| self.keyring.authority(&n.authority).ok())
                    .map(|a| a.role);
                if role == Some(Role::Governance) {
                    Response::Audit(self.inbox.get(&campaign, part).map(Bytes))
                } else {
                    tracing::warn!("node {from} (not governance) asked for audit material: refused");
                    Response::Audit(None)
                }
            }
            Request::Checkpoints { from: h } => {
                let s = read(&self.store);
                let mut out = Vec::new();
                for height in h..=s.head().height.min(h.saturating_add(255)) {
                    if let Ok(Some(c)) = s.checkpoint(height) {
                        out.push(c);
                    }
                }
                Response::Checkpoints(out)
            }
        };
        let _ = self.net.try_send(NetCommand::Respond {
            channel,
            data: to_bytes(&response),
        });
        Ok(())
    }

    pub(crate) fn on_api(&mut self, cmd: ApiCommand) {
        match cmd {
            ApiCommand::Submit { body, reply } => {
                let r = self
                    .offer(*body, Vec::new(), true, None)
                    .map(|d| (d, self.table.status(&d)));
                let _ = reply.send(r);
            }
            ApiCommand::Status { digest, reply } => {
                let _ = reply.send(self.table.status(&digest));
            }
            ApiCommand::FetchBlob { digest, reply } => {
                let blobs = self.blobs.clone();
                tokio::spawn(async move {
                    let _ = reply.send(blobs.get(digest).await);
                });
            }
            ApiCommand::FetchAudit {
                campaign,
                part,
                reply,
            } => {
                let operator = read(&self.store)
                    .state()
                    .campaign_state(&campaign)
                    .map(|c| c.campaign.operator.clone());
                let rxs: Vec<_> = self
                    .peers
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != usize::from(self.me))
                    .filter(|(i, _)| {
                        operator.is_some()
                            && self.genesis.node_at(*i as u16).map(|n| &n.authority) == operator.as_ref()
                    })
                    .map(|(_, p)| self.request(*p, &Request::Audit { campaign, part }))
                    .collect();
                tokio::spawn(async move {
                    for rx in rxs {
                        if let Ok(Ok(Ok(Response::Audit(Some(b))))) =
                            tokio::time::timeout(Duration::from_secs(10), rx).await.map(|r| {
                                r.map(|r| {
                                    r.and_then(|b| {
                                        from_bytes::<Response>("response", &b).map_err(|e| e.to_string())
                                    })
                                })
                            })
                        {
                            let _ = reply.send(Some(b.0));
                            return;
                        }
                    }
                    let _ = reply.send(None);
                });
            }
        }
    }

    /// Every second: re-offer own entries not yet committed (a co-signer
    /// that was away signs now), and ask for checkpoints this node lacks.
    pub(crate) fn housekeeping(&mut self) {
        // Custody of what committed earlier: a node restored from nothing,
        // or whose fetches failed, gets the blobs back over time.
        self.blobs.backfill();
        let actions = self.table.tick(Instant::now());
        let reoffers = actions
            .iter()
            .filter(|a| matches!(a, CoSignAction::Publish(_)))
            .count();
        self.metrics.reoffers.fetch_add(reoffers as u64, Relaxed);
        self.apply_cosign(actions);
        let expired = self.table.expire_stale(now_ms(), self.max_skew);
        self.apply_cosign(expired);
        let m = &self.metrics;
        m.mempool.store(self.ledger.mempool_len() as u64, Relaxed);
        m.pending.store(self.table.len() as u64, Relaxed);
        m.view.store(self.engine.view().0, Relaxed);
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
