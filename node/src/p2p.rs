//! The libp2p transport: TCP, Noise, Yamux; one `NetworkBehaviour` composed
//! of an allow list (genesis's peers only), gossipsub and request-response.
//!
//! The allow list is checked when a connection is established, after the
//! Noise handshake has proved the remote's PeerId and before any protocol
//! handler exists: an unknown peer is disconnected before one substream is
//! opened or one byte of ours is processed.
//!
//! The event loop ([`Network::run`]) owns the swarm and talks to the node
//! through channels: [`NetCommand`]s in, [`NetEvent`]s out (the shape of
//! rust-libp2p's file-sharing example).
//!
//! Gossip is validated before it is relayed: the loop decodes each message
//! and charges its author's budget ([`crate::guard`]); what passes goes to
//! the node's core, whose verdict ([`NetCommand::Report`]) decides whether
//! gossipsub forwards it. A peer that sent something provably invalid is
//! disconnected and refused until its ban ends.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::allow_block_list::{self, AllowedPeers};
use libp2p::gossipsub::{
    self, IdentTopic, MessageAcceptance, MessageAuthenticity, MessageId, ValidationMode,
};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identity, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use provenance::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::guard::{Admit, Fault, Guard, Kind};
use crate::metrics::Metrics;
use crate::wire::{from_bytes, Gossip, Request};

/// The request-response protocol name.
pub const RPC_PROTOCOL: &str = "/govtune/rpc/2";
/// Largest gossip message (a block proposal with its entries).
pub const MAX_GOSSIP_BYTES: usize = 8 << 20;
/// Largest request.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;
/// Largest response (a sync batch).
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// The gossip topics of a consortium.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Entry offers, signatures, refusals and checkpoint shares.
    pub events: IdentTopic,
    /// Consensus messages.
    pub consensus: IdentTopic,
}

impl Topics {
    /// The topics of the consortium whose genesis digest is `genesis`.
    pub fn new(genesis: &str) -> Self {
        Self {
            events: IdentTopic::new(format!("/govtune/{genesis}/events")),
            consensus: IdentTopic::new(format!("/govtune/{genesis}/consensus")),
        }
    }
}

/// Which topic a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Entry offers, signatures, refusals, checkpoints.
    Events,
    /// Consensus.
    Consensus,
}

/// The node's composed behaviour.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Genesis's peers only.
    pub allowed: allow_block_list::Behaviour<AllowedPeers>,
    /// Broadcast.
    pub gossipsub: gossipsub::Behaviour,
    /// Point to point.
    pub rpc: request_response::cbor::Behaviour<Bytes, Bytes>,
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A key, address or configuration problem.
    #[error("network setup: {0}")]
    Setup(String),
}

/// Builds a swarm for `key` that accepts only `allowed` peers.
pub fn build_swarm(key: identity::Keypair, allowed: &[PeerId]) -> Result<Swarm<Behaviour>, NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    let gossip_cfg = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_BYTES)
        .heartbeat_interval(Duration::from_millis(500))
        .mesh_n_low(2)
        .mesh_n(3)
        .mesh_n_high(8)
        .mesh_outbound_min(1)
        .build()
        .map_err(|e| setup(&e))?;
    let mut codec = request_response::cbor::codec::Codec::<Bytes, Bytes>::default();
    codec = codec
        .set_request_size_maximum(MAX_REQUEST_BYTES)
        .set_response_size_maximum(MAX_RESPONSE_BYTES);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_behaviour(|key| {
            let gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), gossip_cfg)?;
            let rpc = request_response::Behaviour::with_codec(
                codec,
                [(StreamProtocol::new(RPC_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
            );
            Ok(Behaviour {
                allowed: allow_block_list::Behaviour::default(),
                gossipsub,
                rpc,
            })
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    for p in allowed {
        swarm.behaviour_mut().allowed.allow_peer(*p);
    }
    Ok(swarm)
}

/// What the node asks of the network.
#[derive(Debug)]
pub enum NetCommand {
    /// Broadcast on a topic.
    Publish {
        /// Topic.
        topic: Topic,
        /// Message bytes.
        data: Vec<u8>,
    },
    /// Send a request to one peer; the reply carries its response bytes.
    Request {
        /// Peer.
        peer: PeerId,
        /// Request bytes.
        data: Vec<u8>,
        /// Where the response goes.
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
    /// Answer an inbound request.
    Respond {
        /// The request's channel.
        channel: ResponseChannel<Bytes>,
        /// Response bytes.
        data: Vec<u8>,
    },
    /// The core's verdict on a gossiped message it was handed.
    Report {
        /// The message.
        id: MessageId,
        /// The peer it came through.
        via: PeerId,
        /// Its author.
        author: PeerId,
        /// Forward it, drop it, or drop it and ban its author.
        verdict: Verdict,
    },
    /// A peer sent something provably invalid outside gossip (a request or
    /// an answer): ban it.
    Punish {
        /// The peer.
        peer: PeerId,
        /// What it did.
        fault: Fault,
    },
}

/// The core's verdict on a gossiped message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: relay it.
    Accept,
    /// Not provably invalid, but not worth relaying (stale, a duplicate,
    /// not for this node).
    Ignore,
    /// Provably invalid: drop it and ban its author.
    Reject(Fault),
}

/// What the network tells the node.
#[derive(Debug)]
pub enum NetEvent {
    /// A gossiped message within its author's budget, decoded; the core
    /// answers with [`NetCommand::Report`].
    Gossip {
        /// The author (its node key signed the message).
        author: PeerId,
        /// The peer it came through.
        via: PeerId,
        /// Gossipsub's id of it.
        id: MessageId,
        /// Topic.
        topic: Topic,
        /// The message.
        message: Box<Gossip>,
    },
    /// An inbound request within the peer's budget, decoded.
    Request {
        /// The requesting peer (an allowed one: others never get a handler).
        peer: PeerId,
        /// The request.
        request: Box<Request>,
        /// Where the answer goes.
        channel: ResponseChannel<Bytes>,
    },
    /// The set of connected peers changed.
    Peers(usize),
    /// A connection from a peer not in genesis was refused.
    Denied,
}

/// The network event loop.
pub struct Network {
    swarm: Swarm<Behaviour>,
    topics: Topics,
    peers: Vec<(PeerId, Multiaddr)>,
    commands: mpsc::Receiver<NetCommand>,
    events: mpsc::Sender<NetEvent>,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, String>>>,
    guard: Guard,
    metrics: Arc<Metrics>,
}

impl Network {
    /// A network over `swarm`, listening on `listen`, dialling `peers`.
    pub fn new(
        mut swarm: Swarm<Behaviour>,
        listen: Multiaddr,
        topics: Topics,
        peers: Vec<(PeerId, Multiaddr)>,
        commands: mpsc::Receiver<NetCommand>,
        events: mpsc::Sender<NetEvent>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, NetError> {
        swarm
            .listen_on(listen.clone())
            .map_err(|e| NetError::Setup(format!("listening on {listen}: {e} ({e:?})")))?;
        for t in [&topics.events, &topics.consensus] {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(t)
                .map_err(|e| NetError::Setup(e.to_string()))?;
        }
        Ok(Self {
            swarm,
            topics,
            peers,
            commands,
            events,
            pending: HashMap::new(),
            guard: Guard::new(),
            metrics,
        })
    }

    fn redial(&mut self) {
        let now = Instant::now();
        for p in self.guard.lift(now) {
            tracing::info!("ban of peer {p} ended");
            self.swarm.behaviour_mut().allowed.allow_peer(p);
            self.metrics.banned.fetch_sub(1, Relaxed);
        }
        for (peer, addr) in &self.peers {
            if !self.swarm.is_connected(peer) && !self.guard.banned(peer, now) {
                // From a fresh port, not the listening one: on a host that
                // carries several nodes' addresses on one port, reusing it
                // lets the kernel pick the destination's own address as the
                // source, and the dial connects to itself.
                let opts = DialOpts::peer_id(*peer)
                    .addresses(vec![addr.clone()])
                    .allocate_new_port()
                    .build();
                let _ = self.swarm.dial(opts);
            }
        }
    }

    /// Bans `peer` for `fault`: its connections close and it is refused
    /// until the ban ends.
    fn punish(&mut self, peer: PeerId, fault: Fault) {
        self.metrics.fault(fault);
        if let Some(ban) = self.guard.punish(peer, fault, Instant::now()) {
            tracing::warn!(
                "peer {peer} sent a provably invalid message ({}): disconnected and refused for {} s",
                fault.label(),
                ban.as_secs()
            );
            self.metrics.bans.fetch_add(1, Relaxed);
            self.metrics.banned.fetch_add(1, Relaxed);
            self.swarm.behaviour_mut().allowed.disallow_peer(peer);
        }
    }

    fn report(&mut self, id: &MessageId, via: &PeerId, acceptance: MessageAcceptance) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, via, acceptance);
    }

    /// Charges `peer`'s budget for one message of `kind`; counts what is
    /// refused.
    fn admit(&mut self, peer: PeerId, kind: Kind) -> bool {
        match self.guard.admit(peer, kind, Instant::now()) {
            Admit::Yes => true,
            Admit::Limited => {
                self.metrics.limited(kind);
                false
            }
            Admit::Banned => false,
        }
    }

    /// Runs until the node drops its command sender.
    pub async fn run(mut self) {
        let mut redial = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = redial.tick() => self.redial(),
                cmd = self.commands.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => return,
                },
                ev = self.swarm.select_next_some() => self.event(ev).await,
            }
        }
    }

    fn command(&mut self, c: NetCommand) {
        match c {
            NetCommand::Publish { topic, data } => {
                let t = match topic {
                    Topic::Events => self.topics.events.clone(),
                    Topic::Consensus => self.topics.consensus.clone(),
                };
                if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(t, data) {
                    tracing::debug!("publish: {e}");
                }
            }
            NetCommand::Request { peer, data, reply } => {
                let id = self.swarm.behaviour_mut().rpc.send_request(&peer, Bytes(data));
                self.pending.insert(id, reply);
            }
            NetCommand::Respond { channel, data } => {
                let _ = self.swarm.behaviour_mut().rpc.send_response(channel, Bytes(data));
            }
            NetCommand::Report {
                id,
                via,
                author,
                verdict,
            } => match verdict {
                Verdict::Accept => self.report(&id, &via, MessageAcceptance::Accept),
                Verdict::Ignore => self.report(&id, &via, MessageAcceptance::Ignore),
                Verdict::Reject(fault) => {
                    self.report(&id, &via, MessageAcceptance::Reject);
                    self.punish(author, fault);
                }
            },
            NetCommand::Punish { peer, fault } => self.punish(peer, fault),
        }
    }

    async fn event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source: via,
                message_id: id,
                message,
            })) => {
                let Some(author) = message.source else {
                    self.report(&id, &via, MessageAcceptance::Reject);
                    return;
                };
                let topic = if message.topic == self.topics.consensus.hash() {
                    Topic::Consensus
                } else if message.topic == self.topics.events.hash() {
                    Topic::Events
                } else {
                    self.report(&id, &via, MessageAcceptance::Ignore);
                    return;
                };
                let decoded = match from_bytes::<Gossip>("gossip", &message.data) {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::debug!("undecodable gossip from {author}: {e}");
                        self.report(&id, &via, MessageAcceptance::Reject);
                        self.punish(author, Fault::Undecodable);
                        return;
                    }
                };
                let kind = match &decoded {
                    Gossip::Offer { .. } => Kind::Offer,
                    Gossip::Signature { .. } | Gossip::Share { .. } => Kind::Signature,
                    Gossip::Refusal { .. } => Kind::Refusal,
                    Gossip::CheckpointShare { .. } | Gossip::Checkpoint(_) => Kind::Checkpoint,
                    Gossip::Consensus(_) => Kind::Consensus,
                };
                if !self.admit(author, kind) {
                    self.report(&id, &via, MessageAcceptance::Ignore);
                    return;
                }
                let _ = self
                    .events
                    .send(NetEvent::Gossip {
                        author,
                        via,
                        id,
                        topic,
                        message: Box::new(decoded),
                    })
                    .await;
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let Ok(decoded) = from_bytes::<Request>("request", &request.0) else {
                        self.punish(peer, Fault::Undecodable);
                        return;
                    };
                    let kind = match &decoded {
                        Request::Consensus(consensus::Message::SyncRequest { .. }) => Kind::SyncRequest,
                        _ => Kind::Request,
                    };
                    // Over budget: the channel drops unanswered.
                    if !self.admit(peer, kind) {
                        return;
                    }
                    let _ = self
                        .events
                        .send(NetEvent::Request {
                            peer,
                            request: Box::new(decoded),
                            channel,
                        })
                        .await;
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.pending.remove(&request_id) {
                        let _ = reply.send(Ok(response.0));
                    }
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            })) => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            SwarmEvent::ConnectionEstablished { .. } | SwarmEvent::ConnectionClosed { .. } => {
                let n = self.swarm.connected_peers().count();
                let _ = self.events.send(NetEvent::Peers(n)).await;
            }
            SwarmEvent::IncomingConnectionError { error, peer_id, .. } => {
                let banned = peer_id.is_some_and(|p| self.guard.banned(&p, Instant::now()));
                if matches!(error, libp2p::swarm::ListenError::Denied { .. }) && !banned {
                    tracing::warn!("refused a connection from a peer not in genesis");
                    let _ = self.events.send(NetEvent::Denied).await;
                }
            }
            _ => {}
        }
    }
}
