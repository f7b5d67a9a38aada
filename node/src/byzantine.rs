//! Test-only (feature `byzantine`): a Byzantine consortium member. It joins
//! a live testnet with one validator's genesis keys, over the node's own
//! libp2p stack ([`crate::p2p`]) and wire format ([`crate::wire`]), and
//! attacks in one [`Mode`] until its time is up; then it prints what it
//! sent and how often its peers cut it off.
//!
//! A binary built with the feature runs it in place of the node when
//! `GOVTUNE_BYZANTINE=<mode>` is set (`GOVTUNE_BYZANTINE_SECONDS`, default
//! 25, bounds the attack).

use std::collections::{BTreeSet, VecDeque};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use consensus::{Height, Message, Proposal, View, GENESIS};
use provenance::{
    AuthoritySignature, AuthoritySigner, Bytes, Checkpoint, DataClass, DataSourceManifest, Digest, EntryBody,
    Genesis, License, Purpose, RightsBasis, Segmentation, SignatureScheme, Timestamp,
};
use rand::RngCore;
use tokio::sync::{mpsc, oneshot};

use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::p2p::{NetCommand, NetEvent, Topic, Verdict};
use crate::runtime::{now_ms, NodeError};
use crate::start::{join, Joined};
use crate::wire::{to_bytes, BlockPayload, ConsensusMessage, Gossip, Request};

/// How the member attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Signatures that do not verify, in its own name and in others'.
    InvalidSignatures,
    /// Its own valid signature, re-sent thousands of times a second.
    DuplicateSignatures,
    /// Distinct valid registrations of its own, as fast as it can sign.
    OfferSpam,
    /// A registration over the block budget (under the gossip limit).
    Oversized,
    /// Checkpoint shares that do not verify, or in another's name.
    BogusShares,
    /// Proposals in its views claiming heights their parent cannot have.
    FakeHeights,
    /// Block sync requests from height 1, to every peer, nonstop.
    SyncFlood,
    /// Two proposals in each of its views.
    Equivocation,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 8] = [
        Mode::InvalidSignatures,
        Mode::DuplicateSignatures,
        Mode::OfferSpam,
        Mode::Oversized,
        Mode::BogusShares,
        Mode::FakeHeights,
        Mode::SyncFlood,
        Mode::Equivocation,
    ];

    /// Its name (`GOVTUNE_BYZANTINE`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::InvalidSignatures => "invalid-signatures",
            Mode::DuplicateSignatures => "duplicate-signatures",
            Mode::OfferSpam => "offer-spam",
            Mode::Oversized => "oversized",
            Mode::BogusShares => "bogus-shares",
            Mode::FakeHeights => "fake-heights",
            Mode::SyncFlood => "sync-flood",
            Mode::Equivocation => "equivocation",
        }
    }

    /// Whether what it sends is provably invalid (its peers must
    /// disconnect it), rather than a valid flood (rate-limited).
    pub fn provably_invalid(self) -> bool {
        !matches!(
            self,
            Mode::DuplicateSignatures | Mode::OfferSpam | Mode::SyncFlood
        )
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown Byzantine mode {s:?}"))
    }
}

/// The mode and duration the environment asks for, if any.
pub fn from_env() -> Result<Option<(Mode, Duration)>, NodeError> {
    let Ok(mode) = std::env::var("GOVTUNE_BYZANTINE") else {
        return Ok(None);
    };
    if mode.is_empty() {
        return Ok(None);
    }
    let mode = mode.parse().map_err(NodeError::Setup)?;
    let secs = std::env::var("GOVTUNE_BYZANTINE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    Ok(Some((mode, Duration::from_secs(secs))))
}

struct Member {
    mode: Mode,
    me: u16,
    n: u16,
    genesis: Arc<Genesis>,
    signer: AuthoritySigner,
    peers: Vec<libp2p::PeerId>,
    net: mpsc::Sender<NetCommand>,
    offers: VecDeque<Digest>,
    view: u64,
    proposed: BTreeSet<u64>,
    checkpoint: Option<Checkpoint>,
    /// Its own valid registration and signature (duplicate mode).
    own: Option<(EntryBody, AuthoritySignature)>,
    /// A registration over the block budget, signed (oversized mode).
    huge: Option<(EntryBody, AuthoritySignature)>,
    serial: u64,
    sent: u64,
    connected: usize,
    most_connected: usize,
    disconnections: usize,
    last_second: Instant,
}

fn random_bytes(n: usize) -> Bytes {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    Bytes(b)
}

impl Member {
    fn publish(&mut self, topic: Topic, g: &Gossip) {
        if self
            .net
            .try_send(NetCommand::Publish {
                topic,
                data: to_bytes(g),
            })
            .is_ok()
        {
            self.sent += 1;
        }
    }

    /// A registration of its own authority, `extra` boundary offsets long.
    fn registration(&mut self, extra: u64) -> Option<(EntryBody, AuthoritySignature)> {
        self.serial += 1;
        let now = now_ms();
        let m = DataSourceManifest {
            version: 1,
            authority: self.signer.authority().clone(),
            title: format!("byzantine registration {} {}", self.serial, now),
            segmentation: if extra == 0 {
                Segmentation::Window {
                    length: 64,
                    stride: 64,
                }
            } else {
                Segmentation::Boundaries {
                    offsets: (0..extra).collect(),
                }
            },
            example_root: provenance::digest::tagged_hash(
                provenance::ObjectKind::Blob,
                &self.serial.to_be_bytes(),
            ),
            example_count: 4,
            content_bytes: 256,
            license: "CC0-1.0".parse::<License>().ok()?,
            rights_basis: RightsBasis::PublicDomain,
            purposes: vec!["research".parse::<Purpose>().ok()?],
            data_class: "literary".parse::<DataClass>().ok()?,
            not_before: Timestamp(now.saturating_sub(86_400_000)),
            not_after: Timestamp(now + 86_400_000),
        };
        let body = EntryBody::Manifest(m);
        let plan = body.signing_plan(&provenance::LedgerState::new()).ok()?;
        let req = plan.requests.first()?;
        let sig = self
            .signer
            .sign(plan.scheme.unwrap_or(SignatureScheme::Bls12381), &req.message)
            .ok()?;
        Some((body, sig))
    }

    fn learn(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::Gossip {
                author,
                via,
                id,
                message,
                ..
            } => {
                let _ = self.net.try_send(NetCommand::Report {
                    id,
                    via,
                    author,
                    verdict: Verdict::Ignore,
                });
                match *message {
                    Gossip::Offer { body, .. } => {
                        self.offers.push_back(body.digest());
                        if self.offers.len() > 64 {
                            self.offers.pop_front();
                        }
                    }
                    Gossip::CheckpointShare { checkpoint, .. } => self.checkpoint = Some(checkpoint),
                    Gossip::Consensus(m) => {
                        let v = match &m {
                            Message::Vote(v) => v.subject.view.0,
                            Message::Certificate(c) => c.subject.view.0 + 1,
                            Message::Propose { proposal, .. } => proposal.view.0,
                            _ => 0,
                        };
                        self.view = self.view.max(v);
                    }
                    _ => {}
                }
            }
            NetEvent::Peers(n) => {
                if n < self.connected {
                    self.disconnections += self.connected - n;
                }
                self.connected = n;
                self.most_connected = self.most_connected.max(n);
            }
            NetEvent::Request { .. } | NetEvent::Denied => {}
        }
    }

    /// The views ahead in which this member leads and has not proposed.
    fn my_views(&mut self) -> Vec<u64> {
        let views: Vec<u64> = (self.view..self.view + 16)
            .filter(|v| *v > 0 && v % u64::from(self.n) == u64::from(self.me))
            .filter(|v| !self.proposed.contains(v))
            .collect();
        self.proposed.extend(views.iter().copied());
        views
    }

    fn propose(&mut self, view: u64, height: u64, stamp: u64) {
        let m: ConsensusMessage = Message::Propose {
            proposal: Proposal {
                view: View(view),
                height: Height(height),
                parent: GENESIS,
                parent_view: View(0),
                stamp,
                proposer: self.me,
                payload: BlockPayload { entries: Vec::new() },
            },
            parent: None,
            nullifications: Vec::new(),
        };
        self.publish(Topic::Consensus, &Gossip::Consensus(m));
    }

    /// One 10 ms round of the attack.
    fn attack(&mut self) {
        let second = self.last_second.elapsed() >= Duration::from_secs(1);
        if second {
            self.last_second = Instant::now();
        }
        match self.mode {
            Mode::InvalidSignatures => {
                let others: Vec<_> = self
                    .genesis
                    .nodes
                    .iter()
                    .map(|n| n.authority.clone())
                    .filter(|a| a != self.signer.authority())
                    .collect();
                let Ok(template) = self.signer.sign(SignatureScheme::Bls12381, b"template") else {
                    return;
                };
                for k in 0..10usize {
                    let entry = self
                        .offers
                        .get(k % self.offers.len().max(1))
                        .copied()
                        .unwrap_or_else(|| Digest(random_bytes(32).0.try_into().unwrap_or([0; 32])));
                    let mut sig = template.clone();
                    sig.signature = random_bytes(96);
                    if k % 2 == 1 {
                        if let Some(a) = others.get(k % others.len().max(1)) {
                            sig.authority = a.clone();
                        }
                    }
                    self.publish(
                        Topic::Events,
                        &Gossip::Signature {
                            entry,
                            signature: sig,
                            audit: None,
                        },
                    );
                }
            }
            Mode::DuplicateSignatures => {
                if self.own.is_none() {
                    self.own = self.registration(0);
                }
                let Some((body, sig)) = self.own.clone() else {
                    return;
                };
                if second || self.sent == 0 {
                    self.publish(
                        Topic::Events,
                        &Gossip::Offer {
                            body: body.clone(),
                            signatures: vec![sig.clone()],
                            audits: Vec::new(),
                        },
                    );
                }
                let entry = body.digest();
                for _ in 0..50 {
                    self.publish(
                        Topic::Events,
                        &Gossip::Signature {
                            entry,
                            signature: sig.clone(),
                            audit: None,
                        },
                    );
                }
            }
            Mode::OfferSpam => {
                for _ in 0..3 {
                    if let Some((body, sig)) = self.registration(0) {
                        self.publish(
                            Topic::Events,
                            &Gossip::Offer {
                                body,
                                signatures: vec![sig],
                                audits: Vec::new(),
                            },
                        );
                    }
                }
            }
            Mode::Oversized => {
                if self.huge.is_none() {
                    // About 5 MB encoded: over the 4 MiB block budget, under
                    // the 8 MiB gossip limit.
                    self.huge = self.registration(640_000);
                }
                if second || self.sent == 0 {
                    if let Some((body, sig)) = self.huge.clone() {
                        self.publish(
                            Topic::Events,
                            &Gossip::Offer {
                                body,
                                signatures: vec![sig],
                                audits: Vec::new(),
                            },
                        );
                    }
                }
            }
            Mode::BogusShares => {
                let Some(cp) = self.checkpoint.clone() else {
                    return;
                };
                for k in 0..5u16 {
                    let validator = if k % 2 == 0 {
                        self.me
                    } else {
                        (self.me + 1 + k) % self.n
                    };
                    self.publish(
                        Topic::Events,
                        &Gossip::CheckpointShare {
                            checkpoint: cp.clone(),
                            validator,
                            share: random_bytes(96),
                            note: random_bytes(64),
                        },
                    );
                }
            }
            Mode::FakeHeights => {
                for v in self.my_views() {
                    self.propose(v, 1_000_000_000_000 + v, now_ms());
                }
            }
            Mode::Equivocation => {
                for v in self.my_views() {
                    let now = now_ms();
                    self.propose(v, 1, now);
                    self.propose(v, 1, now + 1);
                }
            }
            Mode::SyncFlood => {
                let req = to_bytes(&Request::Consensus(Message::SyncRequest { from: Height(1) }));
                for (i, peer) in self.peers.clone().into_iter().enumerate() {
                    if i == usize::from(self.me) {
                        continue;
                    }
                    let (reply, _) = oneshot::channel();
                    if self
                        .net
                        .try_send(NetCommand::Request {
                            peer,
                            data: req.clone(),
                            reply,
                        })
                        .is_ok()
                    {
                        self.sent += 1;
                    }
                }
            }
        }
    }
}

/// What the member did, printed when it stops.
#[derive(Debug, Clone)]
pub struct Report {
    /// The mode.
    pub mode: Mode,
    /// Messages handed to the network.
    pub sent: u64,
    /// Most peers connected at once.
    pub most_connected: usize,
    /// Connections its peers closed.
    pub disconnections: usize,
}

/// Joins the testnet of `cfg` with its node's keys and attacks in `mode`
/// for `duration`.
pub async fn run(cfg: NodeConfig, mode: Mode, duration: Duration) -> Result<Report, NodeError> {
    let setup = |e: &dyn std::fmt::Display| NodeError::Setup(e.to_string());
    let (genesis, keyring) = genesis::load_genesis(&cfg.genesis)?;
    let signers = genesis::load_node_keys(&cfg.keys, &genesis, &keyring)?;
    let me = signers
        .validator
        .ok_or_else(|| setup(&"a Byzantine node must be a validator"))?;
    let node = genesis
        .validator(me)
        .cloned()
        .ok_or_else(|| setup(&"validator not in genesis"))?;
    let Joined {
        peers,
        net: net_tx,
        events: mut ev_rx,
        ..
    } = join(
        &cfg,
        &genesis,
        signers.node_secret,
        me,
        Arc::new(Metrics::default()),
        65_536,
    )?;
    tracing::warn!(
        "Byzantine member with {}'s keys: {} for {} s",
        node.name,
        mode.name(),
        duration.as_secs()
    );
    let mut m = Member {
        mode,
        me,
        n: genesis.consortium.n,
        genesis: Arc::new(genesis),
        signer: signers.authority,
        peers,
        net: net_tx,
        offers: VecDeque::new(),
        view: 0,
        proposed: BTreeSet::new(),
        checkpoint: None,
        own: None,
        huge: None,
        serial: 0,
        sent: 0,
        connected: 0,
        most_connected: 0,
        disconnections: 0,
        last_second: Instant::now(),
    };
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = tick.tick() => m.attack(),
            Some(ev) = ev_rx.recv() => m.learn(ev),
        }
    }
    let report = Report {
        mode,
        sent: m.sent,
        most_connected: m.most_connected,
        disconnections: m.disconnections,
    };
    println!(
        "byzantine member: mode {} ran {} s: sent {} messages; at most {} peers connected; disconnected {} times",
        mode.name(),
        duration.as_secs(),
        report.sent,
        report.most_connected,
        report.disconnections
    );
    Ok(report)
}
