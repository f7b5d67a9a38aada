//! A deterministic simulator: a seeded RNG, a virtual clock, n validators
//! on links with latency, jitter and loss, partitions that heal, crashes
//! and restarts from persisted state, and Byzantine validators (see
//! [`Behaviour`]). One seed always yields the same run and the same trace
//! digest.
//!
//! The [`Checker`] inside [`run`] checks, for every honest pair, that
//! finalised chains are prefixes of one another, and that no honest
//! validator ever cast conflicting votes or proposals (persisted safety
//! state at work across restarts).

mod mock;

pub use mock::{MockApp, MockScheme};

use std::collections::{BTreeMap, BTreeSet};

use provenance::Digest;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha3::{Digest as _, Sha3_256};

use crate::engine::{Config, Engine};
use crate::scheme::CertificateScheme;
use crate::types::*;

/// A consortium of `n` single-node authorities dealt from `seed`, as real
/// threshold-BLS schemes for the simulator: validator `i` is
/// `BlsThreshold::new(keyring.clone(), signers[i].clone())`.
pub fn bls_validators(
    n: u16,
    seed: u64,
) -> (
    std::sync::Arc<provenance::KeyRing>,
    Vec<std::sync::Arc<provenance::crypto::ConsortiumSigner>>,
) {
    use provenance::genesis::{deal, ConsortiumDescription};
    let desc = ConsortiumDescription::one_node_each("sim", n, 7300, 8300);
    let dealt = deal(
        &desc,
        provenance::Timestamp(1),
        &mut ChaCha20Rng::seed_from_u64(seed),
    )
    .expect("a consortium of single-node authorities always deals");
    let signers = dealt
        .signers()
        .expect("dealt keys match their genesis")
        .into_iter()
        .filter_map(|s| s.consortium.map(std::sync::Arc::new))
        .collect();
    (std::sync::Arc::new(dealt.keyring), signers)
}

/// What a Byzantine validator does besides running the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Behaviour {
    /// Follows the protocol.
    Honest,
    /// As leader, sends one proposal to half the validators and a different
    /// one to the other half.
    Equivocator,
    /// Votes notarize for a second, made-up block in every view it votes in.
    DoubleVoter,
    /// Sends copies of its votes for wrong views (past and future), validly
    /// signed.
    WrongView,
    /// Sends nothing at all.
    Silent,
    /// Sends forged shares: garbage bytes, and shares claimed for other
    /// signers.
    Forger,
}

impl Behaviour {
    /// Every Byzantine behaviour.
    pub const BYZANTINE: [Behaviour; 5] = [
        Behaviour::Equivocator,
        Behaviour::DoubleVoter,
        Behaviour::WrongView,
        Behaviour::Silent,
        Behaviour::Forger,
    ];
}

/// A network partition: during `[from, until)` messages between `side` and
/// the rest are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Start (virtual ms).
    pub from: u64,
    /// Heal time.
    pub until: u64,
    /// One side.
    pub side: Vec<ValidatorIndex>,
}

/// A crash at `at` and a restart from persisted state at `restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash {
    /// The validator.
    pub node: ValidatorIndex,
    /// Crash time.
    pub at: u64,
    /// Restart time.
    pub restart: u64,
}

/// One simulated run's setup.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Validators.
    pub n: u16,
    /// Observers (signing members), indexes n.. : honest, never voting,
    /// their chains checked with the validators'.
    pub observers: u16,
    /// Seed of every random choice.
    pub seed: u64,
    /// Byzantine validators.
    pub byzantine: Vec<(ValidatorIndex, Behaviour)>,
    /// Link latency range (ms).
    pub latency: (u64, u64),
    /// Probability a message is lost.
    pub loss: f64,
    /// Partitions.
    pub partitions: Vec<Partition>,
    /// Crashes.
    pub crashes: Vec<Crash>,
    /// Quorum override (the broken variant); `None` is q = n − f.
    pub quorum: Option<usize>,
    /// View timeout (ms).
    pub view_timeout: u64,
    /// Clock-skew bound (ms); validators' clocks differ by up to half.
    pub max_skew: u64,
    /// Stop once every honest validator finalised this many blocks.
    pub target_blocks: u64,
    /// Give up at this virtual time (ms).
    pub time_limit: u64,
}

impl Scenario {
    /// A random scenario of `n` validators for `seed`: f Byzantine
    /// validators with random behaviours, random latency and loss, a
    /// partition that heals, and a crash-restart of an honest validator.
    pub fn random(n: u16, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
        let f = (n - 1) / 3;
        let mut ids: Vec<ValidatorIndex> = (0..n).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.gen_range(0..=i));
        }
        let byzantine: Vec<(ValidatorIndex, Behaviour)> = ids[..f as usize]
            .iter()
            .map(|&i| {
                (
                    i,
                    Behaviour::BYZANTINE[rng.gen_range(0..Behaviour::BYZANTINE.len())],
                )
            })
            .collect();
        let honest: Vec<ValidatorIndex> = ids[f as usize..].to_vec();
        let lo = rng.gen_range(5..40);
        let start = rng.gen_range(500..3_000);
        let mut side: Vec<ValidatorIndex> = honest.iter().copied().filter(|_| rng.gen_bool(0.5)).collect();
        if side.is_empty() {
            side.push(honest[0]);
        }
        let victim = honest[rng.gen_range(0..honest.len())];
        let at = rng.gen_range(1_000..6_000);
        Self {
            n,
            observers: 0,
            seed,
            byzantine,
            latency: (lo, lo + rng.gen_range(0..60)),
            loss: rng.gen_range(0.0..0.05),
            partitions: vec![Partition {
                from: start,
                until: start + rng.gen_range(500..3_000),
                side,
            }],
            crashes: vec![Crash {
                node: victim,
                at,
                restart: at + rng.gen_range(200..2_000),
            }],
            quorum: None,
            view_timeout: 400,
            max_skew: 500,
            target_blocks: 20,
            time_limit: 120_000,
        }
    }

    /// When the network is whole again: the last partition healed and the
    /// last crashed validator restarted.
    pub fn stable_from(&self) -> u64 {
        let heal = self.partitions.iter().map(|p| p.until).max().unwrap_or(0);
        let restart = self.crashes.iter().map(|c| c.restart).max().unwrap_or(0);
        heal.max(restart)
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// Each validator's finalised chain (block digests by height).
    pub chains: Vec<Vec<Digest>>,
    /// Which validators were honest.
    pub honest: Vec<bool>,
    /// Safety violations found by the checker (empty when safe).
    pub violations: Vec<String>,
    /// How often each Byzantine behaviour acted.
    pub fired: BTreeMap<Behaviour, u64>,
    /// Misbehaviour reports by honest validators, by accused validator.
    pub blamed: BTreeSet<ValidatorIndex>,
    /// Digest of the whole run's trace.
    pub trace: Digest,
    /// Virtual time at the end (ms).
    pub time: u64,
    /// Per honest validator: views from the moment the network is whole
    /// again ([`Scenario::stable_from`], counted from the highest view any
    /// validator had reached) to its first finalisation after it (`None`
    /// if it finalised nothing after).
    pub views_to_finalize_after_heal: Vec<Option<u64>>,
    /// Messages delivered.
    pub delivered: u64,
    /// Each validator's view at the end (0 if down).
    pub views: Vec<u64>,
    /// Block-sync responses and fetched blocks delivered (catch-up paths
    /// exercised).
    pub catch_up_messages: u64,
}

impl Report {
    /// Fewest blocks finalised by an honest validator.
    pub fn min_honest_height(&self) -> u64 {
        self.chains
            .iter()
            .zip(&self.honest)
            .filter(|(_, h)| **h)
            .map(|(c, _)| c.len() as u64)
            .min()
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
enum Event<P, S, C> {
    Deliver {
        from: ValidatorIndex,
        to: ValidatorIndex,
        message: Message<P, S, C>,
    },
    Tick(ValidatorIndex),
    Crash(ValidatorIndex),
    Restart(ValidatorIndex),
}

struct Node<S: CertificateScheme> {
    behaviour: Behaviour,
    engine: Option<Engine<MockApp, S>>,
    app: MockApp,
    signer: S,
    disk_safety: SafetyState<S::Certificate>,
    disk_chain: Vec<Proposal<u64>>,
    /// The finalisation certificates stored with blocks, by height.
    disk_certs: BTreeMap<u64, Certificate<S::Certificate>>,
    clock_offset: u64,
    heal_view: Option<u64>,
    views_after_heal: Option<u64>,
}

type Msg<S> = Message<u64, <S as CertificateScheme>::Share, <S as CertificateScheme>::Certificate>;
type Act<S> = Action<u64, <S as CertificateScheme>::Share, <S as CertificateScheme>::Certificate>;
type Queue<S> =
    BTreeMap<(u64, u64), Event<u64, <S as CertificateScheme>::Share, <S as CertificateScheme>::Certificate>>;

/// The safety checker: honest chains agree, honest validators never
/// equivocate.
#[derive(Debug, Default)]
pub struct Checker {
    votes: BTreeMap<(ValidatorIndex, u64), Digest>,
    proposals: BTreeMap<(ValidatorIndex, u64), Digest>,
    final_votes: BTreeSet<(ValidatorIndex, u64)>,
    null_votes: BTreeSet<(ValidatorIndex, u64)>,
    /// Violations found.
    pub violations: Vec<String>,
}

impl Checker {
    fn outgoing<P: serde::Serialize, S, C>(&mut self, node: ValidatorIndex, n: u16, m: &Message<P, S, C>) {
        if node >= n && matches!(m, Message::Vote(_) | Message::Propose { .. }) {
            self.violations.push(format!("observer {node} voted or proposed"));
        }
        match m {
            Message::Vote(v) if v.signer == node => {
                let s = v.subject;
                match s.kind {
                    VoteKind::Notarize => {
                        if let Some(prev) = self.votes.insert((node, s.view.0), s.block) {
                            if prev != s.block {
                                self.violations
                                    .push(format!("honest {node} voted notarize twice in {}", s.view));
                            }
                        }
                    }
                    VoteKind::Finalize => {
                        self.final_votes.insert((node, s.view.0));
                    }
                    VoteKind::Nullify => {
                        self.null_votes.insert((node, s.view.0));
                    }
                }
                if self.final_votes.contains(&(node, s.view.0)) && self.null_votes.contains(&(node, s.view.0))
                {
                    self.violations
                        .push(format!("honest {node} voted finalize and nullify in {}", s.view));
                }
            }
            Message::Propose { proposal, .. } => {
                let d = proposal.digest();
                if let Some(prev) = self.proposals.insert((node, proposal.view.0), d) {
                    if prev != d {
                        self.violations
                            .push(format!("honest {node} proposed twice in {}", proposal.view));
                    }
                }
            }
            _ => {}
        }
    }

    /// Checks that all honest chains are prefixes of each other.
    pub fn chains(&mut self, chains: &[Vec<Digest>], honest: &[bool]) {
        let hs: Vec<&Vec<Digest>> = chains
            .iter()
            .zip(honest)
            .filter(|(_, h)| **h)
            .map(|(c, _)| c)
            .collect();
        for (i, a) in hs.iter().enumerate() {
            for b in &hs[i + 1..] {
                let n = a.len().min(b.len());
                if let Some(h) = (0..n).find(|&h| a[h] != b[h]) {
                    self.violations.push(format!(
                        "two honest validators finalised different blocks at height {}",
                        h + 1
                    ));
                }
            }
        }
    }
}

fn partitioned(s: &Scenario, a: ValidatorIndex, b: ValidatorIndex, t: u64) -> bool {
    s.partitions
        .iter()
        .any(|p| p.from <= t && t < p.until && (p.side.contains(&a) != p.side.contains(&b)))
}

/// Runs a scenario with the certificate scheme `make(i)` for validator `i`.
pub fn run<S, F>(s: &Scenario, make: F) -> Report
where
    S: CertificateScheme,
    F: Fn(ValidatorIndex, usize) -> S,
{
    let f = (s.n - 1) / 3;
    let quorum = s.quorum.unwrap_or((s.n - f) as usize);
    let mut rng = ChaCha20Rng::seed_from_u64(s.seed);
    let mut trace = Sha3_256::new();
    let mut checker = Checker::default();
    let mut fired: BTreeMap<Behaviour, u64> = BTreeMap::new();
    let mut blamed = BTreeSet::new();
    let mut queue: Queue<S> = BTreeMap::new();
    let mut seq = 0u64;
    let mut delivered = 0u64;
    let mut catch_up = 0u64;
    let cfg = |i: ValidatorIndex| Config {
        quorum,
        ..Config::new(i, s.n, s.view_timeout, s.max_skew)
    };
    let everyone = s.n + s.observers;
    let mut nodes: Vec<Node<S>> = (0..everyone)
        .map(|i| Node {
            behaviour: s
                .byzantine
                .iter()
                .find(|(b, _)| *b == i)
                .map(|(_, b)| *b)
                .unwrap_or(Behaviour::Honest),
            engine: Some(Engine::new(cfg(i), make(i, quorum))),
            app: MockApp::new(i),
            signer: make(i, quorum),
            disk_safety: SafetyState::genesis(),
            disk_chain: Vec::new(),
            disk_certs: BTreeMap::new(),
            clock_offset: rng.gen_range(0..=s.max_skew / 2),
            heal_view: None,
            views_after_heal: None,
        })
        .collect();
    let heal = s.stable_from();
    for c in &s.crashes {
        queue.insert(
            (c.at, {
                seq += 1;
                seq
            }),
            Event::Crash(c.node),
        );
        queue.insert(
            (c.restart, {
                seq += 1;
                seq
            }),
            Event::Restart(c.node),
        );
    }

    // Apply a node's actions: persist, route sends through its behaviour.
    let mut pending: Vec<(ValidatorIndex, Vec<Act<S>>)> = Vec::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        let now = node.clock_offset;
        let acts = match node.engine.as_mut() {
            Some(e) => e.start(&mut node.app, now),
            None => Vec::new(),
        };
        pending.push((i as ValidatorIndex, acts));
        seq += 1;
        queue.insert((1, seq), Event::Tick(i as ValidatorIndex));
    }

    let tick_every = (s.view_timeout / 4).max(1);
    let mut now = 0u64;
    loop {
        // Route pending actions.
        for (i, acts) in pending.drain(..) {
            let node = &mut nodes[i as usize];
            for a in acts {
                // A sync request is answered from the node's "disk".
                let a = match a {
                    Action::ServeSync { to, from } => {
                        let head = Height(node.disk_chain.len() as u64);
                        let chunk = crate::sync_chunk(from, head, usize::MAX, usize::MAX, |h| {
                            let p = node.disk_chain.get(h.0.checked_sub(1)? as usize)?.clone();
                            Some((p, node.disk_certs.get(&h.0).cloned(), 8))
                        });
                        match chunk {
                            Some((blocks, finalization)) => Action::Send {
                                to: Some(to),
                                message: Message::SyncResponse { blocks, finalization },
                            },
                            None => continue,
                        }
                    }
                    a => a,
                };
                match a {
                    Action::Persist(state) => node.disk_safety = state,
                    Action::ServeSync { .. } => {}
                    Action::Finalized {
                        proposal,
                        finalization,
                    } => {
                        trace.update(b"F");
                        trace.update([i as u8]);
                        trace.update(proposal.digest().0);
                        if let Some(c) = finalization {
                            node.disk_certs.insert(proposal.height.0, c);
                        }
                        node.disk_chain.push(proposal);
                        if now >= heal && node.views_after_heal.is_none() {
                            if let (Some(hv), Some(e)) = (node.heal_view, node.engine.as_ref()) {
                                node.views_after_heal = Some(e.view().0.saturating_sub(hv));
                            }
                        }
                    }
                    Action::Misbehaved { peer, .. } => {
                        if node.behaviour == Behaviour::Honest {
                            blamed.insert(peer);
                        }
                    }
                    Action::Send { to, message } => {
                        if node.behaviour == Behaviour::Honest {
                            checker.outgoing(i, s.n, &message);
                        }
                        let outgoing = byzantine_transform(node, i, s.n, to, message, &mut rng, &mut fired);
                        for (to, m) in outgoing {
                            let targets: Vec<ValidatorIndex> = match to {
                                Some(t) => vec![t],
                                None => (0..everyone).filter(|&j| j != i).collect(),
                            };
                            for j in targets {
                                if partitioned(s, i, j, now) || rng.gen_bool(s.loss) {
                                    continue;
                                }
                                let at = now + rng.gen_range(s.latency.0..=s.latency.1);
                                seq += 1;
                                queue.insert(
                                    (at, seq),
                                    Event::Deliver {
                                        from: i,
                                        to: j,
                                        message: m.clone(),
                                    },
                                );
                            }
                        }
                    }
                }
            }
        }
        let done = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.behaviour == Behaviour::Honest)
            .all(|(_, n)| n.disk_chain.len() as u64 >= s.target_blocks && n.views_after_heal.is_some())
            && now >= heal;
        if done || now > s.time_limit {
            break;
        }
        let Some(((t, _), ev)) = queue.pop_first() else {
            break;
        };
        now = t;
        if now >= heal && nodes.iter().all(|n| n.heal_view.is_none()) {
            // Progress after the heal is counted from the highest view any
            // live validator had reached: a validator that was cut off jumps
            // over views the others already went through. A validator
            // restarting now counts with the view it persisted.
            let top = nodes
                .iter()
                .map(|n| n.engine.as_ref().map_or(n.disk_safety.view.0, |e| e.view().0))
                .max()
                .unwrap_or(0);
            for n in nodes.iter_mut() {
                n.heal_view = Some(top);
            }
        }
        match ev {
            Event::Tick(i) => {
                let node = &mut nodes[i as usize];
                if let Some(e) = node.engine.as_mut() {
                    let acts = e.tick(&mut node.app, now + node.clock_offset);
                    pending.push((i, acts));
                }
                seq += 1;
                queue.insert((now + tick_every, seq), Event::Tick(i));
            }
            Event::Deliver { from, to, message } => {
                let node = &mut nodes[to as usize];
                if let Some(e) = node.engine.as_mut() {
                    delivered += 1;
                    if matches!(message, Message::SyncResponse { .. } | Message::Block { .. }) {
                        catch_up += 1;
                    }
                    trace.update(b"D");
                    trace.update([from as u8, to as u8]);
                    trace.update(t.to_be_bytes());
                    let acts = e.handle(&mut node.app, from, message);
                    pending.push((to, acts));
                }
            }
            Event::Crash(i) => {
                trace.update(b"C");
                nodes[i as usize].engine = None;
            }
            Event::Restart(i) => {
                trace.update(b"R");
                let node = &mut nodes[i as usize];
                let mut e = Engine::restore(
                    cfg(i),
                    make(i, quorum),
                    node.disk_safety.clone(),
                    node.disk_chain.clone(),
                );
                // Kept blocks at or below the finalised tip are dropped.
                let top = node.disk_chain.last().map(|p| p.height).unwrap_or_default();
                node.app.kept.retain(|p| p.height > top);
                let kept = node.app.kept.clone();
                e.restore_blocks(&mut node.app, kept);
                let acts = e.start(&mut node.app, now + node.clock_offset);
                node.engine = Some(e);
                pending.push((i, acts));
            }
        }
    }

    let honest: Vec<bool> = nodes.iter().map(|n| n.behaviour == Behaviour::Honest).collect();
    let chains: Vec<Vec<Digest>> = nodes
        .iter()
        .map(|n| n.disk_chain.iter().map(|p| p.digest()).collect())
        .collect();
    checker.chains(&chains, &honest);
    for c in &chains {
        trace.update((c.len() as u64).to_be_bytes());
    }
    Report {
        views_to_finalize_after_heal: nodes
            .iter()
            .filter(|n| n.behaviour == Behaviour::Honest)
            .map(|n| n.views_after_heal)
            .collect(),
        chains,
        honest,
        violations: checker.violations,
        fired,
        blamed,
        trace: Digest(trace.finalize().into()),
        time: now,
        delivered,
        views: nodes
            .iter()
            .map(|n| n.engine.as_ref().map(|e| e.view().0).unwrap_or(0))
            .collect(),
        catch_up_messages: catch_up,
    }
}

/// What a Byzantine validator actually sends instead of `message`.
fn byzantine_transform<S: CertificateScheme>(
    node: &Node<S>,
    me: ValidatorIndex,
    n: u16,
    to: Option<ValidatorIndex>,
    message: Msg<S>,
    rng: &mut ChaCha20Rng,
    fired: &mut BTreeMap<Behaviour, u64>,
) -> Vec<(Option<ValidatorIndex>, Msg<S>)> {
    let b = node.behaviour;
    let mut fire = || *fired.entry(b).or_default() += 1;
    match (b, message) {
        (Behaviour::Honest, m) => vec![(to, m)],
        (Behaviour::Silent, _) => {
            fire();
            Vec::new()
        }
        (
            Behaviour::Equivocator,
            Message::Propose {
                proposal,
                parent,
                nullifications,
            },
        ) => {
            fire();
            let mut other = proposal.clone();
            other.payload ^= 0xdead_beef;
            let mut out = Vec::new();
            for j in (0..n).filter(|&j| j != me) {
                let p = if j % 2 == 0 {
                    proposal.clone()
                } else {
                    other.clone()
                };
                out.push((
                    Some(j),
                    Message::Propose {
                        proposal: p,
                        parent: parent.clone(),
                        nullifications: nullifications.clone(),
                    },
                ));
            }
            out
        }
        (Behaviour::DoubleVoter, Message::Vote(v)) if v.subject.kind == VoteKind::Notarize => {
            fire();
            let mut fake = [0u8; 32];
            rng.fill(&mut fake);
            let subject = Subject {
                block: Digest(fake),
                ..v.subject
            };
            let second = Vote {
                subject,
                signer: me,
                share: node.signer.sign(&subject.message()),
            };
            vec![(to, Message::Vote(v)), (to, Message::Vote(second))]
        }
        (Behaviour::WrongView, Message::Vote(v)) => {
            fire();
            let delta = rng.gen_range(1..5u64);
            let view = if rng.gen_bool(0.5) {
                View(v.subject.view.0 + delta)
            } else {
                View(v.subject.view.0.saturating_sub(delta))
            };
            let subject = Subject { view, ..v.subject };
            let wrong = Vote {
                subject,
                signer: me,
                share: node.signer.sign(&subject.message()),
            };
            vec![(to, Message::Vote(wrong)), (to, Message::Vote(v))]
        }
        (Behaviour::Forger, Message::Vote(v)) => {
            fire();
            // A share claimed for another signer, and a share over another
            // subject passed off as this one's.
            let other = (me + 1 + rng.gen_range(0..n - 1)) % n;
            let impersonated = Vote {
                signer: other,
                ..v.clone()
            };
            let wrong_subject = Subject {
                view: View(v.subject.view.0 + 1000),
                ..v.subject
            };
            let mismatched = Vote {
                share: node.signer.sign(&wrong_subject.message()),
                ..v.clone()
            };
            vec![
                (to, Message::Vote(impersonated)),
                (to, Message::Vote(mismatched)),
                (to, Message::Vote(v)),
            ]
        }
        (_, m) => vec![(to, m)],
    }
}
