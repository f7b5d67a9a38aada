//! Views, heights, proposals, votes, certificates and the engine's messages
//! and actions.

use std::fmt;

use provenance::codec::encode;
use provenance::crypto::{signing_message, SigningDomain};
use provenance::digest::{tagged_hash, ObjectKind};
use provenance::Digest;
use serde::{Deserialize, Serialize};

/// A consensus view (Simplex's iteration): one leader, one chance to
/// notarise a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct View(pub u64);

impl View {
    /// The next view.
    pub fn next(self) -> View {
        View(self.0 + 1)
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A block height; the genesis block is height 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Height(pub u64);

/// A validator's index, 0..n.
pub type ValidatorIndex = u16;

/// The digest of the genesis block every chain starts from.
pub const GENESIS: Digest = Digest::ZERO;

/// A proposed block: the leader's payload placed in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal<P> {
    /// View it is proposed in.
    pub view: View,
    /// Height (parent's height + 1).
    pub height: Height,
    /// Parent block digest ([`GENESIS`] at height 1).
    pub parent: Digest,
    /// View the parent was notarised in (0 for genesis).
    pub parent_view: View,
    /// The leader's timestamp (ms); never below the parent's, never ahead of
    /// a voter's clock by more than the skew bound.
    pub stamp: u64,
    /// The proposing validator.
    pub proposer: ValidatorIndex,
    /// The application's payload.
    pub payload: P,
}

impl<P: Serialize> Proposal<P> {
    /// The block digest votes refer to.
    pub fn digest(&self) -> Digest {
        tagged_hash(ObjectKind::Block, &encode(self))
    }
}

/// What a vote is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum VoteKind {
    /// The block is a valid extension: notarise it.
    Notarize,
    /// Nothing was notarised in time: skip the view.
    Nullify,
    /// The block was notarised and I did not nullify the view: finalise it.
    Finalize,
}

/// The exact statement a vote signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Subject {
    /// Kind of vote.
    pub kind: VoteKind,
    /// View.
    pub view: View,
    /// Block ([`GENESIS`]'s zero digest for nullify).
    pub block: Digest,
}

impl Subject {
    /// The bytes signed for this subject.
    pub fn message(&self) -> Vec<u8> {
        signing_message(SigningDomain::Vote, &encode(self))
    }
}

/// One validator's vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote<S> {
    /// What it is for.
    pub subject: Subject,
    /// Who votes.
    pub signer: ValidatorIndex,
    /// Its signature share over [`Subject::message`].
    pub share: S,
}

/// A quorum of votes combined into one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate<C> {
    /// What it certifies.
    pub subject: Subject,
    /// The combined signature.
    pub certificate: C,
}

/// A message between validators. The transport authenticates the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<P, S, C> {
    /// The leader's proposal with its justification: the parent's
    /// notarisation and the nullifications of every view in between.
    Propose {
        /// The block.
        proposal: Proposal<P>,
        /// Notarisation of the parent (none for genesis).
        parent: Option<Certificate<C>>,
        /// Nullifications of the views between parent and proposal.
        nullifications: Vec<Certificate<C>>,
    },
    /// A vote.
    Vote(Vote<S>),
    /// A certificate (forwarded so every node advances).
    Certificate(Certificate<C>),
    /// A lagging node asks for finalised blocks from a height on.
    SyncRequest {
        /// First height wanted.
        from: Height,
    },
    /// Finalised blocks, in height order, ending with the block
    /// `finalization` certifies; each block is the parent of the next.
    SyncResponse {
        /// The blocks.
        blocks: Vec<Proposal<P>>,
        /// Finalisation certificate of the last block.
        finalization: Certificate<C>,
    },
    /// Asks for a notarised block this validator lacks.
    BlockRequest {
        /// Its digest.
        block: Digest,
    },
    /// A block, answering a [`Message::BlockRequest`].
    Block {
        /// The block.
        proposal: Proposal<P>,
    },
}

/// The votes a validator has cast in its current view, the certificate
/// that opened the view and the certificates of the views since the last
/// finalisation: what must be on disk before any of its votes leaves the
/// node. After a restart the certificate lets the validator help peers
/// still stuck in the previous view; the earlier ones let a consortium that
/// restarted as a whole still justify, and judge, a proposal extending a
/// notarised block that never became final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyState<C> {
    /// The view these flags are for (the highest view entered).
    pub view: View,
    /// The certificate of `view - 1` that opened `view` (none for view 1).
    pub entered_by: Option<Certificate<C>>,
    /// Proposed a block in `view` (leaders only).
    pub proposed: Option<Digest>,
    /// Voted notarize for this block in `view`.
    pub notarized: Option<Digest>,
    /// Voted nullify in `view`.
    pub nullified: bool,
    /// Voted finalize in `view`.
    pub finalized: bool,
    /// Notarisations and nullifications of the views from the last
    /// finalised one (at most `MAX_VIEWS_AHEAD` back) up to `view - 2`,
    /// as known on entering `view`.
    pub earlier: Vec<Certificate<C>>,
}

impl<C> SafetyState<C> {
    /// The state of a validator that has voted nothing yet.
    pub fn genesis() -> Self {
        Self::entering(View(0), None)
    }

    /// The state on entering `view`, opened by `certificate`.
    pub fn entering(view: View, entered_by: Option<Certificate<C>>) -> Self {
        Self {
            view,
            entered_by,
            proposed: None,
            notarized: None,
            nullified: false,
            finalized: false,
            earlier: Vec::new(),
        }
    }
}

/// Misbehaviour the engine noticed in a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misbehaviour {
    /// A share that does not verify (forged, malformed, or claimed for
    /// another signer).
    BadShare(Subject),
    /// A certificate that does not verify.
    BadCertificate(Subject),
    /// Two different notarize votes in one view.
    DoubleVote(View),
    /// Two different proposals in one view.
    Equivocation(View),
    /// A proposal from a node that is not the view's leader.
    NotLeader(View),
    /// A proposal that does not extend a justified parent.
    InvalidProposal(View, &'static str),
    /// A sync response that does not verify.
    BadSync,
}

/// What the engine asks its caller to do, in order. A `Persist` must be
/// durable before any later `Send` leaves the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P, S, C> {
    /// Write the safety state to disk (synced).
    Persist(SafetyState<C>),
    /// Send a message to one validator, or to all others when `to` is
    /// `None`.
    Send {
        /// Recipient, or all.
        to: Option<ValidatorIndex>,
        /// The message.
        message: Message<P, S, C>,
    },
    /// A block is final; emitted once per height, in height order.
    Finalized {
        /// The block.
        proposal: Proposal<P>,
        /// The finalisation certificate, on the block it names (its
        /// ancestors are final through it).
        finalization: Option<Certificate<C>>,
    },
    /// A validator asked for the finalised blocks from `from` on: answer it
    /// with a [`Message::SyncResponse`] read from storage
    /// ([`crate::engine::sync_chunk`]).
    ServeSync {
        /// The validator asking.
        to: ValidatorIndex,
        /// The first height it wants.
        from: Height,
    },
    /// A peer misbehaved; the message was dropped.
    Misbehaved {
        /// The peer.
        peer: ValidatorIndex,
        /// What it did.
        what: Misbehaviour,
    },
}
