//! What each peer may cost this node: a token bucket per peer and kind of
//! message for valid traffic, and a ban for a peer that sent something
//! provably invalid. A caller-driven state machine (no I/O, the clock is
//! handed in): the network task asks [`Guard::admit`] before a message
//! reaches the node's core, and reports the core's verdict with
//! [`Guard::punish`].
//!
//! A ban starts at [`BAN`] and doubles with each repeat (at most
//! [`MAX_BAN`]): an honest node never sends a message that fails a
//! signature or format check, so one is enough.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// First ban of a peer.
pub const BAN: Duration = Duration::from_secs(60);
/// Longest ban.
pub const MAX_BAN: Duration = Duration::from_secs(600);

/// The kinds of message a peer's budget is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// An entry offered for co-signing.
    Offer,
    /// An authority's signature.
    Signature,
    /// An authority's refusal.
    Refusal,
    /// A checkpoint share or a certified checkpoint.
    Checkpoint,
    /// A gossiped consensus message (proposal, vote, certificate).
    Consensus,
    /// A block sync request.
    SyncRequest,
    /// Any other point-to-point request (block, blob, checkpoints).
    Request,
}

impl Kind {
    /// Every kind, for the metrics.
    pub const ALL: [Kind; 7] = [
        Kind::Offer,
        Kind::Signature,
        Kind::Refusal,
        Kind::Checkpoint,
        Kind::Consensus,
        Kind::SyncRequest,
        Kind::Request,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Offer => "offer",
            Kind::Signature => "signature",
            Kind::Refusal => "refusal",
            Kind::Checkpoint => "checkpoint",
            Kind::Consensus => "consensus",
            Kind::SyncRequest => "sync_request",
            Kind::Request => "request",
        }
    }

    /// Sustained messages per second, and the burst, one peer may send.
    /// An honest node re-offers at most 256 entries a second and sends a
    /// few consensus messages per view; a lagging one asks for a sync
    /// chunk after each answer.
    pub fn budget(self) -> (f64, f64) {
        match self {
            Kind::Offer => (100.0, 1_000.0),
            Kind::Signature => (1_000.0, 4_000.0),
            Kind::Refusal => (100.0, 1_000.0),
            Kind::Checkpoint => (100.0, 1_000.0),
            Kind::Consensus => (300.0, 1_000.0),
            Kind::SyncRequest => (4.0, 16.0),
            Kind::Request => (100.0, 400.0),
        }
    }
}

/// Provably invalid behaviour: an honest node never does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// A message that does not decode.
    Undecodable,
    /// A co-signature or share that does not verify.
    BadSignature,
    /// A signature gossiped by a node of another authority.
    ForeignSignature,
    /// An offer with more signatures than signers, or two of one.
    ExtraSignatures,
    /// An entry over the block budget, or breaking its format.
    Malformed,
    /// A checkpoint share or checkpoint that does not verify.
    BadCheckpoint,
    /// Two proposals or two votes in one view.
    Equivocation,
    /// A proposal that cannot extend its parent (height, views, leader).
    InvalidProposal,
    /// A certificate or sync answer that does not verify.
    BadCertificate,
}

impl Fault {
    /// Every fault, for the metrics.
    pub const ALL: [Fault; 9] = [
        Fault::Undecodable,
        Fault::BadSignature,
        Fault::ForeignSignature,
        Fault::ExtraSignatures,
        Fault::Malformed,
        Fault::BadCheckpoint,
        Fault::Equivocation,
        Fault::InvalidProposal,
        Fault::BadCertificate,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Fault::Undecodable => "undecodable",
            Fault::BadSignature => "bad_signature",
            Fault::ForeignSignature => "foreign_signature",
            Fault::ExtraSignatures => "extra_signatures",
            Fault::Malformed => "malformed",
            Fault::BadCheckpoint => "bad_checkpoint",
            Fault::Equivocation => "equivocation",
            Fault::InvalidProposal => "invalid_proposal",
            Fault::BadCertificate => "bad_certificate",
        }
    }
}

/// What [`Guard::admit`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Within budget: the core sees it.
    Yes,
    /// Over this peer's budget for the kind: dropped, not relayed.
    Limited,
    /// The peer is banned: dropped.
    Banned,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct PeerState {
    buckets: HashMap<Kind, Bucket>,
    banned_until: Option<Instant>,
    bans: u32,
}

/// Per-peer budgets and bans.
#[derive(Debug, Default)]
pub struct Guard {
    peers: HashMap<PeerId, PeerState>,
}

impl Guard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `peer` may send one more message of `kind` at `now`.
    pub fn admit(&mut self, peer: PeerId, kind: Kind, now: Instant) -> Admit {
        let st = self.peers.entry(peer).or_default();
        if st.banned_until.is_some_and(|t| now < t) {
            return Admit::Banned;
        }
        let (rate, burst) = kind.budget();
        let b = st.buckets.entry(kind).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Admit::Yes
        } else {
            Admit::Limited
        }
    }

    /// Whether `peer` is banned at `now`.
    pub fn banned(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers
            .get(peer)
            .and_then(|s| s.banned_until)
            .is_some_and(|t| now < t)
    }

    /// `peer` sent something provably invalid: it is banned (longer for
    /// each repeat). Returns the ban's length if it starts now (a peer
    /// already banned is not banned again).
    pub fn punish(&mut self, peer: PeerId, _fault: Fault, now: Instant) -> Option<Duration> {
        let st = self.peers.entry(peer).or_default();
        if st.banned_until.is_some_and(|t| now < t) {
            return None;
        }
        let ban = BAN
            .checked_mul(1 << st.bans.min(4))
            .unwrap_or(MAX_BAN)
            .min(MAX_BAN);
        st.bans = st.bans.saturating_add(1);
        st.banned_until = Some(now + ban);
        Some(ban)
    }

    /// Peers whose ban ended by `now` (each returned once).
    pub fn lift(&mut self, now: Instant) -> Vec<PeerId> {
        let mut out = Vec::new();
        for (p, s) in &mut self.peers {
            if s.banned_until.is_some_and(|t| now >= t) {
                s.banned_until = None;
                out.push(*p);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_at_the_burst_and_refills_at_the_rate() {
        let mut g = Guard::new();
        let p = PeerId::random();
        let t0 = Instant::now();
        let (rate, burst) = Kind::SyncRequest.budget();
        let admitted = (0..1000)
            .filter(|_| g.admit(p, Kind::SyncRequest, t0) == Admit::Yes)
            .count();
        assert_eq!(admitted, burst as usize);
        // Another kind and another peer have their own budgets.
        assert_eq!(g.admit(p, Kind::Offer, t0), Admit::Yes);
        assert_eq!(g.admit(PeerId::random(), Kind::SyncRequest, t0), Admit::Yes);
        // One second later: `rate` more.
        let t1 = t0 + Duration::from_secs(1);
        let admitted = (0..1000)
            .filter(|_| g.admit(p, Kind::SyncRequest, t1) == Admit::Yes)
            .count();
        assert_eq!(admitted, rate as usize);
        assert!(!g.banned(&p, t1), "a valid flood is limited, not banned");
    }

    #[test]
    fn a_fault_bans_for_a_while_and_repeats_ban_longer() {
        let mut g = Guard::new();
        let p = PeerId::random();
        let t0 = Instant::now();
        assert_eq!(g.punish(p, Fault::BadSignature, t0), Some(BAN));
        assert_eq!(g.admit(p, Kind::Signature, t0), Admit::Banned);
        // Faults during the ban do not extend it.
        assert_eq!(
            g.punish(p, Fault::BadSignature, t0 + Duration::from_secs(1)),
            None
        );
        assert!(g.lift(t0 + BAN - Duration::from_millis(1)).is_empty());
        assert_eq!(g.lift(t0 + BAN), vec![p]);
        assert!(g.lift(t0 + BAN).is_empty(), "lifted once");
        assert_eq!(g.admit(p, Kind::Signature, t0 + BAN), Admit::Yes);
        assert_eq!(g.punish(p, Fault::Equivocation, t0 + BAN), Some(BAN * 2));
        let mut t = t0 + BAN * 3;
        for _ in 0..10 {
            let ban = g.punish(p, Fault::Equivocation, t).expect("a new ban");
            assert!(ban <= MAX_BAN);
            t += ban;
        }
        assert_eq!(g.punish(p, Fault::Equivocation, t), Some(MAX_BAN));
    }
}
