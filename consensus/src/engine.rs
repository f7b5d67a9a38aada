//! The consensus state machine. See the crate documentation for the
//! protocol; this file follows it rule by rule.

use std::collections::{BTreeMap, HashMap, HashSet};

use provenance::Digest;

use crate::scheme::CertificateScheme;
use crate::types::*;

/// How long a sync response is, in blocks, when a block in reach carries
/// its finalisation certificate.
pub const MAX_SYNC_BLOCKS: usize = 1024;
/// How long a sync response may be when no block before it does: blocks
/// finalised as ancestors of a later certified block carry none, and a
/// run of them can be long when votes are slow.
pub const MAX_SYNC_SPAN: usize = 16 * MAX_SYNC_BLOCKS;
/// Finalised blocks the engine keeps (the tip and its parent); the rest of
/// the chain is the caller's, which answers sync requests from it
/// ([`Action::ServeSync`], [`sync_chunk`]).
const KEPT_FINALIZED: usize = 2;
/// How far ahead of the current view votes are kept.
pub const MAX_VIEWS_AHEAD: u64 = 64;

/// The application the engine orders blocks for.
pub trait Application {
    /// What a block carries.
    type Payload: Clone + std::fmt::Debug + PartialEq + Eq + serde::Serialize + serde::de::DeserializeOwned;
    /// A payload for a new block at `height` on top of `parent` that will
    /// carry `stamp` (ms; the engine's clock, never behind the parent's),
    /// called on the leader only; or `None` to wait: the engine asks again
    /// at every [`Engine::tick`] until the view times out. This lets a node
    /// batch entries and send empty blocks only as a heartbeat. The stamp
    /// is the one clock the application judges the block's entries by.
    fn propose(&mut self, parent: &Digest, height: Height, view: View, stamp: u64) -> Option<Self::Payload>;
    /// Whether every entry of the proposal's payload is complete and valid
    /// on top of its parent. The engine votes for nothing the application
    /// refuses.
    fn verify(&mut self, proposal: &Proposal<Self::Payload>) -> bool;
    /// The engine learned a block (a proposal that passed the structural
    /// checks, or a notarised block it fetched) that it may later ask to
    /// build on. An application that judges blocks against the state after
    /// their parent keeps it in memory, so it can judge a child of a block
    /// it never voted on. Default: nothing.
    fn observe(&mut self, _proposal: &Proposal<Self::Payload>) {}
    /// A block this validator is about to vote for or propose, or one a
    /// notarisation certificate names: an application that keeps blocks
    /// across restarts (see [`Engine::restore_blocks`]) must have it
    /// durable when this returns. Only such blocks are kept, so a peer
    /// cannot make a validator write what it would not vote for.
    /// Default: nothing.
    fn keep(&mut self, _proposal: &Proposal<Self::Payload>) {}
}

/// Consensus-critical parameters: every validator must use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// This validator; an index of n or more is an observer (a signing
    /// member): it follows the chain, finalising what certificates prove,
    /// but never proposes or votes.
    pub me: ValidatorIndex,
    /// Number of validators.
    pub n: u16,
    /// Votes needed for a certificate: q = n - f with f = floor((n-1)/3).
    /// **Consensus-critical**: a smaller quorum breaks safety (the
    /// simulator's broken variant uses q - 1 to show the checker bites).
    pub quorum: usize,
    /// Time (ms) a view waits for a notarisation before nullifying, and the
    /// period at which a stuck view re-sends its votes.
    pub view_timeout: u64,
    /// Largest amount (ms) a proposal's stamp may run ahead of the voter's
    /// clock.
    pub max_skew: u64,
}

impl Config {
    /// The configuration of validator `me` among `n`, with q = n - f.
    pub fn new(me: ValidatorIndex, n: u16, view_timeout: u64, max_skew: u64) -> Self {
        let f = (n.saturating_sub(1) / 3) as usize;
        Self {
            me,
            n,
            quorum: n as usize - f,
            view_timeout,
            max_skew,
        }
    }

    /// The leader of `view` (round robin).
    pub fn leader(&self, view: View) -> ValidatorIndex {
        (view.0 % u64::from(self.n)) as ValidatorIndex
    }

    /// Whether this engine votes (a validator) or only follows (an
    /// observer).
    pub fn votes(&self) -> bool {
        self.me < self.n
    }
}

type Cert<S> = Certificate<<S as CertificateScheme>::Certificate>;
type Act<A, S> = Action<
    <A as Application>::Payload,
    <S as CertificateScheme>::Share,
    <S as CertificateScheme>::Certificate,
>;
type Msg<A, S> = Message<
    <A as Application>::Payload,
    <S as CertificateScheme>::Share,
    <S as CertificateScheme>::Certificate,
>;

/// One validator's consensus engine: messages and clock ticks in, actions
/// out. No I/O, no clock, no threads.
pub struct Engine<A: Application, S: CertificateScheme> {
    cfg: Config,
    scheme: S,
    now: u64,
    view: View,
    deadline: u64,
    safety: SafetyState<S::Certificate>,
    blocks: HashMap<Digest, Proposal<A::Payload>>,
    proposal_in_view: HashMap<View, Digest>,
    votes: HashMap<Subject, BTreeMap<ValidatorIndex, S::Share>>,
    /// The block each validator voted notarize / finalize for, per view:
    /// a second, different one is blamed and not counted.
    voted_by: HashMap<(VoteKind, View, ValidatorIndex), Digest>,
    certified: HashSet<Subject>,
    notarized: BTreeMap<View, (Digest, Cert<S>)>,
    nullified: BTreeMap<View, Cert<S>>,
    /// The last finalised blocks (at most [`KEPT_FINALIZED`]), in height
    /// order.
    finalized: Vec<Proposal<A::Payload>>,
    finalized_view: View,
    last_finalization: Option<Cert<S>>,
    pending_finalization: Option<Cert<S>>,
    /// The last sync request: the height asked from, when, and of whom.
    last_sync: Option<(Height, u64, ValidatorIndex)>,
    actions: Vec<Act<A, S>>,
}

impl<A: Application, S: CertificateScheme> std::fmt::Debug for Engine<A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("me", &self.cfg.me)
            .field("view", &self.view)
            .field("finalized", &self.finalized.len())
            .finish_non_exhaustive()
    }
}

impl<A: Application, S: CertificateScheme> Engine<A, S> {
    /// A fresh validator at genesis.
    pub fn new(cfg: Config, scheme: S) -> Self {
        Self::restore(cfg, scheme, SafetyState::genesis(), Vec::new())
    }

    /// A validator restarted from its persisted safety state and the tip of
    /// its finalised chain (the last blocks in height order, at least the
    /// tip; older ones are not needed). It never casts a vote its safety
    /// state rules out.
    pub fn restore(
        cfg: Config,
        scheme: S,
        safety: SafetyState<S::Certificate>,
        mut finalized: Vec<Proposal<A::Payload>>,
    ) -> Self {
        let excess = finalized.len().saturating_sub(KEPT_FINALIZED);
        finalized.drain(..excess);
        let mut blocks = HashMap::new();
        for p in &finalized {
            blocks.insert(p.digest(), p.clone());
        }
        let finalized_view = finalized.last().map(|p| p.view).unwrap_or_default();
        let mut notarized = BTreeMap::new();
        let mut nullified = BTreeMap::new();
        let mut certified = HashSet::new();
        for c in safety.entered_by.iter().chain(&safety.earlier) {
            if c.subject.view < finalized_view {
                continue;
            }
            certified.insert(c.subject);
            match c.subject.kind {
                VoteKind::Notarize => {
                    notarized.insert(c.subject.view, (c.subject.block, c.clone()));
                }
                VoteKind::Nullify => {
                    nullified.insert(c.subject.view, c.clone());
                }
                VoteKind::Finalize => {}
            }
        }
        Self {
            cfg,
            scheme,
            now: 0,
            view: safety.view,
            deadline: 0,
            safety,
            blocks,
            proposal_in_view: HashMap::new(),
            votes: HashMap::new(),
            voted_by: HashMap::new(),
            certified,
            notarized,
            nullified,
            finalized,
            finalized_view,
            last_finalization: None,
            last_sync: None,
            pending_finalization: None,
            actions: Vec::new(),
        }
    }

    /// Hands a restarted validator the blocks it kept but had not seen
    /// final (each one it was told of through [`Application::observe`]).
    /// Votes and certificates only name blocks by digest: when the whole
    /// consortium restarts with a notarised, unfinalised tip, the next
    /// leader must extend that tip, and only these kept copies can say what
    /// it holds. Blocks at or below the finalised view are ignored.
    pub fn restore_blocks(&mut self, app: &mut A, blocks: Vec<Proposal<A::Payload>>) {
        for p in blocks {
            if p.view <= self.finalized_view {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = self.blocks.entry(p.digest()) {
                app.observe(&p);
                slot.insert(p);
            }
        }
    }

    /// The current view.
    pub fn view(&self) -> View {
        self.view
    }

    /// The finalised tip's height (0 at genesis).
    pub fn finalized_height(&self) -> Height {
        self.tip().0
    }

    /// The safety state as last handed out to persist.
    pub fn safety(&self) -> &SafetyState<S::Certificate> {
        &self.safety
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Starts (or resumes) at time `now`: enters view 1, or re-enters the
    /// restored view.
    pub fn start(&mut self, app: &mut A, now: u64) -> Vec<Act<A, S>> {
        self.now = now;
        if self.view.0 == 0 {
            self.enter_view(app, View(1), None);
        } else {
            self.deadline = now + self.cfg.view_timeout;
        }
        std::mem::take(&mut self.actions)
    }

    /// Advances the clock to `now`; on a view timeout, nullifies the view
    /// (once) and re-sends this view's votes and the certificate that opened
    /// it (every timeout), so lost messages are recovered.
    pub fn tick(&mut self, app: &mut A, now: u64) -> Vec<Act<A, S>> {
        self.now = now.max(self.now);
        if self.cfg.leader(self.view) == self.cfg.me
            && self.safety.proposed.is_none()
            && self.now < self.deadline
        {
            // A leader whose application deferred its proposal asks again.
            self.propose(app);
            self.try_notarize(app);
        }
        if self.now >= self.deadline {
            self.deadline = self.now + self.cfg.view_timeout;
            // Re-propose to peers that missed the proposal.
            if let Some(d) = self.safety.proposed {
                if let (Some(p), Some(j)) = (self.blocks.get(&d).cloned(), self.justified_parent(self.view)) {
                    self.send(
                        None,
                        Message::Propose {
                            proposal: p,
                            parent: j.4,
                            nullifications: j.5,
                        },
                    );
                }
            }
            // A proposal refused earlier only for a stamp ahead of this
            // clock may be valid now: judge it before giving up on the view.
            self.try_notarize(app);
            if !self.safety.nullified && !self.safety.finalized {
                self.cast(app, VoteKind::Nullify, GENESIS);
            } else {
                self.resend_votes();
            }
            // Every certificate since the last finalisation (the most
            // recent MAX_VIEWS_AHEAD): a validator that crashed or was cut
            // off needs the whole run of nullifications to judge, or make,
            // the next proposal.
            let floor = View(self.view.0.saturating_sub(MAX_VIEWS_AHEAD));
            let mut certs: Vec<(View, Cert<S>)> = self
                .notarized
                .range(floor..)
                .map(|(v, (_, c))| (*v, c.clone()))
                .chain(self.nullified.range(floor..).map(|(v, c)| (*v, c.clone())))
                .collect();
            certs.sort_by_key(|(v, _)| *v);
            for (_, c) in certs {
                self.send(None, Message::Certificate(c));
            }
            if let Some(c) = &self.last_finalization {
                self.send(None, Message::Certificate(c.clone()));
            }
            if self.pending_finalization.is_some() {
                self.request_sync();
            }
            let missing: Vec<Digest> = self
                .notarized
                .values()
                .map(|(d, _)| *d)
                .filter(|d| !self.blocks.contains_key(d))
                .collect();
            for block in missing {
                self.send(None, Message::BlockRequest { block });
            }
        }
        std::mem::take(&mut self.actions)
    }

    /// Judges the current view's proposal again, and proposes if this is
    /// the leader and has not: the application may now accept what it
    /// refused or deferred for something it lacked and has since got.
    pub fn recheck(&mut self, app: &mut A) -> Vec<Act<A, S>> {
        if self.cfg.leader(self.view) == self.cfg.me
            && self.safety.proposed.is_none()
            && self.now < self.deadline
        {
            self.propose(app);
        }
        self.try_notarize(app);
        std::mem::take(&mut self.actions)
    }

    /// Handles a message from validator `from` (authenticated by the
    /// transport).
    /// An observer (`from` of n or more) is answered its block requests
    /// and nothing else is taken from it.
    pub fn handle(&mut self, app: &mut A, from: ValidatorIndex, message: Msg<A, S>) -> Vec<Act<A, S>> {
        let request = matches!(
            message,
            Message::SyncRequest { .. } | Message::BlockRequest { .. }
        );
        if from == self.cfg.me || (from >= self.cfg.n && !request) {
            return Vec::new();
        }
        match message {
            Message::Propose {
                proposal,
                parent,
                nullifications,
            } => self.on_propose(app, from, proposal, parent, nullifications),
            Message::Vote(v) => self.on_vote(app, from, v),
            Message::Certificate(c) => self.on_certificate(app, Some(from), c),
            Message::SyncRequest { from: h } => self.on_sync_request(from, h),
            Message::SyncResponse { blocks, finalization } => {
                self.on_sync_response(app, from, blocks, finalization)
            }
            Message::BlockRequest { block } => {
                if let Some(p) = self.blocks.get(&block).cloned() {
                    self.send(Some(from), Message::Block { proposal: p });
                }
            }
            Message::Block { proposal } => self.on_block(app, proposal),
        }
        std::mem::take(&mut self.actions)
    }

    fn send(&mut self, to: Option<ValidatorIndex>, message: Msg<A, S>) {
        self.actions.push(Action::Send { to, message });
    }

    fn blame(&mut self, peer: ValidatorIndex, what: Misbehaviour) {
        self.actions.push(Action::Misbehaved { peer, what });
    }

    /// Casts a vote: the safety state is handed out to persist first, then
    /// the vote is sent, then counted locally. An observer casts nothing.
    fn cast(&mut self, app: &mut A, kind: VoteKind, block: Digest) {
        if !self.cfg.votes() {
            return;
        }
        match kind {
            VoteKind::Notarize => self.safety.notarized = Some(block),
            VoteKind::Nullify => self.safety.nullified = true,
            VoteKind::Finalize => self.safety.finalized = true,
        }
        self.actions.push(Action::Persist(self.safety.clone()));
        let subject = Subject {
            kind,
            view: self.view,
            block,
        };
        let vote = Vote {
            subject,
            signer: self.cfg.me,
            share: self.scheme.sign(&subject.message()),
        };
        self.send(None, Message::Vote(vote.clone()));
        self.count_vote(app, vote);
    }

    fn resend_votes(&mut self) {
        if !self.cfg.votes() {
            return;
        }
        let s = &self.safety;
        let mut subjects = Vec::new();
        if let Some(d) = s.notarized {
            subjects.push((VoteKind::Notarize, d));
        }
        if s.nullified {
            subjects.push((VoteKind::Nullify, GENESIS));
        }
        let view = s.view;
        for (kind, block) in subjects {
            let subject = Subject { kind, view, block };
            let share = self.scheme.sign(&subject.message());
            self.send(
                None,
                Message::Vote(Vote {
                    subject,
                    signer: self.cfg.me,
                    share,
                }),
            );
        }
    }

    fn enter_view(&mut self, app: &mut A, view: View, opened_by: Option<Cert<S>>) {
        if view <= self.view {
            return;
        }
        self.view = view;
        let opened = opened_by.as_ref().map(|c| c.subject);
        let floor = View(view.0.saturating_sub(MAX_VIEWS_AHEAD)).max(self.finalized_view);
        let mut earlier: Vec<Cert<S>> = self
            .notarized
            .range(floor..view)
            .map(|(_, (_, c))| c.clone())
            .chain(self.nullified.range(floor..view).map(|(_, c)| c.clone()))
            .filter(|c| Some(c.subject) != opened)
            .collect();
        earlier.sort_by_key(|c| c.subject.view);
        self.safety = SafetyState::entering(view, opened_by);
        self.safety.earlier = earlier;
        self.actions.push(Action::Persist(self.safety.clone()));
        self.deadline = self.now + self.cfg.view_timeout;
        if self.cfg.leader(view) == self.cfg.me {
            self.propose(app);
        }
        self.try_notarize(app);
    }

    /// The parent a proposal in `view` must extend: the notarised block of
    /// the highest view before it whose later views are all nullified, with
    /// the certificates that justify it.
    #[allow(clippy::type_complexity)]
    fn justified_parent(
        &self,
        view: View,
    ) -> Option<(View, Digest, Height, u64, Option<Cert<S>>, Vec<Cert<S>>)> {
        let mut nulls = Vec::new();
        let mut w = view.0.checked_sub(1)?;
        loop {
            if w == 0 {
                nulls.reverse();
                return Some((View(0), GENESIS, Height(0), 0, None, nulls));
            }
            if let Some((d, c)) = self.notarized.get(&View(w)) {
                let p = self.blocks.get(d)?;
                nulls.reverse();
                return Some((View(w), *d, p.height, p.stamp, Some(c.clone()), nulls));
            }
            nulls.push(self.nullified.get(&View(w))?.clone());
            w -= 1;
        }
    }

    fn propose(&mut self, app: &mut A) {
        if self.safety.proposed.is_some() || !self.cfg.votes() {
            return;
        }
        let view = self.view;
        let Some((parent_view, parent, height, parent_stamp, parent_cert, mut nullifications)) =
            self.justified_parent(view)
        else {
            return;
        };
        // Voters take at most MAX_VIEWS_AHEAD nullifications with a
        // proposal; after a longer run of nullified views the leader sends
        // the latest ones (a voter that missed older ones has had them
        // re-sent on its timeouts). Sending all of them would have every
        // honest proposal refused from then on.
        let older = nullifications.len().saturating_sub(MAX_VIEWS_AHEAD as usize);
        nullifications.drain(..older);
        let height = Height(height.0 + 1);
        let stamp = self.now.max(parent_stamp);
        let Some(payload) = app.propose(&parent, height, view, stamp) else {
            return;
        };
        let proposal = Proposal {
            view,
            height,
            parent,
            parent_view,
            stamp,
            proposer: self.cfg.me,
            payload,
        };
        let d = proposal.digest();
        self.safety.proposed = Some(d);
        self.actions.push(Action::Persist(self.safety.clone()));
        app.observe(&proposal);
        app.keep(&proposal);
        self.blocks.insert(d, proposal.clone());
        self.proposal_in_view.insert(view, d);
        self.send(
            None,
            Message::Propose {
                proposal,
                parent: parent_cert,
                nullifications,
            },
        );
    }

    /// Checks a proposal against the protocol's rules (not the application).
    /// What makes a proposal invalid whatever this validator learns later
    /// (unlike a missing parent or nullification): checked on arrival, so
    /// such a proposal is blamed and never kept.
    fn provably_invalid(&self, p: &Proposal<A::Payload>) -> Option<&'static str> {
        if p.parent_view >= p.view {
            return Some("parent view is not before the proposal's view");
        }
        if p.parent_view.0 == 0 {
            if p.parent != GENESIS {
                return Some("a view-0 parent must be genesis");
            }
            if p.height.0 != 1 {
                return Some("height is not parent's height + 1");
            }
        }
        if let Some(parent) = self.blocks.get(&p.parent) {
            if p.height.0 != parent.height.0.saturating_add(1) {
                return Some("height is not parent's height + 1");
            }
            if p.stamp < parent.stamp {
                return Some("stamp goes back from the parent's");
            }
        }
        None
    }

    /// Checks a proposal against its parent and the views between.
    fn check_proposal(&self, p: &Proposal<A::Payload>) -> Result<(), &'static str> {
        if p.proposer != self.cfg.leader(p.view) {
            return Err("proposer is not the view's leader");
        }
        if p.parent_view >= p.view {
            return Err("parent view is not before the proposal's view");
        }
        for w in p.parent_view.0 + 1..p.view.0 {
            if !self.nullified.contains_key(&View(w)) {
                return Err("a view between parent and proposal is not nullified");
            }
        }
        let (parent_height, parent_stamp) = if p.parent_view.0 == 0 {
            if p.parent != GENESIS {
                return Err("a view-0 parent must be genesis");
            }
            (Height(0), 0)
        } else {
            match self.notarized.get(&p.parent_view) {
                Some((d, _)) if *d == p.parent => {}
                _ => return Err("parent is not the notarised block of its view"),
            }
            let parent = self.blocks.get(&p.parent).ok_or("parent block unknown")?;
            (parent.height, parent.stamp)
        };
        if p.height.0 != parent_height.0 + 1 {
            return Err("height is not parent's height + 1");
        }
        if p.stamp < parent_stamp {
            return Err("stamp goes back from the parent's");
        }
        if p.stamp > self.now + self.cfg.max_skew {
            return Err("stamp runs ahead of this validator's clock");
        }
        Ok(())
    }

    /// Votes notarize for the current view's proposal once it is valid.
    fn try_notarize(&mut self, app: &mut A) {
        let view = self.view;
        if self.safety.notarized.is_some() || self.safety.nullified || self.safety.finalized {
            return;
        }
        let Some(d) = self.proposal_in_view.get(&view).copied() else {
            return;
        };
        let Some(p) = self.blocks.get(&d).cloned() else {
            return;
        };
        if self.check_proposal(&p).is_err() || !app.verify(&p) {
            return;
        }
        app.keep(&p);
        self.cast(app, VoteKind::Notarize, d);
    }

    fn on_propose(
        &mut self,
        app: &mut A,
        from: ValidatorIndex,
        proposal: Proposal<A::Payload>,
        parent: Option<Cert<S>>,
        nullifications: Vec<Cert<S>>,
    ) {
        let view = proposal.view;
        if from != self.cfg.leader(view) || proposal.proposer != from {
            self.blame(from, Misbehaviour::NotLeader(view));
            return;
        }
        if view.0 > self.view.0 + MAX_VIEWS_AHEAD || view < self.finalized_view {
            return;
        }
        // At most one nullification per view between parent and proposal:
        // each costs a certificate check.
        let between = view.0.saturating_sub(proposal.parent_view.0).saturating_sub(1);
        if nullifications.len() as u64 > between.min(MAX_VIEWS_AHEAD) {
            self.blame(
                from,
                Misbehaviour::InvalidProposal(view, "more nullifications than views skipped"),
            );
            return;
        }
        for c in parent.into_iter().chain(nullifications) {
            self.on_certificate(app, Some(from), c);
        }
        // With its parent's certificate in, what the proposal says of
        // itself must hold: no honest leader sends one that fails here, and
        // none is remembered.
        if let Some(why) = self.provably_invalid(&proposal) {
            self.blame(from, Misbehaviour::InvalidProposal(view, why));
            return;
        }
        let d = proposal.digest();
        match self.proposal_in_view.get(&view) {
            Some(prev) if *prev != d => {
                self.blame(from, Misbehaviour::Equivocation(view));
                return;
            }
            Some(_) => return,
            None => {}
        }
        self.proposal_in_view.insert(view, d);
        app.observe(&proposal);
        self.blocks.insert(d, proposal);
        if view == self.view {
            self.try_notarize(app);
        }
        if let Some(c) = self.pending_finalization.clone() {
            self.finalize(app, c);
        }
    }

    fn on_vote(&mut self, app: &mut A, from: ValidatorIndex, vote: Vote<S::Share>) {
        let s = vote.subject;
        if vote.signer != from {
            self.blame(from, Misbehaviour::BadShare(s));
            return;
        }
        if s.view.0 > self.view.0 + MAX_VIEWS_AHEAD
            || s.view < self.finalized_view
            || self.certified.contains(&s)
        {
            return;
        }
        if self.votes.get(&s).is_some_and(|m| m.contains_key(&from)) {
            return;
        }
        if s.kind == VoteKind::Nullify && s.block != GENESIS {
            self.blame(from, Misbehaviour::BadShare(s));
            return;
        }
        if let Some(prev) = self.voted_by.get(&(s.kind, s.view, from)) {
            // One notarize and one finalize per validator per view are
            // counted; more would let one validator grow our vote tables.
            if *prev != s.block {
                self.blame(from, Misbehaviour::DoubleVote(s.view));
            }
            return;
        }
        if !self.scheme.verify_share(from, &s.message(), &vote.share) {
            self.blame(from, Misbehaviour::BadShare(s));
            return;
        }
        if s.kind != VoteKind::Nullify {
            self.voted_by.insert((s.kind, s.view, from), s.block);
        }
        self.count_vote(app, vote);
    }

    fn count_vote(&mut self, app: &mut A, vote: Vote<S::Share>) {
        let s = vote.subject;
        let entry = self.votes.entry(s).or_default();
        entry.insert(vote.signer, vote.share);
        if entry.len() >= self.cfg.quorum && !self.certified.contains(&s) {
            let shares: Vec<(ValidatorIndex, S::Share)> =
                entry.iter().map(|(i, sh)| (*i, sh.clone())).collect();
            if let Some(certificate) = self.scheme.combine(&s.message(), &shares) {
                self.on_certificate(
                    app,
                    None,
                    Certificate {
                        subject: s,
                        certificate,
                    },
                );
            }
        }
    }

    /// A certificate from `from` (or built here when `from` is `None`):
    /// verified before it is used or forwarded.
    fn on_certificate(&mut self, app: &mut A, from: Option<ValidatorIndex>, c: Cert<S>) {
        let s = c.subject;
        if self.certified.contains(&s) || (self.finalized_view.0 > 0 && s.view < self.finalized_view) {
            // Already known, or below what is final (pruned state must not
            // be rebuilt from replayed certificates).
            return;
        }
        if let Some(peer) = from {
            if !self.scheme.verify_certificate(&s.message(), &c.certificate) {
                self.blame(peer, Misbehaviour::BadCertificate(s));
                return;
            }
        }
        self.certified.insert(s);
        self.send(None, Message::Certificate(c.clone()));
        match s.kind {
            VoteKind::Notarize => {
                if let Some(p) = self.blocks.get(&s.block) {
                    app.keep(p);
                }
                if !self.blocks.contains_key(&s.block) {
                    self.send(None, Message::BlockRequest { block: s.block });
                }
                self.notarized.insert(s.view, (s.block, c.clone()));
                if s.view == self.view && !self.safety.nullified && !self.safety.finalized {
                    self.cast(app, VoteKind::Finalize, s.block);
                }
                if s.view >= self.view {
                    self.enter_view(app, s.view.next(), Some(c));
                } else {
                    self.try_notarize(app);
                }
            }
            VoteKind::Nullify => {
                self.nullified.insert(s.view, c.clone());
                if s.view >= self.view {
                    self.enter_view(app, s.view.next(), Some(c));
                } else {
                    self.try_notarize(app);
                }
            }
            VoteKind::Finalize => self.finalize(app, c),
        }
    }

    fn tip(&self) -> (Height, Digest) {
        self.finalized
            .last()
            .map(|p| (p.height, p.digest()))
            .unwrap_or((Height(0), GENESIS))
    }

    /// Finalises the certified block and its ancestors, or asks for the
    /// blocks it lacks.
    fn finalize(&mut self, _app: &mut A, c: Cert<S>) {
        let (tip_height, tip) = self.tip();
        let target = c.subject.block;
        if target == tip || (self.finalized_view.0 > 0 && c.subject.view <= self.finalized_view) {
            return;
        }
        let mut chain = Vec::new();
        let mut d = target;
        while d != tip {
            match self.blocks.get(&d) {
                Some(p) if p.height > tip_height => {
                    chain.push(p.clone());
                    d = p.parent;
                }
                Some(_) => {
                    // Reaches the finalised height on another branch: only
                    // possible with more than f Byzantine validators.
                    return;
                }
                None => {
                    let newer = self
                        .pending_finalization
                        .as_ref()
                        .is_none_or(|p| p.subject.view < c.subject.view);
                    if newer {
                        self.pending_finalization = Some(c);
                    }
                    self.request_sync();
                    return;
                }
            }
        }
        chain.reverse();
        let last = chain.len().saturating_sub(1);
        for (i, p) in chain.into_iter().enumerate() {
            self.finalized_view = p.view;
            self.finalized.push(p.clone());
            if self.finalized.len() > KEPT_FINALIZED {
                self.finalized.remove(0);
            }
            self.actions.push(Action::Finalized {
                proposal: p,
                finalization: (i == last).then(|| c.clone()),
            });
        }
        self.last_finalization = Some(c.clone());
        if self
            .pending_finalization
            .as_ref()
            .is_some_and(|p| p.subject.view <= c.subject.view)
        {
            self.pending_finalization = None;
        }
        self.prune();
    }

    /// A block fetched by digest: kept only if it is a notarised block this
    /// validator lacks (its digest is what the certificate signed).
    fn on_block(&mut self, app: &mut A, p: Proposal<A::Payload>) {
        let d = p.digest();
        let wanted = self.notarized.get(&p.view).is_some_and(|(b, _)| *b == d);
        if !wanted || self.blocks.contains_key(&d) {
            return;
        }
        app.observe(&p);
        app.keep(&p);
        self.blocks.insert(d, p);
        self.try_notarize(app);
        if self.cfg.leader(self.view) == self.cfg.me {
            self.propose(app);
        }
        if let Some(c) = self.pending_finalization.clone() {
            self.finalize(app, c);
        }
    }

    /// Asks f + 1 peers (so at least one honest) for the blocks after the
    /// tip: the same height again only after a view timeout, and then of
    /// the next ones. A chunk can be tens of MiB: asking everyone at every
    /// certificate would bury the link in copies of it.
    fn request_sync(&mut self) {
        let from = Height(self.tip().0 .0 + 1);
        let first = match self.last_sync {
            Some((h, at, _)) if h == from && self.now < at.saturating_add(self.cfg.view_timeout) => return,
            // No answer in time: ask the next ones.
            Some((h, _, last)) if h == from => self.peer_after(last),
            // An answer came: go on from the same peers.
            Some((_, _, last)) => {
                let f = usize::from(self.cfg.n).saturating_sub(self.cfg.quorum);
                (0..f).fold(last, |v, _| self.peer_before(v))
            }
            None => self.peer_after(self.cfg.me),
        };
        let f = usize::from(self.cfg.n).saturating_sub(self.cfg.quorum);
        let mut to = first;
        for k in 0..=f {
            if k > 0 {
                to = self.peer_after(to);
            }
            self.send(Some(to), Message::SyncRequest { from });
        }
        self.last_sync = Some((from, self.now, to));
    }

    /// The validator before `v` in index order, not this one.
    fn peer_before(&self, v: ValidatorIndex) -> ValidatorIndex {
        let n = u32::from(self.cfg.n.max(2));
        let mut prev = (u32::from(v) + n - 1) % n;
        if prev == u32::from(self.cfg.me) {
            prev = (prev + n - 1) % n;
        }
        prev as ValidatorIndex
    }

    /// The next validator after `v` in index order, not this one.
    fn peer_after(&self, v: ValidatorIndex) -> ValidatorIndex {
        let n = u32::from(self.cfg.n.max(2));
        let mut next = (u32::from(v) + 1) % n;
        if next == u32::from(self.cfg.me) {
            next = (next + 1) % n;
        }
        next as ValidatorIndex
    }

    fn prune(&mut self) {
        let fv = self.finalized_view;
        self.votes.retain(|s, _| s.view >= fv);
        self.voted_by.retain(|(_, v, _), _| *v >= fv);
        self.certified.retain(|s| s.view >= fv);
        self.proposal_in_view.retain(|v, _| *v >= fv);
        let keep = self.notarized.split_off(&fv);
        self.notarized = keep;
        let keep = self.nullified.split_off(&fv);
        self.nullified = keep;
        let finalized: HashSet<Digest> = self.finalized.iter().rev().take(2).map(|p| p.digest()).collect();
        self.blocks.retain(|d, p| p.view >= fv || finalized.contains(d));
    }

    /// The caller answers from its store: the engine keeps only the tip.
    fn on_sync_request(&mut self, from: ValidatorIndex, h: Height) {
        if h.0 >= 1 && h <= self.tip().0 {
            self.actions.push(Action::ServeSync { to: from, from: h });
        }
    }

    fn on_sync_response(
        &mut self,
        app: &mut A,
        from: ValidatorIndex,
        blocks: Vec<Proposal<A::Payload>>,
        c: Cert<S>,
    ) {
        let ok = c.subject.kind == VoteKind::Finalize
            && blocks.len() <= MAX_SYNC_SPAN
            && blocks.last().map(|p| p.digest()) == Some(c.subject.block)
            && blocks
                .windows(2)
                .all(|w| w[1].parent == w[0].digest() && w[0].height.0.checked_add(1) == Some(w[1].height.0))
            && self
                .scheme
                .verify_certificate(&c.subject.message(), &c.certificate);
        if !ok {
            self.blame(from, Misbehaviour::BadSync);
            return;
        }
        let (tip_height, tip) = self.tip();
        let Some(first) = blocks.iter().position(|p| p.height.0 == tip_height.0 + 1) else {
            return;
        };
        if blocks[first].parent != tip {
            self.blame(from, Misbehaviour::BadSync);
            return;
        }
        for p in &blocks[first..] {
            self.blocks.insert(p.digest(), p.clone());
        }
        self.certified.insert(c.subject);
        self.finalize(app, c);
        // Far behind: one chunk at a time, until the newest finalisation
        // heard of is reached.
        if let Some(p) = self.pending_finalization.clone() {
            self.finalize(app, p);
        }
    }
}

/// The answer to a sync request for the finalised blocks from `from` on,
/// read by the caller from its store: the blocks `from..=head` in order,
/// cut at the last one that carries its finalisation certificate before
/// [`MAX_SYNC_BLOCKS`] blocks or `max_bytes` are reached. While no block
/// in the chunk carries one, it goes on to the first that does, up to
/// [`MAX_SYNC_SPAN`] blocks and `hard_max_bytes`. `block(h)` reads height
/// `h`: the block, its certificate if it was stored with one, and its size
/// in bytes. `None` when nothing in reach is certified or a block is
/// missing.
pub fn sync_chunk<P, C>(
    from: Height,
    head: Height,
    max_bytes: usize,
    hard_max_bytes: usize,
    mut block: impl FnMut(Height) -> Option<(Proposal<P>, Option<Certificate<C>>, usize)>,
) -> Option<(Vec<Proposal<P>>, Certificate<C>)> {
    let mut blocks = Vec::new();
    let mut bytes = 0usize;
    let mut cut: Option<(usize, Certificate<C>)> = None;
    let mut h = from.0.max(1);
    while h <= head.0 {
        let full = blocks.len() >= MAX_SYNC_BLOCKS || bytes >= max_bytes;
        let over = blocks.len() >= MAX_SYNC_SPAN || bytes >= hard_max_bytes;
        if (full && cut.is_some()) || over {
            break;
        }
        let (p, cert, size) = block(Height(h))?;
        blocks.push(p);
        bytes = bytes.saturating_add(size);
        if let Some(c) = cert {
            cut = Some((blocks.len(), c));
        }
        h += 1;
    }
    let (len, c) = cut?;
    blocks.truncate(len);
    Some((blocks, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Proposal<u64>> {
        let mut parent = GENESIS;
        (1..=n)
            .map(|h| {
                let p = Proposal {
                    view: View(h),
                    height: Height(h),
                    parent,
                    parent_view: View(h - 1),
                    stamp: h,
                    proposer: 0,
                    payload: h,
                };
                parent = p.digest();
                p
            })
            .collect()
    }

    fn cert(p: &Proposal<u64>) -> Certificate<u8> {
        Certificate {
            subject: Subject {
                kind: VoteKind::Finalize,
                view: p.view,
                block: p.digest(),
            },
            certificate: 0,
        }
    }

    /// `sync_chunk` over a chain of `n` blocks whose certified heights are
    /// `certified`, each block `size` bytes (a hard bound of 64 blocks'
    /// bytes when `max_bytes` is bounded).
    fn chunk(
        n: u64,
        certified: &[u64],
        from: u64,
        max_bytes: usize,
        size: usize,
    ) -> Option<(Vec<Proposal<u64>>, Certificate<u8>)> {
        let c = chain(n);
        let hard = if max_bytes == usize::MAX {
            usize::MAX
        } else {
            64 * size
        };
        sync_chunk(Height(from), Height(n), max_bytes, hard, |h| {
            let p = c.get(h.0 as usize - 1)?.clone();
            let cert = certified.contains(&h.0).then(|| cert(&p));
            Some((p, cert, size))
        })
    }

    #[test]
    fn a_sync_chunk_ends_at_its_last_certified_block_within_its_bounds() {
        // By blocks: 3,000 blocks, every one certified: MAX_SYNC_BLOCKS.
        let all: Vec<u64> = (1..=3_000).collect();
        let (b, c) = chunk(3_000, &all, 1, usize::MAX, 1).expect("chunk");
        assert_eq!(b.len(), MAX_SYNC_BLOCKS);
        assert_eq!(c.subject.block, b[MAX_SYNC_BLOCKS - 1].digest());
        // By bytes: 10 bytes a block, 95 allowed: cut at the last
        // certified block among the first ten.
        let (b, _) = chunk(100, &[3, 7, 20], 1, 95, 10).expect("chunk");
        assert_eq!(b.len(), 7);
        // No certified block within the bounds: on to the first one, up to
        // the hard bound (64 blocks here).
        let (b, c) = chunk(100, &[40], 1, 95, 10).expect("chunk");
        assert_eq!((b.len(), b[39].digest()), (40, c.subject.block));
        assert!(chunk(100, &[70], 1, 95, 10).is_none());
        // From a later height, and past the head.
        let (b, _) = chunk(100, &[50, 60], 45, usize::MAX, 1).expect("chunk");
        assert_eq!((b[0].height, b.len()), (Height(45), 16));
        assert!(chunk(100, &[50], 101, usize::MAX, 1).is_none());
    }
}
